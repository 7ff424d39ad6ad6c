use super::*;
use crate::engine::cpu::CpuEngine;
use crate::transfer::{AdamSettings, Scales};
use crate::vgg::{Pooling, Vgg};
use crate::weights::{ConvParams, Preprocess, VggWeights};

/// A VGG19-shaped network with tiny random weights (the shapes are what plans read).
fn tiny_vgg() -> Vgg {
    let widths = [[3, 4, 4], [4, 4, 4], [4, 4, 4], [4, 4, 4], [4, 4, 4]];
    let counts = [2, 2, 4, 4, 4];
    let mut seed = 7u64;
    let mut rand = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    };
    let blocks = counts
        .iter()
        .zip(widths)
        .map(|(&n, w)| {
            (0..n)
                .map(|k| {
                    let (c_in, c_out) = (if k == 0 { w[0] } else { w[1] }, w[2]);
                    ConvParams {
                        weight: (0..c_out * c_in * 9).map(|_| rand()).collect(),
                        bias: (0..c_out).map(|_| rand()).collect(),
                        c_in,
                        c_out,
                    }
                })
                .collect()
        })
        .collect();
    Vgg::new(VggWeights { blocks, preprocess: Preprocess::Caffe }, Pooling::Max)
}

fn inputs() -> Inputs {
    Inputs::new(Image::filled(40, 30, 9.0), [Image::filled(20, 20, 3.0)])
}

/// The plan checks the inputs against the settings: a start image exactly with
/// `Init::Image`, and the style inputs; its sizes are the configuration's.
#[test]
fn the_plan_checks_the_inputs() {
    let net = tiny_vgg();
    let make = |c: StyleConfig, i: &Inputs| Plan::make(&c, &net, i);
    let plan = make(StyleConfig::default().size(80), &inputs()).unwrap();
    assert_eq!(plan.output, Size::new(80, 60));
    assert_eq!(plan.scales.len(), 1);
    let s = &plan.scales[0];
    assert_eq!(
        (s.size, s.iterations, s.tile, s.history, s.styles.clone()),
        (Size::new(80, 60), 500, None, Some(100), vec![Size::new(69, 69)])
    );
    let err = |c: StyleConfig, i: &Inputs| make(c, i).unwrap_err().to_string();
    assert!(err(StyleConfig::default().init(Init::Image), &inputs()).starts_with("init is 'image' but no start"));
    let with_start = Inputs { start: Some(Image::filled(5, 5, 0.0)), ..inputs() };
    assert!(err(StyleConfig::default(), &with_start).starts_with("init is Content, not 'image'"));
    assert!(make(StyleConfig::default().init(Init::Image), &with_start).is_ok());
    let no_styles = Inputs { styles: vec![], ..inputs() };
    assert_eq!(err(StyleConfig::default(), &no_styles), "styles must have at least one style image");
    assert!(err(StyleConfig::default().size(8), &inputs()).starts_with("size is too small"));
}

/// A plan travels as JSON and back unchanged (but the budget, this machine's); a plan made here
/// passes its own check.
#[test]
fn a_plan_round_trips_and_passes_its_check() {
    let net = tiny_vgg();
    let config = StyleConfig::default().size(200).iterations(6).scales(Scales::List(vec![100, 200]));
    let plan = Plan::make(&config, &net, &inputs()).unwrap();
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.contains(r#""output":{"width":200,"height":150}"#) && json.contains(r#""device":"cpu""#), "{json}");
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, Plan { budget: None, ..plan.clone() });
    plan.check(&config, &net, &inputs()).unwrap();
    assert_eq!(plan.iterations(), 9);
}

/// Each inconsistent or out-of-range field of a plan from a file is refused, named.
#[test]
fn a_bad_plan_names_its_field() {
    let net = tiny_vgg();
    let config = StyleConfig::default().size(200).iterations(6).scales(Scales::List(vec![100, 200]));
    let plan = Plan::make(&config, &net, &inputs()).unwrap();
    let err = |edit: &dyn Fn(&mut Plan), config: &StyleConfig| {
        let mut p = plan.clone();
        edit(&mut p);
        p.check(config, &net, &inputs()).unwrap_err().to_string()
    };
    let c = &config;
    for (edit, want) in [
        (
            &(|p: &mut Plan| p.device = Device::Gpu) as &dyn Fn(&mut Plan),
            "plan.device is gpu but the network is on the cpu",
        ),
        (&|p: &mut Plan| p.output = Size::new(200, 151), "plan.output is 200x151 but the content image"),
        (&|p: &mut Plan| p.halo.pixels = 3, "plan.halo is"),
        (&|p: &mut Plan| p.scales.clear(), "plan.scales has 0 scales"),
        (
            &|p: &mut Plan| p.scales[0].size = Size::new(100, 70),
            "plan.scales[0].size 100x70 is not the content image's shape",
        ),
        (&|p: &mut Plan| p.scales[1].size = p.scales[0].size, "plan.scales[1].size must be larger"),
        (&|p: &mut Plan| p.scales[0].iterations = 0, "plan.scales[0].iterations must be at least 1"),
        (&|p: &mut Plan| p.scales[1].tile = Some(12), "plan.scales[1].tile must be null or a side between 64"),
        (&|p: &mut Plan| p.scales[1].history = Some(0), "plan.scales[1].history must be between 1 and 10000"),
        (&|p: &mut Plan| p.scales[1].history = None, "plan.scales[1].history must be given for L-BFGS"),
        (&|p: &mut Plan| p.scales[0].styles.clear(), "plan.scales[0].styles has 0 sizes but there are 1"),
        (
            &|p: &mut Plan| p.scales[1].styles[0].width += 1,
            "plan.scales[1].styles[0] is 174x173 but style_scale 1 gives",
        ),
        (
            &|p: &mut Plan| {
                p.scales[0].iterations = usize::MAX;
                p.scales[1].iterations = usize::MAX
            },
            "plan.scales[0].iterations makes more than 100000000 evaluations in all",
        ),
    ] {
        let e = err(edit, c);
        assert!(e.starts_with(want), "{e}\n  wanted {want}");
    }
    let adam = config.clone().optimizer(OptimizerChoice::Adam(AdamSettings::default()));
    assert!(err(&|_| {}, &adam).starts_with("plan.scales[0].history must be null for Adam"));
    // The layout itself is taken as it is: another tile side or history is fine.
    let mut edited = plan.clone();
    edited.scales[1].tile = Some(64);
    edited.scales[1].history = Some(3);
    edited.check(&config, &net, &inputs()).unwrap();
}

/// The layout fits the L-BFGS history into the memory (the most pairs that fit, at least 20
/// before tiles) and says what a run that fits nowhere needs.
#[test]
fn the_layout_fits_the_history() {
    let net = tiny_vgg();
    let config = StyleConfig::default().size(200).iterations(2).scales(Scales::Off).tile(Tiling::Off);
    let styles = [Size::new(170, 170)];
    let shape = layout::Shape { size: Size::new(200, 150), styles: &styles, regions: 0, history: Some((100, true)) };
    assert_eq!(layout::fit(&config, &net, &shape, None).unwrap().1, Some(100));
    let with = |h| layout::scale_memory(&config, &net, &shape, None, Some(h)).unwrap();
    // Room for 40 pairs (with the tenth left spare that fitted choices keep).
    let budget = (with(40) as f64 / 0.9).ceil() as u64 + 1;
    let (tile, history, bytes) = layout::fit(&config, &net, &shape, Some(budget)).unwrap();
    assert_eq!((tile, history), (None, Some(40)));
    assert_eq!(bytes, with(40));
    // Exactly 100 asked for and not there: refused, naming what to lower.
    let exact = layout::Shape { history: Some((100, false)), ..shape };
    let e = layout::fit(&config, &net, &exact, Some(with(100) - 1)).unwrap_err().to_string();
    assert!(e.starts_with("a 200x150 run needs about") && e.ends_with("lower size or optimizer.lbfgs.history"), "{e}");
    let _ = CpuEngine::new(&net);
}
