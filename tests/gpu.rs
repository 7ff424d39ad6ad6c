//! The GPU backend against the CPU path: every kernel on awkward shapes, the whole objective and
//! its gradient on the real network, a short run, and the CLI's `--device`.
//!
//! They run on any adapter `wgpu` finds; in CI that is Mesa's lavapipe (a Vulkan driver on the
//! CPU), installed by `.ci/run`, which sets `IMPASTO_REQUIRE_GPU=1` so that they cannot skip.
//! Elsewhere, with no adapter at all, each says so and passes.

use std::ops::ControlFlow;
use std::sync::OnceLock;

use impasto::Size;
use impasto::engine::Backend;
use impasto::gpu::{Gpu, GpuVgg, probe};
use impasto::image_io::Image;
use impasto::kernels::{Conv3x3, ConvShape, Filter, Reference};
use impasto::loss::{LossConfig, LossTerms, ObjectiveSpec, StyleInput, StyleLoss, total_variation};
use impasto::transfer::{Inputs, Progress, Scales, StyleConfig, Stylizer};
use impasto::vgg::{LayerId, Pooling, Vgg};
use impasto::weights;

use crate::util::{Lcg, impasto, real_weights_path, tiny_weights};

/// The GPU the tests share, or `None` (with a message) where there is none and none is required.
fn gpu() -> Option<Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| {
        let found = Gpu::find(false).expect("opening the GPU");
        if found.is_none() && std::env::var_os("IMPASTO_REQUIRE_GPU").is_some_and(|v| v == "1") {
            panic!("IMPASTO_REQUIRE_GPU=1 but wgpu finds no adapter (install mesa-vulkan-drivers)");
        }
        if let Some(g) = &found {
            eprintln!("GPU tests on {}", g.name());
        }
        found
    });
    if gpu.is_none() {
        eprintln!("skipped: no GPU adapter (wgpu finds none; mesa-vulkan-drivers gives a software one)");
    }
    gpu.clone()
}

/// The largest difference relative to the largest magnitude of `want`.
fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    got.iter().zip(want).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max) / scale
}

/// The conv kernel, forward (bias, ReLU) and as the input gradient (flipped weights, ReLU mask
/// fused), against the CPU's reference loop on shapes that fill no tile evenly.
#[test]
fn conv_kernel_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Lcg(41);
    for (c_in, c_out, h, w) in
        [(3, 5, 7, 9), (13, 70, 11, 6), (64, 3, 5, 67), (1, 1, 1, 1), (20, 130, 9, 8), (17, 64, 1, 33)]
    {
        let shape = ConvShape { c_in, c_out, height: h, width: w };
        let input = rng.vec(c_in * h * w, 1.0);
        let filter = Filter::new(rng.vec(c_out * c_in * 9, 0.5), c_out, c_in);
        let bias = rng.vec(c_out, 0.3);
        let mut want = vec![0.0; c_out * h * w];
        Reference.conv(shape, &input, &filter, Some(&bias), true, &mut want);
        let got = probe::conv(&gpu, &input, filter.weight(), &bias, &[0.0], (c_in, c_out, h, w), 1 | 4).unwrap();
        let e = relative_error(&got, &want);
        assert!(e < 1e-5, "forward {shape:?}: {e}");

        // The input gradient through a ReLU: the output gradient is masked where the forward
        // output was not positive.
        let grad_out = rng.vec(c_out * h * w, 1.0);
        let relu_out: Vec<f32> = rng.vec(c_out * h * w, 1.0).iter().map(|v| v.max(0.0)).collect();
        let mut want = vec![0.0; c_in * h * w];
        Reference.conv_adjoint(shape, &grad_out, Some(&relu_out), &filter, &mut want);
        let flipped = filter.flipped().weight();
        let got = probe::conv(&gpu, &grad_out, flipped, &[0.0], &relu_out, (c_out, c_in, h, w), 2).unwrap();
        let e = relative_error(&got, &want);
        assert!(e < 1e-5, "adjoint {shape:?}: {e}");
    }
}

/// The matrix product, both layouts of `b`, with and without the k range split.
#[test]
fn matmul_kernel_matches_a_plain_product() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Lcg(42);
    for (m, n, k, b_nk, splits) in [
        (64, 64, 1000, true, 1),
        (70, 70, 4999, true, 3),
        (5, 300, 7, false, 1),
        (130, 67, 130, false, 1),
        (1, 1, 1, true, 1),
        (3, 3, 40000, true, 9),
    ] {
        let a = rng.vec(m * k, 1.0);
        let b = rng.vec(k * n, 1.0);
        let alpha = 0.37;
        let want: Vec<f32> = (0..m * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                let s: f64 =
                    (0..k).map(|j| a[r * k + j] as f64 * if b_nk { b[c * k + j] } else { b[j * n + c] } as f64).sum();
                (alpha as f64 * s) as f32
            })
            .collect();
        let got = probe::matmul(&gpu, &a, &b, (m, n, k), b_nk, splits, alpha).unwrap();
        let e = relative_error(&got, &want);
        assert!(e < 1e-4, "{m}x{n}x{k} nk={b_nk} splits={splits}: {e}");
    }
}

fn params(u: &[u32], f: &[f32]) -> ([u32; 8], [f32; 8]) {
    let (mut a, mut b) = ([0; 8], [0.0; 8]);
    a[..u.len()].copy_from_slice(u);
    b[..f.len()].copy_from_slice(f);
    (a, b)
}

/// Pooling forward and backward (max with ties and odd sizes, average), against loops written
/// here.
#[test]
fn pooling_kernels_match_the_definition() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Lcg(43);
    for (c, h, w) in [(3, 7, 9), (2, 2, 2), (5, 12, 3), (1, 33, 64)] {
        // Rounded values make ties common: the first maximum (row-major) must win.
        let x: Vec<f32> = rng.vec(c * h * w, 3.0).iter().map(|v| v.round()).collect();
        let (oh, ow) = (h / 2, w / 2);
        let g = rng.vec(c * oh * ow, 1.0);
        for mode in [0u32, 1] {
            let mut fwd = vec![0.0; c * oh * ow];
            let mut bwd = vec![0.0; c * h * w];
            for ch in 0..c {
                for y in 0..oh {
                    for xx in 0..ow {
                        let at = |dy: usize, dx: usize| ch * h * w + (2 * y + dy) * w + 2 * xx + dx;
                        let o = ch * oh * ow + y * ow + xx;
                        let window = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                        if mode == 0 {
                            let mut best = window[0];
                            for &i in &window[1..] {
                                if x[i] > x[best] {
                                    best = i;
                                }
                            }
                            fwd[o] = x[best];
                            bwd[best] = g[o];
                        } else {
                            fwd[o] = 0.25 * window.iter().map(|&i| x[i]).sum::<f32>();
                            window.iter().for_each(|&i| bwd[i] = 0.25 * g[o]);
                        }
                    }
                }
            }
            let p = params(&[c as u32, h as u32, w as u32, mode], &[]);
            let (got, _) =
                probe::elementwise(&gpu, "pool_forward", &x, &[0.0], &vec![9.0; c * oh * ow], 1, p, c * oh * ow)
                    .unwrap();
            assert_eq!(got, fwd, "forward {c}x{h}x{w} mode {mode}");
            let (got, _) =
                probe::elementwise(&gpu, "pool_backward", &x, &g, &vec![9.0; c * h * w], 1, p, c * h * w).unwrap();
            assert_eq!(got, bwd, "backward {c}x{h}x{w} mode {mode}");
        }
    }
}

/// Total variation (gradient and per-pixel loss) against the CPU's, and the partial sums.
#[test]
fn total_variation_and_sums_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Lcg(44);
    for (w, h) in [(13, 7), (1, 5), (6, 1), (64, 48)] {
        let img = rng.image(w, h);
        let weight = 0.7;
        let mut want_grad = vec![0.0; 3 * w * h];
        let want = total_variation(&img, weight, Some(&mut want_grad));
        let nx = 3 * h * (w - 1);
        let ny = 3 * (h - 1) * w;
        let per = |pairs: usize| if pairs > 0 { weight / pairs as f64 } else { 0.0 } as f32;
        let p = params(&[h as u32, w as u32], &[2.0 * per(nx), 2.0 * per(ny), per(nx), per(ny)]);
        let (grad, elements) = probe::elementwise(
            &gpu,
            "total_variation",
            &img.data,
            &[0.0],
            &vec![0.0; 3 * w * h],
            3 * w * h,
            p,
            3 * w * h,
        )
        .unwrap();
        assert!(relative_error(&grad, &want_grad) < 1e-5, "{w}x{h} gradient");
        let n = elements.len();
        let (sums, _) = probe::elementwise(
            &gpu,
            "reduce",
            &elements,
            &[0.0],
            &[0.0],
            n.div_ceil(4096),
            params(&[n as u32, 0, 0], &[]),
            n,
        )
        .map(|(a, b)| (b, a))
        .unwrap();
        let got: f64 = sums.iter().map(|v| *v as f64).sum();
        assert!((got - want).abs() <= 1e-5 * want.abs(), "{w}x{h}: {got} vs {want}");
    }
    // Sums of squared differences over many workgroups.
    let (x, y) = (rng.vec(100_003, 2.0), rng.vec(100_003, 2.0));
    let want: f64 = x.iter().zip(&y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let (_, sums) = probe::elementwise(
        &gpu,
        "reduce",
        &x,
        &y,
        &[0.0],
        100_003usize.div_ceil(4096),
        params(&[100_003, 1, 0], &[]),
        100_003,
    )
    .unwrap();
    let got: f64 = sums.iter().map(|v| *v as f64).sum();
    assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
}

fn config() -> LossConfig {
    LossConfig { tv_weight: 1e-3, ..LossConfig::default() }
}

/// The objective's terms and gradient on the GPU and on the CPU, both engines given the one
/// specification built here (and the GPU backend builds the same one): terms within 1e-4, the
/// gradient within 1e-3 of its norm.
fn compare(
    cpu: &Vgg,
    gpu: &GpuVgg,
    config: &LossConfig,
    content: &Image,
    styles: &[StyleInput],
    x: &Image,
    what: &str,
) {
    compare_tiled(cpu, gpu, config, content, styles, x, None, what);
}

#[allow(clippy::too_many_arguments)]
fn compare_tiled(
    cpu: &Vgg,
    gpu: &GpuVgg,
    config: &LossConfig,
    content: &Image,
    styles: &[StyleInput],
    x: &Image,
    tile: Option<usize>,
    what: &str,
) {
    let size = Size::new(content.width, content.height);
    let spec = ObjectiveSpec::new(cpu, config, size, styles).unwrap();
    assert_eq!(spec, ObjectiveSpec::new(gpu, config, size, styles).unwrap(), "{what}: one specification");
    let (want, want_grad) = cpu.evaluator(&spec, content, styles, None).unwrap().evaluate(x, true).unwrap();
    let objective = gpu.evaluator(&spec, content, styles, tile).unwrap();
    if tile.is_some() {
        assert!(objective.tiles() > 1, "{what}: tiled");
    }
    let (got, grad) = objective.evaluate(x, true).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1e-9 * want.total.abs());
    let LossTerms { total, content: c, style, tv, .. } = got;
    assert!(
        close(total, want.total) && close(c, want.content) && close(style, want.style) && close(tv, want.tv),
        "{what}: {got:?} vs {want:?}"
    );
    let (g, w) = (grad.unwrap(), want_grad.unwrap());
    let err: f64 = g.iter().zip(&w).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
    eprintln!("{what}: terms {got:?} vs {want:?}; gradient off by {:.1e} of its norm", err / norm);
    assert!(err < 1e-3 * norm, "{what}: gradient off by {err} of {norm}");
    // Without the gradient: the same terms.
    let (again, none) = objective.evaluate(x, false).unwrap();
    assert!(none.is_none() && close(again.total, want.total), "{what}: {again:?}");
}

/// Tiny random networks (every kernel, both poolings, odd sizes), then the real VGG19.
#[test]
fn the_objective_matches_the_cpu_on_tiny_networks() {
    let Some(gpu) = gpu() else { return };
    for (seed, pooling, (w, h)) in
        [(1, Pooling::Max, (21, 18)), (2, Pooling::Avg, (16, 19)), (3, Pooling::Max, (37, 29))]
    {
        let weights = tiny_weights(seed, [4, 6, 8, 8, 8]);
        let cpu = Vgg::new(weights.clone(), pooling);
        let on_gpu = GpuVgg::new(gpu.clone(), Vgg::new(weights, pooling));
        let mut rng = Lcg(seed + 100);
        let (content, x) = (rng.image(w, h), rng.image(w, h));
        let styles = [StyleInput::new(rng.image(20, 24)), StyleInput::new(rng.image(31, 17)).blend(3.0)];
        compare(&cpu, &on_gpu, &config(), &content, &styles, &x, &format!("seed {seed}"));
        // Pre-ReLU layers, several content layers, a zero weight.
        let layered = LossConfig {
            content_layers: vec!["conv4_2".parse().unwrap(), LayerId::relu(2, 1)],
            style_layers: vec!["conv1_1".parse().unwrap(), LayerId::relu(1, 1), "pool2".parse().unwrap()],
            style_weight: 0.0,
            ..config()
        };
        compare(&cpu, &on_gpu, &layered, &content, &styles, &x, &format!("seed {seed}, conv layers"));
        let layered = LossConfig { style_weight: 50.0, style_layer_weights: Some(vec![1.0, 0.5, 2.0]), ..layered };
        compare(&cpu, &on_gpu, &layered, &content, &styles, &x, &format!("seed {seed}, conv layers, layer weights"));
    }
}

/// Region masks and a source mask, and a region that is all black.
#[test]
fn masks_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let weights = tiny_weights(7, [4, 6, 8, 8, 8]);
    let cpu = Vgg::new(weights.clone(), Pooling::Max);
    let on_gpu = GpuVgg::new(gpu, Vgg::new(weights, Pooling::Max));
    let mut rng = Lcg(7);
    let (content, x) = (rng.image(40, 30), rng.image(40, 30));
    let left: Image = {
        let mut m = Image::filled(40, 30, 0.0);
        for c in 0..3 {
            for y in 0..30 {
                for xx in 0..17 {
                    m.data[c * 1200 + y * 40 + xx] = 255.0;
                }
            }
        }
        m
    };
    let right = Image { data: left.data.iter().map(|v| 255.0 - v).collect(), ..left.clone() };
    let styles = [
        StyleInput::new(rng.image(24, 24)).region_mask(left),
        StyleInput::new(rng.image(32, 20)).region_mask(right).source_mask(rng.image(16, 10)).blend(2.0),
    ];
    compare(&cpu, &on_gpu, &config(), &content, &styles, &x, "regions");
    let styles = [StyleInput::new(rng.image(24, 24)).region_mask(Image::filled(40, 30, 0.0))];
    compare(&cpu, &on_gpu, &config(), &content, &styles, &x, "a black region");
}

fn real_pair(rng: &mut Lcg, w: usize, h: usize) -> (Image, Image, Image) {
    let content = impasto::image_io::resize(&crate::util::fixture_image("content.png"), w, h);
    let style = impasto::image_io::resize(&crate::util::fixture_image("style.png"), 80, 64);
    let x = Image {
        data: content.data.iter().map(|v| (v + 20.0 * rng.next()).clamp(0.0, 255.0)).collect(),
        ..content.clone()
    };
    (content, style, x)
}

/// The real VGG19 at 64-96 px: the objective and gradient as on the CPU, both poolings.
#[test]
fn the_objective_matches_the_cpu_on_vgg19() {
    let Some(gpu) = gpu() else { return };
    for pooling in [Pooling::Max, Pooling::Avg] {
        let cpu = Vgg::new(weights::load(&real_weights_path(), None).unwrap(), pooling);
        let on_gpu = GpuVgg::new(gpu.clone(), Vgg::new(weights::load(&real_weights_path(), None).unwrap(), pooling));
        let mut rng = Lcg(11);
        let (content, style, x) = real_pair(&mut rng, 96, 70);
        compare(&cpu, &on_gpu, &config(), &content, &[StyleInput::new(style)], &x, &format!("vgg19 {pooling:?}"));
    }
}

/// 20 iterations at 128 px on the real network end at the CPU run's objective (1e-3). With Adam:
/// L-BFGS's line search and box amplify the last bits of float rounding, so that two correct
/// CPU kernels (Winograd and im2col) already end 9% apart after 20 of its iterations (measured,
/// README "GPU"); Adam's trajectory does not.
#[test]
fn a_run_on_the_gpu_ends_where_the_cpu_run_does() {
    let Some(gpu) = gpu() else { return };
    let cpu = crate::util::real_net();
    let on_gpu = GpuVgg::new(gpu, Vgg::new(weights::load(&real_weights_path(), None).unwrap(), Pooling::Max));
    let mut rng = Lcg(12);
    let (content, style, _) = real_pair(&mut rng, 128, 96);
    let config = StyleConfig::default()
        .size(128)
        .iterations(20)
        .scales(Scales::Off)
        .optimizer(impasto::transfer::OptimizerChoice::Adam(Default::default()));
    let inputs = Inputs::new(content, [style]);
    let run = |backend: &dyn Backend| {
        let mut first = 0.0;
        let out = Stylizer::new(config.clone())
            .unwrap()
            .stylize(backend, &inputs, &mut |p: &Progress| {
                if p.iteration == 1 {
                    first = p.terms.total;
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        (first, out)
    };
    let ((first, a), (_, b)) = (run(cpu), run(&on_gpu));
    assert!(a.terms.total < 0.5 * first, "the run went somewhere: {first} -> {:?}", a.terms);
    let rel = (a.terms.total - b.terms.total).abs() / a.terms.total;
    assert!(rel < 1e-3, "cpu {:?} vs gpu {:?}", a.terms, b.terms);
    let diff = a.image.data.iter().zip(&b.image.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    eprintln!(
        "20 iterations at 128 px: cpu {:.6e}, gpu {:.6e} ({rel:.1e}); largest pixel difference {diff:.3}",
        a.terms.total, b.terms.total
    );
}

/// W2 and normalised gradients, the options the GPU once refused, on tiny networks and the
/// real VGG19: the same terms and gradient as the CPU from the same specification.
#[test]
fn w2_and_normalised_gradients_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let weights = tiny_weights(5, [4, 6, 8, 8, 8]);
    let cpu = Vgg::new(weights.clone(), Pooling::Max);
    let on_gpu = GpuVgg::new(gpu.clone(), Vgg::new(weights, Pooling::Max));
    let mut rng = Lcg(51);
    let (content, x) = (rng.image(37, 26), rng.image(37, 26));
    let styles = [StyleInput::new(rng.image(30, 22)), StyleInput::new(rng.image(19, 33)).blend(2.0)];
    let w2 = LossConfig { style_loss: StyleLoss::W2, ..config() };
    compare(&cpu, &on_gpu, &w2, &content, &styles, &x, "w2");
    let normalised = LossConfig { normalize_gradients: true, ..config() };
    compare(&cpu, &on_gpu, &normalised, &content, &styles, &x, "normalised");
    let both = LossConfig { normalize_gradients: true, ..w2.clone() };
    compare(&cpu, &on_gpu, &both, &content, &styles, &x, "w2, normalised");
    // Masks with normalised gradients (W2 takes no masks).
    let left =
        Image { data: (0..3 * 37 * 26).map(|i| if i % 37 < 15 { 255.0 } else { 0.0 }).collect(), ..content.clone() };
    let masked = [
        StyleInput::new(rng.image(24, 24)).region_mask(left.clone()),
        StyleInput::new(rng.image(20, 30)).source_mask(rng.image(10, 15)),
    ];
    compare(&cpu, &on_gpu, &normalised, &content, &masked, &x, "normalised, masks");
    let vgg = || Vgg::new(weights::load(&real_weights_path(), None).unwrap(), Pooling::Max);
    let (cpu, on_gpu) = (vgg(), GpuVgg::new(gpu, vgg()));
    let (content, style, x) = real_pair(&mut rng, 80, 64);
    compare(&cpu, &on_gpu, &w2, &content, &[StyleInput::new(style.clone())], &x, "vgg19 w2");
    compare(&cpu, &on_gpu, &normalised, &content, &[StyleInput::new(style)], &x, "vgg19 normalised");
}

/// An image whose largest layer does not fit in one storage binding: on a GPU whose bindings
/// hold 512 KiB, the plan tiles it (the whole image is refused in one line saying what fits),
/// and the tiled objective and a run match the CPU's whole-image ones.
#[test]
fn a_layer_larger_than_one_binding_runs_in_tiles() {
    let Some(gpu) = gpu() else { return };
    let weights = tiny_weights(9, [4, 6, 8, 8, 8]);
    let cpu = Vgg::new(weights.clone(), Pooling::Max);
    let small = GpuVgg::new(gpu.with_binding_limit(512 << 10), Vgg::new(weights, Pooling::Max));
    let config = LossConfig {
        content_layers: vec![LayerId::relu(3, 1)],
        style_layers: vec![LayerId::relu(1, 1), LayerId::relu(2, 1), LayerId::relu(3, 1)],
        tv_weight: 1e-3,
        ..LossConfig::default()
    };
    let mut rng = Lcg(61);
    let (content, x) = (rng.image(300, 200), rng.image(300, 200));
    let styles = [StyleInput::new(rng.image(180, 150))];
    // relu1_1 of the whole image: 4 x 300 x 200 floats, 938 KiB.
    let err = small
        .evaluator_memory(&config, &impasto::tiles::TileGrid::whole(Size::new(300, 200)), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("one buffer may hold at most 512 KiB") && err.contains("pixels fit"), "{err}");
    compare_tiled(&cpu, &small, &config, &content, &styles, &x, Some(128), "tiles of 128 in 512 KiB bindings");
    // The plan finds the tiles itself, and the run's first evaluation is the CPU's.
    let style_config = StyleConfig::default().size(300).iterations(2).scales(Scales::Off).loss(config);
    let inputs = Inputs::new(content, [styles[0].image.clone()]);
    let stylizer = Stylizer::new(style_config).unwrap();
    let plan = stylizer.plan(&small, &inputs).unwrap();
    assert!(plan.scales[0].tile.is_some(), "{plan:?}");
    let first = |net: &dyn Backend, plan: &impasto::plan::Plan| {
        let mut first = None;
        stylizer
            .run(net, plan, &inputs, &mut |p: &Progress| {
                first.get_or_insert(p.terms.total);
                ControlFlow::Continue(())
            })
            .unwrap();
        first.unwrap()
    };
    let on_cpu = first(&cpu, &stylizer.plan(&cpu, &inputs).unwrap());
    let on_gpu = first(&small, &plan);
    assert!((on_gpu - on_cpu).abs() <= 1e-4 * on_cpu, "first evaluation: gpu {on_gpu} vs cpu {on_cpu}");
    let whole = Stylizer::new(stylizer.config().clone().tile(impasto::tiles::Tiling::Off)).unwrap();
    let e = whole.plan(&small, &inputs).unwrap_err().to_string();
    assert!(e.contains("one buffer may hold at most"), "{e}");
}

/// The CLI: `--device gpu` stylizes and says where, with any option; `--device auto` passes
/// over a software driver.
#[test]
fn the_cli_runs_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let content = crate::util::fixture("content.png");
    let style = crate::util::fixture("style.png");
    let args = |device: &str, extra: &[&str]| {
        let mut a: Vec<String> = [
            "stylize",
            content.to_str().unwrap(),
            style.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--size",
            "64",
            "--iterations",
            "3",
            "--device",
            device,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        impasto(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = args("gpu", &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("computing on the GPU: {}", gpu.name())), "{stderr}");
    assert_eq!(impasto::image_io::load(&out).unwrap().width, 64);
    let settings = impasto::settings::Settings::read(&out).unwrap();
    assert_eq!(settings.network.device, impasto::device::Device::Gpu);

    // Every option runs on the GPU: W2, normalised gradients, a tile side (which, for so small an
    // image, is the whole of it).
    std::fs::remove_file(&out).unwrap();
    let o = args("gpu", &["--style-loss", "w2", "--normalize-gradients", "--tile", "64"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let plan = impasto::settings::Settings::read(&out).unwrap().plan.unwrap();
    assert_eq!((plan.device, plan.scales[0].tile), (impasto::device::Device::Gpu, None));

    let o = args("auto", &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let expect = if gpu.is_software() {
        "computing on the CPU".to_string()
    } else {
        format!("computing on the GPU: {}", gpu.name())
    };
    assert!(stderr.contains(&expect), "{stderr}");
}

/// A video frame's run, with a temporal term (a pixel term added on the host to whichever
/// engine computes the network's terms), ends on the GPU where it ends on the CPU.
#[test]
fn a_video_frame_with_a_temporal_term_ends_where_the_cpu_run_does() {
    let Some(gpu) = gpu() else { return };
    let weights = tiny_weights(9, [4, 6, 8, 8, 8]);
    let cpu = Vgg::new(weights.clone(), Pooling::Max);
    let on_gpu = GpuVgg::new(gpu, Vgg::new(weights, Pooling::Max));
    let mut rng = Lcg(19);
    let (w, h) = (41, 30);
    let (content, style, warped) = (rng.image(w, h), rng.image(24, 20), rng.image(w, h));
    let reliability: Vec<f32> = (0..w * h).map(|i| if i % 7 == 0 { 0.0 } else { 1.0 }).collect();
    let mut inputs = Inputs::new(content, [style]);
    inputs.temporal = vec![impasto::loss::temporal::TemporalTarget::new(warped.clone(), reliability, 1e4).unwrap()];
    inputs.start = Some(warped);
    let config = StyleConfig::default()
        .size(w)
        .iterations(15)
        .scales(Scales::Off)
        .init(impasto::Init::Image)
        .optimizer(impasto::transfer::OptimizerChoice::Adam(Default::default()));
    let run = |backend: &dyn Backend| Stylizer::new(config.clone()).unwrap().stylize(backend, &inputs, |_| ()).unwrap();
    let (a, b) = (run(&cpu), run(&on_gpu));
    assert!(a.terms.temporal > 0.0, "the term is in the objective: {:?}", a.terms);
    for (name, x, y) in [("total", a.terms.total, b.terms.total), ("temporal", a.terms.temporal, b.terms.temporal)] {
        assert!((x - y).abs() <= 1e-3 * x.abs(), "{name}: cpu {x} gpu {y}");
    }
}
