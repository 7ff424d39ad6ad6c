//! Settings that travel: a whole run as JSON. [`Settings`] is a [`StyleConfig`] (the typed
//! options) plus where its images and its network come from, by path. It is what
//! `impasto stylize --settings run.json` replays, what every output image carries (a PNG text
//! chunk, a TIFF tag, a JPEG comment: [`crate::image_io::metadata`]), what `impasto settings
//! out.png` prints, and what the studio stores with each picture.
//!
//! ```json
//! {
//!   "impasto": "0.1.0",
//!   "content": "examples/tubingen.jpg",
//!   "styles": [{ "image": "examples/starry_night.jpg", "blend": 1.0 }],
//!   "config": { "size": 384, "iterations": 200, "optimizer": { "adam": { "lr": 5.0 } } }
//! }
//! ```
//!
//! Every field but `content` and `styles` may be left out (it takes its default), an unknown
//! field is refused, and an error names the field by its path (`config.optimizer.adam.lr`), the
//! same paths [`crate::Error::Setting`] uses under `config.`. Relative paths are relative to the
//! current directory, as on the command line that wrote them. Given the same images, weights and
//! machine, a replayed run gives the same image, bit for bit (there is no time-dependent choice
//! in a run except `time_limit`).

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod options;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::fast::{FastNetworks, FastStyle};
use crate::image_io::WriteOptions;
use crate::image_io::{self, Image};
use crate::loss::Style;
use crate::plan::Plan;
use crate::transfer::{Init, Inputs, StyleConfig};
use crate::vgg::Pooling;
use crate::weights::Preprocess;

pub use options::shell_quote;

/// A whole run: its images by path, the network and the options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The version of impasto that wrote them (informative: any version's settings are read as
    /// long as their fields still exist).
    #[serde(default = "version")]
    pub impasto: String,
    /// The content image.
    pub content: PathBuf,
    /// The style images, each with its blend weight and masks.
    pub styles: Vec<StyleFile>,
    /// The start image, for `config.init` = `"image"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<PathBuf>,
    #[serde(default)]
    /// The network the run uses.
    pub network: NetworkSettings,
    #[serde(default)]
    /// The run's configuration.
    pub config: StyleConfig,
    /// How the output is written (bit depth, print resolution).
    #[serde(default, skip_serializing_if = "WriteOptions::is_default")]
    pub output: WriteOptions,
    /// Fast mode ([`crate::fast`]): the output is this feed-forward network's picture, with no
    /// optimisation; with `config.init` `"fast"` it is the optimisation's start instead (and
    /// when left out there, the arbitrary-style network at strength 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast: Option<FastStyle>,
    /// How the run was laid out ([`Plan`]): what `impasto plan --json` prints, every output
    /// carries and `impasto stylize --plan` carries out as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// One style image and how it enters the objective, by path ([`Style`] of files).
pub type StyleFile = Style<PathBuf>;

/// The network: which weights file (none: the default VGG19), its pooling and preprocessing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    /// A weights file (`null`: the default VGG19).
    pub weights: Option<PathBuf>,
    /// Max or average pooling.
    pub pooling: Pooling,
    /// Overrides the preprocessing the weights file implies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<Preprocess>,
    /// Where the objective is computed (`auto`: a hardware GPU if there is one).
    #[serde(skip_serializing_if = "is_auto")]
    pub device: Device,
    /// A directory with fast mode's three ONNX files (`null`: the ones fetched into the cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast_networks: Option<PathBuf>,
}

fn is_auto(d: &Device) -> bool {
    *d == Device::Auto
}

/// The largest long side the fast picture for `init` `"fast"` is made at.
pub const MAX_FAST_START: usize = 2048;

/// Settings files larger than this are refused (a run's settings are a few kilobytes), and so are
/// settings an image carries.
pub const MAX_SETTINGS_BYTES: u64 = image_io::metadata::MAX_SETTINGS_BYTES as u64;

impl Settings {
    /// `content` after `styles` with the default network and options.
    pub fn new(content: impl Into<PathBuf>, styles: impl IntoIterator<Item = StyleFile>) -> Self {
        Settings {
            impasto: version(),
            content: content.into(),
            styles: styles.into_iter().collect(),
            start: None,
            output: WriteOptions::default(),
            network: NetworkSettings::default(),
            config: StyleConfig::default(),
            fast: None,
            plan: None,
        }
    }

    /// The settings as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("settings serialise (paths must be UTF-8)")
    }

    /// Whether [`Settings::to_json`] can write them: every path is valid UTF-8.
    pub fn is_serialisable(&self) -> bool {
        serde_json::to_string(self).is_ok()
    }

    /// Parses settings JSON; `origin` names it in errors, with the path of the field at fault.
    /// The options' values are checked where a run is made of them
    /// ([`crate::transfer::Stylizer::new`]; [`in_file`] names their fields in the file's terms).
    pub fn from_json(text: &str, origin: &Path) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let settings: Settings = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let message = match field.as_str() {
                "." | "" => inner.to_string(),
                _ => format!("{field}: {inner}"),
            };
            Error::SettingsFile { path: origin.to_path_buf(), message }
        })?;
        // One JSON value and nothing after it (a second object, or garbage, is not ignored).
        de.end().map_err(|e| Error::SettingsFile {
            path: origin.to_path_buf(),
            message: format!("has more after the settings: {e}"),
        })?;
        Ok(settings)
    }

    /// Reads settings from a JSON file (at most [`MAX_SETTINGS_BYTES`]), or from an image
    /// impasto wrote (its embedded settings, read from its metadata by seeking: a large image is
    /// not read whole, and embedded settings are bounded as a file is).
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |message: String| Error::SettingsFile { path: path.to_path_buf(), message };
        let (file, len) = image_io::open_regular_file(path, image_io::MAX_FILE_BYTES).map_err(bad)?;
        let mut reader = std::io::BufReader::new(file);
        let mut head = Vec::with_capacity(16);
        (&mut reader).take(16).read_to_end(&mut head).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let text = if image_io::metadata::is_image(&head) {
            reader.seek(std::io::SeekFrom::Start(0)).map_err(|e| bad(format!("cannot read it: {e}")))?;
            match image_io::metadata::read_settings_from(&mut reader, len).map_err(bad)? {
                Some(text) => text,
                None => {
                    return Err(bad(
                        "is an image without impasto settings (only images impasto wrote carry them)".into()
                    ));
                }
            }
        } else {
            if len > MAX_SETTINGS_BYTES {
                return Err(bad(format!("is {len} bytes, more than a settings file can be ({MAX_SETTINGS_BYTES})")));
            }
            let mut bytes = head;
            (&mut reader)
                .take(MAX_SETTINGS_BYTES + 1 - bytes.len() as u64)
                .read_to_end(&mut bytes)
                .map_err(|e| bad(format!("cannot read it: {e}")))?;
            if bytes.len() as u64 > MAX_SETTINGS_BYTES {
                return Err(bad(format!("grew past {MAX_SETTINGS_BYTES} bytes while it was read")));
            }
            String::from_utf8(bytes)
                .map_err(|_| bad("is neither settings JSON (not UTF-8 text) nor an image impasto wrote".into()))?
        };
        Settings::from_json(&text, path)
    }

    /// Loads the images (each error names its file); no more styles than a run takes.
    pub fn load_inputs(&self) -> Result<Inputs> {
        crate::loss::check_style_count(self.styles.len())?;
        let content = image_io::load(&self.content)?;
        self.load_inputs_for(content)
    }

    /// [`Settings::load_inputs`] with `content` for the content file (a video's frame).
    pub fn load_inputs_for(&self, content: Image) -> Result<Inputs> {
        crate::loss::check_style_count(self.styles.len())?;
        let load = |p: &Path| image_io::load(p);
        let styles = self.styles.iter().map(|s| s.try_map(|_, p| load(p))).collect::<Result<Vec<_>>>()?;
        let start: Option<Image> = self.start.as_deref().map(load).transpose()?;
        let mut inputs = Inputs { content, styles, start, temporal: Vec::new() };
        if self.config.init == Init::Fast {
            if let Some(start) = &self.start {
                return Err(Error::setting("start", format!("{} is given but init is 'fast'", start.display())));
            }
            // At most 2048 px: a start is resized to the first scale, and a print size's fast
            // pass would not fit the memory.
            let capped =
                Settings { config: self.config.clone().size(self.config.size.min(MAX_FAST_START)), ..self.clone() };
            inputs.start = Some(capped.fast_picture(&self.fast_networks(&mut |_| {})?, &inputs)?);
        }
        Ok(inputs)
    }

    /// The fast networks these settings name (`network.fast_networks`, else the cache's,
    /// fetched first if missing; `say` hears about the fetch).
    pub fn fast_networks(&self, say: &mut dyn FnMut(&str)) -> Result<FastNetworks> {
        match &self.network.fast_networks {
            Some(dir) => FastNetworks::from_dir(dir),
            None => FastNetworks::from_dir(&crate::weights::fetch::ensure_fast_networks(say)?),
        }
    }

    /// Whether the output is the fast network's picture alone (fast mode without `init`
    /// `"fast"`).
    pub fn is_fast_only(&self) -> bool {
        self.fast.is_some() && self.config.init != Init::Fast
    }

    /// The fast network's picture of the content at the output size (`config.size` on the long
    /// side), with the first style image for the arbitrary-style network, in the colour mode.
    pub fn fast_picture(&self, nets: &FastNetworks, inputs: &Inputs) -> Result<Image> {
        let style = self.fast.clone().unwrap_or(FastStyle::Painting { strength: 1.0 });
        let (w, h) = image_io::fit_long_side(inputs.content.width, inputs.content.height, self.config.size);
        let content = image_io::resize(&inputs.content, w, h);
        nets.paint(&content, inputs.styles.first().map(|s| &s.image), &style, self.config.colour)
    }

    /// The `impasto stylize` command that gives these settings, writing `output`
    /// ([`options::command_line`]).
    pub fn command_line(&self, output: &Path) -> String {
        options::command_line(self, output)
    }
}

/// A setting error found with the settings of file `origin`: its field gets the `config.`
/// prefix (as in the file) and the file's name.
pub fn in_file(e: Error, origin: &Path) -> Error {
    match e {
        Error::Setting { field, message } => {
            let field = if ["start", "styles", "plan", "output.", "network."].iter().any(|p| field.starts_with(p)) {
                field
            } else {
                format!("config.{field}")
            };
            Error::SettingsFile { path: origin.to_path_buf(), message: format!("{field} {message}") }
        }
        Error::Config(message) => Error::SettingsFile { path: origin.to_path_buf(), message },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::{AdamSettings, Init, OptimizerChoice, Scales};

    fn origin() -> &'static Path {
        Path::new("run.json")
    }

    #[test]
    fn settings_round_trip_through_json() {
        let mut s =
            Settings::new("c.jpg", [StyleFile::new("a.jpg"), StyleFile { blend: 2.5, ..StyleFile::new("b.png") }]);
        s.styles[1].region_mask = Some("sky.png".into());
        s.config = StyleConfig::default()
            .size(300)
            .optimizer(OptimizerChoice::Adam(AdamSettings { lr: 0.3, average: Some(0.99) }))
            .scales(Scales::List(vec![100, 300]))
            .init(Init::Noise(0.25))
            .time_limit(Some(std::time::Duration::from_millis(1500)))
            .style_weight(1.0 / 3.0);
        s.network.pooling = Pooling::Avg;
        let json = s.to_json();
        assert_eq!(Settings::from_json(&json, origin()).unwrap(), s);
        assert!(json.contains("\"lr\": 0.3") && json.contains("\"time_limit\": 1.5"), "{json}");
    }

    /// Every number reads back as the same f64 (serde_json's default parser can be one unit in
    /// the last place off; the fuzzer found 1.0000000000000009 read as ...07), so a replay
    /// runs with exactly the weights of the original.
    #[test]
    fn numbers_read_back_exactly() {
        for w in [1.0000000000000009, 0.1 + 0.2, 1e-300, 5e-324, 1.7976931348623157e308, 2.0f64.sqrt()] {
            let mut s = Settings::new("c.jpg", [StyleFile { blend: w, ..StyleFile::new("s.jpg") }]);
            s.config.loss.tv_weight = w;
            let back = Settings::from_json(&s.to_json(), origin()).unwrap();
            assert_eq!(back.config.loss.tv_weight.to_bits(), w.to_bits(), "{w:e}");
            assert_eq!(back.styles[0].blend.to_bits(), w.to_bits());
        }
    }

    #[test]
    fn left_out_fields_take_the_defaults() {
        let s = Settings::from_json(r#"{"content": "c.jpg", "styles": [{"image": "s.jpg"}]}"#, origin()).unwrap();
        assert_eq!(s, Settings::new("c.jpg", [StyleFile::new("s.jpg")]));
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        // Parsing names the field of a value of the wrong type; a run made of the settings
        // names the field of a value out of its range.
        let err = |json: &str| match Settings::from_json(json, origin()) {
            Err(e) => e.to_string(),
            Ok(s) => in_file(crate::transfer::Stylizer::new(s.config).unwrap_err(), origin()).to_string(),
        };
        let base = r#""content": "c.jpg", "styles": [{"image": "s.jpg"}]"#;
        let e = err(&format!(r#"{{{base}, "config": {{"optimizer": {{"adam": {{"lr": "fast"}}}}}}}}"#));
        assert!(e.starts_with("run.json: config.optimizer.adam.lr: invalid type: string \"fast\""), "{e}");
        let e = err(&format!(r#"{{{base}, "config": {{"sise": 3}}}}"#));
        assert!(e.starts_with("run.json: config.sise: unknown field `sise`"), "{e}");
        let e = err(&format!(r#"{{{base}, "config": {{"loss": {{"style_weight": -2}}}}}}"#));
        assert_eq!(e, "run.json: config.loss.style_weight must be a finite number >= 0, got -2");
        let e = err(&format!(r#"{{{base}, "config": {{"loss": {{"style_layers": ["relu1_1", "relu9_x"]}}}}}}"#));
        assert!(e.contains("config.loss.style_layers[1]") && e.contains("relu9_x"), "{e}");
        let e = err(r#"{"content": "c.jpg", "styles": [{"image": "s.jpg", "blend": "x"}]}"#);
        assert!(e.starts_with("run.json: styles[0].blend: invalid type"), "{e}");
        assert!(err(r#"{"styles": []}"#).contains("missing field `content`"));
        assert!(err("[1, 2").starts_with("run.json: "));
    }
}
