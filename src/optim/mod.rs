//! Gradient methods over the image's pixels, in reverse communication: the loop evaluates the
//! loss and gradient at the point an optimizer proposes, hands them over, and the optimizer says
//! what that evaluation was ([`Verdict`]) and proposes the next point. Every evaluation counts
//! towards `--iterations`, a line search's trials included, so a budget is a budget.
//!
//! - [`Lbfgs`]: limited-memory BFGS in a box with Moré and Thuente's strong Wolfe line search
//!   ([`line_search`]), or PyTorch's one-evaluation-per-step rule ([`LineSearch::None`]);
//! - [`Adam`]: Kingma and Ba, with bias correction and optional clamping to the pixel range.

mod adam;
mod cauchy;
mod lbfgs;
pub mod line_search;

pub use adam::{Adam, AdamConfig};
pub use lbfgs::{BACKTRACK_FACTOR, Bounds, FIRST_STEP_RMS, Lbfgs, LineSearch};

/// What the evaluation an optimizer was just given turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The point is the optimizer's new iterate: the start, or a step it took.
    Accepted,
    /// A trial of a line search, not (or not yet) taken.
    Trial,
    /// No decrease can be found from the current iterate: the optimizer has converged (to the
    /// precision of the loss). The proposed point is the iterate.
    Converged,
    /// The evaluation was not finite and the optimizer cannot step back from it.
    Failed,
}

/// An optimizer in reverse communication.
pub trait Optimizer {
    /// Takes the loss and gradient at `x` (the point the optimizer proposed last, or the start),
    /// or `None` if the loss or gradient there was not finite; moves `x` to the next point to
    /// evaluate and says what the evaluation was.
    fn step(&mut self, x: &mut [f32], evaluation: Option<(f64, &[f32])>) -> Verdict;

    /// The optimizer's estimate of the inverse curvature (the scale of a good step per unit of
    /// gradient), if it has one; a pyramid's next scale starts from it.
    fn inverse_curvature(&self) -> Option<f64> {
        None
    }
}

pub(crate) use crate::linalg::dot;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The Rosenbrock function in n dimensions (minimum 0 at all ones) and its gradient.
    pub(crate) fn rosenbrock(x: &[f32]) -> (f64, Vec<f32>) {
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut f = 0.0;
        let mut g = vec![0.0f64; x.len()];
        for i in 0..x.len() - 1 {
            let a = x[i + 1] - x[i] * x[i];
            let b = 1.0 - x[i];
            f += 100.0 * a * a + b * b;
            g[i] += -400.0 * x[i] * a - 2.0 * b;
            g[i + 1] += 200.0 * a;
        }
        (f, g.iter().map(|&v| v as f32).collect())
    }

    /// Where a run of an optimizer ended.
    pub(crate) struct End {
        /// The lowest loss evaluated and its point.
        pub best: f64,
        pub x: Vec<f32>,
        /// Every loss evaluated, and the verdicts.
        pub losses: Vec<f64>,
        pub verdicts: Vec<Verdict>,
    }

    /// Runs `opt` on `f` for `evaluations` evaluations (or until it converges) from `x`.
    pub(crate) fn minimise(
        opt: &mut dyn Optimizer,
        x: &mut [f32],
        evaluations: usize,
        f: impl Fn(&[f32]) -> (f64, Vec<f32>),
    ) -> End {
        let mut end = End { best: f64::INFINITY, x: x.to_vec(), losses: Vec::new(), verdicts: Vec::new() };
        for _ in 0..evaluations {
            let (l, g) = f(x);
            let finite = l.is_finite() && g.iter().all(|v| v.is_finite());
            if finite && l < end.best {
                end.best = l;
                end.x = x.to_vec();
            }
            end.losses.push(l);
            let v = opt.step(x, finite.then_some((l, &g[..])));
            end.verdicts.push(v);
            if matches!(v, Verdict::Converged | Verdict::Failed) {
                break;
            }
        }
        end
    }
}
