//! The zip `torch.save` format (PyTorch 1.6 and later): an archive `NAME/data.pkl` (the object,
//! tensors as in [`super::pickle`], their storages named by persistent ids) and one entry
//! `NAME/data/KEY` of raw little-endian elements per storage. Read with the same hardened pickle
//! machine as the legacy format; each entry's size is checked before it is read.

use std::collections::HashMap;
use std::io::Read;

use super::Tensor;
use super::pickle::{self, Parser};

/// True when `bytes` start like a zip file.
pub fn sniff(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Reads every tensor of a zip torch.save file, named by dotted dictionary keys.
pub fn read(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| format!("not a valid zip file: {e}"))?;
    let pkl = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).and_then(|n| n.ok()).map(|n| n.to_string()))
        .find(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .ok_or("no data.pkl inside: not a torch.save zip file")?;
    let prefix = pkl.strip_suffix("data.pkl").unwrap_or_default().to_string();
    // An entry may inflate, but not past what a weights file can hold.
    let limit = (bytes.len() as u64).saturating_mul(4).max(1 << 20);
    let mut read_entry = |name: &str| -> Result<Vec<u8>, String> {
        let entry = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
        if entry.size() > limit {
            return Err(format!("{name} claims {} bytes, more than the file can hold", entry.size()));
        }
        let mut out = Vec::new();
        entry.take(limit + 1).read_to_end(&mut out).map_err(|e| format!("{name}: {e}"))?;
        if out.len() as u64 > limit {
            return Err(format!("{name} inflates past {limit} bytes"));
        }
        Ok(out)
    };
    let object = read_entry(&pkl)?;
    let root = Parser::new(&object).load()?;
    let tensors = pickle::tensors(&root)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for (_, t) in &tensors {
        if !storages.contains_key(&t.storage.key) {
            let data = read_entry(&format!("{prefix}data/{}", t.storage.key))?;
            storages.insert(t.storage.key.clone(), data);
        }
    }
    super::gather_all(tensors, |key| {
        storages.get(key).map(Vec::as_slice).ok_or_else(|| format!("storage {key} is missing"))
    })
}
