//! Decoding untrusted bytes into an [`Image`], with every size checked before it is allocated.
//!
//! - The format is sniffed from the bytes (JPEG, PNG, WebP, TIFF, BMP, GIF), never taken from a
//!   file name.
//! - The headers are read first with a small allocation limit ([`MAX_METADATA_BYTES`]): a PNG
//!   whose colour profile inflates to gigabytes, say, fails there.
//! - The dimensions are checked against [`MAX_SIDE`] and [`MAX_PIXELS`], and the memory decoding
//!   will take ([`BYTES_PER_PIXEL`] a pixel) against the budget ([`crate::memory`], or the
//!   caller's), before any pixel is decoded; the decoder then runs with an allocation limit of
//!   what the pixels need.
//! - JPEG is decoded by zune-jpeg in strict mode, which rejects an incomplete or corrupt scan
//!   (a truncated download, bytes damaged in the entropy-coded data) instead of filling the rest
//!   with grey, as browsers and `image`'s lenient default do. libjpeg calls these "premature end
//!   of data segment" and "corrupt data" and so do careful tools: a stylized half-grey photo is
//!   not a result.
//! - An embedded ICC profile is honoured: the pixels are converted from it to sRGB
//!   ([`in_srgb`], by moxcms, the colour management `image` itself uses).
//! - Every message is one line.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::Image;
use crate::memory;

/// The longest side accepted (pixels).
pub const MAX_SIDE: u32 = 65_535;
/// The most pixels accepted (2^28: 16384 x 16384).
pub const MAX_PIXELS: u64 = 1 << 28;
/// What headers and metadata (colour profiles, EXIF, text) may allocate.
pub const MAX_METADATA_BYTES: u64 = 64 << 20;
/// Peak bytes a pixel while decoding: the decoded buffer (up to 16 for float RGBA), the planar
/// `f32` image (12), and an oriented or resized copy (12), with room to spare.
pub const BYTES_PER_PIXEL: u64 = 48;

/// The limits a decode runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The most pixels.
    pub max_pixels: u64,
    /// The most bytes decoding may take; `None`: the process's memory budget.
    pub max_bytes: Option<u64>,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_pixels: MAX_PIXELS, max_bytes: None }
    }
}

impl DecodeLimits {
    /// Checks a declared size before decoding.
    fn check(&self, w: u32, h: u32) -> Result<(), String> {
        if w == 0 || h == 0 {
            return Err(format!("the image has zero size ({w}x{h})"));
        }
        let pixels = w as u64 * h as u64;
        if w > MAX_SIDE || h > MAX_SIDE || pixels > self.max_pixels {
            return Err(format!(
                "the image is {w}x{h} pixels; impasto takes at most {} pixels ({MAX_SIDE} a side)",
                self.max_pixels
            ));
        }
        let need = pixels * BYTES_PER_PIXEL;
        let budget = self.max_bytes.or_else(memory::budget);
        if let Some(b) = budget
            && need > b
        {
            return Err(format!(
                "the image is {w}x{h} pixels; decoding it needs about {} but only {} of memory is available",
                memory::gib(need),
                memory::gib(b)
            ));
        }
        Ok(())
    }
}

/// Decodes `bytes` (any supported format) under `limits`. Errors are one line, without the
/// file's name (the caller adds it).
/// An image's size from its header alone (nothing is decoded), under the metadata limit.
pub fn header_size(bytes: &[u8]) -> Result<crate::size::Size, String> {
    let format = image::guess_format(bytes).map_err(|_| "not a recognised image file".to_string())?;
    if format == ImageFormat::Tiff {
        super::tiff_check::check(&mut Cursor::new(bytes), bytes.len() as u64)?;
    }
    let mut r = ImageReader::with_format(Cursor::new(bytes), format);
    let mut l = Limits::default();
    l.max_alloc = Some(MAX_METADATA_BYTES);
    r.limits(l);
    let (w, h) = r.into_dimensions().map_err(|e| decode_error("cannot read the header", &e))?;
    Ok(crate::size::Size::new(w as usize, h as usize))
}

pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Image, String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes), not an image".into());
    }
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| {
            matches!(
                f,
                ImageFormat::Jpeg
                    | ImageFormat::Png
                    | ImageFormat::WebP
                    | ImageFormat::Tiff
                    | ImageFormat::Bmp
                    | ImageFormat::Gif
            )
        })
        .ok_or("not a recognised image file (expected JPEG, PNG, WebP, TIFF, BMP or GIF)")?;
    if format == ImageFormat::Jpeg {
        return decode_jpeg(bytes, limits);
    }
    if format == ImageFormat::Tiff {
        // Every tag's claim within the file, before a TIFF reader sees it.
        super::tiff_check::check(&mut Cursor::new(bytes), bytes.len() as u64)?;
    }
    if format == ImageFormat::Png {
        check_png_palette(bytes)?;
    }
    let reader = |max_alloc: u64, sides: Option<u32>| {
        let mut r = ImageReader::with_format(Cursor::new(bytes), format);
        let mut l = Limits::default();
        l.max_image_width = sides;
        l.max_image_height = sides;
        l.max_alloc = Some(max_alloc);
        r.limits(l);
        r
    };
    // The header under a small allocation limit; the sides are checked here, with a message.
    let (w, h) =
        reader(MAX_METADATA_BYTES, None).into_dimensions().map_err(|e| decode_error("cannot read the header", &e))?;
    limits.check(w, h)?;
    let pixels = w as u64 * h as u64;
    let mut decoder = reader(pixels * 16 + MAX_METADATA_BYTES, Some(MAX_SIDE))
        .into_decoder()
        .map_err(|e| decode_error("cannot decode", &e))?;
    let icc = match format {
        // image's TIFF decoder gives no profile (0.25.10): read the tag itself.
        ImageFormat::Tiff => tiff::decoder::Decoder::new(Cursor::new(bytes))
            .and_then(|mut d| d.get_tag_u8_vec(tiff::tags::Tag::IccProfile))
            .ok(),
        _ => decoder.icc_profile().ok().flatten(),
    };
    let orientation = decoder.orientation().ok();
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| decode_error("cannot decode (truncated or corrupt?)", &e))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(in_srgb(super::from_dynamic(&img), icc.as_deref()))
}

/// Whether `profile` is sRGB's (colorants and curve parameters within ICC's fixed-point
/// rounding):
/// converting would only add the transform's rounding.
fn is_srgb(profile: &moxcms::ColorProfile, srgb: &moxcms::ColorProfile) -> bool {
    let near = |a: moxcms::Xyzd, b: moxcms::Xyzd| (a.x - b.x).abs() + (a.y - b.y).abs() + (a.z - b.z).abs() < 2e-3;
    near(profile.red_colorant, srgb.red_colorant)
        && near(profile.green_colorant, srgb.green_colorant)
        && near(profile.blue_colorant, srgb.blue_colorant)
        && [
            (&profile.red_trc, &srgb.red_trc),
            (&profile.green_trc, &srgb.green_trc),
            (&profile.blue_trc, &srgb.blue_trc),
        ]
        .iter()
        .all(|(a, b)| match (a, b) {
            (Some(moxcms::ToneReprCurve::Parametric(a)), Some(moxcms::ToneReprCurve::Parametric(b))) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() < 1e-4)
            }
            _ => false,
        })
}

/// `img` converted from the colour space its embedded ICC profile describes to sRGB, the space
/// the network was trained in and every output is tagged with (what a colour-managed viewer
/// shows: relative colorimetric, colours outside sRGB clipped). Without a profile, or with one
/// that does not parse or is not RGB (a grey or CMYK profile), the pixels are taken as sRGB, as
/// viewers do.
pub fn in_srgb(mut img: Image, icc: Option<&[u8]>) -> Image {
    let Some(profile) = icc.and_then(|p| moxcms::ColorProfile::new_from_slice(p).ok()) else { return img };
    let srgb = moxcms::ColorProfile::new_srgb();
    if profile.color_space != moxcms::DataColorSpace::Rgb || is_srgb(&profile, &srgb) {
        return img;
    }
    let options = moxcms::TransformOptions {
        rendering_intent: moxcms::RenderingIntent::RelativeColorimetric,
        ..Default::default()
    };
    let Ok(transform) = profile.create_transform_f32(moxcms::Layout::Rgb, &srgb, moxcms::Layout::Rgb, options) else {
        return img;
    };
    // A chunk of pixels at a time: interleaved copies of the whole image would double the memory.
    const CHUNK: usize = 1 << 16;
    let n = img.pixels();
    let (mut src, mut dst) = (Vec::with_capacity(3 * CHUNK), vec![0.0f32; 3 * CHUNK]);
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        src.clear();
        for i in start..end {
            src.extend((0..3).map(|c| img.data[c * n + i] / 255.0));
        }
        let out = &mut dst[..src.len()];
        if transform.transform(&src, out).is_err() {
            return img;
        }
        for (k, i) in (start..end).enumerate() {
            for c in 0..3 {
                img.data[c * n + i] = (out[3 * k + c] * 255.0).clamp(0.0, 255.0);
            }
        }
    }
    img
}

/// A decoder error as one line.
/// A PNG's palette (PLTE) holds whole RGB entries, 1 to 256 of them. The `png` crate (0.18.1)
/// panics on one that does not (found by the `image_decode` fuzzer): refused here first. Only
/// the chunk lengths are walked; a truncated file is left for the decoder to report.
fn check_png_palette(bytes: &[u8]) -> Result<(), String> {
    let mut at = 8usize;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        match &head[4..8] {
            b"PLTE" if len == 0 || len % 3 != 0 || len > 768 => {
                return Err(format!("corrupt PNG: a palette of {len} bytes (whole RGB entries, 1 to 256, expected)"));
            }
            b"IDAT" | b"IEND" => return Ok(()),
            _ => {}
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    Ok(())
}

fn decode_error(what: &str, e: &dyn std::fmt::Display) -> String {
    one_line(&format!("{what}: {e}"))
}

/// `s` with runs of whitespace (line breaks included) as single spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A JPEG through zune-jpeg in strict mode, with its EXIF orientation applied.
fn decode_jpeg(bytes: &[u8], limits: &DecodeLimits) -> Result<Image, String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| decode_error("cannot read the JPEG header", &format!("{e:?}")))?;
    let info = decoder.info().ok_or("cannot read the JPEG header")?;
    let (w, h) = (info.width as u32, info.height as u32);
    limits.check(w, h)?;
    super::jpeg_check::check(bytes).map_err(|e| format!("corrupt or truncated JPEG: {e}"))?;
    let orientation = decoder.exif().and_then(|e| Orientation::from_exif_chunk(e));
    let icc = decoder.icc_profile();
    let pixels = decoder.decode().map_err(|e| {
        decode_error("corrupt or truncated JPEG (the image data is incomplete or damaged)", &format!("{e:?}"))
    })?;
    if pixels.len() != 3 * w as usize * h as usize {
        return Err("corrupt JPEG: the decoded image has the wrong size".into());
    }
    let buf = image::RgbImage::from_raw(w, h, pixels).ok_or("corrupt JPEG: the decoded image has the wrong size")?;
    let mut img = DynamicImage::ImageRgb8(buf);
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(in_srgb(super::from_dynamic(&img), icc.as_deref()))
}

#[cfg(test)]
mod png_palette_tests {
    use super::*;

    fn png_with_palette(len: usize) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        let chunk = |b: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
            b.extend((data.len() as u32).to_be_bytes());
            b.extend(kind);
            b.extend(data);
            b.extend([0u8; 4]); // the CRC: the check runs before anything reads it
        };
        chunk(&mut b, b"IHDR", &[0, 0, 0, 24, 0, 0, 0, 18, 8, 3, 0, 0, 0]);
        chunk(&mut b, b"PLTE", &vec![7; len]);
        chunk(&mut b, b"IDAT", &[]);
        chunk(&mut b, b"IEND", &[]);
        b
    }

    #[test]
    fn a_palette_of_partial_entries_is_refused_before_the_png_crate_sees_it() {
        for len in [0, 2, 686, 771] {
            let err = decode(&png_with_palette(len), &DecodeLimits::default()).unwrap_err();
            assert!(err.contains(&format!("a palette of {len} bytes")), "{len}: {err}");
        }
        assert!(check_png_palette(&png_with_palette(768)).is_ok());
    }
}
