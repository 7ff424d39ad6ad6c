//! The objective: content, style and total-variation losses, their values and their gradient
//! with respect to the image's pixels.
//!
//! With `F` a layer's output as a `C x M` matrix (`M = H*W`), following Gatys' reference code:
//! - content: `content_weight * sum_l mean((F_l - P_l)^2)`, `P` the content image's features;
//! - style: `style_weight * sum_l w_l * sum_s b_s * mean((G_l - A_ls)^2)`, `G = F F^T / M`,
//!   `A_ls` the Gram matrix of style image `s`, `b_s` the normalised blend weights and
//!   `w_l = 1/C_l^2` by default;
//! - total variation: `tv_weight * (mean((x[i,j+1]-x[i,j])^2) + mean((x[i+1,j]-x[i,j])^2))` over
//!   the RGB pixels in 0..255.
//!
//! Options beyond Gatys et al. 2015:
//! - `StyleLoss::W2`: the squared Wasserstein-2 distance between Gaussian fits of the features
//!   (mean and covariance; crowsonkb's choice), `|mu - mu_t|^2 + tr(S) + tr(S_t)
//!   - 2 tr((S_t^(1/2) S S_t^(1/2))^(1/2))`, with `w_l = 1e-3/C` by default, with the
//!   matrix square roots by Newton-Schulz and the exact gradient
//!   `dL/dS = I - S_t^(1/2) (S_t^(1/2) S S_t^(1/2))^(-1/2) S_t^(1/2)`;
//! - region masks (Gatys et al. 2017, "Controlling perceptual factors in neural style transfer",
//!   guided Gram matrices): style `s` is compared only where its mask is white,
//!   `G_s = (F m_s)(F m_s)^T / sum(m_s^2)`, the mask resized to the image and averaged 2x2 down to
//!   each layer; a style image may carry a mask of its own, which picks the part of it that
//!   gives the style. With region masks the blend weights are not normalised: each style rules
//!   its own region;
//! - `normalize_gradients` (neural-style's `-normalize_gradients`): each term's gradient with
//!   respect to its layer is divided by its L1 norm before the weight is applied.
//!
//! The pieces, one file each: [`moments`] (what style terms are functions of, and the
//! [`moments::StyleMeasure`] trait), `gram` and `w2` (the two measures), [`masks`],
//! [`tv`] (the pixel term), [`spec`] (the objective as a list of named terms, built once per
//! scale from the configuration: the one place its rules live) and [`objective`] (the
//! evaluation over tiles, written once over any [`crate::engine::Engine`]). Targets (content
//! features, style moments) are computed once, when an objective is built; style targets are
//! kept by the backend for the next objective that needs them.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::image_io::Image;
use crate::linalg;
use crate::size::Size;
use crate::vgg::LayerId;

mod gram;
pub mod masks;
pub mod moments;
pub mod objective;
pub mod spec;
pub mod temporal;
pub mod tv;
mod w2;

pub use masks::check_mask_aspect;
pub use moments::{FeatureGradient, Moments};
pub use objective::Objective;
pub use spec::ObjectiveSpec;
pub use tv::total_variation;

/// How style is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StyleLoss {
    /// Gram matrices (Gatys et al. 2015).
    #[default]
    Gram,
    /// Wasserstein-2 distance between Gaussian fits (mean and covariance) of the features.
    W2,
}

impl FromStr for StyleLoss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gram" => Ok(StyleLoss::Gram),
            "w2" => Ok(StyleLoss::W2),
            _ => Err(Error::config(format!("unknown style loss '{s}': use gram or w2"))),
        }
    }
}

impl StyleLoss {
    /// The name `--style-loss` takes.
    pub fn name(self) -> &'static str {
        match self {
            StyleLoss::Gram => "gram",
            StyleLoss::W2 => "w2",
        }
    }

    /// The measure behind this choice.
    pub fn measure(self) -> &'static dyn moments::StyleMeasure {
        match self {
            StyleLoss::Gram => &gram::Gram,
            StyleLoss::W2 => &w2::W2,
        }
    }
}

/// One style and how it enters the objective: its image, its blend weight among the styles, and
/// its masks, each given as `T`: the images themselves ([`StyleInput`]), files
/// ([`crate::settings::StyleFile`], in the settings JSON), or the studio's upload ids. One shape,
/// so that each front end only says how its references become images ([`Style::try_map`]).
///
/// ```
/// use impasto::{image_io::Image, loss::StyleInput};
/// let sky = StyleInput::new(Image::filled(64, 64, 30.0)).blend(2.0).region_mask(Image::filled(40, 30, 255.0));
/// assert_eq!(sky.blend, 2.0);
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Style<T> {
    /// The style image (an [`Image`], or a path in settings).
    pub image: T,
    /// Its weight among the style images: normalised to sum to 1 over them, except with region
    /// masks, where each style rules its own region.
    #[serde(default = "one")]
    pub blend: f64,
    /// Where in the output this style applies (white = 1, black = 0, any size with the output's
    /// aspect ratio); `None`: everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_mask: Option<T>,
    /// Which part of the style image gives the style (with its aspect ratio); `None`: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_mask: Option<T>,
}

fn one() -> f64 {
    1.0
}

/// A style given as images.
pub type StyleInput = Style<Image>;

impl<T> Style<T> {
    /// The whole of `image`, everywhere, with blend weight 1.
    pub fn new(image: impl Into<T>) -> Self {
        Style { image: image.into(), blend: 1.0, region_mask: None, source_mask: None }
    }
    /// With blend weight `blend`.
    pub fn blend(self, blend: f64) -> Self {
        Style { blend, ..self }
    }
    /// Applied only where `mask` is white.
    pub fn region_mask(self, mask: impl Into<T>) -> Self {
        Style { region_mask: Some(mask.into()), ..self }
    }
    /// Its style taken only from where `mask` is white in the style image.
    pub fn source_mask(self, mask: impl Into<T>) -> Self {
        Style { source_mask: Some(mask.into()), ..self }
    }

    /// The same style with each reference (the image, the masks) turned into another by `f`:
    /// files loaded, upload ids resolved. `f` gets the field's name (`image`, `region_mask`,
    /// `source_mask`) for its errors.
    pub fn try_map<U, E>(
        &self,
        mut f: impl FnMut(&str, &T) -> std::result::Result<U, E>,
    ) -> std::result::Result<Style<U>, E> {
        Ok(Style {
            image: f("image", &self.image)?,
            blend: self.blend,
            region_mask: self.region_mask.as_ref().map(|m| f("region_mask", m)).transpose()?,
            source_mask: self.source_mask.as_ref().map(|m| f("source_mask", m)).transpose()?,
        })
    }
}

impl StyleInput {
    /// The same blend and masks with another image (the style at a scale, or recoloured).
    pub fn with_image(&self, image: Image) -> Self {
        Style { image, blend: self.blend, region_mask: self.region_mask.clone(), source_mask: self.source_mask.clone() }
    }
}

/// Checks style inputs against the loss and the `width` x `height` output they are for: at least
/// one style image (where style is weighed), blend weights finite, not negative and not all zero,
/// masks only where the style loss takes them, each with its image's aspect ratio. Errors name
/// the field (`styles[1].region_mask`).
pub fn check_styles(config: &LossConfig, styles: &[StyleInput], size: Size) -> Result<()> {
    if styles.is_empty() && !config.style_layers.is_empty() && config.style_weight > 0.0 {
        return Err(Error::setting("styles", "must have at least one style image"));
    }
    check_style_count(styles.len())?;
    for (s, style) in styles.iter().enumerate() {
        if !style.blend.is_finite() || style.blend < 0.0 {
            return Err(Error::setting(
                format!("styles[{s}].blend"),
                format!("must be a finite number >= 0, got {}", style.blend),
            ));
        }
        for (name, mask, w) in [
            ("region_mask", &style.region_mask, size),
            ("source_mask", &style.source_mask, Size::new(style.image.width, style.image.height)),
        ] {
            let Some(mask) = mask else { continue };
            let field = format!("styles[{s}].{name}");
            if !config.style_loss.measure().takes_masks() {
                return Err(Error::setting(
                    field,
                    format!(
                        "cannot be used with style loss {}: it takes no masks (gram does)",
                        config.style_loss.name()
                    ),
                ));
            }
            check_mask_aspect(mask, w).map_err(|message| Error::setting(field, message))?;
        }
    }
    if !styles.is_empty() && styles.iter().all(|s| s.blend == 0.0) {
        return Err(Error::setting(
            "styles[0].blend",
            "is 0 and so are all the others: nothing to take the style from",
        ));
    }
    Ok(())
}

/// The most style images a run takes (each adds its targets at every style layer to the memory).
pub const MAX_STYLES: usize = 64;
/// The most layers a term list may name.
pub const MAX_LAYERS: usize = 64;

/// At most [`MAX_STYLES`] styles.
pub fn check_style_count(n: usize) -> Result<()> {
    if n > MAX_STYLES {
        return Err(Error::setting("styles", format!("has {n} style images, at most {MAX_STYLES}")));
    }
    Ok(())
}

/// What to optimise: layers and weights.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// The layers whose features are matched to the photo's (`relu4_2`).
    pub content_layers: Vec<LayerId>,
    /// The layers whose statistics are matched to the style images'.
    pub style_layers: Vec<LayerId>,
    /// One weight per style layer; `None` means the style loss's default (`1/C_l^2` for Gram).
    pub style_layer_weights: Option<Vec<f64>>,
    /// The content loss's weight.
    pub content_weight: f64,
    /// The style loss's weight.
    pub style_weight: f64,
    /// The total-variation loss's weight (smoothness).
    pub tv_weight: f64,
    /// How style statistics are compared (Gram or W2).
    pub style_loss: StyleLoss,
    /// Each term's gradient divided by its L1 norm (neural-style's `-normalize_gradients`).
    pub normalize_gradients: bool,
}

impl Default for LossConfig {
    /// Gatys' reference implementation: content relu4_2 with weight 1, style relu1_1..relu5_1
    /// with `1e3/C^2` each, no total variation.
    fn default() -> Self {
        LossConfig {
            content_layers: vec![LayerId::relu(4, 2)],
            style_layers: (1..=5).map(|b| LayerId::relu(b, 1)).collect(),
            style_layer_weights: None,
            content_weight: 1.0,
            style_weight: 1e3,
            tv_weight: 0.0,
            style_loss: StyleLoss::Gram,
            normalize_gradients: false,
        }
    }
}

impl LossConfig {
    /// Checks weights (finite, not negative), that there are layers and one weight per style
    /// layer. Errors name the field under `loss.`.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, v: f64| {
            if !v.is_finite() || v < 0.0 {
                Err(Error::setting(format!("loss.{name}"), format!("must be a finite number >= 0, got {v}")))
            } else {
                Ok(())
            }
        };
        check("content_weight", self.content_weight)?;
        check("style_weight", self.style_weight)?;
        check("tv_weight", self.tv_weight)?;
        if let Some(w) = &self.style_layer_weights {
            if w.len() != self.style_layers.len() {
                return Err(Error::setting(
                    "loss.style_layer_weights",
                    format!("has {} values but there are {} style layers", w.len(), self.style_layers.len()),
                ));
            }
            w.iter().try_for_each(|&v| check("style_layer_weights", v))?;
        }
        if self.content_layers.is_empty() && self.style_layers.is_empty() {
            return Err(Error::setting(
                "loss.style_layers",
                "and loss.content_layers are both empty: nothing to optimise",
            ));
        }
        // Each layer once: a repeated layer would be a repeated term (and its memory).
        for (name, layers) in [("content_layers", &self.content_layers), ("style_layers", &self.style_layers)] {
            if layers.len() > MAX_LAYERS {
                return Err(Error::setting(
                    format!("loss.{name}"),
                    format!("has {} layers, at most {MAX_LAYERS} (a network has fewer)", layers.len()),
                ));
            }
            if let Some(k) = (1..layers.len()).find(|&k| layers[..k].contains(&layers[k])) {
                return Err(Error::setting(format!("loss.{name}"), format!("names {} twice", layers[k])));
            }
        }
        Ok(())
    }

    /// Every layer the objective reads.
    pub fn layers(&self) -> Vec<LayerId> {
        let mut l: Vec<LayerId> = self.content_layers.iter().chain(&self.style_layers).copied().collect();
        l.sort();
        l.dedup();
        l
    }
}

/// The loss and its parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct LossTerms {
    /// The weighted sum.
    pub total: f64,
    /// The content terms, weighted.
    pub content: f64,
    /// The style terms, weighted.
    pub style: f64,
    /// The total variation, weighted.
    pub tv: f64,
    /// The temporal terms of a video frame, weighted (0 for a still picture).
    pub temporal: f64,
}

/// `sum((a-b)^2)` in f64.
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    linalg::zip_sum(a, b, |x, y| ((x - y) as f64).powi(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_bad_weights_naming_the_field() {
        let err = |c: LossConfig| c.validate().unwrap_err().to_string();
        let mut c = LossConfig { style_weight: -1.0, ..LossConfig::default() };
        assert_eq!(err(c.clone()), "loss.style_weight must be a finite number >= 0, got -1");
        c.style_weight = f64::NAN;
        assert!(err(c).starts_with("loss.style_weight "));
        assert!(err(LossConfig { tv_weight: f64::INFINITY, ..LossConfig::default() }).starts_with("loss.tv_weight "));
        let c = LossConfig { style_layer_weights: Some(vec![1.0; 2]), ..LossConfig::default() };
        assert_eq!(err(c), "loss.style_layer_weights has 2 values but there are 5 style layers");
        let c = LossConfig { content_layers: vec![], style_layers: vec![], ..LossConfig::default() };
        assert!(err(c).contains("nothing to optimise"));
    }

    #[test]
    fn style_inputs_are_checked_naming_the_style() {
        let style = || StyleInput::new(Image::filled(20, 10, 9.0));
        let check = |styles: &[StyleInput], loss: StyleLoss| {
            let config = LossConfig { style_loss: loss, ..LossConfig::default() };
            check_styles(&config, styles, Size::new(40, 30)).map_err(|e| e.to_string())
        };
        assert!(check(&[style(), style().blend(3.0)], StyleLoss::Gram).is_ok());
        assert_eq!(check(&[], StyleLoss::Gram).unwrap_err(), "styles must have at least one style image");
        assert!(check(&[style(), style().blend(-1.0)], StyleLoss::Gram).unwrap_err().starts_with("styles[1].blend "));
        assert!(
            check(&[style().blend(0.0), style().blend(0.0)], StyleLoss::Gram).unwrap_err().contains("all the others")
        );
        let square = Image::filled(8, 8, 255.0);
        let e = check(&[style(), style().region_mask(square.clone())], StyleLoss::Gram).unwrap_err();
        assert!(e.starts_with("styles[1].region_mask is 8x8 (aspect ratio 1.00)"), "{e}");
        let e = check(&[style().source_mask(Image::filled(40, 20, 0.0))], StyleLoss::W2).unwrap_err();
        assert!(e.starts_with("styles[0].source_mask cannot be used with style loss w2"), "{e}");
        assert!(check(&[style().source_mask(Image::filled(40, 20, 0.0))], StyleLoss::Gram).is_ok());
    }

    #[test]
    fn the_loss_config_round_trips_through_json() {
        let c = LossConfig {
            content_layers: vec![LayerId::relu(3, 1), "conv4_2".parse().unwrap()],
            style_layer_weights: Some(vec![0.5, 1.0, 2.0, 1e-3, 7.0]),
            style_loss: StyleLoss::W2,
            normalize_gradients: true,
            tv_weight: 0.1,
            ..LossConfig::default()
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""content_layers":["relu3_1","conv4_2"]"#) && json.contains(r#""style_loss":"w2""#));
        assert_eq!(serde_json::from_str::<LossConfig>(&json).unwrap(), c);
        // Missing fields take the defaults; unknown ones and bad layer names are refused.
        assert_eq!(serde_json::from_str::<LossConfig>("{}").unwrap(), LossConfig::default());
        assert!(
            serde_json::from_str::<LossConfig>(r#"{"style_wieght": 1}"#)
                .unwrap_err()
                .to_string()
                .contains("style_wieght")
        );
        assert!(serde_json::from_str::<LossConfig>(r#"{"style_layers": ["relu9_x"]}"#).is_err());
    }
}
