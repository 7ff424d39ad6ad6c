//! Tiled evaluation against the whole image: the same loss terms and pixel gradient to 1e-5,
//! for tiles that do not divide the image, both poolings, region and source masks, W2 and
//! normalised gradients, on random networks and the real VGG19.

use impasto::image_io::Image;
use impasto::loss::{LossConfig, LossTerms, Objective, StyleInput, StyleLoss};
use impasto::vgg::{Pooling, Vgg};

use crate::util::*;

fn layers(names: &[&str]) -> Vec<impasto::vgg::LayerId> {
    names.iter().map(|s| s.parse().unwrap()).collect()
}

/// Content at a pre-ReLU and a deep layer, style down to relu5_1 with a pooling layer among
/// them, total variation.
fn config() -> LossConfig {
    LossConfig {
        content_layers: layers(&["relu4_2", "conv3_1"]),
        style_layers: layers(&["relu1_1", "relu2_1", "pool2", "relu3_1", "relu4_1", "relu5_1"]),
        tv_weight: 0.5,
        ..LossConfig::default()
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

/// Evaluates `x` whole and in tiles of `tile`; asserts the terms agree to 1e-5 relative and the
/// gradients to 1e-5 of the gradient's norm (and each pixel to 1e-4 of the largest), and that
/// the tiling really cut the image.
fn check(net: &Vgg, config: &LossConfig, content: &Image, styles: &[StyleInput], x: &Image, tile: usize) {
    check_within(net, config, content, styles, x, tile, 1e-5);
}

fn check_within(
    net: &Vgg,
    config: &LossConfig,
    content: &Image,
    styles: &[StyleInput],
    x: &Image,
    tile: usize,
    tolerance: f64,
) {
    let whole = Objective::new(net, config, content, styles).unwrap();
    let tiled = Objective::tiled(net, config, content, styles, Some(tile)).unwrap();
    let tiles = tiled.grid().tiles.len();
    assert!(tiles > 1 && whole.grid().tiles.len() == 1, "{tiles} tiles");
    let (a, ga) = whole.evaluate(x, true).unwrap();
    let (b, gb) = tiled.evaluate(x, true).unwrap();
    let parts = |t: LossTerms| [t.total, t.content, t.style, t.tv];
    for (name, (u, v)) in ["total", "content", "style", "tv"].iter().zip(parts(a).into_iter().zip(parts(b))) {
        assert!(rel(v, u) < tolerance || u == v, "{name}: untiled {u} tiled {v} ({tiles} tiles of {tile})");
    }
    assert!(a.style > 0.0, "{a:?}");
    let (ga, gb) = (ga.unwrap(), gb.unwrap());
    let norm = ga.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    let diff = ga.iter().zip(&gb).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>().sqrt();
    eprintln!("{tiles} tiles: terms {a:?} vs {b:?}, gradient difference {:.2e} of its norm", diff / norm);
    assert!(diff < tolerance * norm, "gradient: |difference| {diff} vs |gradient| {norm} ({tiles} tiles of {tile})");
    let largest = ga.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = ga.iter().zip(&gb).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    assert!(worst as f64 <= 10.0 * tolerance * largest as f64, "worst pixel {worst} vs largest {largest}");
    // The value-only evaluation agrees too.
    assert_eq!(tiled.evaluate(x, false).unwrap().0.total, b.total);
}

fn net(seed: u64, pooling: Pooling) -> Vgg {
    Vgg::new(tiny_weights(seed, [4, 6, 8, 8, 8]), pooling)
}

#[test]
fn tiles_that_do_not_divide_the_image_give_the_untiled_objective() {
    for (pooling, (w, h), tile) in [(Pooling::Max, (211, 97), 64), (Pooling::Avg, (150, 161), 80), (Pooling::Max, (67, 130), 64)] {
        let net = net(21, pooling);
        let mut rng = Lcg(5);
        let content = rng.image(w, h);
        let styles = [StyleInput::new(rng.image(w + 31, h - 9)), StyleInput::new(rng.image(90, 70)).blend(3.0)];
        check(&net, &config(), &content, &styles, &rng.image(w, h), tile);
    }
}

#[test]
fn tiled_region_and_source_masks_give_the_untiled_objective() {
    let net = net(22, Pooling::Max);
    let mut rng = Lcg(6);
    let (w, h) = (180, 143);
    let half = |w: usize, h: usize, left: bool| Image {
        width: w,
        height: h,
        data: (0..3 * w * h).map(|i| if ((i % w) < w / 3) == left { 255.0 } else { 40.0 }).collect(),
    };
    let styles = [
        StyleInput::new(rng.image(150, 120)).region_mask(half(90, 71, true)),
        StyleInput::new(rng.image(170, 200)).region_mask(half(90, 71, false)).source_mask(half(170, 200, true)),
    ];
    check(&net, &config(), &rng.image(w, h), &styles, &rng.image(w, h), 64);
}

#[test]
fn tiled_w2_and_normalised_gradients_give_the_untiled_objective() {
    let net = net(23, Pooling::Avg);
    let mut rng = Lcg(7);
    let (w, h) = (160, 120);
    let w2 = LossConfig { style_loss: StyleLoss::W2, ..config() };
    let styles = [StyleInput::new(rng.image(140, 150)), StyleInput::new(rng.image(160, 120)).blend(0.5)];
    // W2's matrix square roots (Newton-Schulz in f32) amplify rounding: the untiled loss on the
    // Winograd and the reference kernels (both exact) differ by 7e-5 here. Tiled is held to that.
    check_within(&net, &w2, &rng.image(w, h), &styles, &rng.image(w, h), 64, 2e-4);
    let normalised = LossConfig { normalize_gradients: true, ..config() };
    check(&net, &normalised, &rng.image(w, h), &styles[..1], &rng.image(w, h), 96);
}

/// The real VGG19 with the default layers, both poolings, on the fixture pair.
#[test]
fn tiled_vgg19_gives_the_untiled_objective() {
    let mut net = Vgg::new(impasto::weights::load(&real_weights_path(), None).unwrap(), Pooling::Max);
    let content = impasto::image_io::resize(&fixture_image("content.png"), 203, 151);
    let style = fixture_image("style.png");
    let x = impasto::image_io::resize(&fixture_image("candidate.png"), 203, 151);
    for pooling in [Pooling::Max, Pooling::Avg] {
        net.set_pooling(pooling);
        check(&net, &LossConfig::default(), &content, &[StyleInput::new(style.clone())], &x, 64);
    }
}

