//! A run decided once: `impasto plan --json` and `stylize --plan` give the direct command's file
//! byte for byte; a plan file with a bad or inconsistent field is refused naming it; the style
//! targets of a batch after one painting are computed once; the library builds without the
//! front ends' dependencies.

use std::ops::ControlFlow;
use std::path::Path;

use impasto::transfer::{Inputs, Progress, Scales, StyleConfig, Stylizer};
use impasto::vgg::{Pooling, Vgg};

use crate::util::*;

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name).to_string_lossy().into_owned()
}

/// A pyramid run with two styles, each in its region, in tiles: planned as JSON, then run from
/// the plan, writes the same bytes as the same command run directly; and the plan file, edited
/// to a bad or inconsistent field, is refused naming the field, leaving no output.
#[test]
fn a_plan_runs_as_the_command_it_came_from() {
    let dir = tempdir();
    let weights = real_weights_path();
    let (content, sky, ground) = (example("tubingen.jpg"), example("tubingen_sky.png"), example("tubingen_ground.png"));
    let (starry, shipwreck) = (example("starry_night.jpg"), example("shipwreck.jpg"));
    let run: Vec<&str> = vec![
        &content,
        &starry,
        &shipwreck,
        "--style-mask",
        &sky,
        "--style-mask",
        &ground,
        "--size",
        "200",
        "--scales",
        "112,200",
        "--iterations",
        "3",
        "--tile",
        "64",
        "--weights",
        s(&weights),
    ];
    let direct = dir.path().join("direct.png");
    let args: Vec<&str> = [&["stylize"][..], &run, &["-o", s(&direct), "--quiet"]].concat();
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));

    let args: Vec<&str> = [&["plan"][..], &run, &["--json"]].concat();
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let plan_file = dir.path().join("plan.json");
    std::fs::write(&plan_file, &o.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let scales = json["plan"]["scales"].as_array().unwrap();
    assert_eq!(scales.len(), 2, "{json}");
    assert_eq!(scales[1]["size"], serde_json::json!({"width": 200, "height": 150}));
    assert_eq!(scales[1]["tile"], 64, "tiled as asked");
    assert_eq!(json["plan"]["device"], "cpu");

    let planned = dir.path().join("planned.png");
    let args = ["stylize", "--plan", s(&plan_file), "-o", s(&planned), "--quiet"];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    assert!(std::fs::read(&direct).unwrap() == std::fs::read(&planned).unwrap(), "the same file, byte for byte");
    // The output carries the plan it ran: it can be run again from the image itself.
    let again = dir.path().join("again.png");
    let args = ["stylize", "--plan", s(&planned), "-o", s(&again), "--quiet"];
    assert!(impasto(&args).status.success());
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&planned).unwrap());

    // Edited fields: one line naming the field, exit 2, no output.
    for (edit, want) in [
        (serde_json::json!({"tile": 12}), "plan.scales[1].tile must be null or a side between 64"),
        (serde_json::json!({"history": 0}), "plan.scales[1].history must be between 1"),
        (
            serde_json::json!({"size": {"width": 200, "height": 151}}),
            "plan.scales[1].size 200x151 is not the content image's shape",
        ),
        (
            serde_json::json!({"styles": [{"width": 1, "height": 1}]}),
            "plan.scales[1].styles has 1 sizes but there are 2",
        ),
        (serde_json::json!({"iterations": -1}), "plan.scales[1].iterations: invalid value"),
        (serde_json::json!({"tiles": 3}), "plan.scales[1].tiles: unknown field `tiles`"),
    ] {
        let mut bad = json.clone();
        for (k, v) in edit.as_object().unwrap() {
            bad["plan"]["scales"][1][k] = v.clone();
        }
        let file = dir.path().join("bad.json");
        std::fs::write(&file, bad.to_string()).unwrap();
        let out = dir.path().join("bad.png");
        let args = ["stylize", "--plan", s(&file), "-o", s(&out)];
        let o = impasto(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("impasto: {}: {want}", plan_file.with_file_name("bad.json").display())),
            "{err}\nwanted {want}"
        );
        assert!(!out.exists());
    }
    let mut moved = json.clone();
    moved["plan"]["output"] = serde_json::json!({"width": 100, "height": 75});
    std::fs::write(dir.path().join("moved.json"), moved.to_string()).unwrap();
    let o = impasto(&["stylize", "--plan", s(&dir.path().join("moved.json")), "-o", s(&dir.path().join("m.png"))]);
    assert!(
        stderr(&o).contains("plan.output is 100x75 but the content image at size 200 gives 200x150"),
        "{}",
        stderr(&o)
    );
    // Settings without a plan are not a plan; a plan goes with no other option.
    let o = impasto(&["settings", s(&direct), "--json"]);
    let mut bare: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    bare.as_object_mut().unwrap().remove("plan");
    std::fs::write(dir.path().join("bare.json"), bare.to_string()).unwrap();
    let o = impasto(&["stylize", "--plan", s(&dir.path().join("bare.json")), "-o", s(&dir.path().join("b.png"))]);
    assert!(stderr(&o).contains("has settings but no plan"), "{}", stderr(&o));
    let o = impasto(&["stylize", "--plan", s(&plan_file), "-o", s(&dir.path().join("b.png")), "--size", "64"]);
    assert!(stderr(&o).contains("--size cannot be combined with --plan"), "{}", stderr(&o));
}

/// Twenty photos after one painting in one process: the painting's targets are computed once,
/// and each photo's result is what it is with the targets computed afresh for it, bit for bit.
#[test]
fn a_batch_after_one_painting_computes_its_targets_once() {
    let net = Vgg::new(tiny_weights(31, [4, 6, 8, 8, 8]), Pooling::Max);
    let fresh = Vgg::new(tiny_weights(31, [4, 6, 8, 8, 8]), Pooling::Max);
    fresh.targets().set_budget(0);
    let mut rng = Lcg(77);
    let painting = rng.image(90, 70);
    let stylizer = Stylizer::new(StyleConfig::default().size(64).iterations(3).scales(Scales::Off)).unwrap();
    let go = |_: &Progress| ControlFlow::Continue(());
    for k in 0..20 {
        let inputs = Inputs::new(rng.image(64, 48), [painting.clone()]);
        let kept = stylizer.stylize(&net, &inputs, go).unwrap();
        let afresh = stylizer.stylize(&fresh, &inputs, go).unwrap();
        assert_eq!(kept.image, afresh.image, "photo {k}");
        assert_eq!(net.targets().computed(), 1, "photo {k}");
        assert_eq!(fresh.targets().computed(), k + 1);
    }
    assert_eq!(net.targets().len(), 1);
    // Another painting, another size or other layers are other targets.
    let other = Inputs::new(rng.image(64, 48), [rng.image(50, 50)]);
    stylizer.stylize(&net, &other, go).unwrap();
    let wide = Inputs::new(rng.image(64, 32), [painting.clone()]);
    stylizer.stylize(&net, &wide, go).unwrap();
    assert_eq!(net.targets().computed(), 3);
}

/// `cargo tree` for the library alone has none of the front ends' dependencies; the default
/// build (the binary) has the studio's and the command line's.
#[test]
fn the_library_alone_builds_without_the_front_ends() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree = |features: &[&str]| {
        let mut args =
            vec!["tree", "--offline", "--locked", "--edges", "normal", "--prefix", "none", "--format", "{p}"];
        args.extend_from_slice(features);
        let o = std::process::Command::new(&cargo)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo tree");
        assert!(o.status.success(), "cargo {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let has = |text: &str, name: &str| text.lines().any(|l| l.split_whitespace().next() == Some(name));
    let alone = tree(&["--no-default-features"]);
    for name in ["axum", "tokio", "hyper", "clap", "indicatif", "signal-hook", "anyhow", "wgpu"] {
        assert!(!has(&alone, name), "{name} is in the library's tree:\n{alone}");
    }
    assert!(has(&alone, "gemm") && has(&alone, "image"), "{alone}");
    let full = tree(&[]);
    for name in ["axum", "tokio", "hyper", "clap", "wgpu"] {
        assert!(has(&full, name), "{name} is not in the default tree");
    }
}
