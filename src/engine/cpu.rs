//! The CPU engine: the [`Engine`] operations on [`Vgg`]'s forward and backward passes, in the
//! buffers of one [`Workspace`], and the CPU network as a [`Backend`].

use std::borrow::Cow;

use crate::device::Device;
use crate::error::Result;
use crate::image_io::Image;
use crate::linalg;
use crate::loss::masks::{apply_mask, mask_in_place};
use crate::loss::moments::Moments;
use crate::loss::spec::ObjectiveSpec;
use crate::loss::{LossConfig, Objective, StyleInput, sq_dist};
use crate::size::Size;
use crate::tiles::{self, Halo, TileGrid, Window};
use crate::vgg::{Chw, Forward, LayerId, Vgg, Workspace};

use super::{Backend, Engine, Evaluator, GradientPart, LayerGradient, Measured, Statistic, TargetCache};

/// The network's passes on the CPU, with this objective's scratch memory (the network is
/// shared).
pub struct CpuEngine<'n> {
    net: &'n Vgg,
    workspace: Workspace,
}

impl<'n> CpuEngine<'n> {
    /// An engine on `net`, with an empty workspace.
    pub fn new(net: &'n Vgg) -> Self {
        CpuEngine { net, workspace: Workspace::new() }
    }

    /// `layer`'s features in `window` (borrowed when the window is the whole layer).
    fn features<'f>(&self, pass: &'f Forward, layer: LayerId, window: &Window) -> Result<(Cow<'f, [f32]>, usize)> {
        let (f, (c, h, w)) = self.net.activation(pass, layer)?;
        debug_assert_eq!((window.tile_width, window.tile_height), (w, h), "{layer}");
        Ok((tiles::crop(f, c, w, window.local), c))
    }

    /// One term's gradient with respect to its layer on the whole tile (zero on the halo).
    fn layer_gradient(&self, pass: &Forward, term: &LayerGradient<'_, Vec<f32>>) -> Result<Vec<f32>> {
        let buffers = self.workspace.buffers();
        let window = &term.window;
        let (features, c) = self.features(pass, term.layer, window)?;
        let m = window.local.area();
        let g = match &term.part {
            GradientPart::Content { target, factor } => {
                let k = *factor;
                let mut g = buffers.copied(&features);
                linalg::zip_apply(&mut g, target, |a, b| *a = k * (*a - b));
                g
            }
            GradientPart::Style { groups } => {
                let mut layer: Option<Vec<f32>> = None;
                for (region, fg) in groups {
                    let masked = region.map(|r| apply_mask(&features, r));
                    let mut g = feature_gradient_at(fg, masked.as_deref().unwrap_or(&features), c, m, buffers);
                    if let Some(r) = region {
                        mask_in_place(&mut g, r);
                    }
                    match &mut layer {
                        Some(acc) => linalg::zip_apply(acc, &g, |a, b| *a += b),
                        None => layer = Some(g),
                    }
                }
                layer.unwrap_or_else(|| linalg::zeros(c * m))
            }
        };
        let mut g = self.on_tile(g, c, window);
        if term.scale != 1.0 {
            let k = term.scale;
            linalg::apply(&mut g, |v| *v *= k);
        }
        Ok(g)
    }

    /// A window's gradient `g` in its place in the tile's layer (zero on the halo).
    fn on_tile(&self, g: Vec<f32>, c: usize, w: &Window) -> Vec<f32> {
        if w.local.area() == w.tile_width * w.tile_height {
            return g;
        }
        let mut out = self.workspace.buffers().take(c * w.tile_width * w.tile_height);
        linalg::apply(&mut out, |v| *v = 0.0);
        tiles::add_into(&mut out, c, w.tile_width, w.local, &g);
        out
    }
}

/// `matrix f + shift` at every position of `f` (`c x m`), in a buffer from `buffers`.
fn feature_gradient_at(
    fg: &crate::loss::FeatureGradient,
    f: &[f32],
    c: usize,
    m: usize,
    buffers: &linalg::BufferPool,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut g = linalg::times_features(&fg.matrix, f, c, m, 1.0, buffers.take(c * m));
    if !fg.shift.is_empty() {
        g.par_chunks_mut(m.max(1)).zip(&fg.shift).for_each(|(r, s)| r.iter_mut().for_each(|v| *v += s));
    }
    g
}

impl Engine for CpuEngine<'_> {
    type Resident = Vec<f32>;
    type Pass = Forward;

    fn resident(&self, data: Vec<f32>) -> Result<Vec<f32>> {
        Ok(data)
    }

    fn forward(&self, pixels: &[f32], size: Size, layers: &[LayerId]) -> Result<Forward> {
        self.net.forward(&self.workspace, pixels, size, layers)
    }

    fn statistics(&self, pass: &Forward, asks: &[Statistic<'_, Vec<f32>>]) -> Result<Vec<Measured>> {
        let mut out = Vec::with_capacity(asks.len());
        for ask in asks {
            out.push(match ask {
                Statistic::Features { layer, window } => {
                    Measured::Features(self.features(pass, *layer, window)?.0.into_owned())
                }
                Statistic::SquaredDistance { layer, window, target } => {
                    Measured::Number(sq_dist(&self.features(pass, *layer, window)?.0, target))
                }
                Statistic::Moments { layer, window, mask, centred } => {
                    let (features, c) = self.features(pass, *layer, window)?;
                    let m = window.local.area();
                    Measured::Moments(match mask {
                        None => Moments::of(&features, c, m, m as f64, *centred),
                        Some((mask, weight)) => Moments::of(&apply_mask(&features, mask), c, m, *weight, *centred),
                    })
                }
            });
        }
        Ok(out)
    }

    fn gradient_norms(&self, pass: &Forward, terms: &[LayerGradient<'_, Vec<f32>>]) -> Result<Vec<f64>> {
        let mut norms = Vec::with_capacity(terms.len());
        for t in terms {
            let g = self.layer_gradient(pass, t)?;
            norms.push(linalg::zip_sum(&g, &g, |v, _| v.abs() as f64));
            self.workspace.buffers().give(pass.input_size().pixels(), [g]);
        }
        Ok(norms)
    }

    fn backward(&self, pass: Forward, terms: &[LayerGradient<'_, Vec<f32>>]) -> Result<Vec<f32>> {
        let grads =
            terms.iter().map(|t| self.layer_gradient(&pass, t).map(|g| (t.layer, g))).collect::<Result<Vec<_>>>()?;
        let g = self.net.backward(&pass, &grads)?;
        self.workspace.recycle(pass, grads.into_iter().map(|(_, g)| g));
        Ok(g)
    }

    fn recycle(&self, pass: Forward) {
        self.workspace.recycle(pass, []);
    }
}

/// Bytes a CPU objective on `grid` with `regions` region masks needs: one tile's pass (the
/// largest tile's), the content targets and region masks at every layer (their tiles' shares add
/// up to the whole), and with tiles the image-sized gradient they are added into.
pub fn evaluator_memory(net: &Vgg, config: &LossConfig, grid: &TileGrid, regions: usize) -> Result<u64> {
    let layers = config.layers();
    let size = grid.size;
    let outer = grid.largest_outer();
    let mut bytes = net.memory_estimate(outer, &layers)?;
    for &layer in &config.content_layers {
        let (c, h, w) = net.shape(layer, size)?;
        bytes += 4 * (c * h * w) as u64;
    }
    let mut mask = size.pixels();
    for &layer in &config.style_layers {
        let (_, h, w) = net.shape(layer, size)?;
        mask += h * w;
    }
    bytes += 4 * (regions * mask) as u64;
    if !grid.is_whole() {
        bytes += 12 * (size.pixels() + outer.pixels()) as u64;
    }
    Ok(bytes)
}

impl Backend for Vgg {
    fn name(&self) -> &str {
        "cpu"
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn check_layers(&self, layers: &[LayerId]) -> Result<()> {
        Vgg::check_layers(self, layers)
    }

    fn min_input_side(&self, layers: &[LayerId]) -> Result<usize> {
        Vgg::min_input_side(self, layers)
    }

    fn shape(&self, layer: LayerId, size: Size) -> Result<Chw> {
        Vgg::shape(self, layer, size)
    }

    fn pools_before(&self, layer: LayerId) -> Result<usize> {
        Vgg::pools_before(self, layer)
    }

    fn halo(&self, layers: &[LayerId]) -> Result<Halo> {
        Vgg::halo(self, layers)
    }

    fn memory_estimate(&self, size: Size, layers: &[LayerId]) -> Result<u64> {
        Vgg::memory_estimate(self, size, layers)
    }

    fn evaluator_memory(&self, loss: &LossConfig, grid: &TileGrid, regions: usize) -> Result<u64> {
        evaluator_memory(self, loss, grid, regions)
    }

    fn forward_flops(&self, size: Size, layers: &[LayerId]) -> Result<f64> {
        Vgg::forward_flops(self, size, layers)
    }

    fn evaluator<'a>(
        &'a self,
        spec: &ObjectiveSpec,
        content: &Image,
        styles: &[StyleInput],
        tile: Option<usize>,
    ) -> Result<Box<dyn Evaluator + 'a>> {
        Ok(Box::new(Objective::new(CpuEngine::new(self), spec, content, styles, tile, self.targets())?))
    }

    fn targets(&self) -> &TargetCache {
        Vgg::targets(self)
    }
}
