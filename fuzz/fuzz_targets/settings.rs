//! The run settings from arbitrary values: validation, the schedule of scales, the sizes and the
//! run's layout (memory per scale, a fitted L-BFGS history) never panic, overflow or build unbounded schedules, and what validates is
//! within the documented limits.
#![no_main]
use impasto::evaluator::{Backend, Evaluator};
use impasto::image_io::Image;
use impasto::loss::{LossConfig, StyleInput};
use impasto::transfer::{
    AdamSettings, Inputs, LbfgsSettings, MAX_LBFGS_HISTORY, MAX_SCALES, MAX_SIZE, OptimizerChoice, PyramidSettings,
    Scales, StyleConfig, Stylizer,
};
use impasto::vgg::LayerId;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// A backend that needs a fixed amount of memory per pixel and cannot evaluate.
struct Sizes;

impl Backend for Sizes {
    fn name(&self) -> &str {
        "sizes"
    }
    fn check_layers(&self, _: &[LayerId]) -> impasto::Result<()> {
        Ok(())
    }
    fn min_input_side(&self, _: &[LayerId]) -> impasto::Result<usize> {
        Ok(16)
    }
    fn memory_estimate(&self, width: usize, height: usize, _: &[LayerId]) -> impasto::Result<u64> {
        Ok((width as u64).saturating_mul(height as u64).saturating_mul(1000))
    }
    fn forward_flops(&self, width: usize, height: usize, _: &[LayerId]) -> impasto::Result<f64> {
        Ok(width as f64 * height as f64 * 1e6)
    }
    fn evaluator<'a>(
        &'a self,
        _: &LossConfig,
        _: &Image,
        _: &[StyleInput],
    ) -> impasto::Result<Box<dyn Evaluator + 'a>> {
        Err(impasto::Error::Config("not for evaluation".into()))
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
        OptimizerChoice::Lbfgs(LbfgsSettings { history: n(u)?, ..Default::default() })
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
    let (w, h) = c.output_size(&content);
    assert!(w.max(h) <= MAX_SIZE && w >= 1 && h >= 1, "{w}x{h}");
    // Laying the run out (each scale's memory, a fitted history) never panics or overflows.
    let inputs = Inputs::new(content.clone(), [content.clone()]);
    if let Ok(stylizer) = Stylizer::new(&Sizes, c) {
        if let Ok(run) = stylizer.check(&inputs) {
            assert_eq!(run.scales.len(), schedule.len());
        }
    }
});
