//! Tiled evaluation against the whole image: the same loss terms and pixel gradient to 1e-5,
//! for tiles that do not divide the image, both poolings, region and source masks, W2 and
//! normalised gradients, on random networks and the real VGG19.

use impasto::image_io::Image;
use impasto::loss::{LossConfig, LossTerms, StyleInput, StyleLoss};
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
    let whole = impasto::engine::objective(net, config, content, styles, None).unwrap();
    let tiled = impasto::engine::objective(net, config, content, styles, Some(tile)).unwrap();
    let tiles = tiled.tiles();
    assert!(tiles > 1 && whole.tiles() == 1, "{tiles} tiles");
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
    for (pooling, (w, h), tile) in
        [(Pooling::Max, (211, 97), 64), (Pooling::Avg, (150, 161), 80), (Pooling::Max, (67, 130), 64)]
    {
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

fn weights_arg() -> String {
    real_weights_path().to_str().unwrap().to_string()
}

fn fixture_arg(name: &str) -> String {
    fixture(name).to_str().unwrap().to_string()
}

/// `impasto plan`: one row per scale with the tiles it will use, the calibration cached, and
/// nothing written.
#[test]
fn plan_prints_each_scale_with_its_tiles() {
    let dir = tempdir();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let (content, style, weights) = (fixture_arg("content.png"), fixture_arg("style.png"), weights_arg());
    let args = ["plan", &content, &style, "--size", "300", "--tile", "128", "--weights", &weights];
    let env = [("IMPASTO_HOME", s(&home))];
    let o = impasto_env(&args, &env);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", describe(&args, &o));
    // The fixture is 256x192: 300x225, in the tiles the library cuts.
    let net = real_net();
    let halo = net.halo(&LossConfig::default().layers()).unwrap();
    let tiles = impasto::tiles::TileGrid::new(impasto::Size::new(300, 225), Some(128), halo).tiles.len();
    assert!(tiles >= 4, "{tiles}");
    assert!(text.contains(&format!("| 1 | 300x225 | 500 | {tiles} of 128 px | 100 |")), "{text}");
    assert!(text.contains("(measured now)") && text.contains("Nothing changed to fit"), "{text}");
    assert!(home.join("calibration.json").exists());
    let again = String::from_utf8_lossy(&impasto_env(&args, &env).stdout).into_owned();
    assert!(again.contains("(cached)"), "{again}");
    // `stylize --dry-run` is the same; no output file appears.
    let out = dir.path().join("out.png");
    let dry = [
        "stylize",
        &content,
        &style,
        "-o",
        s(&out),
        "--dry-run",
        "--size",
        "300",
        "--tile",
        "128",
        "--weights",
        &weights,
    ];
    let o = impasto_env(&dry, &env);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&format!("{tiles} of 128 px")));
    assert!(!out.exists());
}

/// Under a memory limit, a size whose whole image does not fit is tiled, with a fitted L-BFGS
/// history, within the limit; `--tile off` refuses it in one line, naming the flags to lower.
#[test]
fn plan_tiles_what_does_not_fit() {
    let dir = tempdir();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let (content, style, weights) = (fixture_arg("content.png"), fixture_arg("style.png"), weights_arg());
    let limit_gib = 4u64;
    let limited = |extra: &[&str]| {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("ulimit -v {} && exec \"$@\"", limit_gib << 20)).arg("sh");
        cmd.arg(env!("CARGO_BIN_EXE_impasto")).args(["plan", &content, &style, "--weights", &weights]);
        cmd.args(extra).env("IMPASTO_HOME", &home);
        cmd.output().unwrap()
    };
    let o = limited(&["--size", "1400", "--scales", "off"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{text}{}", stderr(&o));
    assert!(text.contains("To fit: 1400x1050 runs in ") && text.contains(" tiles of "), "{text}");
    let total = text.lines().find(|l| l.starts_with("| total")).unwrap();
    let peak: f64 = total.split('|').nth(6).unwrap().trim().split(' ').next().unwrap().parse().unwrap();
    assert!(peak <= 0.9 * limit_gib as f64, "{total}");
    let o = limited(&["--size", "1400", "--scales", "off", "--tile", "off", "--lbfgs-history", "100"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("needs about") && e.contains("lower --size or --lbfgs-history"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

/// A run in tiles paints the picture the untiled run paints (the same objective; the few
/// iterations keep the optimizer from amplifying rounding), and its settings replay the tiles.
#[test]
fn a_tiled_run_paints_the_untiled_picture() {
    let dir = tempdir();
    let (content, style, weights) = (fixture_arg("content.png"), fixture_arg("style.png"), weights_arg());
    let run = |name: &str, tile: &str| {
        let out = dir.path().join(name);
        let args = [
            "stylize",
            &content,
            &style,
            "-o",
            s(&out),
            "--size",
            "200",
            "--iterations",
            "4",
            "--optimizer",
            "adam",
            "--tile",
            tile,
            "-q",
            "--weights",
            &weights,
        ];
        let o = impasto(&args);
        assert!(o.status.success(), "{}", describe(&args, &o));
        (out.clone(), impasto::image_io::load(&out).unwrap())
    };
    let (_, whole) = run("whole.png", "off");
    let (path, tiled) = run("tiled.png", "64");
    let diffs: Vec<f32> = whole.data.iter().zip(&tiled.data).map(|(a, b)| (a - b).abs()).collect();
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    // Adam's steps are sign-like where the gradient is near zero, so rounding can flip a few
    // pixels' steps: measured, a mean of 0.0014 levels, and 4 levels at the worst pixel.
    let off = diffs.iter().filter(|d| **d > 1.0).count();
    assert!(mean < 0.01 && off * 1000 <= diffs.len(), "mean difference {mean}, {off} values off by more than a level");
    let replay = impasto(&["settings", s(&path)]);
    assert!(String::from_utf8_lossy(&replay.stdout).contains("--tile 64"));
}
