use std::ops::ControlFlow;
use std::process::Command;
use std::sync::Arc;

use impasto::prelude::*;
use impasto::{Error, Stop};

use crate::util::{Lcg, tiny_weights};

fn tiny_net(seed: u64) -> Vgg {
    Vgg::new(tiny_weights(seed, [4, 6, 8, 8, 8]), impasto::Pooling::Max)
}

fn config() -> StyleConfig {
    StyleConfig::default().size(48).iterations(4).scales(impasto::Scales::Off)
}

/// An image whose fields disagree used to pass validation and panic in a rayon worker; now
/// every entry point refuses it first, naming it.
#[test]
fn a_malformed_image_is_refused_before_any_work() {
    let net = tiny_net(5);
    let good = Lcg(3).image(40, 30);
    let bad = Image { width: 4, height: 4, data: vec![0.0; 5] };
    let err = impasto::stylize(&net, &bad, &good, &config()).unwrap_err().to_string();
    assert!(err.contains("content") && err.contains("holds 5 values"), "{err}");
    let err = impasto::stylize(&net, &good, &bad, &config()).unwrap_err().to_string();
    assert!(err.contains("styles[0]"), "{err}");
    let nan = Image { data: vec![f32::NAN; 3 * 16], ..bad.clone() };
    assert!(impasto::stylize(&net, &nan, &good, &config()).unwrap_err().to_string().contains("not a finite number"));
    let stylizer = Stylizer::new(config()).unwrap();
    let inputs = Inputs::new(good.clone(), [good.clone()]);
    let err = stylizer.score(&net, &inputs, &bad).unwrap_err();
    assert!(matches!(err, Error::Setting { ref field, .. } if field == "image"), "{err}");
    let out = tempfile::tempdir().unwrap();
    let err = bad.save(out.path().join("bad.png")).unwrap_err();
    assert!(matches!(err, Error::Output { .. }) && err.to_string().contains("bad.png: image is 4x4"), "{err}");
    assert!(!out.path().join("bad.png").exists());
    assert!(impasto::image_io::encode(&bad, impasto::image_io::OutputFormat::Png).is_err());

    // The checked constructors.
    assert!(Image::new(4, 4, vec![0.0; 5]).unwrap_err().to_string().contains("holds 5 values"));
    assert!(Image::new(0, 4, vec![]).is_err());
    assert!(Image::from_rgb8(2, 2, &[0; 11]).is_err());
    assert!(Image::from_rgb8(usize::MAX, 3, &[0; 9]).is_err());
    let rgb: Vec<u8> = (0..2 * 3 * 3).map(|v| (v * 13) as u8).collect();
    let img = Image::from_rgb8(2, 3, &rgb).unwrap();
    // Interleaved in, planar out: pixel i's channel c is rgb[3i + c].
    for i in 0..6 {
        for c in 0..3 {
            assert_eq!(img.data[c * 6 + i], rgb[3 * i + c] as f32);
        }
    }
    assert_eq!(img.to_rgb8().into_raw(), rgb);
}

/// The one-call form is the configured run (same image, bit for bit); a closure without
/// annotations observes a run on a shared network, returning `()` or a `ControlFlow`.
#[test]
fn one_call_closures_and_a_shared_network() {
    let net = Arc::new(tiny_net(9));
    let mut rng = Lcg(11);
    let (photo, painting) = (rng.image(56, 40), rng.image(30, 30));
    let one_call = impasto::stylize(&net, &photo, &painting, &config()).unwrap();

    let stylizer = Stylizer::new(config()).unwrap();
    let inputs = Inputs::new(photo.clone(), [painting.clone()]);
    let mut seen = Vec::new();
    let outcome = stylizer.stylize(&net, &inputs, |p| seen.push(p.iteration)).unwrap();
    assert_eq!(outcome.image, one_call);
    assert_eq!(seen.len(), outcome.iterations);
    assert_eq!(seen.first(), Some(&1));

    let stopped = stylizer
        .stylize(&net, &inputs, |p| if p.iteration >= 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        .unwrap();
    assert_eq!((stopped.stop, stopped.iterations), (Stop::Interrupted, 2));

    // Another thread shares the same network (and its kept style targets).
    let shared = Arc::clone(&net);
    let (p2, s2) = (photo.clone(), painting.clone());
    let again = std::thread::spawn(move || impasto::stylize(&shared, &p2, &s2, &config()).unwrap()).join().unwrap();
    assert_eq!(again, one_call);
}

/// Threads in this process (Linux).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// A run inside a rayon pool uses that pool's threads and no others: in a fresh process, a
/// one-thread pool's run starts no thread, while the same run outside it starts rayon's global
/// pool (so the count could tell).
#[test]
fn a_pool_bounds_the_threads_of_a_run() {
    if std::env::var_os("IMPASTO_THREADS_CHILD").is_some() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut rng = Lcg(21);
        let (photo, painting) = (rng.image(64, 48), rng.image(32, 32));
        let (before, after) = pool.install(|| {
            let net = tiny_net(13);
            let before = threads();
            impasto::stylize(&net, &photo, &painting, &config()).unwrap();
            (before, threads())
        });
        println!("bounded: {before} -> {after}");
        let net = tiny_net(13);
        let outside = threads();
        impasto::stylize(&net, &photo, &painting, &config()).unwrap();
        println!("unbounded: {outside} -> {}", threads());
        return;
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new(me)
        .args(["--exact", "library::a_pool_bounds_the_threads_of_a_run", "--nocapture", "--test-threads=1"])
        .env("IMPASTO_THREADS_CHILD", "1")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let counts = |label: &str| -> (usize, usize) {
        let line =
            text.lines().find_map(|l| l.split_once(label).map(|(_, rest)| rest)).unwrap_or_else(|| panic!("{text}"));
        let (a, b) = line.trim().split_once(" -> ").unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    let (before, after) = counts("bounded:");
    assert_eq!(after, before, "a run in a one-thread pool started threads: {text}");
    let (outside, later) = counts("unbounded:");
    assert!(later >= outside + 2, "the global pool's threads were not seen: {text}");
}
