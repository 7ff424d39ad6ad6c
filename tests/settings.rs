use std::path::Path;
use std::process::Output;

use impasto::image_io;
use serde_json::Value;

use crate::util::*;

fn weights() -> String {
    real_weights_path().to_str().unwrap().to_string()
}

fn ok(args: &[&str]) -> Output {
    let o = impasto(args);
    assert!(o.status.success(), "{}", describe(args, &o));
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn pixels(path: &Path) -> Vec<f32> {
    image_io::load(path).unwrap().data
}

/// A run with many non-default settings (two styles with blend weights and a region mask, a
/// noise start, Adam, colour matching, total variation, two scales) carries its settings in the PNG; `impasto
/// settings` prints them and a command line; the run replayed from the image, from the JSON and
/// through the printed command gives the same file, byte for byte; JPEG and TIFF outputs carry
/// the same settings.
#[test]
fn settings_travel_with_the_image_and_replay_bit_identically() {
    let dir = tempdir();
    let d = dir.path();
    // A style file with a space and a non-ASCII letter in its name, and a mask for it.
    let second = d.join("the stÿle.png");
    std::fs::copy(fixture("content.png"), &second).unwrap();
    let mask = d.join("mask.png");
    image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(40, 30, |x, _| {
        image::Luma([if x < 20 { 255 } else { 0 }])
    }))
    .save(&mask)
    .unwrap();
    let out = d.join("out.png");
    let w = weights();
    let (content, style) = (fixture("content.png"), fixture("style.png"));
    let run = [
        "stylize",
        s(&content),
        s(&style),
        s(&second),
        "-o",
        s(&out),
        "--size",
        "48",
        "--iterations",
        "5",
        "--scales",
        "32,48",
        "--optimizer",
        "adam",
        "--lr",
        "3",
        "--init",
        "noise:0.2",
        "--seed",
        "7",
        "--colour",
        "match",
        "--tv-weight",
        "0.01",
        "--style-weight",
        "300",
        "--style-blend",
        "1,2",
        "--style-mask",
        "none",
        "--style-mask",
        s(&mask),
        "--weights",
        &w,
        "--quiet",
    ];
    ok(&run);

    let json: Value = serde_json::from_str(&stdout(&ok(&["settings", s(&out), "--json"]))).unwrap();
    assert_eq!(json["content"], s(&content));
    assert_eq!(json["styles"][1]["image"], s(&second));
    assert_eq!((json["styles"][0]["blend"].as_f64(), json["styles"][1]["blend"].as_f64()), (Some(1.0), Some(2.0)));
    assert_eq!(json["styles"][1]["region_mask"], s(&mask));
    assert_eq!(json["config"]["size"], 48);
    assert_eq!(json["config"]["optimizer"]["adam"]["lr"].as_f64(), Some(3.0));
    assert_eq!(json["config"]["init"]["noise"].as_f64(), Some(0.2));
    assert_eq!(json["config"]["colour"], "match");
    assert_eq!(json["config"]["scales"]["list"], serde_json::json!([32, 48]));
    assert_eq!(json["network"]["weights"], w.as_str());

    // Replay from the image itself.
    let from_image = d.join("from_image.png");
    ok(&["stylize", "--settings", s(&out), "-o", s(&from_image), "--quiet"]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&from_image).unwrap(), "replayed from the image");

    // Replay from a JSON file, written as `settings` prints it.
    let run_json = d.join("run.json");
    std::fs::write(&run_json, stdout(&ok(&["settings", s(&out), "--json"]))).unwrap();
    let from_json = d.join("from_json.png");
    ok(&["stylize", "--settings", s(&run_json), "-o", s(&from_json), "--quiet"]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&from_json).unwrap(), "replayed from JSON");

    // The printed command line, run by a shell, writes out-replay.png beside the image.
    let both = stdout(&ok(&["settings", s(&out)]));
    let command = both.lines().last().unwrap().to_string();
    assert!(command.starts_with("impasto stylize ") && command.contains("--optimizer adam"), "{command}");
    assert_eq!(both.lines().filter(|l| l.starts_with("impasto stylize ")).count(), 1, "{both}");
    let line = command.replacen("impasto", env!("CARGO_BIN_EXE_impasto"), 1) + " --quiet";
    let o = std::process::Command::new("sh").arg("-c").arg(&line).output().unwrap();
    assert!(o.status.success(), "{}", describe(&[line.as_str()], &o));
    let replayed = d.join("out-replay.png");
    assert_eq!(pixels(&out), pixels(&replayed), "the printed command gives the same picture");

    // JPEG and TIFF outputs carry the same settings.
    for name in ["out.jpg", "out.tif"] {
        let path = d.join(name);
        ok(&["stylize", "--settings", s(&run_json), "-o", s(&path), "--quiet"]);
        let carried: Value = serde_json::from_str(&stdout(&ok(&["settings", s(&path), "--json"]))).unwrap();
        assert_eq!(carried, json, "{name}");
    }
    // The TIFF's pixels are the PNG's (both lossless).
    assert_eq!(pixels(&out), pixels(&d.join("out.tif")));
}

/// Bad settings files: one line naming the file and the field, exit 2, no output written; and
/// --settings does not combine with the flags it replaces.
#[test]
fn bad_settings_files_name_the_file_and_the_field() {
    let dir = tempdir();
    let d = dir.path();
    let out = d.join("out.png");
    let (content, style) = (fixture("content.png"), fixture("style.png"));
    let base = format!(r#""content": {:?}, "styles": [{{"image": {:?}}}]"#, s(&content), s(&style));
    let plain = d.join("plain.png");
    image::DynamicImage::ImageLuma8(image::GrayImage::new(8, 8)).save(&plain).unwrap();
    let binary = d.join("binary.json");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    for (name, text, needle) in [
        (
            "lr.json",
            format!(r#"{{{base}, "config": {{"optimizer": {{"adam": {{"lr": "fast"}}}}}}}}"#),
            "config.optimizer.adam.lr: invalid type",
        ),
        (
            "typo.json",
            format!(r#"{{{base}, "config": {{"iteration": 5}}}}"#),
            "config.iteration: unknown field `iteration`",
        ),
        (
            "weight.json",
            format!(r#"{{{base}, "config": {{"loss": {{"tv_weight": -1}}}}}}"#),
            "config.loss.tv_weight must be a finite number >= 0",
        ),
        ("small.json", format!(r#"{{{base}, "config": {{"size": 8}}}}"#), "config.size is too small"),
        ("layer.json", format!(r#"{{{base}, "config": {{"loss": {{"content_layers": ["relu9_1"]}}}}}}"#), "relu9_1"),
        (
            "missing.json",
            format!(r#"{{"content": {:?}, "styles": [{{"image": "nowhere.png"}}]}}"#, s(&content)),
            "nowhere.png",
        ),
        (
            "blend.json",
            format!(r#"{{"content": {:?}, "styles": [{{"image": {:?}, "blend": 0}}]}}"#, s(&content), s(&style)),
            "styles[0].blend is 0",
        ),
        ("cut.json", format!("{{{base}, \"config\": {{"), "EOF"),
    ] {
        let file = d.join(name);
        std::fs::write(&file, text).unwrap();
        let args = ["stylize", "--settings", s(&file), "-o", s(&out), "--quiet"];
        let o = impasto_env(&args, &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
        assert!(err.contains(s(&file)) || name == "missing.json", "{}", describe(&args, &o));
        assert!(err.contains(needle), "{name}: {}", describe(&args, &o));
        assert_eq!(err.trim().lines().count(), 1, "{}", describe(&args, &o));
        assert!(!out.exists(), "{name}");
    }
    for (file, needle) in [(&plain, "without impasto settings"), (&binary, "neither settings JSON")] {
        let o = impasto(&["settings", s(file)]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
    }
    let args = ["stylize", "--settings", "run.json", "-o", s(&out), "--style-weight", "5"];
    let o = impasto(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--style-weight cannot be combined with --settings"), "{}", describe(&args, &o));
}

/// The settings example in the README is valid settings JSON, and means what the README says.
#[test]
fn the_readme_example_is_valid_settings() {
    use impasto::transfer::{AdamSettings, Init, OptimizerChoice, Scales};
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("```json\n").expect("a JSON example") + "```json\n".len();
    let json = &readme[start..start + readme[start..].find("```").unwrap()];
    let s = impasto::settings::Settings::from_json(json, Path::new("README.md")).unwrap();
    assert_eq!(s.styles.len(), 2);
    assert_eq!(s.styles[1].region_mask.as_deref(), Some(Path::new("examples/tubingen_ground.png")));
    assert_eq!(s.config.optimizer, OptimizerChoice::Adam(AdamSettings { lr: 5.0, average: Some(0.99) }));
    assert_eq!((s.config.scales.clone(), s.config.init, s.config.size), (Scales::Off, Init::Noise(0.3), 384));
    assert_eq!(s.config.loss.style_layers.len(), 3);
    // Its images are the repository's: it loads.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut local = s.clone();
    local.content = dir.join(&s.content);
    for st in &mut local.styles {
        st.image = dir.join(&st.image);
        st.region_mask = st.region_mask.as_ref().map(|m| dir.join(m));
    }
    let inputs = local.load_inputs().unwrap();
    assert!(impasto::plan::Plan::make(&s.config, real_net(), &inputs).is_ok());
}
