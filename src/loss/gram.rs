//! The Gram style loss (Gatys, Ecker and Bethge 2015): `Σ_s b_s mean((G - A_s)²)` with
//! `G = F Fᵀ / M` the candidate's Gram matrix at a layer and `A_s` style image `s`'s; with masks,
//! the guided Gram matrices of Gatys et al. 2017, `G = (F m)(F m)ᵀ / Σ m²`.

use super::moments::{FeatureGradient, Moments, StyleMeasure, StyleTarget};
use super::sq_dist;

pub(super) struct Gram;

impl StyleMeasure for Gram {
    fn default_layer_weight(&self, channels: usize) -> f64 {
        1.0 / (channels * channels) as f64
    }

    fn takes_masks(&self) -> bool {
        true
    }

    fn centred(&self) -> bool {
        false
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
    fn add(&mut self, blend: f64, moments: &Moments) {
        let a = moments.second_over_weight();
        self.blended.iter_mut().zip(&a).for_each(|(t, v)| *t += blend as f32 * v);
        self.total_blend += blend;
        self.targets.push((blend, a));
    }

    fn finish(&mut self) {}

    /// The loss and its gradient `4 strength (B G - Σ_s b_s A_s) F / (C² norm)`, `B = Σ_s b_s`.
    fn term(&self, moments: &Moments, strength: f64, with_grad: bool) -> (f64, Option<FeatureGradient>) {
        let c = self.c;
        let g = moments.second_over_weight();
        let cc = (c * c) as f64;
        let loss: f64 = self.targets.iter().map(|(b, a)| b * sq_dist(&g, a) / cc).sum::<f64>() * strength;
        if !with_grad {
            return (loss, None);
        }
        let bsum = self.total_blend as f32;
        let alpha = (4.0 * strength / (cc * moments.weight)) as f32;
        let matrix: Vec<f32> = g.iter().zip(&self.blended).map(|(gv, a)| alpha * (bsum * gv - a)).collect();
        (loss, Some(FeatureGradient { matrix, shift: Vec::new() }))
    }
}
