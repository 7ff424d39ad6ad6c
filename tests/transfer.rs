use std::ops::ControlFlow;

use impasto::transfer::{Progress, StyleConfig, Stylizer};

use crate::util::*;

/// L-BFGS keeps the pixels in 0..255 all along, so what is saved is what was optimised: the
/// image it returns is in range before any clamping, and its loss still falls.
#[test]
fn optimised_pixels_stay_in_range() {
    let (content, style) = (fixture_image("content.png"), fixture_image("style.png"));
    let config = StyleConfig::default().size(128).iterations(40);
    let mut range = (f32::MAX, f32::MIN);
    let mut losses = Vec::new();
    let outcome = Stylizer::new(real_net(), config)
        .unwrap()
        .run(&content, &[style], &mut |p: &Progress| {
            losses.push(p.terms.total);
            ControlFlow::Continue(())
        })
        .unwrap();
    for v in &outcome.image.data {
        range = (range.0.min(*v), range.1.max(*v));
    }
    assert!(range.0 >= 0.0 && range.1 <= 255.0, "pixels span {range:?}");
    assert!(losses[losses.len() - 1] < 0.1 * losses[0], "loss {} -> {}", losses[0], losses[losses.len() - 1]);
}
