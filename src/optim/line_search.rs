//! The line search of Moré and Thuente (1994), "Line search algorithms with guaranteed sufficient
//! decrease" (ACM TOMS 20(3)): the one SciPy's L-BFGS-B (MINPACK-2's `dcsrch`) and PyTorch's
//! `line_search_fn="strong_wolfe"` build on. Written here from the paper.
//!
//! Along a search path `φ(t)` with `φ(0) = f0` and `φ'(0) = g0 < 0`, it looks for a step `t`
//! that satisfies the strong Wolfe conditions
//!
//! ```text
//! sufficient decrease   φ(t) <= f0 + c1 t g0
//! curvature             |φ'(t)| <= c2 |g0|
//! ```
//!
//! It keeps an interval of uncertainty `[stx, sty]` whose end `stx` is the best step so far, and
//! chooses each trial by a safeguarded cubic or quadratic interpolation of the values and slopes
//! at the ends (`safeguarded_step`); until the interval brackets a minimiser it extrapolates,
//! at most [`EXTRAPOLATE_UP`] times the last step. As in the paper, while no step has met the
//! sufficient decrease test the search works on the auxiliary function
//! `ψ(t) = φ(t) - f0 - c1 t g0`, which makes the first bracketed interval one in which a step
//! satisfying both conditions exists.
//!
//! It is a state machine in reverse communication: [`MoreThuente::new`] gives the first trial
//! step, each [`MoreThuente::next`] takes the value and slope at the last trial and says whether
//! the step is accepted or which step to try next. A trial whose value is not finite (the loss
//! overflowed there) is treated as a step that went too far.
//!
//! Deviation from the paper: a non-finite trial is not interpolated (there is no value to fit);
//! the next trial is a quarter of the way from the best step to it.

/// Parameters of the search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wolfe {
    /// `c1`, the sufficient decrease constant (1e-4: Nocedal and Wright, SciPy, PyTorch).
    pub c1: f64,
    /// `c2`, the curvature constant (0.9 for quasi-Newton methods: a loose test, so the unit step
    /// is usually accepted at once).
    pub c2: f64,
    /// Relative width of the interval below which the search gives up.
    pub xtol: f64,
    /// Trials after which the search gives up.
    pub max_trials: usize,
}

impl Default for Wolfe {
    fn default() -> Self {
        Wolfe { c1: 1e-4, c2: 0.9, xtol: 1e-6, max_trials: 20 }
    }
}

/// Until the minimiser is bracketed, the next step lies between these multiples of the distance
/// from the best step to the last one (the paper's values, and MINPACK-2's).
const EXTRAPOLATE_LOW: f64 = 1.1;
/// The larger of the two multiples (the bound a step may grow by).
pub const EXTRAPOLATE_UP: f64 = 4.0;

/// What the search says after a trial.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Search {
    /// Evaluate at this step next.
    Trial(f64),
    /// The last trial step meets the strong Wolfe conditions.
    Converged,
    /// The search cannot go on (the interval shrank below `xtol`, the trials ran out, or the step
    /// hit a bound); `best` is the step with the lowest value found, with that value (0 and `f0`
    /// if no trial lowered it).
    Failed {
        /// The best step.
        best: f64,
        /// Its value.
        value: f64,
    },
}

/// A point on the search path: step, value, slope.
#[derive(Clone, Copy, Debug)]
struct Point {
    t: f64,
    f: f64,
    g: f64,
}

/// The state of one line search.
#[derive(Clone, Debug)]
pub struct MoreThuente {
    params: Wolfe,
    f0: f64,
    g0: f64,
    /// The best step so far (lowest auxiliary value) and the other end of the interval.
    x: Point,
    y: Point,
    /// The current trial step.
    t: f64,
    /// Bounds on the steps tried: the interval while bracketed, an extrapolation window before.
    lo: f64,
    hi: f64,
    /// The largest step allowed.
    t_max: f64,
    bracketed: bool,
    /// Stage 1 works on the auxiliary function ψ, stage 2 on φ itself.
    stage1: bool,
    width: f64,
    width_before: f64,
    trials: usize,
    /// The lowest value seen and its step.
    best: (f64, f64),
}

impl MoreThuente {
    /// Starts a search from `φ(0) = f0`, `φ'(0) = g0` (negative) with the first trial step
    /// `t0 > 0`; steps never exceed `t_max`. Returns the state and the first trial.
    pub fn new(params: Wolfe, f0: f64, g0: f64, t0: f64, t_max: f64) -> (Self, f64) {
        debug_assert!(g0 < 0.0 && t0 > 0.0 && t_max > 0.0, "a line search needs a descent direction");
        let t = t0.min(t_max);
        let start = Point { t: 0.0, f: f0, g: g0 };
        let state = MoreThuente {
            params,
            f0,
            g0,
            x: start,
            y: start,
            t,
            lo: 0.0,
            hi: t + EXTRAPOLATE_UP * t,
            t_max,
            bracketed: false,
            stage1: true,
            width: t_max,
            width_before: 2.0 * t_max,
            trials: 0,
            best: (0.0, f0),
        };
        (state, t)
    }

    /// The step being tried.
    pub fn step(&self) -> f64 {
        self.t
    }

    /// The value `f` and slope `g` of the search path at the last trial step.
    pub fn next(&mut self, f: f64, g: f64) -> Search {
        let p = self.params;
        self.trials += 1;
        let t = self.t;
        if f.is_finite() && f < self.best.1 {
            self.best = (t, f);
        }
        let failed = |s: &Self| Search::Failed { best: s.best.0, value: s.best.1 };
        let decrease = self.f0 + t * p.c1 * self.g0;
        // The strict `f < f0` matters only where `c1 t g0` is below the rounding of `f0`: a step
        // is taken only if the loss went down.
        if f.is_finite() && f <= decrease && f < self.f0 && g.abs() <= p.c2 * -self.g0 {
            return Search::Converged;
        }
        if !f.is_finite() || !g.is_finite() {
            // Too far: no value to interpolate. Try a quarter of the way from the best step.
            self.bracketed = true;
            self.y = Point { t, f: f64::INFINITY, g: f64::INFINITY };
            self.t = self.x.t + 0.25 * (t - self.x.t);
            return self.checked_trial().unwrap_or_else(|| failed(self));
        }
        if self.trials >= p.max_trials
            || (self.bracketed && (t <= self.lo || t >= self.hi))
            || (self.bracketed && self.hi - self.lo <= p.xtol * self.hi)
            || (t >= self.t_max && f <= decrease && g <= p.c1 * self.g0)
        {
            return failed(self);
        }
        if self.stage1 && f <= decrease && g >= 0.0 {
            self.stage1 = false;
        }
        let trial = Point { t, f, g };
        if self.stage1 && f <= self.x.f && f > decrease {
            // The auxiliary function ψ: values and slopes less the sufficient decrease line.
            let aux = |q: Point| Point { f: q.f - q.t * p.c1 * self.g0, g: q.g - p.c1 * self.g0, ..q };
            let (mut x, mut y) = (aux(self.x), aux(self.y));
            self.t = safeguarded_step(&mut x, &mut y, aux(trial), &mut self.bracketed, self.lo, self.hi);
            let back = |q: Point| Point { f: q.f + q.t * p.c1 * self.g0, g: q.g + p.c1 * self.g0, ..q };
            (self.x, self.y) = (back(x), back(y));
        } else {
            self.t = safeguarded_step(&mut self.x, &mut self.y, trial, &mut self.bracketed, self.lo, self.hi);
        }
        if self.bracketed {
            // Force a sufficient shrink of the interval: bisect when two trials did not halve it.
            if (self.y.t - self.x.t).abs() >= 0.66 * self.width_before {
                self.t = self.x.t + 0.5 * (self.y.t - self.x.t);
            }
            self.width_before = self.width;
            self.width = (self.y.t - self.x.t).abs();
        }
        self.checked_trial().unwrap_or_else(|| failed(self))
    }

    /// Sets the window of the next trial, keeps the trial in it, and returns it; `None` when the
    /// interval is exhausted.
    fn checked_trial(&mut self) -> Option<Search> {
        if self.bracketed {
            self.lo = self.x.t.min(self.y.t);
            self.hi = self.x.t.max(self.y.t);
        } else {
            self.lo = self.t + EXTRAPOLATE_LOW * (self.t - self.x.t);
            self.hi = self.t + EXTRAPOLATE_UP * (self.t - self.x.t);
        }
        self.t = self.t.clamp(0.0, self.t_max);
        if self.bracketed && (self.t <= self.lo || self.t >= self.hi || self.hi - self.lo <= self.params.xtol * self.hi)
        {
            // Rounding has left no room: fall back to the best step (the caller compares it).
            self.t = self.x.t;
        }
        if self.t <= 0.0 {
            return None;
        }
        Some(Search::Trial(self.t))
    }
}

/// One safeguarded step of Moré and Thuente (their Algorithm 2.4 with the case analysis of
/// section 4): given the best point `x`, the other end `y` and the new trial `p`, updates the
/// interval (`x`, `y`, `bracketed`) and returns the next trial step, kept in `[lo, hi]`.
fn safeguarded_step(x: &mut Point, y: &mut Point, p: Point, bracketed: &mut bool, lo: f64, hi: f64) -> f64 {
    let same_sign = p.g * x.g.signum() > 0.0;
    let next = if p.f > x.f {
        // Case 1: a higher value. The minimiser is bracketed; take the cubic step if it is
        // closer to the best point, else the average of the cubic and quadratic steps.
        let cubic = cubic_minimiser(*x, p);
        let quad = x.t + (x.g / ((x.f - p.f) / (p.t - x.t) + x.g)) / 2.0 * (p.t - x.t);
        *bracketed = true;
        if (cubic - x.t).abs() < (quad - x.t).abs() { cubic } else { cubic + (quad - cubic) / 2.0 }
    } else if !same_sign {
        // Case 2: lower value, slopes of opposite signs. Bracketed; the step farther from p.
        let cubic = cubic_minimiser(p, *x);
        let secant = p.t + (p.g / (p.g - x.g)) * (x.t - p.t);
        *bracketed = true;
        if (cubic - p.t).abs() > (secant - p.t).abs() { cubic } else { secant }
    } else if p.g.abs() < x.g.abs() {
        // Case 3: lower value, same sign, the slope's size decreases. The cubic step only if it
        // lies beyond p (the cubic tends to infinity in that direction), else the end of the window.
        let cubic = match cubic_minimiser_checked(p, *x) {
            Some(c) if (c - p.t) * (p.t - x.t) > 0.0 => c,
            _ if p.t > x.t => hi,
            _ => lo,
        };
        let secant = p.t + (p.g / (p.g - x.g)) * (x.t - p.t);
        if *bracketed {
            let s = if (cubic - p.t).abs() < (secant - p.t).abs() { cubic } else { secant };
            let limit = p.t + 0.66 * (y.t - p.t);
            if p.t > x.t { s.min(limit) } else { s.max(limit) }
        } else {
            let s = if (cubic - p.t).abs() > (secant - p.t).abs() { cubic } else { secant };
            s.clamp(lo, hi)
        }
    } else if *bracketed {
        // Case 4: lower value, same sign, the slope does not decrease: the cubic through p and y.
        if y.f.is_finite() { cubic_minimiser(p, *y) } else { p.t + 0.5 * (y.t - p.t) }
    } else if p.t > x.t {
        hi
    } else {
        lo
    };
    // The new interval: p replaces the end it should.
    if p.f > x.f {
        *y = p;
    } else {
        if !same_sign {
            *y = *x;
        }
        *x = p;
    }
    next
}

/// The minimiser of the cubic through `a` and `b` (values and slopes), as written in the paper
/// with the scaling that avoids overflow.
fn cubic_minimiser(a: Point, b: Point) -> f64 {
    cubic_minimiser_checked(a, b).unwrap_or(0.5 * (a.t + b.t))
}

/// As [`cubic_minimiser`], `None` where the cubic has no minimiser (its discriminant is
/// negative, which the paper's case 3 handles by extrapolating).
fn cubic_minimiser_checked(a: Point, b: Point) -> Option<f64> {
    let theta = 3.0 * (a.f - b.f) / (b.t - a.t) + a.g + b.g;
    let s = theta.abs().max(a.g.abs()).max(b.g.abs());
    if s == 0.0 || !s.is_finite() {
        return None;
    }
    let disc = (theta / s).powi(2) - (a.g / s) * (b.g / s);
    if disc < 0.0 {
        return None;
    }
    let mut gamma = s * disc.sqrt();
    if b.t < a.t {
        gamma = -gamma;
    }
    let p = (gamma - a.g) + theta;
    let q = ((gamma - a.g) + gamma) + b.g;
    if q == 0.0 {
        return None;
    }
    let r = p / q;
    let t = a.t + r * (b.t - a.t);
    t.is_finite().then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search on `phi` (value and slope) from `t0`; returns the accepted step and the
    /// number of evaluations.
    fn search(phi: impl Fn(f64) -> (f64, f64), t0: f64, params: Wolfe) -> (Option<f64>, usize) {
        let (f0, g0) = phi(0.0);
        let (mut ls, mut t) = MoreThuente::new(params, f0, g0, t0, 1e10);
        for n in 1..=params.max_trials + 1 {
            let (f, g) = phi(t);
            match ls.next(f, g) {
                Search::Converged => return (Some(t), n),
                Search::Trial(next) => t = next,
                Search::Failed { .. } => return (None, n),
            }
        }
        (None, params.max_trials + 1)
    }

    fn strong_wolfe(phi: &impl Fn(f64) -> (f64, f64), t: f64, p: Wolfe) -> bool {
        let ((f0, g0), (f, g)) = (phi(0.0), phi(t));
        f <= f0 + p.c1 * t * g0 && g.abs() <= p.c2 * g0.abs()
    }

    /// The six test functions of Moré and Thuente's section 6, with their parameters, each from
    /// initial steps 1e-3, 1e-1, 1e1 and 1e3: every search ends at a strong Wolfe point, in at
    /// most the number of evaluations the paper reports plus a little.
    #[test]
    fn more_thuente_test_functions() {
        let beta1 = 0.01;
        let beta2 = 0.001;
        let phi1 = |t: f64| (-t / (t * t + 2.0), (t * t - 2.0) / (t * t + 2.0).powi(2));
        let phi2 = |t: f64| {
            ((t + 0.004).powi(5) - 2.0 * (t + 0.004).powi(4), 5.0 * (t + 0.004).powi(4) - 8.0 * (t + 0.004).powi(3))
        };
        let phi3 = |t: f64| {
            let (l, b) = (39.0, 0.01);
            let (s, c) = ((l * std::f64::consts::PI * t / 2.0).sin(), (l * std::f64::consts::PI * t / 2.0).cos());
            let (f0, g0) = if t <= 1.0 - b {
                (1.0 - t, -1.0)
            } else if t >= 1.0 + b {
                (t - 1.0, 1.0)
            } else {
                ((t - 1.0).powi(2) / (2.0 * b) + b / 2.0, (t - 1.0) / b)
            };
            let k = 2.0 * (1.0 - b) / (l * std::f64::consts::PI);
            (f0 + k * s, g0 + k * l * std::f64::consts::PI / 2.0 * c)
        };
        let yanai = |b1: f64, b2: f64| {
            move |t: f64| {
                let g = |b: f64| (1.0 + b * b).sqrt() - b;
                let (r1, r2) = ((1.0 - t).powi(2) + b2 * b2, t * t + b1 * b1);
                let f = g(b1) * r1.sqrt() + g(b2) * r2.sqrt();
                let d = -g(b1) * (1.0 - t) / r1.sqrt() + g(b2) * t / r2.sqrt();
                (f, d)
            }
        };
        let params = [
            Wolfe { c1: 1e-3, c2: 0.1, ..Wolfe::default() },
            Wolfe { c1: 0.1, c2: 0.1, ..Wolfe::default() },
            Wolfe { c1: 0.1, c2: 0.1, ..Wolfe::default() },
            Wolfe { c1: 1e-3, c2: 1e-3, ..Wolfe::default() },
            Wolfe { c1: 1e-3, c2: 1e-3, ..Wolfe::default() },
            Wolfe { c1: 1e-3, c2: 1e-3, ..Wolfe::default() },
        ];
        let functions: [&dyn Fn(f64) -> (f64, f64); 6] =
            [&phi1, &phi2, &phi3, &yanai(0.001, 0.001), &yanai(beta1, beta2), &yanai(beta2, beta1)];
        // The paper's table: at most this many evaluations for the four initial steps.
        let paper_max = [6, 12, 13, 4, 8, 13];
        for (k, (phi, p)) in functions.iter().zip(params).enumerate() {
            for t0 in [1e-3, 1e-1, 1e1, 1e3] {
                let (t, n) = search(phi, t0, p);
                let t = t.unwrap_or_else(|| panic!("function {}: no step from {t0} ({n} evaluations)", k + 1));
                assert!(strong_wolfe(phi, t, p), "function {}: {t} from {t0}", k + 1);
                assert!(n <= paper_max[k] + 2, "function {}: {n} evaluations from {t0}", k + 1);
            }
        }
    }

    #[test]
    fn a_quadratic_takes_its_minimiser_in_few_steps() {
        // φ(t) = (t - 3)^2: from t0 = 1, the unit step is too short; extrapolation, then the
        // exact minimiser from the cubic (a quadratic is a cubic).
        let phi = |t: f64| ((t - 3.0).powi(2), 2.0 * (t - 3.0));
        let p = Wolfe { c2: 0.1, ..Wolfe::default() };
        let (t, n) = search(phi, 1.0, p);
        assert!((t.unwrap() - 3.0).abs() < 0.3 && n <= 3, "{t:?} in {n}");
        // The loose default curvature test accepts the unit step at once.
        assert_eq!(search(phi, 1.0, Wolfe::default()), (Some(1.0), 1));
    }

    #[test]
    fn non_finite_trials_shrink_the_step() {
        // Overflow beyond t = 2; the minimum is at 1.
        let phi = |t: f64| if t > 2.0 { (f64::INFINITY, f64::NAN) } else { ((t - 1.0).powi(2), 2.0 * (t - 1.0)) };
        let (t, n) = search(phi, 1e3, Wolfe::default());
        let t = t.unwrap();
        assert!(t <= 2.0 && strong_wolfe(&phi, t, Wolfe::default()), "{t} in {n}");
    }

    #[test]
    fn an_ascent_everywhere_fails_with_the_start_as_best() {
        // A slope that lies: φ'(0) < 0 is claimed but φ rises at once (a kink at 0).
        let (mut ls, mut t) = MoreThuente::new(Wolfe::default(), 0.0, -1.0, 1.0, 1e10);
        for _ in 0..Wolfe::default().max_trials {
            match ls.next(t.abs() + 1e-3, 1.0) {
                Search::Trial(next) => t = next,
                Search::Failed { best, value } => {
                    assert_eq!((best, value), (0.0, 0.0));
                    return;
                }
                Search::Converged => panic!("accepted an ascent step {t}"),
            }
        }
        panic!("the search did not give up");
    }
}
