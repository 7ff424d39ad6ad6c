//! `impasto bench`: how fast one iteration is, and where the time goes.
//!
//! Prints, for square images of the given sizes: the median seconds per iteration (forward to
//! relu5_1, the default losses, the image gradient), each conv layer's forward and
//! input-gradient time and GFLOP/s, and the process's peak memory. Compare runs made in one
//! go: this kind of machine varies by up to 2x over minutes.

use std::time::Instant;

use anyhow::Result;

use impasto::image_io::Image;
use impasto::kernels::{self, ConvShape, Filter};
use impasto::loss::{LossConfig, Objective};
use impasto::transfer::noise_image;
use impasto::vgg::{Pooling, Vgg};
use impasto::weights::{self, VggWeights};

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
pub fn run(sizes: &[usize], runs: usize, weights: &VggWeights) -> Result<()> {
    let kernel = kernels::default_kernel();
    println!("impasto bench: {} threads, conv kernel {}", rayon::current_num_threads(), kernel.name());
    for &size in sizes {
        println!("\n## {size}x{size}\n");
        println!(
            "| layer | in -> out channels | size | forward ms | forward GFLOP/s | image-gradient ms | image-gradient GFLOP/s |"
        );
        println!("|---|---|---|---|---|---|---|");
        let (mut side, mut total_flops, mut total_s) = (size, 0.0, 0.0);
        'blocks: for (b, block) in weights.blocks.iter().enumerate() {
            for (k, conv) in block.iter().enumerate() {
                let shape = ConvShape { c_in: conv.c_in, c_out: conv.c_out, height: side, width: side };
                let input = vec![1.0f32; conv.c_in * side * side];
                let grad = vec![1.0f32; conv.c_out * side * side];
                let filter = Filter::new(conv.weight.clone(), conv.c_out, conv.c_in);
                let mut out = vec![0.0f32; conv.c_out * side * side];
                let mut gin = vec![0.0f32; conv.c_in * side * side];
                let f = median_seconds(runs, || kernel.conv(shape, &input, &filter, Some(&conv.bias), true, &mut out));
                let g = median_seconds(runs, || kernel.conv_adjoint(shape, &grad, Some(&out), &filter, &mut gin));
                let flops = shape.flops();
                println!(
                    "| conv{}_{} | {} -> {} | {side} | {:.1} | {:.0} | {:.1} | {:.0} |",
                    b + 1,
                    k + 1,
                    conv.c_in,
                    conv.c_out,
                    f * 1e3,
                    flops / f / 1e9,
                    g * 1e3,
                    flops / g / 1e9
                );
                total_flops += 2.0 * flops;
                total_s += f + g;
                if b == 4 {
                    break 'blocks; // conv5_1 is the deepest layer the default losses use
                }
            }
            side /= 2;
        }
        let net = Vgg::new(weights.clone(), Pooling::Max);
        let config = LossConfig::default();
        let content = noise_image(size, size, 1);
        let style: Image = noise_image(size, size, 2);
        let objective = Objective::new(&net, &config, &content, &[style])?;
        let x = noise_image(size, size, 3);
        let layers: Vec<_> = config.content_layers.iter().chain(&config.style_layers).copied().collect();
        let forward = median_seconds(runs, || {
            net.forward(&x.data, size, size, &layers).expect("forward");
        });
        let fwd = net.forward(&x.data, size, size, &layers)?;
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
        println!(
            "\nconvolutions alone: {:.2} s, {:.0} GFLOP/s over {:.0} GFLOP (direct-convolution count)",
            total_s,
            total_flops / total_s / 1e9,
            total_flops / 1e9,
        );
        println!(
            "forward pass: {forward:.3} s; backward pass: {backward:.3} s; losses: {:.3} s; **one iteration: {it:.3} s**",
            it - forward - backward
        );
    }
    if let Some(peak) = peak_memory() {
        println!("\npeak memory: {:.2} GiB", peak as f64 / (1u64 << 30) as f64);
    }
    Ok(())
}

/// The weights the benchmark uses: the default VGG19, fetched if needed.
pub fn default_weights() -> Result<VggWeights> {
    let path = weights::fetch::ensure_default_weights(&mut |m| eprintln!("impasto: {m}"))?;
    Ok(weights::load(&path, None)?)
}
