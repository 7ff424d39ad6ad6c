//! What a style term is a function of, and what its gradient is: sums over a layer's positions
//! ([`Moments`]), which add up over tiles to the whole image's, and an affine map of the
//! features ([`FeatureGradient`]), the same at every position. A way of comparing styles
//! ([`StyleMeasure`]: Gram, W2) says which moments it needs and turns the target's and the
//! candidate's into a loss and a feature gradient ([`StyleTarget`]). Engines compute the moments
//! and apply the gradient; everything between happens here, on the host, once for every engine.

use rayon::prelude::*;

use crate::linalg::{self, gram_scaled};

/// Sums over a layer's positions that a style term is a function of. Computed per tile and
/// added up, they are the whole image's.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// The squared mask weights' sum (the number of positions without a mask).
    pub weight: f64,
    /// `Σ f` per channel (centred moments only; empty otherwise).
    pub sum: Vec<f64>,
    /// `Σ f fᵀ` (`C x C`); with `centred`, about these moments' own mean `sum / weight`.
    pub second: Vec<f64>,
    /// Whether `second` is about the mean (W2) or not (Gram).
    pub centred: bool,
}

impl Moments {
    /// The moments of features `f` (`C x m`, columns already weighted by a mask whose squared
    /// weights sum to `weight`; `m` without one): uncentred `Σ f fᵀ`, or `centred` (the sums
    /// per channel and the second moment about their mean over the `m` columns).
    pub fn of(f: &[f32], c: usize, m: usize, weight: f64, centred: bool) -> Moments {
        if !centred {
            let second = gram_scaled(f, c, m, 1.0).into_iter().map(f64::from).collect();
            return Moments { weight, sum: Vec::new(), second, centred };
        }
        let sum: Vec<f64> = f.par_chunks(m).map(|r| r.iter().map(|&v| v as f64).sum::<f64>()).collect();
        let mut x = linalg::copied(f);
        x.par_chunks_mut(m).zip(sum.par_iter()).for_each(|(r, s)| {
            let mu = (s / m as f64) as f32;
            r.iter_mut().for_each(|v| *v -= mu)
        });
        let second = gram_scaled(&x, c, m, 1.0).into_iter().map(f64::from).collect();
        Moments { weight, sum, second, centred }
    }

    /// The channels (`C` of the `C x C` second moment).
    pub fn channels(&self) -> usize {
        (self.second.len() as f64).sqrt().round() as usize
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        8 * (self.sum.len() + self.second.len()) + std::mem::size_of::<Self>()
    }

    /// Adds another part's moments (for centred moments, Chan et al.'s pairwise update).
    pub fn add(&mut self, other: &Moments) {
        if self.centred && self.weight > 0.0 && other.weight > 0.0 {
            let (na, nb) = (self.weight, other.weight);
            let k = na * nb / (na + nb);
            let delta: Vec<f64> = self.sum.iter().zip(&other.sum).map(|(a, b)| b / nb - a / na).collect();
            let c = delta.len();
            for i in 0..c {
                for j in 0..c {
                    self.second[i * c + j] += k * delta[i] * delta[j];
                }
            }
        }
        self.second.iter_mut().zip(&other.second).for_each(|(a, b)| *a += b);
        self.sum.iter_mut().zip(&other.sum).for_each(|(a, b)| *a += b);
        self.weight += other.weight;
    }

    /// Adds `part` into `sum` (which starts empty).
    pub fn accumulate(sum: &mut Option<Moments>, part: Moments) {
        match sum {
            Some(s) => s.add(&part),
            None => *sum = Some(part),
        }
    }

    /// `second / weight` in f32 (the Gram matrix).
    pub fn second_over_weight(&self) -> Vec<f32> {
        let k = 1.0 / self.weight.max(1e-12);
        self.second.iter().map(|v| (v * k) as f32).collect()
    }

    /// The mean and covariance of centred moments.
    pub fn mean_and_covariance(&self) -> (Vec<f32>, Vec<f32>) {
        debug_assert!(self.centred);
        let k = 1.0 / self.weight.max(1e-12);
        (self.sum.iter().map(|v| (v * k) as f32).collect(), self.second_over_weight())
    }
}

/// A style term's gradient with respect to a layer's features: `matrix f + shift` at each
/// position `f` (`C x C` and `C`; no shift when empty).
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureGradient {
    /// `C x C`, row-major.
    pub matrix: Vec<f32>,
    /// `C` values, or none.
    pub shift: Vec<f32>,
}

/// One way of comparing a layer's features with the style images'. Each is one file (`gram.rs`,
/// `w2.rs`); a new one is a new file, a [`super::StyleLoss`] variant and its line in
/// [`super::StyleLoss::measure`]. Masks are applied around it: a style image's features come
/// with its source mask's weights on their columns, a candidate's with its region mask's, and
/// the gradient is masked again on the way back.
pub trait StyleMeasure: Sync {
    /// The layer weight `w_l` when no `--style-layer-weights` are given, for a layer of
    /// `channels` channels.
    fn default_layer_weight(&self, channels: usize) -> f64;

    /// Whether region and source masks apply.
    fn takes_masks(&self) -> bool;

    /// Whether its moments are centred ([`Moments::of`]).
    fn centred(&self) -> bool;

    /// An empty target for a layer of `channels` channels, for [`StyleTarget::add`].
    fn target(&self, channels: usize) -> Box<dyn StyleTarget>;
}

/// The target statistics of one group of style images at one layer, and the term against them.
pub trait StyleTarget: Send + Sync {
    /// Adds a style image's moments with blend weight `blend`.
    fn add(&mut self, blend: f64, moments: &Moments);

    /// Called once, after the last [`StyleTarget::add`].
    fn finish(&mut self);

    /// `strength` times the term at the candidate's moments and, if `with_grad`, its gradient
    /// with respect to the candidate's (mask-weighted) features.
    fn term(&self, moments: &Moments, strength: f64, with_grad: bool) -> (f64, Option<FeatureGradient>);
}
