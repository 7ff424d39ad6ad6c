//! The studio's work directory: uploaded images under `uploads/`, finished pictures under
//! `gallery/<id>/` (the image with its settings embedded, `settings.json`, `command.txt`,
//! `losses.json`). Every name is generated here ([`new_id`]); a client names a stored file only
//! by an id, which is checked to be one of ours before it touches the file system, so no request
//! can reach outside the directory.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A fresh random id: `prefix` and 16 hex digits from the operating system's generator.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", hex(&random_bytes::<8>()))
}

/// `N` bytes from the operating system's random generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random generator");
    b
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` has the shape [`new_id`] gives with `prefix` (and so names nothing else).
pub fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|h| h.len() == 16 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// One picture of the gallery, as the page lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GalleryEntry {
    pub id: String,
    /// `finished`, `converged`, `stopped`...
    pub stop: String,
    pub width: usize,
    pub height: usize,
    pub loss: f64,
    pub command: String,
}

/// The directories of a studio.
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Creates `root/uploads` and `root/gallery` if needed.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(root.join("uploads"))?;
        fs::create_dir_all(root.join("gallery"))?;
        Ok(Store { root: root.to_path_buf() })
    }

    /// The stored upload `id` (`u-...`), if it exists.
    pub fn upload(&self, id: &str) -> Option<PathBuf> {
        if !is_id(id, "u-") {
            return None;
        }
        let path = self.root.join("uploads").join(format!("{id}.img"));
        path.is_file().then_some(path)
    }

    /// Stores a bundled example under an id made from its name (the same at every start).
    pub fn add_example(&self, name: &str, bytes: &[u8]) -> crate::Result<String> {
        use sha2::Digest;
        let id = format!("u-{}", hex(&sha2::Sha256::digest(name.as_bytes())[..8]));
        let path = self.root.join("uploads").join(format!("{id}.img"));
        if !path.is_file() {
            crate::image_io::write_atomically(&path, bytes)?;
        }
        Ok(id)
    }

    /// Stores uploaded bytes (already checked to decode) under a new id.
    pub fn add_upload(&self, bytes: &[u8]) -> crate::Result<String> {
        let id = new_id("u-");
        crate::image_io::write_atomically(&self.root.join("uploads").join(format!("{id}.img")), bytes)?;
        Ok(id)
    }

    /// The directory of gallery entry `id` (`g-...`), if it exists.
    pub fn entry_dir(&self, id: &str) -> Option<PathBuf> {
        if !is_id(id, "g-") {
            return None;
        }
        let dir = self.root.join("gallery").join(id);
        dir.is_dir().then_some(dir)
    }

    /// A new, empty gallery directory.
    pub fn new_entry(&self) -> std::io::Result<(String, PathBuf)> {
        let id = new_id("g-");
        let dir = self.root.join("gallery").join(&id);
        fs::create_dir_all(&dir)?;
        Ok((id, dir))
    }

    /// Every complete entry (one whose `entry.json` was written last), newest first.
    pub fn gallery(&self) -> Vec<GalleryEntry> {
        let mut entries: Vec<(std::time::SystemTime, GalleryEntry)> = fs::read_dir(self.root.join("gallery"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let text = fs::read_to_string(e.path().join("entry.json")).ok()?;
                let modified = e.metadata().ok()?.modified().ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                let id = e.file_name().to_string_lossy().into_owned();
                is_id(&id, "g-").then(|| {
                    (
                        modified,
                        GalleryEntry {
                            id,
                            stop: v["stop"].as_str().unwrap_or("").to_string(),
                            width: v["width"].as_u64().unwrap_or(0) as usize,
                            height: v["height"].as_u64().unwrap_or(0) as usize,
                            loss: v["loss"].as_f64().unwrap_or(f64::NAN),
                            command: v["command"].as_str().unwrap_or("").to_string(),
                        },
                    )
                })
            })
            .collect();
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        entries.into_iter().map(|e| e.1).collect()
    }

    /// Removes gallery entry `id`; false if there is none.
    pub fn delete(&self, id: &str) -> bool {
        self.entry_dir(id).is_some_and(|dir| fs::remove_dir_all(dir).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ours_or_nothing() {
        let id = new_id("u-");
        assert!(is_id(&id, "u-") && !is_id(&id, "g-"));
        assert_ne!(id, new_id("u-"));
        for bad in ["u-../../etc/passwd", "u-", "u-0123456789abcdeg", "u-0123456789abcdef/..", "../u-0123456789abcdef"]
        {
            assert!(!is_id(bad, "u-"), "{bad}");
        }
    }
}
