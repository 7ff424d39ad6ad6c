//! The Gram style loss (Gatys, Ecker and Bethge 2015): `Σ_s b_s mean((G - A_s)²)` with
//! `G = F Fᵀ / M` the candidate's Gram matrix at a layer and `A_s` style image `s`'s; with masks,
//! the guided Gram matrices of Gatys et al. 2017, `G = (F m)(F m)ᵀ / Σ m²`.

use super::{StyleMeasure, StyleTarget, sq_dist};
use crate::linalg::{self, BufferPool, gram, gram_scaled};

pub(super) struct Gram;

impl StyleMeasure for Gram {
    fn default_layer_weight(&self, channels: usize) -> f64 {
        1.0 / (channels * channels) as f64
    }

    fn takes_masks(&self) -> bool {
        true
    }

    fn target(&self, channels: usize) -> Box<dyn StyleTarget> {
        Box::new(GramTarget {
            c: channels,
            targets: Vec::new(),
            blended: vec![0.0; channels * channels],
            total_blend: 0.0,
        })
    }
}

struct GramTarget {
    c: usize,
    /// `(b_s, A_s)` for each style image.
    targets: Vec<(f64, Vec<f32>)>,
    /// `Σ_s b_s A_s`: the gradient needs only this.
    blended: Vec<f32>,
    /// `Σ_s b_s`.
    total_blend: f64,
}

impl StyleTarget for GramTarget {
    fn add(&mut self, blend: f64, f: &[f32], m: usize, norm: Option<f64>) {
        let c = self.c;
        let a = match norm {
            Some(norm) => gram_scaled(f, c, m, (1.0 / norm.max(1e-12)) as f32),
            None => gram(f, c, m),
        };
        self.blended.iter_mut().zip(&a).for_each(|(t, v)| *t += blend as f32 * v);
        self.total_blend += blend;
        self.targets.push((blend, a));
    }

    fn finish(&mut self) {}

    /// The loss and its gradient `4 strength (B G - Σ_s b_s A_s) F / (C² norm)`, `B = Σ_s b_s`.
    fn term(
        &self,
        f: &[f32],
        m: usize,
        norm: f64,
        strength: f64,
        with_grad: bool,
        buffers: &BufferPool,
    ) -> (f64, Option<Vec<f32>>) {
        let c = self.c;
        let g = gram_scaled(f, c, m, (1.0 / norm) as f32);
        let cc = (c * c) as f64;
        let loss: f64 = self.targets.iter().map(|(b, a)| b * sq_dist(&g, a) / cc).sum::<f64>() * strength;
        if !with_grad {
            return (loss, None);
        }
        let bsum = self.total_blend as f32;
        let d: Vec<f32> = g.iter().zip(&self.blended).map(|(gv, a)| bsum * gv - a).collect();
        let alpha = (4.0 * strength / (cc * norm)) as f32;
        (loss, Some(linalg::times_features(&d, f, c, m, alpha, buffers.take(c * m))))
    }
}
