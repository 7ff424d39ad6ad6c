//! The GPU engine: the [`Engine`] operations as WGSL dispatches, and the network on the GPU as a
//! [`Backend`]. The objective itself (terms, groups, targets, tiles, normalisation) is
//! [`crate::loss::objective`]'s, the same as the CPU's; this file only says where each operation
//! runs:
//!
//! - a forward pass uploads a tile's pixels and records the preprocessing, the convs (bias and
//!   ReLU fused, the pre-ReLU output kept for `convB_K` layers) and the poolings into buffers
//!   from a pool, submitted at once;
//! - statistics crop each layer's window (a tile's interior) into a compact buffer, weight it by
//!   a mask, and reduce it on the device: squared distances into partial sums, moments as Gram
//!   matrices (`F Fᵀ` by the tiled matrix product, the position range split for precision and
//!   parallelism), centred ones after the per-channel sums (`F 1`) are subtracted; one
//!   submission, and only the sums and the `C x C` matrices come back;
//! - the backward pass adds each term's layer gradient on its window (a squared distance's, or a
//!   style term's affine map `M (m ∘ f) + s`, masked) into the gradient at its stage, then runs
//!   the ReLU masks, the convs with flipped weights and the pooling gradients down to the pixels,
//!   which come back.
//!
//! Every buffer is one tile's, so an image whose layers exceed what one storage binding may hold
//! runs in tiles small enough ([`Backend::evaluator_memory`] says which do not fit, and the plan
//! tiles). Device errors (out of memory, a lost device, a kernel that fails validation) are
//! errors of the operation, not panics.

use std::sync::Mutex;

use super::{Gpu, GpuVgg, Params, Step, spread};
use crate::device::Device;
use crate::engine::{Backend, Engine, Evaluator, GradientPart, LayerGradient, Measured, Statistic, TargetCache};
use crate::error::{Error, Result};
use crate::image_io::Image;
use crate::loss::moments::Moments;
use crate::loss::spec::ObjectiveSpec;
use crate::loss::{LossConfig, Objective, StyleInput};
use crate::size::Size;
use crate::tiles::{Halo, TileGrid, Window};
use crate::vgg::{Chw, LayerId, LayerKind, Pooling};

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

/// The deepest stage any of `layers` needs.
fn last_stage(stages: &[(Stage, LayerId)], layers: &[LayerId]) -> Result<usize> {
    let mut last = 0;
    for &l in layers {
        last = last.max(stage_of(stages, l)?);
    }
    Ok(last)
}

/// The shape of every stage's output for an input of `size`, up to stage `last`.
fn shapes(net: &GpuVgg, stages: &[(Stage, LayerId)], size: Size, last: usize) -> Vec<Chw> {
    let (mut c, mut h, mut w) = (3, size.height, size.width);
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

/// How many slices a sum over `m` positions is cut into (precision and parallelism).
fn splits(m: usize) -> usize {
    (m / 4096).clamp(1, 256)
}

/// Bytes of device memory one pass and its gradient at `size` up to the deepest of `layers`
/// take, or an [`Error::Memory`] if one of its buffers is larger than one binding may be on
/// this GPU.
fn pass_memory(net: &GpuVgg, size: Size, layers: &[LayerId]) -> Result<u64> {
    let stages = stages(net);
    let last = last_stage(&stages, layers)?;
    let shapes = shapes(net, &stages, size, last);
    let bytes = |s: &Chw| (s.0 * s.1 * s.2) as u64 * 4;
    let largest = shapes.iter().map(bytes).max().unwrap_or(0).max(12 * size.pixels() as u64);
    let limit = net.gpu.max_binding();
    if largest > limit {
        let (at, shape) =
            shapes.iter().enumerate().max_by_key(|(_, s)| bytes(s)).map(|(i, s)| (stages[i].1, *s)).unwrap();
        // Activations grow with the pixels: the side that would fit.
        let side = (size.pixels() as f64 * limit as f64 / largest as f64).sqrt() as usize;
        return Err(Error::Memory {
            message: format!(
                "on {} one buffer may hold at most {}, but at {size} the output of {at} ({}x{}x{}) is {}; \
                 about {side}x{side} pixels fit in one (tiles of that size run: tile auto)",
                net.gpu.name(),
                binary_bytes(limit),
                shape.0,
                shape.1,
                shape.2,
                binary_bytes(largest)
            ),
            lower: vec!["size".into()],
        });
    }
    let activations: u64 = shapes.iter().map(bytes).sum();
    let pre_relu: u64 = layers
        .iter()
        .filter(|l| l.kind == LayerKind::Conv)
        .map(|l| stage_of(&stages, *l).map(|s| bytes(&shapes[s])))
        .sum::<Result<u64>>()?;
    // The two gradient buffers the backward pass alternates between, and the statistics'
    // scratch (a compact window, its masked copy, a term's product).
    Ok(activations + pre_relu + 5 * largest + 3 * 12 * size.pixels() as u64)
}

/// Bytes in MiB, or KiB below one MiB.
fn binary_bytes(b: u64) -> String {
    if b >= 1 << 20 { format!("{} MiB", b >> 20) } else { format!("{} KiB", b >> 10) }
}

/// What the `reduce` kernel sums (its `u0.y`).
#[derive(Clone, Copy)]
enum Reduce {
    SquaredDistance = 1,
    Absolute = 2,
}

/// A buffer of f32 values on the GPU.
pub struct Buf {
    buffer: wgpu::Buffer,
}

/// Buffers kept for reuse, by size: an evaluation asks for the same ones every time.
#[derive(Default)]
struct Pool {
    free: Mutex<Vec<wgpu::Buffer>>,
}

impl Pool {
    fn take(&self, gpu: &Gpu, len: usize) -> Buf {
        let bytes = 4 * len.max(4) as u64;
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.size() >= bytes && b.size() <= 2 * bytes)
            .min_by_key(|(_, b)| b.size());
        let buffer = match best.map(|(i, _)| i) {
            Some(i) => free.swap_remove(i),
            None => {
                drop(free);
                gpu.buffer("pooled", len)
            }
        };
        Buf { buffer }
    }

    fn give(&self, bufs: impl IntoIterator<Item = Buf>) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).extend(bufs.into_iter().map(|b| b.buffer));
    }
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
        Params { u: ints(&[m * n, splits]), f: floats(&[alpha as f64]) },
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

/// One forward pass's buffers: the input and every stage's output (post-ReLU for convs), the
/// pre-ReLU outputs of the `convB_K` layers asked for.
pub struct GpuPass {
    size: Size,
    pixels: Buf,
    input: Buf,
    outputs: Vec<(Buf, Chw)>,
    pre_relu: Vec<Option<Buf>>,
}

/// The engine for one objective: the network on the GPU and this objective's buffers.
pub struct GpuEngine<'n> {
    net: &'n GpuVgg,
    stages: Vec<(Stage, LayerId)>,
    pool: Pool,
}

impl<'n> GpuEngine<'n> {
    /// An engine on `net`, with an empty buffer pool.
    pub fn new(net: &'n GpuVgg) -> Self {
        GpuEngine { net, stages: stages(net), pool: Pool::default() }
    }

    fn gpu(&self) -> &Gpu {
        &self.net.gpu
    }

    fn take(&self, len: usize) -> Buf {
        self.pool.take(self.gpu(), len)
    }

    /// A buffer holding `data`.
    fn upload(&self, data: &[f32]) -> Buf {
        let b = self.take(data.len());
        self.gpu().queue.write_buffer(&b.buffer, 0, &super::f32_bytes(data));
        b
    }

    /// The buffer holding `layer`'s features in `pass` and their shape.
    fn features<'p>(&self, pass: &'p GpuPass, layer: LayerId) -> Result<(&'p Buf, Chw)> {
        let si = stage_of(&self.stages, layer)?;
        let (out, shape) =
            pass.outputs.get(si).ok_or_else(|| Error::config(format!("layer {layer} was not computed")))?;
        let buf = match layer.kind {
            LayerKind::Conv => {
                pass.pre_relu[si].as_ref().ok_or_else(|| Error::config(format!("layer {layer} was not kept")))?
            }
            _ => out,
        };
        Ok((buf, *shape))
    }

    /// A dispatch of an elementwise kernel.
    fn ew(&self, kernel: &super::Kernel, buffers: [Option<&Buf>; 4], u: &[usize], f: &[f64], threads: usize) -> Step {
        let b = buffers.map(|b| b.map(|b| &b.buffer));
        elementwise(self.gpu(), kernel, b, Params { u: ints(u), f: floats(f) }, threads)
    }

    /// The window's values of a `c x h x w` layer in a compact buffer (recorded into `steps`), or
    /// `None` when the window is the whole layer (the layer's own buffer serves).
    fn crop(&self, steps: &mut Vec<Step>, f: &Buf, (c, h, w): Chw, window: &Window) -> Option<Buf> {
        let r = window.local;
        if r.width == w && r.height == h {
            return None;
        }
        let out = self.take(c * r.area());
        steps.push(self.ew(
            &self.gpu().kernels.crop,
            [Some(f), None, Some(&out), None],
            &[c, r.height, r.width, r.y, r.x, w, h],
            &[],
            c * r.area(),
        ));
        Some(out)
    }

    /// The partial sums of `n` values of `x` (`mode` says of what), one per 4096, written to
    /// `partials` from `at`.
    fn reduce(&self, x: &Buf, y: Option<&Buf>, mode: Reduce, n: usize, partials: &Buf, at: usize) -> Step {
        let gpu = self.gpu();
        let (gx, gy) = spread(n.div_ceil(4096));
        gpu.step(
            &gpu.kernels.reduce,
            &super::ELEMENTWISE,
            &[Some(&x.buffer), y.map(|y| &y.buffer), None, Some(&partials.buffer)],
            Params { u: ints(&[n, mode as usize, at]), ..Default::default() },
            [gx, gy, 1],
        )
    }

    /// `f` (`c x m`) with each plane times `mask`, in a new buffer (recorded into `steps`).
    fn masked(&self, steps: &mut Vec<Step>, f: &Buf, mask: &Buf, c: usize, m: usize) -> Buf {
        let out = self.take(c * m);
        steps.push(self.ew(
            &self.gpu().kernels.mask_planes,
            [Some(f), Some(mask), Some(&out), None],
            &[c * m, m, 0],
            &[],
            c * m,
        ));
        out
    }

    /// Records `term`'s layer gradient on its window, times its scale, added into `into` (the
    /// layer's whole gradient on the tile); the scratch it used goes to `scratch`.
    fn add_term(
        &self,
        steps: &mut Vec<Step>,
        scratch: &mut Vec<Buf>,
        pass: &GpuPass,
        term: &LayerGradient<'_, Buf>,
        into: &Buf,
    ) -> Result<()> {
        let k = &self.gpu().kernels;
        let (f, (c, h, w)) = self.features(pass, term.layer)?;
        let r = term.window.local;
        let m = r.area();
        if m == 0 {
            return Ok(());
        }
        let cropped = self.crop(steps, f, (c, h, w), &term.window);
        let fc = cropped.as_ref().unwrap_or(f);
        let g = self.take(c * m);
        match &term.part {
            GradientPart::Content { target, factor } => {
                steps.push(self.ew(
                    &k.content_grad,
                    [Some(fc), Some(target), Some(&g), None],
                    &[c * m, 0],
                    &[*factor as f64],
                    c * m,
                ));
            }
            GradientPart::Style { groups } => {
                if groups.is_empty() {
                    scratch.extend(cropped);
                    scratch.push(g);
                    return Ok(());
                }
                for (gi, (region, fg)) in groups.iter().enumerate() {
                    let masked = region.map(|r| self.masked(steps, fc, r, c, m));
                    let matrix = self.upload(&fg.matrix);
                    let product = self.take(c * m);
                    let b = masked.as_ref().unwrap_or(fc);
                    steps.extend(product_steps(
                        self.gpu(),
                        &matrix.buffer,
                        &b.buffer,
                        &matrix.buffer,
                        &product.buffer,
                        (c, m, c),
                        false,
                        1,
                        1.0,
                        false,
                    ));
                    if !fg.shift.is_empty() {
                        let shift = self.upload(&fg.shift);
                        steps.push(self.ew(
                            &k.row_affine,
                            [None, Some(&shift), Some(&product), None],
                            &[c * m, m, 1],
                            &[1.0, 1.0],
                            c * m,
                        ));
                        scratch.push(shift);
                    }
                    let add = (gi > 0) as usize;
                    match region {
                        Some(r) => steps.push(self.ew(
                            &k.mask_planes,
                            [Some(&product), Some(r), Some(&g), None],
                            &[c * m, m, add],
                            &[],
                            c * m,
                        )),
                        None => steps.push(self.ew(
                            &k.axpy,
                            [Some(&product), None, Some(&g), None],
                            &[c * m, add],
                            &[1.0],
                            c * m,
                        )),
                    }
                    scratch.extend(masked);
                    scratch.push(matrix);
                    scratch.push(product);
                }
            }
        }
        steps.push(self.ew(
            &k.embed_add,
            [Some(&g), None, Some(into), None],
            &[c, r.height, r.width, r.y, r.x, w, h],
            &[term.scale as f64],
            c * m,
        ));
        scratch.extend(cropped);
        scratch.push(g);
        Ok(())
    }

    /// Runs `steps` in one compute pass, then copies each of `reads` (a buffer and a count) out,
    /// and returns their values. Device errors come back as errors.
    fn submit_and_read(&self, steps: &[Step], reads: &[(&wgpu::Buffer, usize)]) -> Result<Vec<Vec<f32>>> {
        let gpu = self.gpu();
        scoped(gpu, "an evaluation", || {
            let staging: Vec<wgpu::Buffer> = reads.iter().map(|(_, n)| gpu.staging(*n)).collect();
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                steps.iter().for_each(|s| s.encode(&mut pass));
            }
            for ((from, n), to) in reads.iter().zip(&staging) {
                encoder.copy_buffer_to_buffer(from, 0, to, 0, 4 * (*n).max(1) as u64);
            }
            gpu.queue.submit([encoder.finish()]);
            let wanted: Vec<(&wgpu::Buffer, usize)> = staging.iter().zip(reads).map(|(s, (_, n))| (s, *n)).collect();
            if wanted.is_empty() {
                gpu.device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .map_err(|e| Error::Gpu(format!("waiting: {e}")))?;
                return Ok(Vec::new());
            }
            gpu.read(&wanted)
        })
    }

    /// Sums the partial sums in `values[start..start + count]` in f64.
    fn total(values: &[f32], (start, count): (usize, usize)) -> f64 {
        values[start..start + count].iter().map(|v| *v as f64).sum()
    }
}

/// Runs `f` in the device's error scopes: an error it raised (a kernel that fails validation,
/// out of memory, a lost device) comes back as an error naming `what`.
fn scoped<T>(gpu: &Gpu, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let internal = gpu.device.push_error_scope(wgpu::ErrorFilter::Internal);
    let memory = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = f();
    let errors = [
        (super::block_on(validation.pop()), "a kernel failed"),
        (super::block_on(memory.pop()), "out of memory"),
        (super::block_on(internal.pop()), "device error"),
    ];
    for (e, kind) in errors {
        if let Some(e) = e {
            if kind == "out of memory" {
                return Err(Error::Memory {
                    message: format!("{} ran out of memory during {what}: {e}", gpu.name()),
                    lower: vec!["size".into()],
                });
            }
            return Err(Error::Gpu(format!("{} during {what} ({kind}): {e}", gpu.name())));
        }
    }
    out
}

impl Engine for GpuEngine<'_> {
    type Resident = Buf;
    type Pass = GpuPass;

    fn resident(&self, data: Vec<f32>) -> Result<Buf> {
        Ok(self.upload(&data))
    }

    fn forward(&self, pixels: &[f32], size: Size, layers: &[LayerId]) -> Result<GpuPass> {
        let gpu = self.gpu();
        let net = self.net;
        let last = last_stage(&self.stages, layers)?;
        let n = size.pixels();
        if pixels.len() != 3 * n {
            return Err(Error::config(format!("the image has {} values, not 3 x {size}", pixels.len())));
        }
        scoped(gpu, "a forward pass", || {
            let pixels_buf = self.upload(pixels);
            let input = self.take(3 * n);
            let (src, scale, shift) = net.net.preprocess().affine();
            let mut steps = vec![elementwise(
                gpu,
                &gpu.kernels.preprocess,
                [Some(&pixels_buf.buffer), None, Some(&input.buffer), None],
                Params {
                    u: ints(&[n, 0, 0, 0, src[0], src[1], src[2], 0]),
                    f: [scale[0], scale[1], scale[2], 0.0, shift[0], shift[1], shift[2], 0.0],
                },
                3 * n,
            )];
            let mut outputs: Vec<(Buf, Chw)> = Vec::new();
            let mut pre_relu = Vec::new();
            let (mut c, mut h, mut w) = (3, size.height, size.width);
            for (si, (stage, id)) in self.stages[..=last].iter().enumerate() {
                let prev = if si == 0 { &input } else { &outputs[si - 1].0 };
                match stage {
                    Stage::Conv(i) => {
                        let conv = &net.convs[*i];
                        let out = self.take(conv.c_out * h * w);
                        let keep = layers
                            .iter()
                            .any(|l| l.kind == LayerKind::Conv && l.block == id.block && l.index == id.index);
                        let pre = keep.then(|| self.take(conv.c_out * h * w));
                        let target = pre.as_ref().unwrap_or(&out);
                        steps.push(conv_step(
                            gpu,
                            [&prev.buffer, &conv.weight, &conv.bias, &prev.buffer],
                            &target.buffer,
                            (c, conv.c_out, h, w),
                            4 | (!keep as u32),
                        ));
                        if let Some(pre) = &pre {
                            let len = conv.c_out * h * w;
                            steps.push(self.ew(
                                &gpu.kernels.relu,
                                [Some(pre), None, Some(&out), None],
                                &[len],
                                &[],
                                len,
                            ));
                        }
                        c = conv.c_out;
                        outputs.push((out, (c, h, w)));
                        pre_relu.push(pre);
                    }
                    Stage::Pool => {
                        let out = self.take(c * (h / 2) * (w / 2));
                        let mode = (net.net.pooling() == Pooling::Avg) as usize;
                        steps.push(self.ew(
                            &gpu.kernels.pool_forward,
                            [Some(prev), None, Some(&out), None],
                            &[c, h, w, mode],
                            &[],
                            c * (h / 2) * (w / 2),
                        ));
                        (h, w) = (h / 2, w / 2);
                        outputs.push((out, (c, h, w)));
                        pre_relu.push(None);
                    }
                }
            }
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                steps.iter().for_each(|s| s.encode(&mut pass));
            }
            gpu.queue.submit([encoder.finish()]);
            Ok(GpuPass { size, pixels: pixels_buf, input, outputs, pre_relu })
        })
    }

    fn statistics(&self, pass: &GpuPass, asks: &[Statistic<'_, Buf>]) -> Result<Vec<Measured>> {
        let gpu = self.gpu();
        let k = &gpu.kernels;
        let mut steps = Vec::new();
        let mut scratch: Vec<Buf> = Vec::new();
        // What each ask reads back: (index into `held`, length) of its values, and for moments
        // the sums, and for a squared distance its partial sums' range.
        enum Want {
            Features(usize),
            Distance(usize, usize),
            Moments { second: usize, sum: Option<usize>, weight: f64, centred: bool },
        }
        let mut held: Vec<(Buf, usize)> = Vec::new();
        let mut wants = Vec::new();
        let distances: usize = asks
            .iter()
            .map(|a| match a {
                Statistic::SquaredDistance { layer, window, .. } => {
                    self.features(pass, *layer).map(|(_, (c, _, _))| (c * window.local.area()).div_ceil(4096))
                }
                _ => Ok(0),
            })
            .sum::<Result<usize>>()?;
        let partials = self.take(distances.max(1));
        let mut at = 0;
        for ask in asks {
            let (layer, window) = match ask {
                Statistic::Features { layer, window }
                | Statistic::SquaredDistance { layer, window, .. }
                | Statistic::Moments { layer, window, .. } => (*layer, window),
            };
            let (f, shape) = self.features(pass, layer)?;
            let c = shape.0;
            let m = window.local.area();
            let cropped = self.crop(&mut steps, f, shape, window);
            match ask {
                Statistic::Features { .. } => {
                    let values = match cropped {
                        Some(b) => b,
                        None => {
                            // The whole layer: copied, as the pass's buffers are the pass's.
                            let out = self.take(c * m);
                            steps.push(self.ew(&k.axpy, [Some(f), None, Some(&out), None], &[c * m, 0], &[1.0], c * m));
                            out
                        }
                    };
                    held.push((values, c * m));
                    wants.push(Want::Features(held.len() - 1));
                }
                Statistic::SquaredDistance { target, .. } => {
                    let fc = cropped.as_ref().unwrap_or(f);
                    let count = (c * m).div_ceil(4096);
                    steps.push(self.reduce(fc, Some(target), Reduce::SquaredDistance, c * m, &partials, at));
                    wants.push(Want::Distance(at, count));
                    at += count;
                    scratch.extend(cropped);
                }
                Statistic::Moments { mask, centred, .. } => {
                    let fc = cropped.as_ref().unwrap_or(f);
                    let masked = mask.map(|(r, _)| self.masked(&mut steps, fc, r, c, m));
                    let x = masked.as_ref().unwrap_or(fc);
                    let weight = mask.map_or(m as f64, |(_, w)| w);
                    let second = self.take(c * c);
                    let partial = self.take(splits(m) * c * c);
                    let sum = if *centred {
                        let ones = self.take(m);
                        steps.push(self.ew(&k.fill, [None, None, Some(&ones), None], &[m], &[1.0], m));
                        let sums = self.take(c);
                        let sum_partial = self.take(splits(m) * c);
                        steps.extend(product_steps(
                            gpu,
                            &x.buffer,
                            &ones.buffer,
                            &sum_partial.buffer,
                            &sums.buffer,
                            (c, 1, m),
                            false,
                            splits(m),
                            1.0,
                            false,
                        ));
                        let centred_x = self.take(c * m);
                        steps.push(self.ew(
                            &k.row_affine,
                            [Some(x), Some(&sums), Some(&centred_x), None],
                            &[c * m, m, 0],
                            &[1.0, -1.0 / m as f64],
                            c * m,
                        ));
                        steps.extend(product_steps(
                            gpu,
                            &centred_x.buffer,
                            &centred_x.buffer,
                            &partial.buffer,
                            &second.buffer,
                            (c, c, m),
                            true,
                            splits(m),
                            1.0,
                            false,
                        ));
                        scratch.extend([ones, sum_partial, centred_x]);
                        held.push((sums, c));
                        Some(held.len() - 1)
                    } else {
                        steps.extend(product_steps(
                            gpu,
                            &x.buffer,
                            &x.buffer,
                            &partial.buffer,
                            &second.buffer,
                            (c, c, m),
                            true,
                            splits(m),
                            1.0,
                            false,
                        ));
                        None
                    };
                    held.push((second, c * c));
                    wants.push(Want::Moments { second: held.len() - 1, sum, weight, centred: *centred });
                    scratch.extend(cropped);
                    scratch.extend(masked);
                    scratch.push(partial);
                }
            }
        }
        let mut reads: Vec<(&wgpu::Buffer, usize)> = held.iter().map(|(b, n)| (&b.buffer, *n)).collect();
        if distances > 0 {
            reads.push((&partials.buffer, distances));
        }
        let values = self.submit_and_read(&steps, &reads);
        self.pool.give(scratch);
        let mut values = values?;
        let partial_sums = if distances > 0 { values.pop().unwrap_or_default() } else { Vec::new() };
        let out = wants
            .into_iter()
            .map(|w| match w {
                Want::Features(i) => Measured::Features(std::mem::take(&mut values[i])),
                Want::Distance(start, count) => Measured::Number(Self::total(&partial_sums, (start, count))),
                Want::Moments { second, sum, weight, centred } => Measured::Moments(Moments {
                    weight,
                    sum: sum.map(|i| values[i].iter().map(|v| *v as f64).collect()).unwrap_or_default(),
                    second: values[second].iter().map(|v| *v as f64).collect(),
                    centred,
                }),
            })
            .collect();
        self.pool.give(held.into_iter().map(|(b, _)| b).chain([partials]));
        Ok(out)
    }

    fn gradient_norms(&self, pass: &GpuPass, terms: &[LayerGradient<'_, Buf>]) -> Result<Vec<f64>> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let gpu = self.gpu();
        let k = &gpu.kernels;
        let mut steps = Vec::new();
        let mut scratch = Vec::new();
        let mut ranges = Vec::new();
        let mut counts = 0;
        let mut layers = Vec::new();
        for t in terms {
            let (_, (c, h, w)) = self.features(pass, t.layer)?;
            let count = (c * h * w).div_ceil(4096);
            ranges.push((counts, count));
            counts += count;
            layers.push((c * h * w, count));
        }
        let partials = self.take(counts.max(1));
        for (t, (start, _)) in terms.iter().zip(&ranges) {
            let (_, (c, h, w)) = self.features(pass, t.layer)?;
            let n = c * h * w;
            let g = self.take(n);
            steps.push(self.ew(&k.fill, [None, None, Some(&g), None], &[n], &[0.0], n));
            self.add_term(&mut steps, &mut scratch, pass, t, &g)?;
            steps.push(self.reduce(&g, None, Reduce::Absolute, n, &partials, *start));
            scratch.push(g);
        }
        let values = self.submit_and_read(&steps, &[(&partials.buffer, counts)]);
        self.pool.give(scratch);
        self.pool.give([partials]);
        let values = values?;
        Ok(ranges.iter().map(|r| Self::total(&values[0], *r)).collect())
    }

    fn backward(&self, pass: GpuPass, terms: &[LayerGradient<'_, Buf>]) -> Result<Vec<f32>> {
        let gpu = self.gpu();
        let k = &gpu.kernels;
        let net = self.net;
        let size = pass.size;
        let n = size.pixels();
        let mut at_stage: Vec<Vec<&LayerGradient<'_, Buf>>> = (0..pass.outputs.len()).map(|_| Vec::new()).collect();
        for t in terms {
            let si = stage_of(&self.stages, t.layer)?;
            at_stage.get_mut(si).ok_or_else(|| Error::config(format!("layer {} was not computed", t.layer)))?.push(t);
        }
        let largest = pass.outputs.iter().map(|(_, (c, h, w))| c * h * w).max().unwrap_or(0).max(3 * n);
        let grads = [self.take(largest), self.take(largest)];
        let mut steps = Vec::new();
        let mut scratch = Vec::new();
        let mut current: Option<usize> = None;
        for si in (0..pass.outputs.len()).rev() {
            let (out, (c, h, w)) = &pass.outputs[si];
            let len = c * h * w;
            let add = |steps: &mut Vec<Step>,
                       scratch: &mut Vec<Buf>,
                       current: &mut Option<usize>,
                       conv_kind: bool|
             -> Result<()> {
                for t in at_stage[si].iter().filter(|t| (t.layer.kind == LayerKind::Conv) == conv_kind) {
                    let into = *current.get_or_insert_with(|| {
                        steps.push(self.ew(&k.fill, [None, None, Some(&grads[0]), None], &[len], &[0.0], len));
                        0
                    });
                    self.add_term(steps, scratch, &pass, t, &grads[into])?;
                }
                Ok(())
            };
            add(&mut steps, &mut scratch, &mut current, false)?;
            let (in_c, in_h, in_w) = if si == 0 { (3, size.height, size.width) } else { pass.outputs[si - 1].1 };
            match self.stages[si].0 {
                Stage::Conv(i) => {
                    let conv = &net.convs[i];
                    let pre_relu_terms = at_stage[si].iter().any(|t| t.layer.kind == LayerKind::Conv);
                    if pre_relu_terms {
                        if let Some(cur) = current {
                            steps.push(self.ew(
                                &k.relu_mask,
                                [None, Some(out), Some(&grads[cur]), None],
                                &[len],
                                &[],
                                len,
                            ));
                        }
                        add(&mut steps, &mut scratch, &mut current, true)?;
                    }
                    if let Some(cur) = current {
                        let flags = if pre_relu_terms { 0 } else { 2 };
                        steps.push(conv_step(
                            gpu,
                            [&grads[cur].buffer, &conv.flipped, &conv.bias, &out.buffer],
                            &grads[1 - cur].buffer,
                            (conv.c_out, conv.c_in, in_h, in_w),
                            flags,
                        ));
                        current = Some(1 - cur);
                    }
                }
                Stage::Pool => {
                    if let Some(cur) = current {
                        let mode = (net.net.pooling() == Pooling::Avg) as usize;
                        let input = if si == 0 { &pass.input } else { &pass.outputs[si - 1].0 };
                        steps.push(self.ew(
                            &k.pool_backward,
                            [Some(input), Some(&grads[cur]), Some(&grads[1 - cur]), None],
                            &[in_c, in_h, in_w, mode],
                            &[],
                            in_c * in_h * in_w,
                        ));
                        current = Some(1 - cur);
                    }
                }
            }
        }
        let last = match current {
            Some(cur) => cur,
            None => {
                // No term reaches the image (every region black): the gradient is zero.
                steps.push(self.ew(&k.fill, [None, None, Some(&grads[1]), None], &[3 * n], &[0.0], 3 * n));
                1
            }
        };
        let pixel_grad = self.take(3 * n);
        let (src, scale, _) = net.net.preprocess().affine();
        steps.push(elementwise(
            gpu,
            &k.preprocess_backward,
            [Some(&grads[last].buffer), None, Some(&pixel_grad.buffer), None],
            Params {
                u: ints(&[n, 0, 0, 0, src[0], src[1], src[2], 0]),
                f: [scale[0], scale[1], scale[2], 0.0, 0.0, 0.0, 0.0, 0.0],
            },
            3 * n,
        ));
        let values = self.submit_and_read(&steps, &[(&pixel_grad.buffer, 3 * n)]);
        self.pool.give(scratch);
        let [a, b] = grads;
        self.pool.give([a, b, pixel_grad]);
        self.recycle(pass);
        Ok(values?.remove(0))
    }

    fn recycle(&self, pass: GpuPass) {
        let GpuPass { pixels, input, outputs, pre_relu, .. } = pass;
        self.pool.give(
            [pixels, input]
                .into_iter()
                .chain(outputs.into_iter().map(|(b, _)| b))
                .chain(pre_relu.into_iter().flatten()),
        );
    }
}

impl Backend for GpuVgg {
    fn name(&self) -> &str {
        "gpu"
    }

    fn device(&self) -> Device {
        Device::Gpu
    }

    fn check_layers(&self, layers: &[LayerId]) -> Result<()> {
        self.net.check_layers(layers)
    }

    fn min_input_side(&self, layers: &[LayerId]) -> Result<usize> {
        self.net.min_input_side(layers)
    }

    fn shape(&self, layer: LayerId, size: Size) -> Result<Chw> {
        self.net.shape(layer, size)
    }

    fn pools_before(&self, layer: LayerId) -> Result<usize> {
        self.net.pools_before(layer)
    }

    fn halo(&self, layers: &[LayerId]) -> Result<Halo> {
        self.net.halo(layers)
    }

    fn memory_estimate(&self, size: Size, layers: &[LayerId]) -> Result<u64> {
        let weights: u64 = self.convs.iter().map(|c| (2 * 9 * c.c_in * c.c_out + c.c_out) as u64 * 4).sum();
        Ok(pass_memory(self, size, layers)? + weights)
    }

    /// One tile's pass and gradient (each of its buffers within a binding), the targets and
    /// masks of every tile (their shares add up to the whole image's), the style terms' `C x C`
    /// matrices, the weights.
    fn evaluator_memory(&self, loss: &LossConfig, grid: &TileGrid, regions: usize) -> Result<u64> {
        let layers = loss.layers();
        let size = grid.size;
        let mut bytes = self.memory_estimate(grid.largest_outer(), &layers)?;
        for &layer in &loss.content_layers {
            let (c, h, w) = self.net.shape(layer, size)?;
            bytes += 4 * (c * h * w) as u64;
        }
        for &layer in &loss.style_layers {
            let (c, h, w) = self.net.shape(layer, size)?;
            bytes += 4 * (regions * h * w) as u64 + 4 * (c * c * (splits(h * w) + 4)) as u64;
        }
        Ok(bytes)
    }

    fn forward_flops(&self, size: Size, layers: &[LayerId]) -> Result<f64> {
        self.net.forward_flops(size, layers)
    }

    fn evaluator<'a>(
        &'a self,
        spec: &ObjectiveSpec,
        content: &Image,
        styles: &[StyleInput],
        tile: Option<usize>,
    ) -> Result<Box<dyn Evaluator + 'a>> {
        let what = format!("setting up a {} evaluation", spec.size);
        let objective = scoped(&self.gpu, &what, || {
            Objective::new(GpuEngine::new(self), spec, content, styles, tile, &self.targets)
        })?;
        Ok(Box::new(objective))
    }

    fn targets(&self) -> &TargetCache {
        &self.targets
    }
}
