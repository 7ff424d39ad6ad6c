//! The legacy (pre-1.6, non-zip) `torch.save` format, which candle and most readers do not
//! handle. The file is a sequence of pickles followed by raw storages:
//! 1. the magic number 0x1950a86a20f9469cfc6c (a 10-byte `LONG1`, checked byte for byte),
//! 2. the protocol version (1001), 3. system info (must say little-endian),
//! 4. the object itself (tensors as in [`super::pickle`]),
//! 5. the list of storage keys in the order their data follows,
//! 6. for each key: a little-endian i64 element count, then the raw little-endian elements.

use std::collections::HashMap;

use super::Tensor;
use super::pickle::{self, Kind, Parser, StorageType};

/// The magic number's 10 little-endian bytes (0x1950a86a20f9469cfc6c).
pub const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// True when `bytes` start like a legacy torch.save file.
pub fn sniff(bytes: &[u8]) -> bool {
    bytes.len() >= 14 && bytes[0] == 0x80 && bytes[2] == 0x8a && bytes[3] == 10 && bytes[4..14] == MAGIC
}

/// Reads every tensor of a legacy torch.save file, named by dotted dictionary keys.
pub fn read(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    let mut p = Parser::new(bytes);
    match p.load()?.kind() {
        Kind::BigInt(b) if b[..] == MAGIC => {}
        _ => return Err("not a legacy torch.save file (bad magic number)".into()),
    }
    match p.load()?.kind() {
        Kind::Int(1001) => {}
        _ => return Err("unsupported torch.save protocol version".into()),
    }
    if let Kind::Dict(items) = p.load()?.kind() {
        for (k, v) in items {
            if matches!((k.kind(), v.kind()), (Kind::Str(k), Kind::Bool(false)) if k == "little_endian") {
                return Err("big-endian torch.save files are not supported".into());
            }
        }
    }
    let root = p.load()?;
    let keys = p.load()?;
    let Kind::List(keys) = keys.kind() else { return Err("missing the storage key list".into()) };
    let tensors = pickle::tensors(&root)?;
    // Every storage's type, from the references in the object.
    let types: HashMap<&str, StorageType> =
        tensors.iter().map(|(_, t)| (t.storage.key.as_str(), t.storage.dtype)).collect();
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let Kind::Str(key) = key.kind() else { return Err("a storage key is not a string".into()) };
        let count = i64::from_le_bytes(p.take(8)?.try_into().unwrap());
        let dtype = types.get(key.as_str()).copied().unwrap_or(StorageType::U8);
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(dtype.size()))
            .ok_or_else(|| format!("storage {key} has an invalid size {count}"))?;
        let data = p.take(len).map_err(|_| format!("storage {key} is truncated"))?;
        storages.insert(key.clone(), data);
    }
    super::gather_all(tensors, |key| storages.get(key).copied().ok_or_else(|| format!("storage {key} is missing")))
}
