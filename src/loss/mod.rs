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

use std::borrow::Cow;
use std::str::FromStr;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::image_io::{Image, resize};
use crate::linalg::{self, BufferPool};
use crate::tiles::{self, Tile, TileGrid, Window};
use crate::vgg::{Forward, LayerId, Vgg, Workspace};

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
/// [`StyleLoss::measure`]. A term is a function of sums over positions ([`Moments`]), so that
/// tiles' sums add up to the whole image's, and its gradient with respect to the features is
/// the same affine map at every position ([`FeatureGradient`]). Masks are applied around it: a
/// style image's features come with its source mask's weights on their columns, a candidate's
/// with its region mask's, and the gradient is masked again on the way back.
trait StyleMeasure: Sync {
    /// The layer weight `w_l` when no `--style-layer-weights` are given, for a layer of
    /// `channels` channels.
    fn default_layer_weight(&self, channels: usize) -> f64;

    /// Whether region and source masks apply.
    fn takes_masks(&self) -> bool;

    /// The moments of features `f` (`C x m`, columns weighted by a mask whose squared weights
    /// sum to `weight`; `m` without one).
    fn moments(&self, f: &[f32], c: usize, m: usize, weight: f64) -> Moments;

    /// An empty target for a layer of `channels` channels, for [`StyleTarget::add`].
    fn target(&self, channels: usize) -> Box<dyn StyleTarget>;
}

/// The target statistics of one group of style images at one layer, and the term against them.
trait StyleTarget: Send + Sync {
    /// Adds a style image's moments with blend weight `blend`.
    fn add(&mut self, blend: f64, moments: &Moments);

    /// Called once, after the last [`StyleTarget::add`].
    fn finish(&mut self);

    /// `strength` times the term at the candidate's moments and, if `with_grad`, its gradient
    /// with respect to the candidate's (mask-weighted) features.
    fn term(&self, moments: &Moments, strength: f64, with_grad: bool) -> (f64, Option<FeatureGradient>);
}

/// Sums over a layer's positions that a style term is a function of. Computed per tile and
/// added up, they are the whole image's.
pub(crate) struct Moments {
    /// The squared mask weights' sum (the number of positions without a mask).
    weight: f64,
    /// `Σ f` per channel (W2 only; empty for Gram).
    sum: Vec<f64>,
    /// `Σ f fᵀ` (`C x C`); with `centred`, about these moments' own mean `sum / weight`.
    second: Vec<f64>,
    centred: bool,
}

impl Moments {
    /// Adds another part's moments (for centred moments, Chan et al.'s pairwise update).
    fn add(&mut self, other: Moments) {
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

    /// `second / weight` in f32 (the Gram matrix).
    fn second_over_weight(&self) -> Vec<f32> {
        let k = 1.0 / self.weight.max(1e-12);
        self.second.iter().map(|v| (v * k) as f32).collect()
    }

    /// The mean and covariance of centred moments.
    fn mean_and_covariance(&self) -> (Vec<f32>, Vec<f32>) {
        debug_assert!(self.centred);
        let k = 1.0 / self.weight.max(1e-12);
        (self.sum.iter().map(|v| (v * k) as f32).collect(), self.second_over_weight())
    }
}

/// A style term's gradient with respect to a layer's features: `matrix f + shift` at each
/// position `f` (`C x C` and `C`; no shift when empty).
pub(crate) struct FeatureGradient {
    matrix: Vec<f32>,
    shift: Vec<f32>,
}

impl FeatureGradient {
    /// The gradient at features `f` (`C x m`), in a buffer from `buffers`.
    fn at(&self, f: &[f32], c: usize, m: usize, buffers: &BufferPool) -> Vec<f32> {
        let mut g = linalg::times_features(&self.matrix, f, c, m, 1.0, buffers.take(c * m));
        if !self.shift.is_empty() {
            g.par_chunks_mut(m.max(1)).zip(&self.shift).for_each(|(r, s)| r.iter_mut().for_each(|v| *v += s));
        }
        g
    }
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
    pools: usize,
    /// The content image's features at this layer, all of them (`C x H_l x W_l`).
    target: Vec<f32>,
    channels: usize,
    /// `W_l`.
    width: usize,
}

/// The targets of one style term at one layer: one group per region (or one for all styles).
struct StyleTerm {
    layer: LayerId,
    pools: usize,
    weight: f64,
    groups: Vec<StyleGroup>,
}

struct StyleGroup {
    /// The output-space mask at this layer's resolution, all of it; `None` is the whole image.
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

/// The objective for one content image and its style images, at the content image's size.
///
/// It is evaluated on the whole image or, to bound the memory at print sizes, tile by tile
/// ([`Objective::tiled`], geometry in [`crate::tiles`]): a first pass over the tiles sums the
/// content loss and each style layer's [`Moments`] over the tiles' interiors; the terms and
/// their [`FeatureGradient`]s follow from the sums; a second pass back-propagates each tile's
/// share with those global statistics and adds its pixel gradient into the image's. Both give
/// the same numbers (tested to 1e-5); one tile is the untiled case, with one forward pass.
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
    grid: TileGrid,
    /// This objective's scratch memory; the network is shared.
    workspace: Workspace,
}

/// A layer's interior positions in one tile: the features and where they lie.
struct Interior<'f> {
    features: Cow<'f, [f32]>,
    channels: usize,
    window: Window,
}

impl<'n> Objective<'n> {
    /// Computes the targets. The content image sets the size of every image evaluated; the style
    /// images are used at their own sizes.
    pub fn new(net: &'n Vgg, config: &LossConfig, content: &Image, styles: &[StyleInput]) -> Result<Self> {
        Self::tiled(net, config, content, styles, None)
    }

    /// [`Objective::new`] evaluated in tiles of about `tile` pixels a side (their interiors;
    /// `None`: the whole image). The targets are computed in tiles of that size too.
    pub fn tiled(
        net: &'n Vgg,
        config: &LossConfig,
        content: &Image,
        styles: &[StyleInput],
        tile: Option<usize>,
    ) -> Result<Self> {
        config.validate()?;
        check_styles(config, styles, content.width, content.height)?;
        net.check_layers(&config.layers())?;
        let (width, height) = (content.width, content.height);
        let regions = styles.iter().any(|s| s.region_mask.is_some());
        let mut blend: Vec<f64> = styles.iter().map(|s| s.blend).collect();
        if !regions {
            let sum: f64 = blend.iter().sum();
            blend.iter_mut().for_each(|b| *b /= sum);
        }
        let workspace = Workspace::new();
        let grid_for = |img: &Image, layers: &[LayerId]| -> Result<TileGrid> {
            Ok(TileGrid::new(img.width, img.height, tile, net.halo(layers)?))
        };

        let mut content_terms = Vec::new();
        for &layer in &config.content_layers {
            content_terms.push(ContentTerm {
                layer,
                pools: net.pools_before(layer)?,
                target: Vec::new(),
                channels: 0,
                width: 0,
            });
        }
        if !content_terms.is_empty() {
            let grid = grid_for(content, &config.content_layers)?;
            for tile in &grid.tiles {
                let fwd = tile_forward(net, &workspace, content, tile, &config.content_layers)?;
                for t in &mut content_terms {
                    let part = interior(net, &fwd, t.layer, t.pools, tile)?;
                    let (c, w) = (part.channels, width >> t.pools);
                    if t.target.is_empty() {
                        (t.target, t.channels, t.width) = (vec![0.0; c * w * (height >> t.pools)], c, w);
                    }
                    tiles::add_into(&mut t.target, c, w, part.window.global, &part.features);
                }
                workspace.recycle(fwd, []);
            }
        }

        let region_masks: Vec<Option<Vec<f32>>> =
            styles.iter().map(|s| s.region_mask.as_ref().map(|m| mask_weights(m, width, height))).collect();
        let measure = config.style_loss.measure();
        let mut style_terms: Vec<StyleTerm> = Vec::new();
        for &layer in &config.style_layers {
            style_terms.push(StyleTerm { layer, pools: net.pools_before(layer)?, weight: 0.0, groups: Vec::new() });
        }
        for (s, style) in styles.iter().enumerate() {
            let img = &style.image;
            let source = style.source_mask.as_ref().map(|m| mask_weights(m, img.width, img.height));
            let sources: Vec<Option<Vec<f32>>> = style_terms
                .iter()
                .map(|t| source.as_ref().map(|m| downsample(m, img.width, img.height, t.pools)))
                .collect();
            let mut sums: Vec<Option<Moments>> = style_terms.iter().map(|_| None).collect();
            let mut channels = vec![0; style_terms.len()];
            let grid = grid_for(img, &config.style_layers)?;
            for tile in &grid.tiles {
                let fwd = tile_forward(net, &workspace, img, tile, &config.style_layers)?;
                for (li, t) in style_terms.iter().enumerate() {
                    let part = interior(net, &fwd, t.layer, t.pools, tile)?;
                    let (c, m) = (part.channels, part.window.local.area());
                    channels[li] = c;
                    if m == 0 {
                        continue;
                    }
                    let moments = match &sources[li] {
                        Some(src) => {
                            let mask = tiles::crop(src, 1, img.width >> t.pools, part.window.global);
                            let weight: f64 = mask.iter().map(|v| (*v as f64).powi(2)).sum();
                            measure.moments(&apply_mask(&part.features, &mask), c, m, weight)
                        }
                        None => measure.moments(&part.features, c, m, m as f64),
                    };
                    add_moments(&mut sums[li], moments);
                }
                workspace.recycle(fwd, []);
            }
            for (li, (t, sum)) in style_terms.iter_mut().zip(sums).enumerate() {
                let c = channels[li];
                if s == 0 {
                    t.weight = match &config.style_layer_weights {
                        Some(w) => w[li],
                        None => measure.default_layer_weight(c),
                    };
                }
                // One group for all styles, or one per style when regions are used.
                if s == 0 || regions {
                    let region = region_masks[s].as_ref().map(|m| downsample(m, width, height, t.pools));
                    let positions = ((height >> t.pools) * (width >> t.pools)) as f64;
                    let norm = region.as_ref().map_or(positions, |m| m.iter().map(|v| (*v as f64).powi(2)).sum());
                    t.groups.push(StyleGroup { region, norm, target: measure.target(c) });
                }
                let sum = sum.expect("a style image reaches every style layer");
                t.groups.last_mut().unwrap().target.add(blend[s], &sum);
            }
        }
        style_terms.iter_mut().flat_map(|t| &mut t.groups).for_each(|g| g.target.finish());
        Ok(Objective {
            net,
            width,
            height,
            config: config.clone(),
            content: content_terms,
            style: style_terms,
            layers: config.layers(),
            grid: grid_for(content, &config.layers())?,
            workspace,
        })
    }

    /// Bytes an objective at `width` x `height` with `regions` region masks needs, evaluated in
    /// tiles of `tile` (`None`: whole): one tile's pass (the largest tile's), the content
    /// targets and region masks at every layer (kept whole), and with tiles the image-sized
    /// gradient they are added into.
    pub fn memory_estimate(
        net: &Vgg,
        config: &LossConfig,
        width: usize,
        height: usize,
        regions: usize,
        tile: Option<usize>,
    ) -> Result<u64> {
        let layers = config.layers();
        let grid = TileGrid::new(width, height, tile, net.halo(&layers)?);
        let (ow, oh) = grid.largest_outer();
        let mut bytes = net.memory_estimate(oh, ow, &layers)?;
        for &layer in &config.content_layers {
            let (c, h, w) = net.shape(layer, height, width)?;
            bytes += 4 * (c * h * w) as u64;
        }
        let mut mask = width * height;
        for &layer in &config.style_layers {
            let (_, h, w) = net.shape(layer, height, width)?;
            mask += h * w;
        }
        bytes += 4 * (regions * mask) as u64;
        if !grid.is_whole() {
            bytes += 12 * (width * height + ow * oh) as u64;
        }
        Ok(bytes)
    }

    /// The size every evaluated image must have.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The tiles an evaluation runs on (one, the whole image, when untiled).
    pub fn grid(&self) -> &TileGrid {
        &self.grid
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
        let tiles = &self.grid.tiles;
        let last = tiles.len() - 1;
        let measure = cfg.style_loss.measure();
        let mut terms = LossTerms::default();
        // First pass: the content loss and the style moments, summed over the tiles' interiors.
        let mut sums: Vec<Vec<Option<Moments>>> =
            self.style.iter().map(|t| t.groups.iter().map(|_| None).collect()).collect();
        let mut kept: Option<Forward> = None;
        for (i, tile) in tiles.iter().enumerate() {
            let fwd = tile_forward(self.net, &self.workspace, img, tile, &self.layers)?;
            for t in &self.content {
                let part = interior(self.net, &fwd, t.layer, t.pools, tile)?;
                let target = tiles::crop(&t.target, t.channels, t.width, part.window.global);
                terms.content += cfg.content_weight * sq_dist(&part.features, &target) / t.target.len() as f64;
            }
            for (t, sums) in self.style.iter().zip(&mut sums) {
                let part = interior(self.net, &fwd, t.layer, t.pools, tile)?;
                let (c, m) = (part.channels, part.window.local.area());
                if m == 0 {
                    continue;
                }
                for (group, sum) in t.groups.iter().zip(sums) {
                    let moments = match &group.region {
                        None => measure.moments(&part.features, c, m, m as f64),
                        Some(region) => {
                            let mask = tiles::crop(region, 1, self.width >> t.pools, part.window.global);
                            let weight: f64 = mask.iter().map(|v| (*v as f64).powi(2)).sum();
                            measure.moments(&apply_mask(&part.features, &mask), c, m, weight)
                        }
                    };
                    add_moments(sum, moments);
                }
            }
            if with_grad && i == last {
                kept = Some(fwd);
            } else {
                self.workspace.recycle(fwd, []);
            }
        }
        // The terms, and their gradients with respect to the features, from the sums.
        let mut gradients: Vec<Vec<Option<FeatureGradient>>> = Vec::new();
        for (t, sums) in self.style.iter().zip(&sums) {
            let strength = cfg.style_weight * t.weight;
            let mut layer = Vec::new();
            for (group, sum) in t.groups.iter().zip(sums) {
                let grad = match sum {
                    // An all-black region: this style applies nowhere.
                    Some(sum) if group.norm > 0.0 => {
                        let (loss, grad) = group.target.term(sum, strength, with_grad);
                        terms.style += loss;
                        grad
                    }
                    _ => None,
                };
                layer.push(grad);
            }
            gradients.push(layer);
        }
        let mut grad = None;
        if with_grad {
            let scales = self.normalisation(img, &mut kept, &gradients)?;
            // Second pass: each tile's share of the gradient, back through the network.
            let mut whole = if self.grid.is_whole() { None } else { Some(linalg::zeros(img.data.len())) };
            for (i, tile) in tiles.iter().enumerate().rev() {
                let fwd = match kept.take() {
                    Some(fwd) if i == last => fwd,
                    _ => tile_forward(self.net, &self.workspace, img, tile, &self.layers)?,
                };
                let mut grads = self.layer_gradients(&fwd, tile, &gradients)?;
                for ((_, g), k) in grads.iter_mut().zip(&scales) {
                    if *k != 1.0 {
                        linalg::apply(g, |v| *v *= k);
                    }
                }
                let g = self.net.backward(&fwd, &grads)?;
                self.workspace.recycle(fwd, grads.into_iter().map(|(_, g)| g));
                match &mut whole {
                    Some(sum) => tiles::add_into(sum, 3, self.width, tile.outer, &g),
                    None => grad = Some(g),
                }
            }
            grad = grad.or(whole);
        }
        if cfg.tv_weight > 0.0 {
            terms.tv = total_variation(img, cfg.tv_weight, grad.as_deref_mut());
        }
        terms.total = terms.content + terms.style + terms.tv;
        Ok((terms, grad))
    }

    /// Each layer gradient's factor: 1, or with `normalize_gradients` its term's weight over
    /// its L1 norm over the whole image (a pass over the tiles of its own).
    fn normalisation(
        &self,
        img: &Image,
        kept: &mut Option<Forward>,
        gradients: &[Vec<Option<FeatureGradient>>],
    ) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let strengths: Vec<f64> = (self.content.iter().map(|_| cfg.content_weight))
            .chain(self.style.iter().map(|t| cfg.style_weight * t.weight))
            .collect();
        if !cfg.normalize_gradients {
            return Ok(vec![1.0; strengths.len()]);
        }
        let mut l1 = vec![0.0f64; strengths.len()];
        let last = self.grid.tiles.len() - 1;
        for (i, tile) in self.grid.tiles.iter().enumerate() {
            let fresh;
            let fwd = match kept {
                Some(fwd) if i == last => &*fwd,
                _ => {
                    fresh = tile_forward(self.net, &self.workspace, img, tile, &self.layers)?;
                    &fresh
                }
            };
            let grads = self.layer_gradients(fwd, tile, gradients)?;
            for (sum, (_, g)) in l1.iter_mut().zip(&grads) {
                *sum += linalg::zip_sum(g, g, |v, _| v.abs() as f64);
            }
        }
        Ok(strengths.iter().zip(&l1).map(|(s, n)| (s / (n + 1e-8)) as f32).collect())
    }

    /// The gradients of the terms with respect to the layers' outputs in `tile` (its interior's
    /// share; zero on the halo), content terms first, in [`Vgg::backward`]'s form.
    fn layer_gradients(
        &self,
        fwd: &Forward,
        tile: &Tile,
        gradients: &[Vec<Option<FeatureGradient>>],
    ) -> Result<Vec<(LayerId, Vec<f32>)>> {
        let cfg = &self.config;
        let buffers = self.workspace.buffers();
        let mut out = Vec::new();
        for t in &self.content {
            let part = interior(self.net, fwd, t.layer, t.pools, tile)?;
            let target = tiles::crop(&t.target, t.channels, t.width, part.window.global);
            let k = (2.0 * cfg.content_weight / t.target.len() as f64) as f32;
            let mut g = buffers.copied(&part.features);
            linalg::zip_apply(&mut g, &target, |a, b| *a = k * (*a - b));
            out.push((t.layer, self.on_tile(g, &part)));
        }
        for (t, grads) in self.style.iter().zip(gradients) {
            let part = interior(self.net, fwd, t.layer, t.pools, tile)?;
            let (c, m) = (part.channels, part.window.local.area());
            let mut layer: Option<Vec<f32>> = None;
            for (group, fg) in t.groups.iter().zip(grads) {
                let Some(fg) = fg.as_ref().filter(|_| m > 0) else { continue };
                let region =
                    group.region.as_ref().map(|r| tiles::crop(r, 1, self.width >> t.pools, part.window.global));
                let masked = region.as_ref().map(|r| apply_mask(&part.features, r));
                let mut g = fg.at(masked.as_deref().unwrap_or(&part.features), c, m, buffers);
                if let Some(r) = &region {
                    mask_in_place(&mut g, r);
                }
                match &mut layer {
                    Some(acc) => linalg::zip_apply(acc, &g, |a, b| *a += b),
                    None => layer = Some(g),
                }
            }
            let g = layer.unwrap_or_else(|| linalg::zeros(c * m));
            out.push((t.layer, self.on_tile(g, &part)));
        }
        Ok(out)
    }

    /// An interior's gradient `g` in its place in the tile's layer (zero on the halo).
    fn on_tile(&self, g: Vec<f32>, part: &Interior<'_>) -> Vec<f32> {
        let w = part.window;
        if w.local.area() == w.tile_width * w.tile_height {
            return g;
        }
        let mut out = self.workspace.buffers().take(part.channels * w.tile_width * w.tile_height);
        linalg::apply(&mut out, |v| *v = 0.0);
        tiles::add_into(&mut out, part.channels, w.tile_width, w.local, &g);
        out
    }
}

/// The network's pass over `tile` of `img` up to `layers`.
fn tile_forward(net: &Vgg, ws: &Workspace, img: &Image, tile: &Tile, layers: &[LayerId]) -> Result<Forward> {
    let pixels = tiles::crop(&img.data, 3, img.width, tile.outer);
    net.forward(ws, &pixels, tile.outer.height, tile.outer.width, layers)
}

/// `layer`'s features at `tile`'s interior positions.
fn interior<'f>(net: &Vgg, fwd: &'f Forward, layer: LayerId, pools: usize, tile: &Tile) -> Result<Interior<'f>> {
    let (f, (c, h, w)) = net.activation(fwd, layer)?;
    let window = tile.window(pools);
    debug_assert_eq!((window.tile_width, window.tile_height), (w, h), "{layer} in {tile:?}");
    Ok(Interior { features: tiles::crop(f, c, w, window.local), channels: c, window })
}

fn add_moments(sum: &mut Option<Moments>, part: Moments) {
    match sum {
        Some(s) => s.add(part),
        None => *sum = Some(part),
    }
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
