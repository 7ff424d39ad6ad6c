//! `impasto bench --robustness`: does every run converge? Runs every content x style pair at
//! several sizes, style weights, with and without a pyramid, for a fixed number of evaluations,
//! with each optimizer asked for, and prints per case and in summary:
//!
//! - `last/first`: the last accepted loss over the first (at the final scale);
//! - `worst/first`: the highest loss evaluated after the 5th evaluation of a scale over that
//!   scale's first (a blow-up, even one a line search steps back from, shows here);
//! - `saved/best`: the written image's score (8-bit PNG, loaded back) over the best loss logged;
//! - the evaluations and seconds until the best loss at the output size is 1/50 of the initial
//!   image's loss there.
//!
//! A case fails if its loss rose (`last/first >= 1` at some scale), blew up (`worst/first > 10`)
//! or its saved image scores more than 10% off the best loss logged. Every case is appended to a
//! JSON-lines file as it finishes, so an interrupted benchmark resumes where it stopped, and the
//! summary can be printed again from the file alone.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use impasto::image_io::{self, Image};
use impasto::optim::{Bounds, LineSearch};
use impasto::transfer::{
    AdamSettings, Inputs, LbfgsSettings, OptimizerChoice, Progress, Scales, StyleConfig, Stylizer, pyramid_sides,
};
use impasto::vgg::Vgg;

/// One optimizer setting the benchmark compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// L-BFGS with the strong Wolfe line search (the default).
    Lbfgs,
    /// L-BFGS-B: the strong Wolfe line search from the generalised Cauchy point
    /// (`--lbfgs-bounds cauchy`).
    LbfgsCauchy,
    /// L-BFGS with PyTorch's one evaluation a step (`--lbfgs-line-search none`; impasto before
    /// the line search).
    LbfgsNone,
    /// Adam, lr 10.
    Adam,
}

impl Method {
    fn configure(self, config: StyleConfig) -> StyleConfig {
        let lbfgs = LbfgsSettings::default();
        config.optimizer(match self {
            Method::Lbfgs => OptimizerChoice::Lbfgs(lbfgs.line_search(LineSearch::StrongWolfe)),
            Method::LbfgsCauchy => OptimizerChoice::Lbfgs(lbfgs.bounds(Bounds::Cauchy)),
            Method::LbfgsNone => OptimizerChoice::Lbfgs(lbfgs.line_search(LineSearch::None)),
            Method::Adam => OptimizerChoice::Adam(AdamSettings::default()),
        })
    }
}

/// What the benchmark runs.
pub struct Plan {
    pub contents: Vec<PathBuf>,
    pub styles: Vec<PathBuf>,
    pub sizes: Vec<usize>,
    pub style_weights: Vec<f64>,
    pub pyramid: Vec<bool>,
    pub methods: Vec<Method>,
    pub evaluations: usize,
    /// The JSON-lines file of finished cases.
    pub records: PathBuf,
}

/// One finished case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub content: String,
    pub style: String,
    pub size: usize,
    pub width: usize,
    pub height: usize,
    pub style_weight: f64,
    pub pyramid: bool,
    pub method: Method,
    pub evaluations: usize,
    /// Per scale: first loss, last accepted loss, worst loss after the 5th evaluation.
    pub scales: Vec<ScaleRecord>,
    /// The initial image's loss at the output size.
    pub initial: f64,
    /// The best loss logged (at the output size) and the written image's score.
    pub best: f64,
    pub saved: f64,
    /// Evaluations and seconds until the best loss at the output size was initial / 50.
    pub to_fiftieth: Option<(usize, f64)>,
    /// Accepted evaluations (steps) at all scales.
    pub accepted: usize,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleRecord {
    pub width: usize,
    pub first: f64,
    pub last_accepted: f64,
    pub worst_after_5: f64,
}

impl Record {
    fn key(&self) -> String {
        case_key(&self.content, &self.style, self.size, self.style_weight, self.pyramid, self.method)
    }

    /// The loss rose at some scale.
    pub fn rose(&self) -> bool {
        self.scales.iter().any(|s| !(s.last_accepted < s.first))
    }

    /// Some evaluation after the 5th of its scale was more than 10x the scale's first.
    pub fn blew_up(&self) -> bool {
        self.scales.iter().any(|s| !(s.worst_after_5 <= 10.0 * s.first))
    }

    /// The written image scores more than 10% off the best loss logged.
    pub fn saved_off(&self) -> bool {
        !((self.saved - self.best).abs() <= 0.1 * self.best)
    }

    pub fn failed(&self) -> bool {
        self.rose() || self.blew_up() || self.saved_off()
    }

    fn final_scale(&self) -> &ScaleRecord {
        self.scales.last().expect("a scale")
    }
}

fn case_key(content: &str, style: &str, size: usize, weight: f64, pyramid: bool, method: Method) -> String {
    format!("{content}|{style}|{size}|{weight:e}|{pyramid}|{method:?}")
}

fn name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The records in `path` (none if it does not exist).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let Ok(file) = std::fs::File::open(path) else { return Ok(Vec::new()) };
    BufReader::new(file)
        .lines()
        .map(|l| {
            let l = l?;
            serde_json::from_str(&l).with_context(|| format!("{}: a line is not a benchmark record", path.display()))
        })
        .collect()
}

/// The schedule of a case: one scale, or a pyramid from half the size by √2 with half the
/// evaluations at the first scale and the rest shared by the others.
fn schedule(config: StyleConfig, size: usize, pyramid: bool, evaluations: usize) -> StyleConfig {
    let config = config.size(size).iterations(evaluations);
    if !pyramid {
        return config.scales(Scales::Off);
    }
    let sides = pyramid_sides(size / 2, std::f64::consts::SQRT_2, size).expect("a few scales");
    let n = sides.len();
    let config = config.scales(Scales::List(sides));
    let first = evaluations / 2;
    let rest = evaluations - first;
    let mut per: Vec<usize> = (1..n).map(|k| rest / (n - 1) + usize::from(k <= rest % (n - 1))).collect();
    per.insert(0, first);
    config.scale_iterations(Some(per))
}

/// Runs every case not yet in the records file, then prints the summary.
pub fn run(net: &Vgg, plan: &Plan) -> Result<()> {
    if plan.evaluations < 10 {
        bail!("--evaluations must be at least 10 for the robustness benchmark");
    }
    let done: HashSet<String> = read_records(&plan.records)?.iter().map(Record::key).collect();
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&plan.records)
        .with_context(|| format!("{}: cannot open the records file", plan.records.display()))?;
    let contents: Vec<(String, Image)> =
        plan.contents.iter().map(|p| Ok((name(p), image_io::load(p)?))).collect::<Result<_>>()?;
    let styles: Vec<(String, Image)> =
        plan.styles.iter().map(|p| Ok((name(p), image_io::load(p)?))).collect::<Result<_>>()?;
    let scratch = tempfile_dir()?;
    outln!("{}", CASE_HEADER);
    for (cname, content) in &contents {
        for (sname, style) in &styles {
            if cname == sname {
                continue;
            }
            for &size in &plan.sizes {
                for &weight in &plan.style_weights {
                    for &pyramid in &plan.pyramid {
                        for &method in &plan.methods {
                            if done.contains(&case_key(cname, sname, size, weight, pyramid, method)) {
                                continue;
                            }
                            let config = schedule(
                                method.configure(StyleConfig::default().style_weight(weight)),
                                size,
                                pyramid,
                                plan.evaluations,
                            );
                            let r = run_case(net, config, (cname, content), (sname, style), &scratch, method)?;
                            outln!("{}", case_row(&r));
                            writeln!(out, "{}", serde_json::to_string(&r)?)?;
                            out.flush()?;
                        }
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    outln!();
    print_summary(&read_records(&plan.records)?);
    Ok(())
}

/// A scratch directory for the saved images.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("impasto-robustness-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn run_case(
    net: &Vgg,
    config: StyleConfig,
    (cname, content): (&str, &Image),
    (sname, style): (&str, &Image),
    scratch: &Path,
    method: Method,
) -> Result<Record> {
    let (size, weight, pyramid) = (config.size, config.loss.style_weight, matches!(config.scales, Scales::List(_)));
    let evaluations = config.schedule()?.iter().map(|s| s.1).sum();
    let stylizer = Stylizer::new(config.clone())?;
    let inputs = Inputs::new(content.clone(), [style.clone()]);
    let impasto::Size { width, height } = config.output_size(content);
    let initial = stylizer.score(net, &inputs, &image_io::resize(content, width, height))?.total;
    let mut scales: Vec<ScaleRecord> = Vec::new();
    let mut scale_evals = 0;
    let mut accepted = 0;
    let mut to_fiftieth = None;
    let start = Instant::now();
    let outcome = stylizer.stylize(net, &inputs, &mut |p: &Progress| {
        if scales.len() < p.scale {
            scales.push(ScaleRecord {
                width: p.image.width,
                first: p.terms.total,
                last_accepted: p.terms.total,
                worst_after_5: 0.0,
            });
            scale_evals = 0;
        }
        scale_evals += 1;
        let s = scales.last_mut().expect("a scale");
        let total = if p.terms.total.is_finite() { p.terms.total } else { f64::INFINITY };
        if p.accepted {
            s.last_accepted = total;
            accepted += 1;
        }
        if scale_evals > 5 {
            s.worst_after_5 = s.worst_after_5.max(total);
        }
        if p.scale == p.scales && to_fiftieth.is_none() && p.best.total <= initial / 50.0 {
            to_fiftieth = Some((p.iteration, start.elapsed().as_secs_f64()));
        }
        ControlFlow::Continue(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let path = scratch.join("saved.png");
    image_io::save(&outcome.image, &path)?;
    let saved = stylizer.score(net, &inputs, &image_io::load(&path)?)?.total;
    Ok(Record {
        content: cname.to_string(),
        style: sname.to_string(),
        size,
        width,
        height,
        style_weight: weight,
        pyramid,
        method,
        evaluations,
        scales,
        initial,
        best: outcome.terms.total,
        saved,
        to_fiftieth,
        accepted,
        seconds,
    })
}

const CASE_HEADER: &str = "| content | style | size | style weight | pyramid | method | last/first | worst/first | \
                           saved/best | final loss | evaluations to 1/50 | seconds | |\n\
                           |---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn case_row(r: &Record) -> String {
    let fin = r.final_scale();
    let worst = r.scales.iter().map(|s| s.worst_after_5 / s.first).fold(0.0, f64::max);
    format!(
        "| {} | {} | {}x{} | {:e} | {} | {:?} | {:.3e} | {:.2} | {:.3} | {:.3e} | {} | {:.0} | {} |",
        r.content,
        r.style,
        r.width,
        r.height,
        r.style_weight,
        if r.pyramid { "on" } else { "off" },
        r.method,
        fin.last_accepted / fin.first,
        worst,
        r.saved / r.best,
        r.saved,
        r.to_fiftieth.map_or("-".to_string(), |(n, _)| n.to_string()),
        r.seconds,
        if r.failed() { "**FAIL**" } else { "" }
    )
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
}

fn show(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The summary table: per method (and pyramid setting), the failing cases and the medians.
pub fn print_summary(records: &[Record]) {
    let same_case = |a: &Record, b: &Record| {
        (&a.content, &a.style, a.size, a.style_weight, a.pyramid, a.evaluations)
            == (&b.content, &b.style, b.size, b.style_weight, b.pyramid, b.evaluations)
    };
    // The final loss of the same case under another method.
    let relative = |r: &Record, other: Method, converged_only: bool| {
        records
            .iter()
            .find(|o| o.method == other && same_case(r, o) && !(converged_only && o.failed()))
            .map(|o| r.saved / o.saved)
    };
    outln!(
        "| method | pyramid | cases | failing | rose | blew up | saved off | median last/first | \
         median final vs Adam | median final vs L-BFGS none | ... where none converged | reached 1/50 | median evaluations to 1/50 | \
         median seconds to 1/50 |"
    );
    outln!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for method in [Method::Lbfgs, Method::LbfgsCauchy, Method::LbfgsNone, Method::Adam] {
        for pyramid in [false, true] {
            let rs: Vec<&Record> = records.iter().filter(|r| r.method == method && r.pyramid == pyramid).collect();
            if rs.is_empty() {
                continue;
            }
            let count = |f: fn(&Record) -> bool| rs.iter().filter(|r| f(r)).count();
            let reached: Vec<(usize, f64)> = rs.iter().filter_map(|r| r.to_fiftieth).collect();
            let vs = |m: Method, converged_only: bool| {
                if m == method {
                    "-".into()
                } else {
                    show(median(rs.iter().filter_map(|r| relative(r, m, converged_only)).collect()), 3)
                }
            };
            outln!(
                "| {:?} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} | {} |",
                method,
                if pyramid { "on" } else { "off" },
                rs.len(),
                count(Record::failed),
                count(Record::rose),
                count(Record::blew_up),
                count(Record::saved_off),
                median(rs.iter().map(|r| r.final_scale().last_accepted / r.final_scale().first).collect())
                    .map_or("-".into(), |v| format!("{v:.2e}")),
                vs(Method::Adam, false),
                vs(Method::LbfgsNone, false),
                vs(Method::LbfgsNone, true),
                reached.len(),
                rs.len(),
                show(median(reached.iter().map(|r| r.0 as f64).collect()), 0),
                show(median(reached.iter().map(|r| r.1).collect()), 1),
            );
        }
    }
}
