//! Video: what makes a painted clip not flicker (Ruder, Dosovitskiy and Brox, 2016, "Artistic
//! style transfer for videos"). Each frame is painted with a temporal term
//! ([`crate::loss::temporal`]) that holds it to the previous painted frame warped along the
//! optical flow, on the pixels where the flow is reliable.
//!
//! - [`flow`]: dense optical flow between two frames (dense inverse search);
//! - [`warp`](mod@warp): a frame warped along a flow, the flow's reliability, and the warping error that
//!   measures flicker;
//! - [`synthetic`]: motions with a known flow, to measure a flow's error;
//! - [`clip`]: a clip read and written through the system's ffmpeg (`impasto video`);
//! - [`work`]: the work directory of a clip being painted (frames, cached flows, painted frames),
//!   which makes a run resumable, and what each frame is held to ([`work::WorkDir::hold`]).
//!
//! Painting a clip, frame by frame, from any image sequence (the `impasto video` command does
//! this over a [`work::WorkDir`]): each frame after the first starts from the previous painted
//! frame warped into it and is held to it where the flow is reliable.
//!
//! ```no_run
//! use impasto::loss::temporal::TemporalTarget;
//! use impasto::prelude::*;
//! use impasto::video::{FlowSettings, Gray, dense_flow, reliability, warp};
//! use impasto::Init;
//!
//! # fn main() -> impasto::Result<()> {
//! let net = Vgg::default_network()?;
//! let style = Image::open("examples/starry_night.jpg")?;
//! let frames: Vec<Image> = (1..=48).map(|k| Image::open(format!("frames/{k:06}.png"))).collect::<Result<_, _>>()?;
//! let mut painted: Vec<Image> = Vec::new();
//! for (k, frame) in frames.iter().enumerate() {
//!     let mut inputs = Inputs::new(frame.clone(), [style.clone()]);
//!     let mut config = StyleConfig::default().size(frame.width.max(frame.height));
//!     if k > 0 {
//!         let (now, before) = (Gray::from_image(frame), Gray::from_image(&frames[k - 1]));
//!         let backward = dense_flow(&now, &before, &FlowSettings::default());
//!         let forward = dense_flow(&before, &now, &FlowSettings::default());
//!         let (warped, _) = warp(&painted[k - 1], &backward);
//!         inputs.temporal = vec![TemporalTarget::new(warped.clone(), reliability(&backward, &forward), 1e4)?];
//!         inputs.start = Some(warped);
//!         config = config.init(Init::Image);
//!     }
//!     painted.push(Stylizer::new(config)?.stylize(&net, &inputs, |_| ())?.image);
//! }
//! # Ok(())
//! # }
//! ```

pub mod clip;
pub mod flow;
pub mod synthetic;
pub mod warp;
pub mod work;

pub use flow::{Flow, FlowSettings, Gray, dense_flow};
pub use warp::{reliability, warp, warping_error};
pub use work::{VideoSettings, WorkDir};
