//! The loop, the plan and the run on a backend with no network: what they ask of a backend, and
//! that a run carries out its plan as it is.

use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::transfer::{Init, Inputs, Progress, Scales, StyleConfig, Stylizer};

/// A backend with no network: the objective is the mean squared distance to the inverted content
/// image, and a run needs `need` bytes. It notes whether it was asked to evaluate an image in
/// colour (the three planes not equal) and the tile side of each evaluator it made.
#[derive(Default)]
struct Inverse {
    need: u64,
    saw_colour: AtomicBool,
    tiles: Mutex<Vec<(Size, Option<usize>)>>,
    targets: TargetCache,
}

struct InverseObjective<'a> {
    target: Image,
    saw_colour: &'a AtomicBool,
}

impl Evaluator for InverseObjective<'_> {
    fn size(&self) -> Size {
        Size::new(self.target.width, self.target.height)
    }

    fn evaluate(&self, image: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)> {
        let p = image.pixels();
        if image.data[..p] != image.data[p..2 * p] || image.data[..p] != image.data[2 * p..] {
            self.saw_colour.store(true, Ordering::Relaxed);
        }
        let n = image.data.len() as f64;
        let d: Vec<f32> = image.data.iter().zip(&self.target.data).map(|(x, t)| x - t).collect();
        let total = d.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n;
        let grad = with_grad.then(|| d.iter().map(|v| (2.0 * *v as f64 / n) as f32).collect());
        Ok((LossTerms { total, content: total, ..LossTerms::default() }, grad))
    }
}

impl Backend for Inverse {
    fn name(&self) -> &str {
        "inverse"
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn check_layers(&self, _: &[LayerId]) -> Result<()> {
        Ok(())
    }
    fn min_input_side(&self, _: &[LayerId]) -> Result<usize> {
        Ok(1)
    }
    fn shape(&self, _: LayerId, size: Size) -> Result<Chw> {
        Ok((4, size.height, size.width))
    }
    fn pools_before(&self, _: LayerId) -> Result<usize> {
        Ok(0)
    }
    fn halo(&self, _: &[LayerId]) -> Result<Halo> {
        Ok(Halo { pixels: 0, align: 1 })
    }
    fn memory_estimate(&self, _: Size, _: &[LayerId]) -> Result<u64> {
        Ok(self.need)
    }
    fn evaluator_memory(&self, _: &LossConfig, _: &TileGrid, _: usize) -> Result<u64> {
        Ok(self.need)
    }
    fn forward_flops(&self, size: Size, _: &[LayerId]) -> Result<f64> {
        Ok(size.pixels() as f64)
    }
    fn evaluator<'a>(
        &'a self,
        spec: &ObjectiveSpec,
        content: &Image,
        _: &[StyleInput],
        tile: Option<usize>,
    ) -> Result<Box<dyn Evaluator + 'a>> {
        self.tiles.lock().unwrap().push((spec.size, tile));
        let data = content.data.iter().map(|v| 255.0 - v).collect();
        Ok(Box::new(InverseObjective { target: Image { data, ..*content }, saw_colour: &self.saw_colour }))
    }
    fn targets(&self) -> &TargetCache {
        &self.targets
    }
}

fn ramp(width: usize, height: usize) -> Image {
    let data = (0..3 * width * height).map(|i| (i * 7 % 256) as f32).collect();
    Image { width, height, data }
}

fn go(_: &Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// The loop, the pyramid and the best-image bookkeeping run on any backend: on this one the
/// run finds the inverted image at every scale.
#[test]
fn the_loop_runs_on_any_backend() {
    let (content, style) = (ramp(40, 30), ramp(8, 8));
    let config = StyleConfig::default().size(40).iterations(30).scales(Scales::List(vec![20, 40]));
    let backend = Inverse::default();
    let mut scales_seen = Vec::new();
    let out = Stylizer::new(config)
        .unwrap()
        .stylize(&backend, &Inputs::new(content.clone(), [style]), &mut |p: &Progress| {
            scales_seen.push((p.scale, p.image.width));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(scales_seen.contains(&(1, 20)) && scales_seen.contains(&(2, 40)), "{scales_seen:?}");
    assert!(out.terms.total < 1e-6, "{}", out.terms.total);
    let worst = out.image.data.iter().zip(&content.data).map(|(x, c)| (x - (255.0 - c)).abs()).fold(0.0, f32::max);
    assert!(worst < 0.01, "{worst}");
}

/// The memory check asks the backend.
#[test]
fn the_memory_check_uses_the_backends_estimate() {
    let (content, style) = (ramp(40, 30), ramp(8, 8));
    let backend = Inverse { need: u64::MAX / 4, ..Inverse::default() };
    let err = Stylizer::new(StyleConfig::default().size(40).iterations(3))
        .unwrap()
        .plan(&backend, &Inputs::new(content, [style]))
        .err()
        .expect("too large for any machine");
    assert!(err.to_string().contains("memory"), "{err}");
}

/// A run carries out its plan as it is: a plan whose tile sides and iterations were changed by
/// hand (to what the layout would never choose for so small an image) runs with those, and a
/// run neither checks nor lays out anything itself (a backend that says nothing fits still runs
/// a plan made without asking it).
#[test]
fn a_run_does_what_its_plan_says() {
    let (content, style) = (ramp(300, 200), ramp(8, 8));
    let stylizer =
        Stylizer::new(StyleConfig::default().size(300).iterations(4).scales(Scales::List(vec![150, 300]))).unwrap();
    let inputs = Inputs::new(content, [style]);
    let mut plan = stylizer.plan(&Inverse::default(), &inputs).unwrap();
    assert_eq!(plan.scales.iter().map(|s| s.tile).collect::<Vec<_>>(), [None, None], "small enough to run whole");
    plan.scales[0].tile = Some(96);
    plan.scales[1].tile = Some(128);
    plan.scales[1].iterations = 3;
    // Nothing fits on this backend: making a plan on it fails, running the plan does not.
    let backend = Inverse { need: u64::MAX / 4, ..Inverse::default() };
    assert!(stylizer.plan(&backend, &inputs).is_err());
    let mut seen = Vec::new();
    let out = stylizer
        .run(&backend, &plan, &inputs, &mut |p: &Progress| {
            seen.push(p.scale);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(
        *backend.tiles.lock().unwrap(),
        [(Size::new(150, 100), Some(96)), (Size::new(300, 200), Some(128))],
        "each scale's evaluator got the plan's tile side"
    );
    assert_eq!((seen.iter().filter(|s| **s == 1).count(), seen.iter().filter(|s| **s == 2).count()), (4, 3));
    assert_eq!((out.iterations, out.image.width, out.image.height), (7, 300, 200));
}

/// In luminance mode every image the objective sees is grey, whatever the start: the
/// content, noise, the content mixed with noise, or a given image (noise starts were once
/// left in colour).
#[test]
fn luminance_mode_evaluates_grey_images_from_every_start() {
    use crate::colour::Colour;
    let (content, style) = (ramp(40, 30), ramp(8, 8));
    for init in [Init::Content, Init::Random, Init::Noise(0.5), Init::Image] {
        for colour in [Colour::Luminance, Colour::Keep] {
            let backend = Inverse::default();
            let config = StyleConfig::default().size(40).iterations(3).init(init).colour(colour).scales(Scales::Off);
            let inputs = Inputs {
                start: (init == Init::Image).then(|| ramp(13, 9)),
                ..Inputs::new(content.clone(), [style.clone()])
            };
            Stylizer::new(config).unwrap().stylize(&backend, &inputs, &mut go).unwrap();
            let coloured = backend.saw_colour.load(Ordering::Relaxed);
            assert_eq!(coloured, colour == Colour::Keep, "{init:?} {colour:?}");
        }
    }
}

/// A video frame's temporal term joins any backend's objective, at every scale: here the
/// optimum is known, per pixel `(t + γ c w) / (1 + γ c)` for the inverted content `t`, the
/// warped frame `w` and its reliability `c` (the two terms are means over the same values).
#[test]
fn a_temporal_target_pulls_the_reliable_pixels_toward_the_warped_frame() {
    use crate::loss::temporal::TemporalTarget;
    let (w, h) = (40, 30);
    let content = ramp(w, h);
    let warped = Image::filled(w, h, 128.0);
    let reliability: Vec<f32> = (0..w * h).map(|i| if i % w < w / 2 { 1.0 } else { 0.0 }).collect();
    let gamma = 3.0;
    let config = StyleConfig::default()
        .size(40)
        .iterations(60)
        .colour(crate::colour::Colour::Keep)
        .scales(Scales::List(vec![20, 40]));
    let inputs = Inputs {
        temporal: vec![TemporalTarget::new(warped, reliability.clone(), gamma).unwrap()],
        ..Inputs::new(content.clone(), [ramp(8, 8)])
    };
    let out = Stylizer::new(config).unwrap().stylize(&Inverse::default(), &inputs, &mut go).unwrap();
    assert!(out.terms.temporal > 0.0);
    let mut worst = 0.0f32;
    for (i, (&x, &c)) in out.image.data.iter().zip(&content.data).enumerate() {
        let (t, r) = (255.0 - c, reliability[i % (w * h)]);
        let want = (t + gamma as f32 * r * 128.0) / (1.0 + gamma as f32 * r);
        worst = worst.max((x - want).abs());
    }
    assert!(worst < 0.05, "worst pixel off by {worst}");
}
