//! The hot path: stride-1, pad-1 3x3 convolutions on one image, behind one small trait.
//!
//! Style transfer needs the forward pass (conv + bias + ReLU) and the gradient with respect to
//! the input. For a stride-1, pad-1 3x3 conv that gradient is itself such a conv of the output
//! gradient, with the weights flipped in space and transposed in channels
//! (`W'[i][o][y][x] = W[o][i][2-y][2-x]`, see [`flip_transpose`]), so one operation serves
//! both directions. A faster CPU kernel or a GPU backend replaces [`Im2colGemm`] by implementing
//! [`Conv3x3`]; [`Reference`] is the plain loop the others are tested against.

mod im2col;
mod reference;

pub use im2col::Im2colGemm;
pub use reference::Reference;

/// The shape of one 3x3 convolution: `c_in` x `height` x `width` in, `c_out` x `height` x `width` out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub c_in: usize,
    pub c_out: usize,
    pub height: usize,
    pub width: usize,
}

impl ConvShape {
    /// Multiply-adds times two.
    pub fn flops(&self) -> f64 {
        2.0 * 9.0 * (self.c_in * self.c_out * self.height * self.width) as f64
    }
}

/// A stride-1, zero-pad-1 3x3 convolution over contiguous planar (`[c][h][w]`) f32 buffers.
pub trait Conv3x3: Send + Sync {
    /// `out[o] = act(bias[o] + sum_i weight[o][i] * input[i])` where `*` is a 3x3 correlation,
    /// `act` is ReLU when `relu` is set and the identity otherwise, and a missing bias is zero.
    /// `weight` is `[c_out][c_in][3][3]`; `input` has `c_in` planes, `out` `c_out` planes.
    fn conv(&self, shape: ConvShape, input: &[f32], weight: &[f32], bias: Option<&[f32]>, relu: bool, out: &mut [f32]);

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

fn check(shape: ConvShape, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &[f32]) {
    let hw = shape.height * shape.width;
    assert_eq!(input.len(), shape.c_in * hw, "conv input length");
    assert_eq!(out.len(), shape.c_out * hw, "conv output length");
    assert_eq!(weight.len(), shape.c_out * shape.c_in * 9, "conv weight length");
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

    #[test]
    fn im2col_matches_reference_on_awkward_shapes() {
        for &(c_in, c_out, h, w) in
            &[(1, 1, 1, 1), (3, 5, 3, 5), (4, 2, 7, 9), (3, 64, 13, 6), (17, 3, 2, 11), (8, 8, 40, 1)]
        {
            let shape = ConvShape { c_in, c_out, height: h, width: w };
            let x = lcg(1, c_in * h * w);
            let wt = lcg(2, c_out * c_in * 9);
            let b = lcg(3, c_out);
            for relu in [false, true] {
                for bias in [None, Some(b.as_slice())] {
                    let mut r = vec![0.0; c_out * h * w];
                    let mut f = vec![1.0; c_out * h * w];
                    Reference.conv(shape, &x, &wt, bias, relu, &mut r);
                    Im2colGemm::new().conv(shape, &x, &wt, bias, relu, &mut f);
                    for (a, b) in r.iter().zip(&f) {
                        assert!((a - b).abs() < 1e-5 * (1.0 + a.abs()), "{shape:?}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn im2col_tiles_rows_the_same_as_one_band() {
        let shape = ConvShape { c_in: 5, c_out: 7, height: 23, width: 19 };
        let x = lcg(4, 5 * 23 * 19);
        let wt = lcg(5, 7 * 5 * 9);
        let mut one = vec![0.0; 7 * 23 * 19];
        let mut tiled = one.clone();
        Im2colGemm::new().conv(shape, &x, &wt, None, false, &mut one);
        Im2colGemm::with_band_floats(5 * 9 * 19 * 2).conv(shape, &x, &wt, None, false, &mut tiled);
        assert_eq!(one, tiled);
    }

    #[test]
    fn flipped_conv_is_the_adjoint() {
        // <conv(x, W), y> == <x, conv(y, flip_transpose(W))> for every x, y.
        let (c_in, c_out, h, w) = (3, 4, 5, 6);
        let x = lcg(6, c_in * h * w);
        let y = lcg(7, c_out * h * w);
        let wt = lcg(8, c_out * c_in * 9);
        let mut cx = vec![0.0; c_out * h * w];
        Reference.conv(ConvShape { c_in, c_out, height: h, width: w }, &x, &wt, None, false, &mut cx);
        let mut ty = vec![0.0; c_in * h * w];
        let wt2 = flip_transpose(&wt, c_out, c_in);
        Reference.conv(ConvShape { c_in: c_out, c_out: c_in, height: h, width: w }, &y, &wt2, None, false, &mut ty);
        let lhs: f64 = cx.iter().zip(&y).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let rhs: f64 = x.iter().zip(&ty).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    }
}
