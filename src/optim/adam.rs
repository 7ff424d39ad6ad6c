//! Adam (Kingma and Ba, 2015) with bias correction. Pixels may be clamped to a range after each
//! step (crowsonkb's style transfer does this).

use super::{Optimizer, Verdict};

/// Adam's settings; `Default` is PyTorch's (lr 1e-3, betas 0.9/0.999, eps 1e-8), no clamping.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Step size.
    pub lr: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the second moment's root.
    pub eps: f32,
    /// Bounds every pixel is clamped to after each step; `None`: none.
    pub clamp: Option<(f32, f32)>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, clamp: None }
    }
}

/// The Adam state: first and second moments.
pub struct Adam {
    cfg: AdamConfig,
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    /// A fresh state (moments made on the first step).
    pub fn new(cfg: AdamConfig) -> Self {
        Adam { cfg, m: Vec::new(), v: Vec::new(), t: 0 }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, x: &mut [f32], evaluation: Option<(f64, &[f32])>) -> Verdict {
        let Some((_, g)) = evaluation else { return Verdict::Failed };
        if self.m.len() != x.len() {
            self.m = vec![0.0; x.len()];
            self.v = vec![0.0; x.len()];
        }
        self.t += 1;
        let AdamConfig { lr, beta1, beta2, eps, clamp } = self.cfg;
        let bc1 = 1.0 - beta1.powi(self.t);
        let bc2 = 1.0 - beta2.powi(self.t);
        for i in 0..x.len() {
            self.m[i] = beta1 * self.m[i] + (1.0 - beta1) * g[i];
            self.v[i] = beta2 * self.v[i] + (1.0 - beta2) * g[i] * g[i];
            let mhat = self.m[i] / bc1;
            let vhat = self.v[i] / bc2;
            x[i] -= lr * mhat / (vhat.sqrt() + eps);
            if let Some((lo, hi)) = clamp {
                x[i] = x[i].clamp(lo, hi);
            }
        }
        Verdict::Accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::tests::{minimise, rosenbrock};

    #[test]
    fn minimises_rosenbrock() {
        let mut x = vec![-1.2f32, 1.0];
        let start = rosenbrock(&x).0;
        let end = minimise(&mut Adam::new(AdamConfig { lr: 0.02, ..Default::default() }), &mut x, 5000, rosenbrock);
        assert!(end.best < 1e-3 * start, "{start} -> {}", end.best);
    }

    #[test]
    fn first_step_moves_each_coordinate_by_lr() {
        let mut x = vec![0.0f32, 5.0, 1.0];
        Adam::new(AdamConfig { lr: 0.5, ..Default::default() }).step(&mut x, Some((0.0, &[3.0, -0.001, 0.0])));
        assert!((x[0] + 0.5).abs() < 1e-5 && (x[1] - 5.5).abs() < 1e-3 && x[2] == 1.0, "{x:?}");
    }

    #[test]
    fn clamps_to_the_range() {
        let mut x = vec![0.2f32, 254.9];
        Adam::new(AdamConfig { lr: 1.0, clamp: Some((0.0, 255.0)), ..Default::default() })
            .step(&mut x, Some((0.0, &[1.0, -1.0])));
        assert_eq!(x, vec![0.0, 255.0]);
    }
}
