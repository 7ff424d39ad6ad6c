//! The objective on the GPU: the buffers of one size and the dispatches of one evaluation.
//!
//! Built once per scale: the forward pass's activations, two gradient buffers the backward pass
//! alternates between, the content targets (the content image's features, computed here on the
//! GPU), the style targets (Gram matrices of the style images, computed on the GPU and blended on
//! the host as [`crate::loss`] does), the region masks at each layer's resolution, and the
//! partial sums the losses reduce to. Each evaluation uploads the image, runs the recorded
//! dispatches in one compute pass and reads back the partial sums and, when asked, the gradient.
//! The formulas are those of [`crate::loss`]; this file only says where they run.

use std::sync::Mutex;

use super::{Gpu, GpuVgg, Params, Step, spread};
use crate::error::{Error, Result};
use crate::evaluator::Evaluator;
use crate::image_io::Image;
use crate::loss::{self, LossConfig, LossTerms, StyleInput, StyleLoss};
use crate::vgg::{LayerId, LayerKind, Pooling};

/// A tensor's channels, height and width.
type Chw = (usize, usize, usize);

/// What a stage of the network is, on the GPU.
#[derive(Clone, Copy)]
enum Stage {
    /// The conv layer with this index in [`GpuVgg::convs`].
    Conv(usize),
    Pool,
}

/// The stages in order, each with the layer its output is (`reluB_K` or `poolB`).
fn stages(net: &GpuVgg) -> Vec<(Stage, LayerId)> {
    let mut convs = 0;
    net.net
        .layer_names()
        .into_iter()
        .filter(|l| l.kind != LayerKind::Conv)
        .map(|l| match l.kind {
            LayerKind::Pool => (Stage::Pool, l),
            _ => {
                convs += 1;
                (Stage::Conv(convs - 1), l)
            }
        })
        .collect()
}

/// The stage that outputs `layer` (a `convB_K` layer is its ReLU's stage, before the ReLU).
fn stage_of(stages: &[(Stage, LayerId)], layer: LayerId) -> Result<usize> {
    stages
        .iter()
        .position(|(_, id)| {
            id.block == layer.block
                && id.index == layer.index
                && (id.kind == LayerKind::Pool) == (layer.kind == LayerKind::Pool)
        })
        .ok_or_else(|| Error::config(format!("unknown layer '{layer}'")))
}

/// The shape of every stage's output at `height` x `width`, up to stage `last`.
fn shapes(net: &GpuVgg, stages: &[(Stage, LayerId)], height: usize, width: usize, last: usize) -> Vec<Chw> {
    let (mut c, mut h, mut w) = (3, height, width);
    stages[..=last]
        .iter()
        .map(|(s, _)| {
            match s {
                Stage::Conv(i) => c = net.convs[*i].c_out,
                Stage::Pool => (h, w) = (h / 2, w / 2),
            }
            (c, h, w)
        })
        .collect()
}

/// How many slices a Gram matrix's sum over `m` positions is cut into.
fn gram_splits(m: usize) -> usize {
    (m / 4096).clamp(1, 256)
}

/// Bytes of device memory an evaluation at `width` x `height` for `layers` takes, or an error
/// if one of its buffers is larger than one binding may be on this GPU.
pub(super) fn memory_estimate(net: &GpuVgg, width: usize, height: usize, layers: &[LayerId]) -> Result<u64> {
    let stages = stages(net);
    let mut last = 0;
    for &l in layers {
        last = last.max(stage_of(&stages, l)?);
    }
    let shapes = shapes(net, &stages, height, width, last);
    let size = |s: &Chw| (s.0 * s.1 * s.2) as u64 * 4;
    let largest = shapes.iter().map(size).max().unwrap_or(0).max(12 * (width * height) as u64);
    let limit = net.gpu.max_binding();
    if largest > limit {
        let (at, shape) =
            shapes.iter().enumerate().max_by_key(|(_, s)| size(s)).map(|(i, s)| (stages[i].1, *s)).unwrap();
        // Activations grow with the pixels: the side that would fit.
        let side = ((width * height) as f64 * limit as f64 / largest as f64).sqrt() as usize;
        return Err(Error::Memory {
            message: format!(
                "on {} one buffer may hold at most {} MiB, but at {width}x{height} the output of {at} ({}x{}x{}) is {} MiB; about {side}x{side} pixels fit (or use the CPU)",
                net.gpu.name(),
                limit >> 20,
                shape.0,
                shape.1,
                shape.2,
                largest >> 20
            ),
            lower: vec!["size".into()],
        });
    }
    let activations: u64 = shapes.iter().map(size).sum();
    let kept: u64 = layers
        .iter()
        .filter(|l| l.kind == LayerKind::Conv)
        .map(|l| stage_of(&stages, *l).map(|s| size(&shapes[s])))
        .sum::<Result<u64>>()?;
    let targets: u64 = layers.iter().map(|l| stage_of(&stages, *l).map(|s| size(&shapes[s]))).sum::<Result<u64>>()?;
    let grams: u64 = layers
        .iter()
        .map(|l| {
            stage_of(&stages, *l).map(|s| {
                let (c, h, w) = shapes[s];
                (c * c * (gram_splits(h * w) + 6)) as u64 * 4
            })
        })
        .sum::<Result<u64>>()?;
    let weights: u64 = net.convs.iter().map(|c| (2 * 9 * c.c_in * c.c_out + c.c_out) as u64 * 4).sum();
    let images = 4 * 3 * (width * height) as u64 * 4;
    Ok(activations + kept + targets + grams + 3 * largest + weights + images)
}

/// The dispatches of a conv: `c_out` planes from `c_in` (see `conv3x3.wgsl` for the flags).
pub(super) fn conv_step(
    gpu: &Gpu,
    [input, weight, bias, mask]: [&wgpu::Buffer; 4],
    out: &wgpu::Buffer,
    (c_in, c_out, h, w): (usize, usize, usize, usize),
    flags: u32,
) -> Step {
    let (x, z) = spread((h * w).div_ceil(64));
    let params = Params { u: [c_in as u32, c_out as u32, h as u32, w as u32, flags, 0, 0, 0], f: [0.0; 8] };
    gpu.step(
        &gpu.kernels.conv,
        &super::CONV,
        &[Some(input), Some(weight), Some(bias), Some(mask), Some(out)],
        params,
        [x, c_out.div_ceil(64) as u32, z],
    )
}

/// The dispatches of `out (+)= alpha * a b` (`a` is `m x k`; `b` is `k x n`, or `n x k` with
/// `b_nk`); with `splits > 1` the k range is cut into slices written to `partial` and summed
/// (then `add` is not available).
#[allow(clippy::too_many_arguments)]
pub(super) fn product_steps(
    gpu: &Gpu,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    partial: &wgpu::Buffer,
    out: &wgpu::Buffer,
    (m, n, k): (usize, usize, usize),
    b_nk: bool,
    splits: usize,
    alpha: f32,
    add: bool,
) -> Vec<Step> {
    let flags = b_nk as u32 | (2 * add as u32);
    let mm = |target: &wgpu::Buffer, splits: usize, alpha: f32| {
        let (x, z) = if splits > 1 { (n.div_ceil(64) as u32, splits as u32) } else { spread(n.div_ceil(64)) };
        let params = Params {
            u: [m as u32, n as u32, k as u32, flags, k.div_ceil(splits) as u32, splits as u32, 0, 0],
            f: [alpha, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        };
        gpu.step(
            &gpu.kernels.matmul,
            &super::MATMUL,
            &[Some(a), Some(b), Some(target)],
            params,
            [x, m.div_ceil(64) as u32, z],
        )
    };
    if splits <= 1 {
        return vec![mm(out, 1, alpha)];
    }
    assert!(!add, "a split product is not added to its output");
    let sum = elementwise(
        gpu,
        &gpu.kernels.sum_splits,
        [Some(partial), None, Some(out), None],
        Params { u: [(m * n) as u32, splits as u32, 0, 0, 0, 0, 0, 0], f: [alpha, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] },
        m * n,
    );
    vec![mm(partial, splits, 1.0), sum]
}

/// A dispatch of an elementwise kernel over `threads` elements.
fn elementwise(
    gpu: &Gpu,
    kernel: &super::Kernel,
    buffers: [Option<&wgpu::Buffer>; 4],
    params: Params,
    threads: usize,
) -> Step {
    let (x, y) = spread(threads.div_ceil(256));
    gpu.step(kernel, &super::ELEMENTWISE, &buffers, params, [x, y, 1])
}

fn ints(values: &[usize]) -> [u32; 8] {
    let mut out = [0; 8];
    values.iter().zip(&mut out).for_each(|(v, o)| *o = *v as u32);
    out
}

fn floats(values: &[f64]) -> [f32; 8] {
    let mut out = [0.0; 8];
    values.iter().zip(&mut out).for_each(|(v, o)| *o = *v as f32);
    out
}

/// A forward pass's buffers at one size and the dispatches that fill them from `pixels`.
struct Forward {
    steps: Vec<Step>,
    pixels: wgpu::Buffer,
    /// The preprocessed image: the first conv's input.
    input: wgpu::Buffer,
    /// Each stage's output (post-ReLU for convs) and shape.
    outputs: Vec<(wgpu::Buffer, Chw)>,
    /// Pre-ReLU outputs, for the `convB_K` layers asked for.
    pre_relu: Vec<Option<wgpu::Buffer>>,
}

impl Forward {
    fn new(net: &GpuVgg, stages: &[(Stage, LayerId)], height: usize, width: usize, layers: &[LayerId]) -> Result<Self> {
        let gpu = &net.gpu;
        let mut last = 0;
        for &l in layers {
            last = last.max(stage_of(stages, l)?);
        }
        let pixels = gpu.buffer("pixels", 3 * height * width);
        let input = gpu.buffer("input", 3 * height * width);
        let (src, scale, shift) = net.net.preprocess().affine();
        let n = height * width;
        let mut steps = vec![elementwise(
            gpu,
            &gpu.kernels.preprocess,
            [Some(&pixels), None, Some(&input), None],
            Params {
                u: ints(&[n, 0, 0, 0, src[0], src[1], src[2], 0]),
                f: [scale[0], scale[1], scale[2], 0.0, shift[0], shift[1], shift[2], 0.0],
            },
            3 * n,
        )];
        let mut outputs: Vec<(wgpu::Buffer, Chw)> = Vec::new();
        let mut pre_relu = Vec::new();
        let (mut c, mut h, mut w) = (3, height, width);
        for (si, (stage, id)) in stages[..=last].iter().enumerate() {
            let prev = if si == 0 { &input } else { &outputs[si - 1].0 };
            match stage {
                Stage::Conv(i) => {
                    let conv = &net.convs[*i];
                    let out = gpu.buffer(&id.to_string(), conv.c_out * h * w);
                    let keep =
                        layers.iter().any(|l| l.kind == LayerKind::Conv && l.block == id.block && l.index == id.index);
                    let pre = keep.then(|| gpu.buffer("pre-relu", conv.c_out * h * w));
                    let target = pre.as_ref().unwrap_or(&out);
                    let flags = 4 | (!keep as u32);
                    steps.push(conv_step(
                        gpu,
                        [prev, &conv.weight, &conv.bias, prev],
                        target,
                        (c, conv.c_out, h, w),
                        flags,
                    ));
                    if let Some(pre) = &pre {
                        let len = conv.c_out * h * w;
                        steps.push(elementwise(
                            gpu,
                            &gpu.kernels.relu,
                            [Some(pre), None, Some(&out), None],
                            Params { u: ints(&[len]), ..Default::default() },
                            len,
                        ));
                    }
                    c = conv.c_out;
                    outputs.push((out, (c, h, w)));
                    pre_relu.push(pre);
                }
                Stage::Pool => {
                    let out = gpu.buffer(&id.to_string(), c * (h / 2) * (w / 2));
                    let mode = (net.net.pooling() == Pooling::Avg) as usize;
                    steps.push(elementwise(
                        gpu,
                        &gpu.kernels.pool_forward,
                        [Some(prev), None, Some(&out), None],
                        Params { u: ints(&[c, h, w, mode]), ..Default::default() },
                        c * (h / 2) * (w / 2),
                    ));
                    (h, w) = (h / 2, w / 2);
                    outputs.push((out, (c, h, w)));
                    pre_relu.push(None);
                }
            }
        }
        Ok(Forward { steps, pixels, input, outputs, pre_relu })
    }

    /// The buffer holding `layer`'s features and their shape.
    fn features(&self, stages: &[(Stage, LayerId)], layer: LayerId) -> Result<(&wgpu::Buffer, Chw)> {
        let si = stage_of(stages, layer)?;
        let (out, shape) = &self.outputs[si];
        Ok((if layer.kind == LayerKind::Conv { self.pre_relu[si].as_ref().unwrap() } else { out }, *shape))
    }

    /// Runs the pass on `image` and then `extra` (copies out of its buffers).
    fn run(&self, gpu: &Gpu, image: &Image, extra: impl FnOnce(&mut wgpu::CommandEncoder)) {
        gpu.queue.write_buffer(&self.pixels, 0, &super::f32_bytes(&image.data));
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.steps.iter().for_each(|s| s.encode(&mut pass));
        }
        extra(&mut encoder);
        gpu.queue.submit([encoder.finish()]);
    }
}

/// Which loss a run of partial sums belongs to, and the factor its sum is multiplied by.
struct Sums {
    start: usize,
    count: usize,
    term: Term,
    factor: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Term {
    Content,
    Style,
    Tv,
}

struct ContentTerm {
    layer: LayerId,
    target: wgpu::Buffer,
}

/// One group of style images at one layer (all of them, or one per region), on the device.
struct StyleGroup {
    layer: LayerId,
    /// `style_weight * w_l`.
    strength: f64,
    /// `sum(m^2)` over the region (`M` without one).
    norm: f64,
    /// The region mask at this layer's resolution.
    region: Option<wgpu::Buffer>,
    /// `[sum_s b_s A_s | A_1 .. A_S | b_1 .. b_S]`.
    targets: wgpu::Buffer,
    count: usize,
    blend_sum: f64,
    /// G, its split partial sums, B G - sum_s b_s A_s, and the loss's elements.
    gram: wgpu::Buffer,
    partial: wgpu::Buffer,
    diff: wgpu::Buffer,
    elements: wgpu::Buffer,
}

/// The objective for one content image and its styles at the content image's size, on the GPU.
pub struct GpuObjective<'n> {
    net: &'n GpuVgg,
    width: usize,
    height: usize,
    forward: Forward,
    /// The dispatches after the forward pass: the losses (`value`), or the losses, the backward
    /// pass and the total variation's gradient (`gradient`).
    value: Vec<Step>,
    gradient: Vec<Step>,
    partials: wgpu::Buffer,
    partials_len: usize,
    sums: Vec<Sums>,
    pixel_grad: wgpu::Buffer,
    staging_partials: wgpu::Buffer,
    staging_grad: wgpu::Buffer,
    /// One evaluation at a time: they share the buffers.
    busy: Mutex<()>,
}

impl<'n> GpuObjective<'n> {
    /// Computes the targets on the GPU and records the dispatches of an evaluation.
    pub fn new(net: &'n GpuVgg, config: &LossConfig, content: &Image, styles: &[StyleInput]) -> Result<Self> {
        config.validate()?;
        loss::check_styles(config, styles, content.width, content.height)?;
        net.net.check_layers(&config.layers())?;
        if config.style_loss == StyleLoss::W2 {
            return Err(Error::setting(
                "loss.style_loss",
                "is w2, which runs on the CPU only for now (gram runs on the GPU)",
            ));
        }
        if config.normalize_gradients {
            return Err(Error::setting("loss.normalize_gradients", "runs on the CPU only for now"));
        }
        let gpu = &net.gpu;
        memory_estimate(net, content.width, content.height, &config.layers())?;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let made = Self::build(net, config, content, styles);
        if let Some(e) = super::block_on(validation.pop()) {
            return Err(Error::Gpu(format!(
                "{} cannot set up a {}x{} evaluation: {e}",
                gpu.name(),
                content.width,
                content.height
            )));
        }
        if let Some(e) = super::block_on(scope.pop()) {
            return Err(Error::Memory {
                message: format!(
                    "{} ran out of memory for a {}x{} evaluation: {e}",
                    gpu.name(),
                    content.width,
                    content.height
                ),
                lower: vec!["size".into()],
            });
        }
        made
    }

    fn build(net: &'n GpuVgg, config: &LossConfig, content: &Image, styles: &[StyleInput]) -> Result<Self> {
        let gpu = &net.gpu;
        let stages = stages(net);
        let (width, height) = (content.width, content.height);
        let layers = config.layers();
        let forward = Forward::new(net, &stages, height, width, &layers)?;

        // The content targets: the content image's features.
        let mut content_terms = Vec::new();
        for &layer in &config.content_layers {
            let (buffer, (c, h, w)) = forward.features(&stages, layer)?;
            content_terms.push((ContentTerm { layer, target: gpu.buffer("content target", c * h * w) }, buffer));
        }
        forward.run(gpu, content, |encoder| {
            for (t, from) in &content_terms {
                encoder.copy_buffer_to_buffer(from, 0, &t.target, 0, from.size());
            }
        });
        let content_terms: Vec<ContentTerm> = content_terms.into_iter().map(|(t, _)| t).collect();

        let groups = style_groups(net, &stages, config, content, styles)?;
        let largest_style = groups
            .iter()
            .map(|g| forward.features(&stages, g.layer).map(|(_, (c, h, w))| c * h * w))
            .try_fold(0, |a, b| b.map(|b| a.max(b)))?;
        let scratch = gpu.buffer("masked features", largest_style);

        let mut sums = Vec::new();
        let mut partials_len = 0;
        let mut reduce = |steps: &mut Vec<Step>,
                          x: &wgpu::Buffer,
                          y: Option<&wgpu::Buffer>,
                          n: usize,
                          term: Term,
                          factor: f64,
                          partials: &wgpu::Buffer| {
            let count = n.div_ceil(4096);
            let (gx, gy) = spread(count);
            steps.push(gpu.step(
                &gpu.kernels.reduce,
                &super::ELEMENTWISE,
                &[Some(x), y, None, Some(partials)],
                Params { u: ints(&[n, y.is_some() as usize, partials_len]), ..Default::default() },
                [gx, gy, 1],
            ));
            sums.push(Sums { start: partials_len, count, term, factor });
            partials_len += count;
        };

        // The partial sums' buffer is sized after counting: record into a scratch list first.
        let count_partials = {
            let mut n = 0;
            for t in &content_terms {
                let (_, (c, h, w)) = forward.features(&stages, t.layer)?;
                n += (c * h * w).div_ceil(4096);
            }
            for g in &groups {
                let (_, (c, _, _)) = forward.features(&stages, g.layer)?;
                n += (c * c).div_ceil(4096);
            }
            if config.tv_weight > 0.0 {
                n += (3 * width * height).div_ceil(4096);
            }
            n
        };
        let partials = gpu.buffer("partial sums", count_partials);
        let pixel_grad = gpu.buffer("pixel gradient", 3 * width * height);
        let tv_elements = gpu.buffer("tv elements", 3 * width * height);

        // The losses.
        let mut value = Vec::new();
        for t in &content_terms {
            let (f, (c, h, w)) = forward.features(&stages, t.layer)?;
            let n = c * h * w;
            reduce(&mut value, f, Some(&t.target), n, Term::Content, config.content_weight / n as f64, &partials);
        }
        for g in &groups {
            let (f, (c, h, w)) = forward.features(&stages, g.layer)?;
            let (m, cc) = (h * w, c * c);
            let features = match &g.region {
                Some(mask) => {
                    value.push(mask_step(gpu, f, mask, &scratch, c * m, m, false));
                    &scratch
                }
                None => f,
            };
            value.extend(product_steps(
                gpu,
                features,
                features,
                &g.partial,
                &g.gram,
                (c, c, m),
                true,
                gram_splits(m),
                (1.0 / g.norm) as f32,
                false,
            ));
            value.push(elementwise(
                gpu,
                &gpu.kernels.style_diff,
                [Some(&g.gram), Some(&g.targets), Some(&g.diff), Some(&g.elements)],
                Params { u: ints(&[cc, g.count]), f: floats(&[g.blend_sum]) },
                cc,
            ));
            reduce(&mut value, &g.elements, None, cc, Term::Style, g.strength / cc as f64, &partials);
        }
        let mut tv = Vec::new();
        if config.tv_weight > 0.0 {
            let (h, w) = (height, width);
            let nx = 3 * h * w.saturating_sub(1);
            let ny = 3 * h.saturating_sub(1) * w;
            let per = |pairs: usize| if pairs > 0 { config.tv_weight / pairs as f64 } else { 0.0 };
            tv.push(elementwise(
                gpu,
                &gpu.kernels.total_variation,
                [Some(&forward.pixels), None, Some(&pixel_grad), Some(&tv_elements)],
                Params { u: ints(&[h, w]), f: floats(&[2.0 * per(nx), 2.0 * per(ny), per(nx), per(ny)]) },
                3 * h * w,
            ));
            reduce(&mut tv, &tv_elements, None, 3 * h * w, Term::Tv, 1.0, &partials);
        }

        // The backward pass, from the deepest stage to the image.
        let shapes: Vec<Chw> = forward.outputs.iter().map(|o| o.1).collect();
        let largest = shapes.iter().map(|(c, h, w)| c * h * w).max().unwrap_or(0).max(3 * width * height);
        let grads = [gpu.buffer("gradient a", largest), gpu.buffer("gradient b", largest)];
        let mut backward = Vec::new();
        let mut current: Option<usize> = None;
        for si in (0..forward.outputs.len()).rev() {
            let (out, (c, h, w)) = &forward.outputs[si];
            let n = c * h * w;
            // The gradients of the losses at this stage's output, added into the current one.
            let add_losses = |steps: &mut Vec<Step>, current: &mut Option<usize>, kind_conv: bool| -> Result<()> {
                let at_stage =
                    |l: &LayerId| stage_of(&stages, *l).map(|s| s == si && (l.kind == LayerKind::Conv) == kind_conv);
                for t in &content_terms {
                    if !at_stage(&t.layer)? {
                        continue;
                    }
                    let (f, _) = forward.features(&stages, t.layer)?;
                    let into = current.unwrap_or(0);
                    steps.push(elementwise(
                        gpu,
                        &gpu.kernels.content_grad,
                        [Some(f), Some(&t.target), Some(&grads[into]), None],
                        Params {
                            u: ints(&[n, current.is_some() as usize]),
                            f: floats(&[2.0 * config.content_weight / n as f64]),
                        },
                        n,
                    ));
                    *current = Some(into);
                }
                for g in &groups {
                    if !at_stage(&g.layer)? {
                        continue;
                    }
                    let (feat, _) = forward.features(&stages, g.layer)?;
                    let (m, cc) = (h * w, c * c);
                    let alpha = (4.0 * g.strength / (cc as f64 * g.norm)) as f32;
                    let into = current.unwrap_or(0);
                    let add = current.is_some();
                    match &g.region {
                        None => steps.extend(product_steps(
                            gpu,
                            &g.diff,
                            feat,
                            &g.partial,
                            &grads[into],
                            (*c, m, *c),
                            false,
                            1,
                            alpha,
                            add,
                        )),
                        Some(mask) => {
                            let other = &grads[1 - into];
                            steps.push(mask_step(gpu, feat, mask, &scratch, n, m, false));
                            steps.extend(product_steps(
                                gpu,
                                &g.diff,
                                &scratch,
                                &g.partial,
                                other,
                                (*c, m, *c),
                                false,
                                1,
                                alpha,
                                false,
                            ));
                            steps.push(mask_step(gpu, other, mask, &grads[into], n, m, add));
                        }
                    }
                    *current = Some(into);
                }
                Ok(())
            };
            add_losses(&mut backward, &mut current, false)?;
            let (in_c, in_h, in_w) = if si == 0 { (3, height, width) } else { shapes[si - 1] };
            match stages[si].0 {
                Stage::Conv(i) => {
                    let conv = &net.convs[i];
                    let pre_relu_losses =
                        layers.iter().any(|l| l.kind == LayerKind::Conv && stage_of(&stages, *l).ok() == Some(si));
                    if pre_relu_losses {
                        if let Some(cur) = current {
                            backward.push(elementwise(
                                gpu,
                                &gpu.kernels.relu_mask,
                                [None, Some(out), Some(&grads[cur]), None],
                                Params { u: ints(&[n]), ..Default::default() },
                                n,
                            ));
                        }
                        add_losses(&mut backward, &mut current, true)?;
                    }
                    if let Some(cur) = current {
                        let flags = if pre_relu_losses { 0 } else { 2 };
                        backward.push(conv_step(
                            gpu,
                            [&grads[cur], &conv.flipped, &conv.bias, out],
                            &grads[1 - cur],
                            (conv.c_out, conv.c_in, in_h, in_w),
                            flags,
                        ));
                        current = Some(1 - cur);
                    }
                }
                Stage::Pool => {
                    if let Some(cur) = current {
                        let mode = (net.net.pooling() == Pooling::Avg) as usize;
                        let input = if si == 0 { &forward.input } else { &forward.outputs[si - 1].0 };
                        backward.push(elementwise(
                            gpu,
                            &gpu.kernels.pool_backward,
                            [Some(input), Some(&grads[cur]), Some(&grads[1 - cur]), None],
                            Params { u: ints(&[in_c, in_h, in_w, mode]), ..Default::default() },
                            in_c * in_h * in_w,
                        ));
                        current = Some(1 - cur);
                    }
                }
            }
        }
        let (src, scale, _) = net.net.preprocess().affine();
        let last = match current {
            Some(cur) => &grads[cur],
            None => {
                // No loss reaches the image (every region black): the gradient is zero.
                backward.push(elementwise(
                    gpu,
                    &gpu.kernels.content_grad,
                    [Some(&grads[0]), Some(&grads[0]), Some(&grads[1]), None],
                    Params { u: ints(&[3 * width * height, 0]), ..Default::default() },
                    3 * width * height,
                ));
                &grads[1]
            }
        };
        backward.push(elementwise(
            gpu,
            &gpu.kernels.preprocess_backward,
            [Some(last), None, Some(&pixel_grad), None],
            Params {
                u: ints(&[width * height, 0, 0, 0, src[0], src[1], src[2], 0]),
                f: [scale[0], scale[1], scale[2], 0.0, 0.0, 0.0, 0.0, 0.0],
            },
            3 * width * height,
        ));

        let mut gradient = Vec::new();
        // The gradient's list starts with the value's dispatches (a step is handles to its
        // pipeline and bind group).
        gradient.extend(value.iter().cloned());
        gradient.extend(backward);
        gradient.extend(tv.iter().cloned());
        value.extend(tv);
        debug_assert_eq!(partials_len, count_partials);
        Ok(GpuObjective {
            net,
            width,
            height,
            forward,
            value,
            gradient,
            staging_partials: gpu.staging(partials_len),
            staging_grad: gpu.staging(3 * width * height),
            partials,
            partials_len,
            sums,
            pixel_grad,
            busy: Mutex::new(()),
        })
    }
}

/// `out (+)= x * mask` with one mask value per position of each plane.
fn mask_step(
    gpu: &Gpu,
    x: &wgpu::Buffer,
    mask: &wgpu::Buffer,
    out: &wgpu::Buffer,
    n: usize,
    plane: usize,
    add: bool,
) -> Step {
    elementwise(
        gpu,
        &gpu.kernels.mask_planes,
        [Some(x), Some(mask), Some(out), None],
        Params { u: ints(&[n, plane, add as usize]), ..Default::default() },
        n,
    )
}

/// The style targets: for each style layer one group for all styles, or one per style with
/// region masks (their blend weights are then not normalised), as [`crate::loss::Objective`]
/// groups them. The Gram matrices of the style images are computed on the GPU.
fn style_groups(
    net: &GpuVgg,
    stages: &[(Stage, LayerId)],
    config: &LossConfig,
    content: &Image,
    styles: &[StyleInput],
) -> Result<Vec<StyleGroup>> {
    let gpu = &net.gpu;
    let regions = styles.iter().any(|s| s.region_mask.is_some());
    let mut blend: Vec<f64> = styles.iter().map(|s| s.blend).collect();
    if !regions {
        let sum: f64 = blend.iter().sum();
        blend.iter_mut().for_each(|b| *b /= sum);
    }
    // Per style layer, per group: the region at the layer's resolution, its norm, and the
    // (blend, Gram matrix) of each style in it.
    struct Host {
        layer: usize,
        region: Option<Vec<f32>>,
        norm: f64,
        grams: Vec<(f64, Vec<f32>)>,
    }
    let mut host: Vec<Host> = Vec::new();
    for (s, style) in styles.iter().enumerate() {
        let img = &style.image;
        let forward = Forward::new(net, stages, img.height, img.width, &config.style_layers)?;
        let source = style.source_mask.as_ref().map(|m| loss::mask_weights(m, img.width, img.height));
        let region = style.region_mask.as_ref().map(|m| loss::mask_weights(m, content.width, content.height));
        let mut reads = Vec::new();
        let mut grams = Vec::new();
        for &layer in &config.style_layers {
            let (f, (c, h, w)) = forward.features(stages, layer)?;
            let pools = net.net.pools_before(layer)?;
            let m = h * w;
            let masked = gpu.buffer("masked style", if source.is_some() { c * m } else { 1 });
            let (features, norm) = match &source {
                Some(src) => {
                    let mask = loss::downsample(src, img.width, img.height, pools);
                    let norm: f64 = mask.iter().map(|v| (*v as f64).powi(2)).sum();
                    reads.push(mask_step(gpu, f, &gpu.upload("source mask", &mask), &masked, c * m, m, false));
                    (&masked, norm)
                }
                None => (f, m as f64),
            };
            let partial = gpu.buffer("partial", gram_splits(m) * c * c);
            let gram = gpu.buffer("style gram", c * c);
            let alpha = (1.0 / norm.max(1e-12)) as f32;
            reads.extend(product_steps(
                gpu,
                features,
                features,
                &partial,
                &gram,
                (c, c, m),
                true,
                gram_splits(m),
                alpha,
                false,
            ));
            grams.push((gram, gpu.staging(c * c), c * c));
        }
        // Run the pass, then the Gram matrices, and read them back.
        forward.run(gpu, img, |encoder| {
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                reads.iter().for_each(|s| s.encode(&mut pass));
            }
            for (gram, staging, _) in &grams {
                encoder.copy_buffer_to_buffer(gram, 0, staging, 0, gram.size());
            }
        });
        let wanted: Vec<(&wgpu::Buffer, usize)> = grams.iter().map(|(_, b, n)| (b, *n)).collect();
        let values = gpu.read(&wanted)?;
        for (li, (&layer, a)) in config.style_layers.iter().zip(values).enumerate() {
            if s == 0 || regions {
                let pools = net.net.pools_before(layer)?;
                let region = region.as_ref().map(|m| loss::downsample(m, content.width, content.height, pools));
                let (lh, lw) = (content.height >> pools, content.width >> pools);
                let norm = region.as_ref().map_or((lh * lw) as f64, |m| m.iter().map(|v| (*v as f64).powi(2)).sum());
                host.push(Host { layer: li, region, norm, grams: Vec::new() });
            }
            let group = host.iter_mut().rev().find(|g| g.layer == li).unwrap();
            group.grams.push((blend[s], a));
        }
    }
    let measure_weight = |c: usize| 1.0 / (c * c) as f64;
    let mut groups = Vec::new();
    for g in host {
        if g.norm <= 0.0 {
            continue; // an all-black region: this style applies nowhere
        }
        let layer = config.style_layers[g.layer];
        let c = (g.grams[0].1.len() as f64).sqrt() as usize;
        let weight = match &config.style_layer_weights {
            Some(w) => w[g.layer],
            None => measure_weight(c),
        };
        let cc = c * c;
        let mut pack = vec![0.0f32; cc];
        for (b, a) in &g.grams {
            pack.iter_mut().zip(a).for_each(|(t, v)| *t += *b as f32 * v);
        }
        for (_, a) in &g.grams {
            pack.extend_from_slice(a);
        }
        pack.extend(g.grams.iter().map(|(b, _)| *b as f32));
        let (_, h, w) = layer_shape(net, stages, content, layer)?;
        let m = h * w;
        groups.push(StyleGroup {
            layer,
            strength: config.style_weight * weight,
            norm: g.norm,
            region: g.region.as_ref().map(|r| gpu.upload("region", r)),
            targets: gpu.upload("style targets", &pack),
            count: g.grams.len(),
            blend_sum: g.grams.iter().map(|(b, _)| b).sum(),
            gram: gpu.buffer("gram", cc),
            partial: gpu.buffer("gram partial", gram_splits(m) * cc),
            diff: gpu.buffer("gram diff", cc),
            elements: gpu.buffer("gram elements", cc),
        });
    }
    Ok(groups)
}

/// `layer`'s shape for the content image's size.
fn layer_shape(net: &GpuVgg, stages: &[(Stage, LayerId)], content: &Image, layer: LayerId) -> Result<Chw> {
    let si = stage_of(stages, layer)?;
    Ok(shapes(net, stages, content.height, content.width, si)[si])
}

impl Evaluator for GpuObjective<'_> {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn evaluate(&self, image: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)> {
        if (image.width, image.height) != (self.width, self.height) {
            return Err(Error::config(format!(
                "the image is {}x{} but the objective is for {}x{}",
                image.width, image.height, self.width, self.height
            )));
        }
        let _one = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let gpu = &self.net.gpu;
        let steps = if with_grad { &self.gradient } else { &self.value };
        let n = 3 * self.width * self.height;
        // A device error (lost device, out of memory) is this evaluation's error, not a panic.
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let memory = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        self.forward.run(gpu, image, |encoder| {
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                steps.iter().for_each(|s| s.encode(&mut pass));
            }
            encoder.copy_buffer_to_buffer(
                &self.partials,
                0,
                &self.staging_partials,
                0,
                4 * self.partials_len.max(4) as u64,
            );
            if with_grad {
                encoder.copy_buffer_to_buffer(&self.pixel_grad, 0, &self.staging_grad, 0, 4 * n as u64);
            }
        });
        let mut wanted = vec![(&self.staging_partials, self.partials_len)];
        if with_grad {
            wanted.push((&self.staging_grad, n));
        }
        let read = gpu.read(&wanted);
        for (scope, what) in [(validation, "a kernel failed"), (memory, "out of memory"), (scope, "device error")] {
            if let Some(e) = super::block_on(scope.pop()) {
                return Err(Error::Gpu(format!("{} during an evaluation ({what}): {e}", gpu.name())));
            }
        }
        let mut read = read?;
        let grad = with_grad.then(|| read.pop().unwrap());
        let partials = read.pop().unwrap();
        let mut terms = LossTerms::default();
        for s in &self.sums {
            let sum: f64 = partials[s.start..s.start + s.count].iter().map(|v| *v as f64).sum();
            let v = sum * s.factor;
            match s.term {
                Term::Content => terms.content += v,
                Term::Style => terms.style += v,
                Term::Tv => terms.tv += v,
            }
        }
        terms.total = terms.content + terms.style + terms.tv;
        Ok((terms, grad))
    }
}
