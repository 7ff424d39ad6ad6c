//! A small interpreter for ONNX graphs: the operators the feed-forward style networks use, on
//! impasto's own kernels (3x3 convolutions through [`crate::kernels`], the others through
//! banded im2col and the `gemm` crate), every shape checked before any memory is taken.
//!
//! Loading a model checks that every operator is known and every value is made before it is
//! used, evaluates the nodes that depend only on constants (dequantized int8 weights, the pads
//! that the exporters compute from constant shapes), and fuses each activation's
//! QuantizeLinear → DequantizeLinear pair into one rounding pass. A run then evaluates the rest
//! in file order (ONNX requires topological order) and frees each value after its last use.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use super::onnx::{self, Attribute, DataType, Dim, NodeProto, StoredTensor, ValueInfo};
use crate::kernels::{Conv3x3, ConvShape, Filter};
use crate::linalg::{View, matmul};

/// Elements per parallel task in the element-wise loops.
const CHUNK: usize = 1 << 15;
/// Floats in one band of an im2col matrix.
const IM2COL_FLOATS: usize = 1 << 22;

/// The values of a tensor: floats, or integers (indices, shapes, quantized values).
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// Integers of any stored width, as `i64`.
    I64(Vec<i64>),
}

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Its values, `shape.iter().product()` of them.
    pub data: Data,
}

impl Tensor {
    /// A float tensor; panics if `data` does not fit `shape`.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "tensor shape");
        Tensor { shape, data: Data::F32(data) }
    }
    fn i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        Tensor { shape, data: Data::I64(data) }
    }
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Its float values, or an error naming what it holds instead.
    pub fn floats(&self) -> Result<&[f32], String> {
        match &self.data {
            Data::F32(v) => Ok(v),
            Data::I64(_) => Err("expected a float tensor, got an integer one".into()),
        }
    }
    fn ints(&self) -> Result<&[i64], String> {
        match &self.data {
            Data::I64(v) => Ok(v),
            Data::F32(_) => Err("expected an integer tensor, got a float one".into()),
        }
    }
    /// Consumes the tensor for its floats.
    pub fn into_floats(self) -> Result<Vec<f32>, String> {
        match self.data {
            Data::F32(v) => Ok(v),
            Data::I64(_) => Err("expected a float tensor, got an integer one".into()),
        }
    }
    fn scalar_f32(&self) -> Result<f32, String> {
        match (&self.data, self.numel()) {
            (Data::F32(v), 1) => Ok(v[0]),
            (Data::I64(v), 1) => Ok(v[0] as f32),
            _ => Err(format!("expected one value, got a tensor of shape {:?}", self.shape)),
        }
    }
    fn from_stored(t: StoredTensor) -> Self {
        match t.data_type {
            DataType::Float | DataType::Double => Tensor { shape: t.dims, data: Data::F32(t.floats) },
            _ => Tensor { shape: t.dims, data: Data::I64(t.ints) },
        }
    }
}

/// An operator with its attributes read and checked.
#[derive(Clone, Debug)]
enum Op {
    Conv {
        kernel: Option<[usize; 2]>,
        strides: [usize; 2],
        pads: [usize; 4],
        group: usize,
    },
    Binary(Binary),
    Unary(Unary),
    Clip {
        min: f32,
        max: f32,
    },
    /// `signed`: the zero point is int8 (saturate to -128..127), else uint8 (0..255).
    Quantize {
        axis: i64,
        signed: bool,
    },
    Dequantize {
        axis: i64,
    },
    /// QuantizeLinear then DequantizeLinear with the same per-tensor scale and zero point.
    FakeQuant {
        scale: f32,
        zero: f32,
        lo: f32,
        hi: f32,
    },
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Pad {
        mode: PadMode,
    },
    GlobalAveragePool,
    Reduce {
        mean: bool,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    Resize,
    Constant(Tensor),
    ConstantOfShape(Tensor),
    Concat {
        axis: i64,
    },
    Slice,
    Cast {
        to: DataType,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Identity,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Unary {
    Relu,
    Sigmoid,
    Sqrt,
    Reciprocal,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
}

/// The operators impasto runs, for the error that names an unknown one.
const SUPPORTED: &str = "Add, Cast, Clip, Concat, Constant, ConstantOfShape, Conv, DequantizeLinear, Div, \
    GlobalAveragePool, Identity, Mul, Pad, Pow, QuantizeLinear, Reciprocal, ReduceMean, ReduceSum, Relu, \
    Reshape, Resize (nearest), Sigmoid, Slice, Sqrt, Sub, Transpose, Unsqueeze";

struct Node {
    label: String,
    op: Op,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// For a 3x3 convolution with constant weights: the kernels' filter, made on first use.
    filter: OnceLock<Filter>,
}

/// A loaded graph, ready to run.
pub struct Graph {
    nodes: Vec<Node>,
    constants: HashMap<String, Arc<Tensor>>,
    inputs: Vec<ValueInfo>,
    outputs: Vec<String>,
    /// After which node each value is last used (values never freed are absent).
    last_use: HashMap<String, usize>,
    max_elements: usize,
    kernel: Box<dyn Conv3x3>,
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> Result<i64, String> {
    match node.attributes.get(name) {
        None => Ok(default),
        Some(Attribute::Int(v)) => Ok(*v),
        Some(_) => Err(format!("attribute {name} is not an integer")),
    }
}

fn attr_ints(node: &NodeProto, name: &str) -> Result<Option<Vec<i64>>, String> {
    match node.attributes.get(name) {
        None => Ok(None),
        Some(Attribute::Ints(v)) => Ok(Some(v.clone())),
        Some(_) => Err(format!("attribute {name} is not a list of integers")),
    }
}

fn attr_str(node: &NodeProto, name: &str, default: &str) -> Result<String, String> {
    match node.attributes.get(name) {
        None => Ok(default.to_string()),
        Some(Attribute::String(s)) => Ok(String::from_utf8_lossy(s).into_owned()),
        Some(_) => Err(format!("attribute {name} is not a string")),
    }
}

fn pair(v: Option<Vec<i64>>, default: usize, what: &str) -> Result<[usize; 2], String> {
    match v.as_deref() {
        None => Ok([default; 2]),
        Some([a, b]) if *a >= 1 && *b >= 1 && *a <= 1 << 16 && *b <= 1 << 16 => Ok([*a as usize, *b as usize]),
        Some(v) => Err(format!("{what} {v:?}: two positive numbers expected (2-d convolutions only)")),
    }
}

fn parse_op(node: &NodeProto, opset: i64) -> Result<Op, String> {
    if !(node.domain.is_empty() || node.domain == "ai.onnx") {
        return Err(format!(
            "operator {}.{} is not supported by impasto (supported: {SUPPORTED})",
            node.domain, node.op_type
        ));
    }
    let op = match node.op_type.as_str() {
        "Conv" => {
            if attr_str(node, "auto_pad", "NOTSET")? != "NOTSET" {
                return Err("auto_pad is not supported; explicit pads only".into());
            }
            if let Some(d) = attr_ints(node, "dilations")?
                && d.iter().any(|&d| d != 1)
            {
                return Err(format!("dilations {d:?} are not supported (1 only)"));
            }
            let kernel = attr_ints(node, "kernel_shape")?.map(|k| pair(Some(k), 1, "kernel_shape")).transpose()?;
            let strides = pair(attr_ints(node, "strides")?, 1, "strides")?;
            let pads = match attr_ints(node, "pads")?.as_deref() {
                None => [0; 4],
                Some(p) if p.len() == 4 && p.iter().all(|&p| (0..=1 << 16).contains(&p)) => {
                    [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
                }
                Some(p) => return Err(format!("pads {p:?}: four numbers >= 0 expected")),
            };
            let group = attr_int(node, "group", 1)?;
            if group < 1 || group > 1 << 20 {
                return Err(format!("group {group} must be at least 1"));
            }
            Op::Conv { kernel, strides, pads, group: group as usize }
        }
        "Add" => Op::Binary(Binary::Add),
        "Sub" => Op::Binary(Binary::Sub),
        "Mul" => Op::Binary(Binary::Mul),
        "Div" => Op::Binary(Binary::Div),
        "Pow" => Op::Binary(Binary::Pow),
        "Relu" => Op::Unary(Unary::Relu),
        "Sigmoid" => Op::Unary(Unary::Sigmoid),
        "Sqrt" => Op::Unary(Unary::Sqrt),
        "Reciprocal" => Op::Unary(Unary::Reciprocal),
        "Identity" => Op::Identity,
        "Clip" => {
            let get = |name, default| match node.attributes.get(name) {
                Some(Attribute::Float(v)) => *v,
                _ => default,
            };
            // Before opset 11 the bounds are attributes; after, optional inputs (read at run time).
            Op::Clip { min: get("min", f32::NEG_INFINITY), max: get("max", f32::INFINITY) }
        }
        "QuantizeLinear" => Op::Quantize { axis: attr_int(node, "axis", 1)?, signed: false },
        "DequantizeLinear" => Op::Dequantize { axis: attr_int(node, "axis", 1)? },
        "Reshape" => Op::Reshape { allowzero: attr_int(node, "allowzero", 0)? != 0 },
        "Transpose" => Op::Transpose {
            perm: attr_ints(node, "perm")?
                .map(|p| p.into_iter().map(|v| usize::try_from(v).map_err(|_| format!("perm has {v}"))).collect())
                .transpose()?,
        },
        "Pad" => Op::Pad {
            mode: match attr_str(node, "mode", "constant")?.as_str() {
                "constant" => PadMode::Constant,
                "reflect" => PadMode::Reflect,
                "edge" => PadMode::Edge,
                m => return Err(format!("pad mode {m:?} is not supported (constant, reflect, edge)")),
            },
        },
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "ReduceMean" | "ReduceSum" => {
            let mean = node.op_type == "ReduceMean";
            // ReduceSum takes its axes as an input from opset 13, ReduceMean from 18.
            let axes_as_input = if mean { opset >= 18 } else { opset >= 13 };
            Op::Reduce {
                mean,
                axes: if axes_as_input { None } else { attr_ints(node, "axes")? },
                keepdims: attr_int(node, "keepdims", 1)? != 0,
                noop_with_empty_axes: attr_int(node, "noop_with_empty_axes", 0)? != 0,
            }
        }
        "Resize" | "Upsample" => {
            let mode = attr_str(node, "mode", "nearest")?;
            let coords = attr_str(node, "coordinate_transformation_mode", "half_pixel")?;
            let nearest = attr_str(node, "nearest_mode", "round_prefer_floor")?;
            if mode != "nearest" || coords != "asymmetric" || nearest != "floor" {
                return Err(format!(
                    "Resize with mode {mode:?}, coordinate_transformation_mode {coords:?} and nearest_mode \
                     {nearest:?} is not supported (nearest, asymmetric, floor only)"
                ));
            }
            Op::Resize
        }
        "Constant" => {
            let t = match node.attributes.iter().next() {
                Some((name, Attribute::Tensor(t))) if name == "value" => Tensor::from_stored(t.clone()),
                Some((name, Attribute::Float(v))) if name == "value_float" => Tensor::f32(vec![], vec![*v]),
                Some((name, Attribute::Floats(v))) if name == "value_floats" => Tensor::f32(vec![v.len()], v.clone()),
                Some((name, Attribute::Int(v))) if name == "value_int" => Tensor::i64(vec![], vec![*v]),
                Some((name, Attribute::Ints(v))) if name == "value_ints" => Tensor::i64(vec![v.len()], v.clone()),
                _ => return Err("a Constant with no value impasto reads".into()),
            };
            Op::Constant(t)
        }
        "ConstantOfShape" => Op::ConstantOfShape(match node.attributes.get("value") {
            None => Tensor::f32(vec![1], vec![0.0]),
            Some(Attribute::Tensor(t)) if t.floats.len() + t.ints.len() == 1 => Tensor::from_stored(t.clone()),
            Some(_) => return Err("value must be a one-element tensor".into()),
        }),
        "Concat" => Op::Concat {
            axis: match node.attributes.get("axis") {
                Some(Attribute::Int(a)) => *a,
                _ => return Err("Concat needs an axis".into()),
            },
        },
        "Slice" => {
            if opset < 10 {
                return Err("Slice before opset 10 is not supported".into());
            }
            Op::Slice
        }
        "Cast" => {
            let to = attr_int(node, "to", 0)?;
            Op::Cast {
                to: DataType::from_code(to).ok_or_else(|| format!("Cast to element type {to} is not supported"))?,
            }
        }
        "Unsqueeze" => Op::Unsqueeze { axes: if opset >= 13 { None } else { attr_ints(node, "axes")? } },
        other => return Err(format!("operator {other} is not supported by impasto (supported: {SUPPORTED})")),
    };
    Ok(op)
}

impl Graph {
    /// Builds a graph from a model file's bytes. `max_elements` bounds every tensor the graph
    /// makes, here and when it runs.
    pub fn from_bytes(bytes: &[u8], max_elements: usize) -> Result<Self, String> {
        Self::from_model(onnx::parse_model(bytes)?, max_elements)
    }

    fn from_model(model: onnx::ModelProto, max_elements: usize) -> Result<Self, String> {
        if !(7..=22).contains(&model.opset) {
            return Err(format!("opset {} is not supported (7 to 22)", model.opset));
        }
        let mut constants = HashMap::new();
        let signed: HashSet<String> =
            model.initializers.iter().filter(|t| t.data_type == DataType::Int8).map(|t| t.name.clone()).collect();
        for t in model.initializers {
            let name = t.name.clone();
            constants.insert(name, Arc::new(Tensor::from_stored(t)));
        }
        let inputs: Vec<ValueInfo> = model.inputs.into_iter().filter(|i| !constants.contains_key(&i.name)).collect();
        let mut defined: HashSet<String> = constants.keys().cloned().collect();
        defined.extend(inputs.iter().map(|i| i.name.clone()));
        let mut nodes = Vec::with_capacity(model.nodes.len());
        for (i, proto) in model.nodes.iter().enumerate() {
            let label = if proto.name.is_empty() {
                format!("node {i} ({})", proto.op_type)
            } else {
                format!("node {:?} ({})", proto.name, proto.op_type)
            };
            let mut op = parse_op(proto, model.opset).map_err(|e| format!("{label}: {e}"))?;
            if let Op::Quantize { signed: s, .. } = &mut op {
                *s = proto.inputs.get(2).is_some_and(|z| signed.contains(z));
            }
            for input in proto.inputs.iter().filter(|n| !n.is_empty()) {
                if !defined.contains(input) {
                    return Err(format!("{label} uses {input:?}, which no earlier node makes"));
                }
            }
            if proto.outputs.is_empty() {
                return Err(format!("{label} has no output"));
            }
            for output in &proto.outputs {
                if !defined.insert(output.clone()) {
                    return Err(format!("{label} makes {output:?} a second time"));
                }
            }
            nodes.push(Node {
                label,
                op,
                inputs: proto.inputs.clone(),
                outputs: proto.outputs.clone(),
                filter: OnceLock::new(),
            });
        }
        let outputs: Vec<String> = model.outputs.into_iter().map(|o| o.name).collect();
        if outputs.is_empty() {
            return Err("the graph has no outputs".into());
        }
        for o in &outputs {
            if !defined.contains(o) {
                return Err(format!("output {o:?} is made by no node"));
            }
        }
        let mut graph = Graph {
            nodes: Vec::new(),
            constants,
            inputs,
            outputs,
            last_use: HashMap::new(),
            max_elements,
            kernel: crate::kernels::default_kernel(),
        };
        // Fold the nodes that depend only on constants.
        let mut kept = Vec::new();
        for node in nodes {
            let constant = node.inputs.iter().all(|n| n.is_empty() || graph.constants.contains_key(n));
            if constant && !graph.outputs.iter().any(|o| node.outputs.contains(o)) {
                let args: Vec<Option<&Tensor>> =
                    node.inputs.iter().map(|n| graph.constants.get(n).map(|t| t.as_ref())).collect();
                let out = graph.eval(&node, &args).map_err(|e| format!("{}: {e}", node.label))?;
                for (name, t) in node.outputs.iter().zip(out) {
                    graph.constants.insert(name.clone(), Arc::new(t));
                }
            } else {
                kept.push(node);
            }
        }
        graph.nodes = fuse_fake_quant(kept, &graph.constants, &graph.outputs);
        for (i, node) in graph.nodes.iter().enumerate() {
            for input in &node.inputs {
                if !input.is_empty() && !graph.constants.contains_key(input) {
                    graph.last_use.insert(input.clone(), i);
                }
            }
        }
        for o in &graph.outputs {
            graph.last_use.remove(o);
        }
        Ok(graph)
    }

    /// The graph's inputs (not counting initializers), with their declared shapes.
    pub fn inputs(&self) -> &[ValueInfo] {
        &self.inputs
    }

    /// Lets input `name`'s dimensions `axes` take any size (a fully convolutional network
    /// exported with one fixed size).
    pub fn free_dims(&mut self, name: &str, axes: &[usize]) {
        if let Some(shape) = self.inputs.iter_mut().find(|i| i.name == name).and_then(|i| i.shape.as_mut()) {
            for &a in axes {
                if a < shape.len() {
                    shape[a] = Dim::Free;
                }
            }
        }
    }

    /// Runs the graph on `feeds` (one tensor per input, by name) and returns its outputs in
    /// order.
    pub fn run(&self, feeds: Vec<(&str, Tensor)>) -> Result<Vec<Tensor>, String> {
        let mut values: HashMap<String, Tensor> = HashMap::new();
        for info in &self.inputs {
            let pos = feeds.iter().position(|(n, _)| *n == info.name);
            let Some(pos) = pos else { return Err(format!("input {:?} was not given", info.name)) };
            let t = &feeds[pos].1;
            if let Some(shape) = &info.shape {
                let fits = shape.len() == t.shape.len()
                    && shape.iter().zip(&t.shape).all(|(d, &n)| matches!(d, Dim::Free) || *d == Dim::Fixed(n));
                if !fits {
                    return Err(format!(
                        "input {:?} has shape {:?}, the network expects {shape:?}",
                        info.name, t.shape
                    ));
                }
            }
        }
        for (name, t) in feeds {
            if t.numel()
                != match &t.data {
                    Data::F32(v) => v.len(),
                    Data::I64(v) => v.len(),
                }
            {
                return Err(format!("input {name:?}: its data does not fit its shape {:?}", t.shape));
            }
            values.insert(name.to_string(), t);
        }
        for (i, node) in self.nodes.iter().enumerate() {
            // An element-wise operator on a value no later node reads works in place.
            let first = node.inputs.first().map(String::as_str).unwrap_or("");
            let owned = self.last_use.get(first) == Some(&i) && node.inputs.iter().filter(|n| *n == first).count() == 1;
            let constant_rest = node.inputs.iter().skip(1).all(|n| n.is_empty() || self.constants.contains_key(n));
            if owned && constant_rest && matches!(node.op, Op::Unary(_) | Op::Clip { .. } | Op::FakeQuant { .. }) {
                let args: Vec<Option<&Tensor>> =
                    node.inputs.iter().map(|n| self.constants.get(n).map(|t| t.as_ref())).collect();
                let pw = self.pointwise(&node.op, &args).map_err(|e| format!("{}: {e}", node.label))?;
                if let (Some(pw), Some(mut t)) = (pw, values.remove(first)) {
                    match &mut t.data {
                        Data::F32(v) => pw.apply(v),
                        Data::I64(_) => {
                            return Err(format!("{}: expected a float tensor, got an integer one", node.label));
                        }
                    }
                    values.insert(node.outputs[0].clone(), t);
                    continue;
                }
            }
            let out = {
                let args: Vec<Option<&Tensor>> =
                    node.inputs
                        .iter()
                        .map(|n| {
                            if n.is_empty() {
                                None
                            } else {
                                self.constants.get(n).map(|t| t.as_ref()).or(values.get(n))
                            }
                        })
                        .collect();
                self.eval(node, &args).map_err(|e| format!("{}: {e}", node.label))?
            };
            for input in &node.inputs {
                if self.last_use.get(input) == Some(&i) {
                    values.remove(input);
                }
            }
            for (name, t) in node.outputs.iter().zip(out) {
                values.insert(name.clone(), t);
            }
        }
        self.outputs
            .iter()
            .map(|o| {
                values
                    .remove(o)
                    .or_else(|| self.constants.get(o).map(|t| t.as_ref().clone()))
                    .ok_or_else(|| format!("output {o:?} was not made"))
            })
            .collect()
    }

    /// Checks that a tensor of `shape` is within the element budget and returns its elements.
    /// A dimension of size zero counts as one, so that no dimension of an empty tensor is larger
    /// than the budget either (the gather tables have one entry per index of each dimension).
    fn room(&self, shape: &[usize]) -> Result<usize, String> {
        let bounded =
            shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d.max(1))).is_some_and(|n| n <= self.max_elements);
        if !bounded {
            return Err(format!(
                "a tensor of shape {shape:?} is larger than the {} elements allowed",
                self.max_elements
            ));
        }
        Ok(shape.iter().product())
    }

    fn eval(&self, node: &Node, args: &[Option<&Tensor>]) -> Result<Vec<Tensor>, String> {
        let arg = |i: usize| -> Result<&Tensor, String> {
            args.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
        };
        let opt = |i: usize| args.get(i).copied().flatten();
        let one = |t: Tensor| Ok(vec![t]);
        match &node.op {
            Op::Conv { kernel, strides, pads, group } => {
                one(self.conv(node, arg(0)?, arg(1)?, opt(2), *kernel, *strides, *pads, *group)?)
            }
            Op::Binary(b) => one(self.binary(*b, arg(0)?, arg(1)?)?),
            Op::Unary(_) | Op::Clip { .. } | Op::FakeQuant { .. } => {
                let pw = self.pointwise(&node.op, args)?.expect("a pointwise operator");
                let x = arg(0)?;
                let mut data = crate::linalg::copied(x.floats()?);
                pw.apply(&mut data);
                one(Tensor::f32(x.shape.clone(), data))
            }
            Op::Quantize { axis, signed } => one(quantize(arg(0)?, arg(1)?, opt(2), *axis, *signed)?),
            Op::Dequantize { axis } => one(dequantize(arg(0)?, arg(1)?, opt(2), *axis)?),
            Op::Reshape { allowzero } => one(reshape(arg(0)?, arg(1)?.ints()?, *allowzero)?),
            Op::Transpose { perm } => one(self.transpose(arg(0)?, perm.as_deref())?),
            Op::Pad { mode } => one(self.pad(arg(0)?, arg(1)?.ints()?, opt(2), *mode)?),
            Op::GlobalAveragePool => one(global_average_pool(arg(0)?)?),
            Op::Reduce { mean, axes, keepdims, noop_with_empty_axes } => {
                let axes = match (axes, opt(1)) {
                    (Some(a), _) => Some(a.clone()),
                    (None, Some(t)) => Some(t.ints()?.to_vec()),
                    (None, None) => None,
                };
                one(reduce(arg(0)?, axes, *mean, *keepdims, *noop_with_empty_axes)?)
            }
            Op::Resize => one(self.resize(arg(0)?, opt(2), opt(3))?),
            Op::Constant(t) => one(t.clone()),
            Op::ConstantOfShape(value) => {
                let shape = dims_of(arg(0)?.ints()?)?;
                let n = self.room(&shape)?;
                one(match &value.data {
                    Data::F32(v) => Tensor::f32(shape, vec![v[0]; n]),
                    Data::I64(v) => Tensor::i64(shape, vec![v[0]; n]),
                })
            }
            Op::Concat { axis } => {
                let parts: Vec<&Tensor> = (0..args.len()).map(arg).collect::<Result<_, _>>()?;
                one(self.concat(&parts, *axis)?)
            }
            Op::Slice => one(self.slice(arg(0)?, arg(1)?.ints()?, arg(2)?.ints()?, opt(3), opt(4))?),
            Op::Cast { to } => {
                let x = arg(0)?;
                one(match (to, &x.data) {
                    (DataType::Float | DataType::Double, Data::F32(v)) => Tensor::f32(x.shape.clone(), v.clone()),
                    (DataType::Float | DataType::Double, Data::I64(v)) => {
                        Tensor::f32(x.shape.clone(), v.iter().map(|&i| i as f32).collect())
                    }
                    (_, Data::I64(v)) => Tensor::i64(x.shape.clone(), v.clone()),
                    (_, Data::F32(v)) => Tensor::i64(x.shape.clone(), v.iter().map(|&f| f as i64).collect()),
                })
            }
            Op::Unsqueeze { axes } => {
                let axes = match (axes, opt(1)) {
                    (Some(a), _) => a.clone(),
                    (None, Some(t)) => t.ints()?.to_vec(),
                    (None, None) => return Err("Unsqueeze needs axes".into()),
                };
                let x = arg(0)?;
                let rank = x.shape.len() + axes.len();
                let mut axes: Vec<usize> = axes.iter().map(|&a| axis_of(a, rank)).collect::<Result<_, _>>()?;
                axes.sort_unstable();
                if axes.windows(2).any(|w| w[0] == w[1]) {
                    return Err(format!("axes {axes:?} repeat"));
                }
                let mut shape = x.shape.clone();
                for a in axes {
                    shape.insert(a, 1);
                }
                one(Tensor { shape, data: x.data.clone() })
            }
            Op::Identity => one(arg(0)?.clone()),
        }
    }

    /// The element-wise operator of `op`, if it is one (Clip's bounds read from `args`).
    fn pointwise(&self, op: &Op, args: &[Option<&Tensor>]) -> Result<Option<Pointwise>, String> {
        let opt = |i: usize| args.get(i).copied().flatten();
        Ok(Some(match op {
            Op::Unary(u) => Pointwise::Unary(*u),
            Op::Clip { min, max } => Pointwise::Clip(
                opt(1).map(|t| t.scalar_f32()).transpose()?.unwrap_or(*min),
                opt(2).map(|t| t.scalar_f32()).transpose()?.unwrap_or(*max),
            ),
            Op::FakeQuant { scale, zero, lo, hi } => Pointwise::FakeQuant(*scale, *lo - *zero, *hi - *zero),
            _ => return Ok(None),
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        node: &Node,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        kernel: Option<[usize; 2]>,
        strides: [usize; 2],
        pads: [usize; 4],
        group: usize,
    ) -> Result<Tensor, String> {
        let [n, c, h, wd] = x.shape[..] else {
            return Err(format!("input of shape {:?}: 4 dimensions expected", x.shape));
        };
        let [m, cg, kh, kw] = w.shape[..] else {
            return Err(format!("weight of shape {:?}: 4 dimensions expected", w.shape));
        };
        if kernel.is_some_and(|k| k != [kh, kw]) {
            return Err(format!("kernel_shape {kernel:?} does not match the weight's {kh}x{kw}"));
        }
        if c % group != 0 || m % group != 0 || cg != c / group || m == 0 || kh == 0 || kw == 0 {
            return Err(format!(
                "weight of shape {:?} does not fit an input with {c} channels in {group} groups",
                w.shape
            ));
        }
        let bias = match b {
            Some(b) if b.numel() != m => return Err(format!("bias of shape {:?} for {m} output channels", b.shape)),
            Some(b) => Some(b.floats()?),
            None => None,
        };
        let (ph, pw) = (h + pads[0] + pads[2], wd + pads[1] + pads[3]);
        if ph < kh || pw < kw {
            return Err(format!("a {kh}x{kw} kernel does not fit a {h}x{wd} input padded by {pads:?}"));
        }
        let (oh, ow) = ((ph - kh) / strides[0] + 1, (pw - kw) / strides[1] + 1);
        let total = self.room(&[n, m, oh, ow])?;
        let (xs, ws) = (x.floats()?, w.floats()?);
        let mut out = vec![0.0f32; total];
        let three = group == 1 && [kh, kw] == [3, 3] && strides == [1, 1];
        for img in 0..n {
            let input = &xs[img * c * h * wd..(img + 1) * c * h * wd];
            let output = &mut out[img * m * oh * ow..(img + 1) * m * oh * ow];
            if three && (pads == [1; 4] || pads == [0; 4]) && h >= 3 && wd >= 3 && c > 0 {
                // The kernels' conv pads by one with zeros: unpadded, keep its interior. A
                // constant weight's filter (and the kernel's transforms of it) is kept.
                let fresh;
                let filter = if node.inputs.get(1).is_some_and(|w| self.constants.contains_key(w)) {
                    node.filter.get_or_init(|| Filter::new(ws.to_vec(), m, c))
                } else {
                    fresh = Filter::new(ws.to_vec(), m, c);
                    &fresh
                };
                let shape = ConvShape { c_in: c, c_out: m, height: h, width: wd };
                if pads == [1; 4] {
                    self.kernel.conv(shape, input, filter, bias, false, output);
                } else {
                    let mut full = vec![0.0f32; self.room(&[m, h, wd])?];
                    self.kernel.conv(shape, input, filter, bias, false, &mut full);
                    output.par_chunks_mut(oh * ow).zip(full.par_chunks(h * wd)).for_each(|(o, f)| {
                        for y in 0..oh {
                            o[y * ow..(y + 1) * ow].copy_from_slice(&f[(y + 1) * wd + 1..(y + 1) * wd + 1 + ow]);
                        }
                    });
                }
            } else if group == 1 && strides == [1, 1] && (kh * kw >= 25 || m <= 4) {
                direct(input, ws, bias, [c, h, wd], m, [kh, kw], pads, [oh, ow], output);
            } else if group == c && cg == 1 && m == c {
                depthwise(input, ws, bias, [c, h, wd], [kh, kw], strides, pads, [oh, ow], output);
            } else {
                let geometry = Im2col { c: cg, h, w: wd, k: [kh, kw], strides, pads, out: [oh, ow] };
                self.room(&[cg * kh * kw, ow])?;
                let mg = m / group;
                for g in 0..group {
                    let gin = &input[g * cg * h * wd..(g + 1) * cg * h * wd];
                    let gw = &ws[g * mg * cg * kh * kw..(g + 1) * mg * cg * kh * kw];
                    geometry.conv(gin, gw, mg, &mut output[g * mg * oh * ow..(g + 1) * mg * oh * ow]);
                }
                if let Some(bias) = bias {
                    output.par_chunks_mut(oh * ow).zip(bias).for_each(|(o, &b)| o.iter_mut().for_each(|v| *v += b));
                }
            }
        }
        Ok(Tensor::f32(vec![n, m, oh, ow], out))
    }

    fn binary(&self, op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
        let shape = broadcast(&a.shape, &b.shape)?;
        self.room(&shape)?;
        match (&a.data, &b.data) {
            (Data::F32(x), Data::F32(y)) => {
                let out = match op {
                    Binary::Add => broadcast_apply(&shape, a, x, b, y, |p, q| p + q),
                    Binary::Sub => broadcast_apply(&shape, a, x, b, y, |p, q| p - q),
                    Binary::Mul => broadcast_apply(&shape, a, x, b, y, |p, q| p * q),
                    Binary::Div => broadcast_apply(&shape, a, x, b, y, |p, q| p / q),
                    Binary::Pow if b.numel() == 1 && y[0] == 2.0 => broadcast_apply(&shape, a, x, b, y, |p, _| p * p),
                    Binary::Pow => broadcast_apply(&shape, a, x, b, y, f32::powf),
                };
                Ok(Tensor::f32(shape, out))
            }
            (Data::I64(x), Data::I64(y)) => {
                let out = match op {
                    Binary::Add => broadcast_apply(&shape, a, x, b, y, i64::wrapping_add),
                    Binary::Sub => broadcast_apply(&shape, a, x, b, y, i64::wrapping_sub),
                    Binary::Mul => broadcast_apply(&shape, a, x, b, y, i64::wrapping_mul),
                    Binary::Div => broadcast_apply(&shape, a, x, b, y, |p, q| p.checked_div(q).unwrap_or(0)),
                    Binary::Pow => broadcast_apply(&shape, a, x, b, y, |p, q| p.wrapping_pow(q.clamp(0, 64) as u32)),
                };
                Ok(Tensor::i64(shape, out))
            }
            _ => Err("operands of different element types".into()),
        }
    }

    fn transpose(&self, x: &Tensor, perm: Option<&[usize]>) -> Result<Tensor, String> {
        let rank = x.shape.len();
        let perm: Vec<usize> = perm.map(<[usize]>::to_vec).unwrap_or_else(|| (0..rank).rev().collect());
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
        }
        let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
        let strides = strides_of(&x.shape);
        let src: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
        Ok(Tensor { shape: shape.clone(), data: gather(&x.data, &shape, &src) })
    }

    fn pad(&self, x: &Tensor, pads: &[i64], value: Option<&Tensor>, mode: PadMode) -> Result<Tensor, String> {
        let rank = x.shape.len();
        if pads.len() != 2 * rank {
            return Err(format!("{} pads for {rank} dimensions", pads.len()));
        }
        let mut shape = Vec::with_capacity(rank);
        for d in 0..rank {
            let size = (x.shape[d] as i64).checked_add(pads[d]).and_then(|s| s.checked_add(pads[d + rank]));
            match size {
                Some(s) if s >= 0 => shape.push(s as usize),
                _ => return Err(format!("pads {pads:?} do not fit shape {:?}", x.shape)),
            }
        }
        self.room(&shape)?;
        let mut tables = Vec::with_capacity(rank);
        for d in 0..rank {
            let (begin, end, n) = (pads[d], pads[d + rank], x.shape[d] as i64);
            let size = shape[d] as i64;
            if mode == PadMode::Reflect && (begin >= n || end >= n) && size > 0 {
                return Err(format!("reflect pads {pads:?} need each side larger than its pad (shape {:?})", x.shape));
            }
            if mode == PadMode::Edge && n == 0 && size > 0 {
                return Err("edge padding of an empty tensor".into());
            }
            tables.push(
                (0..size)
                    .map(|o| {
                        let i = o - begin;
                        match mode {
                            _ if (0..n).contains(&i) => Some(i as usize),
                            PadMode::Constant => None,
                            PadMode::Reflect => Some(if i < 0 { -i } else { 2 * (n - 1) - i } as usize),
                            PadMode::Edge => Some(i.clamp(0, n - 1) as usize),
                        }
                    })
                    .collect::<Vec<_>>(),
            );
        }
        table_gather(x, shape, &tables, value.map(|v| v.scalar_f32()).transpose()?.unwrap_or(0.0))
    }

    fn resize(&self, x: &Tensor, scales: Option<&Tensor>, sizes: Option<&Tensor>) -> Result<Tensor, String> {
        let rank = x.shape.len();
        let shape: Vec<usize> = match (scales.filter(|s| s.numel() > 0), sizes.filter(|s| s.numel() > 0)) {
            (Some(s), None) => {
                let s = s.floats()?;
                if s.len() != rank || s.iter().any(|&v| !(v > 0.0 && v <= 1024.0)) {
                    return Err(format!("scales {s:?} for {rank} dimensions: numbers in (0, 1024] expected"));
                }
                x.shape.iter().zip(s).map(|(&n, &s)| (n as f64 * s as f64).floor() as usize).collect()
            }
            (None, Some(z)) => {
                let z = dims_of(z.ints()?)?;
                if z.len() != rank {
                    return Err(format!("sizes {z:?} for {rank} dimensions"));
                }
                z
            }
            _ => return Err("Resize needs either scales or sizes".into()),
        };
        self.room(&shape)?;
        let tables: Vec<Vec<Option<usize>>> = (0..rank)
            .map(|d| {
                let (n, o) = (x.shape[d], shape[d]);
                (0..o)
                    .map(|i| (n > 0).then(|| ((i as f64 * n as f64 / o as f64).floor() as usize).min(n - 1)))
                    .collect()
            })
            .collect();
        table_gather(x, shape, &tables, 0.0)
    }

    fn concat(&self, parts: &[&Tensor], axis: i64) -> Result<Tensor, String> {
        let first = parts.first().ok_or("Concat of nothing")?;
        let rank = first.shape.len();
        let axis = axis_of(axis, rank)?;
        let mut shape = first.shape.clone();
        shape[axis] = 0;
        for p in parts {
            if p.shape.len() != rank
                || (0..rank).any(|d| d != axis && p.shape[d] != first.shape[d])
                || std::mem::discriminant(&p.data) != std::mem::discriminant(&first.data)
            {
                return Err(format!("cannot join shapes {:?} and {:?} on axis {axis}", first.shape, p.shape));
            }
            shape[axis] += p.shape[axis];
        }
        self.room(&shape)?;
        let outer: usize = shape[..axis].iter().product();
        let block = |t: &Tensor| t.shape[axis..].iter().product::<usize>();
        macro_rules! join {
            ($variant:ident) => {{
                let mut out = Vec::with_capacity(shape.iter().product());
                for o in 0..outer {
                    for p in parts {
                        let Data::$variant(v) = &p.data else { unreachable!() };
                        out.extend_from_slice(&v[o * block(p)..(o + 1) * block(p)]);
                    }
                }
                Data::$variant(out)
            }};
        }
        let data = match first.data {
            Data::F32(_) => join!(F32),
            Data::I64(_) => join!(I64),
        };
        Ok(Tensor { shape, data })
    }

    fn slice(
        &self,
        x: &Tensor,
        starts: &[i64],
        ends: &[i64],
        axes: Option<&Tensor>,
        steps: Option<&Tensor>,
    ) -> Result<Tensor, String> {
        let rank = x.shape.len();
        let axes: Vec<usize> = match axes {
            Some(a) => a.ints()?.iter().map(|&a| axis_of(a, rank)).collect::<Result<_, _>>()?,
            None => (0..starts.len()).collect(),
        };
        let steps: Vec<i64> = match steps {
            Some(s) => s.ints()?.to_vec(),
            None => vec![1; starts.len()],
        };
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err("starts, ends, axes and steps of different lengths".into());
        }
        let mut tables: Vec<Vec<Option<usize>>> = x.shape.iter().map(|&n| (0..n).map(Some).collect()).collect();
        for (((&start, &end), &axis), &step) in starts.iter().zip(ends).zip(&axes).zip(&steps) {
            if axis >= rank {
                return Err(format!("axis {axis} of a {rank}-d tensor"));
            }
            let n = x.shape[axis] as i64;
            if step == 0 {
                return Err("a slice step of 0".into());
            }
            let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
            let (mut i, end) = if step > 0 {
                (norm(start).clamp(0, n), norm(end).clamp(0, n))
            } else {
                (norm(start).clamp(-1, n - 1), norm(end).clamp(-1, n - 1))
            };
            let mut table = Vec::new();
            while (step > 0 && i < end) || (step < 0 && i > end) {
                table.push(Some(i as usize));
                i = i.saturating_add(step);
            }
            tables[axis] = table;
        }
        let shape: Vec<usize> = tables.iter().map(Vec::len).collect();
        self.room(&shape)?;
        table_gather(x, shape, &tables, 0.0)
    }
}

/// Replaces each QuantizeLinear whose only readers are DequantizeLinear nodes with the same
/// constant per-tensor scale and zero point by one rounding pass at each reader.
fn fuse_fake_quant(nodes: Vec<Node>, constants: &HashMap<String, Arc<Tensor>>, outputs: &[String]) -> Vec<Node> {
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for input in &n.inputs {
            readers.entry(input.as_str()).or_default().push(i);
        }
    }
    let scalar = |name: &str| constants.get(name).filter(|t| t.numel() == 1).map(|t| t.as_ref().clone());
    let params = |n: &Node| -> Option<(Tensor, Option<Tensor>)> {
        let s = scalar(n.inputs.get(1)?)?;
        let z = match n.inputs.get(2).filter(|z| !z.is_empty()) {
            Some(z) => Some(scalar(z)?),
            None => None,
        };
        Some((s, z))
    };
    let mut fused: HashMap<usize, (Op, String)> = HashMap::new();
    let mut dropped = HashSet::new();
    for (i, q) in nodes.iter().enumerate() {
        let Op::Quantize { signed, .. } = q.op else { continue };
        if outputs.contains(&q.outputs[0]) {
            continue;
        }
        let Some((s, z)) = params(q) else { continue };
        let Some(rs) = readers.get(q.outputs[0].as_str()) else { continue };
        let same = rs.iter().all(|&r| {
            matches!(nodes[r].op, Op::Dequantize { .. })
                && nodes[r].inputs[0] == q.outputs[0]
                && params(&nodes[r]).is_some_and(|(s2, z2)| {
                    s2.data == s.data && z2.map(|t| t.data) == z.as_ref().map(|t| t.data.clone())
                })
        });
        let Ok(scale) = s.scalar_f32() else { continue };
        if !same || !(scale.is_finite() && scale > 0.0) {
            continue;
        }
        let zero = z.as_ref().and_then(|z| z.scalar_f32().ok()).unwrap_or(0.0);
        let (lo, hi) = if signed { (-128.0, 127.0) } else { (0.0, 255.0) };
        for &r in rs {
            fused.insert(r, (Op::FakeQuant { scale, zero, lo, hi }, q.inputs[0].clone()));
        }
        dropped.insert(i);
    }
    nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(i, mut n)| {
            if let Some((op, q_input)) = fused.remove(&i) {
                n.op = op;
                n.inputs = vec![q_input];
            }
            n
        })
        .collect()
}

fn axis_of(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} of a {rank}-d tensor"));
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

fn dims_of(v: &[i64]) -> Result<Vec<usize>, String> {
    v.iter().map(|&d| usize::try_from(d).map_err(|_| format!("a negative dimension {d}"))).collect()
}

fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// An element-wise operator on floats, its parameters read.
#[derive(Clone, Copy)]
enum Pointwise {
    Unary(Unary),
    Clip(f32, f32),
    /// Scale, and the bounds of the quantized value less the zero point.
    FakeQuant(f32, f32, f32),
}

impl Pointwise {
    /// Applies the operator to every element of `data`, in parallel, each kind in a loop of its
    /// own (so that each vectorizes).
    fn apply(self, data: &mut [f32]) {
        /// 1.5 * 2^23: adding and subtracting it rounds a float below 2^22 to the nearest
        /// integer, ties to even (as QuantizeLinear does), in one vector instruction each.
        const MAGIC: f32 = 12_582_912.0;
        data.par_chunks_mut(CHUNK).for_each(|c| match self {
            Pointwise::Unary(Unary::Relu) => c.iter_mut().for_each(|v| *v = v.max(0.0)),
            Pointwise::Unary(Unary::Sigmoid) => c.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
            Pointwise::Unary(Unary::Sqrt) => c.iter_mut().for_each(|v| *v = v.sqrt()),
            Pointwise::Unary(Unary::Reciprocal) => c.iter_mut().for_each(|v| *v = 1.0 / *v),
            Pointwise::Clip(lo, hi) => c.iter_mut().for_each(|v| *v = v.max(lo).min(hi)),
            Pointwise::FakeQuant(s, lo, hi) => {
                // Divided, as the operator says (a product with 1/s rounds differently at
                // times); clamped first, so below 2^22; `max` gives `lo` for NaN.
                c.iter_mut().for_each(|v| *v = (((*v / s).max(lo).min(hi) + MAGIC) - MAGIC) * s)
            }
        });
    }
}

/// The shape two operands broadcast to (numpy rules).
fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
            let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// The strides of `shape` read as `out`-shaped (0 along broadcast axes).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = strides_of(shape);
    let lead = out.len() - shape.len();
    (0..out.len()).map(|d| if d < lead || shape[d - lead] == 1 { 0 } else { own[d - lead] }).collect()
}

/// `f(a, b)` element by element over the broadcast `shape`. Axes that step alike in both
/// operands are merged first, so a per-channel operand becomes rows of constants.
fn broadcast_apply<T: Copy + Send + Sync + Default>(
    shape: &[usize],
    a: &Tensor,
    x: &[T],
    b: &Tensor,
    y: &[T],
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let (sa, sb) = (broadcast_strides(&a.shape, shape), broadcast_strides(&b.shape, shape));
    let mut dims: Vec<(usize, usize, usize)> = Vec::new();
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        match dims.last_mut() {
            Some(last) if last.1 == sa[d] * shape[d] && last.2 == sb[d] * shape[d] => {
                *last = (last.0 * shape[d], sa[d], sb[d]);
            }
            _ => dims.push((shape[d], sa[d], sb[d])),
        }
    }
    let total: usize = shape.iter().product();
    let mut out = vec![T::default(); total];
    let (inner, ia, ib) = dims.pop().unwrap_or((1, 0, 0));
    if inner == 0 {
        return out;
    }
    out.par_chunks_mut(inner).enumerate().for_each(|(row, o)| {
        let (mut base_a, mut base_b, mut r) = (0, 0, row);
        for &(n, s_a, s_b) in dims.iter().rev() {
            let i = r % n;
            r /= n;
            base_a += i * s_a;
            base_b += i * s_b;
        }
        match (ia, ib) {
            (1, 1) => o
                .iter_mut()
                .zip(&x[base_a..base_a + inner])
                .zip(&y[base_b..base_b + inner])
                .for_each(|((o, &p), &q)| *o = f(p, q)),
            (1, 0) => {
                let q = y[base_b];
                o.iter_mut().zip(&x[base_a..base_a + inner]).for_each(|(o, &p)| *o = f(p, q))
            }
            (0, 1) => {
                let p = x[base_a];
                o.iter_mut().zip(&y[base_b..base_b + inner]).for_each(|(o, &q)| *o = f(p, q))
            }
            _ => o.iter_mut().enumerate().for_each(|(i, o)| *o = f(x[base_a + i * ia], y[base_b + i * ib])),
        }
    });
    out
}

/// A new tensor of `shape` whose element at each index is `data`'s at the index's dot product
/// with `src` (strides: a transpose).
fn gather(data: &Data, shape: &[usize], src: &[usize]) -> Data {
    let total: usize = shape.iter().product();
    let rank = shape.len();
    let inner = shape.last().copied().unwrap_or(1).max(1);
    let step = src.last().copied().unwrap_or(0);
    macro_rules! go {
        ($v:expr, $variant:ident) => {{
            let mut out = vec![Default::default(); total];
            out.par_chunks_mut(inner).enumerate().for_each(|(row, o)| {
                let (mut base, mut r) = (0usize, row);
                for d in (0..rank.saturating_sub(1)).rev() {
                    base += (r % shape[d]) * src[d];
                    r /= shape[d];
                }
                for (i, o) in o.iter_mut().enumerate() {
                    *o = $v[base + i * step];
                }
            });
            Data::$variant(out)
        }};
    }
    match data {
        Data::F32(v) => go!(v, F32),
        Data::I64(v) => go!(v, I64),
    }
}

/// A new tensor of `shape` reading `x` through one index table per axis (`None`: `fill`). Along
/// the last axis the table is read as runs of consecutive source elements, each copied at once
/// (a pad is three runs a row, a crop one).
fn table_gather(x: &Tensor, shape: Vec<usize>, tables: &[Vec<Option<usize>>], fill: f32) -> Result<Tensor, String> {
    let strides = strides_of(&x.shape);
    let rank = shape.len();
    let total: usize = shape.iter().product();
    if rank == 0 {
        return Ok(Tensor { shape, data: x.data.clone() });
    }
    let inner = shape[rank - 1].max(1);
    let step = strides[rank - 1];
    // (first output element, first source element, length) of each run along the last axis.
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for (o, t) in tables[rank - 1].iter().enumerate() {
        let Some(src) = *t else { continue };
        match runs.last_mut() {
            Some((o0, s0, n)) if *o0 + *n == o && *s0 + *n * step == src * step => *n += 1,
            _ => runs.push((o, src * step, 1)),
        }
    }
    macro_rules! go {
        ($v:expr, $variant:ident, $fill:expr) => {{
            let mut out = vec![$fill; total];
            out.par_chunks_mut(inner).enumerate().for_each(|(row, o)| {
                let mut r = row;
                let mut base = Some(0usize);
                for d in (0..rank - 1).rev() {
                    let i = r % shape[d];
                    r /= shape[d];
                    base = base.and_then(|b| tables[d][i].map(|s| b + s * strides[d]));
                }
                let Some(base) = base else { return };
                for &(o0, s0, n) in &runs {
                    if step == 1 {
                        o[o0..o0 + n].copy_from_slice(&$v[base + s0..base + s0 + n]);
                    } else {
                        for k in 0..n {
                            o[o0 + k] = $v[base + s0 + k * step];
                        }
                    }
                }
            });
            Data::$variant(out)
        }};
    }
    let data = match &x.data {
        Data::F32(v) => go!(v, F32, fill),
        Data::I64(v) => go!(v, I64, fill as i64),
    };
    Ok(Tensor { shape, data })
}

fn reshape(x: &Tensor, target: &[i64], allowzero: bool) -> Result<Tensor, String> {
    let n = x.numel();
    let mut shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            0 if !allowzero => {
                shape.push(*x.shape.get(i).ok_or_else(|| format!("shape {target:?} copies a missing axis"))?)
            }
            d if d >= 0 => shape.push(d as usize),
            _ => return Err(format!("shape {target:?} is not a valid reshape target")),
        }
    }
    let known = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("reshape overflows")?;
    if let Some(i) = infer {
        if known == 0 || n % known != 0 {
            return Err(format!("cannot reshape {:?} to {target:?}", x.shape));
        }
        shape[i] = n / known;
    } else if known != n {
        return Err(format!("cannot reshape {:?} ({n} elements) to {target:?}", x.shape));
    }
    Ok(Tensor { shape, data: x.data.clone() })
}

/// Per-axis (or per-tensor) parameters of a quantization, one per element along `axis`.
fn quant_params(
    x: &Tensor,
    scale: &Tensor,
    zero: Option<&Tensor>,
    axis: i64,
) -> Result<(usize, usize, Vec<f32>, Vec<f32>), String> {
    let scales = scale.floats()?.to_vec();
    let zeros: Vec<f32> = match zero {
        Some(z) => match &z.data {
            Data::I64(v) => v.iter().map(|&i| i as f32).collect(),
            Data::F32(v) => v.clone(),
        },
        None => vec![0.0; scales.len()],
    };
    if zeros.len() != scales.len() || scales.is_empty() {
        return Err(format!("scale of shape {:?} and zero point of {} values", scale.shape, zeros.len()));
    }
    if scales.len() == 1 {
        return Ok((x.numel(), 1, scales, zeros));
    }
    let axis = axis_of(axis, x.shape.len())?;
    if x.shape[axis] != scales.len() {
        return Err(format!("{} scales for axis {axis} of shape {:?}", scales.len(), x.shape));
    }
    let inner: usize = x.shape[axis + 1..].iter().product();
    Ok((inner, scales.len(), scales, zeros))
}

fn quantize(x: &Tensor, scale: &Tensor, zero: Option<&Tensor>, axis: i64, signed: bool) -> Result<Tensor, String> {
    let (inner, channels, s, z) = quant_params(x, scale, zero, axis)?;
    let (lo, hi) = if signed { (-128.0, 127.0) } else { (0.0, 255.0) };
    let xs = x.floats()?;
    let out = xs
        .par_iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / inner) % channels;
            ((v / s[c]).round_ties_even() + z[c]).clamp(lo, hi) as i64
        })
        .collect();
    Ok(Tensor::i64(x.shape.clone(), out))
}

fn dequantize(x: &Tensor, scale: &Tensor, zero: Option<&Tensor>, axis: i64) -> Result<Tensor, String> {
    let (inner, channels, s, z) = quant_params(x, scale, zero, axis)?;
    let out = match &x.data {
        Data::I64(v) => v
            .par_iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = (i / inner) % channels;
                (q as f32 - z[c]) * s[c]
            })
            .collect(),
        Data::F32(v) => v
            .par_iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = (i / inner) % channels;
                (q - z[c]) * s[c]
            })
            .collect(),
    };
    Ok(Tensor::f32(x.shape.clone(), out))
}

fn global_average_pool(x: &Tensor) -> Result<Tensor, String> {
    if x.shape.len() < 3 {
        return Err(format!("input of shape {:?}: at least 3 dimensions expected", x.shape));
    }
    let plane: usize = x.shape[2..].iter().product();
    if plane == 0 {
        return Err("average of an empty plane".into());
    }
    let xs = x.floats()?;
    let means: Vec<f32> =
        xs.par_chunks(plane).map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32).collect();
    let mut shape = x.shape.clone();
    shape[2..].iter_mut().for_each(|d| *d = 1);
    Ok(Tensor::f32(shape, means))
}

fn reduce(x: &Tensor, axes: Option<Vec<i64>>, mean: bool, keepdims: bool, noop: bool) -> Result<Tensor, String> {
    let rank = x.shape.len();
    let axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a.iter().map(|&a| axis_of(a, rank)).collect::<Result<_, _>>()?,
        _ if noop => return Ok(x.clone()),
        _ => (0..rank).collect(),
    };
    let reduced: Vec<bool> = (0..rank).map(|d| axes.contains(&d)).collect();
    let kept_shape: Vec<usize> = (0..rank).map(|d| if reduced[d] { 1 } else { x.shape[d] }).collect();
    let count: usize = (0..rank).filter(|&d| reduced[d]).map(|d| x.shape[d]).product();
    let xs = x.floats()?;
    let out_n: usize = kept_shape.iter().product();
    let trailing = (0..rank).all(|d| reduced[d] == (d >= rank - axes.len()));
    let sums: Vec<f64> = if trailing && count > 0 {
        xs.par_chunks(count).map(|p| p.iter().map(|&v| v as f64).sum()).collect()
    } else {
        let mut sums = vec![0.0f64; out_n];
        let out_strides = strides_of(&kept_shape);
        let mut idx = vec![0usize; rank];
        for &v in xs {
            let o: usize = (0..rank).map(|d| if reduced[d] { 0 } else { idx[d] * out_strides[d] }).sum();
            sums[o] += v as f64;
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < x.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        sums
    };
    let scale = if mean { 1.0 / count.max(1) as f64 } else { 1.0 };
    let shape = if keepdims { kept_shape } else { (0..rank).filter(|&d| !reduced[d]).map(|d| x.shape[d]).collect() };
    Ok(Tensor::f32(shape, sums.into_iter().map(|s| (s * scale) as f32).collect()))
}

/// A depthwise convolution (one filter per channel), channels in parallel.
#[allow(clippy::too_many_arguments)]
fn depthwise(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    [_, h, w]: [usize; 3],
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    pads: [usize; 4],
    [oh, ow]: [usize; 2],
    out: &mut [f32],
) {
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ch, o)| {
        let plane = &input[ch * h * w..(ch + 1) * h * w];
        let k = &weight[ch * kh * kw..(ch + 1) * kh * kw];
        let b = bias.map_or(0.0, |b| b[ch]);
        for y in 0..oh {
            for x in 0..ow {
                let mut acc = b;
                for dy in 0..kh {
                    let iy = (y * sh + dy) as isize - pads[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for dx in 0..kw {
                        let ix = (x * sw + dx) as isize - pads[1] as isize;
                        if ix >= 0 && ix < w as isize {
                            acc += k[dy * kw + dx] * plane[iy as usize * w + ix as usize];
                        }
                    }
                }
                o[y * ow + x] = acc;
            }
        }
    });
}

/// Output channels accumulated together by [`direct`]: each input row read feeds this many.
const DIRECT_BLOCK: usize = 4;

/// A stride-1 convolution computed directly, one output row of [`DIRECT_BLOCK`] channels at a
/// time (they stay in the first-level cache): for large kernels on few channels (the 9x9 first
/// and last layers), where im2col would write the input 81 times over and the matrix product
/// would be skinny.
#[allow(clippy::too_many_arguments)]
fn direct(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    [c, h, w]: [usize; 3],
    m: usize,
    [kh, kw]: [usize; 2],
    pads: [usize; 4],
    [oh, ow]: [usize; 2],
    out: &mut [f32],
) {
    let blocks = m.div_ceil(DIRECT_BLOCK);
    let mut rows: Vec<(usize, usize, Vec<f32>)> = (0..blocks * oh).map(|i| (i / oh, i % oh, Vec::new())).collect();
    rows.par_iter_mut().for_each(|(b, y, acc)| {
        let (o0, n) = (*b * DIRECT_BLOCK, DIRECT_BLOCK.min(m - *b * DIRECT_BLOCK));
        acc.resize(n * ow, 0.0);
        for k in 0..n {
            acc[k * ow..(k + 1) * ow].fill(bias.map_or(0.0, |b| b[o0 + k]));
        }
        direct_row(
            acc,
            input,
            &weight[o0 * c * kh * kw..(o0 + n) * c * kh * kw],
            n,
            c,
            h,
            w,
            kh,
            kw,
            *y,
            pads[0],
            pads[1],
            ow,
        );
    });
    for (b, y, acc) in rows {
        for (k, row) in acc.chunks(ow).enumerate() {
            let o = b * DIRECT_BLOCK + k;
            out[(o * oh + y) * ow..(o * oh + y + 1) * ow].copy_from_slice(row);
        }
    }
}

crate::kernels::simd_dispatch! {
    /// One output row `y` of `n` channels (`acc`, `n` x `ow`) of a stride-1 convolution.
    #[allow(clippy::too_many_arguments)]
    fn direct_row(
        acc: &mut [f32],
        input: &[f32],
        weight: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        y: usize,
        top: usize,
        left: usize,
        ow: usize,
    ) = direct_row_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn direct_row_body(
    acc: &mut [f32],
    input: &[f32],
    weight: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    y: usize,
    top: usize,
    left: usize,
    ow: usize,
) {
    for ci in 0..c {
        for dy in 0..kh {
            let iy = (y + dy) as isize - top as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let row = &input[(ci * h + iy as usize) * w..(ci * h + iy as usize + 1) * w];
            for dx in 0..kw {
                // Output x reads input x + dx - left: the x for which that is inside the row.
                let x0 = left.saturating_sub(dx);
                let x1 = (w + left).saturating_sub(dx).min(ow);
                if x0 >= x1 {
                    continue;
                }
                let src = &row[x0 + dx - left..x1 + dx - left];
                let tap = |k: usize| weight[((k * c + ci) * kh + dy) * kw + dx];
                match n {
                    4 => {
                        let (w0, w1, w2, w3) = (tap(0), tap(1), tap(2), tap(3));
                        let (a0, rest) = acc.split_at_mut(ow);
                        let (a1, rest) = rest.split_at_mut(ow);
                        let (a2, a3) = rest.split_at_mut(ow);
                        for ((((r, a0), a1), a2), a3) in src
                            .iter()
                            .zip(&mut a0[x0..x1])
                            .zip(&mut a1[x0..x1])
                            .zip(&mut a2[x0..x1])
                            .zip(&mut a3[x0..x1])
                        {
                            *a0 += w0 * r;
                            *a1 += w1 * r;
                            *a2 += w2 * r;
                            *a3 += w3 * r;
                        }
                    }
                    _ => {
                        for k in 0..n {
                            let wk = tap(k);
                            for (a, r) in acc[k * ow + x0..k * ow + x1].iter_mut().zip(src) {
                                *a += wk * r;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The geometry of a convolution by im2col and a matrix product, done in bands of output rows
/// so that the column matrix stays small at any image size.
struct Im2col {
    c: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    strides: [usize; 2],
    pads: [usize; 4],
    out: [usize; 2],
}

impl Im2col {
    /// `out[m][y][x] = sum weight[m][c][dy][dx] * input[c][..]`, zero outside the input.
    fn conv(&self, input: &[f32], weight: &[f32], m: usize, out: &mut [f32]) {
        let [kh, kw] = self.k;
        let [oh, ow] = self.out;
        let rows_k = self.c * kh * kw;
        let band = (IM2COL_FLOATS / (rows_k * ow).max(1)).clamp(1, oh);
        let mut cols = vec![0.0f32; rows_k * band * ow];
        for y0 in (0..oh).step_by(band) {
            let rows = band.min(oh - y0);
            let n = rows * ow;
            cols[..rows_k * n].par_chunks_mut(n).enumerate().for_each(|(r, col)| {
                let (c, dy, dx) = (r / (kh * kw), (r / kw) % kh, r % kw);
                let plane = &input[c * self.h * self.w..(c + 1) * self.h * self.w];
                for yy in 0..rows {
                    let iy = ((y0 + yy) * self.strides[0] + dy) as isize - self.pads[0] as isize;
                    let dst = &mut col[yy * ow..(yy + 1) * ow];
                    if iy < 0 || iy >= self.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let row = &plane[iy as usize * self.w..(iy as usize + 1) * self.w];
                    for (x, d) in dst.iter_mut().enumerate() {
                        let ix = (x * self.strides[1] + dx) as isize - self.pads[1] as isize;
                        *d = if ix >= 0 && ix < self.w as isize { row[ix as usize] } else { 0.0 };
                    }
                }
            });
            let product = matmul(m, n, rows_k, View::rows(weight, rows_k), View::rows(&cols[..rows_k * n], n), 1.0);
            for (o, p) in out.chunks_mut(oh * ow).zip(product.chunks(n)) {
                o[y0 * ow..y0 * ow + n].copy_from_slice(p);
            }
        }
    }
}

#[cfg(test)]
mod tests;
