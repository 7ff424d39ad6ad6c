//! L-BFGS (Nocedal 1980) without a line search, step for step as PyTorch's `LBFGS(lr=1,
//! max_iter=1)` called once per evaluation: the direction comes from the two-loop recursion over
//! the last `history` pairs (s, y), scaled by `H = y.s / y.y`; pairs with `y.s <= 1e-10` are
//! skipped; the first step is `-g * min(1, 1/|g|_1)`.

use super::{Optimizer, dot};

/// The L-BFGS state.
pub struct Lbfgs {
    history: usize,
    lr: f32,
    /// (s, y, 1/(y.s)) pairs, oldest first.
    pairs: std::collections::VecDeque<(Vec<f32>, Vec<f32>, f64)>,
    prev_grad: Option<Vec<f32>>,
    /// The last step taken (t * d).
    prev_step: Vec<f32>,
    h_diag: f64,
}

impl Lbfgs {
    /// `history` pairs (PyTorch's `history_size`, default 100), step length `lr` (1).
    pub fn new(history: usize, lr: f32) -> Self {
        Lbfgs { history: history.max(1), lr, pairs: Default::default(), prev_grad: None, prev_step: Vec::new(), h_diag: 1.0 }
    }

    /// The search direction `-H g` from the two-loop recursion.
    fn direction(&self, g: &[f32]) -> Vec<f32> {
        let mut q: Vec<f32> = g.iter().map(|v| -v).collect();
        let mut alpha = vec![0.0; self.pairs.len()];
        for (i, (s, y, rho)) in self.pairs.iter().enumerate().rev() {
            alpha[i] = rho * dot(s, &q);
            let a = alpha[i] as f32;
            q.iter_mut().zip(y).for_each(|(q, y)| *q -= a * y);
        }
        let h = self.h_diag as f32;
        q.iter_mut().for_each(|v| *v *= h);
        for (i, (s, y, rho)) in self.pairs.iter().enumerate() {
            let beta = rho * dot(y, &q);
            let k = (alpha[i] - beta) as f32;
            q.iter_mut().zip(s).for_each(|(d, s)| *d += k * s);
        }
        q
    }
}

impl Optimizer for Lbfgs {
    fn step(&mut self, x: &mut [f32], g: &[f32]) {
        let first = match &self.prev_grad {
            None => true,
            Some(pg) => {
                let y: Vec<f32> = g.iter().zip(pg).map(|(a, b)| a - b).collect();
                let s = std::mem::take(&mut self.prev_step);
                let ys = dot(&y, &s);
                if ys > 1e-10 {
                    if self.pairs.len() == self.history {
                        self.pairs.pop_front();
                    }
                    self.h_diag = ys / dot(&y, &y);
                    self.pairs.push_back((s, y, 1.0 / ys));
                }
                false
            }
        };
        let mut d = self.direction(g);
        if dot(g, &d) > -1e-9 {
            // Not a descent direction (a degenerate history): restart from steepest descent.
            self.pairs.clear();
            self.h_diag = 1.0;
            d = g.iter().map(|v| -v).collect();
        }
        let t = if first {
            let l1: f64 = g.iter().map(|v| v.abs() as f64).sum();
            (1.0f64).min(1.0 / l1.max(f64::MIN_POSITIVE)) as f32 * self.lr
        } else {
            self.lr
        };
        d.iter_mut().for_each(|v| *v *= t);
        x.iter_mut().zip(&d).for_each(|(x, s)| *x += s);
        self.prev_step = d;
        self.prev_grad = Some(g.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::tests::{minimise, rosenbrock};

    #[test]
    fn minimises_rosenbrock() {
        let mut x = vec![-1.2f32, 1.0, -0.5, 0.8];
        let start = rosenbrock(&x).0;
        let end = minimise(&mut Lbfgs::new(100, 1.0), &mut x, 300);
        assert!(end < 1e-6 * start, "{start} -> {end}");
        assert!(x.iter().all(|v| (v - 1.0).abs() < 1e-2), "{x:?}");
    }

    #[test]
    fn first_step_is_scaled_gradient_descent() {
        let mut x = vec![0.0f32, 0.0];
        let g = vec![2.0f32, -6.0];
        Lbfgs::new(10, 1.0).step(&mut x, &g);
        assert_eq!(x, vec![-2.0 / 8.0, 6.0 / 8.0]);
    }

    #[test]
    fn exact_on_a_quadratic_after_enough_pairs() {
        // f = 0.5 x^T diag(1, 10) x: with two pairs the BFGS direction is the Newton step.
        let grad = |x: &[f32]| vec![x[0], 10.0 * x[1]];
        let mut x = vec![1.0f32, 1.0];
        let mut opt = Lbfgs::new(10, 1.0);
        for _ in 0..6 {
            let g = grad(&x);
            opt.step(&mut x, &g);
        }
        assert!(x.iter().all(|v| v.abs() < 1e-4), "{x:?}");
    }
}
