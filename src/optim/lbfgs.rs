//! L-BFGS (Nocedal 1980) without a line search, step for step as PyTorch's `LBFGS(lr=1,
//! max_iter=1)` called once per evaluation: the direction comes from the two-loop recursion over
//! the last `history` pairs (s, y), scaled by `H = y.s / y.y`; pairs with `y.s <= 1e-10` are
//! skipped; the first step is `-g * min(1, 1/|g|_1)`.
//!
//! One safeguard differs from PyTorch (and is off in [`Lbfgs::pytorch`]): when an evaluation
//! finds the loss more than [`BACKTRACK_FACTOR`] times the previous one, the step is taken back
//! and shortened to the minimum of a quadratic fitted along it. Without it, a curvature pair
//! rejected on the second step (ReLU and max-pool kinks can make `y.s` negative over the tiny
//! first step) leaves `H = 1`, and the next step, `-g` in full, multiplies a style loss by 10^6.
//!
//! With [`Lbfgs::bounded`] the pixels stay in a box (0..255 for images), so the image that is
//! saved is the one that was optimised: variables at a bound whose gradient points out of the box
//! are held there (their direction is zero), the step is projected back into the box, and the
//! curvature pair uses the step actually taken (projected L-BFGS, as in L-BFGS-B without its
//! generalised Cauchy point).

use super::{Optimizer, dot};
use crate::linalg;

/// A loss that grows by more than this factor in one step triggers a backtrack.
pub const BACKTRACK_FACTOR: f64 = 2.0;

/// The L-BFGS state.
pub struct Lbfgs {
    history: usize,
    lr: f32,
    backtrack: bool,
    /// (s, y, 1/(y.s)) pairs, oldest first.
    pairs: std::collections::VecDeque<(Vec<f32>, Vec<f32>, f64)>,
    /// The gradient and loss at the point the last step started from.
    prev: Option<(Vec<f32>, f64)>,
    /// The last step taken (t * d).
    prev_step: Vec<f32>,
    h_diag: f64,
    /// Steps taken (not counting backtracks).
    steps: usize,
    /// The step length used while there is no curvature pair.
    first_t: f64,
    /// The box the variables are kept in, if any.
    bounds: Option<(f32, f32)>,
}

impl Lbfgs {
    /// `history` pairs (PyTorch's `history_size`, default 100), step length `lr` (1), with the
    /// backtracking safeguard.
    pub fn new(history: usize, lr: f32) -> Self {
        Lbfgs {
            history: history.max(1),
            lr,
            backtrack: true,
            pairs: Default::default(),
            prev: None,
            prev_step: Vec::new(),
            h_diag: 1.0,
            steps: 0,
            first_t: 1.0,
            bounds: None,
        }
    }

    /// Keeps every variable in `lo..=hi` (see the module documentation).
    pub fn bounded(self, lo: f32, hi: f32) -> Self {
        Lbfgs { bounds: Some((lo, hi)), ..self }
    }

    /// Starts with the inverse curvature `h0` (e.g. from the previous scale of a pyramid)
    /// instead of the tiny first step: the first step is `-h0 g`.
    pub fn warm(history: usize, lr: f32, h0: f64) -> Self {
        Lbfgs { h_diag: h0, steps: 1, ..Self::new(history, lr) }
    }

    /// The current inverse-curvature estimate `y.s / y.y`, once there is a curvature pair.
    pub fn inverse_curvature(&self) -> Option<f64> {
        (!self.pairs.is_empty()).then_some(self.h_diag)
    }

    /// Exactly PyTorch's algorithm, without the safeguard.
    pub fn pytorch(history: usize, lr: f32) -> Self {
        Lbfgs { backtrack: false, ..Self::new(history, lr) }
    }

    /// The search direction `-H g` from the two-loop recursion.
    fn direction(&self, g: &[f32]) -> Vec<f32> {
        let mut q: Vec<f32> = g.iter().map(|v| -v).collect();
        let mut alpha = vec![0.0; self.pairs.len()];
        for (i, (s, y, rho)) in self.pairs.iter().enumerate().rev() {
            alpha[i] = rho * dot(s, &q);
            let a = alpha[i] as f32;
            linalg::zip_apply(&mut q, y, |q, y| *q -= a * y);
        }
        let h = self.h_diag as f32;
        linalg::apply(&mut q, |v| *v *= h);
        for (i, (s, y, rho)) in self.pairs.iter().enumerate() {
            let beta = rho * dot(y, &q);
            let k = (alpha[i] - beta) as f32;
            linalg::zip_apply(&mut q, s, |d, s| *d += k * s);
        }
        q
    }

    /// Takes back the last step and retries a fraction of it: the minimum of the quadratic
    /// through the previous loss, its slope along the step and the loss just found.
    fn backtrack(&mut self, x: &mut [f32], loss: f64, prev_grad: &[f32], prev_loss: f64) {
        let slope = dot(prev_grad, &self.prev_step);
        let curvature = loss - prev_loss - slope;
        let a = if slope < 0.0 && curvature > 0.0 { (-slope / (2.0 * curvature)).clamp(1e-6, 0.5) } else { 0.1 };
        let back = (1.0 - a) as f32;
        x.iter_mut().zip(&self.prev_step).for_each(|(x, s)| *x -= back * s);
        self.prev_step.iter_mut().for_each(|s| *s *= a as f32);
        self.first_t *= a;
    }
}

impl Optimizer for Lbfgs {
    fn inverse_curvature(&self) -> Option<f64> {
        Lbfgs::inverse_curvature(self)
    }

    fn step(&mut self, x: &mut [f32], loss: f64, g: &[f32]) {
        let full_g = g;
        if let Some((pg, pl)) = self.prev.take() {
            if self.backtrack && loss > BACKTRACK_FACTOR * pl {
                self.backtrack(x, loss, &pg, pl);
                self.prev = Some((pg, pl));
                return;
            }
            let y: Vec<f32> = g.iter().zip(&pg).map(|(a, b)| a - b).collect();
            let s = std::mem::take(&mut self.prev_step);
            let ys = dot(&y, &s);
            if ys > 1e-10 {
                if self.pairs.len() == self.history {
                    self.pairs.pop_front();
                }
                self.h_diag = ys / dot(&y, &y);
                self.pairs.push_back((s, y, 1.0 / ys));
            }
        }
        let first = self.steps == 0;
        self.steps += 1;
        // Variables held at a bound: their gradient points out of the box.
        let held = |x: f32, g: f32| self.bounds.is_some_and(|(lo, hi)| (x <= lo && g > 0.0) || (x >= hi && g < 0.0));
        let free_g: Option<Vec<f32>> =
            self.bounds.map(|_| x.iter().zip(g).map(|(&x, &g)| if held(x, g) { 0.0 } else { g }).collect());
        let g = free_g.as_deref().unwrap_or(g);
        let mut d = self.direction(g);
        if self.bounds.is_some() {
            d.iter_mut().zip(g).for_each(|(d, g)| {
                if *g == 0.0 {
                    *d = 0.0
                }
            });
        }
        if dot(g, &d) > -1e-9 {
            // Not a descent direction (a degenerate history): restart from steepest descent.
            self.pairs.clear();
            self.h_diag = 1.0;
            d = g.iter().map(|v| -v).collect();
        }
        let t = if first {
            let l1: f64 = g.iter().map(|v| v.abs() as f64).sum();
            self.first_t = (1.0f64).min(1.0 / l1.max(f64::MIN_POSITIVE));
            self.first_t as f32 * self.lr
        } else if self.backtrack && self.pairs.is_empty() {
            // No curvature yet: H = 1 would make the step as long as the gradient, whatever the
            // loss's scale. Grow the first step's length instead, doubling while the loss falls.
            self.first_t *= 2.0;
            (self.first_t.min(1.0)) as f32 * self.lr
        } else {
            self.lr
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
        self.prev_step = d;
        self.prev = Some((full_g.to_vec(), loss));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::tests::{minimise, rosenbrock};

    #[test]
    fn minimises_rosenbrock() {
        for mut opt in [Lbfgs::new(100, 1.0), Lbfgs::pytorch(100, 1.0)] {
            let mut x = vec![-1.2f32, 1.0, -0.5, 0.8];
            let start = rosenbrock(&x).0;
            let end = minimise(&mut opt, &mut x, 300);
            assert!(end < 1e-6 * start, "{start} -> {end}");
            assert!(x.iter().all(|v| (v - 1.0).abs() < 1e-2), "{x:?}");
        }
    }

    #[test]
    fn first_step_is_scaled_gradient_descent() {
        let mut x = vec![0.0f32, 0.0];
        let g = vec![2.0f32, -6.0];
        Lbfgs::new(10, 1.0).step(&mut x, 1.0, &g);
        assert_eq!(x, vec![-2.0 / 8.0, 6.0 / 8.0]);
    }

    #[test]
    fn warm_start_takes_the_given_curvature_step() {
        let mut opt = Lbfgs::warm(10, 1.0, 0.25);
        let mut x = vec![1.0f32, 1.0];
        opt.step(&mut x, 1.0, &[2.0, -4.0]);
        assert_eq!(x, vec![0.5, 2.0]);
        assert_eq!(opt.inverse_curvature(), None);
        // f = 2 x^2: after one pair the estimate is y.s / y.y = 1/4.
        let mut opt = Lbfgs::new(10, 1.0);
        let mut x = vec![1.0f32, 2.0];
        for _ in 0..2 {
            let (f, g) = (2.0 * dot(&x, &x), [4.0 * x[0], 4.0 * x[1]]);
            opt.step(&mut x, f, &g);
        }
        assert!((opt.inverse_curvature().unwrap() - 0.25).abs() < 1e-6);
    }

    #[test]
    fn exact_on_a_quadratic_after_enough_pairs() {
        // f = 0.5 x^T diag(1, 10) x: with two pairs the BFGS direction is the Newton step.
        let f = |x: &[f32]| (0.5 * (x[0] * x[0] + 10.0 * x[1] * x[1]) as f64, vec![x[0], 10.0 * x[1]]);
        let mut x = vec![1.0f32, 1.0];
        let mut opt = Lbfgs::new(10, 1.0);
        for _ in 0..6 {
            let (l, g) = f(&x);
            opt.step(&mut x, l, &g);
        }
        assert!(x.iter().all(|v| v.abs() < 1e-4), "{x:?}");
    }

    #[test]
    fn bounded_stays_in_the_box_and_finds_the_constrained_minimum() {
        // f = sum (x - c)^2 with c partly outside [0, 1]: the minimum in the box is c clamped.
        let c = [-1.0f32, 0.5, 3.0, 0.25];
        let f = |x: &[f32]| {
            let l = x.iter().zip(&c).map(|(x, c)| ((x - c) as f64).powi(2)).sum::<f64>();
            (l, x.iter().zip(&c).map(|(x, c)| 2.0 * (x - c)).collect::<Vec<f32>>())
        };
        let mut opt = Lbfgs::new(10, 1.0).bounded(0.0, 1.0);
        let mut x = vec![0.5f32; 4];
        for _ in 0..30 {
            let (l, g) = f(&x);
            opt.step(&mut x, l, &g);
            assert!(x.iter().all(|v| (0.0..=1.0).contains(v)), "{x:?}");
        }
        let want = [0.0, 0.5, 1.0, 0.25];
        assert!(x.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4), "{x:?}");
    }

    /// After a loss blow-up the safeguard returns to the previous point along the same step,
    /// at the quadratic model's minimum.
    #[test]
    fn backtracks_after_a_blow_up() {
        let mut opt = Lbfgs::new(10, 1.0);
        let mut x = vec![0.0f32];
        opt.step(&mut x, 1.0, &[-1.0]); // first step: t = 1/|g|_1 = 1, to x = 1
        assert_eq!(x, vec![1.0]);
        // Suppose f(1) = 100: quadratic through f(0) = 1, f'(0) = -1, f(1) = 100 has its
        // minimum at a = 1 / (2 * 100) = 0.005.
        opt.step(&mut x, 100.0, &[50.0]);
        assert!((x[0] - 0.005).abs() < 1e-6, "{x:?}");
        // PyTorch's version keeps going from the bad point instead.
        let mut opt = Lbfgs::pytorch(10, 1.0);
        let mut x = vec![0.0f32];
        opt.step(&mut x, 1.0, &[-1.0]);
        opt.step(&mut x, 100.0, &[50.0]);
        assert!(x[0] < 0.995, "{x:?}");
    }
}
