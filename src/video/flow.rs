//! Dense optical flow between two frames by dense inverse search (Kroeger, Timofte, Dai and
//! Van Gool, 2016, "Fast Optical Flow using Dense Inverse Search"), written here from the paper.
//!
//! Coarse to fine over an image pyramid: at each level the frame is covered by overlapping
//! square patches; each patch's displacement is found by inverse-compositional Lucas-Kanade
//! (the template's gradient and Hessian computed once, Gauss-Newton steps on the mean-removed
//! patches, so a change of brightness does not move it), starting from the coarser level's
//! flow; the dense flow is the patches' displacements averaged at each pixel, weighted by how
//! well each one explains that pixel. The paper's variational refinement is replaced by a few
//! passes of an edge-keeping 3x3 smoothing (each neighbour's displacement weighted by how well
//! it explains the pixel).
//!
//! A flow `u` from frame `a` to frame `b` says where each pixel of `a` is in `b`:
//! `a(x) ≈ b(x + u(x))`.

use rayon::prelude::*;

use crate::image_io::Image;

/// A single-channel image (luma, 0..255).
#[derive(Clone, Debug, PartialEq)]
pub struct Gray {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height * width` values, row by row.
    pub data: Vec<f32>,
}

impl Gray {
    /// The luma (Rec. 601 weights) of a planar RGB image.
    pub fn from_image(img: &Image) -> Self {
        let n = img.width * img.height;
        let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
        let data = (0..n).map(|i| 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i]).collect();
        Gray { width: img.width, height: img.height, data }
    }

    fn pixel(&self, x: isize, y: isize) -> f32 {
        pixel(&self.data, self.width, self.height, x, y)
    }

    /// Bilinear interpolation at `(x, y)`, the edge pixels repeated outside the image.
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        bilinear(&self.data, self.width, self.height, x, y)
    }

    /// The image at half the size (rounded up), each pixel the mean of its 2x2 block.
    fn half(&self) -> Gray {
        let (w, h) = (self.width.div_ceil(2), self.height.div_ceil(2));
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = (2 * x as isize, 2 * y as isize);
                let sum =
                    self.pixel(sx, sy) + self.pixel(sx + 1, sy) + self.pixel(sx, sy + 1) + self.pixel(sx + 1, sy + 1);
                data.push(sum / 4.0);
            }
        }
        Gray { width: w, height: h, data }
    }

    /// The horizontal and vertical central differences.
    fn gradient(&self) -> (Vec<f32>, Vec<f32>) {
        let (w, h) = (self.width as isize, self.height as isize);
        let mut gx = Vec::with_capacity(self.data.len());
        let mut gy = Vec::with_capacity(self.data.len());
        for y in 0..h {
            for x in 0..w {
                gx.push((self.pixel(x + 1, y) - self.pixel(x - 1, y)) / 2.0);
                gy.push((self.pixel(x, y + 1) - self.pixel(x, y - 1)) / 2.0);
            }
        }
        (gx, gy)
    }
}

/// The value of a `width` x `height` plane at a pixel, coordinates clamped into it.
fn pixel(data: &[f32], width: usize, height: usize, x: isize, y: isize) -> f32 {
    let x = x.clamp(0, width as isize - 1) as usize;
    let y = y.clamp(0, height as isize - 1) as usize;
    data[y * width + x]
}

/// Bilinear interpolation of a plane at `(x, y)`, the edge repeated outside it.
pub(crate) fn bilinear(data: &[f32], width: usize, height: usize, x: f32, y: f32) -> f32 {
    // Far outside is the edge too (and keeps `x0 + 1` from overflowing).
    let (x, y) = (x.clamp(-1e7, 1e7), y.clamp(-1e7, 1e7));
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (x0, y0) = (x0 as isize, y0 as isize);
    let at = |x, y| pixel(data, width, height, x, y);
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
    let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// A dense displacement field: pixel `(x, y)` moves by `(u, v)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Horizontal displacements, row by row.
    pub u: Vec<f32>,
    /// Vertical displacements, row by row.
    pub v: Vec<f32>,
}

impl Flow {
    /// No motion anywhere.
    pub fn zero(width: usize, height: usize) -> Self {
        Flow { width, height, u: vec![0.0; width * height], v: vec![0.0; width * height] }
    }

    /// The field `f(x, y)` at every pixel.
    pub fn from_fn(width: usize, height: usize, f: impl Fn(f32, f32) -> (f32, f32)) -> Self {
        let mut flow = Flow::zero(width, height);
        for y in 0..height {
            for x in 0..width {
                let (u, v) = f(x as f32, y as f32);
                flow.u[y * width + x] = u;
                flow.v[y * width + x] = v;
            }
        }
        flow
    }

    /// The displacement at `(x, y)`, bilinear, the edge repeated outside.
    pub fn sample(&self, x: f32, y: f32) -> (f32, f32) {
        (bilinear(&self.u, self.width, self.height, x, y), bilinear(&self.v, self.width, self.height, x, y))
    }

    /// The mean end-point error against `truth` over the pixels where `mask` is true (all when
    /// `None`).
    pub fn end_point_error(&self, truth: &Flow, mask: Option<&[bool]>) -> f64 {
        let (mut sum, mut n) = (0.0f64, 0usize);
        for i in 0..self.u.len() {
            if mask.is_none_or(|m| m[i]) {
                let (du, dv) = ((self.u[i] - truth.u[i]) as f64, (self.v[i] - truth.v[i]) as f64);
                sum += (du * du + dv * dv).sqrt();
                n += 1;
            }
        }
        if n == 0 { 0.0 } else { sum / n as f64 }
    }

    /// The field resampled to `width` x `height`, its displacements scaled with the size.
    fn resized(&self, width: usize, height: usize) -> Flow {
        let (sx, sy) = (self.width as f32 / width as f32, self.height as f32 / height as f32);
        Flow::from_fn(width, height, |x, y| {
            let (u, v) = self.sample((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5);
            (u / sx, v / sy)
        })
    }
}

/// The search's settings (the defaults are near OpenCV's DIS "medium" preset, at every scale
/// down to full resolution).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowSettings {
    /// Side of the square patches.
    pub patch: usize,
    /// Distance between neighbouring patches (smaller than `patch`: they overlap).
    pub stride: usize,
    /// Gauss-Newton steps per patch at most.
    pub iterations: usize,
    /// The coarsest level's shorter side is at least this many pixels.
    pub coarsest_side: usize,
    /// Passes of the edge-keeping smoothing after each level's densification.
    pub smoothing: usize,
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings { patch: 8, stride: 3, iterations: 16, coarsest_side: 8, smoothing: 2 }
    }
}

/// The flow from `from` to `to` (frames of the same size): `from(x) ≈ to(x + flow(x))`.
///
/// # Panics
/// If the frames differ in size.
pub fn dense_flow(from: &Gray, to: &Gray, settings: &FlowSettings) -> Flow {
    assert_eq!((from.width, from.height), (to.width, to.height), "frames of one size");
    if from.width == 0 || from.height == 0 {
        return Flow::zero(from.width, from.height);
    }
    let mut pyramid = vec![(from.clone(), to.clone())];
    loop {
        let (a, b) = pyramid.last().unwrap();
        if a.width.min(a.height) / 2 < settings.coarsest_side.max(settings.patch) || pyramid.len() >= 8 {
            break;
        }
        let next = (a.half(), b.half());
        pyramid.push(next);
    }
    let mut flow: Option<Flow> = None;
    for (a, b) in pyramid.iter().rev() {
        let start = match &flow {
            Some(f) => f.resized(a.width, a.height),
            None => Flow::zero(a.width, a.height),
        };
        let patches = search_patches(a, b, &start, settings);
        let mut level = densify(a, b, &patches, &start, settings.patch);
        for _ in 0..settings.smoothing {
            level = smooth(a, b, &level);
        }
        flow = Some(level);
    }
    flow.unwrap()
}

/// One patch's corner and the displacement found for it.
struct Patch {
    x: usize,
    y: usize,
    u: f32,
    v: f32,
}

/// The patches' corners along a side of `n` pixels: every `stride`, the last one flush with
/// the edge.
fn corners(n: usize, side: usize, stride: usize) -> Vec<usize> {
    let last = n - side;
    let mut c: Vec<usize> = (0..=last).step_by(stride.max(1)).collect();
    if c.last() != Some(&last) {
        c.push(last);
    }
    c
}

/// Inverse search for every patch of `a` in `b`, starting from `start`.
fn search_patches(a: &Gray, b: &Gray, start: &Flow, settings: &FlowSettings) -> Vec<Patch> {
    let side = settings.patch.min(a.width).min(a.height);
    let (gx, gy) = a.gradient();
    let xs = corners(a.width, side, settings.stride);
    let ys = corners(a.height, side, settings.stride);
    let limit = a.width.max(a.height) as f32;
    ys.par_iter()
        .flat_map_iter(|&py| {
            let (gx, gy, xs) = (&gx, &gy, &xs);
            xs.iter().map(move |&px| {
                let centre = (py + side / 2) * a.width + px + side / 2;
                let (mut u, mut v) = (start.u[centre], start.v[centre]);
                // The template: mean-removed values and their gradient.
                let n = side * side;
                let mut t = Vec::with_capacity(n);
                let (mut hxx, mut hxy, mut hyy) = (0.0f64, 0.0f64, 0.0f64);
                for y in py..py + side {
                    for x in px..px + side {
                        let i = y * a.width + x;
                        t.push(a.data[i]);
                        let (dx, dy) = (gx[i] as f64, gy[i] as f64);
                        hxx += dx * dx;
                        hxy += dx * dy;
                        hyy += dy * dy;
                    }
                }
                let mean = t.iter().sum::<f32>() / n as f32;
                t.iter_mut().for_each(|v| *v -= mean);
                // A little damping keeps flat patches (a singular Hessian) where they start.
                let damping = 1e-2 * n as f64;
                let (hxx, hyy) = (hxx + damping, hyy + damping);
                let det = hxx * hyy - hxy * hxy;
                let residual = |u: f32, v: f32, r: &mut Vec<f32>| -> f64 {
                    r.clear();
                    for y in py..py + side {
                        for x in px..px + side {
                            r.push(b.sample(x as f32 + u, y as f32 + v));
                        }
                    }
                    let mean = r.iter().sum::<f32>() / n as f32;
                    let mut err = 0.0f64;
                    for (r, &t) in r.iter_mut().zip(&t) {
                        *r -= mean + t;
                        err += (*r as f64).powi(2);
                    }
                    err
                };
                let mut r = Vec::with_capacity(n);
                let first = residual(u, v, &mut r);
                let (mut best, mut best_uv) = (first, (u, v));
                for _ in 0..settings.iterations {
                    let (mut bx, mut by) = (0.0f64, 0.0f64);
                    let mut k = 0;
                    for y in py..py + side {
                        for x in px..px + side {
                            let i = y * a.width + x;
                            bx += gx[i] as f64 * r[k] as f64;
                            by += gy[i] as f64 * r[k] as f64;
                            k += 1;
                        }
                    }
                    let du = (hyy * bx - hxy * by) / det;
                    let dv = (hxx * by - hxy * bx) / det;
                    u = (u - du as f32).clamp(-limit, limit);
                    v = (v - dv as f32).clamp(-limit, limit);
                    let err = residual(u, v, &mut r);
                    if err < best {
                        (best, best_uv) = (err, (u, v));
                    }
                    if du * du + dv * dv < 1e-4 {
                        break;
                    }
                }
                Patch { x: px, y: py, u: best_uv.0, v: best_uv.1 }
            })
        })
        .collect()
}

/// The dense flow: at each pixel the patches covering it, each weighted by the inverse of how
/// far its displacement misses that pixel's value (at least 1). A pixel no patch covers keeps
/// `start`.
fn densify(a: &Gray, b: &Gray, patches: &[Patch], start: &Flow, patch: usize) -> Flow {
    let side = patch.min(a.width).min(a.height);
    let n = a.width * a.height;
    let (mut su, mut sv, mut sw) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    for p in patches {
        for y in p.y..p.y + side {
            for x in p.x..p.x + side {
                let i = y * a.width + x;
                let miss = (b.sample(x as f32 + p.u, y as f32 + p.v) - a.data[i]).abs();
                let w = 1.0 / miss.max(1.0);
                su[i] += w * p.u;
                sv[i] += w * p.v;
                sw[i] += w;
            }
        }
    }
    let mut flow = start.clone();
    for i in 0..n {
        if sw[i] > 0.0 {
            flow.u[i] = su[i] / sw[i];
            flow.v[i] = sv[i] / sw[i];
        }
    }
    flow
}

/// One pass of smoothing: each pixel's displacement becomes the mean of its 3x3 neighbours',
/// each weighted by how well it explains this pixel's value (so motion edges stay sharp).
fn smooth(a: &Gray, b: &Gray, flow: &Flow) -> Flow {
    let (w, h) = (a.width, a.height);
    let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..h)
        .into_par_iter()
        .map(|y| {
            let mut us = Vec::with_capacity(w);
            let mut vs = Vec::with_capacity(w);
            for x in 0..w {
                let (mut su, mut sv, mut sw) = (0.0f32, 0.0f32, 0.0f32);
                let value = a.data[y * w + x];
                for ny in y.saturating_sub(1)..(y + 2).min(h) {
                    for nx in x.saturating_sub(1)..(x + 2).min(w) {
                        let j = ny * w + nx;
                        let (u, v) = (flow.u[j], flow.v[j]);
                        let miss = (b.sample(x as f32 + u, y as f32 + v) - value).abs();
                        let wt = 1.0 / miss.max(1.0).powi(2);
                        su += wt * u;
                        sv += wt * v;
                        sw += wt;
                    }
                }
                us.push(su / sw);
                vs.push(sv / sw);
            }
            (us, vs)
        })
        .collect();
    let mut out = Flow::zero(w, h);
    for (y, (us, vs)) in rows.into_iter().enumerate() {
        out.u[y * w..(y + 1) * w].copy_from_slice(&us);
        out.v[y * w..(y + 1) * w].copy_from_slice(&vs);
    }
    out
}

#[cfg(test)]
mod tests;
