//! The objective: content, style and total-variation losses, their values and their gradient
//! with respect to the image's pixels.
//!
//! With `F` a layer's output as a `C x M` matrix (`M = H*W`), following Gatys' reference code:
//! - content: `content_weight * sum_l mean((F_l - P_l)^2)`, `P` the content image's features;
//! - style: `style_weight * sum_l w_l * sum_s b_s * mean((G_l - A_ls)^2)`, `G = F F^T / M`,
//!   `A_ls` the Gram matrix of style image `s`, `b_s` the normalised blend weights and
//!   `w_l = 1/C_l^2` by default;
//! - total variation: `tv_weight * (mean((x[i,j+1]-x[i,j])^2) + mean((x[i+1,j]-x[i,j])^2))` over
//!   the RGB pixels in 0..255.
//!
//! Targets (content features, style Gram matrices) are computed once, when the [`Objective`] is
//! built.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::image_io::Image;
use crate::vgg::{LayerId, Vgg};

/// What to optimise: layers and weights.
#[derive(Clone, Debug, PartialEq)]
pub struct LossConfig {
    pub content_layers: Vec<LayerId>,
    pub style_layers: Vec<LayerId>,
    /// One weight per style layer; `None` means `1/C_l^2`.
    pub style_layer_weights: Option<Vec<f64>>,
    /// One weight per style image, normalised to sum to 1; `None` means equal weights.
    pub style_blend: Option<Vec<f64>>,
    pub content_weight: f64,
    pub style_weight: f64,
    pub tv_weight: f64,
}

impl Default for LossConfig {
    /// Gatys' reference implementation: content relu4_2 with weight 1, style relu1_1..relu5_1
    /// with `1e3/C^2` each, no total variation.
    fn default() -> Self {
        LossConfig {
            content_layers: vec![LayerId::relu(4, 2)],
            style_layers: (1..=5).map(|b| LayerId::relu(b, 1)).collect(),
            style_layer_weights: None,
            style_blend: None,
            content_weight: 1.0,
            style_weight: 1e3,
            tv_weight: 0.0,
        }
    }
}

impl LossConfig {
    /// Checks weights (finite, not negative) and list lengths.
    pub fn validate(&self, n_styles: usize) -> Result<()> {
        let check = |name: &str, v: f64| {
            if !v.is_finite() || v < 0.0 {
                Err(Error::config(format!("{name} must be a finite number >= 0, got {v}")))
            } else {
                Ok(())
            }
        };
        check("--content-weight", self.content_weight)?;
        check("--style-weight", self.style_weight)?;
        check("--tv-weight", self.tv_weight)?;
        if let Some(w) = &self.style_layer_weights {
            if w.len() != self.style_layers.len() {
                return Err(Error::config(format!(
                    "--style-layer-weights has {} values but there are {} style layers",
                    w.len(),
                    self.style_layers.len()
                )));
            }
            w.iter().try_for_each(|&v| check("a style layer weight", v))?;
        }
        if let Some(b) = &self.style_blend {
            if b.len() != n_styles {
                return Err(Error::config(format!(
                    "--style-blend has {} values but there are {n_styles} style images",
                    b.len()
                )));
            }
            b.iter().try_for_each(|&v| check("a style blend weight", v))?;
            if b.iter().sum::<f64>() <= 0.0 {
                return Err(Error::config("--style-blend weights must not all be zero"));
            }
        }
        if self.content_layers.is_empty() && self.style_layers.is_empty() {
            return Err(Error::config("no content and no style layers: nothing to optimise"));
        }
        Ok(())
    }

    /// Every layer the objective reads.
    pub fn layers(&self) -> Vec<LayerId> {
        let mut l: Vec<LayerId> = self.content_layers.iter().chain(&self.style_layers).copied().collect();
        l.sort();
        l.dedup();
        l
    }
}

/// The loss and its parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LossTerms {
    pub total: f64,
    pub content: f64,
    pub style: f64,
    pub tv: f64,
}

/// `F F^T / m` for `f` a `c x m` matrix (row-major).
pub fn gram(f: &[f32], c: usize, m: usize) -> Vec<f32> {
    let mut g = vec![0.0; c * c];
    // SAFETY: g is c x c (row stride c); lhs is f as c x m (row stride m); rhs is f^T, m x c:
    // element (k, j) = f[j*m + k], so row stride 1 and column stride m. All inside their slices.
    unsafe {
        gemm::gemm(
            c,
            c,
            m,
            g.as_mut_ptr(),
            1,
            c as isize,
            false,
            f.as_ptr(),
            1,
            m as isize,
            f.as_ptr(),
            m as isize,
            1,
            0.0,
            1.0 / m as f32,
            false,
            false,
            false,
            parallelism(),
        );
    }
    g
}

/// `alpha * D F` for `d` a `c x c` and `f` a `c x m` matrix.
fn gram_backward(d: &[f32], f: &[f32], c: usize, m: usize, alpha: f32) -> Vec<f32> {
    let mut out = vec![0.0; c * m];
    // SAFETY: out is c x m (row stride m), d is c x c (row stride c), f is c x m (row stride m).
    unsafe {
        gemm::gemm(
            c,
            m,
            c,
            out.as_mut_ptr(),
            1,
            m as isize,
            false,
            d.as_ptr(),
            1,
            c as isize,
            f.as_ptr(),
            1,
            m as isize,
            0.0,
            alpha,
            false,
            false,
            false,
            parallelism(),
        );
    }
    out
}

fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `sum((a-b)^2)` in f64.
fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.par_iter().zip(b.par_iter()).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

/// Total variation of planar RGB pixels and its gradient (added into `grad`, times `weight`).
pub fn total_variation(img: &Image, weight: f64, grad: Option<&mut [f32]>) -> f64 {
    let (h, w) = (img.height, img.width);
    let nx = 3 * h * w.saturating_sub(1);
    let ny = 3 * h.saturating_sub(1) * w;
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

struct ContentTerm {
    layer: LayerId,
    target: Vec<f32>,
}

struct StyleTerm {
    layer: LayerId,
    weight: f64,
    channels: usize,
    /// One Gram matrix per style image.
    targets: Vec<Vec<f32>>,
    /// `sum_s b_s A_s`: the gradient only needs the blended target.
    blended: Vec<f32>,
}

/// The objective for one content image and its style images, at the content image's size.
pub struct Objective<'n> {
    net: &'n Vgg,
    width: usize,
    height: usize,
    config: LossConfig,
    blend: Vec<f64>,
    content: Vec<ContentTerm>,
    style: Vec<StyleTerm>,
    layers: Vec<LayerId>,
}

impl<'n> Objective<'n> {
    /// Computes the targets. The content image sets the size of every image evaluated; the style
    /// images are used at their own sizes.
    pub fn new(net: &'n Vgg, config: &LossConfig, content: &Image, styles: &[Image]) -> Result<Self> {
        config.validate(styles.len())?;
        net.check_layers(&config.layers())?;
        if styles.is_empty() && !config.style_layers.is_empty() && config.style_weight > 0.0 {
            return Err(Error::config("no style image given"));
        }
        let blend = match &config.style_blend {
            Some(b) => {
                let s: f64 = b.iter().sum();
                b.iter().map(|v| v / s).collect()
            }
            None => vec![1.0 / styles.len().max(1) as f64; styles.len()],
        };
        let cf = net.forward(&content.data, content.height, content.width, &config.content_layers)?;
        let mut content_terms = Vec::new();
        for &layer in &config.content_layers {
            content_terms.push(ContentTerm { layer, target: net.activation(&cf, layer)?.0.to_vec() });
        }
        drop(cf);
        let mut style_terms: Vec<StyleTerm> = Vec::new();
        for (s, img) in styles.iter().enumerate() {
            let sf = net.forward(&img.data, img.height, img.width, &config.style_layers)?;
            for (li, &layer) in config.style_layers.iter().enumerate() {
                let (f, (c, h, w)) = net.activation(&sf, layer)?;
                let g = gram(f, c, h * w);
                if s == 0 {
                    let weight = match &config.style_layer_weights {
                        Some(w) => w[li],
                        None => 1.0 / (c * c) as f64,
                    };
                    style_terms.push(StyleTerm {
                        layer,
                        weight,
                        channels: c,
                        targets: Vec::new(),
                        blended: vec![0.0; c * c],
                    });
                }
                let term = &mut style_terms[li];
                term.blended.iter_mut().zip(&g).for_each(|(b, v)| *b += blend[s] as f32 * v);
                term.targets.push(g);
            }
        }
        Ok(Objective {
            net,
            width: content.width,
            height: content.height,
            config: config.clone(),
            blend,
            content: content_terms,
            style: style_terms,
            layers: config.layers(),
        })
    }

    /// The size every evaluated image must have.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The loss of `img` and, if `with_grad`, its gradient with respect to the pixels.
    pub fn evaluate(&self, img: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)> {
        if (img.width, img.height) != (self.width, self.height) {
            return Err(Error::config(format!(
                "the image is {}x{} but the objective is for {}x{}",
                img.width, img.height, self.width, self.height
            )));
        }
        let cfg = &self.config;
        let fwd = self.net.forward(&img.data, img.height, img.width, &self.layers)?;
        let mut terms = LossTerms::default();
        let mut grads: Vec<(LayerId, Vec<f32>)> = Vec::new();
        for t in &self.content {
            let (f, _) = self.net.activation(&fwd, t.layer)?;
            let n = f.len() as f64;
            terms.content += cfg.content_weight * sq_dist(f, &t.target) / n;
            if with_grad {
                let k = (2.0 * cfg.content_weight / n) as f32;
                grads.push((t.layer, f.par_iter().zip(t.target.par_iter()).map(|(a, b)| k * (a - b)).collect()));
            }
        }
        for t in &self.style {
            let (f, (c, h, w)) = self.net.activation(&fwd, t.layer)?;
            let m = h * w;
            let g = gram(f, c, m);
            let cc = (c * c) as f64;
            let mut layer_loss = 0.0;
            for (s, a) in t.targets.iter().enumerate() {
                layer_loss += self.blend[s] * sq_dist(&g, a) / cc;
            }
            terms.style += cfg.style_weight * t.weight * layer_loss;
            if with_grad {
                // d/dF of w * mean((G - A)^2) = 4 w (G - A) F / (C^2 M), with A the blended target.
                let d: Vec<f32> = g.iter().zip(&t.blended).map(|(a, b)| a - b).collect();
                let alpha = (4.0 * cfg.style_weight * t.weight / (cc * m as f64)) as f32;
                debug_assert_eq!(t.channels, c);
                grads.push((t.layer, gram_backward(&d, f, c, m, alpha)));
            }
        }
        let mut grad = if with_grad { Some(self.net.backward(&fwd, &grads)?) } else { None };
        drop(fwd);
        if cfg.tv_weight > 0.0 {
            terms.tv = total_variation(img, cfg.tv_weight, grad.as_deref_mut());
        }
        terms.total = terms.content + terms.style + terms.tv;
        Ok((terms, grad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_matches_hand_computation() {
        // F = [[1, 2, 3], [4, 5, 6]] (C=2, M=3): F F^T = [[14, 32], [32, 77]], divided by 3.
        let g = gram(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let want = [14.0 / 3.0, 32.0 / 3.0, 32.0 / 3.0, 77.0 / 3.0];
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{g:?}");
        }
    }

    #[test]
    fn gram_backward_matches_direct_formula() {
        let (c, m) = (3, 5);
        let f: Vec<f32> = (0..c * m).map(|i| (i as f32 * 0.37).sin()).collect();
        let d: Vec<f32> = (0..c * c).map(|i| (i as f32 * 0.71).cos()).collect();
        let out = gram_backward(&d, &f, c, m, 0.5);
        for i in 0..c {
            for j in 0..m {
                let want: f32 = (0..c).map(|k| d[i * c + k] * f[k * m + j]).sum::<f32>() * 0.5;
                assert!((out[i * m + j] - want).abs() < 1e-5);
            }
        }
    }

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

    #[test]
    fn validate_rejects_bad_weights() {
        let mut c = LossConfig { style_weight: -1.0, ..LossConfig::default() };
        assert!(c.validate(1).unwrap_err().to_string().contains("--style-weight"));
        c.style_weight = f64::NAN;
        assert!(c.validate(1).is_err());
        let c = LossConfig { tv_weight: f64::INFINITY, ..LossConfig::default() };
        assert!(c.validate(1).is_err());
        let c = LossConfig { style_blend: Some(vec![1.0]), ..LossConfig::default() };
        assert!(c.validate(2).unwrap_err().to_string().contains("--style-blend"));
        let c = LossConfig { style_layer_weights: Some(vec![1.0; 2]), ..LossConfig::default() };
        assert!(c.validate(1).unwrap_err().to_string().contains("--style-layer-weights"));
    }
}
