//! The run settings from arbitrary values: validation, the schedule of scales, the sizes and the
//! run's layout (memory per scale, a fitted L-BFGS history) never panic, overflow or build unbounded schedules, and what validates is
//! within the documented limits.
#![no_main]
use impasto::Size;
use impasto::device::Device;
use impasto::engine::{Backend, Evaluator, TargetCache};
use impasto::image_io::Image;
use impasto::loss::{LossConfig, ObjectiveSpec, StyleInput};
use impasto::tiles::{Halo, TileGrid};
use impasto::transfer::{
    AdamSettings, Inputs, LbfgsSettings, MAX_ITERATIONS, MAX_LBFGS_HISTORY, MAX_SCALES, MAX_SIZE, OptimizerChoice,
    PyramidSettings, Scales, StyleConfig, Stylizer,
};
use impasto::vgg::{Chw, LayerId};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// A backend that needs a fixed amount of memory per pixel and cannot evaluate.
#[derive(Default)]
struct Sizes {
    targets: TargetCache,
}

impl Backend for Sizes {
    fn name(&self) -> &str {
        "sizes"
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn check_layers(&self, _: &[LayerId]) -> impasto::Result<()> {
        Ok(())
    }
    fn min_input_side(&self, _: &[LayerId]) -> impasto::Result<usize> {
        Ok(16)
    }
    fn shape(&self, _: LayerId, size: Size) -> impasto::Result<Chw> {
        Ok((64, size.height, size.width))
    }
    fn pools_before(&self, _: LayerId) -> impasto::Result<usize> {
        Ok(0)
    }
    fn halo(&self, _: &[LayerId]) -> impasto::Result<Halo> {
        Ok(Halo { pixels: 80, align: 16 })
    }
    fn memory_estimate(&self, size: Size, _: &[LayerId]) -> impasto::Result<u64> {
        Ok((size.pixels() as u64).saturating_mul(1000))
    }
    fn evaluator_memory(&self, _: &LossConfig, grid: &TileGrid, _: usize) -> impasto::Result<u64> {
        Ok((grid.largest_outer().pixels() as u64).saturating_mul(1000))
    }
    fn forward_flops(&self, size: Size, _: &[LayerId]) -> impasto::Result<f64> {
        Ok(size.pixels() as f64 * 1e6)
    }
    fn evaluator<'a>(
        &'a self,
        _: &ObjectiveSpec,
        _: &Image,
        _: &[StyleInput],
        _: Option<usize>,
    ) -> impasto::Result<Box<dyn Evaluator + 'a>> {
        Err(impasto::Error::Config("not for evaluation".into()))
    }
    fn targets(&self) -> &TargetCache {
        &self.targets
    }
}

fn config(u: &mut Unstructured) -> Result<StyleConfig> {
    let f = |u: &mut Unstructured| -> Result<f64> {
        Ok(match u.int_in_range(0..=5)? {
            0 => f64::from_bits(u.arbitrary()?),
            1 => 1.0 + f64::EPSILON * u.int_in_range(0..=4)? as f64,
            _ => u.int_in_range(0..=4000)? as f64 / 1000.0,
        })
    };
    let n = |u: &mut Unstructured| -> Result<usize> {
        Ok(if u.arbitrary()? { u.arbitrary::<u64>()? as usize } else { u.int_in_range(0..=5000)? })
    };
    let mut c = StyleConfig::default()
        .size(n(u)?)
        .iterations(n(u)?)
        .style_scale(f(u)?)
        .style_weight(f(u)?)
        .content_weight(f(u)?)
        .tv_weight(f(u)?);
    c = c.optimizer(if u.arbitrary()? {
        OptimizerChoice::Adam(AdamSettings { lr: f(u)?, average: if u.arbitrary()? { Some(f(u)?) } else { None } })
    } else {
        OptimizerChoice::Lbfgs(LbfgsSettings::default().history(n(u)?))
    });
    c = match u.int_in_range(0..=2)? {
        0 => c.scales(Scales::Auto(PyramidSettings { start: n(u)?, factor: f(u)? })),
        1 => c.scales(Scales::Off),
        _ => {
            let k = u.int_in_range(0..=40)?;
            c.scales(Scales::List((0..k).map(|_| n(u)).collect::<Result<_>>()?))
        }
    };
    if u.arbitrary()? {
        let k = u.int_in_range(0..=40)?;
        c = c.scale_iterations(Some((0..k).map(|_| n(u)).collect::<Result<_>>()?));
    }
    Ok(c)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(c) = config(&mut u) else { return };
    let Ok(()) = c.validate() else { return };
    assert!((1..=MAX_SIZE).contains(&c.size));
    if let OptimizerChoice::Lbfgs(l) = c.optimizer {
        assert!((1..=MAX_LBFGS_HISTORY).contains(&l.history));
    }
    // What validates survives the trip through JSON unchanged.
    let json = serde_json::to_string(&c).expect("a valid configuration serialises");
    assert_eq!(serde_json::from_str::<StyleConfig>(&json).expect("and reads back"), c);
    let schedule = c.schedule().expect("a valid configuration has a schedule");
    assert!(!schedule.is_empty() && schedule.len() <= MAX_SCALES + 1, "{schedule:?}");
    assert_eq!(schedule.last().map(|s| s.0), Some(c.size));
    // Only the content's dimensions matter here.
    let (width, height) = (u.int_in_range(1..=70000).unwrap_or(1), u.int_in_range(1..=70000).unwrap_or(1));
    let content = Image { width, height, data: Vec::new() };
    let out = c.output_size(&content);
    assert!(out.long_side() <= MAX_SIZE && out.short_side() >= 1, "{out}");
    assert!(schedule.iter().map(|s| s.1).sum::<usize>() <= MAX_ITERATIONS);
    // Laying the run out (each scale's memory, a fitted history) never panics or overflows, and
    // the plan made passes its own check.
    let inputs = Inputs::new(content.clone(), [content.clone()]);
    let net = Sizes::default();
    if let Ok(stylizer) = Stylizer::new(c) {
        if let Ok(plan) = stylizer.plan(&net, &inputs) {
            assert_eq!(plan.scales.len(), schedule.len());
            assert!(plan.iterations() <= MAX_ITERATIONS);
            if net.budget().is_none() {
                plan.check(stylizer.config(), &net, &inputs).expect("a plan made passes its check");
            }
        }
    }
});
