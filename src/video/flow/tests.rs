//! The flow on synthetic motions whose flow is known ([`crate::video::synthetic`]) at awkward
//! sizes, and on frames too small or too flat to follow.

use super::*;
use crate::video::synthetic::{Texture, frame, motions};

#[test]
fn synthetic_motions_are_found_to_a_fraction_of_a_pixel() {
    // Per motion, the end-point error allowed (measured 0.01-0.06 px at these sizes, the zoom's
    // and square's up to 0.1).
    for (w, h) in [(160, 123), (97, 61), (211, 150)] {
        for m in motions(w, h) {
            let flow = dense_flow(&m.from, &m.to, &FlowSettings::default());
            let epe = flow.end_point_error(&m.truth, Some(&m.mask));
            let allowed = if m.name == "moving square" || m.name == "zoom" { 0.25 } else { 0.15 };
            assert!(epe < allowed, "{} at {w}x{h}: end-point error {epe}", m.name);
            // Where things move, the error is a fraction of the motion itself ("no motion" errs
            // by more than a pixel there).
            let moving: Vec<bool> =
                (0..w * h).map(|i| m.mask[i] && (m.truth.u[i], m.truth.v[i]) != (0.0, 0.0)).collect();
            assert!(flow.end_point_error(&m.truth, Some(&moving)) < 0.3, "{} at {w}x{h}: moving pixels", m.name);
            assert!(Flow::zero(w, h).end_point_error(&m.truth, Some(&moving)) > 1.0, "{}", m.name);
        }
    }
}

#[test]
fn tiny_and_still_frames() {
    for (w, h) in [(0, 0), (0, 7), (7, 0), (1, 1), (5, 3), (2, 40), (9, 9)] {
        let t = Texture::new(1, 64);
        let a = frame(w, h, |x, y| t.at(x, y));
        let flow = dense_flow(&a, &a, &FlowSettings::default());
        assert_eq!((flow.width, flow.height), (w, h));
        let epe = flow.end_point_error(&Flow::zero(w, h), None);
        assert!(epe < 1e-3, "{w}x{h} still: {epe}");
    }
    // A flat frame has no texture to follow: it stays still rather than wandering off.
    let flat = frame(40, 30, |_, _| 100.0);
    let flow = dense_flow(&flat, &flat, &FlowSettings::default());
    assert!(flow.u.iter().chain(&flow.v).all(|v| v.abs() < 1e-3));
}
