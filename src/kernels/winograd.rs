//! Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray, 2016): each 4x4 block of output is
//! computed from the 6x6 block of input around it with 36 multiplications per (input, output)
//! channel pair, where the direct convolution needs 144.
//!
//! For one band of 4-row tiles at a time:
//! 1. input transform: every 6x6 input tile `d` of every channel becomes `V = Bᵀ d B`;
//! 2. 36 matrix products, one per transform-domain point ξ: `M[ξ] = U[ξ] V[ξ]`, with
//!    `U = G g Gᵀ` the transformed 3x3 filters (`[c_out][c_in]` per point, made once per filter
//!    and kept in the [`Filter`]) and `V[ξ]` `[c_in][tiles]`; they run on the `gemm` crate, split
//!    between the threads;
//! 3. output transform: `Y = Aᵀ M A` gives each 4x4 output tile; bias and ReLU are fused there.
//!
//! The input gradient is the same algorithm transposed (its exact adjoint, so no flipped filter
//! is needed): each 4x4 tile of the output gradient becomes `A Ȳ Aᵀ`, the products use `U[ξ]ᵀ`,
//! and `B M̄ Bᵀ` gives 6x6 windows that are added up where they overlap.
//!
//! The transforms' constants are the standard ones for the points 0, ±1, ±2 and ∞. A pass whose
//! input has few channels (conv1_1's forward pass, on the image's 3) or whose image has very few
//! tiles (the deepest layers of a small image) goes to [`Im2colGemm`], where Winograd would cost
//! more than it saves.

use std::sync::Mutex;

use gemm::Parallelism;
use rayon::prelude::*;

use super::{Conv3x3, ConvShape, Filter, Im2colGemm, check};
use crate::linalg::SendPtr;

/// Output tile side.
const TILE: usize = 4;
/// Transform-domain points per tile: (TILE + 2)².
const POINTS: usize = 36;
/// Passes with fewer input channels than this use im2col.
const MIN_CHANNELS: usize = 16;
/// Layers with fewer 4x4 tiles than this use im2col by default: each of the 36 products would
/// stream its transformed filter from memory for very few tiles.
const MIN_TILES: usize = 16;
/// The default bound on the transformed input and output of one band: 8 Mi floats (32 MiB).
const DEFAULT_BAND_FLOATS: usize = 8 << 20;

/// Winograd F(4x4, 3x3) with an im2col fallback for thin layers.
pub struct Winograd {
    fallback: Im2colGemm,
    band_floats: usize,
    min_tiles: usize,
    /// The transformed input `[c_in][36][tiles]` and the products `[c_out][36][tiles]` of a band.
    scratch: Mutex<(Vec<f32>, Vec<f32>)>,
}

impl Default for Winograd {
    fn default() -> Self {
        Self::new()
    }
}

impl Winograd {
    pub fn new() -> Self {
        Self::with_band_floats(DEFAULT_BAND_FLOATS)
    }

    /// A kernel whose per-band buffers hold at most about `band_floats` floats (at least one row
    /// of tiles).
    pub fn with_band_floats(band_floats: usize) -> Self {
        Winograd {
            fallback: Im2colGemm::new(),
            band_floats,
            min_tiles: MIN_TILES,
            scratch: Mutex::new((Vec::new(), Vec::new())),
        }
    }

    /// Runs every layer with at least `min_tiles` 4x4 tiles as Winograd (default 16); 1 makes
    /// even a 1x1 image Winograd (the tests use it).
    pub fn with_min_tiles(self, min_tiles: usize) -> Self {
        Winograd { min_tiles: min_tiles.max(1), ..self }
    }

    /// Whether a pass whose input has `channels` planes runs as Winograd (otherwise im2col):
    /// the forward pass of a conv with `c_in` channels in, the input gradient of one with `c_out`
    /// out, on an image of at least `min_tiles` tiles. (Measured: conv1_1's forward pass, 3
    /// channels in, is 3x faster as im2col, its input gradient, 64 channels in, 1.3x faster as
    /// Winograd; with im2col below 16 tiles a 128 px iteration is about 12% faster, since each
    /// of Winograd's 36 products streams its transformed filter for very few tiles.)
    pub fn uses_winograd(&self, channels: usize, shape: ConvShape) -> bool {
        channels >= MIN_CHANNELS && shape.height.div_ceil(TILE) * shape.width.div_ceil(TILE) >= self.min_tiles
    }
}

/// `G g` for one column (or row) of a 3x3 filter.
fn g_1d(g: [f64; 3]) -> [f64; 6] {
    let [g0, g1, g2] = g;
    [
        g0 / 4.0,
        -(g0 + g1 + g2) / 6.0,
        -(g0 - g1 + g2) / 6.0,
        g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
        g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
        g2,
    ]
}

/// `Bᵀ d` for six values.
#[inline(always)]
fn bt_1d(d: [f32; 6]) -> [f32; 6] {
    let [d0, d1, d2, d3, d4, d5] = d;
    [
        4.0 * d0 - 5.0 * d2 + d4,
        -4.0 * (d1 + d2) + d3 + d4,
        4.0 * (d1 - d2) - d3 + d4,
        2.0 * (d3 - d1) - d2 + d4,
        2.0 * (d1 - d3) - d2 + d4,
        4.0 * d1 - 5.0 * d3 + d5,
    ]
}

/// `Aᵀ m` for six values.
#[inline(always)]
fn at_1d(m: [f32; 6]) -> [f32; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [m0 + s12 + s34, d12 + 2.0 * d34, s12 + 4.0 * s34, d12 + 8.0 * d34 + m5]
}

/// `A y` for four values: the adjoint of [`at_1d`].
#[inline(always)]
fn a_1d(y: [f32; 4]) -> [f32; 6] {
    let [y0, y1, y2, y3] = y;
    let (e, o) = (y0 + 4.0 * y2, y1 + 4.0 * y3);
    let (e1, o1) = (y0 + y2, y1 + y3);
    [y0, e1 + o1, e1 - o1, e + 2.0 * o, e - 2.0 * o, y3]
}

/// `B m` for six values: the adjoint of [`bt_1d`].
#[inline(always)]
fn b_1d(m: [f32; 6]) -> [f32; 6] {
    let [m0, m1, m2, m3, m4, m5] = m;
    [
        4.0 * m0,
        4.0 * (m2 - m1 + m5) + 2.0 * (m4 - m3),
        -5.0 * m0 - 4.0 * (m1 + m2) - m3 - m4,
        m1 - m2 + 2.0 * (m3 - m4) - 5.0 * m5,
        m0 + m1 + m2 + m3 + m4,
        m5,
    ]
}

/// `U[ξ][o][i] = (G g Gᵀ)[ξ]` for every 3x3 filter `g = weight[o][i]`, computed in f64.
fn transform_filter(f: &Filter) -> Vec<f32> {
    let (n, c_in) = (f.c_out() * f.c_in(), f.c_in());
    let mut u = vec![0.0f32; POINTS * n];
    let u_ptr = SendPtr(u.as_mut_ptr());
    f.weight().par_chunks_exact(9 * c_in).enumerate().for_each(|(o, gs)| {
        for (i, g) in gs.chunks_exact(9).enumerate() {
            let g = |r: usize, c: usize| g[r * 3 + c] as f64;
            // Columns first (G g is 6x3), then rows ((G g) Gᵀ is 6x6).
            let cols = [0, 1, 2].map(|c| g_1d([g(0, c), g(1, c), g(2, c)]));
            for (k, ((a, b), c)) in cols[0].iter().zip(&cols[1]).zip(&cols[2]).enumerate() {
                let row = g_1d([*a, *b, *c]);
                for (l, v) in row.iter().enumerate() {
                    // SAFETY: (ξ, o, i) is inside U, and only this output channel's task writes
                    // the elements of output channel o.
                    unsafe { *u_ptr.at((k * 6 + l) * n + o * c_in + i) = *v as f32 };
                }
            }
        }
    });
    u
}

/// The tiles of one band: tile rows `ty0..ty0 + rows`, `tw` tiles per row.
#[derive(Clone, Copy)]
struct Band {
    ty0: usize,
    rows: usize,
    tw: usize,
}

impl Band {
    fn tiles(&self) -> usize {
        self.rows * self.tw
    }
}

/// `V = Bᵀ d B` for every tile of `band` in one input plane; `dst` is `[36][band tiles]`.
/// `strip` and `cols` are scratch space.
fn input_transform(
    plane: &[f32],
    (h, w): (usize, usize),
    band: Band,
    dst: &mut [f32],
    strip: &mut Vec<f32>,
    cols: &mut Vec<f32>,
) {
    let sw = TILE * band.tw + 2;
    strip.resize(6 * sw, 0.0);
    cols.resize(6 * sw, 0.0);
    let nt = band.tiles();
    for r in 0..band.rows {
        let ty = band.ty0 + r;
        // The six input rows under this tile row, zero-padded: strip[j][x] = input[4ty-1+j][x-1].
        for j in 0..6 {
            let row = &mut strip[j * sw..(j + 1) * sw];
            let y = (TILE * ty + j) as isize - 1;
            row.fill(0.0);
            if y >= 0 && (y as usize) < h {
                let y = y as usize;
                row[1..1 + w].copy_from_slice(&plane[y * w..(y + 1) * w]);
            }
        }
        // Bᵀ along the columns, for every x at once.
        for x in 0..sw {
            let d =
                [strip[x], strip[sw + x], strip[2 * sw + x], strip[3 * sw + x], strip[4 * sw + x], strip[5 * sw + x]];
            let t = bt_1d(d);
            for k in 0..6 {
                cols[k * sw + x] = t[k];
            }
        }
        // Then along the rows of each tile.
        for k in 0..6 {
            let src = &cols[k * sw..(k + 1) * sw];
            for tx in 0..band.tw {
                let s = &src[TILE * tx..TILE * tx + 6];
                let v = bt_1d([s[0], s[1], s[2], s[3], s[4], s[5]]);
                let t = r * band.tw + tx;
                for l in 0..6 {
                    dst[(k * 6 + l) * nt + t] = v[l];
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` for every tile of `band` of one output channel, plus `bias`, through ReLU if
/// `relu`, into `plane` (cropped at the image's edges). `m` is `[36][band tiles]`.
#[allow(clippy::too_many_arguments)]
fn output_transform(
    m: &[f32],
    (h, w): (usize, usize),
    band: Band,
    bias: f32,
    relu: bool,
    plane: &mut [f32],
    rows_a: &mut Vec<f32>,
) {
    let (nt, tw) = (band.tiles(), band.tw);
    rows_a.resize(4 * 6 * tw, 0.0);
    for r in 0..band.rows {
        let t0 = r * tw;
        // Aᵀ along k for every tile of the row: rows_a[a][l][tx].
        for l in 0..6 {
            for tx in 0..tw {
                let v = |k: usize| m[(k * 6 + l) * nt + t0 + tx];
                let y = at_1d([v(0), v(1), v(2), v(3), v(4), v(5)]);
                for a in 0..4 {
                    rows_a[(a * 6 + l) * tw + tx] = y[a];
                }
            }
        }
        // Then along l, and out.
        for a in 0..4 {
            let y = TILE * (band.ty0 + r) + a;
            if y >= h {
                break;
            }
            let out_row = &mut plane[y * w..(y + 1) * w];
            for tx in 0..tw {
                let v = |l: usize| rows_a[(a * 6 + l) * tw + tx];
                let ys = at_1d([v(0), v(1), v(2), v(3), v(4), v(5)]);
                for (b, val) in ys.iter().enumerate() {
                    let x = TILE * tx + b;
                    if x < w {
                        let v = val + bias;
                        out_row[x] = if relu { v.max(0.0) } else { v };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`output_transform`] (without bias; through the ReLU if `relu_out`, the
/// plane's output, is given): `A Ȳ Aᵀ` for every 4x4 tile of `band` in one plane of the output
/// gradient (zero past the image's edges); `dst` is `[36][band tiles]`.
fn output_adjoint(
    plane: &[f32],
    relu_out: Option<&[f32]>,
    (h, w): (usize, usize),
    band: Band,
    dst: &mut [f32],
    sc: &mut Scratch,
) {
    let (nt, tw) = (band.tiles(), band.tw);
    let sw = TILE * tw;
    sc.a.resize(4 * sw, 0.0);
    sc.b.resize(4 * 6 * tw, 0.0);
    let (strip, rows_a) = (&mut sc.a, &mut sc.b);
    for r in 0..band.rows {
        // The tile row's four rows of the gradient, zero past the edges.
        for a in 0..4 {
            let row = &mut strip[a * sw..(a + 1) * sw];
            let y = TILE * (band.ty0 + r) + a;
            if y < h {
                let src = &plane[y * w..(y + 1) * w];
                match relu_out {
                    Some(out) => {
                        let (dst, out) = (&mut row[..w], &out[y * w..(y + 1) * w]);
                        for x in 0..w {
                            dst[x] = if out[x] > 0.0 { src[x] } else { 0.0 };
                        }
                    }
                    None => row[..w].copy_from_slice(src),
                }
                row[w..].fill(0.0);
            } else {
                row.fill(0.0);
            }
        }
        // A along x: rows_a[a][l][tx].
        for a in 0..4 {
            for tx in 0..tw {
                let s = &strip[a * sw + TILE * tx..a * sw + TILE * tx + 4];
                let m = a_1d([s[0], s[1], s[2], s[3]]);
                for l in 0..6 {
                    rows_a[(a * 6 + l) * tw + tx] = m[l];
                }
            }
        }
        // Then along y.
        for l in 0..6 {
            for tx in 0..tw {
                let v = |a: usize| rows_a[(a * 6 + l) * tw + tx];
                let m = a_1d([v(0), v(1), v(2), v(3)]);
                for k in 0..6 {
                    dst[(k * 6 + l) * nt + r * tw + tx] = m[k];
                }
            }
        }
    }
}

/// The adjoint of [`input_transform`]: `B M̄ Bᵀ` for every tile of `band`, each a 6x6 window
/// added into one plane of the input gradient where it lies inside the image. `m` is
/// `[36][band tiles]`.
fn input_adjoint(
    m: &[f32],
    (h, w): (usize, usize),
    band: Band,
    plane: &mut [f32],
    strip: &mut Vec<f32>,
    rows_b: &mut Vec<f32>,
) {
    let (nt, tw) = (band.tiles(), band.tw);
    let sw = TILE * tw + 2;
    strip.resize(6 * sw, 0.0);
    rows_b.resize(6 * 6 * tw, 0.0);
    for r in 0..band.rows {
        // B along k: rows_b[j][l][tx].
        for l in 0..6 {
            for tx in 0..tw {
                let v = |k: usize| m[(k * 6 + l) * nt + r * tw + tx];
                let d = b_1d([v(0), v(1), v(2), v(3), v(4), v(5)]);
                for j in 0..6 {
                    rows_b[(j * 6 + l) * tw + tx] = d[j];
                }
            }
        }
        // Then along l, overlapping neighbouring tiles' windows in a strip of six rows.
        strip.fill(0.0);
        for j in 0..6 {
            let row = &mut strip[j * sw..(j + 1) * sw];
            for tx in 0..tw {
                let v = |l: usize| rows_b[(j * 6 + l) * tw + tx];
                let d = b_1d([v(0), v(1), v(2), v(3), v(4), v(5)]);
                for (x, dv) in row[TILE * tx..TILE * tx + 6].iter_mut().zip(d) {
                    *x += dv;
                }
            }
        }
        // strip[j][x] belongs to input pixel (4ty-1+j, x-1).
        for j in 0..6 {
            let y = (TILE * (band.ty0 + r) + j) as isize - 1;
            if y >= 0 && (y as usize) < h {
                let y = y as usize;
                for (g, s) in plane[y * w..(y + 1) * w].iter_mut().zip(&strip[j * sw + 1..j * sw + 1 + w]) {
                    *g += s;
                }
            }
        }
    }
}

/// Per-thread scratch space for the transforms.
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Winograd {
    /// The band loop shared by both directions: `n_in` planes of `input` are transformed by
    /// `transform_in` into `[36][tiles]` each, multiplied point by point by the filter (`U[ξ]` or,
    /// if `transposed`, `U[ξ]ᵀ`, `n_out` x `n_in`), and each of the `n_out` results goes to its
    /// plane of `out` through `transform_out`.
    #[allow(clippy::too_many_arguments)]
    fn bands(
        &self,
        (h, w): (usize, usize),
        (n_in, n_out): (usize, usize),
        input: &[f32],
        u: &[f32],
        transposed: bool,
        out: &mut [f32],
        transform_in: impl Fn(usize, &[f32], Band, &mut [f32], &mut Scratch) + Sync,
        transform_out: impl Fn(usize, &[f32], Band, &mut [f32], &mut Scratch) + Sync,
    ) {
        let (th, tw) = (h.div_ceil(TILE), w.div_ceil(TILE));
        let band_rows = (self.band_floats / (POINTS * tw * (n_in + n_out))).clamp(1, th);
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let (v_buf, m_buf) = &mut *scratch;
        let most = POINTS * band_rows * tw;
        if v_buf.len() < most * n_in {
            v_buf.resize(most * n_in, 0.0);
        }
        if m_buf.len() < most * n_out {
            m_buf.resize(most * n_out, 0.0);
        }
        // U[ξ] is [n_out][n_in] row-major, or [n_in][n_out] to be read transposed.
        let (u_cs, u_rs) = if transposed { (n_out, 1) } else { (1, n_in) };
        let mut ty0 = 0;
        while ty0 < th {
            let band = Band { ty0, rows: band_rows.min(th - ty0), tw };
            let nt = band.tiles();
            let v = &mut v_buf[..POINTS * nt * n_in];
            v.par_chunks_mut(POINTS * nt).enumerate().for_each_init(Scratch::default, |sc, (i, dst)| {
                transform_in(i, &input[i * h * w..(i + 1) * h * w], band, dst, sc)
            });
            let m = &mut m_buf[..POINTS * nt * n_out];
            let (m_ptr, v_ptr) = (SendPtr(m.as_mut_ptr()), SendPtr(v.as_mut_ptr()));
            let u_ptr = SendPtr(u.as_ptr() as *mut f32);
            (0..POINTS).into_par_iter().for_each(|xi| {
                // SAFETY: point ξ reads U[ξ] (n_in*n_out values at ξ*n_in*n_out) and V[.][ξ][.]
                // (rows at stride 36*nt, offset ξ*nt), and writes only M[.][ξ][.] (rows at stride
                // 36*nt, offset ξ*nt), so threads write disjoint elements; every index is inside
                // the buffers sized above. U is only read.
                unsafe {
                    gemm::gemm(
                        n_out,
                        nt,
                        n_in,
                        m_ptr.at(xi * nt),
                        1,
                        (POINTS * nt) as isize,
                        false,
                        u_ptr.at(xi * n_out * n_in),
                        u_cs as isize,
                        u_rs as isize,
                        v_ptr.at(xi * nt),
                        1,
                        (POINTS * nt) as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            });
            out.par_chunks_mut(h * w)
                .zip(m.par_chunks(POINTS * nt))
                .enumerate()
                .for_each_init(Scratch::default, |sc, (o, (plane, mo))| transform_out(o, mo, band, plane, sc));
            ty0 += band.rows;
        }
    }
}

impl Conv3x3 for Winograd {
    fn conv(&self, s: ConvShape, input: &[f32], filter: &Filter, bias: Option<&[f32]>, relu: bool, out: &mut [f32]) {
        if !self.uses_winograd(s.c_in, s) {
            return self.fallback.conv(s, input, filter, bias, relu, out);
        }
        check(s, input, filter, bias, out);
        let hw = (s.height, s.width);
        let u = filter.transformed("winograd-f4x4", transform_filter);
        self.bands(
            hw,
            (s.c_in, s.c_out),
            input,
            &u,
            false,
            out,
            |_, plane, band, dst, sc| input_transform(plane, hw, band, dst, &mut sc.a, &mut sc.b),
            |o, m, band, plane, sc| output_transform(m, hw, band, bias.map_or(0.0, |b| b[o]), relu, plane, &mut sc.a),
        );
    }

    fn conv_adjoint(
        &self,
        s: ConvShape,
        grad_out: &[f32],
        relu_out: Option<&[f32]>,
        filter: &Filter,
        grad_in: &mut [f32],
    ) {
        if !self.uses_winograd(s.c_out, s) {
            return self.fallback.conv_adjoint(s, grad_out, relu_out, filter, grad_in);
        }
        check(s, grad_in, filter, None, grad_out); // the forward conv's shapes, in and out swapped
        if let Some(out) = relu_out {
            assert_eq!(out.len(), grad_out.len(), "conv ReLU output length");
        }
        let plane_len = s.height * s.width;
        let hw = (s.height, s.width);
        let u = filter.transformed("winograd-f4x4", transform_filter);
        grad_in.par_iter_mut().for_each(|g| *g = 0.0);
        self.bands(
            hw,
            (s.c_out, s.c_in),
            grad_out,
            &u,
            true,
            grad_in,
            |o, plane, band, dst, sc| {
                let out = relu_out.map(|r| &r[o * plane_len..(o + 1) * plane_len]);
                output_adjoint(plane, out, hw, band, dst, sc)
            },
            |_, m, band, plane, sc| input_adjoint(m, hw, band, plane, &mut sc.a, &mut sc.b),
        );
    }

    fn name(&self) -> &'static str {
        "winograd-f4x4+im2col"
    }
}
