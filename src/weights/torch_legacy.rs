//! A reader for the legacy (pre-1.6, non-zip) `torch.save` format, which candle does not read.
//!
//! The file is a sequence of pickles followed by raw storages:
//! 1. the magic number 0x1950a86a20f9469cfc6c (a 10-byte `LONG1`, checked byte for byte here:
//!    candle's pickle parser overflows on it),
//! 2. the protocol version (1001), 3. system info (must say little-endian),
//! 4. the object itself: tensors are `REDUCE(torch._utils._rebuild_tensor_v2, (storage, offset,
//!    size, stride, ...))` whose storage is a persistent id
//!    `('storage', torch.XStorage, KEY, location, NUMEL, view_metadata)`,
//! 5. the list of storage keys in the order their data follows,
//! 6. for each key: a little-endian i64 element count, then the raw little-endian elements.
//!
//! [`read`] returns every tensor found in (possibly nested) dictionaries, named by its dotted
//! key path, as candle tensors.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

/// The magic number's 10 little-endian bytes (0x1950a86a20f9469cfc6c).
pub const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// A value of the small subset of Python that torch.save produces.
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(#[allow(dead_code)] f64),
    Str(String),
    Bytes(#[allow(dead_code)] Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// A persistent id (a storage reference).
    PersId(Box<Value>),
    /// The result of calling `callable(*args)`, kept symbolic.
    Call(Box<Value>, Box<Value>),
    Mark,
}

/// A storage reference: its key, element type and element count.
#[derive(Clone, Debug)]
struct StorageRef {
    key: String,
    dtype: StorageType,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StorageType {
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
    fn size(self) -> usize {
        match self {
            StorageType::F64 | StorageType::I64 => 8,
            StorageType::F32 | StorageType::I32 => 4,
            StorageType::F16 | StorageType::BF16 | StorageType::I16 => 2,
            StorageType::U8 | StorageType::I8 | StorageType::Bool => 1,
        }
    }
}

/// True when `bytes` start like a legacy torch.save file.
pub fn sniff(bytes: &[u8]) -> bool {
    bytes.len() >= 14 && bytes[0] == 0x80 && bytes[2] == 0x8a && bytes[3] == 10 && bytes[4..14] == MAGIC
}

/// Reads every tensor of a legacy torch.save file, named by dotted dictionary keys.
pub fn read(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    let mut p = Parser { data: bytes, pos: 0 };
    match p.load()? {
        Value::BigInt(b) if b == MAGIC => {}
        _ => return Err("not a legacy torch.save file (bad magic number)".into()),
    }
    match p.load()? {
        Value::Int(1001) => {}
        v => return Err(format!("unsupported torch.save protocol version {v:?}")),
    }
    if let Value::Dict(items) = p.load()? {
        for (k, v) in items {
            if matches!((&k, &v), (Value::Str(k), Value::Bool(false)) if k == "little_endian") {
                return Err("big-endian torch.save files are not supported".into());
            }
        }
    }
    let root = p.load()?;
    let keys = match p.load()? {
        Value::List(keys) => keys,
        _ => return Err("missing the storage key list".into()),
    };
    // Every storage's type, from the references in the object.
    let mut tensors = Vec::new();
    collect_tensors(&root, String::new(), &mut tensors)?;
    let mut types: HashMap<String, StorageType> = HashMap::new();
    for t in &tensors {
        types.insert(t.1.storage.key.clone(), t.1.storage.dtype);
    }
    let mut storages: HashMap<String, (StorageType, &[u8])> = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else { return Err("a storage key is not a string".into()) };
        let count = p.take(8)?;
        let count = i64::from_le_bytes(count.try_into().unwrap());
        let dtype = types.get(&key).copied().unwrap_or(StorageType::U8);
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(dtype.size()))
            .ok_or_else(|| format!("storage {key} has an invalid size {count}"))?;
        let data = p.take(len).map_err(|_| format!("storage {key} is truncated"))?;
        storages.insert(key, (dtype, data));
    }
    let mut out = Vec::with_capacity(tensors.len());
    for (name, spec) in tensors {
        let (dtype, data) = *storages
            .get(&spec.storage.key)
            .ok_or_else(|| format!("{name}: storage {} is missing", spec.storage.key))?;
        out.push((name.clone(), spec.build(dtype, data).map_err(|e| format!("{name}: {e}"))?));
    }
    Ok(out)
}

/// A tensor view of a storage: `_rebuild_tensor_v2(storage, offset, size, stride)`.
#[derive(Debug)]
struct TensorSpec {
    storage: StorageRef,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorSpec {
    fn build(&self, dtype: StorageType, data: &[u8]) -> Result<Tensor, String> {
        let numel: usize = self.size.iter().product();
        let esz = dtype.size();
        let n_storage = data.len() / esz;
        // Gather the view into a contiguous buffer, checking every index against the storage.
        let mut idx = Vec::with_capacity(numel);
        let mut coord = vec![0usize; self.size.len()];
        for _ in 0..numel {
            let i = self.offset + coord.iter().zip(&self.stride).map(|(c, s)| c * s).sum::<usize>();
            if i >= n_storage {
                return Err(format!("view reaches element {i} of a {n_storage}-element storage"));
            }
            idx.push(i);
            for d in (0..coord.len()).rev() {
                coord[d] += 1;
                if coord[d] < self.size[d] {
                    break;
                }
                coord[d] = 0;
            }
        }
        let el = |i: usize| &data[i * esz..(i + 1) * esz];
        let dev = &Device::Cpu;
        let shape = self.size.as_slice();
        let t = match dtype {
            StorageType::F32 => Tensor::from_vec(
                idx.iter().map(|&i| f32::from_le_bytes(el(i).try_into().unwrap())).collect::<Vec<_>>(),
                shape,
                dev,
            ),
            StorageType::F64 => Tensor::from_vec(
                idx.iter().map(|&i| f64::from_le_bytes(el(i).try_into().unwrap())).collect::<Vec<_>>(),
                shape,
                dev,
            ),
            StorageType::F16 => Tensor::from_vec(
                idx.iter().map(|&i| half::f16::from_le_bytes(el(i).try_into().unwrap()).to_f32()).collect::<Vec<_>>(),
                shape,
                dev,
            ),
            StorageType::BF16 => Tensor::from_vec(
                idx.iter().map(|&i| half::bf16::from_le_bytes(el(i).try_into().unwrap()).to_f32()).collect::<Vec<_>>(),
                shape,
                dev,
            ),
            StorageType::U8 | StorageType::Bool => {
                Tensor::from_vec(idx.iter().map(|&i| data[i]).collect::<Vec<_>>(), shape, dev)
            }
            StorageType::I8 => {
                Tensor::from_vec(idx.iter().map(|&i| data[i] as i8 as i64).collect::<Vec<_>>(), shape, dev)
            }
            StorageType::I16 => Tensor::from_vec(
                idx.iter().map(|&i| i16::from_le_bytes(el(i).try_into().unwrap()) as i64).collect::<Vec<_>>(),
                shape,
                dev,
            ),
            StorageType::I32 => Tensor::from_vec(
                idx.iter().map(|&i| i32::from_le_bytes(el(i).try_into().unwrap()) as i64).collect::<Vec<_>>(),
                shape,
                dev,
            ),
            StorageType::I64 => Tensor::from_vec(
                idx.iter().map(|&i| i64::from_le_bytes(el(i).try_into().unwrap())).collect::<Vec<_>>(),
                shape,
                dev,
            ),
        };
        let t = t.map_err(|e| e.to_string())?;
        debug_assert!(t.dtype() != DType::U32);
        Ok(t)
    }
}

fn collect_tensors(v: &Value, prefix: String, out: &mut Vec<(String, TensorSpec)>) -> Result<(), String> {
    if let Some(spec) = as_tensor(v)? {
        out.push((prefix, spec));
        return Ok(());
    }
    if let Some(items) = as_dict(v) {
        for (k, v) in items {
            let name = match k {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                _ => continue,
            };
            let full = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
            collect_tensors(v, full, out)?;
        }
    }
    Ok(())
}

/// The items of a dict, including an `OrderedDict()` built by REDUCE and SETITEMS.
fn as_dict(v: &Value) -> Option<&[(Value, Value)]> {
    match v {
        Value::Dict(items) => Some(items),
        _ => None,
    }
}

fn as_usize(v: &Value) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => Err(format!("expected a non-negative integer, found {v:?}")),
    }
}

fn as_usize_tuple(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(as_usize).collect(),
        _ => Err(format!("expected a tuple of integers, found {v:?}")),
    }
}

fn as_tensor(v: &Value) -> Result<Option<TensorSpec>, String> {
    let Value::Call(callable, args) = v else { return Ok(None) };
    let Value::Global(module, name) = callable.as_ref() else { return Ok(None) };
    let Value::Tuple(args) = args.as_ref() else { return Ok(None) };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err("a tensor with too few arguments".into());
            }
            let storage = match &args[0] {
                Value::PersId(pid) => storage_ref(pid)?,
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
    let Value::Tuple(items) = pid else { return Err("a storage id is not a tuple".into()) };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(_, ty), Value::Str(key), ..] if tag == "storage" => {
            let dtype = StorageType::from_name(ty).ok_or_else(|| format!("unsupported storage type {ty}"))?;
            Ok(StorageRef { key: key.clone(), dtype })
        }
        _ => Err(format!("unsupported persistent id {pid:?}")),
    }
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
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
        let n = rest.iter().position(|&b| b == b'\n').ok_or("unterminated line")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    /// Runs the pickle machine until STOP and returns the value it built.
    fn load(&mut self) -> Result<Value, String> {
        let mut stack: Vec<Value> = Vec::new();
        let mut memo: HashMap<u32, Value> = HashMap::new();
        fn pop(stack: &mut Vec<Value>) -> Result<Value, String> {
            stack.pop().ok_or_else(|| "pickle stack underflow".to_string())
        }
        fn pop_mark(stack: &mut Vec<Value>) -> Result<Vec<Value>, String> {
            let at = stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or("pickle mark missing")?;
            let items = stack.split_off(at + 1);
            stack.pop();
            Ok(items)
        }
        fn top(stack: &mut [Value]) -> Result<&mut Value, String> {
            stack.last_mut().ok_or_else(|| "pickle stack underflow".to_string())
        }
        fn set_items(target: &mut Value, items: Vec<Value>) -> Result<(), String> {
            let dict = match target {
                Value::Dict(d) => d,
                // OrderedDict() and friends: the call result becomes a dict.
                Value::Call(..) => {
                    *target = Value::Dict(Vec::new());
                    let Value::Dict(d) = target else { unreachable!() };
                    d
                }
                _ => return Err("SETITEM on a non-dict".into()),
            };
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                dict.push((k, v));
            }
            Ok(())
        }
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
                b'(' => stack.push(Value::Mark),
                b'N' => stack.push(Value::None),
                0x88 => stack.push(Value::Bool(true)),
                0x89 => stack.push(Value::Bool(false)),
                b'J' => stack.push(Value::Int(i32::from_le_bytes(self.take(4)?.try_into().unwrap()) as i64)),
                b'K' => stack.push(Value::Int(self.u8()? as i64)),
                b'M' => stack.push(Value::Int(self.u16()? as i64)),
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n <= 8 {
                        let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xff; 8] } else { [0; 8] };
                        buf[..n].copy_from_slice(b);
                        stack.push(Value::Int(i64::from_le_bytes(buf)));
                    } else {
                        stack.push(Value::BigInt(b.to_vec()));
                    }
                }
                b'G' => stack.push(Value::Float(f64::from_be_bytes(self.take(8)?.try_into().unwrap()))),
                b'X' => {
                    let n = self.u32()? as usize;
                    stack.push(Value::Str(self.string(n)?));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    stack.push(Value::Str(self.string(n)?));
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    stack.push(Value::Str(self.string(n)?));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    stack.push(Value::Str(self.string(n)?));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    stack.push(Value::Bytes(self.take(n)?.to_vec()));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    stack.push(Value::Bytes(self.take(n)?.to_vec()));
                }
                b'}' => stack.push(Value::Dict(Vec::new())),
                b']' => stack.push(Value::List(Vec::new())),
                b')' => stack.push(Value::Tuple(Vec::new())),
                b'd' => {
                    let items = pop_mark(&mut stack)?;
                    let mut d = Value::Dict(Vec::new());
                    set_items(&mut d, items)?;
                    stack.push(d);
                }
                b'l' => {
                    let items = pop_mark(&mut stack)?;
                    stack.push(Value::List(items));
                }
                b't' => {
                    let items = pop_mark(&mut stack)?;
                    stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if stack.len() < n {
                        return Err("pickle stack underflow".into());
                    }
                    let items = stack.split_off(stack.len() - n);
                    stack.push(Value::Tuple(items));
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
                    stack.push(memo.get(&i).cloned().ok_or("pickle memo miss")?);
                }
                b'j' => {
                    let i = self.u32()?;
                    stack.push(memo.get(&i).cloned().ok_or("pickle memo miss")?);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = pop(&mut stack)?;
                    let module = pop(&mut stack)?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'Q' => {
                    let pid = pop(&mut stack)?;
                    stack.push(Value::PersId(Box::new(pid)));
                }
                b'R' | 0x81 => {
                    let args = pop(&mut stack)?;
                    let callable = pop(&mut stack)?;
                    stack.push(Value::Call(Box::new(callable), Box::new(args)));
                }
                b'b' => {
                    pop(&mut stack)?; // BUILD: object state (e.g. OrderedDict metadata) is ignored
                }
                b's' => {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    set_items(top(&mut stack)?, vec![k, v])?;
                }
                b'u' => {
                    let items = pop_mark(&mut stack)?;
                    set_items(top(&mut stack)?, items)?;
                }
                b'a' => {
                    let v = pop(&mut stack)?;
                    match top(&mut stack)? {
                        Value::List(l) => l.push(v),
                        _ => return Err("APPEND on a non-list".into()),
                    }
                }
                b'e' => {
                    let items = pop_mark(&mut stack)?;
                    match top(&mut stack)? {
                        Value::List(l) => l.extend(items),
                        _ => return Err("APPENDS on a non-list".into()),
                    }
                }
                _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at byte {}", self.pos - 1)),
            }
        }
    }
}
