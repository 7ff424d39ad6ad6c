//! The seam between the optimisation and the computation of the objective.
//!
//! The loop ([`crate::transfer::optimize`]), the pyramid, progress and stopping see the objective
//! only as an [`Evaluator`]: an image in, the loss terms and (when asked) the gradient with
//! respect to its pixels out. A [`Backend`] makes one evaluator per scale from the content and
//! style images at that scale (computing the style targets on the way), and says how much memory
//! a run on it needs, so the size checks do not assume one implementation.
//!
//! [`Vgg`] is the CPU backend: its evaluator is [`Objective`], one forward pass, the losses, one
//! backward pass. Other backends plug in here without changing the loop:
//!
//! - **A GPU backend** keeps the network's weights on the device, uploads the style targets once
//!   in [`Backend::evaluator`], and in [`Evaluator::evaluate`] uploads the image, runs the forward
//!   pass, the losses and the backward pass in its own buffers, and reads back the terms and the
//!   gradient (only the image and its gradient cross the bus). Its [`Backend::memory_estimate`]
//!   is the device memory it will ask for, and its [`Backend::fits`] compares it with the
//!   adapter's.
//! - **A tiled evaluation** (for print sizes) is an evaluator over the network that
//!   splits the image into tiles with halos: a first pass over the tiles sums each style layer's
//!   Gram matrix (and the content loss) over the tiles' interiors, a second pass back-propagates
//!   tile by tile with the global statistics and adds each tile's gradient into the image's.
//!   The loop still sees one image in and one gradient out; its memory estimate is a tile's.
//!   The CPU backend does this ([`Backend::tiled_evaluator`], [`crate::tiles`]); a backend that
//!   does not says so with [`Backend::halo`] and is only given whole images.

use crate::error::{Error, Result};
use crate::image_io::Image;
use crate::loss::{LossConfig, LossTerms, Objective, StyleInput};
use crate::memory;
use crate::tiles::Halo;
use crate::vgg::{LayerId, Vgg};

/// The objective at one size: its terms at an image, and their gradient with respect to the
/// image's pixels (RGB, 0..255 planes, the layout of [`Image::data`]).
pub trait Evaluator {
    /// The width and height every evaluated image must have.
    fn size(&self) -> (usize, usize);

    /// The loss terms at `image` and, if `with_grad`, the gradient of their total.
    fn evaluate(&self, image: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)>;
}

/// What computes objectives: the network on some device. Shared by every run that uses it.
pub trait Backend: Sync {
    /// A short name for messages (`cpu`, ...).
    fn name(&self) -> &str;

    /// An error naming the first layer in `layers` the network does not have.
    fn check_layers(&self, layers: &[LayerId]) -> Result<()>;

    /// The smallest side an image must have for every layer in `layers` to exist.
    fn min_input_side(&self, layers: &[LayerId]) -> Result<usize>;

    /// Bytes one evaluation at `width` x `height` up to the deepest of `layers` needs on this
    /// backend (activations, gradients, kernel scratch), beyond the images and the optimizer.
    fn memory_estimate(&self, width: usize, height: usize, layers: &[LayerId]) -> Result<u64>;

    /// The bytes this backend may still allocate for a run, where known (the process's memory
    /// budget, [`memory::budget`]).
    fn budget(&self) -> Option<u64> {
        memory::budget()
    }

    /// The objective for `content` (whose size it takes) after `styles` (at their own sizes,
    /// with their blend weights and masks).
    fn evaluator<'a>(
        &'a self,
        loss: &LossConfig,
        content: &Image,
        styles: &[StyleInput],
    ) -> Result<Box<dyn Evaluator + 'a>>;

    /// FLOPs of the convolutions of one forward pass at `width` x `height` up to the deepest of
    /// `layers` (for time estimates; an evaluation with its gradient is about twice that).
    fn forward_flops(&self, width: usize, height: usize, layers: &[LayerId]) -> Result<f64>;

    /// The halo tiles need for `layers` (see [`crate::tiles`]), or `None` where this backend
    /// evaluates whole images only.
    fn halo(&self, _layers: &[LayerId]) -> Result<Option<Halo>> {
        Ok(None)
    }

    /// Bytes an evaluator at `width` x `height` with `regions` region masks needs, in tiles of
    /// `tile` pixels a side (`None`: the whole image), beyond the images and the optimizer.
    fn evaluator_memory(
        &self,
        loss: &LossConfig,
        width: usize,
        height: usize,
        regions: usize,
        tile: Option<usize>,
    ) -> Result<u64> {
        let _ = regions;
        match tile {
            None => self.memory_estimate(width, height, &loss.layers()),
            Some(_) => Err(self.untiled()),
        }
    }

    /// [`Backend::evaluator`] evaluated in tiles of `tile` pixels a side, where this backend
    /// tiles ([`Backend::halo`]).
    fn tiled_evaluator<'a>(
        &'a self,
        loss: &LossConfig,
        content: &Image,
        styles: &[StyleInput],
        tile: usize,
    ) -> Result<Box<dyn Evaluator + 'a>> {
        let _ = (loss, content, styles, tile);
        Err(self.untiled())
    }

    /// The error for a tile size given to a backend that does not tile.
    fn untiled(&self) -> Error {
        Error::setting("tile", format!("cannot be used on the {}: it evaluates whole images only", self.name()))
    }
}

impl Evaluator for Objective<'_> {
    fn size(&self) -> (usize, usize) {
        Objective::size(self)
    }

    fn evaluate(&self, image: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)> {
        Objective::evaluate(self, image, with_grad)
    }
}

impl Backend for Vgg {
    fn name(&self) -> &str {
        "cpu"
    }

    fn check_layers(&self, layers: &[LayerId]) -> Result<()> {
        Vgg::check_layers(self, layers)
    }

    fn min_input_side(&self, layers: &[LayerId]) -> Result<usize> {
        Vgg::min_input_side(self, layers)
    }

    fn memory_estimate(&self, width: usize, height: usize, layers: &[LayerId]) -> Result<u64> {
        Vgg::memory_estimate(self, height, width, layers)
    }

    fn evaluator<'a>(
        &'a self,
        loss: &LossConfig,
        content: &Image,
        styles: &[StyleInput],
    ) -> Result<Box<dyn Evaluator + 'a>> {
        Ok(Box::new(Objective::new(self, loss, content, styles)?))
    }

    fn forward_flops(&self, width: usize, height: usize, layers: &[LayerId]) -> Result<f64> {
        Vgg::forward_flops(self, height, width, layers)
    }

    fn halo(&self, layers: &[LayerId]) -> Result<Option<Halo>> {
        Vgg::halo(self, layers).map(Some)
    }

    fn evaluator_memory(
        &self,
        loss: &LossConfig,
        width: usize,
        height: usize,
        regions: usize,
        tile: Option<usize>,
    ) -> Result<u64> {
        Objective::memory_estimate(self, loss, width, height, regions, tile)
    }

    fn tiled_evaluator<'a>(
        &'a self,
        loss: &LossConfig,
        content: &Image,
        styles: &[StyleInput],
        tile: usize,
    ) -> Result<Box<dyn Evaluator + 'a>> {
        Ok(Box::new(Objective::tiled(self, loss, content, styles, Some(tile))?))
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;
    use crate::transfer::{Inputs, Progress, Scales, StyleConfig, Stylizer};

    /// A backend with no network: the objective is the mean squared distance to the inverted
    /// content image, and a run needs `need` bytes. It notes whether it was asked to evaluate an
    /// image in colour (the three planes not equal).
    #[derive(Default)]
    struct Inverse {
        need: u64,
        saw_colour: std::sync::atomic::AtomicBool,
    }

    struct InverseObjective<'a> {
        target: Image,
        saw_colour: &'a std::sync::atomic::AtomicBool,
    }

    impl Evaluator for InverseObjective<'_> {
        fn size(&self) -> (usize, usize) {
            (self.target.width, self.target.height)
        }

        fn evaluate(&self, image: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)> {
            let p = image.pixels();
            if image.data[..p] != image.data[p..2 * p] || image.data[..p] != image.data[2 * p..] {
                self.saw_colour.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let n = image.data.len() as f64;
            let d: Vec<f32> = image.data.iter().zip(&self.target.data).map(|(x, t)| x - t).collect();
            let total = d.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n;
            let grad = with_grad.then(|| d.iter().map(|v| (2.0 * *v as f64 / n) as f32).collect());
            Ok((LossTerms { total, content: total, ..LossTerms::default() }, grad))
        }
    }

    impl Backend for Inverse {
        fn name(&self) -> &str {
            "inverse"
        }
        fn check_layers(&self, _: &[LayerId]) -> Result<()> {
            Ok(())
        }
        fn min_input_side(&self, _: &[LayerId]) -> Result<usize> {
            Ok(1)
        }
        fn memory_estimate(&self, _: usize, _: usize, _: &[LayerId]) -> Result<u64> {
            Ok(self.need)
        }
        fn forward_flops(&self, width: usize, height: usize, _: &[LayerId]) -> Result<f64> {
            Ok((width * height) as f64)
        }
        fn evaluator<'a>(
            &'a self,
            _: &LossConfig,
            content: &Image,
            _: &[StyleInput],
        ) -> Result<Box<dyn Evaluator + 'a>> {
            let data = content.data.iter().map(|v| 255.0 - v).collect();
            Ok(Box::new(InverseObjective { target: Image { data, ..*content }, saw_colour: &self.saw_colour }))
        }
    }

    fn ramp(width: usize, height: usize) -> Image {
        let data = (0..3 * width * height).map(|i| (i * 7 % 256) as f32).collect();
        Image { width, height, data }
    }

    /// The loop, the pyramid and the best-image bookkeeping run on any backend: on this one the
    /// run finds the inverted image at every scale.
    #[test]
    fn the_loop_runs_on_any_backend() {
        let (content, style) = (ramp(40, 30), ramp(8, 8));
        let config = StyleConfig::default().size(40).iterations(30).scales(Scales::List(vec![20, 40]));
        let backend = Inverse::default();
        let mut scales_seen = Vec::new();
        let out = Stylizer::new(&backend, config)
            .unwrap()
            .run(&Inputs::new(content.clone(), [style]), &mut |p: &Progress| {
                scales_seen.push((p.scale, p.image.width));
                ControlFlow::Continue(())
            })
            .unwrap();
        assert!(scales_seen.contains(&(1, 20)) && scales_seen.contains(&(2, 40)), "{scales_seen:?}");
        assert!(out.terms.total < 1e-6, "{}", out.terms.total);
        let worst = out.image.data.iter().zip(&content.data).map(|(x, c)| (x - (255.0 - c)).abs()).fold(0.0, f32::max);
        assert!(worst < 0.01, "{worst}");
    }

    /// The memory check asks the backend.
    #[test]
    fn the_memory_check_uses_the_backends_estimate() {
        let (content, style) = (ramp(40, 30), ramp(8, 8));
        let backend = Inverse { need: u64::MAX / 4, ..Inverse::default() };
        let err = Stylizer::new(&backend, StyleConfig::default().size(40).iterations(3))
            .unwrap()
            .run(&Inputs::new(content, [style]), &mut |_: &Progress| ControlFlow::Continue(()))
            .err()
            .expect("too large for any machine");
        assert!(err.to_string().contains("memory"), "{err}");
    }

    /// In luminance mode every image the objective sees is grey, whatever the start: the
    /// content, noise, the content mixed with noise, or a given image (noise starts were once
    /// left in colour).
    #[test]
    fn luminance_mode_evaluates_grey_images_from_every_start() {
        use crate::colour::Colour;
        use crate::transfer::Init;
        let (content, style) = (ramp(40, 30), ramp(8, 8));
        for init in [Init::Content, Init::Random, Init::Noise(0.5), Init::Image] {
            for colour in [Colour::Luminance, Colour::Keep] {
                let backend = Inverse::default();
                let config =
                    StyleConfig::default().size(40).iterations(3).init(init).colour(colour).scales(Scales::Off);
                Stylizer::new(&backend, config)
                    .unwrap()
                    .run(
                        &Inputs {
                            start: (init == Init::Image).then(|| ramp(13, 9)),
                            ..Inputs::new(content.clone(), [style.clone()])
                        },
                        &mut |_: &Progress| ControlFlow::Continue(()),
                    )
                    .unwrap();
                let coloured = backend.saw_colour.load(std::sync::atomic::Ordering::Relaxed);
                assert_eq!(coloured, colour == Colour::Keep, "{init:?} {colour:?}");
            }
        }
    }
}
