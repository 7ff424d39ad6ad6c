//! The hot path: stride-1, pad-1 3x3 convolutions on one image, behind one small trait.
//!
//! Style transfer needs the forward pass (conv + bias + ReLU) and the gradient with respect to
//! the input. For a stride-1, pad-1 3x3 conv that gradient is itself such a conv of the output
//! gradient, with the weights flipped in space and transposed in channels
//! (`W'[i][o][y][x] = W[o][i][2-y][2-x]`, see [`flip_transpose`]), which is what
//! [`Conv3x3::conv_adjoint`] does unless a kernel has a better way ([`Winograd`] runs its own
//! algorithm backwards). A faster CPU kernel or a GPU backend replaces the [`default_kernel`]
//! by implementing [`Conv3x3`]; [`Reference`] is the plain loop the others are tested against.

mod im2col;
mod reference;
mod simd;
mod winograd;

use std::sync::{Arc, Mutex, OnceLock};

pub use im2col::Im2colGemm;
pub use reference::Reference;
pub(crate) use simd::simd_dispatch;
pub use winograd::Winograd;

/// Scratch space a kernel lends to one convolution at a time: a call takes a buffer (or a new,
/// empty one) and gives it back when done, so that runs in other threads on the same network
/// get their own instead of waiting for it.
pub(crate) struct ScratchPool<T>(Mutex<Vec<T>>);

impl<T: Default> ScratchPool<T> {
    pub(crate) fn new() -> Self {
        ScratchPool(Mutex::new(Vec::new()))
    }

    pub(crate) fn take(&self) -> T {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default()
    }

    pub(crate) fn give(&self, scratch: T) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(scratch);
    }
}

/// The default CPU kernel: Winograd F(4x4, 3x3) where it pays, im2col + gemm elsewhere.
pub fn default_kernel() -> Box<dyn Conv3x3> {
    Box::new(Winograd::new())
}

/// The shape of one 3x3 convolution: `c_in` x `height` x `width` in, `c_out` x `height` x `width` out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ConvShape {
    /// Multiply-adds times two.
    pub fn flops(&self) -> f64 {
        2.0 * 9.0 * (self.c_in * self.c_out * self.height * self.width) as f64
    }
}

/// One conv layer's weights, `[c_out][c_in][3][3]`, and the kernels' own transformed copies of
/// them (made on first use, kept for the next call: the weights are fixed during a run).
pub struct Filter {
    c_out: usize,
    c_in: usize,
    weight: Vec<f32>,
    flipped: OnceLock<Box<Filter>>,
    transformed: Mutex<Transforms>,
}

/// A filter's kernel-specific transforms, by name.
type Transforms = Vec<(&'static str, Arc<Vec<f32>>)>;

impl Filter {
    /// Panics if `weight` does not hold `c_out * c_in * 9` values.
    pub fn new(weight: Vec<f32>, c_out: usize, c_in: usize) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9, "filter weight length");
        Filter { c_out, c_in, weight, flipped: OnceLock::new(), transformed: Mutex::new(Vec::new()) }
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.c_out
    }

    /// Input channels.
    pub fn c_in(&self) -> usize {
        self.c_in
    }

    /// The weights, `[c_out][c_in][3][3]`.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// The filter of the input-gradient conv (see [`flip_transpose`]), made on first use.
    pub fn flipped(&self) -> &Filter {
        self.flipped.get_or_init(|| {
            Box::new(Filter::new(flip_transpose(&self.weight, self.c_out, self.c_in), self.c_in, self.c_out))
        })
    }

    /// The transform named `key` of these weights, computed by `make` the first time (`make` may
    /// itself ask for another transform).
    pub fn transformed(&self, key: &'static str, make: impl FnOnce(&Filter) -> Vec<f32>) -> Arc<Vec<f32>> {
        let cached = |cache: &Transforms| cache.iter().find(|(k, _)| *k == key).map(|t| t.1.clone());
        if let Some(t) = cached(&self.transformed.lock().unwrap_or_else(|e| e.into_inner())) {
            return t;
        }
        let t = Arc::new(make(self));
        let mut cache = self.transformed.lock().unwrap_or_else(|e| e.into_inner());
        // Another thread may have made it meanwhile: keep the first.
        if let Some(first) = cached(&cache) {
            return first;
        }
        cache.push((key, t.clone()));
        t
    }
}

impl Clone for Filter {
    fn clone(&self) -> Self {
        Filter::new(self.weight.clone(), self.c_out, self.c_in)
    }
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({} -> {})", self.c_in, self.c_out)
    }
}

/// A stride-1, zero-pad-1 3x3 convolution over contiguous planar (`[c][h][w]`) f32 buffers.
pub trait Conv3x3: Send + Sync {
    /// `out[o] = act(bias[o] + sum_i weight[o][i] * input[i])` where `*` is a 3x3 correlation,
    /// `act` is ReLU when `relu` is set and the identity otherwise, and a missing bias is zero.
    /// `input` has `c_in` planes, `out` `c_out` planes, as `shape` and `filter` say. Every
    /// element of `out` is written: what it held before does not matter.
    fn conv(&self, shape: ConvShape, input: &[f32], filter: &Filter, bias: Option<&[f32]>, relu: bool, out: &mut [f32]);

    /// The gradient with respect to the input of [`conv`](Conv3x3::conv) without bias (the
    /// adjoint, `Wᵀ`): `grad_out` has `shape.c_out` planes, `grad_in` `shape.c_in`. With
    /// `relu_out`, the conv's output after ReLU, the ReLU is included: `grad_out` counts only
    /// where `relu_out` is positive. Every element of `grad_in` is written. By default, the conv
    /// with the flipped, transposed filter.
    fn conv_adjoint(
        &self,
        shape: ConvShape,
        grad_out: &[f32],
        relu_out: Option<&[f32]>,
        filter: &Filter,
        grad_in: &mut [f32],
    ) {
        let back = ConvShape { c_in: shape.c_out, c_out: shape.c_in, ..shape };
        match relu_out {
            Some(out) => {
                let mut masked = grad_out.to_vec();
                crate::linalg::relu_mask(&mut masked, out);
                self.conv(back, &masked, filter.flipped(), None, false, grad_in);
            }
            None => self.conv(back, grad_out, filter.flipped(), None, false, grad_in),
        }
    }

    /// A short name for benchmarks.
    fn name(&self) -> &'static str;
}

/// The weights of the input-gradient conv: `W'[i][o][y][x] = W[o][i][2-y][2-x]`.
pub fn flip_transpose(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    let mut out = vec![0.0; weight.len()];
    for o in 0..c_out {
        for i in 0..c_in {
            for k in 0..9 {
                out[(i * c_out + o) * 9 + (8 - k)] = weight[(o * c_in + i) * 9 + k];
            }
        }
    }
    out
}

fn check(shape: ConvShape, input: &[f32], filter: &Filter, bias: Option<&[f32]>, out: &[f32]) {
    let hw = shape.height * shape.width;
    assert_eq!(input.len(), shape.c_in * hw, "conv input length");
    assert_eq!(out.len(), shape.c_out * hw, "conv output length");
    assert_eq!((filter.c_out, filter.c_in), (shape.c_out, shape.c_in), "conv filter shape");
    if let Some(b) = bias {
        assert_eq!(b.len(), shape.c_out, "conv bias length");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The largest error of `kernel` against [`Reference`] over `shape`, with and without bias
    /// and ReLU, relative to the largest reference output.
    fn worst_error(kernel: &dyn Conv3x3, shape: ConvShape, seed: u64) -> f64 {
        let ConvShape { c_in, c_out, height: h, width: w } = shape;
        let x = lcg(seed, c_in * h * w);
        let filter = Filter::new(lcg(seed + 1, c_out * c_in * 9), c_out, c_in);
        let b = lcg(seed + 2, c_out);
        let mut worst = 0.0f64;
        for relu in [false, true] {
            for bias in [None, Some(b.as_slice())] {
                let mut r = vec![0.0; c_out * h * w];
                let mut f = vec![f32::NAN; c_out * h * w];
                Reference.conv(shape, &x, &filter, bias, relu, &mut r);
                kernel.conv(shape, &x, &filter, bias, relu, &mut f);
                let scale = r.iter().fold(1e-6f32, |m, v| m.max(v.abs())) as f64;
                for (a, b) in r.iter().zip(&f) {
                    assert!(b.is_finite(), "{} {shape:?}: an output was not written", kernel.name());
                    worst = worst.max((a - b).abs() as f64 / scale);
                }
            }
        }
        worst
    }

    #[test]
    fn im2col_matches_reference_on_awkward_shapes() {
        for &(c_in, c_out, h, w) in
            &[(1, 1, 1, 1), (3, 5, 3, 5), (4, 2, 7, 9), (3, 64, 13, 6), (17, 3, 2, 11), (8, 8, 40, 1)]
        {
            let shape = ConvShape { c_in, c_out, height: h, width: w };
            let err = worst_error(&Im2colGemm::new(), shape, 1);
            assert!(err < 1e-5, "{shape:?}: relative error {err}");
        }
    }

    /// `(c_in, c_out, height, width)`: sizes that are and are not multiples of the 4x4 tile,
    /// smaller than one tile, one row or column; rows of exactly one, more than one and part of
    /// a group of 16 tiles (Winograd transforms 16 at once); odd channel counts, and counts on
    /// both sides of the im2col threshold, in either direction.
    const AWKWARD_SHAPES: &[(usize, usize, usize, usize)] = &[
        (16, 16, 1, 1),
        (16, 16, 6, 64),
        (16, 17, 9, 70),
        (24, 16, 5, 72),
        (17, 16, 5, 129),
        (16, 20, 3, 5),
        (24, 16, 7, 9),
        (16, 16, 4, 4),
        (32, 17, 8, 12),
        (17, 32, 8, 12),
        (20, 33, 13, 6),
        (33, 20, 13, 6),
        (16, 16, 40, 1),
        (16, 16, 1, 37),
        (64, 64, 23, 19),
        (3, 64, 7, 9),
        (64, 3, 9, 7),
    ];

    #[test]
    fn winograd_matches_reference_on_awkward_shapes() {
        for &(c_in, c_out, h, w) in AWKWARD_SHAPES {
            let shape = ConvShape { c_in, c_out, height: h, width: w };
            let err = worst_error(&Winograd::new().with_min_tiles(1), shape, 7);
            assert!(err < 1e-5, "{shape:?}: relative error {err}");
            let err = worst_error(&Winograd::new(), shape, 7);
            assert!(err < 1e-5, "{shape:?}: relative error {err}");
        }
    }

    /// The largest error of `kernel`'s input gradient (through a random ReLU mask, half zeros, if
    /// `relu_mask`) against the flipped-filter conv of [`Reference`], relative to the largest
    /// reference value.
    fn worst_adjoint_error(kernel: &dyn Conv3x3, shape: ConvShape, relu_mask: bool, seed: u64) -> f64 {
        let ConvShape { c_in, c_out, height: h, width: w } = shape;
        let g = lcg(seed, c_out * h * w);
        let filter = Filter::new(lcg(seed + 1, c_out * c_in * 9), c_out, c_in);
        let mut r = vec![0.0; c_in * h * w];
        let mut f = vec![f32::NAN; c_in * h * w];
        let mask = relu_mask.then(|| lcg(seed + 3, c_out * h * w));
        Reference.conv_adjoint(shape, &g, mask.as_deref(), &filter, &mut r);
        kernel.conv_adjoint(shape, &g, mask.as_deref(), &filter, &mut f);
        let scale = r.iter().fold(1e-6f32, |m, v| m.max(v.abs())) as f64;
        r.iter().zip(&f).fold(0.0, |worst, (a, b)| {
            assert!(b.is_finite(), "{} {shape:?}: a gradient was not written", kernel.name());
            worst.max((a - b).abs() as f64 / scale)
        })
    }

    #[test]
    fn winograd_input_gradient_matches_reference_on_awkward_shapes() {
        for &(c_in, c_out, h, w) in AWKWARD_SHAPES {
            let shape = ConvShape { c_in, c_out, height: h, width: w };
            for kernel in [
                &Winograd::new() as &dyn Conv3x3,
                &Winograd::new().with_min_tiles(1),
                &Winograd::with_band_floats(36 * 6 * 40).with_min_tiles(1),
                &Im2colGemm::new(),
            ] {
                for relu_mask in [false, true] {
                    let err = worst_adjoint_error(kernel, shape, relu_mask, 13);
                    assert!(err < 1e-5, "{} {shape:?} mask {relu_mask}: relative error {err}", kernel.name());
                }
            }
        }
    }

    #[test]
    fn winograd_error_stays_below_1e_4_on_a_vgg_sized_layer() {
        // 512 channels in: the sum over channels is where Winograd's rounding adds up.
        let shape = ConvShape { c_in: 512, c_out: 32, height: 14, width: 10 };
        let err = worst_error(&Winograd::new().with_min_tiles(1), shape, 11);
        assert!(err < 1e-4, "relative error {err}");
        let back = ConvShape { c_in: 32, c_out: 512, height: 14, width: 10 };
        let err = worst_adjoint_error(&Winograd::new().with_min_tiles(1), back, true, 12);
        assert!(err < 1e-4, "input gradient: relative error {err}");
    }

    #[test]
    fn winograd_bands_give_the_same_result_as_one_band() {
        let shape = ConvShape { c_in: 16, c_out: 24, height: 29, width: 22 };
        let x = lcg(4, 16 * 29 * 22);
        let filter = Filter::new(lcg(5, 24 * 16 * 9), 24, 16);
        let mut one = vec![0.0; 24 * 29 * 22];
        let mut banded = one.clone();
        Winograd::new().conv(shape, &x, &filter, None, false, &mut one);
        // Room for one row of tiles per band: 8 bands.
        Winograd::with_band_floats(36 * 6 * 40).with_min_tiles(1).conv(shape, &x, &filter, None, false, &mut banded);
        assert_eq!(one, banded);
    }

    #[test]
    fn im2col_tiles_rows_the_same_as_one_band() {
        let shape = ConvShape { c_in: 5, c_out: 7, height: 23, width: 19 };
        let x = lcg(4, 5 * 23 * 19);
        let filter = Filter::new(lcg(5, 7 * 5 * 9), 7, 5);
        let mut one = vec![0.0; 7 * 23 * 19];
        let mut tiled = one.clone();
        Im2colGemm::new().conv(shape, &x, &filter, None, false, &mut one);
        Im2colGemm::with_band_floats(5 * 9 * 19 * 2).conv(shape, &x, &filter, None, false, &mut tiled);
        assert_eq!(one, tiled);
    }

    #[test]
    fn a_filter_keeps_each_transform_once() {
        let filter = Filter::new(lcg(9, 2 * 9), 2, 1);
        let mut made = 0;
        let a = filter.transformed("t", |f| {
            made += 1;
            f.weight().to_vec()
        });
        let b = filter.transformed("t", |_| unreachable!("made twice"));
        assert_eq!((made, a.as_slice()), (1, b.as_slice()));
        assert_eq!(filter.transformed("u", |_| vec![1.0]).as_slice(), &[1.0]);
    }

    #[test]
    fn flipped_conv_is_the_adjoint() {
        // <conv(x, W), y> == <x, conv(y, flip_transpose(W))> for every x, y.
        let (c_in, c_out, h, w) = (3, 4, 5, 6);
        let x = lcg(6, c_in * h * w);
        let y = lcg(7, c_out * h * w);
        let filter = Filter::new(lcg(8, c_out * c_in * 9), c_out, c_in);
        let mut cx = vec![0.0; c_out * h * w];
        Reference.conv(ConvShape { c_in, c_out, height: h, width: w }, &x, &filter, None, false, &mut cx);
        let mut ty = vec![0.0; c_in * h * w];
        Reference.conv_adjoint(ConvShape { c_in, c_out, height: h, width: w }, &y, None, &filter, &mut ty);
        let lhs: f64 = cx.iter().zip(&y).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let rhs: f64 = x.iter().zip(&ty).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    }
}
