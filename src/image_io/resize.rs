//! Resampling planar `f32` images with a separable Lanczos-3 filter (widened by the scale when
//! shrinking, so that it also low-passes), rows and columns in parallel.
//!
//! Written here rather than borrowed from the `image` crate because that one clamps float pixels
//! to 0..1 and works on interleaved buffers: an image being optimised has values outside 0..255
//! (moved between the scales of a pyramid), and the copies to and from interleaved form cost
//! memory at print sizes.

use rayon::prelude::*;

use super::Image;

/// The Lanczos-3 kernel.
fn lanczos3(x: f64) -> f64 {
    let x = x.abs();
    if x < 1e-9 {
        1.0
    } else if x >= 3.0 {
        0.0
    } else {
        let px = std::f64::consts::PI * x;
        3.0 * px.sin() * (px / 3.0).sin() / (px * px)
    }
}

/// For each output position, the first input index and the normalised weights.
fn taps(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let ratio = n_in as f64 / n_out as f64;
    let scale = ratio.max(1.0);
    let support = 3.0 * scale;
    (0..n_out)
        .map(|o| {
            let centre = (o as f64 + 0.5) * ratio;
            let first = ((centre - support).floor().max(0.0)) as usize;
            let last = ((centre + support).ceil() as usize).min(n_in);
            let mut w: Vec<f64> = (first..last).map(|i| lanczos3((i as f64 + 0.5 - centre) / scale)).collect();
            let sum: f64 = w.iter().sum();
            if sum.abs() > 1e-12 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (first, w.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

/// `img` resampled to `width` x `height` (the same image if it already has that size). Values are
/// not clamped.
pub fn resize(img: &Image, width: usize, height: usize) -> Image {
    if img.width == width && img.height == height {
        return img.clone();
    }
    let (w, h) = (img.width, img.height);
    let across = taps(w, width);
    let down = taps(h, height);
    let mut data = vec![0.0f32; 3 * width * height];
    data.par_chunks_mut(width * height).enumerate().for_each(|(c, out)| {
        let plane = img.plane(c);
        // Rows first (h x width), then columns.
        let mut rows = vec![0.0f32; h * width];
        rows.par_chunks_mut(width).enumerate().for_each(|(y, row)| {
            let src = &plane[y * w..(y + 1) * w];
            for (o, (first, wts)) in row.iter_mut().zip(&across) {
                *o = wts.iter().zip(&src[*first..]).map(|(a, b)| a * b).sum();
            }
        });
        out.par_chunks_mut(width).enumerate().for_each(|(y, row)| {
            let (first, wts) = &down[y];
            for (k, wt) in wts.iter().enumerate() {
                let src = &rows[(first + k) * width..(first + k + 1) * width];
                row.iter_mut().zip(src).for_each(|(o, s)| *o += wt * s);
            }
        });
    });
    Image { width, height, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_identity_is_exact() {
        for (n_in, n_out) in [(10, 3), (3, 10), (7, 7), (1, 5), (5, 1), (1000, 17)] {
            for (_, w) in taps(n_in, n_out) {
                assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{n_in} -> {n_out}");
            }
        }
        // At the same size the kernel is a unit impulse at the pixel centres.
        let img = Image { width: 3, height: 2, data: (0..18).map(|v| v as f32 * 9.0 - 20.0).collect() };
        let same = taps(3, 3);
        assert!(same.iter().enumerate().all(|(o, (first, w))| w[o - first] == 1.0));
        assert_eq!(resize(&img, 3, 2), img);
    }

    #[test]
    fn a_linear_ramp_stays_linear_inside() {
        // Upsampling a ramp 2x: interior samples lie on the ramp, to the small ripple of a
        // windowed sinc (about 0.5% of a step here).
        let w = 40;
        let img = Image { width: w, height: 1, data: (0..3 * w).map(|i| (i % w) as f32 * 2.0).collect() };
        let up = resize(&img, 2 * w, 1);
        for o in 8..2 * w - 8 {
            let want = ((o as f32 + 0.5) / 2.0 - 0.5) * 2.0;
            assert!((up.data[o] - want).abs() < 0.1, "{o}: {} vs {want}", up.data[o]);
        }
    }
}
