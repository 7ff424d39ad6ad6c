//! `impasto bench`: how fast one iteration is, and where the time goes.
//!
//! Prints, for square images of the given sizes: the median seconds per iteration (forward to
//! relu5_1, the default losses, the image gradient), each conv layer's forward and
//! input-gradient time and GFLOP/s, and the process's peak memory. Compare runs made in one
//! go: this kind of machine varies by up to 2x over minutes.

use std::time::Instant;

use anyhow::Result;

use impasto::Size;
use impasto::engine::Backend;
use impasto::image_io::Image;
use impasto::kernels::ConvShape;
use impasto::loss::{LossConfig, ObjectiveSpec, StyleInput};
use impasto::transfer::noise_image;
use impasto::vgg::{LayerId, Pooling, Vgg, Workspace};
use impasto::weights::{self, VggWeights};

/// The largest benchmark size.
pub const MAX_SIZE: usize = 16_384;

/// Median of `runs` timings of `f`, in seconds, after one warm-up call.
fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// The process's peak resident memory (`VmHWM`), in bytes.
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Runs the benchmark at each size and prints the tables.
pub fn run(sizes: &[usize], runs: usize, weights: VggWeights) -> Result<()> {
    // One network for everything: the per-layer timings use its filters (and their cached
    // transforms) and its kernel, as a run does.
    let net = Vgg::new(weights, Pooling::Max);
    let kernel = net.kernel();
    outln!("impasto bench: {} threads, conv kernel {}", rayon::current_num_threads(), kernel.name());
    let deepest: LayerId = "relu5_1".parse()?; // the deepest layer the default losses use
    for &size in sizes {
        // The layer buffers below and the objective's passes, against the memory budget.
        let loss = LossConfig::default();
        let square = Size::square(size);
        let need = impasto::engine::cpu::evaluator_memory(&net, &loss, &impasto::tiles::TileGrid::whole(square), 0)?
            .saturating_add(net.memory_estimate(square, &loss.style_layers)?)
            .saturating_add((8 * 12 + 3 * 4 * 64) * (size * size) as u64);
        if let Err(avail) = impasto::memory::fits(need) {
            anyhow::bail!(
                "--sizes {size}: the benchmark needs about {} of memory but only {} is available",
                impasto::memory::gib(need),
                impasto::memory::gib(avail)
            );
        }
        outln!("\n## {size}x{size}\n");
        outln!(
            "| layer | in -> out channels | size | forward ms | forward GFLOP/s | image-gradient ms | image-gradient GFLOP/s |"
        );
        outln!("|---|---|---|---|---|---|---|");
        let (mut total_flops, mut total_s) = (0.0, 0.0);
        for (id, filter, bias) in net.convs().take_while(|(id, _, _)| *id <= deepest) {
            let side = size >> net.pools_before(id)?;
            let (c_in, c_out) = (filter.c_in(), filter.c_out());
            let shape = ConvShape { c_in, c_out, height: side, width: side };
            let input = vec![1.0f32; c_in * side * side];
            let grad = vec![1.0f32; c_out * side * side];
            let mut out = vec![0.0f32; c_out * side * side];
            let mut gin = vec![0.0f32; c_in * side * side];
            let f = median_seconds(runs, || kernel.conv(shape, &input, filter, Some(bias), true, &mut out));
            let g = median_seconds(runs, || kernel.conv_adjoint(shape, &grad, Some(&out), filter, &mut gin));
            let flops = shape.flops();
            outln!(
                "| conv{}_{} | {c_in} -> {c_out} | {side} | {:.1} | {:.0} | {:.1} | {:.0} |",
                id.block,
                id.index,
                f * 1e3,
                flops / f / 1e9,
                g * 1e3,
                flops / g / 1e9
            );
            total_flops += 2.0 * flops;
            total_s += f + g;
        }
        let config = LossConfig::default();
        let content = noise_image(size, size, 1);
        let style: Image = noise_image(size, size, 2);
        let styles = [StyleInput::new(style)];
        let spec = ObjectiveSpec::new(&net, &config, square, &styles)?;
        let objective = net.evaluator(&spec, &content, &styles, None)?;
        let x = noise_image(size, size, 3);
        let layers: Vec<_> = config.content_layers.iter().chain(&config.style_layers).copied().collect();
        // Each pass's buffers go back to the workspace for the next, as in a run.
        let ws = Workspace::new();
        let forward = median_seconds(runs, || {
            ws.recycle(net.forward(&ws, &x.data, square, &layers).expect("forward"), []);
        });
        let fwd = net.forward(&ws, &x.data, square, &layers)?;
        let grads: Vec<_> = layers
            .iter()
            .map(|&l| net.activation(&fwd, l).map(|(a, _)| (l, vec![1e-3f32; a.len()])))
            .collect::<impasto::Result<_>>()?;
        let backward = median_seconds(runs, || {
            net.backward(&fwd, &grads).expect("backward");
        });
        drop(fwd);
        let it = median_seconds(runs, || {
            objective.evaluate(&x, true).expect("evaluate");
        });
        outln!(
            "\nconvolutions alone: {:.2} s, {:.0} GFLOP/s over {:.0} GFLOP (direct-convolution count)",
            total_s,
            total_flops / total_s / 1e9,
            total_flops / 1e9,
        );
        outln!(
            "forward pass: {forward:.3} s; backward pass: {backward:.3} s; losses: {:.3} s; **one iteration: {it:.3} s**",
            it - forward - backward
        );
    }
    if let Some(peak) = peak_memory() {
        outln!("\npeak memory: {:.2} GiB", peak as f64 / (1u64 << 30) as f64);
    }
    Ok(())
}

/// The benchmark on the GPU: each conv layer's forward and input-gradient time, then one whole
/// iteration (the default losses and the image gradient, read back) through the GPU objective.
#[cfg(feature = "gpu")]
pub fn run_gpu(sizes: &[usize], runs: usize, weights: VggWeights) -> Result<()> {
    use impasto::gpu::{Gpu, GpuVgg};
    let gpu = Gpu::find(false)?.ok_or_else(|| anyhow::anyhow!("--device gpu: no GPU adapter found"))?;
    outln!(
        "impasto bench on the GPU: {}{}",
        gpu.name(),
        if gpu.is_software() { " (a software driver: these times say nothing of a GPU)" } else { "" }
    );
    let net = GpuVgg::new(gpu, Vgg::new(weights, Pooling::Max));
    let deepest: LayerId = "relu5_1".parse()?;
    let config = LossConfig::default();
    for &size in sizes {
        let content = noise_image(size, size, 1);
        let style: Image = noise_image(size, size, 2);
        let square = Size::square(size);
        net.evaluator_memory(&config, &impasto::tiles::TileGrid::whole(square), 0)?;
        outln!("\n## {size}x{size}\n");
        outln!(
            "| layer | in -> out channels | size | forward ms | forward GFLOP/s | image-gradient ms | image-gradient GFLOP/s |"
        );
        outln!("|---|---|---|---|---|---|---|");
        let (mut total_flops, mut total_s) = (0.0, 0.0);
        for t in net.time_convs(size, deepest, runs)? {
            let flops = ConvShape { c_in: t.c_in, c_out: t.c_out, height: t.side, width: t.side }.flops();
            outln!(
                "| conv{}_{} | {} -> {} | {} | {:.2} | {:.0} | {:.2} | {:.0} |",
                t.layer.block,
                t.layer.index,
                t.c_in,
                t.c_out,
                t.side,
                t.forward * 1e3,
                flops / t.forward / 1e9,
                t.gradient * 1e3,
                flops / t.gradient / 1e9
            );
            total_flops += 2.0 * flops;
            total_s += t.forward + t.gradient;
        }
        let styles = [StyleInput::new(style)];
        let spec = ObjectiveSpec::new(&net, &config, square, &styles)?;
        let objective = net.evaluator(&spec, &content, &styles, None)?;
        let x = noise_image(size, size, 3);
        let it = median_seconds(runs, || {
            objective.evaluate(&x, true).expect("evaluate");
        });
        outln!(
            "\nconvolutions alone: {total_s:.3} s, {:.0} GFLOP/s over {:.0} GFLOP",
            total_flops / total_s / 1e9,
            total_flops / 1e9
        );
        outln!("**one iteration: {it:.4} s** (upload, forward, losses, backward, gradient read back)");
    }
    Ok(())
}

/// The weights the benchmark uses: the default VGG19, fetched if needed.
pub fn default_weights() -> Result<VggWeights> {
    let path = weights::fetch::ensure_default_weights(&mut |m| errln!("impasto: {m}"))?;
    Ok(weights::load(&path, None)?)
}

/// `impasto bench --targets N`: N content images after one style in one process, each a short
/// run at `size`, once with the style targets kept between images (the default) and once with
/// them computed afresh for each; the table shows the seconds per image and how many times the
/// targets were computed.
pub fn run_targets(count: usize, size: usize, iterations: usize, weights: VggWeights) -> Result<()> {
    use impasto::transfer::{Inputs, Scales, StyleConfig, Stylizer};
    let net = Vgg::new(weights, Pooling::Max);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let photo = impasto::image_io::load(&dir.join("tubingen.jpg"))?;
    let style = impasto::image_io::load(&dir.join("starry_night.jpg"))?;
    // N photos of one size: crops of the example at N offsets.
    let (w, h) = (photo.width * 3 / 4, photo.height * 3 / 4);
    let photos: Vec<Image> = (0..count)
        .map(|k| {
            let (x0, y0) = ((k * 37) % (photo.width - w), (k * 23) % (photo.height - h));
            let rect = impasto::tiles::Rect { x: x0, y: y0, width: w, height: h };
            Image { width: w, height: h, data: impasto::tiles::crop(&photo.data, 3, photo.width, rect).into_owned() }
        })
        .collect();
    let stylizer = Stylizer::new(StyleConfig::default().size(size).iterations(iterations).scales(Scales::Off))?;
    outln!(
        "impasto bench --targets {count}: {count} photos of {w}x{h} at {size} px after one painting, {iterations} \
         evaluations each, {} threads\n",
        rayon::current_num_threads()
    );
    outln!("| style targets | computed | seconds per photo (mean) | first photo | others (mean) |");
    outln!("|---|---|---|---|---|");
    let mut means = Vec::new();
    for (label, budget) in
        [("computed for each photo", 0), ("kept between photos", impasto::engine::targets::DEFAULT_BUDGET)]
    {
        net.targets().clear();
        net.targets().set_budget(budget);
        let before = net.targets().computed();
        let mut seconds = Vec::new();
        for p in &photos {
            let start = Instant::now();
            stylizer.stylize(
                &net,
                &Inputs::new(p.clone(), [style.clone()]),
                &mut |_: &impasto::transfer::Progress| std::ops::ControlFlow::Continue(()),
            )?;
            seconds.push(start.elapsed().as_secs_f64());
        }
        let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
        let rest = seconds[1..].iter().sum::<f64>() / (seconds.len() - 1).max(1) as f64;
        outln!("| {label} | {} | {mean:.3} | {:.3} | {rest:.3} |", net.targets().computed() - before, seconds[0]);
        means.push(rest);
    }
    outln!(
        "\nKeeping the targets saves {:.3} s per photo after the first ({:.1}% of a photo's time).",
        means[0] - means[1],
        100.0 * (means[0] - means[1]) / means[0]
    );
    Ok(())
}

/// The optical flow's end-point error on each synthetic motion and its time per frame (one
/// direction; a video frame needs two), for 16:9 frames `width` pixels wide.
pub fn run_flow(widths: &[usize], runs: usize) {
    use impasto::video::{FlowSettings, dense_flow, synthetic};
    outln!("impasto bench --flow: dense inverse search, {} threads", rayon::current_num_threads());
    outln!("{:>10}  {:<14} {:>12} {:>14} {:>10}", "size", "motion", "EPE (px)", "no-flow EPE", "ms/frame");
    for &w in widths {
        let h = (w * 9 / 16).max(16);
        for m in synthetic::motions(w, h) {
            let settings = FlowSettings::default();
            let mut flow = None;
            let seconds = median_seconds(runs, || flow = Some(dense_flow(&m.from, &m.to, &settings)));
            let epe = flow.expect("timed at least once").end_point_error(&m.truth, Some(&m.mask));
            let still = impasto::video::Flow::zero(w, h).end_point_error(&m.truth, Some(&m.mask));
            outln!("{:>10}  {:<14} {:>12.3} {:>14.3} {:>10.1}", format!("{w}x{h}"), m.name, epe, still, seconds * 1e3);
        }
    }
}
