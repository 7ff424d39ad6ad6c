use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use impasto::image_io;
use serde_json::Value;

use crate::util::*;

fn fixture_str(name: &str) -> &'static str {
    Box::leak(fixture(name).to_str().unwrap().to_string().into_boxed_str())
}

fn content() -> &'static str {
    fixture_str("content.png")
}

fn style() -> &'static str {
    fixture_str("style.png")
}

fn weights_arg() -> String {
    real_weights_path().to_str().unwrap().to_string()
}

/// `impasto stylize CONTENT STYLE -o OUT EXTRA... --weights W` on the fixture pair and the real
/// weights; returns the arguments (for messages) and the output.
fn stylize(out: &Path, extra: &[&str]) -> (Vec<String>, Output) {
    let mut args: Vec<String> = ["stylize", content(), style(), "-o", s(out)].iter().map(|a| a.to_string()).collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend(["--weights".to_string(), weights_arg()]);
    let argv: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    let o = impasto(&argv);
    (args, o)
}

/// Like [`stylize`], and the run must succeed.
fn stylize_ok(out: &Path, extra: &[&str]) -> Output {
    let (args, o) = stylize(out, extra);
    assert!(o.status.success(), "{}", describe(&args, &o));
    o
}

/// The log's evaluation lines (the last line, saying what was written, is left out).
fn read_log(path: &Path) -> Vec<Value> {
    let (evaluations, written) = read_log_and_result(path);
    assert_eq!(written["written"], Value::Bool(true), "the log's last line says what was written: {written}");
    evaluations
}

/// The log's evaluation lines and its last line.
fn read_log_and_result(path: &Path) -> (Vec<Value>, Value) {
    let mut lines: Vec<Value> =
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = lines.pop().expect("a log line");
    (lines, last)
}

/// The files in `dir`, sorted.
/// The README's promise: on real weights, with the defaults, the loss falls at least 10x in 30
/// iterations, the log has one JSON object per evaluation, and the output is the content's size.
#[test]
fn stylize_end_to_end_loss_falls_tenfold() {
    let dir = tempdir();
    let (out, log) = (dir.path().join("out.png"), dir.path().join("log.jsonl"));
    real_weights_path(); // the default weights, fetched if needed, as a user's first run does
    let args = ["stylize", content(), style(), "-o", s(&out), "--size", "256", "--iterations", "30", "--log", s(&log)];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let (log, written) = read_log_and_result(&log);
    assert_eq!(log.len(), 30);
    let mut best = (f64::INFINITY, 0);
    for (i, l) in log.iter().enumerate() {
        assert_eq!(l["iteration"].as_u64(), Some(i as u64 + 1));
        for k in ["total", "content", "style", "tv", "seconds", "best"] {
            assert!(l[k].is_f64(), "{k} missing in {l}");
        }
        assert!(l["accepted"].is_boolean(), "{l}");
        let sum = l["content"].as_f64().unwrap() + l["style"].as_f64().unwrap() + l["tv"].as_f64().unwrap();
        assert!((sum - l["total"].as_f64().unwrap()).abs() < 1e-6 * sum);
        if l["total"].as_f64().unwrap() < best.0 {
            best = (l["total"].as_f64().unwrap(), i + 1);
        }
        // The best loss so far, as logged, is the lowest total so far.
        assert_eq!((l["best"].as_f64().unwrap(), l["best_iteration"].as_u64().unwrap()), (best.0, best.1 as u64));
    }
    assert_eq!(log[0]["accepted"], Value::Bool(true));
    // The last line says which evaluation the image came from: the best one.
    assert_eq!(written["best_iteration"].as_u64(), Some(best.1 as u64), "{written}");
    assert_eq!(written["total"].as_f64(), Some(best.0));
    assert_eq!(written["stop"], "finished");
    let (first, last) = (log[0]["total"].as_f64().unwrap(), best.0);
    assert!(first / last >= 10.0, "loss {first} -> {last}");
    assert!(log[29]["seconds"].as_f64() > log[0]["seconds"].as_f64());
    let img = image_io::load(&out).unwrap();
    assert_eq!((img.width, img.height), (256, 192));
    let c = image_io::load(Path::new(content())).unwrap();
    let moved = img.data.iter().zip(&c.data).map(|(a, b)| (a - b).abs()).sum::<f32>() / img.data.len() as f32;
    assert!(moved > 5.0, "the output is barely changed from the content (mean |diff| {moved})");
    assert_eq!(listing(dir.path()), ["log.jsonl", "out.png"]);
    // L-BFGS keeps the pixels in 0..255, so the saved (8-bit) image scores what was optimised.
    let args = ["score", content(), style(), "--image", s(&out), "--size", "256"];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let saved = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["total"].as_f64().unwrap();
    assert!((saved - last).abs() < 0.1 * last, "saved image scores {saved}, the best iteration {last}");
}

#[test]
fn quiet_save_every_and_formats() {
    let dir = tempdir();
    let out = dir.path().join("out.png");
    let o = stylize_ok(&out, &["--size", "64", "--iterations", "6", "--save-every", "2", "--quiet"]);
    assert!(o.stderr.is_empty() && o.stdout.is_empty(), "{}", stderr(&o));
    assert_eq!(listing(dir.path()), ["out.0002.png", "out.0004.png", "out.png"]);
    for ext in ["jpg", "tif"] {
        let out = dir.path().join(format!("out.{ext}"));
        stylize_ok(&out, &["--size", "64", "--iterations", "2", "--quiet"]);
        let img = image_io::load(&out).unwrap();
        assert_eq!((img.width, img.height), (64, 48), "{ext}");
    }
}

/// Same seed, same output; another seed, another output. Also Adam and an init file.
#[test]
fn seeds_are_reproducible() {
    let dir = tempdir();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec!["--size", "48", "--iterations", "4", "--quiet"];
        args.extend_from_slice(extra);
        stylize_ok(&out, &args);
        std::fs::read(&out).unwrap()
    };
    let a = run("a.png", &["--init", "random", "--seed", "3"]);
    assert_eq!(a, run("b.png", &["--init", "random", "--seed", "3"]));
    assert_ne!(a, run("c.png", &["--init", "random", "--seed", "4"]));
    let n = run("n1.png", &["--init", "noise:0.5", "--seed", "3"]);
    assert_eq!(n, run("n2.png", &["--init", "noise:0.5", "--seed", "3"]));
    assert_ne!(n, a);
    let cand = fixture("candidate.png");
    let d = run("d.png", &["--init", s(&cand), "--optimizer", "adam", "--lr", "4"]);
    assert_ne!(d, run("e.png", &["--optimizer", "adam", "--lr", "4"]));
}

#[test]
fn adam_lowers_the_loss() {
    let dir = tempdir();
    let (out, log) = (dir.path().join("out.png"), dir.path().join("log.jsonl"));
    stylize_ok(&out, &["--size", "96", "--iterations", "15", "--optimizer", "adam", "--log", s(&log), "--quiet"]);
    let log = read_log(&log);
    let (first, last) = (log[0]["total"].as_f64().unwrap(), log[14]["total"].as_f64().unwrap());
    assert!(last < 0.7 * first, "{first} -> {last}");
}

/// A loss that overflows stops the run with a message, exit code 1, and the last good image
/// (here the initial one: the content, asked for instead of the fast picture) written.
#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_image() {
    let dir = tempdir();
    let out = dir.path().join("out.png");
    let (args, o) =
        stylize(&out, &["--size", "64", "--iterations", "5", "--style-weight", "1e300", "--init", "content"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&args, &o));
    assert!(stderr(&o).contains("NaN or infinite at iteration 1"), "{}", stderr(&o));
    let got = image_io::load(&out).unwrap();
    let c = image_io::load(Path::new(content())).unwrap();
    let want = image_io::resize(&c, 64, 48).to_rgb8();
    assert_eq!(got.to_rgb8(), want);
}

/// Ctrl-C stops the run and still writes the current image.
#[test]
fn interrupt_writes_the_current_image() {
    let dir = tempdir();
    let (out, log) = (dir.path().join("out.png"), dir.path().join("log.jsonl"));
    let w = weights_arg();
    let child = Command::new(env!("CARGO_BIN_EXE_impasto"))
        .args([
            "stylize",
            content(),
            style(),
            "-o",
            s(&out),
            "--size",
            "64",
            "--iterations",
            "100000",
            "--log",
            s(&log),
            "--weights",
            &w,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(&log).map(|l| l.lines().count()).unwrap_or(0) < 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!out.exists());
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("interrupted at iteration"));
    assert_eq!(image_io::load(&out).unwrap().width, 64);
    // The image written is the best one evaluated, and the log's last line says which.
    let (log, written) = read_log_and_result(&log);
    assert_eq!(written["stop"], "interrupted", "{written}");
    let best = log.iter().map(|l| l["total"].as_f64().unwrap_or(f64::INFINITY)).fold(f64::INFINITY, f64::min);
    assert_eq!(written["total"].as_f64(), Some(best));
    let args = ["score", content(), style(), "--image", s(&out), "--size", "64", "--weights", &w];
    let o = impasto(&args);
    let saved = serde_json::from_slice::<Value>(&o.stdout).unwrap()["total"].as_f64().unwrap();
    assert!((saved - best).abs() < 0.1 * best, "saved {saved}, best {best}");
}

/// Every kind of bad input: exit code 2, one line naming the culprit, no output file.
#[test]
fn bad_input_is_one_clear_line_and_no_output() {
    let dir = tempdir();
    let d = dir.path();
    let out = d.join("out").join("result.png");
    std::fs::create_dir(d.join("out")).unwrap();
    std::fs::write(d.join("notes.txt"), "not an image").unwrap();
    std::fs::write(d.join("empty.png"), b"").unwrap();
    let png = std::fs::read(content()).unwrap();
    std::fs::write(d.join("cut.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(d.join("zero.png"), png_header_only(0, 0)).unwrap();
    std::fs::write(d.join("huge.png"), png_header_only(200_000, 150_000)).unwrap();
    std::fs::write(d.join("junk.pth"), b"not weights").unwrap();
    std::fs::write(d.join("a_file"), b"x").unwrap();
    let mut wrong = tiny_weights(1, [4; 5]);
    let conv = &mut wrong.blocks[1][0];
    conv.c_in = 3;
    conv.weight.truncate(conv.c_out * 27);
    write_safetensors(&wrong, &d.join("wrong.safetensors"), Some("caffe"));
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let (c, st, o) = (content().to_string(), style().to_string(), s(&out).to_string());
    let w = weights_arg();
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (vec![p("missing.jpg"), st.clone()], vec![p("missing.jpg"), "no such file".into()]),
        (vec![c.clone(), p("out")], vec![p("out"), "directory".into()]),
        (vec![c.clone(), p("notes.txt")], vec![p("notes.txt"), "not a recognised image".into()]),
        (vec![p("empty.png"), st.clone()], vec![p("empty.png"), "empty".into()]),
        (vec![p("cut.png"), st.clone()], vec![p("cut.png"), "cannot decode".into()]),
        (vec![p("zero.png"), st.clone()], vec![p("zero.png")]),
        (vec![p("huge.png"), st.clone()], vec![p("huge.png"), "200000x150000".into()]),
        (vec![c.clone(), st.clone(), "--style-layers".into(), "relu1_1,relu9_1".into()], vec!["relu9_1".into()]),
        (vec![c.clone(), st.clone(), "--content-layers".into(), "banana".into()], vec!["banana".into()]),
        (vec![c.clone(), st.clone(), "--style-weight".into(), "-5".into()], vec!["--style-weight".into()]),
        (vec![c.clone(), st.clone(), "--content-weight".into(), "NaN".into()], vec!["--content-weight".into()]),
        (vec![c.clone(), st.clone(), "--tv-weight".into(), "inf".into()], vec!["--tv-weight".into()]),
        (vec![c.clone(), st.clone(), "--size".into(), "0".into()], vec!["--size".into()]),
        (vec![c.clone(), st.clone(), "--size".into(), "8".into()], vec!["--size".into(), "16x16".into()]),
        // Negative numbers reach the option's own check, which names it; the automatic pyramid's
        // factor is checked even at a size that runs one scale.
        (vec![c.clone(), st.clone(), "--scale-factor".into(), "-2".into()], vec!["--scale-factor".into()]),
        (vec![c.clone(), st.clone(), "--seed".into(), "-1".into()], vec!["--seed".into()]),
        (vec![c.clone(), st.clone(), "--time-limit".into(), "-1".into()], vec!["--time-limit".into()]),
        (
            vec![c.clone(), st.clone(), "--weights".into(), p("junk.pth")],
            vec![p("junk.pth"), "not a weights file".into()],
        ),
        (
            vec![c.clone(), st.clone(), "--weights".into(), p("wrong.safetensors")],
            vec![p("wrong.safetensors"), "conv2_1".into()],
        ),
        (
            vec![c.clone(), st.clone(), "--weights".into(), p("nothere.pth")],
            vec![p("nothere.pth"), "no such file".into()],
        ),
        (vec![c.clone(), st.clone(), "--init".into(), p("missing.png")], vec![p("missing.png")]),
    ];
    for (inputs, needles) in cases {
        let mut args: Vec<String> = vec!["stylize".into()];
        args.extend(inputs);
        args.extend(["-o".into(), o.clone(), "--iterations".into(), "2".into()]);
        if !args.iter().any(|a| a == "--size") {
            args.extend(["--size".into(), "64".into()]);
        }
        if !args.iter().any(|a| a == "--weights") {
            args.extend(["--weights".into(), w.clone()]);
        }
        // A refused run leaves no log either.
        args.extend(["--log".into(), s(&d.join("out").join("run.jsonl")).to_string()]);
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let r = impasto(&argv);
        let e = stderr(&r);
        assert_eq!(r.status.code(), Some(2), "{}", describe(&argv, &r));
        assert_eq!(e.trim().lines().count(), 1, "{}", describe(&argv, &r));
        assert!(e.starts_with("impasto: ") || e.starts_with("error: "), "{e}");
        for n in &needles {
            assert!(e.contains(n.as_str()), "expected {n:?} in: {e}");
        }
        assert!(listing(&d.join("out")).is_empty(), "output left behind by {argv:?}");
    }
    // Output paths: a missing directory, a parent that is a file, an unknown extension.
    for (target, needle) in [
        (d.join("nodir").join("x.png"), "does not exist"),
        (d.join("a_file").join("x.png"), "not a directory"),
        (d.join("out").join("x.gif"), "unknown output format"),
        // Not writable, even for root.
        (Path::new("/proc").join("impasto-test.png"), "cannot write in /proc"),
    ] {
        let args = ["stylize", &c, &st, "-o", s(&target), "--iterations", "1", "--size", "32", "--weights", &w];
        let r = impasto(&args);
        assert_eq!(r.status.code(), Some(2), "{}", describe(&args, &r));
        assert!(stderr(&r).contains(needle), "{}", describe(&args, &r));
        assert!(!target.exists());
    }
}

/// Inputs in every format and pixel layout the issue names decode to the right picture.
#[test]
fn input_formats_and_layouts() {
    let dir = tempdir();
    let d = dir.path();
    let base = image_io::load(Path::new(content())).unwrap().to_rgb8();
    let gray = image::DynamicImage::ImageRgb8(base.clone()).to_luma8();
    let cases: Vec<(&str, image::DynamicImage)> = vec![
        ("rgb.jpg", image::DynamicImage::ImageRgb8(base.clone())),
        ("rgb.webp", image::DynamicImage::ImageRgb8(base.clone())),
        ("rgb.bmp", image::DynamicImage::ImageRgb8(base.clone())),
        ("rgb.tif", image::DynamicImage::ImageRgb8(base.clone())),
        ("gray.png", image::DynamicImage::ImageLuma8(gray.clone())),
        ("rgba.png", image::DynamicImage::ImageRgba8(image::DynamicImage::ImageRgb8(base.clone()).to_rgba8())),
        ("rgb16.png", image::DynamicImage::ImageRgb16(image::DynamicImage::ImageRgb8(base.clone()).to_rgb16())),
    ];
    for (name, img) in cases {
        let path = d.join(name);
        img.save(&path).unwrap();
        let got = image_io::load(&path).unwrap();
        assert_eq!((got.width, got.height), (256, 192), "{name}");
        let want = if name.starts_with("gray") {
            image_io::from_dynamic(&image::DynamicImage::ImageLuma8(gray.clone()))
        } else {
            image_io::from_dynamic(&image::DynamicImage::ImageRgb8(base.clone()))
        };
        let tol = if name.ends_with(".jpg") { 8.0 } else { 0.01 };
        let err = got.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).sum::<f32>() / got.data.len() as f32;
        assert!(err < tol, "{name}: mean error {err}");
    }
    // A palette PNG: two colours.
    let path = d.join("palette.png");
    {
        let f = std::fs::File::create(&path).unwrap();
        let mut enc = png::Encoder::new(f, 2, 1);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
        enc.write_header().unwrap().write_image_data(&[0, 1]).unwrap();
    }
    let got = image_io::load(&path).unwrap();
    assert_eq!(got.data, vec![255.0, 0.0, 0.0, 0.0, 0.0, 255.0]);
    // EXIF orientation 6 (rotate 90 degrees clockwise) turns a 4x2 JPEG into 2x4.
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(4, 2, |x, _| image::Rgb([x as u8 * 60, 0, 0])))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let tiff: Vec<u8> = [
        &b"II*\x00\x08\x00\x00\x00"[..],
        &[1, 0],                                     // one IFD entry
        &[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0], // Orientation (SHORT, 1) = 6
        &[0, 0, 0, 0],                               // no next IFD
    ]
    .concat();
    let mut app1 = vec![0xff, 0xe1];
    app1.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\x00\x00");
    app1.extend_from_slice(&tiff);
    let rotated = [&jpeg[..2], &app1[..], &jpeg[2..]].concat();
    let path = d.join("rotated.jpg");
    std::fs::write(&path, rotated).unwrap();
    let got = image_io::load(&path).unwrap();
    assert_eq!((got.width, got.height), (2, 4));
    // After a clockwise turn the left column (x = 0, dark) is at the top.
    assert!(got.plane(0)[0] < got.plane(0)[got.width * 3], "{:?}", got.plane(0));
}

/// `score` prints one JSON line; its numbers are those of the library.
#[test]
fn score_prints_json() {
    let w = weights_arg();
    let cand = fixture("candidate.png");
    let args =
        ["score", content(), style(), "--image", s(&cand), "--size", "128", "--tv-weight", "0.5", "--weights", &w];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let (c, st, t) = (v["content"].as_f64().unwrap(), v["style"].as_f64().unwrap(), v["tv"].as_f64().unwrap());
    assert!(c > 0.0 && st > 0.0 && t > 0.0);
    assert!((c + st + t - v["total"].as_f64().unwrap()).abs() < 1e-6 * (c + st + t));
    let net = real_net();
    let cfg = impasto::transfer::StyleConfig::default()
        .size(128)
        .loss(impasto::loss::LossConfig { tv_weight: 0.5, ..Default::default() });
    let lib = impasto::transfer::Stylizer::new(cfg)
        .unwrap()
        .score(
            net,
            &impasto::transfer::Inputs::new(
                image_io::load(Path::new(content())).unwrap(),
                [image_io::load(Path::new(style())).unwrap()],
            ),
            &image_io::load(&cand).unwrap(),
        )
        .unwrap();
    assert!((lib.total - v["total"].as_f64().unwrap()).abs() < 1e-9 * lib.total);
}

/// `--colour luminance`: the output's chroma is the content's (within 8-bit rounding and
/// clamping); `--colour match` and `keep` give other colours.
#[test]
fn colour_modes() {
    let dir = tempdir();
    let content_img = image_io::resize(&image_io::load(Path::new(content())).unwrap(), 64, 48);
    let chroma_err = |path: &Path| {
        let out = impasto::colour::rgb_to_ycbcr(&image_io::load(path).unwrap());
        let want = impasto::colour::rgb_to_ycbcr(&content_img);
        let n = 64 * 48;
        let d: Vec<f32> = (n..3 * n).map(|i| (out.data[i] - want.data[i]).abs()).collect();
        (d.iter().sum::<f32>() / d.len() as f32, d.iter().fold(0.0f32, |m, v| m.max(*v)))
    };
    let lum = dir.path().join("lum.png");
    stylize_ok(&lum, &["--size", "64", "--iterations", "10", "--colour", "luminance", "--quiet"]);
    let (mean, max) = chroma_err(&lum);
    assert!(mean < 0.6 && max < 4.0, "luminance mode changed the chroma: mean {mean}, max {max}");
    let keep = dir.path().join("keep.png");
    stylize_ok(&keep, &["--size", "64", "--iterations", "10", "--quiet"]);
    assert!(chroma_err(&keep).0 > 2.0, "keep mode should take colours from the style");
    let matched = dir.path().join("match.png");
    stylize_ok(&matched, &["--size", "64", "--iterations", "10", "--colour", "match", "--quiet"]);
    assert_ne!(std::fs::read(&matched).unwrap(), std::fs::read(&keep).unwrap());
}

/// A pyramid runs each scale in turn (the log says which), starting each from the last.
#[test]
fn pyramid_runs_coarse_to_fine() {
    let dir = tempdir();
    let (out, log) = (dir.path().join("out.png"), dir.path().join("log.jsonl"));
    stylize_ok(
        &out,
        &["--size", "96", "--scales", "48,64,96", "--scale-iterations", "4,3,2", "--log", s(&log), "--quiet"],
    );
    let log = read_log(&log);
    let scales: Vec<u64> = log.iter().map(|l| l["scale"].as_u64().unwrap()).collect();
    assert_eq!(scales, [1, 1, 1, 1, 2, 2, 2, 3, 3]);
    let widths: Vec<u64> = log.iter().map(|l| l["width"].as_u64().unwrap()).collect();
    assert_eq!(widths, [48, 48, 48, 48, 64, 64, 64, 96, 96]);
    let iters: Vec<u64> = log.iter().map(|l| l["iteration"].as_u64().unwrap()).collect();
    assert_eq!(iters, (1..=9).collect::<Vec<_>>());
    assert!(log.windows(2).all(|w| w[1]["seconds"].as_f64() >= w[0]["seconds"].as_f64()));
    assert_eq!(image_io::load(&out).unwrap().width, 96);
}

/// Regions from the command line: masks per style; a black mask means no effect.
#[test]
fn style_masks_from_the_cli() {
    let dir = tempdir();
    let d = dir.path();
    image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(32, 24, image::Luma([0])))
        .save(d.join("black.png"))
        .unwrap();
    image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(32, 24, image::Luma([255])))
        .save(d.join("white.png"))
        .unwrap();
    let cand = fixture_str("candidate.png");
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    // One style alone, and the same with a second style masked out everywhere.
    let o = impasto(&["score", content(), style(), "--image", cand, "--size", "64", "--weights", &weights_arg()]);
    let alone: Value = serde_json::from_slice(&o.stdout).unwrap();
    let black = d.join("black.png");
    let args = [
        "score",
        content(),
        style(),
        cand,
        "--image",
        cand,
        "--size",
        "64",
        "--style-mask",
        "none",
        "--style-mask",
        s(&black),
        "--weights",
        &weights_arg(),
    ];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let masked: Value = serde_json::from_slice(&o.stdout).unwrap();
    let (x, y) = (alone["total"].as_f64().unwrap(), masked["total"].as_f64().unwrap());
    assert!((x - y).abs() < 1e-6 * x, "{x} vs {y}");
    stylize_ok(&a, &["--size", "64", "--iterations", "3", "--style-mask", s(&d.join("white.png")), "--quiet"]);
    stylize_ok(&b, &["--size", "64", "--iterations", "3", "--quiet"]);
    let (ia, ib) = (image_io::load(&a).unwrap(), image_io::load(&b).unwrap());
    let diff = ia.data.iter().zip(&ib.data).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    assert!(diff <= 1.0, "an all-white mask is the plain style loss (max diff {diff})");
}

/// Bad values of the options added for control: each a clear error, exit 2, no output.
#[test]
fn bad_control_options() {
    let dir = tempdir();
    let d = dir.path();
    image::DynamicImage::ImageLuma8(image::GrayImage::new(50, 50)).save(d.join("square.png")).unwrap();
    let out = d.join("out.png");
    let sq = d.join("square.png");
    for (extra, needle) in [
        (vec!["--colour", "sepia"], "invalid value 'sepia' for '--colour"),
        (vec!["--style-loss", "mrf"], "invalid value 'mrf' for '--style-loss"),
        (vec!["--scales", "32,48", "--size", "64"], "--scales 32,48 does not reach the size 64"),
        (vec!["--scales", "64,48", "--size", "64"], "increasing"),
        (vec!["--scales", "big"], "--scales 'big'"),
        (vec!["--style-mask", s(&sq), "--size", "64"], "aspect ratio"),
        (vec!["--style-mask", "none", "--style-mask", "none"], "--style-mask is given 2 times"),
        (vec!["--init", "noise:3"], "noise:AMOUNT"),
        (vec!["--average", "0.99"], "adam"),
        (vec!["--style-loss", "w2", "--style-mask", s(&sq)], ""),
    ] {
        let mut args = vec!["--iterations", "1"];
        args.extend(extra);
        let (argv, o) = stylize(&out, &args);
        assert_eq!(o.status.code(), Some(2), "{}", describe(&argv, &o));
        assert!(stderr(&o).contains(needle), "{}", describe(&argv, &o));
        assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", describe(&argv, &o));
        assert!(!out.exists());
    }
    let e = stderr(&stylize(&out, &["--style-mask", s(&sq), "--size", "64"]).1);
    assert!(e.contains("square.png"), "the mask's file is named: {e}");
}

/// `--time-limit` stops a long run early, writes the image at full size and exits 0.
#[test]
fn time_limit_stops_the_run() {
    let dir = tempdir();
    let (out, log) = (dir.path().join("out.png"), dir.path().join("log.jsonl"));
    let o = stylize_ok(
        &out,
        &["--size", "96", "--scales", "48,96", "--iterations", "100000", "--time-limit", "4", "--log", s(&log)],
    );
    assert!(stderr(&o).contains("time limit reached"), "{}", stderr(&o));
    assert_eq!(read_log_and_result(&log).1["stop"], "time-limit");
    let n = read_log(&log).len();
    assert!(n > 0 && n < 100000);
    assert_eq!(image_io::load(&out).unwrap().width, 96);
}

/// `impasto bench` prints the per-layer table and the iteration time.
#[test]
fn bench_prints_a_table() {
    let args = ["bench", "--sizes", "32", "--runs", "1"];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in ["| conv1_1 | 3 -> 64 | 32 |", "| conv5_1 | 512 -> 512 | 2 |", "one iteration:", "peak memory:"] {
        assert!(out.contains(needle), "{needle:?} missing in:\n{out}");
    }
    let o = impasto(&["bench", "--sizes", "8"]);
    assert_eq!(o.status.code(), Some(2));
}
