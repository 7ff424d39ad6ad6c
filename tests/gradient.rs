use impasto::image_io::Image;
use impasto::kernels::Reference;
use impasto::loss::{LossConfig, Objective};
use impasto::vgg::{LayerId, Pooling, Vgg};

use crate::util::*;

/// Loss terms over many layer kinds: a pre-ReLU content layer, a pooled style layer, TV.
fn config() -> LossConfig {
    LossConfig {
        content_layers: vec!["relu4_2".parse().unwrap(), "conv3_1".parse().unwrap()],
        style_layers: ["relu1_1", "relu2_1", "pool2", "relu3_1", "relu4_1", "relu5_1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
        tv_weight: 0.5,
        style_weight: 1e3,
        ..LossConfig::default()
    }
}

fn ramp(width: usize, height: usize) -> Image {
    let data = (0..3 * width * height).map(|i| 20.0 + (i % width) as f32).collect();
    Image { width, height, data }
}

fn dim(img: Image) -> Image {
    Image { data: img.data.iter().map(|v| 30.0 + 0.1 * v).collect(), ..img }
}

/// Central differences along random directions and on single pixels, in f64 loss arithmetic.
fn check_gradient(net: &Vgg, width: usize, height: usize, seed: u64) {
    let mut rng = Lcg(seed);
    let content = rng.image(width, height);
    // Style statistics far from the candidate's, so that the style loss is not the small
    // difference of two nearly equal Gram matrices (which f32 would drown in rounding).
    let styles = [ramp(width + 3, height - 1), dim(rng.image(width, height))];
    let cfg = LossConfig { style_blend: Some(vec![1.0, 3.0]), ..config() };
    let obj = Objective::new(net, &cfg, &content, &styles).unwrap();
    let x = rng.image(width, height);
    let (terms, grad) = obj.evaluate(&x, true).unwrap();
    let grad = grad.unwrap();
    assert!(terms.content > 0.0 && terms.style > 0.0 && terms.tv > 0.0, "{terms:?}");
    let loss = |img: &Image| obj.evaluate(img, false).unwrap().0.total;
    let shifted =
        |dir: &[f32], h: f32| Image { data: x.data.iter().zip(dir).map(|(a, d)| a + h * d).collect(), ..x.clone() };
    // Directions mostly along the gradient (so that the change in loss stands well above f32
    // rounding in a loss of ~1e9) plus random components; then the largest single pixels.
    let gmax = grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    for k in 0..3 {
        let noise = Lcg(seed * 10 + k).vec(x.data.len(), 0.5);
        let dir: Vec<f32> = grad.iter().zip(&noise).map(|(g, n)| g / gmax + n).collect();
        let h = 0.05;
        let fd = (loss(&shifted(&dir, h)) - loss(&shifted(&dir, -h))) / (2.0 * h as f64);
        let an: f64 = grad.iter().zip(&dir).map(|(g, d)| *g as f64 * *d as f64).sum();
        assert!((fd - an).abs() < 2e-3 * an.abs(), "direction {k}: finite difference {fd} vs gradient {an}");
    }
    let mut order: Vec<usize> = (0..grad.len()).collect();
    order.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
    for &i in &order[..4] {
        let mut e = vec![0.0; x.data.len()];
        e[i] = 1.0;
        let h = 0.1;
        let fd = (loss(&shifted(&e, h)) - loss(&shifted(&e, -h))) / (2.0 * h as f64);
        let an = grad[i] as f64;
        assert!((fd - an).abs() < 1e-2 * an.abs(), "pixel {i}: {fd} vs {an}");
    }
}

#[test]
fn gradient_matches_finite_differences_max_pool() {
    let net = Vgg::new(tiny_weights(1, [4, 6, 8, 8, 8]), Pooling::Max);
    check_gradient(&net, 21, 18, 3);
}

#[test]
fn gradient_matches_finite_differences_avg_pool() {
    let net = Vgg::new(tiny_weights(2, [5, 4, 6, 8, 6]), Pooling::Avg);
    check_gradient(&net, 16, 19, 4);
}

/// The default kernel and the reference loop give the same loss and gradient.
#[test]
fn kernels_agree_through_the_network() {
    let w = tiny_weights(5, [4, 6, 8, 8, 8]);
    let fast = Vgg::new(w.clone(), Pooling::Max);
    let slow = Vgg::with_kernel(w, Pooling::Max, Box::new(Reference));
    let mut rng = Lcg(9);
    let (content, style, x) = (rng.image(17, 23), rng.image(20, 20), rng.image(17, 23));
    let a =
        Objective::new(&fast, &config(), &content, std::slice::from_ref(&style)).unwrap().evaluate(&x, true).unwrap();
    let b = Objective::new(&slow, &config(), &content, &[style]).unwrap().evaluate(&x, true).unwrap();
    assert!((a.0.total - b.0.total).abs() < 1e-4 * b.0.total, "{:?} vs {:?}", a.0, b.0);
    let (ga, gb) = (a.1.unwrap(), b.1.unwrap());
    let err: f64 = ga.iter().zip(&gb).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = gb.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    assert!(err < 1e-4 * norm, "{err} vs {norm}");
}

/// Style blend weights: two identical style images with any blend give the one-style loss.
#[test]
fn blend_of_identical_styles_is_the_single_style() {
    let net = Vgg::new(tiny_weights(6, [4, 4, 4, 4, 4]), Pooling::Max);
    let mut rng = Lcg(11);
    let (content, style, x) = (rng.image(16, 16), rng.image(16, 16), rng.image(16, 16));
    let one =
        Objective::new(&net, &config(), &content, std::slice::from_ref(&style)).unwrap().evaluate(&x, false).unwrap().0;
    let cfg = LossConfig { style_blend: Some(vec![0.2, 5.0]), ..config() };
    let two = Objective::new(&net, &cfg, &content, &[style.clone(), style]).unwrap().evaluate(&x, false).unwrap().0;
    assert!((one.style - two.style).abs() < 1e-6 * one.style, "{one:?} {two:?}");
}

/// A network too shallow for the image: layer errors name the layer and the sizes.
#[test]
fn too_small_images_and_unknown_layers_are_errors() {
    let net = Vgg::new(tiny_weights(7, [4, 4, 4, 4, 4]), Pooling::Max);
    let img = Image::filled(8, 8, 100.0);
    let err = Objective::new(&net, &LossConfig::default(), &img, std::slice::from_ref(&img)).err().unwrap().to_string();
    assert!(err.contains("8x8") && err.contains("16x16"), "{err}");
    let cfg = LossConfig { content_layers: vec![LayerId::relu(6, 1)], ..LossConfig::default() };
    let err = Objective::new(&net, &cfg, &img, std::slice::from_ref(&img)).err().unwrap().to_string();
    assert!(err.contains("relu6_1") && err.contains("relu5_4"), "{err}");
}
