use impasto::image_io::Image;
use impasto::kernels::Reference;
use impasto::loss::{LossConfig, StyleInput, StyleLoss};
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

/// `x + h * dir`.
fn shifted(x: &Image, dir: &[f32], h: f32) -> Image {
    Image { data: x.data.iter().zip(dir).map(|(a, d)| a + h * d).collect(), ..x.clone() }
}

/// Central differences along directions mostly along the gradient (so that the change in
/// loss stands well above f32 rounding in a loss of ~1e9) plus random components.
fn check_directions(obj: &dyn impasto::engine::Evaluator, x: Image, tolerance: f64) {
    let (_, grad) = obj.evaluate(&x, true).unwrap();
    let grad = grad.unwrap();
    let loss = |img: &Image| obj.evaluate(img, false).unwrap().0.total;
    let gmax = grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    for k in 0..3 {
        let noise = Lcg(100 + k).vec(x.data.len(), 0.5);
        let dir: Vec<f32> = grad.iter().zip(&noise).map(|(g, n)| g / gmax + n).collect();
        let h = 0.05;
        let fd = (loss(&shifted(&x, &dir, h)) - loss(&shifted(&x, &dir, -h))) / (2.0 * h as f64);
        let an: f64 = grad.iter().zip(&dir).map(|(g, d)| *g as f64 * *d as f64).sum();
        assert!((fd - an).abs() < tolerance * an.abs(), "direction {k}: finite difference {fd} vs gradient {an}");
    }
}

/// Central differences along directions and on single pixels, in f64 loss arithmetic.
fn check_gradient(net: &Vgg, width: usize, height: usize, seed: u64) {
    let mut rng = Lcg(seed);
    let content = rng.image(width, height);
    // Style statistics far from the candidate's, so that the style loss is not the small
    // difference of two nearly equal Gram matrices (which f32 would drown in rounding).
    let styles =
        [StyleInput::new(ramp(width + 3, height - 1)), StyleInput::new(dim(rng.image(width, height))).blend(3.0)];
    let obj = impasto::engine::objective(net, &config(), &content, &styles, None).unwrap();
    let x = rng.image(width, height);
    let (terms, grad) = obj.evaluate(&x, true).unwrap();
    let grad = grad.unwrap();
    assert!(terms.content > 0.0 && terms.style > 0.0 && terms.tv > 0.0, "{terms:?}");
    let loss = |img: &Image| obj.evaluate(img, false).unwrap().0.total;
    check_directions(&*obj, x.clone(), 2e-3);
    let mut order: Vec<usize> = (0..grad.len()).collect();
    order.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
    for &i in &order[..4] {
        let mut e = vec![0.0; x.data.len()];
        e[i] = 1.0;
        let h = 0.1;
        let fd = (loss(&shifted(&x, &e, h)) - loss(&shifted(&x, &e, -h))) / (2.0 * h as f64);
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
    let a = impasto::engine::objective(&fast, &config(), &content, &[StyleInput::new(style.clone())], None)
        .unwrap()
        .evaluate(&x, true)
        .unwrap();
    let b = impasto::engine::objective(&slow, &config(), &content, &[StyleInput::new(style)], None)
        .unwrap()
        .evaluate(&x, true)
        .unwrap();
    assert!((a.0.total - b.0.total).abs() < 1e-4 * b.0.total, "{:?} vs {:?}", a.0, b.0);
    let (ga, gb) = (a.1.unwrap(), b.1.unwrap());
    let err: f64 = ga.iter().zip(&gb).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = gb.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    assert!(err < 1e-4 * norm, "{err} vs {norm}");
}

/// The network reuses its buffers from one evaluation to the next: evaluating an image again
/// after another one gives exactly the same loss and gradient.
#[test]
fn evaluations_do_not_depend_on_earlier_ones() {
    for pooling in [Pooling::Max, Pooling::Avg] {
        let net = Vgg::new(tiny_weights(6, [16, 16, 16, 16, 16]), pooling);
        let mut rng = Lcg(10);
        let (content, style, x, other) = (rng.image(37, 29), rng.image(30, 30), rng.image(37, 29), rng.image(37, 29));
        let obj = impasto::engine::objective(&net, &config(), &content, &[StyleInput::new(style)], None).unwrap();
        let (first, g1) = obj.evaluate(&x, true).unwrap();
        obj.evaluate(&other, true).unwrap();
        let (again, g2) = obj.evaluate(&x, true).unwrap();
        assert_eq!(first.total.to_bits(), again.total.to_bits(), "{first:?} vs {again:?}");
        assert!(g1.unwrap().iter().zip(&g2.unwrap()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

/// One network, two runs in two threads at once (different sizes, so each run's buffers differ):
/// the same losses and gradients, bit for bit, as the runs one after the other.
#[test]
fn two_threads_on_one_network_match_one_after_the_other() {
    let net = std::sync::Arc::new(Vgg::new(tiny_weights(6, [16, 16, 16, 16, 16]), Pooling::Max));
    let mut rng = Lcg(12);
    let jobs: Vec<(Image, Image, Vec<Image>)> = [(37, 29), (24, 40)]
        .iter()
        .map(|&(w, h)| (rng.image(w, h), rng.image(30, 30), (0..4).map(|_| rng.image(w, h)).collect()))
        .collect();
    let run = |net: &Vgg, (content, style, xs): &(Image, Image, Vec<Image>)| -> Vec<(u64, Vec<u32>)> {
        let obj = impasto::engine::objective(net, &config(), content, &[StyleInput::new(style.clone())], None).unwrap();
        xs.iter()
            .map(|x| {
                let (t, g) = obj.evaluate(x, true).unwrap();
                (t.total.to_bits(), g.unwrap().iter().map(|v| v.to_bits()).collect())
            })
            .collect()
    };
    let sequential: Vec<_> = jobs.iter().map(|j| run(&net, j)).collect();
    let concurrent: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|j| {
                let net = std::sync::Arc::clone(&net);
                scope.spawn(move || run(&net, j))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sequential, concurrent);
}

/// Style blend weights: two identical style images with any blend give the one-style loss.
#[test]
fn blend_of_identical_styles_is_the_single_style() {
    let net = Vgg::new(tiny_weights(6, [4, 4, 4, 4, 4]), Pooling::Max);
    let mut rng = Lcg(11);
    let (content, style, x) = (rng.image(16, 16), rng.image(16, 16), rng.image(16, 16));
    let one = impasto::engine::objective(&net, &config(), &content, &[StyleInput::new(style.clone())], None)
        .unwrap()
        .evaluate(&x, false)
        .unwrap()
        .0;
    let styles = [StyleInput::new(style.clone()).blend(0.2), StyleInput::new(style).blend(5.0)];
    let two =
        impasto::engine::objective(&net, &config(), &content, &styles, None).unwrap().evaluate(&x, false).unwrap().0;
    assert!((one.style - two.style).abs() < 1e-6 * one.style, "{one:?} {two:?}");
}

/// A network too shallow for the image: layer errors name the layer and the sizes.
#[test]
fn too_small_images_and_unknown_layers_are_errors() {
    let net = Vgg::new(tiny_weights(7, [4, 4, 4, 4, 4]), Pooling::Max);
    let img = Image::filled(8, 8, 100.0);
    let err = impasto::engine::objective(&net, &LossConfig::default(), &img, &[StyleInput::new(img.clone())], None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("8x8") && err.contains("16x16"), "{err}");
    let cfg = LossConfig { content_layers: vec![LayerId::relu(6, 1)], ..LossConfig::default() };
    let err =
        impasto::engine::objective(&net, &cfg, &img, &[StyleInput::new(img.clone())], None).err().unwrap().to_string();
    assert!(err.contains("relu6_1") && err.contains("relu5_4"), "{err}");
}

/// The W2 style loss's gradient (through the Newton-Schulz square roots) against finite
/// differences, with two blended styles.
#[test]
fn w2_gradient_matches_finite_differences() {
    let net = Vgg::new(tiny_weights(8, [4, 6, 8, 8, 8]), Pooling::Max);
    let mut rng = Lcg(12);
    let (width, height) = (20, 18);
    let content = rng.image(width, height);
    let styles =
        [StyleInput::new(ramp(width + 3, height - 1)), StyleInput::new(dim(rng.image(width, height))).blend(2.0)];
    let cfg = LossConfig {
        style_layers: ["relu1_1", "relu2_1", "relu3_1"].iter().map(|s| s.parse().unwrap()).collect(),
        style_loss: StyleLoss::W2,
        content_weight: 0.0,
        ..LossConfig::default()
    };
    let obj = impasto::engine::objective(&net, &cfg, &content, &styles, None).unwrap();
    check_directions(&*obj, rng.image(width, height), 5e-3);
}

/// Region and source masks: the masked Gram loss's gradient against finite differences.
#[test]
fn masked_gradient_matches_finite_differences() {
    let net = Vgg::new(tiny_weights(9, [4, 6, 8, 8, 8]), Pooling::Max);
    let mut rng = Lcg(13);
    let (width, height) = (24, 20);
    let content = rng.image(width, height);
    let half = |w: usize, h: usize, left: bool| Image {
        width: w,
        height: h,
        data: (0..3 * w * h).map(|i| if ((i % w) < w / 2) == left { 255.0 } else { 40.0 }).collect(),
    };
    let styles = [
        StyleInput::new(ramp(width, height)).region_mask(half(12, 10, true)),
        StyleInput::new(dim(rng.image(30, 25))).region_mask(half(12, 10, false)).source_mask(half(30, 25, true)),
    ];
    let obj = impasto::engine::objective(&net, &config(), &content, &styles, None).unwrap();
    check_directions(&*obj, rng.image(width, height), 2e-3);
}

/// A style whose region mask is all black changes nothing: same loss, same gradient as
/// without it.
#[test]
fn black_mask_style_has_no_effect() {
    let net = Vgg::new(tiny_weights(10, [4, 6, 8, 8, 8]), Pooling::Max);
    let mut rng = Lcg(14);
    let (content, a, b, x) = (rng.image(20, 20), rng.image(20, 20), rng.image(22, 18), rng.image(20, 20));
    let alone = impasto::engine::objective(&net, &config(), &content, &[StyleInput::new(a.clone())], None)
        .unwrap()
        .evaluate(&x, true)
        .unwrap();
    let black = Image::filled(5, 5, 0.0);
    let styles = [StyleInput::new(a), StyleInput::new(b).region_mask(black)];
    let both =
        impasto::engine::objective(&net, &config(), &content, &styles, None).unwrap().evaluate(&x, true).unwrap();
    assert!((alone.0.total - both.0.total).abs() < 1e-9 * alone.0.total, "{:?} vs {:?}", alone.0, both.0);
    assert_eq!(alone.1, both.1);
}

/// With --normalize-gradients a single term's gradient keeps its direction and has the size
/// its weight sets, whatever the loss's scale.
#[test]
fn normalized_gradients_keep_direction() {
    let net = Vgg::new(tiny_weights(11, [4, 6, 8, 8, 8]), Pooling::Max);
    let mut rng = Lcg(15);
    let (content, style, x) = (rng.image(20, 20), rng.image(20, 20), rng.image(20, 20));
    let base = LossConfig { style_weight: 0.0, ..LossConfig::default() };
    let g = |cfg: &LossConfig| {
        impasto::engine::objective(&net, cfg, &content, &[StyleInput::new(style.clone())], None)
            .unwrap()
            .evaluate(&x, true)
            .unwrap()
            .1
            .unwrap()
    };
    let plain = g(&base);
    let norm = g(&LossConfig { normalize_gradients: true, ..base.clone() });
    let norm3 = g(&LossConfig { normalize_gradients: true, content_weight: 3.0, ..base.clone() });
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
    let cos = dot(&plain, &norm) / (dot(&plain, &plain) * dot(&norm, &norm)).sqrt();
    assert!(cos > 0.99999, "{cos}");
    let ratio = (dot(&norm3, &norm3) / dot(&norm, &norm)).sqrt();
    assert!((ratio - 3.0).abs() < 1e-4, "{ratio}");
    assert!((dot(&plain, &plain).sqrt() / dot(&norm, &norm).sqrt() - 1.0).abs() > 0.1, "the scale changed");
}
