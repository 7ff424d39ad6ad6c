//! The GPU backend: the same objective as the CPU path, computed in WGSL compute shaders through
//! `wgpu` (Vulkan, Metal, DX12).
//!
//! [`Gpu`] is one device and its compiled kernels; [`GpuVgg`] is the network on it (weights
//! uploaded once, with the flipped copies the input gradient needs) and implements
//! [`crate::engine::Backend`]; its evaluators are the objective of [`crate::loss::objective`]
//! on the GPU engine ([`engine::GpuEngine`]): the same specification and rules as the CPU's,
//! with each pass, statistic and backward pass run as WGSL dispatches.
//!
//! The kernels (`conv3x3.wgsl`, `matmul.wgsl`, `elementwise.wgsl`) are plain f32 and are tested
//! one by one against the CPU implementation (`tests/gpu.rs`), and the whole objective and its
//! gradient against the CPU path.

mod engine;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::engine::TargetCache;
use crate::error::{Error, Result};
use crate::vgg::{LayerId, Vgg};

pub use engine::{GpuEngine, GpuPass};

/// Runs a `wgpu` future to completion on this thread (on native backends they are ready at once
/// or after a device poll).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// Runs `f` with the process's standard error sent to /dev/null: looking for adapters loads
/// every installed Vulkan driver, and some print warnings that are not ours (Mesa's lavapipe
/// prints "XDG_RUNTIME_DIR is invalid" twice on a headless machine), which would break the
/// promise that an error is one line. Our own errors come back as values.
#[cfg(unix)]
fn without_stderr<T>(f: impl FnOnce() -> T) -> T {
    use std::io::Write;
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: puts back the descriptor saved below and closes the copy.
            unsafe {
                libc::dup2(self.0, 2);
                libc::close(self.0);
            }
        }
    }
    let _ = std::io::stderr().flush();
    // SAFETY: dup, open, dup2 and close on descriptors this function owns; fd 2 is restored by
    // `Restore` when `f` returns or panics.
    let _restore = unsafe {
        let saved = libc::dup(2);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        if saved < 0 || null < 0 {
            if saved >= 0 {
                libc::close(saved);
            }
            if null >= 0 {
                libc::close(null);
            }
            return f();
        }
        libc::dup2(null, 2);
        libc::close(null);
        Restore(saved)
    };
    f()
}

#[cfg(not(unix))]
fn without_stderr<T>(f: impl FnOnce() -> T) -> T {
    f()
}

/// What a kernel's binding is: a read-only or a writable storage buffer, or the parameters.
#[derive(Clone, Copy)]
enum Slot {
    Read,
    Write,
    Params,
}

/// One compiled entry point and the layout of its bindings.
#[derive(Clone)]
struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// The kernels, compiled once per device.
#[derive(Clone)]
struct Kernels {
    conv: Kernel,
    matmul: Kernel,
    preprocess: Kernel,
    preprocess_backward: Kernel,
    pool_forward: Kernel,
    pool_backward: Kernel,
    relu: Kernel,
    relu_mask: Kernel,
    mask_planes: Kernel,
    content_grad: Kernel,
    sum_splits: Kernel,
    total_variation: Kernel,
    reduce: Kernel,
    crop: Kernel,
    embed_add: Kernel,
    row_affine: Kernel,
    axpy: Kernel,
    fill: Kernel,
}

/// A GPU: the device, its queue and limits, and the kernels compiled for it. A clone is another
/// handle to the same device.
#[derive(Clone)]
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    kernels: Kernels,
    /// Bound where a kernel's binding is not used (one per writable slot: a buffer may not be
    /// written through two bindings of one dispatch).
    unused: [wgpu::Buffer; 3],
    /// The largest storage buffer a binding may hold, in bytes (the device's, or less:
    /// [`Gpu::with_binding_limit`]).
    binding_limit: u64,
}

/// The kernels' parameters: every kernel reads what it needs of these 64 bytes (its WGSL says
/// which).
#[derive(Clone, Copy, Default)]
pub(crate) struct Params {
    pub u: [u32; 8],
    pub f: [f32; 8],
}

impl Params {
    fn bytes(&self) -> Vec<u8> {
        self.u.iter().map(|v| v.to_le_bytes()).chain(self.f.iter().map(|v| v.to_le_bytes())).flatten().collect()
    }
}

impl Gpu {
    /// The first GPU `wgpu` finds, preferring real hardware to a software driver (Mesa's
    /// lavapipe); with `hardware_only`, software drivers do not count (they are slower than the
    /// CPU path). `None` when there is none.
    pub fn find(hardware_only: bool) -> Result<Option<Gpu>> {
        without_stderr(|| Gpu::find_quietly(hardware_only))
    }

    fn find_quietly(hardware_only: bool) -> Result<Option<Gpu>> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let mut adapters = block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
        let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu | wgpu::DeviceType::Other => 2,
            wgpu::DeviceType::Cpu => 3,
        };
        adapters.retain(|a| !(hardware_only && a.get_info().device_type == wgpu::DeviceType::Cpu));
        adapters.sort_by_key(rank);
        match adapters.into_iter().next() {
            Some(adapter) => Gpu::open(adapter).map(Some),
            None => Ok(None),
        }
    }

    fn open(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("impasto"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Gpu(format!("cannot open {}: {e}", info.name)))?;
        let kernels = Kernels::compile(&device)?;
        let unused = [0, 1, 2].map(|_| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("unused"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        });
        let binding_limit = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        Ok(Gpu { device, queue, info, kernels, unused, binding_limit })
    }

    /// This GPU as if one storage binding held at most `bytes` (less than the device allows):
    /// to see how runs split on a device with smaller bindings, on any device.
    pub fn with_binding_limit(mut self, bytes: u64) -> Self {
        self.binding_limit = self.binding_limit.min(bytes.max(64));
        self
    }

    /// The adapter's name and API, as in "NVIDIA H200 (Vulkan)".
    pub fn name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Whether this is a software driver running on the CPU (lavapipe, WARP, SwiftShader).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The largest storage buffer one binding may hold, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.binding_limit
    }

    /// A storage buffer of `len` f32 values (at least one), contents undefined.
    fn buffer(&self, label: &str, len: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: 4 * len.max(4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer holding `data`.
    fn upload(&self, label: &str, data: &[f32]) -> wgpu::Buffer {
        let buffer = self.buffer(label, data.len());
        self.queue.write_buffer(&buffer, 0, &f32_bytes(data));
        buffer
    }

    /// A buffer the host can read back `len` f32 values from.
    fn staging(&self, len: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: 4 * len.max(4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Maps staging buffers after the submitted work and reads `len` values from each.
    fn read(&self, buffers: &[(&wgpu::Buffer, usize)]) -> Result<Vec<Vec<f32>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, (b, len)) in buffers.iter().enumerate() {
            let tx = tx.clone();
            b.slice(..4 * *len as u64).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("waiting: {e}")))?;
        for (_, r) in rx.iter() {
            r.map_err(|e| Error::Gpu(format!("reading back: {e}")))?;
        }
        let mut out = Vec::new();
        for (b, len) in buffers {
            let slice = b.slice(..4 * *len as u64);
            let view = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("reading back: {e}")))?;
            out.push(view.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
            drop(view);
            b.unmap();
        }
        Ok(out)
    }

    /// A dispatch of `kernel` on `buffers` (in its binding order; `None` where unused) with
    /// `params`, over `groups` workgroups.
    fn step(
        &self,
        kernel: &Kernel,
        slots: &[Slot],
        buffers: &[Option<&wgpu::Buffer>],
        params: Params,
        groups: [u32; 3],
    ) -> Step {
        let uniform = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: 64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&uniform, 0, &params.bytes());
        let mut writable = 0;
        let mut entries = Vec::new();
        let mut it = buffers.iter();
        for (i, slot) in slots.iter().enumerate() {
            let buffer = match slot {
                Slot::Params => &uniform,
                Slot::Read => it.next().copied().flatten().unwrap_or(&self.unused[0]),
                Slot::Write => {
                    writable += 1;
                    it.next().copied().flatten().unwrap_or(&self.unused[writable])
                }
            };
            entries.push(wgpu::BindGroupEntry { binding: i as u32, resource: buffer.as_entire_binding() });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        Step { pipeline: kernel.pipeline.clone(), bind_group, groups }
    }
}

/// One recorded dispatch.
#[derive(Clone)]
struct Step {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

impl Step {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `count` workgroups laid out along x and then y (or z), at most 65535 along one.
fn spread(count: usize) -> (u32, u32) {
    let count = count.max(1);
    let x = count.min(65535);
    (x as u32, count.div_ceil(x) as u32)
}

const ELEMENTWISE: [Slot; 5] = [Slot::Read, Slot::Read, Slot::Write, Slot::Write, Slot::Params];
const CONV: [Slot; 6] = [Slot::Read, Slot::Read, Slot::Read, Slot::Read, Slot::Write, Slot::Params];
const MATMUL: [Slot; 4] = [Slot::Read, Slot::Read, Slot::Write, Slot::Params];

impl Kernels {
    fn compile(device: &wgpu::Device) -> Result<Kernels> {
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = |name: &str, source: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            })
        };
        let conv = module("conv3x3", include_str!("conv3x3.wgsl"));
        let matmul = module("matmul", include_str!("matmul.wgsl"));
        let elementwise = module("elementwise", include_str!("elementwise.wgsl"));
        let kernel = |module: &wgpu::ShaderModule, entry: &str, slots: &[Slot]| {
            let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
                .iter()
                .enumerate()
                .map(|(i, s)| wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match s {
                            Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                            Slot::Write => wgpu::BufferBindingType::Storage { read_only: false },
                            Slot::Params => wgpu::BufferBindingType::Uniform,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let layout = device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(entry), entries: &entries });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
            Kernel { pipeline, layout }
        };
        let ew = |entry: &str| kernel(&elementwise, entry, &ELEMENTWISE);
        let kernels = Kernels {
            conv: kernel(&conv, "main", &CONV),
            matmul: kernel(&matmul, "main", &MATMUL),
            preprocess: ew("preprocess"),
            preprocess_backward: ew("preprocess_backward"),
            pool_forward: ew("pool_forward"),
            pool_backward: ew("pool_backward"),
            relu: ew("relu"),
            relu_mask: ew("relu_mask"),
            mask_planes: ew("mask_planes"),
            content_grad: ew("content_grad"),
            sum_splits: ew("sum_splits"),
            total_variation: ew("total_variation"),
            reduce: ew("reduce"),
            crop: ew("crop"),
            embed_add: ew("embed_add"),
            row_affine: ew("row_affine"),
            axpy: ew("axpy"),
            fill: ew("fill"),
        };
        match block_on(scope.pop()) {
            Some(e) => Err(Error::Gpu(format!("the kernels do not compile on this GPU: {e}"))),
            None => Ok(kernels),
        }
    }
}

/// The network on a GPU: the conv weights (and their flipped, transposed copies) uploaded once;
/// the layer structure and the checks are the CPU network's, which stays the reference.
pub struct GpuVgg {
    gpu: Gpu,
    net: Vgg,
    /// Per conv layer in order: weights `[c_out][c_in*9]`, flipped weights, bias, c_in, c_out.
    convs: Vec<GpuConv>,
    /// The style targets computed on this GPU.
    targets: TargetCache,
}

struct GpuConv {
    weight: wgpu::Buffer,
    flipped: wgpu::Buffer,
    bias: wgpu::Buffer,
    c_in: usize,
    c_out: usize,
}

impl GpuVgg {
    /// Uploads `net`'s weights to `gpu`.
    pub fn new(gpu: Gpu, net: Vgg) -> Self {
        let convs = net
            .convs()
            .map(|(_, filter, bias)| GpuConv {
                weight: gpu.upload("weight", filter.weight()),
                flipped: gpu.upload("flipped weight", filter.flipped().weight()),
                bias: gpu.upload("bias", bias),
                c_in: filter.c_in(),
                c_out: filter.c_out(),
            })
            .collect();
        GpuVgg { gpu, net, convs, targets: TargetCache::default() }
    }

    /// The GPU it runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The CPU network it mirrors.
    pub fn cpu(&self) -> &Vgg {
        &self.net
    }

    /// The CPU network, the GPU let go.
    pub fn into_cpu(self) -> Vgg {
        self.net
    }
}

/// One conv layer's time on the GPU, for `impasto bench --device gpu`.
pub struct ConvTiming {
    /// The conv layer.
    pub layer: LayerId,
    /// Its input channels.
    pub c_in: usize,
    /// Its output channels.
    pub c_out: usize,
    /// The square input's side in positions.
    pub side: usize,
    /// Seconds for the forward conv (bias, ReLU).
    pub forward: f64,
    /// Seconds for its input gradient (ReLU mask fused).
    pub gradient: f64,
}

impl GpuVgg {
    /// Times each conv layer up to `deepest` at its resolution for a `size` x `size` image:
    /// the median of `runs` submissions of one dispatch, each waited for.
    pub fn time_convs(&self, size: usize, deepest: LayerId, runs: usize) -> Result<Vec<ConvTiming>> {
        let gpu = &self.gpu;
        let mut out = Vec::new();
        for ((layer, _, _), conv) in self.net.convs().zip(&self.convs).take_while(|((id, _, _), _)| *id <= deepest) {
            let side = size >> self.net.pools_before(layer)?;
            let (c_in, c_out) = (conv.c_in, conv.c_out);
            let input = gpu.upload("input", &vec![1.0; c_in * side * side]);
            let output = gpu.buffer("output", c_out * side * side);
            let grad_in = gpu.buffer("input gradient", c_in * side * side);
            let shape = (c_in, c_out, side, side);
            let forward = engine::conv_step(gpu, [&input, &conv.weight, &conv.bias, &input], &output, shape, 5);
            let flipped = (c_out, c_in, side, side);
            let gradient = engine::conv_step(gpu, [&output, &conv.flipped, &conv.bias, &output], &grad_in, flipped, 2);
            let time = |step: &Step| -> Result<f64> {
                let mut times = Vec::new();
                for _ in 0..=runs {
                    let start = std::time::Instant::now();
                    let mut encoder = gpu.device.create_command_encoder(&Default::default());
                    step.encode(&mut encoder.begin_compute_pass(&Default::default()));
                    gpu.queue.submit([encoder.finish()]);
                    gpu.device
                        .poll(wgpu::PollType::wait_indefinitely())
                        .map_err(|e| Error::Gpu(format!("waiting: {e}")))?;
                    times.push(start.elapsed().as_secs_f64());
                }
                times.remove(0); // the warm-up
                times.sort_by(f64::total_cmp);
                Ok(times[times.len() / 2])
            };
            out.push(ConvTiming { layer, c_in, c_out, side, forward: time(&forward)?, gradient: time(&gradient)? });
        }
        Ok(out)
    }
}

/// The kernels one at a time, for the tests that check each against the CPU implementation.
#[doc(hidden)]
pub mod probe {
    use super::*;

    fn run(gpu: &Gpu, steps: &[Step], out: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let staging = gpu.staging(len);
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            steps.iter().for_each(|s| s.encode(&mut pass));
        }
        encoder.copy_buffer_to_buffer(out, 0, &staging, 0, 4 * len as u64);
        gpu.queue.submit([encoder.finish()]);
        Ok(gpu.read(&[(&staging, len)])?.remove(0))
    }

    /// The conv kernel: `c_out` planes from `input` (`c_in` x `h` x `w`), with the flags of
    /// `conv3x3.wgsl` (1 ReLU, 2 mask the input by `mask > 0`, 4 bias).
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        gpu: &Gpu,
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        mask: &[f32],
        (c_in, c_out, h, w): (usize, usize, usize, usize),
        flags: u32,
    ) -> Result<Vec<f32>> {
        let bufs = [input, weight, bias, mask].map(|d| gpu.upload("probe", d));
        let out = gpu.buffer("probe out", c_out * h * w);
        let step = engine::conv_step(gpu, [&bufs[0], &bufs[1], &bufs[2], &bufs[3]], &out, (c_in, c_out, h, w), flags);
        run(gpu, &[step], &out, c_out * h * w)
    }

    /// The matrix product `alpha * a b` (`b` is `k x n`, or `n x k` with `b_nk`), with the k
    /// range cut into `splits` slices and summed.
    pub fn matmul(
        gpu: &Gpu,
        a: &[f32],
        b: &[f32],
        (m, n, k): (usize, usize, usize),
        b_nk: bool,
        splits: usize,
        alpha: f32,
    ) -> Result<Vec<f32>> {
        let (ba, bb) = (gpu.upload("a", a), gpu.upload("b", b));
        let partial = gpu.buffer("partial", splits * m * n);
        let out = gpu.buffer("out", m * n);
        let steps = engine::product_steps(gpu, &ba, &bb, &partial, &out, (m, n, k), b_nk, splits, alpha, false);
        run(gpu, &steps, &out, m * n)
    }

    /// One elementwise entry point by name, on `x` and `y`, giving `out_len` values of `out`
    /// (which starts as `out_init`) and of `out2`.
    pub fn elementwise(
        gpu: &Gpu,
        entry: &str,
        x: &[f32],
        y: &[f32],
        out_init: &[f32],
        out2_len: usize,
        params: ([u32; 8], [f32; 8]),
        threads: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let k = &gpu.kernels;
        let kernel = match entry {
            "preprocess" => &k.preprocess,
            "preprocess_backward" => &k.preprocess_backward,
            "pool_forward" => &k.pool_forward,
            "pool_backward" => &k.pool_backward,
            "relu" => &k.relu,
            "relu_mask" => &k.relu_mask,
            "mask_planes" => &k.mask_planes,
            "content_grad" => &k.content_grad,
            "sum_splits" => &k.sum_splits,
            "total_variation" => &k.total_variation,
            "reduce" => &k.reduce,
            "crop" => &k.crop,
            "embed_add" => &k.embed_add,
            "row_affine" => &k.row_affine,
            "axpy" => &k.axpy,
            "fill" => &k.fill,
            _ => return Err(Error::Gpu(format!("no kernel {entry}"))),
        };
        let (bx, by, out) = (gpu.upload("x", x), gpu.upload("y", y), gpu.upload("out", out_init));
        let out2 = gpu.buffer("out2", out2_len);
        let per = if entry == "reduce" { 4096 } else { 256 };
        let (gx, gy) = spread(threads.div_ceil(per));
        let step = gpu.step(
            kernel,
            &ELEMENTWISE,
            &[Some(&bx), Some(&by), Some(&out), Some(&out2)],
            Params { u: params.0, f: params.1 },
            [gx, gy, 1],
        );
        let a = run(gpu, std::slice::from_ref(&step), &out, out_init.len())?;
        let b = run(gpu, &[], &out2, out2_len)?;
        Ok((a, b))
    }
}
