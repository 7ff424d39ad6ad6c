//! The Wasserstein-2 style loss (crowsonkb's choice): the squared W2 distance between Gaussian
//! fits (mean and covariance) of the candidate's features and the style's,
//! `|μ - μ_t|² + tr(S) + tr(S_t) - 2 tr((S_t^½ S S_t^½)^½)`, the matrix square roots by
//! Newton-Schulz, with the exact gradient
//! `dL/dS = I - S_t^½ (S_t^½ S S_t^½)^-½ S_t^½`. Blended styles blend the moments: the mean, and
//! the covariance through the second moment. No masks.

use super::moments::{FeatureGradient, Moments, StyleMeasure, StyleTarget};
use crate::linalg::{identity, sqrt_newton_schulz, square};

/// Newton-Schulz iterations for the matrix square roots.
const NEWTON_SCHULZ_ITERATIONS: usize = 20;

pub(super) struct W2;

impl StyleMeasure for W2 {
    /// W2² grows with C and is far larger than a mean of squared Gram entries: 1e-3/C makes the
    /// default style weight (1e3) balance the content as the Gram default does (measured on the
    /// fixture pair).
    fn default_layer_weight(&self, channels: usize) -> f64 {
        1e-3 / channels as f64
    }

    fn takes_masks(&self) -> bool {
        false
    }

    /// The positions' count and mean, and the second moment about that mean (tiles' moments
    /// combine exactly, [`Moments::add`]).
    fn centred(&self) -> bool {
        true
    }

    fn target(&self, channels: usize) -> Box<dyn StyleTarget> {
        Box::new(W2Target {
            c: channels,
            second: vec![0.0; channels * channels],
            mean: vec![0.0; channels],
            total_blend: 0.0,
            cov_sqrt: Vec::new(),
            cov_trace: 0.0,
            ridge: 0.0,
        })
    }
}

struct W2Target {
    c: usize,
    /// `Σ_s b_s F_s F_sᵀ / M_s` while styles are added.
    second: Vec<f32>,
    /// `Σ_s b_s μ_s` while styles are added, then the blended mean.
    mean: Vec<f32>,
    total_blend: f64,
    /// After [`StyleTarget::finish`]: the target covariance's square root and trace.
    cov_sqrt: Vec<f32>,
    cov_trace: f64,
    /// A ridge added to `S_t^½ S S_t^½` before its square root, so that rank-deficient
    /// covariances (fewer positions than channels) keep a finite inverse root. It depends on the
    /// target only, so the gradient stays exact for the regularised loss.
    ridge: f32,
}

impl StyleTarget for W2Target {
    fn add(&mut self, blend: f64, moments: &Moments) {
        let c = self.c;
        let (mean, cov) = moments.mean_and_covariance();
        for i in 0..c {
            for j in 0..c {
                self.second[i * c + j] += blend as f32 * (cov[i * c + j] + mean[i] * mean[j]);
            }
        }
        self.mean.iter_mut().zip(&mean).for_each(|(t, v)| *t += blend as f32 * v);
        self.total_blend += blend;
    }

    fn finish(&mut self) {
        let c = self.c;
        let b = self.total_blend;
        let mut cov = std::mem::take(&mut self.second);
        for i in 0..c {
            for j in 0..c {
                cov[i * c + j] = cov[i * c + j] / b as f32 - self.mean[i] * self.mean[j] / (b * b) as f32;
            }
        }
        self.mean.iter_mut().for_each(|v| *v /= b as f32);
        self.cov_trace = (0..c).map(|i| cov[i * c + i] as f64).sum();
        self.ridge = (1e-5 * (self.cov_trace / c as f64).powi(2) + 1e-12) as f32;
        self.cov_sqrt = sqrt_newton_schulz(&cov, c, NEWTON_SCHULZ_ITERATIONS).0;
    }

    /// The loss and its gradient `(2 strength / M) (dL/dS (F - μ 1ᵀ) + (μ - μ_t) 1ᵀ)`: the
    /// matrix `k dL/dS` and the shift `k (μ - μ_t - dL/dS μ)`, `k = 2 strength / M`.
    fn term(&self, moments: &Moments, strength: f64, with_grad: bool) -> (f64, Option<FeatureGradient>) {
        let c = self.c;
        let (mean, cov) = moments.mean_and_covariance();
        let st = &self.cov_sqrt;
        let mut inner = square(&square(st, &cov, c), st, c);
        (0..c).for_each(|i| inner[i * c + i] += self.ridge);
        let (root, inv_root) = sqrt_newton_schulz(&inner, c, NEWTON_SCHULZ_ITERATIONS);
        let mean_term: f64 = mean.iter().zip(&self.mean).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let trace = |a: &[f32]| (0..c).map(|i| a[i * c + i] as f64).sum::<f64>();
        let w2 = (mean_term + trace(&cov) + self.cov_trace - 2.0 * trace(&root)).max(0.0);
        let loss = strength * w2;
        if !with_grad {
            return (loss, None);
        }
        let mut d_cov = square(&square(st, &inv_root, c), st, c);
        let id = identity(c);
        d_cov.iter_mut().zip(&id).for_each(|(v, i)| *v = i - *v);
        let k = (2.0 * strength / moments.weight) as f32;
        let shift = (0..c)
            .map(|i| {
                let d_mean: f64 = (0..c).map(|j| d_cov[i * c + j] as f64 * mean[j] as f64).sum();
                k * (mean[i] - self.mean[i] - d_mean as f32)
            })
            .collect();
        d_cov.iter_mut().for_each(|v| *v *= k);
        (loss, Some(FeatureGradient { matrix: d_cov, shift }))
    }
}
