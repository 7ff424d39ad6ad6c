//! Just enough of Python's pickle machine to read what `torch.save` writes (protocols 2-5), for
//! the legacy and the zip formats alike, on untrusted input:
//!
//! - values are shared, not copied: the memo hands out references (`Rc`), so a few hundred bytes
//!   that reference one list from many places ("billion laughs") cost no memory;
//! - every value knows its nesting depth and the number of nodes it stands for once expanded;
//!   a value deeper than [`MAX_DEPTH`] or larger than [`MAX_NODES`] is an error, so walking the
//!   result (collecting tensors) and dropping it are bounded in time and stack;
//! - lengths are checked against the bytes present before anything is allocated;
//! - nothing is executed: a global is a name, a call is kept as `callable(args)`.
//!
//! Tensors are `_rebuild_tensor_v2(storage, offset, size, stride, ...)` whose storage is a
//! persistent id `('storage', torch.XStorage, KEY, location, NUMEL)`; [`tensors`] finds them in
//! (nested) dictionaries and [`TensorSpec::gather`] reads a view out of its storage's bytes.

use std::collections::HashMap;
use std::rc::Rc;

use super::{Tensor, TensorData};

/// The deepest nesting of containers accepted (real checkpoints nest a handful of levels).
pub const MAX_DEPTH: u32 = 200;
/// The most nodes a value may stand for when expanded (shared parts counted each time).
pub const MAX_NODES: u64 = 1 << 24;

/// A value of the subset of Python that torch.save produces. Cloning is cheap (shared).
#[derive(Clone)]
pub struct Value(Rc<Node>);

pub struct Node {
    kind: Kind,
    /// Nodes in the expanded tree, this one included.
    size: u64,
    /// Nesting depth (a scalar is 0).
    depth: u32,
}

pub enum Kind {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// A persistent id (a storage reference).
    PersId(Value),
    /// `callable(*args)`, kept symbolic.
    Call(Value, Value),
}

impl Value {
    fn leaf(kind: Kind) -> Self {
        Value(Rc::new(Node { kind, size: 1, depth: 0 }))
    }

    /// A value of `kind`, its size and depth from its children, checked against the limits.
    fn new(kind: Kind) -> Result<Self, String> {
        let (mut size, mut depth) = (1u64, 0u32);
        let mut count = |c: &Value| {
            size = size.saturating_add(c.0.size);
            depth = depth.max(c.0.depth + 1);
        };
        match &kind {
            Kind::Tuple(v) | Kind::List(v) => v.iter().for_each(&mut count),
            Kind::Dict(d) => d.iter().for_each(|(k, v)| {
                count(k);
                count(v)
            }),
            Kind::PersId(v) => count(v),
            Kind::Call(a, b) => {
                count(a);
                count(b)
            }
            _ => {}
        }
        check(size, depth)?;
        Ok(Value(Rc::new(Node { kind, size, depth })))
    }

    pub fn kind(&self) -> &Kind {
        &self.0.kind
    }

    /// A short description for messages (never the value itself, which may be huge).
    pub fn describe(&self) -> &'static str {
        match self.kind() {
            Kind::None => "None",
            Kind::Bool(_) => "a bool",
            Kind::Int(_) | Kind::BigInt(_) => "an integer",
            Kind::Float => "a float",
            Kind::Str(_) => "a string",
            Kind::Bytes => "bytes",
            Kind::Tuple(_) => "a tuple",
            Kind::List(_) => "a list",
            Kind::Dict(_) => "a dict",
            Kind::Global(..) => "a global",
            Kind::PersId(_) => "a persistent id",
            Kind::Call(..) => "a call",
        }
    }

    /// Appends to a list or sets items of a dict (or a call result, which becomes a dict: how
    /// `OrderedDict()` is filled), keeping size and depth up to date. Shared values are copied
    /// first (Python would mutate the shared object; torch.save does not rely on that).
    fn extend(&mut self, items: Vec<Value>, as_dict: bool) -> Result<(), String> {
        let node = node_mut(&mut self.0);
        let mut size = node.size;
        let mut depth = node.depth;
        for v in &items {
            size = size.saturating_add(v.0.size);
            depth = depth.max(v.0.depth + 1);
        }
        check(size, depth)?;
        match (&mut node.kind, as_dict) {
            (Kind::List(l), false) => l.extend(items),
            (Kind::Dict(d), true) => push_pairs(d, items)?,
            (k @ Kind::Call(..), true) => {
                *k = Kind::Dict(Vec::new());
                size = items.iter().fold(1u64, |s, v| s.saturating_add(v.0.size));
                let Kind::Dict(d) = k else { unreachable!() };
                push_pairs(d, items)?;
            }
            _ => return Err(if as_dict { "SETITEM on a non-dict" } else { "APPEND on a non-list" }.into()),
        }
        node.size = size;
        node.depth = depth;
        Ok(())
    }
}

fn push_pairs(d: &mut Vec<(Value, Value)>, items: Vec<Value>) -> Result<(), String> {
    if items.len() % 2 != 0 {
        return Err("SETITEMS with an odd number of items".into());
    }
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        d.push((k, v));
    }
    Ok(())
}

fn check(size: u64, depth: u32) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("the pickle nests deeper than {MAX_DEPTH} levels"));
    }
    if size > MAX_NODES {
        return Err(format!("the pickle expands to more than {MAX_NODES} values"));
    }
    Ok(())
}

/// The node, copied first if it is shared (its children stay shared, so the copy is shallow).
fn node_mut(this: &mut Rc<Node>) -> &mut Node {
    if Rc::get_mut(this).is_none() {
        let kind = match &this.kind {
            Kind::List(l) => Kind::List(l.clone()),
            Kind::Dict(d) => Kind::Dict(d.clone()),
            Kind::Call(a, b) => Kind::Call(a.clone(), b.clone()),
            Kind::Tuple(t) => Kind::Tuple(t.clone()),
            Kind::PersId(v) => Kind::PersId(v.clone()),
            Kind::Global(a, b) => Kind::Global(a.clone(), b.clone()),
            Kind::Str(s) => Kind::Str(s.clone()),
            Kind::BigInt(b) => Kind::BigInt(b.clone()),
            Kind::None => Kind::None,
            Kind::Bool(b) => Kind::Bool(*b),
            Kind::Int(i) => Kind::Int(*i),
            Kind::Float => Kind::Float,
            Kind::Bytes => Kind::Bytes,
        };
        *this = Rc::new(Node { kind, size: this.size, depth: this.depth });
    }
    Rc::get_mut(this).expect("unique after the copy")
}

/// Reads pickles from a byte buffer, one after another.
pub struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
}

/// A stack entry: a value or a MARK.
enum Entry {
    Mark,
    Value(Value),
}

impl<'a> Parser<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Parser { data, pos: 0 }
    }

    /// The bytes after the pickles read so far.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// `n` bytes, or an error if fewer are left.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| "unexpected end of file".to_string())?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().take(1024).position(|&b| b == b'\n').ok_or("unterminated line")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    /// Runs the pickle machine until STOP and returns the value it built.
    pub fn load(&mut self) -> Result<Value, String> {
        let mut stack: Vec<Entry> = Vec::new();
        let mut marks: Vec<usize> = Vec::new();
        let mut memo: HashMap<u32, Value> = HashMap::new();
        fn pop(stack: &mut Vec<Entry>) -> Result<Value, String> {
            match stack.pop() {
                Some(Entry::Value(v)) => Ok(v),
                Some(Entry::Mark) => Err("a value was expected, a MARK found".into()),
                None => Err("pickle stack underflow".into()),
            }
        }
        fn top(stack: &mut [Entry]) -> Result<&mut Value, String> {
            match stack.last_mut() {
                Some(Entry::Value(v)) => Ok(v),
                _ => Err("pickle stack underflow".into()),
            }
        }
        let pop_mark = |stack: &mut Vec<Entry>, marks: &mut Vec<usize>| -> Result<Vec<Value>, String> {
            let at = marks.pop().ok_or("pickle mark missing")?;
            let items = stack.split_off(at + 1);
            stack.pop();
            items.into_iter().map(|e| if let Entry::Value(v) = e { Ok(v) } else { Err("nested MARK".into()) }).collect()
        };
        let push = |stack: &mut Vec<Entry>, v: Value| stack.push(Entry::Value(v));
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return pop(&mut stack),
                b'(' => {
                    marks.push(stack.len());
                    stack.push(Entry::Mark);
                }
                b'N' => push(&mut stack, Value::leaf(Kind::None)),
                0x88 => push(&mut stack, Value::leaf(Kind::Bool(true))),
                0x89 => push(&mut stack, Value::leaf(Kind::Bool(false))),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap()) as i64;
                    push(&mut stack, Value::leaf(Kind::Int(v)))
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    push(&mut stack, Value::leaf(Kind::Int(v)))
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    push(&mut stack, Value::leaf(Kind::Int(v)))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n <= 8 {
                        let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xff; 8] } else { [0; 8] };
                        buf[..n].copy_from_slice(b);
                        push(&mut stack, Value::leaf(Kind::Int(i64::from_le_bytes(buf))));
                    } else {
                        push(&mut stack, Value::leaf(Kind::BigInt(b.to_vec())));
                    }
                }
                b'G' => {
                    self.take(8)?;
                    push(&mut stack, Value::leaf(Kind::Float))
                }
                b'X' | b'T' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    push(&mut stack, Value::leaf(Kind::Str(s)))
                }
                0x8c | b'U' => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    push(&mut stack, Value::leaf(Kind::Str(s)))
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    self.take(n)?;
                    push(&mut stack, Value::leaf(Kind::Bytes))
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    push(&mut stack, Value::leaf(Kind::Bytes))
                }
                b'}' => push(&mut stack, Value::leaf(Kind::Dict(Vec::new()))),
                b']' => push(&mut stack, Value::leaf(Kind::List(Vec::new()))),
                b')' => push(&mut stack, Value::leaf(Kind::Tuple(Vec::new()))),
                b'd' => {
                    let items = pop_mark(&mut stack, &mut marks)?;
                    let mut d = Value::leaf(Kind::Dict(Vec::new()));
                    d.extend(items, true)?;
                    push(&mut stack, d);
                }
                b'l' => {
                    let items = pop_mark(&mut stack, &mut marks)?;
                    push(&mut stack, Value::new(Kind::List(items))?);
                }
                b't' => {
                    let items = pop_mark(&mut stack, &mut marks)?;
                    push(&mut stack, Value::new(Kind::Tuple(items))?);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(pop(&mut stack)?);
                    }
                    items.reverse();
                    push(&mut stack, Value::new(Kind::Tuple(items))?);
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    memo.insert(i, top(&mut stack)?.clone());
                }
                b'r' => {
                    let i = self.u32()?;
                    memo.insert(i, top(&mut stack)?.clone());
                }
                0x94 => {
                    let i = memo.len() as u32;
                    memo.insert(i, top(&mut stack)?.clone());
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    push(&mut stack, memo.get(&i).cloned().ok_or("pickle memo miss")?);
                }
                b'j' => {
                    let i = self.u32()?;
                    push(&mut stack, memo.get(&i).cloned().ok_or("pickle memo miss")?);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    push(&mut stack, Value::leaf(Kind::Global(module, name)));
                }
                0x93 => {
                    let name = pop(&mut stack)?;
                    let module = pop(&mut stack)?;
                    match (module.kind(), name.kind()) {
                        (Kind::Str(m), Kind::Str(n)) => {
                            let g = Value::leaf(Kind::Global(m.clone(), n.clone()));
                            push(&mut stack, g)
                        }
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'Q' => {
                    let pid = pop(&mut stack)?;
                    push(&mut stack, Value::new(Kind::PersId(pid))?);
                }
                b'R' | 0x81 => {
                    let args = pop(&mut stack)?;
                    let callable = pop(&mut stack)?;
                    push(&mut stack, Value::new(Kind::Call(callable, args))?);
                }
                b'b' => {
                    pop(&mut stack)?; // BUILD: object state (e.g. OrderedDict metadata) is ignored
                }
                b's' => {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    top(&mut stack)?.extend(vec![k, v], true)?;
                }
                b'u' => {
                    let items = pop_mark(&mut stack, &mut marks)?;
                    top(&mut stack)?.extend(items, true)?;
                }
                b'a' => {
                    let v = pop(&mut stack)?;
                    top(&mut stack)?.extend(vec![v], false)?;
                }
                b'e' => {
                    let items = pop_mark(&mut stack, &mut marks)?;
                    top(&mut stack)?.extend(items, false)?;
                }
                b'0' => {
                    pop(&mut stack)?;
                }
                _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at byte {}", self.pos - 1)),
            }
            if stack.len() > 1 << 24 {
                return Err("the pickle stack grew past 16 million entries".into());
            }
        }
    }
}

/// An element type of a torch storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageType {
    F32,
    F64,
    F16,
    BF16,
    U8,
    I8,
    I16,
    I32,
    I64,
    Bool,
}

impl StorageType {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => StorageType::F32,
            "DoubleStorage" => StorageType::F64,
            "HalfStorage" => StorageType::F16,
            "BFloat16Storage" => StorageType::BF16,
            "ByteStorage" => StorageType::U8,
            "CharStorage" => StorageType::I8,
            "ShortStorage" => StorageType::I16,
            "IntStorage" => StorageType::I32,
            "LongStorage" => StorageType::I64,
            "BoolStorage" => StorageType::Bool,
            _ => return None,
        })
    }

    /// Bytes an element.
    pub fn size(self) -> usize {
        match self {
            StorageType::F64 | StorageType::I64 => 8,
            StorageType::F32 | StorageType::I32 => 4,
            StorageType::F16 | StorageType::BF16 | StorageType::I16 => 2,
            StorageType::U8 | StorageType::I8 | StorageType::Bool => 1,
        }
    }
}

/// A storage reference: its key, element type and (claimed) element count.
#[derive(Clone, Debug)]
pub struct StorageRef {
    pub key: String,
    pub dtype: StorageType,
    pub numel: usize,
}

/// A tensor view of a storage: `_rebuild_tensor_v2(storage, offset, size, stride)`.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorSpec {
    /// Elements in the view.
    pub fn numel(&self) -> Result<usize, String> {
        self.size.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| "a tensor size overflows".into())
    }

    /// The view read out of the storage's raw little-endian bytes. The view must lie inside the
    /// storage and hold no more elements than it (so a few bytes cannot claim a huge tensor).
    pub fn gather(&self, data: &[u8]) -> Result<Tensor, String> {
        let esz = self.storage.dtype.size();
        let n_storage = data.len() / esz;
        let numel = self.numel()?;
        if numel > n_storage {
            return Err(format!("a view of {numel} elements on a storage of {n_storage}"));
        }
        // The last element the view reaches, checked once; every index is then inside.
        if numel > 0 {
            let mut last = self.offset;
            for (d, s) in self.size.iter().zip(&self.stride) {
                last = (d - 1).checked_mul(*s).and_then(|v| last.checked_add(v)).ok_or("a view's strides overflow")?;
            }
            if last >= n_storage {
                return Err(format!("the view reaches element {last} of a {n_storage}-element storage"));
            }
        }
        let mut idx = Vec::with_capacity(numel);
        let mut coord = vec![0usize; self.size.len()];
        for _ in 0..numel {
            idx.push(self.offset + coord.iter().zip(&self.stride).map(|(c, s)| c * s).sum::<usize>());
            for d in (0..coord.len()).rev() {
                coord[d] += 1;
                if coord[d] < self.size[d] {
                    break;
                }
                coord[d] = 0;
            }
        }
        let el = |i: usize| &data[i * esz..(i + 1) * esz];
        let floats = |f: &dyn Fn(&[u8]) -> f32| TensorData::F32(idx.iter().map(|&i| f(el(i))).collect());
        let data = match self.storage.dtype {
            StorageType::U8 => TensorData::U8(idx.iter().map(|&i| data[i]).collect()),
            StorageType::F32 => floats(&|b| f32::from_le_bytes(b.try_into().unwrap())),
            StorageType::F64 => floats(&|b| f64::from_le_bytes(b.try_into().unwrap()) as f32),
            StorageType::F16 => floats(&|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()),
            StorageType::BF16 => floats(&|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32()),
            StorageType::I8 => floats(&|b| b[0] as i8 as f32),
            StorageType::Bool => floats(&|b| b[0] as f32),
            StorageType::I16 => floats(&|b| i16::from_le_bytes(b.try_into().unwrap()) as f32),
            StorageType::I32 => floats(&|b| i32::from_le_bytes(b.try_into().unwrap()) as f32),
            StorageType::I64 => floats(&|b| i64::from_le_bytes(b.try_into().unwrap()) as f32),
        };
        Ok(Tensor { shape: self.size.clone(), data })
    }
}

/// Every tensor in (nested) dictionaries of `root`, named by the dotted key path. Walking is
/// bounded by [`MAX_NODES`] and its recursion by [`MAX_DEPTH`].
pub fn tensors(root: &Value) -> Result<Vec<(String, TensorSpec)>, String> {
    let mut out = Vec::new();
    collect(root, String::new(), &mut out)?;
    Ok(out)
}

fn collect(v: &Value, prefix: String, out: &mut Vec<(String, TensorSpec)>) -> Result<(), String> {
    if let Some(spec) = as_tensor(v)? {
        out.push((prefix, spec));
        return Ok(());
    }
    if let Kind::Dict(items) = v.kind() {
        for (k, v) in items {
            let name = match k.kind() {
                Kind::Str(s) => s.clone(),
                Kind::Int(i) => i.to_string(),
                _ => continue,
            };
            let full = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
            collect(v, full, out)?;
        }
    }
    Ok(())
}

fn as_usize(v: &Value) -> Result<usize, String> {
    match v.kind() {
        Kind::Int(i) if *i >= 0 => usize::try_from(*i).map_err(|_| "an integer is too large".into()),
        _ => Err(format!("expected a non-negative integer, found {}", v.describe())),
    }
}

fn as_usize_tuple(v: &Value) -> Result<Vec<usize>, String> {
    match v.kind() {
        Kind::Tuple(items) | Kind::List(items) if items.len() <= 32 => items.iter().map(as_usize).collect(),
        Kind::Tuple(_) | Kind::List(_) => Err("a tensor with more than 32 dimensions".into()),
        _ => Err(format!("expected a tuple of integers, found {}", v.describe())),
    }
}

fn as_tensor(v: &Value) -> Result<Option<TensorSpec>, String> {
    let Kind::Call(callable, args) = v.kind() else { return Ok(None) };
    let Kind::Global(module, name) = callable.kind() else { return Ok(None) };
    let Kind::Tuple(args) = args.kind() else { return Ok(None) };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err("a tensor with too few arguments".into());
            }
            let storage = match args[0].kind() {
                Kind::PersId(pid) => storage_ref(pid)?,
                _ => return Err("a tensor whose storage is not a persistent id".into()),
            };
            let size = as_usize_tuple(&args[2])?;
            let stride = as_usize_tuple(&args[3])?;
            if size.len() != stride.len() {
                return Err("a tensor whose size and stride differ in length".into());
            }
            Ok(Some(TensorSpec { storage, offset: as_usize(&args[1])?, size, stride }))
        }
        ("torch._utils", "_rebuild_parameter") if !args.is_empty() => as_tensor(&args[0]),
        _ => Ok(None),
    }
}

fn storage_ref(pid: &Value) -> Result<StorageRef, String> {
    let Kind::Tuple(items) = pid.kind() else { return Err("a storage id is not a tuple".into()) };
    let [tag, ty, key, _location, numel, ..] = items.as_slice() else {
        return Err("a storage id with too few fields".into());
    };
    match (tag.kind(), ty.kind(), key.kind()) {
        (Kind::Str(tag), Kind::Global(_, ty), Kind::Str(key)) if tag == "storage" => {
            let dtype = StorageType::from_name(ty).ok_or_else(|| format!("unsupported storage type {ty}"))?;
            Ok(StorageRef { key: key.clone(), dtype, numel: as_usize(numel)? })
        }
        _ => Err("an unsupported persistent id".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(bytes: &[u8]) -> Result<Value, String> {
        Parser::new(bytes).load()
    }

    /// A million nested lists: refused at the depth limit, with no stack overflow anywhere
    /// (parsing, dropping, describing).
    #[test]
    fn deep_nesting_is_refused() {
        let mut p = vec![0x80, 2];
        for _ in 0..1_000_000 {
            p.extend_from_slice(b"]");
        }
        for _ in 0..1_000_000 {
            p.push(b'a');
        }
        p.push(b'.');
        let err = load(&p).err().expect("refused");
        assert!(err.contains("deeper than"), "{err}");
        // Within the limit it works.
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', 50));
        p.extend(std::iter::repeat_n(b'a', 49));
        p.push(b'.');
        assert_eq!(load(&p).unwrap().0.depth, 49);
    }

    /// "Billion laughs": a list of ten references to a list of ten references ... costs no
    /// memory (values are shared) and is refused once it stands for too many nodes.
    #[test]
    fn memo_references_are_shared_and_counted() {
        let mut p = vec![0x80, 2, b']', b'q', 0]; // an empty list, memo 0
        for level in 0..12u8 {
            p.extend_from_slice(b"(");
            for _ in 0..10 {
                p.extend_from_slice(&[b'h', level]);
            }
            p.extend_from_slice(&[b'l', b'q', level + 1]);
        }
        p.push(b'.');
        let err = load(&p).err().expect("refused");
        assert!(err.contains("expands to more than"), "{err}");
        // Fewer levels: fine, and the expanded size is counted with sharing.
        let short: Vec<u8> = p[..5 + 5 * 24].iter().copied().chain([b'.']).collect();
        let v = load(&short).unwrap();
        assert_eq!(v.0.size, (0..=5).map(|k| 10u64.pow(k)).sum::<u64>());
    }

    #[test]
    fn claimed_lengths_are_checked_before_allocating() {
        // BINUNICODE of 2^32 - 1 bytes in a 10-byte file.
        assert!(load(&[0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff, b'a', b'.']).err().unwrap().contains("end of file"));
        let spec = TensorSpec {
            storage: StorageRef { key: "0".into(), dtype: StorageType::F32, numel: 1 << 61 },
            offset: 0,
            size: vec![1 << 40, 1 << 40],
            stride: vec![1 << 40, 1],
        };
        assert!(spec.gather(&[0; 16]).unwrap_err().contains("overflows"));
        let spec = TensorSpec { size: vec![1 << 40, 1 << 21], stride: vec![1 << 21, 1], ..spec };
        assert!(spec.gather(&[0; 16]).unwrap_err().contains("storage of 4"));
        let spec = TensorSpec { size: vec![1 << 20], stride: vec![0], ..spec };
        assert!(spec.gather(&[0; 16]).unwrap_err().contains("storage of 4"));
    }
}
