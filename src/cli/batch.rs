//! `impasto batch`: a manifest's items (or a grid's) run here one after another on one loaded
//! network, or one item per scheduler task; checked, listed, counted, laid out on a sheet, or
//! written as a job file. The log is JSON lines on stderr, each tagged with its item's index.
//!
//! Exit codes: 0 every item run is done (or was already), 1 an item's loss became NaN, 2 bad
//! input (a permanent failure: the manifest, an item's settings or images), 75 retryable
//! (interrupted, out of memory, the GPU lost, an output that cannot be written now).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use serde_json::json;

use impasto::batch::templates::{self, EXIT_PERMANENT, EXIT_RETRY, Resources};
use impasto::batch::{self, Item, Manifest, Selection, State};
use impasto::image_io;
use impasto::settings::Settings;
use impasto::transfer::{Observer, Progress, Stop, Stylizer};

use super::args::{BatchArgs, EmitArg};
use super::progress::CliObserver;
use super::{Loaded, prepare_on};

/// Where the items come from: a manifest file, or a grid made in memory.
enum Source {
    Manifest(Manifest),
    Grid(Vec<Item>),
}

/// `impasto batch`: an error that ends it is printed here, with the exit code that says whether
/// a retry can help ([`exit_code`]).
pub fn batch(a: &BatchArgs) -> Result<i32> {
    match run_batch(a) {
        Ok(code) => Ok(code),
        Err(e) => {
            errln!("impasto: {e:#}");
            Ok(exit_code(&e))
        }
    }
}

fn run_batch(a: &BatchArgs) -> Result<i32> {
    let source = match &a.manifest {
        Some(path) => {
            if let Some((flag, _)) = a.options.given.iter().find(|(f, _)| *f != "device") {
                bail!(
                    "--{flag} is an option of a grid's runs: a manifest's lines give their own settings (only --device applies to them)"
                );
            }
            Source::Manifest(Manifest::open(path)?)
        }
        None => grid(a)?,
    };
    if let (Some(file), Source::Grid(items)) = (&a.write_manifest, &source) {
        image_io::check_writable_file(file)?;
        let absolute = std::path::absolute(file)?;
        let dir = absolute.parent().unwrap_or(Path::new("/"));
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut text = String::new();
        for item in items {
            text += &batch::grid::manifest_line(&item.settings, &item.output, &dir)?;
            text.push('\n');
        }
        image_io::write_atomically(file, text.as_bytes())?;
        if !a.quiet {
            errln!("impasto: wrote {} items to {}", items.len(), file.display());
        }
        return Ok(0);
    }
    // A manifest's items all go to `--device` (a grid's device is one of its options).
    let device = match (a.options.given.iter().find(|(f, _)| *f == "device"), &source) {
        (Some((_, v)), Source::Manifest(_)) => {
            Some(v.last().map(String::as_str).unwrap_or("").parse::<impasto::Device>()?)
        }
        _ => None,
    };
    let with_device = |mut item: Item| {
        if let Some(d) = device {
            item.settings.network.device = d;
        }
        item
    };
    if a.check {
        return Ok(match checked(&source) {
            Ok(count) => {
                outln!("{count} items, all good");
                0
            }
            Err(errors) => {
                errors.iter().for_each(|e| errln!("impasto: {e}"));
                EXIT_PERMANENT
            }
        });
    }
    if a.list || a.status || a.sheet.is_some() {
        return report(a, &source);
    }
    if let Some(kind) = a.emit {
        return emit(a, kind, &source);
    }
    let selection = batch::select(a.index, a.shard, a.offset, |v| std::env::var(v).ok())?;
    let threads = threads();
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
    let mut runner = Runner { args: a, loaded: None, threads, interrupted: false, worst: 0 };
    match (&source, selection) {
        // One item: checked alone (its task need not read the whole manifest), unless it is
        // done; refused, it records why in OUTPUT.failed.
        (Source::Manifest(m), Selection::Index(i)) => {
            let item = with_device(m.item(i)?);
            runner.run_checked(item, |it| m.check(it));
        }
        (Source::Grid(items), Selection::Index(i)) => match items.get(i) {
            Some(item) => runner.run_checked(item.clone(), |it| batch::check_item(it, &format!("grid item {i}"))),
            None => bail!("index is {i}, but the grid has {} items", items.len()),
        },
        // Every item (of the shard) checked first, then run as the manifest is read again.
        (_, selection) => {
            if let Err(errors) = checked(&source) {
                errors.iter().for_each(|e| errln!("impasto: {e}"));
                return Ok(EXIT_PERMANENT);
            }
            each_item(&source, |item| {
                if selected(selection, item.index) && !runner.interrupted {
                    runner.run(with_device(item.clone()));
                }
            })?;
        }
    }
    Ok(runner.worst)
}

fn selected(selection: Selection, index: usize) -> bool {
    match selection {
        Selection::All => true,
        Selection::Index(i) => i == index,
        Selection::Shard { shard, count } => index % count == shard,
    }
}

/// The exit code of two: bad input over retryable over NaN over done.
fn worse(a: i32, b: i32) -> i32 {
    let rank = |c: i32| match c {
        0 => 0,
        1 => 1,
        EXIT_RETRY => 2,
        _ => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// The grid's items, in its order.
fn grid(a: &BatchArgs) -> Result<Source> {
    let collect = |sources: &[PathBuf]| -> Result<Vec<PathBuf>> {
        let mut all = Vec::new();
        for s in sources {
            all.extend(batch::grid::images(s)?.into_iter().map(|p| std::fs::canonicalize(&p).unwrap_or(p)));
        }
        Ok(all)
    };
    let (contents, styles) = (collect(&a.contents)?, collect(&a.grid_styles)?);
    let out_dir = a.out_dir.as_deref().expect("clap requires --out-dir with --contents");
    let out_dir = std::fs::canonicalize(out_dir)
        .or_else(|_| std::path::absolute(out_dir))
        .unwrap_or_else(|_| out_dir.to_path_buf());
    let runs = batch::grid::expand(&contents, &styles, &a.options.given, &out_dir, "png")
        .map_err(|e| super::args::in_flags(e, &Settings::new("", [])))?;
    // Files the options name (masks, a start image, weights) are relative to here, as typed.
    let here = std::env::current_dir()?;
    Ok(Source::Grid(
        runs.into_iter()
            .enumerate()
            .map(|(index, (mut settings, output))| {
                batch::resolve(&mut settings, &here);
                Item { index, line: index + 1, settings, output }
            })
            .collect(),
    ))
}

/// Every item checked (how many there are), or every bad item's error.
fn checked(source: &Source) -> std::result::Result<usize, Vec<impasto::Error>> {
    match source {
        Source::Manifest(m) => m.check_all(),
        Source::Grid(items) => {
            let mut errors = Vec::new();
            let mut outputs = std::collections::HashSet::new();
            for item in items {
                if let Err(e) = batch::check_item(item, &format!("grid item {}", item.index)) {
                    errors.push(e);
                } else if !outputs.insert(item.output.clone()) {
                    errors.push(impasto::Error::Output {
                        path: item.output.clone(),
                        message: format!(
                            "is the output of two grid items (the second is item {}): their files' names repeat",
                            item.index
                        ),
                    });
                }
            }
            if errors.is_empty() { Ok(items.len()) } else { Err(errors) }
        }
    }
}

/// Calls `f` on every item, in order, reading a manifest as it goes (a long one is never held
/// in memory whole).
fn each_item(source: &Source, mut f: impl FnMut(&Item)) -> Result<()> {
    match source {
        Source::Manifest(m) => {
            for item in m.items()? {
                f(&item?);
            }
        }
        Source::Grid(items) => items.iter().for_each(f),
    }
    Ok(())
}

/// `index + offset`, or an error naming both.
fn offset(index: usize, offset: usize) -> Result<usize> {
    index.checked_add(offset).ok_or_else(|| anyhow::anyhow!("--index {index} with --offset {offset} is too large"))
}

/// `--list`, `--status` and `--sheet`.
fn report(a: &BatchArgs, source: &Source) -> Result<i32> {
    if a.list {
        let print = |item: &Item| {
            let state = match batch::state(item) {
                State::Done => "done",
                State::Missing => "missing",
                State::Failed(_) => "failed",
                State::Stale => "stale",
            };
            let styles: Vec<String> = item.settings.styles.iter().map(|s| s.image.display().to_string()).collect();
            outln!(
                "{}\t{}\t{}\t{}\t{}",
                item.index,
                state,
                item.output.display(),
                item.settings.content.display(),
                styles.join(" ")
            );
        };
        return match (source, a.index) {
            (Source::Manifest(m), Some(i)) => {
                print(&m.item(offset(i, a.offset)?)?);
                Ok(0)
            }
            (_, Some(i)) => {
                let i = offset(i, a.offset)?;
                each_item(source, |it| {
                    if it.index == i {
                        print(it)
                    }
                })?;
                Ok(0)
            }
            (_, None) => each_item(source, print).map(|()| 0),
        };
    }
    if let Some(sheet) = &a.sheet {
        image_io::check_output(sheet)?;
        let (mut images, mut total) = (Vec::new(), 0);
        let mut error = None;
        each_item(source, |it| {
            total += 1;
            if error.is_none() && batch::state(it) == State::Done {
                match image_io::load(&it.output) {
                    Ok(img) => images.push(image_io::resize_to_fit(&img, 256)),
                    Err(e) => error = Some(e),
                }
            }
        })?;
        if let Some(e) = error {
            return Err(e.into());
        }
        if images.is_empty() {
            bail!("{}: no item is done yet, so there is nothing to lay out", sheet.display());
        }
        let cells: Vec<Option<&image_io::Image>> = images.iter().map(Some).collect();
        let columns = (cells.len() as f64).sqrt().ceil() as usize;
        image_io::save(&image_io::contact_sheet(&cells, columns, 256, 6), sheet)?;
        if !a.quiet {
            errln!("impasto: laid out {} of {total} items on {}", images.len(), sheet.display());
        }
        return Ok(0);
    }
    let (mut total, mut done, mut stale, mut failed, mut missing) = (0, 0, 0, 0, 0);
    each_item(source, |item| {
        total += 1;
        match batch::state(item) {
            State::Done => done += 1,
            State::Stale => stale += 1,
            State::Missing => missing += 1,
            State::Failed(reason) => {
                failed += 1;
                outln!("failed\t{}\t{}\t{reason}", item.index, item.output.display());
            }
        }
    })?;
    if total == 0 {
        bail!("{}: has no items", a.manifest.as_deref().unwrap_or(Path::new("the grid")).display());
    }
    outln!("{total} items: {done} done, {stale} stale, {failed} failed, {missing} missing");
    Ok(if done == total { 0 } else { 1 })
}

/// `--emit slurm|k8s`: the job file, with the resources of the largest item's plan.
fn emit(a: &BatchArgs, kind: EmitArg, source: &Source) -> Result<i32> {
    let Source::Manifest(manifest) = source else {
        bail!("--emit needs a manifest (write the grid's with --write-manifest FILE first)");
    };
    // The largest output's item stands for all (sizes decide memory and time).
    let (mut count, mut largest) = (0, None::<Item>);
    each_item(source, |it| {
        count += 1;
        if largest.as_ref().is_none_or(|l| it.settings.config.size > l.settings.config.size) {
            largest = Some(it.clone());
        }
    })?;
    let Some(largest) = largest else {
        bail!("{}: has no items", manifest.path().display());
    };
    let cpus = a.cpus.unwrap_or_else(threads);
    let stylizer = Stylizer::new(largest.settings.config.clone())?;
    let mut loaded = None;
    let (_, plan, _) = prepare_on(&largest.settings, &stylizer, true, &mut loaded)?;
    let net = &*loaded.expect("loaded").net;
    let (rate, _) = super::plan::calibrate(net)?;
    let mut seconds = 0.0;
    for scale in &plan.scales {
        seconds +=
            scale.iterations as f64 * super::plan::evaluation_seconds(net, stylizer.config(), &plan, scale, rate)?;
    }
    let parallel = a.parallel.unwrap_or(count.min(32));
    let r = Resources::with_margin(count, parallel, cpus, plan.peak(), seconds);
    let absolute = std::fs::canonicalize(manifest.path())?;
    match kind {
        EmitArg::Slurm => {
            let exe = std::env::current_exe()?;
            // Slurm opens a task's log before the task starts: the directory must exist.
            let logs = manifest.dir().join("logs");
            std::fs::create_dir_all(&logs)
                .map_err(|e| anyhow::anyhow!("{}: cannot make the directory for the task logs: {e}", logs.display()))?;
            outln!("{}", templates::slurm(&absolute, &exe, &logs, &r).trim_end());
        }
        EmitArg::K8s => {
            let name = absolute.file_name().expect("a file");
            let in_pod = Path::new(&a.mount).join(name);
            outln!(
                "{}",
                templates::yaml(&templates::kubernetes(&in_pod, &a.container, &a.claim, &a.mount, &r)).trim_end()
            );
        }
    }
    Ok(0)
}

/// Threads for this task: `SLURM_CPUS_PER_TASK` where Slurm gives it, else the CPUs this process
/// may use (its affinity mask and cgroup quota, as the standard library reads them).
fn threads() -> usize {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    match std::env::var("SLURM_CPUS_PER_TASK").ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(n) if n > 0 => n.min(available),
        _ => available,
    }
}

/// One JSON line on stderr, tagged with the item.
fn log(item: &Item, event: &str, mut fields: serde_json::Value) {
    let object = fields.as_object_mut().expect("an object");
    object.insert("item".into(), item.index.into());
    object.insert("event".into(), event.into());
    errln!("{fields}");
}

/// Runs items one after another on one loaded network (and its style targets).
struct Runner<'a> {
    args: &'a BatchArgs,
    loaded: Option<Loaded>,
    threads: usize,
    /// A signal stopped an item: no further item starts.
    interrupted: bool,
    /// The worst exit code so far ([`worse`]).
    worst: i32,
}

impl Runner<'_> {
    /// Runs `item` unless it is done, after `check`: a refused item is logged, exits 2 and
    /// records its reason in `OUTPUT.failed`.
    fn run_checked(&mut self, item: Item, check: impl Fn(&Item) -> impasto::Result<()>) {
        if (self.args.force || batch::state(&item) != State::Done)
            && let Err(e) = check(&item)
        {
            let message = e.to_string();
            if item.output.parent().is_some_and(Path::is_dir) {
                let _ = image_io::write_atomically(&batch::failure_path(&item.output), message.as_bytes());
            }
            log(
                &item,
                "failed",
                json!({ "output": item.output.display().to_string(), "error": message, "exit": EXIT_PERMANENT }),
            );
            self.worst = worse(self.worst, EXIT_PERMANENT);
            return;
        }
        self.run(item);
    }

    /// Runs `item` unless it is done, and keeps the worst exit code.
    fn run(&mut self, item: Item) {
        let code = self.run_one(&item);
        self.worst = worse(self.worst, code);
    }

    /// Runs `item` unless it is done; returns its exit code.
    fn run_one(&mut self, item: &Item) -> i32 {
        let out = item.output.display().to_string();
        if !self.args.force && batch::state(item) == State::Done {
            if !self.args.quiet {
                log(item, "skipped", json!({ "output": out, "reason": "done: the output carries these settings" }));
            }
            return 0;
        }
        let started = Instant::now();
        if let Some(dir) = item.output.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            let error = format!("{}: cannot make the output directory: {e}", dir.display());
            log(item, "failed", json!({ "output": out, "error": error, "exit": EXIT_RETRY }));
            return EXIT_RETRY;
        }
        match self.stylize(item) {
            Ok(Ran::Done { stop, iterations, loss }) => {
                let _ = std::fs::remove_file(batch::failure_path(&item.output));
                if !self.args.quiet {
                    let seconds = started.elapsed().as_secs_f64();
                    log(
                        item,
                        "done",
                        json!({ "output": out, "loss": loss, "iterations": iterations, "seconds": seconds, "stop": stop }),
                    );
                }
                0
            }
            Ok(Ran::NonFinite(iteration)) => {
                let reason = format!(
                    "the loss became NaN or infinite at iteration {iteration}: lower the style or content weight"
                );
                let _ = image_io::write_atomically(&batch::failure_path(&item.output), reason.as_bytes());
                log(item, "failed", json!({ "output": out, "error": reason, "exit": 1, "written": false }));
                1
            }
            Ok(Ran::Interrupted) => {
                self.interrupted = true;
                log(item, "interrupted", json!({ "output": out, "exit": EXIT_RETRY, "written": false }));
                EXIT_RETRY
            }
            Err(e) => {
                let code = exit_code(&e);
                let message = format!("{e:#}");
                if code == EXIT_PERMANENT {
                    let _ = image_io::write_atomically(&batch::failure_path(&item.output), message.as_bytes());
                }
                log(item, "failed", json!({ "output": out, "error": message, "exit": code }));
                code
            }
        }
    }

    /// The run of one item; its output is written only when it finished (or converged, or
    /// reached its time limit).
    fn stylize(&mut self, item: &Item) -> Result<Ran> {
        let settings = &item.settings;
        let stylizer = Stylizer::new(settings.config.clone())
            .map_err(|e| impasto::settings::in_file(e, Path::new(&format!("item {}", item.index))))?;
        if settings.is_fast_only() {
            // Fast mode: one pass of the feed-forward network, no optimisation.
            if let Some(fast) = &settings.fast {
                fast.check().map_err(|e| impasto::settings::in_file(e, Path::new(&format!("item {}", item.index))))?;
            }
            super::fast::stylize(settings, &item.output, true)?;
            return Ok(Ran::Done { stop: Stop::Finished, iterations: 0, loss: f64::NAN });
        }
        if settings.network.weights.is_none() && self.loaded.is_none() {
            // The default weights, fetched on first use: its messages as events too.
            let quiet = self.args.quiet;
            impasto::weights::fetch::ensure_default_weights(&mut |m| {
                if !quiet {
                    log(item, "weights", json!({ "message": m }));
                }
            })?;
        }
        let (inputs, plan, device) = prepare_on(settings, &stylizer, self.args.quiet, &mut self.loaded)?;
        if !self.args.quiet {
            let mut fields = json!({ "output": item.output.display().to_string(), "threads": self.threads,
                "size": [plan.output.width, plan.output.height], "iterations": plan.iterations() });
            if let Some(d) = device {
                fields["device"] = d.into();
            }
            log(item, "start", fields);
        }
        let planned = Settings { plan: Some(plan.clone()), ..settings.clone() };
        let carried = planned.is_serialisable().then(|| planned.to_json());
        let log_file = self.args.log.as_ref().map(|d| d.join(format!("{}.jsonl", item.index)));
        if let Some(dir) = &self.args.log {
            std::fs::create_dir_all(dir)?;
        }
        let mut observer = ItemObserver {
            inner: CliObserver::new(plan.iterations(), true, log_file.as_deref(), None, &item.output)?,
            item,
            quiet: self.args.quiet,
            every: (plan.iterations() / 10).max(1),
        };
        let net = &*self.loaded.as_ref().expect("prepare_on loads the network").net;
        let outcome = stylizer.run(net, &plan, &inputs, &mut observer)?;
        if let Some(e) = observer.inner.error.take() {
            return Err(e);
        }
        match outcome.stop {
            Stop::Interrupted => return Ok(Ran::Interrupted),
            Stop::NonFinite { iteration } => return Ok(Ran::NonFinite(iteration)),
            _ => {}
        }
        image_io::save_with(&outcome.image, &item.output, carried.as_deref(), settings.output)?;
        observer.inner.log_outcome(&outcome);
        Ok(Ran::Done { stop: outcome.stop, iterations: outcome.iterations, loss: outcome.terms.total })
    }
}

/// How an item's run ended.
enum Ran {
    /// Written.
    Done { stop: Stop, iterations: usize, loss: f64 },
    /// A signal stopped it; nothing written.
    Interrupted,
    /// The loss was not finite at this evaluation; nothing written.
    NonFinite(usize),
}

/// Whether a retry can help: 75 for what may pass (memory, the GPU, an output not writable
/// now, fetching the weights, a file system error), 2 for bad input.
fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<std::io::Error>()) {
        return EXIT_RETRY;
    }
    match e.downcast_ref::<impasto::Error>() {
        Some(
            impasto::Error::Memory { .. }
            | impasto::Error::Gpu(_)
            | impasto::Error::Fetch(_)
            | impasto::Error::Output { .. },
        ) => EXIT_RETRY,
        _ => EXIT_PERMANENT,
    }
}

/// The command line's observer (log file, signals) with a progress line every tenth of the run.
struct ItemObserver<'a> {
    inner: CliObserver,
    item: &'a Item,
    quiet: bool,
    every: usize,
}

impl Observer for ItemObserver<'_> {
    fn on_iteration(&mut self, p: &Progress<'_>) -> std::ops::ControlFlow<()> {
        if !self.quiet && p.iteration.is_multiple_of(self.every) {
            log(self.item, "progress", json!({ "iteration": p.iteration, "of": p.iterations, "best": p.best.total }));
        }
        self.inner.on_iteration(p)
    }
}
