//! The total-variation term, a pixel term: `weight * (mean((x[i,j+1]-x[i,j])^2) +
//! mean((x[i+1,j]-x[i,j])^2))` over the RGB pixels in 0..255, and its gradient. It is computed
//! where the image is (on the host), whatever engine computes the network's terms.

use crate::image_io::Image;

/// The pairs of horizontal and of vertical neighbours in a `width` x `height` RGB image: the
/// means' denominators.
pub fn pairs(width: usize, height: usize) -> (usize, usize) {
    (3 * height * width.saturating_sub(1), 3 * height.saturating_sub(1) * width)
}

/// Total variation of planar RGB pixels and its gradient (added into `grad`, times `weight`).
pub fn total_variation(img: &Image, weight: f64, grad: Option<&mut [f32]>) -> f64 {
    let (h, w) = (img.height, img.width);
    let (nx, ny) = pairs(w, h);
    let mut sx = 0.0f64;
    let mut sy = 0.0f64;
    for c in 0..3 {
        let p = img.plane(c);
        for y in 0..h {
            for x in 0..w {
                let v = p[y * w + x];
                if x + 1 < w {
                    sx += ((p[y * w + x + 1] - v) as f64).powi(2);
                }
                if y + 1 < h {
                    sy += ((p[(y + 1) * w + x] - v) as f64).powi(2);
                }
            }
        }
    }
    if let Some(grad) = grad {
        let kx = if nx > 0 { 2.0 * weight / nx as f64 } else { 0.0 } as f32;
        let ky = if ny > 0 { 2.0 * weight / ny as f64 } else { 0.0 } as f32;
        for c in 0..3 {
            let p = img.plane(c);
            let g = &mut grad[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                for x in 0..w {
                    let v = p[y * w + x];
                    if x + 1 < w {
                        let d = p[y * w + x + 1] - v;
                        g[y * w + x + 1] += kx * d;
                        g[y * w + x] -= kx * d;
                    }
                    if y + 1 < h {
                        let d = p[(y + 1) * w + x] - v;
                        g[(y + 1) * w + x] += ky * d;
                        g[y * w + x] -= ky * d;
                    }
                }
            }
        }
    }
    let mx = if nx > 0 { sx / nx as f64 } else { 0.0 };
    let my = if ny > 0 { sy / ny as f64 } else { 0.0 };
    weight * (mx + my)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_variation_matches_formula_and_finite_differences() {
        let (w, h) = (4, 3);
        let data: Vec<f32> = (0..3 * w * h).map(|i| ((i * 37) % 11) as f32 * 10.0).collect();
        let img = Image { width: w, height: h, data };
        // Direct formula.
        let (mut sx, mut sy) = (0.0, 0.0);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let v = img.data[c * w * h + y * w + x] as f64;
                    if x + 1 < w {
                        sx += (img.data[c * w * h + y * w + x + 1] as f64 - v).powi(2);
                    }
                    if y + 1 < h {
                        sy += (img.data[c * w * h + (y + 1) * w + x] as f64 - v).powi(2);
                    }
                }
            }
        }
        let want = 2.0 * (sx / (3 * h * (w - 1)) as f64 + sy / (3 * (h - 1) * w) as f64);
        let mut grad = vec![0.0; img.data.len()];
        let tv = total_variation(&img, 2.0, Some(&mut grad));
        assert!((tv - want).abs() < 1e-9 * want, "{tv} vs {want}");
        for i in [0, 5, 17, 35] {
            let mut p = img.clone();
            p.data[i] += 0.5;
            let mut m = img.clone();
            m.data[i] -= 0.5;
            let fd = (total_variation(&p, 2.0, None) - total_variation(&m, 2.0, None)) / 1.0;
            assert!((fd - grad[i] as f64).abs() < 1e-4 * (1.0 + fd.abs()), "{i}: {fd} vs {}", grad[i]);
        }
    }
}
