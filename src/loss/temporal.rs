//! The temporal term of a video frame, a pixel term (Ruder, Dosovitskiy and Brox, 2016):
//! `weight / D · Σ c · (x − ω)²` over the RGB values in 0..255, D = 3·H·W, where ω is an earlier
//! painted frame warped into this one along the optical flow ([`crate::video::warp()`]) and `c`
//! the flow's per-pixel reliability ([`crate::video::reliability`]), the same for the three
//! channels. Like total variation it is computed where the image is, whatever engine computes
//! the network's terms: [`WithTemporal`] adds it to any [`Evaluator`], on the CPU or the GPU.

use crate::engine::Evaluator;
use crate::error::{Error, Result};
use crate::image_io::{Image, resize};
use crate::size::Size;

use super::LossTerms;

/// What the frame is held to: an earlier painted frame warped into it, where to hold it
/// (`reliability`, per pixel, in 0..1) and how strongly.
#[derive(Clone, Debug, PartialEq)]
pub struct TemporalTarget {
    warped: Image,
    reliability: Vec<f32>,
    weight: f64,
}

impl TemporalTarget {
    /// The target, or an error naming what does not fit: `reliability` needs one value in 0..1
    /// per pixel of `warped`, `weight` is finite and >= 0.
    pub fn new(warped: Image, reliability: Vec<f32>, weight: f64) -> Result<Self> {
        let field = |message: String| Err(Error::Setting { field: "video.temporal_weight".into(), message });
        if !(weight.is_finite() && weight >= 0.0) {
            return field(format!("must be a finite number >= 0, got {weight}"));
        }
        if reliability.len() != warped.width * warped.height {
            return Err(Error::Config(format!(
                "the temporal term's reliability has {} values for a {}x{} frame",
                reliability.len(),
                warped.width,
                warped.height
            )));
        }
        if reliability.iter().any(|c| !(0.0..=1.0).contains(c)) {
            return Err(Error::Config("the temporal term's reliability must lie in 0..1".into()));
        }
        Ok(TemporalTarget { warped, reliability, weight })
    }

    /// The target at `width` x `height` (bilinear), the warped frame passed through `convert`
    /// (the colour mode's view of a candidate).
    pub(crate) fn at_size(&self, width: usize, height: usize, convert: impl Fn(Image) -> Image) -> TemporalTarget {
        let warped = convert(resize(&self.warped, width, height));
        let reliability = if self.size() == (width, height) {
            self.reliability.clone()
        } else {
            let (w, h) = self.size();
            let planes = Image { width: w, height: h, data: self.reliability.repeat(3) };
            resize(&planes, width, height).plane(0).iter().map(|c| c.clamp(0.0, 1.0)).collect()
        };
        TemporalTarget { warped, reliability, weight: self.weight }
    }

    /// The per-pixel weights, row by row.
    pub fn reliability(&self) -> &[f32] {
        &self.reliability
    }

    /// The warped earlier frame.
    pub fn warped(&self) -> &Image {
        &self.warped
    }

    /// The warped frame's width and height.
    pub fn size(&self) -> (usize, usize) {
        (self.warped.width, self.warped.height)
    }
}

/// The temporal term at `img` (of the target's size), its gradient added into `grad`.
pub fn temporal_loss(img: &Image, target: &TemporalTarget, grad: Option<&mut [f32]>) -> f64 {
    let n = img.width * img.height;
    let d = (3 * n) as f64;
    let mut sum = 0.0f64;
    for c in 0..3 {
        for i in 0..n {
            let diff = (img.data[c * n + i] - target.warped.data[c * n + i]) as f64;
            sum += target.reliability[i] as f64 * diff * diff;
        }
    }
    if let Some(grad) = grad {
        let k = 2.0 * target.weight / d;
        for c in 0..3 {
            for i in 0..n {
                let diff = (img.data[c * n + i] - target.warped.data[c * n + i]) as f64;
                grad[c * n + i] += (k * target.reliability[i] as f64 * diff) as f32;
            }
        }
    }
    target.weight * sum / d
}

/// An objective with a video frame's temporal terms added: `inner`'s terms plus one term per
/// target (the previous painted frame, and with long-term consistency frames further back).
pub struct WithTemporal<'a> {
    inner: Box<dyn Evaluator + 'a>,
    targets: Vec<TemporalTarget>,
}

impl<'a> WithTemporal<'a> {
    /// `inner` with `targets` added; an error if a target's size is not `inner`'s.
    pub fn new(inner: Box<dyn Evaluator + 'a>, targets: Vec<TemporalTarget>) -> Result<Self> {
        let size = inner.size();
        if let Some(t) = targets.iter().find(|t| t.size() != (size.width, size.height)) {
            let (w, h) = t.size();
            return Err(Error::Config(format!(
                "a temporal target of {w}x{h} for a {}x{} frame",
                size.width, size.height
            )));
        }
        Ok(WithTemporal { inner, targets })
    }
}

impl Evaluator for WithTemporal<'_> {
    fn size(&self) -> Size {
        self.inner.size()
    }

    fn evaluate(&self, image: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)> {
        let (mut terms, mut grad) = self.inner.evaluate(image, with_grad)?;
        for t in &self.targets {
            terms.temporal += temporal_loss(image, t, grad.as_deref_mut());
        }
        terms.total += terms.temporal;
        Ok((terms, grad))
    }

    fn tiles(&self) -> usize {
        self.inner.tiles()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sum((x - 100)^2)`, with its gradient: an objective to add the temporal term to.
    struct Quadratic(Size);

    impl Evaluator for Quadratic {
        fn size(&self) -> Size {
            self.0
        }
        fn evaluate(&self, image: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)> {
            let total = image.data.iter().map(|&v| ((v - 100.0) as f64).powi(2)).sum();
            let grad = with_grad.then(|| image.data.iter().map(|&v| 2.0 * (v - 100.0)).collect());
            Ok((LossTerms { total, content: total, ..LossTerms::default() }, grad))
        }
    }

    #[test]
    fn with_temporal_adds_the_terms_and_their_gradients() {
        let (w, h) = (4, 3);
        let img = image(w, h, 3);
        let targets = vec![
            TemporalTarget::new(image(w, h, 4), vec![1.0; w * h], 2.0).unwrap(),
            TemporalTarget::new(image(w, h, 5), (0..w * h).map(|i| (i % 2) as f32).collect(), 0.5).unwrap(),
        ];
        let objective = WithTemporal::new(Box::new(Quadratic(Size::new(w, h))), targets.clone()).unwrap();
        let (terms, grad) = objective.evaluate(&img, true).unwrap();
        let (inner, inner_grad) = Quadratic(Size::new(w, h)).evaluate(&img, true).unwrap();
        let temporal: f64 = targets.iter().map(|t| temporal_loss(&img, t, None)).sum();
        assert!(temporal > 0.0);
        assert_eq!(terms.temporal, temporal);
        assert!((terms.total - (inner.total + temporal)).abs() <= 1e-9 * terms.total);
        let grad = grad.unwrap();
        for k in [0, 7, 20, 35] {
            let eps = 0.25f32;
            let at = |d: f32| {
                let mut x = img.clone();
                x.data[k] += d;
                objective.evaluate(&x, false).unwrap().0.total
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
            assert!((fd - grad[k] as f64).abs() <= 1e-4 * fd.abs().max(1.0), "pixel {k}: {fd} vs {}", grad[k]);
            assert_ne!(grad[k], inner_grad.as_ref().unwrap()[k]);
        }
        let wrong = TemporalTarget::new(image(3, 3, 0), vec![1.0; 9], 1.0).unwrap();
        let err = WithTemporal::new(Box::new(Quadratic(Size::new(w, h))), vec![wrong]).err().unwrap().to_string();
        assert!(err.contains("3x3 for a 4x3"), "{err}");
    }

    fn image(w: usize, h: usize, seed: usize) -> Image {
        Image { width: w, height: h, data: (0..3 * w * h).map(|i| ((i * 37 + seed * 11) % 251) as f32).collect() }
    }

    #[test]
    fn temporal_loss_matches_its_formula_and_finite_differences() {
        let (w, h) = (5, 3);
        let img = image(w, h, 1);
        let warped = image(w, h, 2);
        let reliability: Vec<f32> = (0..w * h).map(|i| [0.0, 1.0, 0.5][i % 3]).collect();
        let target = TemporalTarget::new(warped.clone(), reliability.clone(), 7.0).unwrap();
        // By hand: the sum over the pixels and channels, in f64.
        let mut want = 0.0f64;
        for c in 0..3 {
            for i in 0..w * h {
                let d = img.data[c * w * h + i] as f64 - warped.data[c * w * h + i] as f64;
                want += reliability[i] as f64 * d * d;
            }
        }
        want *= 7.0 / (3 * w * h) as f64;
        let mut grad = vec![0.0f32; img.data.len()];
        let got = temporal_loss(&img, &target, Some(&mut grad));
        assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
        for k in [0, 4, 16, 29, 44] {
            let eps = 0.25f32;
            let mut plus = img.clone();
            plus.data[k] += eps;
            let mut minus = img.clone();
            minus.data[k] -= eps;
            let fd = (temporal_loss(&plus, &target, None) - temporal_loss(&minus, &target, None)) / (2.0 * eps as f64);
            assert!((fd - grad[k] as f64).abs() <= 1e-4 * fd.abs().max(1e-3), "pixel {k}: {fd} vs {}", grad[k]);
        }
    }

    #[test]
    fn bad_targets_name_what_is_wrong() {
        let warped = image(4, 4, 0);
        let err = TemporalTarget::new(warped.clone(), vec![1.0; 16], f64::NAN).unwrap_err().to_string();
        assert!(err.contains("video.temporal_weight"), "{err}");
        let err = TemporalTarget::new(warped.clone(), vec![1.0; 15], 1.0).unwrap_err().to_string();
        assert!(err.contains("15 values for a 4x4"), "{err}");
        let err = TemporalTarget::new(warped, vec![2.0; 16], 1.0).unwrap_err().to_string();
        assert!(err.contains("0..1"), "{err}");
    }
}
