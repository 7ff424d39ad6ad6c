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
//! Targets (content features, style Gram matrices or moments) are computed once, when the
//! [`Objective`] is built.

use std::str::FromStr;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::image_io::{Image, resize};
use crate::linalg::{self, BufferPool};
use crate::vgg::{LayerId, Vgg, Workspace};

mod gram;
mod w2;

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
    fn measure(self) -> &'static dyn StyleMeasure {
        match self {
            StyleLoss::Gram => &gram::Gram,
            StyleLoss::W2 => &w2::W2,
        }
    }
}

/// One way of comparing a layer's features with the style images'. Each is one file (`gram.rs`,
/// `w2.rs`); a new one is a new file, a [`StyleLoss`] variant and its line in
/// [`StyleLoss::measure`]. Masks are applied around it: a style image's features come with its
/// source mask's weights on their columns, a candidate's with its region mask's, and the
/// gradient is masked again on the way back.
trait StyleMeasure: Sync {
    /// The layer weight `w_l` when no `--style-layer-weights` are given, for a layer of
    /// `channels` channels.
    fn default_layer_weight(&self, channels: usize) -> f64;

    /// Whether region and source masks apply.
    fn takes_masks(&self) -> bool;

    /// An empty target for a layer of `channels` channels, for [`StyleTarget::add`].
    fn target(&self, channels: usize) -> Box<dyn StyleTarget>;
}

/// The target statistics of one group of style images at one layer, and the term against them.
trait StyleTarget: Send + Sync {
    /// Adds a style image's features `f` (`C x m`) with blend weight `blend`. With a source mask
    /// the columns are weighted by it and `norm` is the sum of its squared weights.
    fn add(&mut self, blend: f64, f: &[f32], m: usize, norm: Option<f64>);

    /// Called once, after the last [`StyleTarget::add`].
    fn finish(&mut self);

    /// `strength` times the term at the candidate's features `f` (`C x m`, columns weighted by
    /// the region mask, `norm` the sum of its squared weights, or `m` without one) and, if
    /// `with_grad`, its gradient with respect to `f`, in a buffer from `buffers`.
    fn term(
        &self,
        f: &[f32],
        m: usize,
        norm: f64,
        strength: f64,
        with_grad: bool,
        buffers: &BufferPool,
    ) -> (f64, Option<Vec<f32>>);
}

/// One style image and how it enters the objective.
///
/// ```
/// use impasto::{image_io::Image, loss::StyleInput};
/// let sky = StyleInput::new(Image::filled(64, 64, 30.0)).blend(2.0).region_mask(Image::filled(40, 30, 255.0));
/// assert_eq!(sky.blend, 2.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct StyleInput {
    pub image: Image,
    /// Its weight among the style images: normalised to sum to 1 over them, except with region
    /// masks, where each style rules its own region.
    pub blend: f64,
    /// Where in the output this style applies (white = 1, black = 0, any size with the output's
    /// aspect ratio); `None`: everywhere.
    pub region_mask: Option<Image>,
    /// Which part of the style image gives the style (with its aspect ratio); `None`: all of it.
    pub source_mask: Option<Image>,
}

impl StyleInput {
    /// The whole of `image`, everywhere, with blend weight 1.
    pub fn new(image: Image) -> Self {
        StyleInput { image, blend: 1.0, region_mask: None, source_mask: None }
    }
    pub fn blend(self, blend: f64) -> Self {
        StyleInput { blend, ..self }
    }
    pub fn region_mask(self, mask: Image) -> Self {
        StyleInput { region_mask: Some(mask), ..self }
    }
    pub fn source_mask(self, mask: Image) -> Self {
        StyleInput { source_mask: Some(mask), ..self }
    }
    /// The same blend and masks with another image (the style at a scale, or recoloured).
    pub fn with_image(&self, image: Image) -> Self {
        StyleInput {
            image,
            blend: self.blend,
            region_mask: self.region_mask.clone(),
            source_mask: self.source_mask.clone(),
        }
    }
}

/// Checks style inputs against the loss and the `width` x `height` output they are for: at least
/// one style image (where style is weighed), blend weights finite, not negative and not all zero,
/// masks only where the style loss takes them, each with its image's aspect ratio. Errors name
/// the field (`styles[1].region_mask`).
pub fn check_styles(config: &LossConfig, styles: &[StyleInput], width: usize, height: usize) -> Result<()> {
    if styles.is_empty() && !config.style_layers.is_empty() && config.style_weight > 0.0 {
        return Err(Error::setting("styles", "must have at least one style image"));
    }
    for (s, style) in styles.iter().enumerate() {
        if !style.blend.is_finite() || style.blend < 0.0 {
            return Err(Error::setting(
                format!("styles[{s}].blend"),
                format!("must be a finite number >= 0, got {}", style.blend),
            ));
        }
        for (name, mask, (w, h)) in [
            ("region_mask", &style.region_mask, (width, height)),
            ("source_mask", &style.source_mask, (style.image.width, style.image.height)),
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
            check_mask_aspect(mask, w, h).map_err(|message| Error::setting(field, message))?;
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

/// What to optimise: layers and weights.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    pub content_layers: Vec<LayerId>,
    pub style_layers: Vec<LayerId>,
    /// One weight per style layer; `None` means the style loss's default (`1/C_l^2` for Gram).
    pub style_layer_weights: Option<Vec<f64>>,
    pub content_weight: f64,
    pub style_weight: f64,
    pub tv_weight: f64,
    pub style_loss: StyleLoss,
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
pub struct LossTerms {
    pub total: f64,
    pub content: f64,
    pub style: f64,
    pub tv: f64,
}

/// `sum((a-b)^2)` in f64.
fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    linalg::zip_sum(a, b, |x, y| ((x - y) as f64).powi(2))
}

/// Total variation of planar RGB pixels and its gradient (added into `grad`, times `weight`).
pub fn total_variation(img: &Image, weight: f64, grad: Option<&mut [f32]>) -> f64 {
    let (h, w) = (img.height, img.width);
    let nx = 3 * h * w.saturating_sub(1);
    let ny = 3 * h.saturating_sub(1) * w;
    let mut sx = 0.0f64;
    let mut sy = 0.0f64;
    for c in 0..3 {
        let p = img.plane(c);
        for y in 0..h {
            for x in 0..w {
                let v = p[y * w + x];
                if x + 1 < w {
                    sx += ((p[y * w + x + 1] - v) as f64).powi(2);
                }
                if y + 1 < h {
                    sy += ((p[(y + 1) * w + x] - v) as f64).powi(2);
                }
            }
        }
    }
    if let Some(grad) = grad {
        let kx = if nx > 0 { 2.0 * weight / nx as f64 } else { 0.0 } as f32;
        let ky = if ny > 0 { 2.0 * weight / ny as f64 } else { 0.0 } as f32;
        for c in 0..3 {
            let p = img.plane(c);
            let g = &mut grad[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                for x in 0..w {
                    let v = p[y * w + x];
                    if x + 1 < w {
                        let d = p[y * w + x + 1] - v;
                        g[y * w + x + 1] += kx * d;
                        g[y * w + x] -= kx * d;
                    }
                    if y + 1 < h {
                        let d = p[(y + 1) * w + x] - v;
                        g[(y + 1) * w + x] += ky * d;
                        g[y * w + x] -= ky * d;
                    }
                }
            }
        }
    }
    let mx = if nx > 0 { sx / nx as f64 } else { 0.0 };
    let my = if ny > 0 { sy / ny as f64 } else { 0.0 };
    weight * (mx + my)
}

struct ContentTerm {
    layer: LayerId,
    target: Vec<f32>,
}

/// The targets of one style term at one layer: one group per region (or one for all styles).
struct StyleTerm {
    layer: LayerId,
    weight: f64,
    groups: Vec<StyleGroup>,
}

struct StyleGroup {
    /// The output-space mask at this layer's resolution; `None` is the whole image.
    region: Option<Vec<f32>>,
    /// `sum(m^2)`: the Gram normalisation (`M` without a mask).
    norm: f64,
    target: Box<dyn StyleTarget>,
}

/// Checks that a mask has the aspect ratio (within 2%) of the `width` x `height` image it
/// covers; the error says how they differ.
pub fn check_mask_aspect(mask: &Image, width: usize, height: usize) -> std::result::Result<(), String> {
    let (ma, ta) = (mask.width as f64 / mask.height as f64, width as f64 / height as f64);
    if (ma / ta - 1.0).abs() > 0.02 {
        return Err(format!(
            "is {}x{} (aspect ratio {ma:.2}) but the image it covers is {width}x{height} (aspect ratio {ta:.2})",
            mask.width, mask.height
        ));
    }
    Ok(())
}

/// A mask image as weights in 0..1 (its luminance), resized to `width` x `height` (its aspect
/// ratio checked by [`check_styles`]).
pub(crate) fn mask_weights(mask: &Image, width: usize, height: usize) -> Vec<f32> {
    let m = resize(mask, width, height);
    let n = width * height;
    (0..n)
        .map(|i| ((0.299 * m.data[i] + 0.587 * m.data[n + i] + 0.114 * m.data[2 * n + i]) / 255.0).clamp(0.0, 1.0))
        .collect()
}

/// `mask` averaged over 2x2 blocks `times` times (odd rows and columns dropped, as pooling does).
pub(crate) fn downsample(mask: &[f32], mut width: usize, mut height: usize, times: usize) -> Vec<f32> {
    let mut m = mask.to_vec();
    for _ in 0..times {
        let (w2, h2) = (width / 2, height / 2);
        let mut out = vec![0.0; w2 * h2];
        for y in 0..h2 {
            for x in 0..w2 {
                let i = 2 * y * width + 2 * x;
                out[y * w2 + x] = 0.25 * (m[i] + m[i + 1] + m[i + width] + m[i + width + 1]);
            }
        }
        (m, width, height) = (out, w2, h2);
    }
    m
}

/// `f` (`c x m`) with each column scaled by `mask`.
fn apply_mask(f: &[f32], mask: &[f32]) -> Vec<f32> {
    let mut out = linalg::copied(f);
    mask_in_place(&mut out, mask);
    out
}

/// Each plane of `f` times `mask`, in place.
fn mask_in_place(f: &mut [f32], mask: &[f32]) {
    f.par_chunks_mut(mask.len()).for_each(|r| r.iter_mut().zip(mask).for_each(|(v, k)| *v *= k));
}

/// Scales `g` to L1 norm `strength` (neural-style's gradient normalisation).
fn normalize_l1(g: &mut [f32], strength: f64) {
    let l1: f64 = linalg::zip_sum(g, g, |v, _| v.abs() as f64);
    let k = (strength / (l1 + 1e-8)) as f32;
    linalg::apply(g, |v| *v *= k);
}

/// The objective for one content image and its style images, at the content image's size.
///
/// ```no_run
/// use impasto::{image_io::Image, loss::{LossConfig, Objective, StyleInput}, vgg::Vgg, weights};
/// # fn main() -> impasto::Result<()> {
/// let net = Vgg::new(weights::load("vgg19.pth".as_ref(), None)?, Default::default());
/// let (content, style) = (Image::filled(64, 48, 128.0), Image::filled(64, 64, 30.0));
/// let objective = Objective::new(&net, &LossConfig::default(), &content, &[StyleInput::new(style)])?;
/// let (terms, grad) = objective.evaluate(&content, true)?;
/// assert_eq!(terms.content, 0.0);
/// assert_eq!(grad.unwrap().len(), 3 * 64 * 48);
/// # Ok(()) }
/// ```
pub struct Objective<'n> {
    net: &'n Vgg,
    width: usize,
    height: usize,
    config: LossConfig,
    content: Vec<ContentTerm>,
    style: Vec<StyleTerm>,
    layers: Vec<LayerId>,
    /// This objective's scratch memory; the network is shared.
    workspace: Workspace,
}

impl<'n> Objective<'n> {
    /// Computes the targets. The content image sets the size of every image evaluated; the style
    /// images are used at their own sizes.
    pub fn new(net: &'n Vgg, config: &LossConfig, content: &Image, styles: &[StyleInput]) -> Result<Self> {
        config.validate()?;
        check_styles(config, styles, content.width, content.height)?;
        net.check_layers(&config.layers())?;
        let regions = styles.iter().any(|s| s.region_mask.is_some());
        let mut blend: Vec<f64> = styles.iter().map(|s| s.blend).collect();
        if !regions {
            let sum: f64 = blend.iter().sum();
            blend.iter_mut().for_each(|b| *b /= sum);
        }
        let workspace = Workspace::new();
        let cf = net.forward(&workspace, &content.data, content.height, content.width, &config.content_layers)?;
        let mut content_terms = Vec::new();
        for &layer in &config.content_layers {
            content_terms.push(ContentTerm { layer, target: net.activation(&cf, layer)?.0.to_vec() });
        }
        drop(cf);
        let region_masks: Vec<Option<Vec<f32>>> = styles
            .iter()
            .map(|s| s.region_mask.as_ref().map(|m| mask_weights(m, content.width, content.height)))
            .collect();
        let measure = config.style_loss.measure();
        let mut style_terms: Vec<StyleTerm> = Vec::new();
        for (s, style) in styles.iter().enumerate() {
            let img = &style.image;
            let source = style.source_mask.as_ref().map(|m| mask_weights(m, img.width, img.height));
            let sf = net.forward(&workspace, &img.data, img.height, img.width, &config.style_layers)?;
            for (li, &layer) in config.style_layers.iter().enumerate() {
                let (f, (c, h, w)) = net.activation(&sf, layer)?;
                let pools = net.pools_before(layer)?;
                if s == 0 {
                    let weight = match &config.style_layer_weights {
                        Some(w) => w[li],
                        None => measure.default_layer_weight(c),
                    };
                    style_terms.push(StyleTerm { layer, weight, groups: Vec::new() });
                }
                let term = &mut style_terms[li];
                // One group for all styles, or one per style when regions are used.
                if s == 0 || regions {
                    let region = region_masks[s].as_ref().map(|m| downsample(m, content.width, content.height, pools));
                    let (lh, lw) = (content.height >> pools, content.width >> pools);
                    let norm =
                        region.as_ref().map_or((lh * lw) as f64, |m| m.iter().map(|v| (*v as f64).powi(2)).sum());
                    term.groups.push(StyleGroup { region, norm, target: measure.target(c) });
                }
                let group = term.groups.last_mut().unwrap();
                let m = h * w;
                match &source {
                    Some(src) => {
                        let mask = downsample(src, img.width, img.height, pools);
                        let norm: f64 = mask.iter().map(|v| (*v as f64).powi(2)).sum();
                        group.target.add(blend[s], &apply_mask(f, &mask), m, Some(norm));
                    }
                    None => group.target.add(blend[s], f, m, None),
                }
            }
        }
        style_terms.iter_mut().flat_map(|t| &mut t.groups).for_each(|g| g.target.finish());
        Ok(Objective {
            net,
            width: content.width,
            height: content.height,
            config: config.clone(),
            content: content_terms,
            style: style_terms,
            layers: config.layers(),
            workspace,
        })
    }

    /// The size every evaluated image must have.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The loss of `img` and, if `with_grad`, its gradient with respect to the pixels.
    pub fn evaluate(&self, img: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)> {
        if (img.width, img.height) != (self.width, self.height) {
            return Err(Error::config(format!(
                "the image is {}x{} but the objective is for {}x{}",
                img.width, img.height, self.width, self.height
            )));
        }
        let cfg = &self.config;
        let fwd = self.net.forward(&self.workspace, &img.data, img.height, img.width, &self.layers)?;
        let mut terms = LossTerms::default();
        let mut grads: Vec<(LayerId, Vec<f32>)> = Vec::new();
        for t in &self.content {
            let (f, _) = self.net.activation(&fwd, t.layer)?;
            let n = f.len() as f64;
            terms.content += cfg.content_weight * sq_dist(f, &t.target) / n;
            if with_grad {
                let k = (2.0 * cfg.content_weight / n) as f32;
                let mut g = self.workspace.buffers().copied(f);
                linalg::zip_apply(&mut g, &t.target, |a, b| *a = k * (*a - b));
                if cfg.normalize_gradients {
                    normalize_l1(&mut g, cfg.content_weight);
                }
                grads.push((t.layer, g));
            }
        }
        for t in &self.style {
            let (f, (c, h, w)) = self.net.activation(&fwd, t.layer)?;
            let strength = cfg.style_weight * t.weight;
            let mut layer_grad: Option<Vec<f32>> = None;
            debug_assert!(f.len() == c * h * w);
            for group in &t.groups {
                let (loss, grad) = style_group_term(f, h * w, group, strength, with_grad, self.workspace.buffers());
                terms.style += loss;
                if let Some(g) = grad {
                    match &mut layer_grad {
                        Some(acc) => linalg::zip_apply(acc, &g, |a, b| *a += b),
                        None => layer_grad = Some(g),
                    }
                }
            }
            if let Some(mut g) = layer_grad {
                if cfg.normalize_gradients {
                    normalize_l1(&mut g, strength);
                }
                grads.push((t.layer, g));
            }
        }
        let mut grad = if with_grad { Some(self.net.backward(&fwd, &grads)?) } else { None };
        self.workspace.recycle(fwd, grads.into_iter().map(|(_, g)| g));
        if cfg.tv_weight > 0.0 {
            terms.tv = total_variation(img, cfg.tv_weight, grad.as_deref_mut());
        }
        terms.total = terms.content + terms.style + terms.tv;
        Ok((terms, grad))
    }
}

/// A group's style term at features `f` (`C x m`): through its region mask, if it has one.
fn style_group_term(
    f: &[f32],
    m: usize,
    group: &StyleGroup,
    strength: f64,
    with_grad: bool,
    buffers: &BufferPool,
) -> (f64, Option<Vec<f32>>) {
    if group.norm <= 0.0 {
        return (0.0, None); // an all-black region: this style applies nowhere
    }
    let masked = group.region.as_ref().map(|r| apply_mask(f, r));
    let (loss, mut grad) =
        group.target.term(masked.as_deref().unwrap_or(f), m, group.norm, strength, with_grad, buffers);
    if let (Some(g), Some(r)) = (grad.as_mut(), &group.region) {
        mask_in_place(g, r);
    }
    (loss, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_variation_matches_formula_and_finite_differences() {
        let (w, h) = (4, 3);
        let data: Vec<f32> = (0..3 * w * h).map(|i| ((i * 37) % 11) as f32 * 10.0).collect();
        let img = Image { width: w, height: h, data };
        // Direct formula.
        let (mut sx, mut sy) = (0.0, 0.0);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let v = img.data[c * w * h + y * w + x] as f64;
                    if x + 1 < w {
                        sx += (img.data[c * w * h + y * w + x + 1] as f64 - v).powi(2);
                    }
                    if y + 1 < h {
                        sy += (img.data[c * w * h + (y + 1) * w + x] as f64 - v).powi(2);
                    }
                }
            }
        }
        let want = 2.0 * (sx / (3 * h * (w - 1)) as f64 + sy / (3 * (h - 1) * w) as f64);
        let mut grad = vec![0.0; img.data.len()];
        let tv = total_variation(&img, 2.0, Some(&mut grad));
        assert!((tv - want).abs() < 1e-9 * want, "{tv} vs {want}");
        for i in [0, 5, 17, 35] {
            let mut p = img.clone();
            p.data[i] += 0.5;
            let mut m = img.clone();
            m.data[i] -= 0.5;
            let fd = (total_variation(&p, 2.0, None) - total_variation(&m, 2.0, None)) / 1.0;
            assert!((fd - grad[i] as f64).abs() < 1e-4 * (1.0 + fd.abs()), "{i}: {fd} vs {}", grad[i]);
        }
    }

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
            check_styles(&config, styles, 40, 30).map_err(|e| e.to_string())
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
