//! `impasto plan` (`stylize --dry-run`): a run's layout before it runs, each scale's size, tiles,
//! L-BFGS history, peak memory and time, and what was changed to fit the memory.
//!
//! Times come from this machine's speed: one evaluation (forward and image gradient) of the
//! network at 256x256 px, timed once and cached in `$IMPASTO_HOME/calibration.json` per CPU
//! model, thread count and backend, as an effective rate of convolution FLOPs. An evaluation at
//! any size then costs its convolution FLOPs over that rate: twice a forward pass untiled, three
//! forward passes over each tile (with its halo) tiled (the statistics pass, the pass that the
//! gradient goes back through, and the backward pass).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use impasto::Size;
use impasto::engine::Backend;
use impasto::image_io::Image;
use impasto::loss::{LossConfig, ObjectiveSpec, StyleInput};
use impasto::memory::gib;
use impasto::plan::{Plan, ScalePlan};
use impasto::transfer::StyleConfig;

/// The side of the calibration evaluation.
const CALIBRATION_SIDE: usize = 256;

/// The machine's effective convolution FLOP/s on `net`, from the cache or measured now (and
/// cached); the second value says which.
pub fn calibrate(net: &dyn Backend) -> Result<(f64, &'static str)> {
    let key = format!(
        "{} | {} threads | {} | {}",
        cpu_model(),
        rayon::current_num_threads(),
        net.name(),
        env!("CARGO_PKG_VERSION")
    );
    let path = cache_path();
    let mut cache: serde_json::Map<String, serde_json::Value> = path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    if let Some(rate) = cache.get(&key).and_then(|v| v.as_f64()).filter(|r| *r > 0.0) {
        return Ok((rate, "cached"));
    }
    errln!(
        "impasto: timing one evaluation on the {} for the plan's times (once; kept in {})",
        net.name(),
        path.as_ref().map_or("no cache".into(), |p| p.display().to_string())
    );
    let loss = LossConfig::default();
    let side = CALIBRATION_SIDE;
    let ramp = |k: usize| Image {
        width: side,
        height: side,
        data: (0..3 * side * side).map(|i| ((i * k) % 251) as f32).collect(),
    };
    let styles = [StyleInput::new(ramp(13))];
    let spec = ObjectiveSpec::new(net, &loss, Size::square(side), &styles)?;
    let objective = net.evaluator(&spec, &ramp(7), &styles, None)?;
    let x = ramp(3);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        objective.evaluate(&x, true)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let rate = 2.0 * net.forward_flops(Size::square(side), &loss.layers())? / best;
    cache.insert(key, rate.into());
    if let Some(p) = &path {
        // A cache that cannot be written only means measuring again next time.
        let _ = std::fs::write(p, serde_json::to_string_pretty(&cache)?);
    }
    Ok((rate, "measured now"))
}

fn cache_path() -> Option<PathBuf> {
    impasto::weights::fetch::cache_dir().ok().map(|d| d.join("calibration.json"))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Seconds one evaluation of `scale` takes at `rate` FLOP/s.
pub fn evaluation_seconds(
    net: &dyn Backend,
    config: &StyleConfig,
    plan: &Plan,
    scale: &ScalePlan,
    rate: f64,
) -> Result<f64> {
    let layers = config.loss.layers();
    let flops = match scale.tile {
        Some(_) => {
            let mut sum = 0.0;
            for t in &scale.grid(plan.halo).tiles {
                sum += 3.0 * net.forward_flops(t.outer.size(), &layers)?;
            }
            sum
        }
        None => 2.0 * net.forward_flops(scale.size, &layers)?,
    };
    Ok(flops / rate)
}

/// Seconds a whole run of `plan` takes at `rate` FLOP/s: each scale's evaluations.
pub fn run_seconds(net: &dyn Backend, config: &StyleConfig, plan: &Plan, rate: f64) -> Result<f64> {
    plan.scales.iter().map(|s| Ok(evaluation_seconds(net, config, plan, s, rate)? * s.iterations as f64)).sum()
}

/// A duration as people read it: `42 s`, `3m 07s`, `2h 05m`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Prints the plan: a table of the scales and the totals.
pub fn print(net: &dyn Backend, config: &StyleConfig, run: &Plan) -> Result<()> {
    let (rate, how) = calibrate(net)?;
    let budget = run.budget.map_or("not known".to_string(), gib);
    outln!(
        "impasto plan: {} in {} scale(s) on the {}; memory available {budget}; speed {:.1} GFLOP/s ({how})",
        run.output,
        run.scales.len(),
        net.name(),
        rate / 1e9,
    );
    outln!();
    outln!("| scale | pixels | iterations | tiles | L-BFGS pairs | peak memory | per iteration | time |");
    outln!("|---|---|---|---|---|---|---|---|");
    let (mut total, mut peak) = (0.0, 0u64);
    for (k, s) in run.scales.iter().enumerate() {
        let each = evaluation_seconds(net, config, run, s, rate)?;
        let time = each * s.iterations as f64;
        total += time;
        peak = peak.max(s.memory);
        let tiles = match s.tile {
            Some(t) => format!("{} of {t} px", s.grid(run.halo).tiles.len()),
            None => "whole".into(),
        };
        let pairs = s.history.map_or("- (Adam)".into(), |h| h.to_string());
        outln!(
            "| {} | {} | {} | {tiles} | {pairs} | {} | {:.2} s | {} |",
            k + 1,
            s.size,
            s.iterations,
            gib(s.memory),
            each,
            duration(time)
        );
    }
    let iterations = run.iterations();
    outln!("| total | | {iterations} | | | {} (peak) | | {} |", gib(peak), duration(total));
    let changes = run.adjustments(config);
    outln!();
    if changes.is_empty() {
        outln!("Nothing changed to fit the memory.");
    }
    for line in changes {
        outln!("To fit: {line}.");
    }
    Ok(())
}
