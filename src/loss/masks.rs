//! Masks: where a style applies in the output (region masks) and which part of a style image
//! gives it (source masks). A mask image becomes weights in 0..1 (its luminance) at the size of
//! the image it covers, then is averaged 2x2 down to each layer's resolution, as pooling halves
//! the layers (Gatys et al. 2017, guided Gram matrices).

use rayon::prelude::*;

use crate::image_io::{Image, resize};
use crate::linalg;
use crate::size::Size;

/// Checks that a mask has the aspect ratio (within 2%) of the `size` image it covers; the error
/// says how they differ.
pub fn check_mask_aspect(mask: &Image, size: Size) -> Result<(), String> {
    let (ma, ta) = (mask.width as f64 / mask.height as f64, size.aspect());
    if (ma / ta - 1.0).abs() > 0.02 {
        return Err(format!(
            "is {}x{} (aspect ratio {ma:.2}) but the image it covers is {size} (aspect ratio {ta:.2})",
            mask.width, mask.height
        ));
    }
    Ok(())
}

/// A mask image as weights in 0..1 (its luminance), resized to `size` (its aspect ratio
/// checked by [`super::check_styles`]).
pub fn mask_weights(mask: &Image, size: Size) -> Vec<f32> {
    let m = resize(mask, size.width, size.height);
    let n = size.pixels();
    (0..n)
        .map(|i| ((0.299 * m.data[i] + 0.587 * m.data[n + i] + 0.114 * m.data[2 * n + i]) / 255.0).clamp(0.0, 1.0))
        .collect()
}

/// `mask` (of `size`) averaged over 2x2 blocks `times` times (odd rows and columns dropped, as
/// pooling does).
pub fn downsample(mask: &[f32], size: Size, times: usize) -> Vec<f32> {
    let (mut width, mut height) = (size.width, size.height);
    let mut m = mask.to_vec();
    for _ in 0..times {
        let (w2, h2) = (width / 2, height / 2);
        let mut out = vec![0.0; w2 * h2];
        for y in 0..h2 {
            for x in 0..w2 {
                let i = 2 * y * width + 2 * x;
                out[y * w2 + x] = 0.25 * (m[i] + m[i + 1] + m[i + width] + m[i + width + 1]);
            }
        }
        (m, width, height) = (out, w2, h2);
    }
    m
}

/// `Σ m²`: a mask's weight (the Gram normalisation of the positions it covers).
pub fn weight(mask: &[f32]) -> f64 {
    mask.iter().map(|v| (*v as f64).powi(2)).sum()
}

/// `f` (`c x m`) with each column scaled by `mask`.
pub fn apply_mask(f: &[f32], mask: &[f32]) -> Vec<f32> {
    let mut out = linalg::copied(f);
    mask_in_place(&mut out, mask);
    out
}

/// Each plane of `f` times `mask`, in place.
pub fn mask_in_place(f: &mut [f32], mask: &[f32]) {
    f.par_chunks_mut(mask.len().max(1)).for_each(|r| r.iter_mut().zip(mask).for_each(|(v, k)| *v *= k));
}
