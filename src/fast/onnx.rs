//! Reading an ONNX model file: the protocol-buffer wire format, decoded by hand into the few
//! messages a graph needs (`ModelProto` → `GraphProto` → nodes, attributes, initializers,
//! inputs). Unknown fields are skipped, as protobuf readers do; nested graphs (control flow) are
//! among them and are refused later as unknown operators. Every length is checked against what
//! is left of the file, so a malformed or truncated file is an error, never a panic, and memory
//! stays within a small multiple of the file's size.

use std::collections::HashMap;

/// The largest model file read (bytes).
pub const MAX_MODEL_BYTES: u64 = 256 << 20;
/// The most nodes a graph may have.
const MAX_NODES: usize = 100_000;
/// The most dimensions a tensor may have.
const MAX_RANK: usize = 8;

/// An element type of a stored tensor (ONNX `TensorProto.DataType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    /// 32-bit float.
    Float,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// Boolean.
    Bool,
    /// 64-bit float.
    Double,
}

impl DataType {
    /// The ONNX code's type, or `None` for one impasto does not read.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => DataType::Float,
            2 => DataType::Uint8,
            3 => DataType::Int8,
            6 => DataType::Int32,
            7 => DataType::Int64,
            9 => DataType::Bool,
            11 => DataType::Double,
            _ => return None,
        })
    }
    fn bytes(self) -> usize {
        match self {
            DataType::Uint8 | DataType::Int8 | DataType::Bool => 1,
            DataType::Float | DataType::Int32 => 4,
            DataType::Int64 | DataType::Double => 8,
        }
    }
}

/// A stored tensor, its values widened: floats as `f32`, integers as `i64`.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTensor {
    /// Its name (empty inside an attribute).
    pub name: String,
    /// Its element type as stored.
    pub data_type: DataType,
    /// Its dimensions.
    pub dims: Vec<usize>,
    /// Float values (for `Float` and `Double`).
    pub floats: Vec<f32>,
    /// Integer values (for the integer and boolean types).
    pub ints: Vec<i64>,
}

/// A node attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attribute {
    /// One float.
    Float(f32),
    /// One integer.
    Int(i64),
    /// A byte string.
    String(Vec<u8>),
    /// A tensor.
    Tensor(StoredTensor),
    /// Floats.
    Floats(Vec<f32>),
    /// Integers.
    Ints(Vec<i64>),
    /// Something impasto does not read (a graph, strings, sparse tensors).
    Other,
}

/// One node of the graph, as stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeProto {
    /// Its name (may be empty).
    pub name: String,
    /// The operator.
    pub op_type: String,
    /// The operator's domain (empty for the standard one).
    pub domain: String,
    /// Input value names; an empty name is an omitted optional input.
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attributes: HashMap<String, Attribute>,
}

/// A dimension of a declared input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named or unknown size.
    Free,
}

/// A graph input or output with its declared shape (`None` when none is declared).
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    /// The value's name.
    pub name: String,
    /// The declared shape.
    pub shape: Option<Vec<Dim>>,
}

/// The parts of a model file a graph is built from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelProto {
    /// The standard domain's opset version.
    pub opset: i64,
    /// Nodes in file order.
    pub nodes: Vec<NodeProto>,
    /// Weights and constants.
    pub initializers: Vec<StoredTensor>,
    /// Graph inputs (initializers may be listed among them too).
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
}

/// One field of a message.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated (a number runs past the end)")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("malformed (a number longer than 10 bytes)".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() - self.pos {
            return Err(format!("truncated (a field of {n} bytes with {} left)", self.buf.len() - self.pos));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next field, or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            2 => {
                let n = self.varint()?;
                Wire::Bytes(self.take(usize::try_from(n).map_err(|_| "malformed (a huge length)")?)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            other => return Err(format!("malformed (wire type {other} in field {number}): not an ONNX model")),
        };
        Ok(Some((number, value)))
    }
}

fn string(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "malformed (a name that is not UTF-8)".into())
}

fn int(wire: &Wire) -> Result<i64, String> {
    match wire {
        Wire::Varint(v) => Ok(*v as i64),
        _ => Err("malformed (an integer field of the wrong wire type)".into()),
    }
}

/// Repeated integers, packed or one per field.
fn push_ints(wire: &Wire, out: &mut Vec<i64>) -> Result<(), String> {
    match wire {
        Wire::Varint(v) => out.push(*v as i64),
        Wire::Bytes(b) => {
            let mut r = Reader::new(b);
            while r.pos < b.len() {
                out.push(r.varint()? as i64);
            }
        }
        _ => return Err("malformed (integers of the wrong wire type)".into()),
    }
    Ok(())
}

/// Repeated floats, packed or one per field.
fn push_floats(wire: &Wire, out: &mut Vec<f32>) -> Result<(), String> {
    match wire {
        Wire::Fixed32(v) => out.push(f32::from_bits(*v)),
        Wire::Bytes(b) if b.len() % 4 == 0 => {
            out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())))
        }
        _ => return Err("malformed (floats of the wrong wire type)".into()),
    }
    Ok(())
}

fn bytes<'a>(wire: &Wire<'a>) -> Result<&'a [u8], String> {
    match wire {
        Wire::Bytes(b) => Ok(b),
        _ => Err("malformed (a message field of the wrong wire type)".into()),
    }
}

/// Decodes a whole model file.
pub fn parse_model(buf: &[u8]) -> Result<ModelProto, String> {
    let mut model = ModelProto { opset: 0, ..Default::default() };
    let mut graph = None;
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        match number {
            7 => graph = Some(bytes(&wire)?),
            8 => {
                let (mut domain, mut version) = (String::new(), 0);
                let mut o = Reader::new(bytes(&wire)?);
                while let Some((n, w)) = o.field()? {
                    match n {
                        1 => domain = string(bytes(&w)?)?,
                        2 => version = int(&w)?,
                        _ => {}
                    }
                }
                if domain.is_empty() || domain == "ai.onnx" {
                    model.opset = version;
                }
            }
            _ => {}
        }
    }
    let graph = graph.ok_or("not an ONNX model (no graph)")?;
    let mut g = Reader::new(graph);
    while let Some((number, wire)) = g.field()? {
        match number {
            1 => {
                if model.nodes.len() == MAX_NODES {
                    return Err(format!("more than {MAX_NODES} nodes"));
                }
                model.nodes.push(parse_node(bytes(&wire)?)?)
            }
            5 => model.initializers.push(parse_tensor(bytes(&wire)?)?),
            11 => model.inputs.push(parse_value_info(bytes(&wire)?)?),
            12 => model.outputs.push(parse_value_info(bytes(&wire)?)?),
            _ => {}
        }
    }
    if model.nodes.is_empty() {
        return Err("not an ONNX model (a graph with no nodes)".into());
    }
    Ok(model)
}

fn parse_node(buf: &[u8]) -> Result<NodeProto, String> {
    let mut node = NodeProto::default();
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        match number {
            1 => node.inputs.push(string(bytes(&wire)?)?),
            2 => node.outputs.push(string(bytes(&wire)?)?),
            3 => node.name = string(bytes(&wire)?)?,
            4 => node.op_type = string(bytes(&wire)?)?,
            7 => node.domain = string(bytes(&wire)?)?,
            5 => {
                let (name, value) = parse_attribute(bytes(&wire)?)?;
                node.attributes.insert(name, value);
            }
            _ => {}
        }
    }
    Ok(node)
}

fn parse_attribute(buf: &[u8]) -> Result<(String, Attribute), String> {
    let (mut name, mut kind) = (String::new(), 0);
    let (mut f, mut i, mut s, mut t) = (None, None, None, None);
    let (mut floats, mut ints) = (Vec::new(), Vec::new());
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        match number {
            1 => name = string(bytes(&wire)?)?,
            2 => match wire {
                Wire::Fixed32(v) => f = Some(f32::from_bits(v)),
                _ => return Err("malformed (a float attribute of the wrong wire type)".into()),
            },
            3 => i = Some(int(&wire)?),
            4 => s = Some(bytes(&wire)?.to_vec()),
            5 => t = Some(parse_tensor(bytes(&wire)?)?),
            7 => push_floats(&wire, &mut floats)?,
            8 => push_ints(&wire, &mut ints)?,
            20 => kind = int(&wire)?,
            _ => {}
        }
    }
    let value = match kind {
        1 => Attribute::Float(f.unwrap_or(0.0)),
        2 => Attribute::Int(i.unwrap_or(0)),
        3 => Attribute::String(s.unwrap_or_default()),
        4 => Attribute::Tensor(t.ok_or_else(|| format!("attribute {name:?} has no tensor"))?),
        6 => Attribute::Floats(floats),
        7 => Attribute::Ints(ints),
        _ => Attribute::Other,
    };
    Ok((name, value))
}

fn parse_tensor(buf: &[u8]) -> Result<StoredTensor, String> {
    let (mut dims, mut code, mut name) = (Vec::new(), 0, String::new());
    let (mut floats, mut ints, mut raw) = (Vec::new(), Vec::new(), None);
    let mut doubles = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        match number {
            1 => push_ints(&wire, &mut dims)?,
            2 => code = int(&wire)?,
            4 => push_floats(&wire, &mut floats)?,
            5 | 7 | 11 => push_ints(&wire, &mut ints)?,
            8 => name = string(bytes(&wire)?)?,
            9 => raw = Some(bytes(&wire)?),
            10 => match wire {
                Wire::Fixed64(v) => doubles.push(f64::from_bits(v)),
                Wire::Bytes(b) if b.len() % 8 == 0 => {
                    doubles.extend(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())))
                }
                _ => return Err("malformed (doubles of the wrong wire type)".into()),
            },
            14 => {
                if int(&wire)? == 1 {
                    return Err(format!(
                        "tensor {name:?} keeps its data in an external file, which impasto does not read"
                    ));
                }
            }
            _ => {}
        }
    }
    let label = if name.is_empty() { "a tensor".to_string() } else { format!("tensor {name:?}") };
    let data_type = DataType::from_code(code)
        .ok_or_else(|| format!("{label} has element type {code}, which impasto does not read"))?;
    if dims.len() > MAX_RANK {
        return Err(format!("{label} has {} dimensions (at most {MAX_RANK})", dims.len()));
    }
    let mut numel = 1usize;
    let mut shape = Vec::with_capacity(dims.len());
    for &d in &dims {
        let d = usize::try_from(d).map_err(|_| format!("{label} has a negative dimension {d}"))?;
        numel = numel
            .checked_mul(d)
            .filter(|&n| n <= buf.len() * 8 + 64)
            .ok_or_else(|| format!("{label} claims {dims:?} elements, more than its {} bytes can hold", buf.len()))?;
        shape.push(d);
    }
    let mut tensor = StoredTensor { name, data_type, dims: shape, floats: Vec::new(), ints: Vec::new() };
    if let Some(raw) = raw {
        if raw.len() != numel * data_type.bytes() {
            return Err(format!(
                "{label} is truncated or malformed: {:?} needs {} bytes, the file has {}",
                tensor.dims,
                numel * data_type.bytes(),
                raw.len()
            ));
        }
        match data_type {
            DataType::Float => {
                tensor.floats = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
            }
            DataType::Double => {
                tensor.floats = raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
            }
            DataType::Uint8 | DataType::Bool => tensor.ints = raw.iter().map(|&b| i64::from(b)).collect(),
            DataType::Int8 => tensor.ints = raw.iter().map(|&b| i64::from(b as i8)).collect(),
            DataType::Int32 => {
                tensor.ints =
                    raw.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap()))).collect()
            }
            DataType::Int64 => {
                tensor.ints = raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
            }
        }
    } else {
        match data_type {
            DataType::Float => tensor.floats = floats,
            DataType::Double => tensor.floats = doubles.into_iter().map(|d| d as f32).collect(),
            _ => tensor.ints = ints,
        }
        let have = tensor.floats.len() + tensor.ints.len();
        if have != numel {
            return Err(format!("{label} is malformed: {:?} needs {numel} values, the file has {have}", tensor.dims));
        }
    }
    Ok(tensor)
}

fn parse_value_info(buf: &[u8]) -> Result<ValueInfo, String> {
    let mut info = ValueInfo { name: String::new(), shape: None };
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        match number {
            1 => info.name = string(bytes(&wire)?)?,
            2 => {
                // TypeProto.tensor_type (1) → TypeProto.Tensor.shape (2) → dims (1).
                let mut t = Reader::new(bytes(&wire)?);
                while let Some((n, w)) = t.field()? {
                    if n != 1 {
                        continue;
                    }
                    let mut tt = Reader::new(bytes(&w)?);
                    while let Some((n, w)) = tt.field()? {
                        if n != 2 {
                            continue;
                        }
                        let mut dims = Vec::new();
                        let mut s = Reader::new(bytes(&w)?);
                        while let Some((n, w)) = s.field()? {
                            if n != 1 {
                                continue;
                            }
                            let mut dim = Dim::Free;
                            let mut d = Reader::new(bytes(&w)?);
                            while let Some((n, w)) = d.field()? {
                                if n == 1 {
                                    let v = int(&w)?;
                                    dim =
                                        Dim::Fixed(usize::try_from(v).map_err(|_| "malformed (a negative dimension)")?);
                                }
                            }
                            if dims.len() == MAX_RANK {
                                return Err(format!("input {:?} has more than {MAX_RANK} dimensions", info.name));
                            }
                            dims.push(dim);
                        }
                        info.shape = Some(dims);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field key.
    fn key(number: u64, wire: u64, out: &mut Vec<u8>) {
        varint(number << 3 | wire, out)
    }
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn message(number: u64, body: &[u8], out: &mut Vec<u8>) {
        key(number, 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    /// A one-node model written field by field, as protoc would.
    fn tiny_model() -> Vec<u8> {
        let mut node = Vec::new();
        message(1, b"x", &mut node);
        message(1, b"w", &mut node);
        message(2, b"y", &mut node);
        message(4, b"Add", &mut node);
        let mut tensor = Vec::new();
        key(1, 0, &mut tensor);
        varint(2, &mut tensor);
        key(2, 0, &mut tensor);
        varint(1, &mut tensor);
        message(8, b"w", &mut tensor);
        let raw: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        message(9, &raw, &mut tensor);
        let mut graph = Vec::new();
        message(1, &node, &mut graph);
        message(5, &tensor, &mut graph);
        let mut model = Vec::new();
        let mut opset = Vec::new();
        key(2, 0, &mut opset);
        varint(17, &mut opset);
        message(8, &opset, &mut model);
        message(7, &graph, &mut model);
        model
    }

    #[test]
    fn reads_a_hand_written_model() {
        let m = parse_model(&tiny_model()).unwrap();
        assert_eq!(m.opset, 17);
        assert_eq!(m.nodes.len(), 1);
        assert_eq!(m.nodes[0].op_type, "Add");
        assert_eq!(m.nodes[0].inputs, ["x", "w"]);
        assert_eq!(m.initializers[0].dims, [2]);
        assert_eq!(m.initializers[0].floats, [1.5, -2.0]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = tiny_model();
        for n in 0..bytes.len() {
            assert!(parse_model(&bytes[..n]).is_err(), "{n} bytes accepted");
        }
    }

    #[test]
    fn a_tensor_claiming_more_data_than_the_file_has_is_refused() {
        let mut tensor = Vec::new();
        key(1, 0, &mut tensor);
        varint(1 << 40, &mut tensor);
        key(2, 0, &mut tensor);
        varint(1, &mut tensor);
        let err = parse_tensor(&tensor).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
