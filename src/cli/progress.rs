//! The command line's observer of a run: the progress bar, the JSON log, periodic saves and
//! signals. (indicatif is used here only; the library reports through [`Observer`].)
//!
//! SIGINT (Ctrl-C), SIGTERM and SIGHUP stop the run after the current evaluation; the best image
//! so far is written and the exit code is 128 + the signal's number (130, 143, 129). A second
//! signal exits at once, removing any half-written temporary file first.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use impasto::image_io;
use impasto::transfer::{Observer, Outcome, Progress};

/// Shows, logs and saves each evaluation; stops when Ctrl-C was pressed.
pub struct CliObserver {
    bar: Option<ProgressBar>,
    /// The log's path, and the file once its first line is written (a run refused before it
    /// starts leaves no log file).
    log: Option<(PathBuf, Option<BufWriter<File>>)>,
    save_every: Option<usize>,
    output: PathBuf,
    /// The signal that asked the run to stop (0: none).
    interrupted: Arc<AtomicI32>,
    /// The first error met while logging or saving; the run stops on it.
    pub error: Option<anyhow::Error>,
}

impl CliObserver {
    pub fn new(
        iterations: usize,
        quiet: bool,
        log: Option<&Path>,
        save_every: Option<usize>,
        output: &Path,
    ) -> anyhow::Result<Self> {
        let bar = (!quiet).then(|| {
            let bar = ProgressBar::new(iterations as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} loss {msg} | {per_sec} | {elapsed_precise} elapsed, {eta_precise} left",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        let log = log.map(|p| (p.to_path_buf(), None));
        let interrupted = interrupt_flag();
        Ok(CliObserver { bar, log, save_every, output: output.to_path_buf(), interrupted, error: None })
    }

    /// The signal that stopped the run, if one did.
    pub fn signal(&self) -> Option<i32> {
        Some(self.interrupted.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }

    /// Removes the progress bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Ends the log with what was written: the evaluation the image came from, its loss, and
    /// why the run stopped.
    pub fn log_outcome(&mut self, outcome: &Outcome) {
        if self.error.is_some() {
            return;
        }
        let line = serde_json::json!({
            "written": true,
            "best_iteration": outcome.best_iteration,
            "total": outcome.terms.total,
            "content": outcome.terms.content,
            "style": outcome.terms.style,
            "tv": outcome.terms.tv,
            "temporal": outcome.terms.temporal,
            "iterations": outcome.iterations,
            "stop": outcome.stop,
            "width": outcome.image.width,
            "height": outcome.image.height,
        });
        if let Err(e) = self.log_line(&line) {
            self.error = Some(e);
        }
    }

    /// Writes one line to the log, creating the file at the first.
    fn log_line(&mut self, line: &serde_json::Value) -> anyhow::Result<()> {
        let Some((path, file)) = &mut self.log else { return Ok(()) };
        if file.is_none() {
            let f = File::create(&*path).with_context(|| format!("{}: cannot create the log file", path.display()))?;
            *file = Some(BufWriter::new(f));
        }
        let log = file.as_mut().expect("opened above");
        writeln!(log, "{line}")
            .and_then(|()| log.flush())
            .with_context(|| format!("{}: cannot write the log", path.display()))
    }

    fn record(&mut self, p: &Progress<'_>) -> anyhow::Result<()> {
        if let Some(bar) = &self.bar {
            bar.set_position(p.iteration as u64);
            if p.scales > 1 {
                bar.set_message(format!(
                    "{:.4e} (scale {}/{}, {}x{})",
                    p.best.total, p.scale, p.scales, p.image.width, p.image.height
                ));
            } else {
                bar.set_message(format!("{:.4e}", p.best.total));
            }
        }
        if self.log.is_some() {
            let line = serde_json::json!({
                "iteration": p.iteration,
                "total": p.terms.total,
                "content": p.terms.content,
                "style": p.terms.style,
                "tv": p.terms.tv,
                "temporal": p.terms.temporal,
                "accepted": p.accepted,
                "best": p.best.total,
                "best_iteration": p.best_iteration,
                "seconds": p.elapsed.as_secs_f64(),
                "scale": p.scale,
                "width": p.image.width,
                "height": p.image.height,
            });
            self.log_line(&line)?;
        }
        if let Some(n) = self.save_every
            && p.iteration.is_multiple_of(n)
            && p.iteration < p.iterations
        {
            image_io::save(p.image, &numbered(&self.output, p.iteration))?;
        }
        Ok(())
    }
}

impl Observer for CliObserver {
    fn on_iteration(&mut self, p: &Progress<'_>) -> ControlFlow<()> {
        if let Err(e) = self.record(p) {
            self.error = Some(e);
            return ControlFlow::Break(());
        }
        if self.signal().is_some() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    }
}

/// The signal that asked this process to stop (0: none), set by a handler installed once: the
/// first SIGINT, SIGTERM or SIGHUP stops the run after the current evaluation; a second exits at
/// once, removing any half-written temporary file first.
pub fn interrupt_flag() -> Arc<AtomicI32> {
    static FLAG: std::sync::OnceLock<Arc<AtomicI32>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicI32::new(0));
        let set = flag.clone();
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            std::thread::spawn(move || {
                for sig in signals.forever() {
                    if set.swap(sig, Ordering::SeqCst) != 0 {
                        image_io::remove_pending_files();
                        std::process::exit(128 + sig);
                    }
                }
            });
        }
        flag
    })
    .clone()
}

/// `out.png` -> `out.0100.png`.
pub fn numbered(output: &Path, iteration: usize) -> PathBuf {
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = output.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    output.with_file_name(format!("{stem}.{iteration:04}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_paths() {
        assert_eq!(numbered(Path::new("dir/out.png"), 100), PathBuf::from("dir/out.0100.png"));
        assert_eq!(numbered(Path::new("a.b.jpg"), 12345), PathBuf::from("a.b.12345.jpg"));
    }
}
