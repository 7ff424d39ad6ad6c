//! Where the objective is computed, behind two small interfaces.
//!
//! - [`Backend`] is a network on a device (the CPU network [`crate::vgg::Vgg`], or
//!   [`crate::gpu::GpuVgg`]): what the plan asks of it (layer shapes, the halo tiles need,
//!   memory, FLOPs) and the one constructor of an [`Evaluator`] for a scale. The loop, the
//!   pyramid, progress and stopping see the objective only as an [`Evaluator`]: an image in,
//!   the loss terms and (when asked) the gradient with respect to its pixels out.
//! - [`Engine`] is what a backend's evaluator is made of: the few operations the objective needs
//!   from a device, on one tile at a time: a forward pass, statistics of its layers (squared
//!   distances to a target, the moments a style term is a function of, the features
//!   themselves), and the backward pass from layer gradients described as data
//!   ([`LayerGradient`]). The objective itself (its terms, the style groups, the tiles, the
//!   targets, normalisation, total variation) is written once, in [`crate::loss::objective`],
//!   over any engine: the CPU engine ([`cpu::CpuEngine`]) and the GPU engine run the same
//!   specification ([`crate::loss::spec::ObjectiveSpec`]) and neither restates a rule.
//!
//! Style targets (a style image's moments at a size) are computed once per backend and kept in
//! its [`targets::TargetCache`], so a batch of photos after one painting computes them once.

pub mod cpu;
pub mod targets;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::image_io::Image;
use crate::loss::moments::{FeatureGradient, Moments};
use crate::loss::spec::ObjectiveSpec;
use crate::loss::{LossConfig, LossTerms, StyleInput};
use crate::memory;
use crate::size::Size;
use crate::tiles::{Halo, TileGrid, Window};
use crate::vgg::{Chw, LayerId};

pub use targets::TargetCache;

/// The objective at one size: its terms at an image, and their gradient with respect to the
/// image's pixels (RGB, 0..255 planes, the layout of [`Image::data`]).
pub trait Evaluator {
    /// The size every evaluated image must have.
    fn size(&self) -> Size;

    /// The loss terms at `image` and, if `with_grad`, the gradient of their total.
    fn evaluate(&self, image: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)>;

    /// The tiles an evaluation runs on (1: the whole image at once).
    fn tiles(&self) -> usize {
        1
    }
}

/// A network on a device: what plans and runs ask of it. Shared by every run that uses it.
pub trait Backend: Sync {
    /// A short name for messages: `cpu`, `gpu`.
    fn name(&self) -> &str;

    /// The device it computes on ([`Device::Cpu`] or [`Device::Gpu`]): what a plan records.
    fn device(&self) -> Device;

    /// An error naming the first layer in `layers` the network does not have.
    fn check_layers(&self, layers: &[LayerId]) -> Result<()>;

    /// The smallest side an image must have for every layer in `layers` to exist.
    fn min_input_side(&self, layers: &[LayerId]) -> Result<usize>;

    /// `layer`'s output shape for an input of `size`.
    fn shape(&self, layer: LayerId, size: Size) -> Result<Chw>;

    /// The poolings before `layer`'s output: its resolution is the input's halved that often.
    fn pools_before(&self, layer: LayerId) -> Result<usize>;

    /// The halo tiles need for `layers` (see [`crate::tiles`]).
    fn halo(&self, layers: &[LayerId]) -> Result<Halo>;

    /// Bytes one forward and backward pass at `size` up to the deepest of `layers` needs on
    /// this backend (activations, gradients, kernel scratch), beyond the images and the
    /// optimizer.
    fn memory_estimate(&self, size: Size, layers: &[LayerId]) -> Result<u64>;

    /// Bytes an evaluator on `grid` (the image's size and its tiles) with `regions` region
    /// masks needs, beyond the images and the optimizer. An [`Error::Memory`] where it cannot run
    /// that way at all (a buffer larger than the device allows): the layout then tries smaller
    /// tiles.
    fn evaluator_memory(&self, loss: &LossConfig, grid: &TileGrid, regions: usize) -> Result<u64>;

    /// FLOPs of the convolutions of one forward pass at `size` up to the deepest of `layers`
    /// (for time estimates; an evaluation with its gradient is about twice that).
    fn forward_flops(&self, size: Size, layers: &[LayerId]) -> Result<f64>;

    /// The bytes this backend may still allocate for a run, where known (the process's memory
    /// budget, [`memory::budget`]).
    fn budget(&self) -> Option<u64> {
        memory::budget()
    }

    /// The objective `spec` for `content` (of the spec's size) after `styles` (at their own
    /// sizes, with their blend weights and masks), evaluated in tiles of `tile` pixels a side
    /// (`None`: whole). The style targets come from [`Backend::targets`] where they were
    /// computed before.
    fn evaluator<'a>(
        &'a self,
        spec: &ObjectiveSpec,
        content: &Image,
        styles: &[StyleInput],
        tile: Option<usize>,
    ) -> Result<Box<dyn Evaluator + 'a>>;

    /// The style targets this backend has computed, for reuse.
    fn targets(&self) -> &TargetCache;
}

/// A shared network is a network: `&Arc<Vgg>` goes wherever `&dyn Backend` does (a server
/// keeps one network for every request).
impl<B: Backend + Send + ?Sized> Backend for std::sync::Arc<B> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn device(&self) -> Device {
        (**self).device()
    }
    fn check_layers(&self, layers: &[LayerId]) -> Result<()> {
        (**self).check_layers(layers)
    }
    fn min_input_side(&self, layers: &[LayerId]) -> Result<usize> {
        (**self).min_input_side(layers)
    }
    fn shape(&self, layer: LayerId, size: Size) -> Result<Chw> {
        (**self).shape(layer, size)
    }
    fn pools_before(&self, layer: LayerId) -> Result<usize> {
        (**self).pools_before(layer)
    }
    fn halo(&self, layers: &[LayerId]) -> Result<Halo> {
        (**self).halo(layers)
    }
    fn memory_estimate(&self, size: Size, layers: &[LayerId]) -> Result<u64> {
        (**self).memory_estimate(size, layers)
    }
    fn evaluator_memory(&self, loss: &LossConfig, grid: &TileGrid, regions: usize) -> Result<u64> {
        (**self).evaluator_memory(loss, grid, regions)
    }
    fn forward_flops(&self, size: Size, layers: &[LayerId]) -> Result<f64> {
        (**self).forward_flops(size, layers)
    }
    fn budget(&self) -> Option<u64> {
        (**self).budget()
    }
    fn evaluator<'a>(
        &'a self,
        spec: &ObjectiveSpec,
        content: &Image,
        styles: &[StyleInput],
        tile: Option<usize>,
    ) -> Result<Box<dyn Evaluator + 'a>> {
        (**self).evaluator(spec, content, styles, tile)
    }
    fn targets(&self) -> &TargetCache {
        (**self).targets()
    }
}

/// What an objective asks an [`Engine`] to measure on a forward pass (one tile's), each at a
/// layer's `window` (the tile's interior at that layer: its values, in the window's compact
/// layout, `C x window.local.area()`).
pub enum Statistic<'a, R> {
    /// The features themselves (content targets are made of them).
    Features {
        /// The layer.
        layer: LayerId,
        /// The tile's interior at that layer.
        window: Window,
    },
    /// `Σ (f - target)²` over the window, `target` in the window's layout.
    SquaredDistance {
        /// The layer.
        layer: LayerId,
        /// The tile's interior at that layer.
        window: Window,
        /// The target features on the engine.
        target: &'a R,
    },
    /// The [`Moments`] of the features with each position weighted by `mask` (one value per
    /// window position) whose squared values sum to the `f64`; uncentred (`Σ f fᵀ`, Gram) or
    /// `centred` (count, `Σ f`, `Σ (f - μ)(f - μ)ᵀ`, W2).
    Moments {
        /// The layer.
        layer: LayerId,
        /// The tile's interior at that layer.
        window: Window,
        /// The weights and their squares' sum; `None`: every position weighs 1.
        mask: Option<(&'a R, f64)>,
        /// Centred (W2) or not (Gram).
        centred: bool,
    },
}

/// An answer to a [`Statistic`], in the same order.
pub enum Measured {
    /// The window's features, `C x window.local.area()`.
    Features(Vec<f32>),
    /// A [`Statistic::SquaredDistance`]'s sum.
    Number(f64),
    /// A [`Statistic::Moments`]'s moments.
    Moments(Moments),
}

/// One term's gradient with respect to a layer's output on a tile: given on the layer's
/// `window` (the interior), zero on the rest of the tile (the halo), times `scale`.
pub struct LayerGradient<'a, R> {
    /// The layer whose output the gradient is with respect to.
    pub layer: LayerId,
    /// The tile's interior at that layer.
    pub window: Window,
    /// A factor on the whole gradient.
    pub scale: f32,
    /// Its shape.
    pub part: GradientPart<'a, R>,
}

/// The two shapes a term's layer gradient takes.
pub enum GradientPart<'a, R> {
    /// `factor (f - target)` (a squared distance's).
    Content {
        /// The target features on the engine.
        target: &'a R,
        /// The factor on the difference.
        factor: f32,
    },
    /// `Σ_g m_g ∘ (M_g (m_g ∘ f) + s_g)` over the groups, each with its mask `m_g` (none: all
    /// ones) and its affine [`FeatureGradient`] (a style term's); no group: zero.
    Style {
        /// Each region's mask (on the engine) and gradient.
        groups: Vec<(Option<&'a R>, &'a FeatureGradient)>,
    },
}

/// The operations an objective needs from a device, on one tile at a time. Implemented by the
/// CPU ([`cpu::CpuEngine`]) and the GPU (`gpu::GpuEngine`); the objective
/// ([`crate::loss::objective::Objective`]) is written once over them.
pub trait Engine: Sync {
    /// Data kept where the engine computes: a target, a mask (made once per objective).
    type Resident: Send + Sync;
    /// One forward pass's activations.
    type Pass;

    /// Keeps `data` where the engine computes.
    fn resident(&self, data: Vec<f32>) -> Result<Self::Resident>;

    /// The forward pass over `pixels` (RGB 0..255 planes of `size`) up to the deepest of
    /// `layers`.
    fn forward(&self, pixels: &[f32], size: Size, layers: &[LayerId]) -> Result<Self::Pass>;

    /// Measures each of `asks` on `pass`.
    fn statistics(&self, pass: &Self::Pass, asks: &[Statistic<'_, Self::Resident>]) -> Result<Vec<Measured>>;

    /// The L1 norm of each term's layer gradient (its scale included), in order.
    fn gradient_norms(&self, pass: &Self::Pass, terms: &[LayerGradient<'_, Self::Resident>]) -> Result<Vec<f64>>;

    /// The gradient with respect to the tile's pixels of the terms' layer gradients (summed),
    /// through the network; the pass is used up.
    fn backward(&self, pass: Self::Pass, terms: &[LayerGradient<'_, Self::Resident>]) -> Result<Vec<f32>>;

    /// Lets a pass go (its buffers may be reused by the next).
    fn recycle(&self, pass: Self::Pass);
}

/// The objective of `config` for `content` after `styles` on `net`, evaluated in tiles of
/// `tile` (`None`: whole), for using it directly (to score an image, or in an optimizer of one's
/// own): the configuration and the styles are checked here, as this is where they come in. A
/// run builds its evaluators from its plan instead.
///
/// ```no_run
/// use impasto::{engine, image_io::Image, loss::{LossConfig, StyleInput}, vgg::Vgg, weights};
/// # fn main() -> impasto::Result<()> {
/// let net = Vgg::new(weights::load("vgg19.pth", None)?, Default::default());
/// let (content, style) = (Image::filled(64, 48, 128.0), Image::filled(64, 64, 30.0));
/// let objective = engine::objective(&net, &LossConfig::default(), &content, &[StyleInput::new(style)], None)?;
/// let (terms, grad) = objective.evaluate(&content, true)?;
/// assert_eq!(terms.content, 0.0);
/// assert_eq!(grad.unwrap().len(), 3 * 64 * 48);
/// # Ok(()) }
/// ```
pub fn objective<'a>(
    net: &'a dyn Backend,
    config: &LossConfig,
    content: &Image,
    styles: &[StyleInput],
    tile: Option<usize>,
) -> Result<Box<dyn Evaluator + 'a>> {
    config.validate()?;
    let size = Size::new(content.width, content.height);
    crate::loss::check_styles(config, styles, size)?;
    net.check_layers(&config.layers())?;
    let min = net.min_input_side(&config.layers())?;
    if size.short_side() < min {
        return Err(Error::config(format!(
            "the image is {size} pixels, but the layers used need at least {min}x{min}"
        )));
    }
    let spec = ObjectiveSpec::new(net, config, size, styles)?;
    net.evaluator(&spec, content, styles, tile)
}

/// The error for an image of the wrong size given to an evaluator.
pub(crate) fn wrong_size(image: &Image, size: Size) -> Error {
    Error::config(format!("the image is {}x{} but the objective is for {size}", image.width, image.height))
}

#[cfg(test)]
mod tests;
