//! 3x3 convolution as a matrix product: the input's 3x3 neighbourhoods are unrolled into a
//! `[c_in*9][band pixels]` matrix (im2col) and multiplied by the `[c_out][c_in*9]` weights on the
//! `gemm` crate, which picks AVX-512/AVX2/NEON kernels at run time. Bias and ReLU are fused into
//! one pass over the output.
//!
//! The unrolled matrix is built for a band of rows at a time, so its size stays bounded
//! (`band_floats`) at any image size, and its buffer is allocated once and reused.

use gemm::Parallelism;
use rayon::prelude::*;

use super::{Conv3x3, ConvShape, Filter, ScratchPool, check};

/// The default bound on the unrolled matrix: 8 Mi floats (32 MiB), enough for whole layers up
/// to 512 px deep in the network and a band of about 110 rows of conv1_2 at 512 px.
const DEFAULT_BAND_FLOATS: usize = 8 << 20;

/// im2col + gemm.
pub struct Im2colGemm {
    band_floats: usize,
    scratch: ScratchPool<Vec<f32>>,
}

impl Default for Im2colGemm {
    fn default() -> Self {
        Self::new()
    }
}

impl Im2colGemm {
    /// With the default band of columns per GEMM.
    pub fn new() -> Self {
        Self::with_band_floats(DEFAULT_BAND_FLOATS)
    }

    /// A kernel whose unrolled matrix holds at most `band_floats` floats (at least one row).
    pub fn with_band_floats(band_floats: usize) -> Self {
        Im2colGemm { band_floats, scratch: ScratchPool::new() }
    }
}

/// Fills `col` (`[c_in*9][rows*w]`) with the 3x3 neighbourhoods of output rows `y0..y0+rows`.
fn im2col(s: ConvShape, input: &[f32], y0: usize, rows: usize, col: &mut [f32]) {
    let (h, w) = (s.height, s.width);
    let n = rows * w;
    col.par_chunks_mut(n).enumerate().for_each(|(r, dst)| {
        let (i, ky, kx) = (r / 9, (r % 9) / 3, r % 3);
        let plane = &input[i * h * w..(i + 1) * h * w];
        for (dy, d) in dst.chunks_mut(w).enumerate() {
            let yy = (y0 + dy) as isize + ky as isize - 1;
            if yy < 0 || yy >= h as isize {
                d.fill(0.0);
                continue;
            }
            let src = &plane[yy as usize * w..(yy as usize + 1) * w];
            match kx {
                0 => {
                    d[0] = 0.0;
                    d[1..].copy_from_slice(&src[..w - 1]);
                }
                1 => d.copy_from_slice(src),
                _ => {
                    d[..w - 1].copy_from_slice(&src[1..]);
                    d[w - 1] = 0.0;
                }
            }
        }
    });
}

impl Conv3x3 for Im2colGemm {
    fn conv(&self, s: ConvShape, input: &[f32], filter: &Filter, bias: Option<&[f32]>, relu: bool, out: &mut [f32]) {
        check(s, input, filter, bias, out);
        let weight = filter.weight();
        let (h, w) = (s.height, s.width);
        let k = s.c_in * 9;
        let band_rows = (self.band_floats / (k * w)).clamp(1, h);
        let mut scratch = self.scratch.take();
        if scratch.len() < k * band_rows * w {
            scratch.resize(k * band_rows * w, 0.0);
        }
        let threads = rayon::current_num_threads();
        let mut y0 = 0;
        while y0 < h {
            let rows = band_rows.min(h - y0);
            let n = rows * w;
            let col = &mut scratch[..k * n];
            im2col(s, input, y0, rows, col);
            // SAFETY: dst is out[o][y0*w..y0*w+n] for o < c_out (row stride h*w), within `out`;
            // lhs is weight [c_out][k] and rhs is col [k][n], both fully inside their slices.
            unsafe {
                gemm::gemm(
                    s.c_out,
                    n,
                    k,
                    out.as_mut_ptr().add(y0 * w),
                    1,
                    (h * w) as isize,
                    false,
                    weight.as_ptr(),
                    1,
                    k as isize,
                    col.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None },
                );
            }
            y0 += rows;
        }
        self.scratch.give(scratch);
        if bias.is_some() || relu {
            out.par_chunks_mut(h * w).enumerate().for_each(|(o, plane)| {
                let b = bias.map_or(0.0, |b| b[o]);
                if relu {
                    plane.iter_mut().for_each(|v| *v = (*v + b).max(0.0));
                } else {
                    plane.iter_mut().for_each(|v| *v += b);
                }
            });
        }
    }

    fn name(&self) -> &'static str {
        "im2col-gemm"
    }
}
