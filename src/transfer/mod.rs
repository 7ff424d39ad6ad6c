//! Style transfer: a checked configuration ([`Stylizer`]), planned once on a backend and the
//! inputs ([`Stylizer::plan`], a [`crate::plan::Plan`]), then carried out as planned
//! ([`Stylizer::run`]): each scale's images at the plan's sizes, the objective built from the
//! specification on the backend, the start image, the optimizer, and each evaluation reported
//! to an [`Observer`] that may stop the run.
//!
//! The pieces: [`config`] (the typed options and their check), [`observer`] (progress and the
//! outcome), [`mod@optimize`] (the loop over any objective). Large outputs run coarse to fine (a
//! pyramid of scales, as jcjohnson's multiscale scripts and crowsonkb's automatic √2 pyramid
//! do): each scale starts from the previous result, upsampled, with the style images resized
//! for that scale. Colour modes prepare the images before the run and finish the output after
//! it ([`crate::colour`]).
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use impasto::{image_io, transfer::{Inputs, Progress, StyleConfig, Stylizer}, vgg::Vgg, weights};
//! # fn main() -> impasto::Result<()> {
//! let net = Vgg::new(weights::load("vgg19.pth", None)?, Default::default());
//! let inputs = Inputs::new(image_io::load("photo.jpg")?, [image_io::load("art.jpg")?]);
//! let stylizer = Stylizer::new(StyleConfig::default().size(256))?;
//! let plan = stylizer.plan(&net, &inputs)?;
//! let out = stylizer.run(&net, &plan, &inputs, &mut |p: &Progress| if p.iteration < 50 { ControlFlow::Continue(()) } else { ControlFlow::Break(()) })?;
//! println!("{:?}", stylizer.score(&net, &inputs, &out.image)?);
//! # Ok(()) }
//! ```

pub mod config;
pub mod observer;
pub mod optimize;

use std::time::Instant;

use crate::engine::{Backend, Evaluator};
use crate::error::Result;
use crate::image_io::{Image, resize};
use crate::loss::temporal::WithTemporal;
use crate::loss::{LossTerms, ObjectiveSpec, StyleInput};
use crate::optim::{Adam, AdamConfig, Lbfgs, Optimizer};
use crate::plan::{Plan, ScalePlan};

pub use crate::optim::{Bounds, LineSearch};
pub use config::{
    AUTO_PYRAMID_ABOVE, AdamSettings, Init, Inputs, LbfgsSettings, MAX_ITERATIONS, MAX_LBFGS_HISTORY, MAX_SCALES,
    MAX_SIZE, OptimizerChoice, PyramidSettings, Scales, StyleConfig, pyramid_sides,
};
pub use observer::{Observer, Outcome, Progress, Stop, Verdict};
pub use optimize::{Evaluate, noise_image, optimize};

use observer::ScaleObserver;

/// A checked configuration: what plans and runs are made from.
#[derive(Clone, Debug, PartialEq)]
pub struct Stylizer {
    config: StyleConfig,
}

impl Stylizer {
    /// Checks `config` (once: nothing downstream checks it again).
    pub fn new(config: StyleConfig) -> Result<Self> {
        config.validate()?;
        Ok(Stylizer { config })
    }

    /// The checked configuration.
    pub fn config(&self) -> &StyleConfig {
        &self.config
    }

    /// Checks `inputs` against the configuration and `net`, and lays the run out
    /// ([`Plan::make`]).
    pub fn plan(&self, net: &dyn Backend, inputs: &Inputs) -> Result<Plan> {
        Plan::make(&self.config, net, inputs)
    }

    /// Plans and runs in one call; `observer` sees each evaluation (`|_| ()` to ignore them, or
    /// `|p| println!("{}", p.iteration)`; return `ControlFlow::Break(())` to stop).
    pub fn stylize<R: Verdict>(
        &self,
        net: &dyn Backend,
        inputs: &Inputs,
        mut observer: impl FnMut(&Progress<'_>) -> R,
    ) -> Result<Outcome> {
        let plan = self.plan(net, inputs)?;
        self.run(net, &plan, inputs, &mut observer)
    }

    /// The loss of `image` (resized to the output size if needed) for these content and styles,
    /// at the output size, in the colour mode's terms (luminance mode scores luminances).
    pub fn score(&self, net: &dyn Backend, inputs: &Inputs, image: &Image) -> Result<LossTerms> {
        let cfg = &self.config;
        image.check("image")?;
        let plan = Plan::for_score(cfg, net, &inputs.content, &inputs.styles)?;
        let (content, styles) = cfg.colour.inputs(&inputs.content, &inputs.styles);
        let scale = &plan.scales[0];
        let (content, styles) = self.at_scale(scale, &content, &styles);
        let objective = self.evaluator(net, scale, &content, &styles)?;
        let image = cfg.colour.candidate(resize(image, content.width, content.height));
        Ok(objective.evaluate(&image, false)?.0)
    }

    /// The content and style images at a scale's sizes.
    fn at_scale(&self, scale: &ScalePlan, content: &Image, styles: &[StyleInput]) -> (Image, Vec<StyleInput>) {
        let content = resize(content, scale.size.width, scale.size.height);
        let styles = styles.iter().zip(&scale.styles).map(|(s, z)| s.with_image(resize(&s.image, z.width, z.height)));
        (content, styles.collect())
    }

    /// The evaluator of a scale, as planned.
    fn evaluator<'n>(
        &self,
        net: &'n dyn Backend,
        scale: &ScalePlan,
        content: &Image,
        styles: &[StyleInput],
    ) -> Result<Box<dyn Evaluator + 'n>> {
        let spec = ObjectiveSpec::new(net, &self.config.loss, scale.size, styles)?;
        net.evaluator(&spec, content, styles, scale.tile)
    }

    /// Carries out `plan` on `net`: stylizes `inputs.content` after `inputs.styles` as planned
    /// (no check or layout of its own: the plan is made by [`Stylizer::plan`] or checked by
    /// [`Plan::check`]).
    pub fn run(&self, net: &dyn Backend, plan: &Plan, inputs: &Inputs, observer: &mut dyn Observer) -> Result<Outcome> {
        inputs.check_images()?;
        let cfg = &self.config;
        let content = &inputs.content;
        let (c_in, s_in) = cfg.colour.inputs(content, &inputs.styles);
        let total = plan.iterations();
        let mut done = 0usize;
        let start = Instant::now();
        let mut previous: Option<(Image, Image)> = None;
        // The last scale's L-BFGS inverse curvature and pixel count, to warm-start the next.
        let mut curvature: Option<(f64, usize)> = None;
        let mut outcome = None;
        for (k, scale) in plan.scales.iter().enumerate() {
            let (content_k, styles_k) = self.at_scale(scale, &c_in, &s_in);
            let (w, h) = (content_k.width, content_k.height);
            let objective = self.evaluator(net, scale, &content_k, &styles_k)?;
            let objective: Box<dyn Evaluator> = if inputs.temporal.is_empty() {
                objective
            } else {
                let temporal =
                    inputs.temporal.iter().map(|t| t.at_size(w, h, |img| cfg.colour.candidate(img))).collect();
                Box::new(WithTemporal::new(objective, temporal)?)
            };
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
                (None, Init::Image | Init::Fast) => match &inputs.start {
                    Some(start) => cfg.colour.candidate(resize(start, w, h)),
                    None => content_k.clone(),
                },
            };
            // The optimizers keep pixels in 0..255, where they start too.
            let mut x = x;
            x.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 255.0));
            let mut scaled = ScaleObserver {
                inner: observer,
                offset: done,
                total,
                scale: k + 1,
                scales: plan.scales.len(),
                start,
                time_limit: cfg.time_limit,
                timed_out: false,
                presenter: cfg.colour.presenter(content, w, h),
            };
            // The losses are means over positions, so the inverse curvature grows with the
            // pixel count from one scale to the next.
            let pixels = w * h;
            let mut optimizer = self.optimizer(scale.history, curvature.map(|(inv, n)| inv * pixels as f64 / n as f64));
            let result = optimize(
                &mut |img: &Image| objective.evaluate(img, true).map(|(t, g)| (t, g.unwrap_or_default())),
                x,
                optimizer.as_mut(),
                cfg.average(),
                scale.iterations,
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
        let Some(mut outcome) = outcome else {
            return Err(crate::Error::setting("plan.scales", "is empty: nothing to run"));
        };
        // A run stopped early at a coarse scale still gives an output at the requested size.
        let (fw, fh) = (plan.output.width, plan.output.height);
        outcome.image = resize(&outcome.image, fw, fh);
        outcome.image = cfg.colour.presenter(content, fw, fh).show(&outcome.image).into_owned();
        Ok(outcome)
    }

    /// A fresh optimizer (L-BFGS with `history` pairs, as planned); L-BFGS starts from
    /// `inverse_curvature` when there is one.
    fn optimizer(&self, history: Option<usize>, inverse_curvature: Option<f64>) -> Box<dyn Optimizer> {
        match self.config.optimizer {
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
