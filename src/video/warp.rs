//! What the temporal method needs from two flows: a frame warped along a flow, the per-pixel
//! reliability of a backward flow (Ruder, Dosovitskiy and Brox, 2016: the forward-backward
//! check and motion boundaries), and the warping error that measures flicker (Lai et al., 2018).

use super::flow::{Flow, bilinear};
use crate::image_io::Image;

/// `image` seen from the other frame of `flow`: `out(x) = image(x + flow(x))`, bilinear, and
/// for each pixel whether `x + flow(x)` lies inside `image`.
///
/// # Panics
/// If the flow and the image differ in size.
pub fn warp(image: &Image, flow: &Flow) -> (Image, Vec<bool>) {
    let (w, h) = (image.width, image.height);
    assert_eq!((flow.width, flow.height), (w, h), "flow and image of one size");
    let mut data = vec![0.0f32; 3 * w * h];
    let mut inside = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (sx, sy) = (x as f32 + flow.u[i], y as f32 + flow.v[i]);
            inside[i] = sx >= 0.0 && sy >= 0.0 && sx <= (w - 1) as f32 && sy <= (h - 1) as f32;
            for c in 0..3 {
                data[c * w * h + i] = bilinear(image.plane(c), w, h, sx, sy);
            }
        }
    }
    (Image { width: w, height: h, data }, inside)
}

/// The reliability of the `backward` flow (from frame i to frame i-1) given the `forward` one
/// (i-1 to i), per pixel of frame i: 0 where the two disagree (`|w + ŵ|² ≥ 0.01 (|w|² + |ŵ|²)
/// + 0.5`, ŵ the forward flow at `x + w`: a disocclusion), at motion boundaries (`|∇u|² + |∇v|²
/// > 0.01 |w|² + 0.002`) and where `x + w` leaves the frame; 1 elsewhere.
///
/// # Panics
/// If the flows differ in size.
pub fn reliability(backward: &Flow, forward: &Flow) -> Vec<f32> {
    let (w, h) = (backward.width, backward.height);
    assert_eq!((forward.width, forward.height), (w, h), "flows of one size");
    let at = |f: &[f32], x: usize, y: usize| f[y * w + x];
    let mut weights = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (u, v) = (backward.u[i], backward.v[i]);
            let (sx, sy) = (x as f32 + u, y as f32 + v);
            if !(sx >= 0.0 && sy >= 0.0 && sx <= (w - 1) as f32 && sy <= (h - 1) as f32) {
                continue;
            }
            let (fu, fv) = forward.sample(sx, sy);
            let back_forth = (u + fu).powi(2) + (v + fv).powi(2);
            if back_forth >= 0.01 * (u * u + v * v + fu * fu + fv * fv) + 0.5 {
                continue;
            }
            // The backward flow's gradient by central differences (one-sided at the edges).
            let (x0, x1, y0, y1) = (x.saturating_sub(1), (x + 1).min(w - 1), y.saturating_sub(1), (y + 1).min(h - 1));
            let d = |f: &[f32]| {
                let dx = if x1 > x0 { (at(f, x1, y) - at(f, x0, y)) / (x1 - x0) as f32 } else { 0.0 };
                let dy = if y1 > y0 { (at(f, x, y1) - at(f, x, y0)) / (y1 - y0) as f32 } else { 0.0 };
                dx * dx + dy * dy
            };
            if d(&backward.u) + d(&backward.v) > 0.01 * (u * u + v * v) + 0.002 {
                continue;
            }
            weights[i] = 1.0;
        }
    }
    weights
}

/// The warping error between two consecutive output frames: the mean over the reliable pixels
/// (`weights`, per pixel) of the squared difference between `current` and `previous` warped by
/// `backward` (the input clip's flow from the current frame to the previous one), over the
/// three channels, on pixel values scaled to 0..1 (Lai et al. 2018's E_warp for one pair).
///
/// # Panics
/// If the sizes differ.
pub fn warping_error(current: &Image, previous: &Image, backward: &Flow, weights: &[f32]) -> f64 {
    let (warped, _) = warp(previous, backward);
    let n = current.width * current.height;
    assert_eq!(weights.len(), n, "one weight per pixel");
    let (mut sum, mut count) = (0.0f64, 0.0f64);
    for i in 0..n {
        if weights[i] > 0.0 {
            for c in 0..3 {
                let d = (current.data[c * n + i] - warped.data[c * n + i]) as f64 / 255.0;
                sum += weights[i] as f64 * d * d;
            }
            count += 3.0 * weights[i] as f64;
        }
    }
    if count > 0.0 { sum / count } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize) -> Image {
        Image { width: w, height: h, data: (0..3 * w * h).map(|i| ((i * 37) % 251) as f32).collect() }
    }

    #[test]
    fn warping_by_whole_pixels_moves_them_and_says_what_left_the_frame() {
        let (w, h) = (7, 5);
        let img = image(w, h);
        let flow = Flow::from_fn(w, h, |_, _| (2.0, -1.0));
        let (out, inside) = warp(&img, &flow);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let i = y * w + x;
                    let ok = x + 2 < w && y >= 1;
                    assert_eq!(inside[i], ok, "({x}, {y})");
                    if ok {
                        assert_eq!(out.data[c * w * h + i], img.data[c * w * h + (y - 1) * w + x + 2]);
                    }
                }
            }
        }
        // Half a pixel: the mean of the two neighbours.
        let (out, _) = warp(&img, &Flow::from_fn(w, h, |_, _| (0.5, 0.0)));
        assert!((out.data[8] - (img.data[8] + img.data[9]) / 2.0).abs() < 1e-4);
    }

    /// A square moving by d over a still background, with its exact flows: the pixels it uncovers
    /// and those at its edges are unreliable, the rest reliable.
    #[test]
    fn reliability_marks_disocclusions_motion_edges_and_the_frame_border() {
        let (w, h) = (30, 20);
        let (p, d, side) = ((8.0f32, 5.0f32), (4.0f32, 2.0f32), 8.0f32);
        let square = |x: f32, y: f32, at: (f32, f32)| x >= at.0 && x < at.0 + side && y >= at.1 && y < at.1 + side;
        let q = (p.0 + d.0, p.1 + d.1);
        // Frame i has the square at q, frame i-1 at p.
        let backward = Flow::from_fn(w, h, |x, y| if square(x, y, q) { (-d.0, -d.1) } else { (0.0, 0.0) });
        let forward = Flow::from_fn(w, h, |x, y| if square(x, y, p) { d } else { (0.0, 0.0) });
        let c = reliability(&backward, &forward);
        let at = |x: usize, y: usize| c[y * w + x];
        // Uncovered background: the square was there, and moved on.
        assert_eq!(at(8, 5), 0.0);
        // The square's middle, and background far from it.
        assert_eq!(at(15, 10), 1.0);
        assert_eq!(at(27, 17), 1.0);
        // The square's edge in frame i: the flow jumps there.
        assert_eq!(at(12, 10), 0.0);
        // A pan that leaves the frame on the right.
        let pan = Flow::from_fn(w, h, |_, _| (3.0, 0.0));
        let back = Flow::from_fn(w, h, |_, _| (-3.0, 0.0));
        let c = reliability(&pan, &back);
        assert_eq!(c[5 * w + w - 2], 0.0);
        assert_eq!(c[5 * w + 10], 1.0);
        let reliable = c.iter().filter(|&&v| v == 1.0).count();
        assert_eq!(reliable, (w - 3) * h);
    }

    #[test]
    fn the_warping_error_is_the_mean_squared_difference_on_reliable_pixels() {
        let (w, h) = (9, 6);
        let previous = image(w, h);
        let flow = Flow::from_fn(w, h, |_, _| (1.0, 0.0));
        let (mut current, inside) = warp(&previous, &flow);
        let weights: Vec<f32> = inside.iter().map(|&i| if i { 1.0 } else { 0.0 }).collect();
        assert_eq!(warping_error(&current, &previous, &flow, &weights), 0.0);
        // Every reliable value off by 25.5 (0.1 in 0..1): E_warp = 0.01; the others do not count.
        for c in 0..3 {
            for i in 0..w * h {
                current.data[c * w * h + i] += if inside[i] { 25.5 } else { 200.0 };
            }
        }
        let e = warping_error(&current, &previous, &flow, &weights);
        assert!((e - 0.01).abs() < 1e-6, "{e}");
    }
}
