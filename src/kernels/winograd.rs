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
//! is needed): each 4x4 tile of the output gradient becomes `A Ȳ Aᵀ`, the products use `U[ξ]ᵀ`
//! (kept as a second, transposed copy: `gemm` runs the deep layers' products about twice as fast
//! when the summed-over channels are contiguous), and `B M̄ Bᵀ` gives 6x6 windows that are added
//! up where they overlap.
//!
//! The transforms work on 16 neighbouring tiles at once, one per vector lane ([`Lanes`]), and
//! are compiled for AVX-512 and AVX2 as well ([`simd_dispatch!`]). Tile `tx` reads image
//! columns `4tx-1 .. 4tx+5`, so a padded row is first split into its four phases (columns
//! `4i + p`): the six columns of 16 tiles are then six contiguous loads, at `i` in phases 0-3
//! and at `i + 1` in phases 0 and 1. Outputs are put back together the same way.
//!
//! The transforms' constants are the standard ones for the points 0, ±1, ±2 and ∞. A pass whose
//! input has few channels (conv1_1's forward pass, on the image's 3) or whose image has very few
//! tiles (the deepest layers of a small image) goes to [`Im2colGemm`], where Winograd would cost
//! more than it saves.

use gemm::Parallelism;
use rayon::prelude::*;

use super::simd::{LANES, Lanes, simd_dispatch};
use super::{Conv3x3, ConvShape, Filter, Im2colGemm, ScratchPool, check};
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
    scratch: ScratchPool<(Vec<f32>, Vec<f32>)>,
}

impl Default for Winograd {
    fn default() -> Self {
        Self::new()
    }
}

impl Winograd {
    /// With the default band of tiles per GEMM.
    pub fn new() -> Self {
        Self::with_band_floats(DEFAULT_BAND_FLOATS)
    }

    /// A kernel whose per-band buffers hold at most about `band_floats` floats (at least one row
    /// of tiles).
    pub fn with_band_floats(band_floats: usize) -> Self {
        Winograd { fallback: Im2colGemm::new(), band_floats, min_tiles: MIN_TILES, scratch: ScratchPool::new() }
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
fn bt_1d(d: [Lanes; 6]) -> [Lanes; 6] {
    let [d0, d1, d2, d3, d4, d5] = d;
    [
        d0 * 4.0 - d2 * 5.0 + d4,
        d3 + d4 - (d1 + d2) * 4.0,
        (d1 - d2) * 4.0 - d3 + d4,
        (d3 - d1) * 2.0 - d2 + d4,
        (d1 - d3) * 2.0 - d2 + d4,
        d1 * 4.0 - d3 * 5.0 + d5,
    ]
}

/// `Aᵀ m` for six values.
#[inline(always)]
fn at_1d(m: [Lanes; 6]) -> [Lanes; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [m0 + s12 + s34, d12 + d34 * 2.0, s12 + s34 * 4.0, d12 + d34 * 8.0 + m5]
}

/// `A y` for four values: the adjoint of [`at_1d`].
#[inline(always)]
fn a_1d(y: [Lanes; 4]) -> [Lanes; 6] {
    let [y0, y1, y2, y3] = y;
    let (e, o) = (y0 + y2 * 4.0, y1 + y3 * 4.0);
    let (e1, o1) = (y0 + y2, y1 + y3);
    [y0, e1 + o1, e1 - o1, e + o * 2.0, e - o * 2.0, y3]
}

/// `B m` for six values: the adjoint of [`bt_1d`].
#[inline(always)]
fn b_1d(m: [Lanes; 6]) -> [Lanes; 6] {
    let [m0, m1, m2, m3, m4, m5] = m;
    [
        m0 * 4.0,
        (m2 - m1 + m5) * 4.0 + (m4 - m3) * 2.0,
        m0 * -5.0 - (m1 + m2) * 4.0 - m3 - m4,
        m1 - m2 + (m3 - m4) * 2.0 - m5 * 5.0,
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

/// `U[ξ]ᵀ` for each of the 36 points of `u` (`[36][rows][cols]`).
fn transpose_points(u: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; u.len()];
    t.par_chunks_mut(rows * cols).zip(u.par_chunks(rows * cols)).for_each(|(t, u)| {
        for (r, row) in u.chunks_exact(cols).enumerate() {
            for (c, v) in row.iter().enumerate() {
                t[c * rows + r] = *v;
            }
        }
    });
    t
}

/// The tiles of one band: tile rows `ty0..ty0 + rows`, `tw` tiles per row. In the transformed
/// buffers each of the 36 points of one plane is a row of `stride` values, tile `t` at `t`;
/// `stride` leaves room past the last tile for a whole group of [`LANES`].
#[derive(Clone, Copy)]
struct Band {
    ty0: usize,
    rows: usize,
    tw: usize,
    stride: usize,
}

impl Band {
    fn tiles(&self) -> usize {
        self.rows * self.tw
    }
    /// Groups of [`LANES`] tiles per tile row (the last one partly past the row's end).
    fn groups(&self) -> usize {
        self.tw.div_ceil(LANES)
    }
    /// The row stride for `tiles` tiles.
    fn stride_for(tiles: usize) -> usize {
        (tiles + LANES).next_multiple_of(LANES)
    }
}

/// Splits `row` into its four phases: `phases[p * len + i] = row[4 i + p]`, `len` values each.
#[inline(always)]
fn deinterleave(row: &[f32], phases: &mut [f32], len: usize) {
    let (p0, rest) = phases[..4 * len].split_at_mut(len);
    let (p1, rest) = rest.split_at_mut(len);
    let (p2, p3) = rest.split_at_mut(len);
    for ((((q, a), b), c), d) in row[..4 * len].chunks_exact(4).zip(p0).zip(p1).zip(p2).zip(p3) {
        (*a, *b, *c, *d) = (q[0], q[1], q[2], q[3]);
    }
}

/// The inverse of [`deinterleave`]: `row[4 i + p] = phases[p * len + i]`.
#[inline(always)]
fn interleave(phases: &[f32], len: usize, row: &mut [f32]) {
    let (p0, rest) = phases[..4 * len].split_at(len);
    let (p1, rest) = rest.split_at(len);
    let (p2, p3) = rest.split_at(len);
    for ((((q, a), b), c), d) in row[..4 * len].chunks_exact_mut(4).zip(p0).zip(p1).zip(p2).zip(p3) {
        (q[0], q[1], q[2], q[3]) = (*a, *b, *c, *d);
    }
}

simd_dispatch! {
    /// `V = Bᵀ d B` for every tile of `band` in one input plane; `dst` is `[36][band.stride]`.
    fn input_transform(plane: &[f32], hw: (usize, usize), band: Band, dst: &mut [f32], sc: &mut Scratch) = input_transform_lanes
}

#[inline(always)]
fn input_transform_lanes(plane: &[f32], (h, w): (usize, usize), band: Band, dst: &mut [f32], sc: &mut Scratch) {
    // Tile tx's six columns are input columns 4tx-1..4tx+5, i.e. phases 0..4 of the padded row
    // (`pad[x + 1] = input[x]`) at tx and phases 0, 1 at tx + 1.
    let groups = band.groups();
    let len = groups * LANES + LANES; // per phase: every tile and one more
    sc.a.clear();
    sc.a.resize(4 * len, 0.0);
    sc.b.resize(2 * 24 * len, 0.0);
    let pad = &mut sc.a;
    let (phases, cols) = sc.b.split_at_mut(24 * len);
    for r in 0..band.rows {
        // The six input rows under this tile row, zero-padded, in phases: phases[j][p][tx].
        for j in 0..6 {
            let y = (TILE * (band.ty0 + r) + j) as isize - 1;
            let dst = &mut phases[j * 4 * len..(j + 1) * 4 * len];
            if y >= 0 && (y as usize) < h {
                let y = y as usize;
                pad[1..1 + w].copy_from_slice(&plane[y * w..(y + 1) * w]);
                deinterleave(pad, dst, len);
            } else {
                dst.fill(0.0);
            }
        }
        // Bᵀ down the columns, for every (phase, tile) at once: cols[k][p][tx].
        for i in (0..4 * len).step_by(LANES) {
            let d = |j: usize| Lanes::load(&phases[j * 4 * len + i..]);
            let d = bt_1d([d(0), d(1), d(2), d(3), d(4), d(5)]);
            for (k, v) in d.into_iter().enumerate() {
                v.store(&mut cols[k * 4 * len + i..]);
            }
        }
        // Then along each tile's row.
        for k in 0..6 {
            let p = &cols[k * 4 * len..(k + 1) * 4 * len];
            for g in 0..groups {
                let x0 = g * LANES;
                let at = |phase: usize, next: usize| Lanes::load(&p[phase * len + x0 + next..]);
                let v = bt_1d([at(0, 0), at(1, 0), at(2, 0), at(3, 0), at(0, 1), at(1, 1)]);
                for (l, v) in v.into_iter().enumerate() {
                    v.store(&mut dst[(k * 6 + l) * band.stride + r * band.tw + x0..]);
                }
            }
        }
    }
}

simd_dispatch! {
    /// `Y = Aᵀ M A` for every tile of `band` of one output channel, plus `bias`, through ReLU if
    /// `relu`, into `plane` (cropped at the image's edges). `m` is `[36][band.stride]`.
    fn output_transform(m: &[f32], hw: (usize, usize), band: Band, bias: f32, relu: bool, plane: &mut [f32], sc: &mut Scratch) = output_transform_lanes
}

#[inline(always)]
fn output_transform_lanes(
    m: &[f32],
    (h, w): (usize, usize),
    band: Band,
    bias: f32,
    relu: bool,
    plane: &mut [f32],
    sc: &mut Scratch,
) {
    let groups = band.groups();
    let len = groups * LANES;
    sc.a.resize(16 * len, 0.0);
    sc.b.resize(4 * len, 0.0);
    let (phases, row) = (&mut sc.a, &mut sc.b);
    for r in 0..band.rows {
        let t0 = r * band.tw;
        for g in 0..groups {
            let x0 = g * LANES;
            let mv = |k: usize, l: usize| Lanes::load(&m[(k * 6 + l) * band.stride + t0 + x0..]);
            // Aᵀ along k for each l, then along l.
            let mut cols = [[Lanes::ZERO; 4]; 6];
            for (l, col) in cols.iter_mut().enumerate() {
                *col = at_1d([mv(0, l), mv(1, l), mv(2, l), mv(3, l), mv(4, l), mv(5, l)]);
            }
            for a in 0..4 {
                let mut y = at_1d([cols[0][a], cols[1][a], cols[2][a], cols[3][a], cols[4][a], cols[5][a]]);
                for v in &mut y {
                    *v = v.map(|v| if relu { (v + bias).max(0.0) } else { v + bias });
                }
                // Output row a of the tiles, in phases: phases[a][b][tx].
                for (b, v) in y.into_iter().enumerate() {
                    v.store(&mut phases[(a * 4 + b) * len + x0..]);
                }
            }
        }
        for a in 0..4 {
            let y = TILE * (band.ty0 + r) + a;
            if y >= h {
                break;
            }
            interleave(&phases[a * 4 * len..(a + 1) * 4 * len], len, row);
            plane[y * w..(y + 1) * w].copy_from_slice(&row[..w]);
        }
    }
}

simd_dispatch! {
    /// The adjoint of [`output_transform`] (without bias; through the ReLU if `relu_out`, the
    /// plane's output, is given): `A Ȳ Aᵀ` for every 4x4 tile of `band` in one plane of the output
    /// gradient (zero past the image's edges); `dst` is `[36][band.stride]`.
    fn output_adjoint(plane: &[f32], relu_out: Option<&[f32]>, hw: (usize, usize), band: Band, dst: &mut [f32], sc: &mut Scratch) = output_adjoint_lanes
}

#[inline(always)]
fn output_adjoint_lanes(
    plane: &[f32],
    relu_out: Option<&[f32]>,
    (h, w): (usize, usize),
    band: Band,
    dst: &mut [f32],
    sc: &mut Scratch,
) {
    let groups = band.groups();
    let len = groups * LANES;
    sc.a.clear();
    sc.a.resize(4 * len, 0.0);
    sc.b.resize(16 * len, 0.0);
    let (pad, phases) = (&mut sc.a, &mut sc.b);
    for r in 0..band.rows {
        // The tile row's four rows of the gradient (zero past the edges) in phases[a][b][tx].
        for a in 0..4 {
            let y = TILE * (band.ty0 + r) + a;
            let dst = &mut phases[a * 4 * len..(a + 1) * 4 * len];
            if y < h {
                let src = &plane[y * w..(y + 1) * w];
                match relu_out {
                    Some(out) => {
                        let masked = pad[..w].iter_mut().zip(src).zip(&out[y * w..(y + 1) * w]);
                        masked.for_each(|((d, g), o)| *d = if *o > 0.0 { *g } else { 0.0 });
                    }
                    None => pad[..w].copy_from_slice(src),
                }
                deinterleave(pad, dst, len);
            } else {
                dst.fill(0.0);
            }
        }
        for g in 0..groups {
            let x0 = g * LANES;
            let yv = |a: usize, b: usize| Lanes::load(&phases[(a * 4 + b) * len + x0..]);
            // A along x for each row a, then along y.
            let mut rows = [[Lanes::ZERO; 6]; 4];
            for (a, row) in rows.iter_mut().enumerate() {
                *row = a_1d([yv(a, 0), yv(a, 1), yv(a, 2), yv(a, 3)]);
            }
            for l in 0..6 {
                let m = a_1d([rows[0][l], rows[1][l], rows[2][l], rows[3][l]]);
                for (k, v) in m.into_iter().enumerate() {
                    v.store(&mut dst[(k * 6 + l) * band.stride + r * band.tw + x0..]);
                }
            }
        }
    }
}

simd_dispatch! {
    /// The adjoint of [`input_transform`]: `B M̄ Bᵀ` for every tile of `band`, each a 6x6 window
    /// added into one plane of the input gradient where it lies inside the image. `m` is
    /// `[36][band.stride]`.
    fn input_adjoint(m: &[f32], hw: (usize, usize), band: Band, plane: &mut [f32], sc: &mut Scratch) = input_adjoint_lanes
}

#[inline(always)]
fn input_adjoint_lanes(m: &[f32], (h, w): (usize, usize), band: Band, plane: &mut [f32], sc: &mut Scratch) {
    let groups = band.groups();
    let len = groups * LANES + LANES; // per phase: every tile and one more
    sc.a.resize(4 * len, 0.0);
    sc.b.resize(24 * len, 0.0);
    let (row, sums) = (&mut sc.a, &mut sc.b);
    for r in 0..band.rows {
        // The tile row's 6x6 windows, overlapped, in phases of the padded columns:
        // sums[j][p][tx] belongs to input pixel (4ty-1+j, 4tx+p-1).
        sums.fill(0.0);
        for g in 0..groups {
            let x0 = g * LANES;
            let valid = LANES.min(band.tw - x0);
            let mv = |k: usize, l: usize| {
                let mut v = Lanes::load(&m[(k * 6 + l) * band.stride + r * band.tw + x0..]);
                v.0[valid..].fill(0.0); // lanes past the row's last tile hold no tile
                v
            };
            // B along k for each l, then along l.
            let mut cols = [[Lanes::ZERO; 6]; 6];
            for (l, col) in cols.iter_mut().enumerate() {
                *col = b_1d([mv(0, l), mv(1, l), mv(2, l), mv(3, l), mv(4, l), mv(5, l)]);
            }
            for j in 0..6 {
                let d = b_1d([cols[0][j], cols[1][j], cols[2][j], cols[3][j], cols[4][j], cols[5][j]]);
                let s = &mut sums[j * 4 * len..(j + 1) * 4 * len];
                for (p, v) in d[..4].iter().enumerate() {
                    v.add_to(&mut s[p * len + x0..]);
                }
                d[4].add_to(&mut s[x0 + 1..]);
                d[5].add_to(&mut s[len + x0 + 1..]);
            }
        }
        for j in 0..6 {
            let y = (TILE * (band.ty0 + r) + j) as isize - 1;
            if y < 0 || y as usize >= h {
                continue;
            }
            let y = y as usize;
            interleave(&sums[j * 4 * len..(j + 1) * 4 * len], len, row);
            for (g, s) in plane[y * w..(y + 1) * w].iter_mut().zip(&row[1..1 + w]) {
                *g += s;
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
    /// `transform_in` into `[36][tiles]` each, multiplied point by point by the filter `u`
    /// (`[36][n_out][n_in]`), and each of the `n_out` results goes to its plane of `out` through
    /// `transform_out`.
    #[allow(clippy::too_many_arguments)]
    fn bands(
        &self,
        (h, w): (usize, usize),
        (n_in, n_out): (usize, usize),
        input: &[f32],
        u: &[f32],
        out: &mut [f32],
        transform_in: impl Fn(usize, &[f32], Band, &mut [f32], &mut Scratch) + Sync,
        transform_out: impl Fn(usize, &[f32], Band, &mut [f32], &mut Scratch) + Sync,
    ) {
        let (th, tw) = (h.div_ceil(TILE), w.div_ceil(TILE));
        let band_rows = (self.band_floats / (POINTS * tw * (n_in + n_out))).clamp(1, th);
        let mut scratch = self.scratch.take();
        let (v_buf, m_buf) = &mut scratch;
        let most = POINTS * Band::stride_for(band_rows * tw);
        if v_buf.len() < most * n_in {
            v_buf.resize(most * n_in, 0.0);
        }
        if m_buf.len() < most * n_out {
            m_buf.resize(most * n_out, 0.0);
        }
        let mut ty0 = 0;
        while ty0 < th {
            let rows = band_rows.min(th - ty0);
            let band = Band { ty0, rows, tw, stride: Band::stride_for(rows * tw) };
            let (nt, stride) = (band.tiles(), band.stride);
            let v = &mut v_buf[..POINTS * stride * n_in];
            v.par_chunks_mut(POINTS * stride).enumerate().for_each_init(Scratch::default, |sc, (i, dst)| {
                transform_in(i, &input[i * h * w..(i + 1) * h * w], band, dst, sc)
            });
            let m = &mut m_buf[..POINTS * stride * n_out];
            let (m_ptr, v_ptr) = (SendPtr(m.as_mut_ptr()), SendPtr(v.as_mut_ptr()));
            let u_ptr = SendPtr(u.as_ptr() as *mut f32);
            (0..POINTS).into_par_iter().for_each(|xi| {
                // SAFETY: point ξ reads U[ξ] (n_in*n_out values at ξ*n_in*n_out) and V[.][ξ][..nt]
                // (rows at stride 36*stride, offset ξ*stride), and writes only M[.][ξ][..nt] (rows
                // at stride 36*stride, offset ξ*stride), so threads write disjoint elements; every
                // index is inside the buffers sized above (nt <= stride). U is only read.
                unsafe {
                    gemm::gemm(
                        n_out,
                        nt,
                        n_in,
                        m_ptr.at(xi * stride),
                        1,
                        (POINTS * stride) as isize,
                        false,
                        u_ptr.at(xi * n_out * n_in),
                        1,
                        n_in as isize,
                        v_ptr.at(xi * stride),
                        1,
                        (POINTS * stride) as isize,
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
                .zip(m.par_chunks(POINTS * stride))
                .enumerate()
                .for_each_init(Scratch::default, |sc, (o, (plane, mo))| transform_out(o, mo, band, plane, sc));
            ty0 += band.rows;
        }
        self.scratch.give(scratch);
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
            out,
            |_, plane, band, dst, sc| input_transform(plane, hw, band, dst, sc),
            |o, m, band, plane, sc| output_transform(m, hw, band, bias.map_or(0.0, |b| b[o]), relu, plane, sc),
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
        let u = filter.transformed("winograd-f4x4-adjoint", |f| {
            transpose_points(&f.transformed("winograd-f4x4", transform_filter), f.c_out(), f.c_in())
        });
        grad_in.par_iter_mut().for_each(|g| *g = 0.0);
        self.bands(
            hw,
            (s.c_out, s.c_in),
            grad_out,
            &u,
            grad_in,
            |o, plane, band, dst, sc| {
                let out = relu_out.map(|r| &r[o * plane_len..(o + 1) * plane_len]);
                output_adjoint(plane, out, hw, band, dst, sc)
            },
            |_, m, band, plane, sc| input_adjoint(m, hw, band, plane, sc),
        );
    }

    fn name(&self) -> &'static str {
        "winograd-f4x4+im2col"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy of each transform that runs here (AVX-512 or AVX2 where the CPU has them) gives
    /// exactly what its baseline build gives, so the copy other CPUs run is tested too.
    #[test]
    fn every_build_of_the_transforms_agrees() {
        let (h, w) = (9, 70); // 3 tile rows of 18 tiles: one whole and one partial group of 16
        let values = |seed: usize, n: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * 37 + seed * 11) % 101) as f32 / 7.0 - 7.0).collect()
        };
        let (plane, relu_out) = (values(1, h * w), values(2, h * w));
        let (th, tw) = (h.div_ceil(TILE), w.div_ceil(TILE));
        let band = Band { ty0: 0, rows: th, tw, stride: Band::stride_for(th * tw) };
        let points = POINTS * band.stride;
        let (mut v, mut v_plain) = (vec![0.0; points], vec![0.0; points]);
        input_transform(&plane, (h, w), band, &mut v, &mut Scratch::default());
        input_transform_lanes(&plane, (h, w), band, &mut v_plain, &mut Scratch::default());
        assert_eq!(v, v_plain, "input transform");

        let (mut y, mut y_plain) = (vec![0.0; h * w], vec![0.0; h * w]);
        output_transform(&v, (h, w), band, 0.5, true, &mut y, &mut Scratch::default());
        output_transform_lanes(&v, (h, w), band, 0.5, true, &mut y_plain, &mut Scratch::default());
        assert_eq!(y, y_plain, "output transform");

        let (mut m, mut m_plain) = (vec![0.0; points], vec![0.0; points]);
        output_adjoint(&plane, Some(&relu_out), (h, w), band, &mut m, &mut Scratch::default());
        output_adjoint_lanes(&plane, Some(&relu_out), (h, w), band, &mut m_plain, &mut Scratch::default());
        assert_eq!(m, m_plain, "output adjoint");

        let (mut g, mut g_plain) = (vec![0.0; h * w], vec![0.0; h * w]);
        input_adjoint(&m, (h, w), band, &mut g, &mut Scratch::default());
        input_adjoint_lanes(&m, (h, w), band, &mut g_plain, &mut Scratch::default());
        assert_eq!(g, g_plain, "input adjoint");
        assert!(g.iter().any(|v| *v != 0.0));
    }
}
