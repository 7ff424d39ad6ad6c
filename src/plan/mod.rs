//! A run decided once: the [`Plan`]. Made from a checked configuration, the inputs and a
//! backend ([`Plan::make`], which [`crate::transfer::Stylizer::plan`] calls), it says
//! everything the run will do that was not in the settings: the output's size, the device, and
//! per scale the image size, each style image's size, the iterations, the tile side and the
//! L-BFGS history, fitted into the memory ([`layout`]). [`crate::transfer::Stylizer::run`]
//! executes a plan as it is, with no check or layout of its own; every front end (the CLI, the
//! studio, the library) makes a plan and hands it over.
//!
//! A plan is serialisable: `impasto plan --json` prints one (inside the settings, under
//! `plan`), `impasto stylize --plan FILE` runs exactly it, and every output carries it. A plan
//! read from a file is checked against the inputs and the backend ([`Plan::check`]): a field
//! that is out of range or inconsistent with the rest is named (`plan.scales[1].tile`); the
//! layout itself (tiles, history) is taken as it is.

pub mod layout;

use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::image_io::Image;
use crate::loss::check_styles;
use crate::memory::gib;
use crate::size::Size;
use crate::tiles::{Halo, MIN_TILE, TileGrid, Tiling};
use crate::transfer::{Init, Inputs, MAX_LBFGS_HISTORY, MAX_SCALES, MAX_SIZE, OptimizerChoice, StyleConfig};

/// How a run runs: what [`crate::transfer::Stylizer::run`] executes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Plan {
    /// The output's size.
    pub output: Size,
    /// The device the layout was made for (`cpu` or `gpu`).
    pub device: Device,
    /// The halo tiles have on this network for the run's layers (see [`crate::tiles`]).
    pub halo: Halo,
    /// Coarse to fine; the last is the output's size.
    pub scales: Vec<ScalePlan>,
    /// The memory the scales were fitted into, where known (not carried in files: it is this
    /// machine's at this moment).
    #[serde(skip)]
    pub budget: Option<u64>,
}

/// One scale of a run as it will run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ScalePlan {
    /// The image's size at this scale.
    pub size: Size,
    /// Evaluations at this scale.
    pub iterations: usize,
    /// The tile side (the interiors); `null`: the whole image at once.
    pub tile: Option<usize>,
    /// L-BFGS's correction pairs (`null` with Adam).
    pub history: Option<usize>,
    /// Each style image's size at this scale, in the inputs' order.
    pub styles: Vec<Size>,
    /// The estimated peak memory, in bytes.
    pub memory: u64,
}

impl ScalePlan {
    /// The tiles an evaluation at this scale runs on.
    pub fn grid(&self, halo: Halo) -> TileGrid {
        TileGrid::new(self.size, self.tile, halo)
    }
}

impl Plan {
    /// Checks `inputs` against `config` (already validated) and `net`, and lays the run out:
    /// each scale's sizes, and its tiles and L-BFGS history fitted into the backend's memory
    /// (largest scale first: a run that does not fit is refused for it). Errors name the
    /// setting at fault.
    pub fn make(config: &StyleConfig, net: &dyn Backend, inputs: &Inputs) -> Result<Plan> {
        inputs.check_images()?;
        check_start(config, inputs)?;
        let output = config.output_size(&inputs.content);
        check_styles(&config.loss, &inputs.styles, output)?;
        check_layers(config, net)?;
        let layers = config.loss.layers();
        let schedule = config.schedule()?;
        let budget = net.budget();
        let regions = inputs.styles.iter().filter(|s| s.region_mask.is_some()).count();
        let sized: Vec<(Size, Vec<Size>, usize)> = schedule
            .iter()
            .map(|&(side, iterations)| {
                let size = config.size_at(&inputs.content, side);
                (size, style_sizes(config, inputs, size), iterations)
            })
            .collect();
        let mut scales = Vec::new();
        for (size, styles, iterations) in sized.iter().rev() {
            let history = match config.optimizer {
                OptimizerChoice::Lbfgs(l) => Some((l.history, l.fit_history)),
                OptimizerChoice::Adam(_) => None,
            };
            let shape = layout::Shape { size: *size, styles, regions, history };
            let (tile, history, memory) = layout::fit(config, net, &shape, budget)?;
            scales.push(ScalePlan {
                size: *size,
                iterations: *iterations,
                tile,
                history,
                styles: styles.clone(),
                memory,
            });
        }
        scales.reverse();
        for s in &scales {
            check_sizes(config, net, s.size, &s.styles, "size", "style_scale")?;
        }
        Ok(Plan { output, device: net.device(), halo: net.halo(&layers)?, scales, budget })
    }

    /// The layout of one pass scoring an image at the output size (no optimizer).
    pub fn for_score(
        config: &StyleConfig,
        net: &dyn Backend,
        content: &Image,
        styles: &[crate::loss::StyleInput],
    ) -> Result<Plan> {
        let inputs = Inputs { content: content.clone(), styles: styles.to_vec(), start: None, temporal: Vec::new() };
        inputs.check_images()?;
        let output = config.output_size(content);
        check_styles(&config.loss, styles, output)?;
        check_layers(config, net)?;
        let layers = config.loss.layers();
        let style = style_sizes(config, &inputs, output);
        let regions = styles.iter().filter(|s| s.region_mask.is_some()).count();
        let shape = layout::Shape { size: output, styles: &style, regions, history: None };
        let budget = net.budget();
        let (tile, _, memory) = layout::fit(config, net, &shape, budget).map_err(|e| match e {
            Error::Memory { message, lower } => Error::Memory { message: message.replace(" run ", " score "), lower },
            e => e,
        })?;
        check_sizes(config, net, output, &style, "size", "style_scale")?;
        let scale = ScalePlan { size: output, iterations: 1, tile, history: None, styles: style, memory };
        Ok(Plan { output, device: net.device(), halo: net.halo(&layers)?, scales: vec![scale], budget })
    }

    /// Evaluations over all scales (saturating: a hand-made plan cannot wrap it).
    pub fn iterations(&self) -> usize {
        self.scales.iter().fold(0usize, |a, s| a.saturating_add(s.iterations))
    }

    /// The largest estimated peak over the scales.
    pub fn peak(&self) -> u64 {
        self.scales.iter().map(|s| s.memory).max().unwrap_or(0)
    }

    /// Checks a plan from outside (a file) before it runs: every field in its range and
    /// consistent with `config`, `inputs` and `net` (the sizes are those `config` gives these
    /// images, the halo is the network's), and each scale's layout, as it is, within the memory.
    /// Errors name the field under `plan.`.
    pub fn check(&self, config: &StyleConfig, net: &dyn Backend, inputs: &Inputs) -> Result<()> {
        inputs.check_images()?;
        let bad = |field: String, message: String| Error::setting(format!("plan.{field}"), message);
        if self.device != net.device() {
            return Err(bad(
                "device".into(),
                format!("is {} but the network is on the {}", self.device.name(), net.name()),
            ));
        }
        check_start(config, inputs)?;
        let output = config.output_size(&inputs.content);
        if self.output != output {
            return Err(bad(
                "output".into(),
                format!("is {} but the content image at size {} gives {output}", self.output, config.size),
            ));
        }
        let layers = config.loss.layers();
        let halo = net.halo(&layers)?;
        if self.halo != halo {
            return Err(bad("halo".into(), format!("is {:?} but this network's is {halo:?}", self.halo)));
        }
        if self.scales.is_empty() || self.scales.len() > MAX_SCALES {
            return Err(bad("scales".into(), format!("has {} scales: 1 to {MAX_SCALES}", self.scales.len())));
        }
        let mut total = 0usize;
        let regions = inputs.styles.iter().filter(|s| s.region_mask.is_some()).count();
        for (k, s) in self.scales.iter().enumerate() {
            let field = |name: &str| format!("scales[{k}].{name}");
            let side = s.size.long_side();
            if !(1..=MAX_SIZE).contains(&side) || s.size != config.size_at(&inputs.content, side) {
                return Err(bad(
                    field("size"),
                    format!("{} is not the content image's shape at a long side of {side}", s.size),
                ));
            }
            if k > 0 && side <= self.scales[k - 1].size.long_side() {
                return Err(bad(field("size"), "must be larger than the scale before it".into()));
            }
            if k + 1 == self.scales.len() && s.size != output {
                return Err(bad(
                    field("size"),
                    format!("is {} but the last scale must be the output, {output}", s.size),
                ));
            }
            if s.iterations == 0 {
                return Err(bad(field("iterations"), "must be at least 1".into()));
            }
            total =
                total.checked_add(s.iterations).filter(|t| *t <= crate::transfer::MAX_ITERATIONS).ok_or_else(|| {
                    bad(
                        field("iterations"),
                        format!("makes more than {} evaluations in all", crate::transfer::MAX_ITERATIONS),
                    )
                })?;
            if let Some(t) = s.tile
                && !(MIN_TILE..=MAX_SIZE).contains(&t)
            {
                return Err(bad(
                    field("tile"),
                    format!("must be null or a side between {MIN_TILE} and {MAX_SIZE}, got {t}"),
                ));
            }
            let lbfgs = matches!(config.optimizer, OptimizerChoice::Lbfgs(_));
            match s.history {
                Some(h) if lbfgs && (1..=MAX_LBFGS_HISTORY).contains(&h) => {}
                None if !lbfgs => {}
                Some(h) if lbfgs => {
                    return Err(bad(field("history"), format!("must be between 1 and {MAX_LBFGS_HISTORY}, got {h}")));
                }
                _ if lbfgs => return Err(bad(field("history"), "must be given for L-BFGS".into())),
                _ => return Err(bad(field("history"), "must be null for Adam".into())),
            }
            if s.styles.len() != inputs.styles.len() {
                return Err(bad(
                    field("styles"),
                    format!("has {} sizes but there are {} style images", s.styles.len(), inputs.styles.len()),
                ));
            }
            let want = style_sizes(config, inputs, s.size);
            if let Some(i) = (0..want.len()).find(|&i| s.styles[i] != want[i]) {
                return Err(bad(
                    format!("scales[{k}].styles[{i}]"),
                    format!("is {} but style_scale {} gives {}", s.styles[i], config.style_scale, want[i]),
                ));
            }
            check_sizes(
                config,
                net,
                s.size,
                &s.styles,
                &format!("plan.{}", field("size")),
                &format!("plan.{}", field("styles")),
            )?;
            let shape =
                layout::Shape { size: s.size, styles: &s.styles, regions, history: s.history.map(|h| (h, false)) };
            let need = layout::scale_memory(config, net, &shape, s.tile, s.history)?;
            if let Some(b) = net.budget()
                && need > b
            {
                return Err(Error::Memory {
                    message: format!(
                        "plan.scales[{k}] ({}, tiles {}) needs about {} of memory but only {} is available",
                        s.size,
                        s.tile.map_or("off".into(), |t| t.to_string()),
                        gib(need),
                        gib(b)
                    ),
                    lower: vec![format!("plan.{}", field("tile")), "size".into()],
                });
            }
        }
        Ok(())
    }

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
                parts.push(format!("in {} tiles of {t} px", s.grid(self.halo).tiles.len()));
            }
            if let (Some(h), Some(w)) = (s.history, wanted)
                && h < w
            {
                parts.push(format!("with {h} L-BFGS pairs instead of {w}"));
            }
            if !parts.is_empty() {
                let budget = self.budget.map_or(String::new(), |b| format!(" (about {} of {})", gib(s.memory), gib(b)));
                lines.push(format!("{} runs {} to fit in memory{budget}", s.size, parts.join(" ")));
            }
        }
        lines
    }
}

/// Every layer the configuration names is the network's; the error names the list at fault.
fn check_layers(config: &StyleConfig, net: &dyn Backend) -> Result<()> {
    for (field, layers) in
        [("loss.content_layers", &config.loss.content_layers), ("loss.style_layers", &config.loss.style_layers)]
    {
        net.check_layers(layers).map_err(|e| match e {
            Error::Config(message) => Error::setting(field, format!("has an {message}")),
            e => e,
        })?;
    }
    Ok(())
}

/// Each style image's size for an output of `size`.
fn style_sizes(config: &StyleConfig, inputs: &Inputs, size: Size) -> Vec<Size> {
    inputs.styles.iter().map(|s| config.style_size(Size::new(s.image.width, s.image.height), size)).collect()
}

/// A start image is given exactly with `init` `image`.
fn check_start(config: &StyleConfig, inputs: &Inputs) -> Result<()> {
    match (config.init, &inputs.start) {
        (Init::Image, None) => Err(Error::setting("init", "is 'image' but no start image was given")),
        (Init::Fast, None) => Err(Error::setting("init", "is 'fast' but the fast network's picture was not given")),
        (init, Some(_)) if !matches!(init, Init::Image | Init::Fast) => {
            Err(Error::setting("init", format!("is {init:?}, not 'image', but a start image was given")))
        }
        _ => Ok(()),
    }
}

/// The content at `size` and the styles at `styles` are large enough for the layers that read
/// them, and no style is larger than an image may be; errors name `size_field` and
/// `style_field`.
fn check_sizes(
    config: &StyleConfig,
    net: &dyn Backend,
    size: Size,
    styles: &[Size],
    size_field: &str,
    style_field: &str,
) -> Result<()> {
    let min = net.min_input_side(&config.loss.layers())?;
    if size.short_side() < min {
        return Err(Error::setting(
            size_field,
            format!("is too small: the output would be {size} pixels, but the layers used need at least {min}x{min}"),
        ));
    }
    let style_min = net.min_input_side(&config.loss.style_layers)?;
    for s in styles {
        if s.long_side() > MAX_SIZE {
            return Err(Error::setting(
                style_field,
                format!("is too large: a style image would be {s} pixels, more than {MAX_SIZE} a side"),
            ));
        }
        if s.short_side() < style_min {
            return Err(Error::setting(
                style_field,
                format!(
                    "is too small for this size: a style image would be {s} pixels, but the style layers \
                     need at least {style_min}x{style_min} (raise it or the size)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
