//! The settings an output image carries: a PNG `iTXt` chunk, the TIFF `ImageDescription` tag or
//! JPEG comment (`COM`) segments, each holding the settings JSON of [`crate::settings`] and
//! marked with [`KEYWORD`], so that an image tells how it was made and can be replayed.
//!
//! Writing happens in [`super::encode`]; reading ([`read_settings`], [`read_settings_from`])
//! takes untrusted bytes and looks only at the metadata (no pixels are decoded), with every
//! length bounded before it is read or inflated: a PNG's compressed text inflates to at most
//! [`MAX_SETTINGS_BYTES`], JPEG comments add up to at most that, a TIFF's directories are checked
//! first ([`super::tiff_check`]). A file opened by path is read by seeking, never whole.

use std::io::{BufRead, Cursor, Read, Seek, SeekFrom};

use super::read_up_to;

/// The PNG keyword, and the prefix of a JPEG comment, that mark impasto's settings.
pub const KEYWORD: &str = "impasto-settings";

/// The longest settings an image may carry (a run's settings are a few kilobytes).
pub const MAX_SETTINGS_BYTES: usize = 1 << 20;

/// Bytes of metadata a PNG may hold before its image data, for the settings reader.
const PNG_METADATA_BYTES: usize = 8 << 20;

/// Bytes of settings one JPEG comment segment holds (a segment holds at most 65533).
const JPEG_CHUNK: usize = 60_000;

/// Whether `bytes` start like an image file in a format impasto reads.
pub fn is_image(bytes: &[u8]) -> bool {
    image::guess_format(bytes).is_ok()
}

/// The settings JSON embedded in a PNG, TIFF or JPEG file held in memory, if it has some; an
/// error for settings larger than [`MAX_SETTINGS_BYTES`] or metadata that claims more than the
/// file holds.
pub fn read_settings(bytes: &[u8]) -> Result<Option<String>, String> {
    read_settings_from(&mut Cursor::new(bytes), bytes.len() as u64)
}

/// [`read_settings`] on a reader of a file of `len` bytes (it seeks; it does not read it all).
pub fn read_settings_from<R: BufRead + Seek>(r: &mut R, len: u64) -> Result<Option<String>, String> {
    let io = |e: std::io::Error| format!("cannot read it: {e}");
    let mut head = [0u8; 16];
    let n = read_up_to(r, &mut head).map_err(io)?;
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let text = match image::guess_format(&head[..n]) {
        Ok(image::ImageFormat::Png) => read_png(r)?,
        Ok(image::ImageFormat::Tiff) => read_tiff(r, len)?,
        Ok(image::ImageFormat::Jpeg) => read_jpeg(r)?,
        _ => None,
    };
    Ok(text.filter(|t| t.trim_start().starts_with('{')))
}

fn too_long(what: &str) -> String {
    format!("{what} more than {MAX_SETTINGS_BYTES} bytes of settings: more than a run's settings can be")
}

fn read_png<R: BufRead + Seek>(r: &mut R) -> Result<Option<String>, String> {
    let mut decoder = png::Decoder::new_with_limits(r, png::Limits { bytes: PNG_METADATA_BYTES });
    decoder.set_ignore_text_chunk(false);
    let reader = match decoder.read_info() {
        Ok(reader) => reader,
        Err(png::DecodingError::LimitsExceeded) => {
            return Err(format!("its metadata is larger than the {PNG_METADATA_BYTES} bytes read"));
        }
        Err(_) => return Ok(None),
    };
    let Some(chunk) = reader.info().utf8_text.iter().find(|c| c.keyword == KEYWORD) else { return Ok(None) };
    let mut chunk = chunk.clone();
    chunk.decompress_text_with_limit(MAX_SETTINGS_BYTES).map_err(|_| too_long("its settings text inflates to"))?;
    let text = chunk.get_text().map_err(|_| "its settings text is not UTF-8".to_string())?;
    if text.len() > MAX_SETTINGS_BYTES {
        return Err(too_long("it carries"));
    }
    Ok(Some(text))
}

fn read_tiff<R: Read + Seek>(r: &mut R, len: u64) -> Result<Option<String>, String> {
    super::tiff_check::check(r, len)?;
    r.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let Ok(mut decoder) = tiff::decoder::Decoder::new(r) else { return Ok(None) };
    let Ok(text) = decoder.get_tag_ascii_string(tiff::tags::Tag::ImageDescription) else { return Ok(None) };
    if !text.contains("\"impasto\"") {
        return Ok(None);
    }
    if text.len() > MAX_SETTINGS_BYTES {
        return Err(too_long("it carries"));
    }
    Ok(Some(text))
}

/// The concatenated payloads of the comment segments marked with [`KEYWORD`], before the image
/// data starts; the other segments are skipped by seeking.
fn read_jpeg<R: Read + Seek>(r: &mut R) -> Result<Option<String>, String> {
    let mark = jpeg_mark();
    let mut out = Vec::new();
    let mut soi = [0u8; 2];
    if r.read_exact(&mut soi).is_err() {
        return Ok(None);
    }
    loop {
        let mut head = [0u8; 4];
        if r.read_exact(&mut head).is_err() || head[0] != 0xFF {
            break;
        }
        let marker = head[1];
        if marker == 0xDA || marker == 0xD9 {
            break; // start of scan, end of image
        }
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        if len < 2 {
            return Ok(None);
        }
        let payload = len - 2;
        if marker == 0xFE && payload >= mark.len() {
            let mut segment = vec![0u8; payload];
            if r.read_exact(&mut segment).is_err() {
                return Ok(None);
            }
            if let Some(text) = segment.strip_prefix(&mark[..]) {
                if out.len() + text.len() > MAX_SETTINGS_BYTES {
                    return Err(too_long("its comments hold"));
                }
                out.extend_from_slice(text);
            }
        } else if r.seek(SeekFrom::Current(payload as i64)).is_err() {
            return Ok(None);
        }
    }
    Ok(if out.is_empty() { None } else { String::from_utf8(out).ok() })
}

fn jpeg_mark() -> Vec<u8> {
    [KEYWORD.as_bytes(), b"\0"].concat()
}

/// Interleaved RGB samples of one bit depth.
pub(super) enum Samples {
    Eight(Vec<u8>),
    Sixteen(Vec<u16>),
}

/// The sRGB ICC profile every TIFF and JPEG output carries (PNG says sRGB with its `sRGB`
/// chunk).
fn srgb_profile() -> Vec<u8> {
    moxcms::ColorProfile::new_srgb().encode().unwrap_or_default()
}

/// A PNG of `samples`, marked sRGB, with `text` under [`KEYWORD`] and `dpi` in `pHYs`.
pub(super) fn png(
    width: u32,
    height: u32,
    samples: &Samples,
    text: Option<&str>,
    dpi: Option<f64>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_source_srgb(png::SrgbRenderingIntent::Perceptual);
    if let Some(dpi) = dpi {
        let per_metre = (dpi / 0.0254).round() as u32;
        encoder.set_pixel_dims(Some(png::PixelDimensions { xppu: per_metre, yppu: per_metre, unit: png::Unit::Meter }));
    }
    if let Some(text) = text {
        encoder.add_itxt_chunk(KEYWORD.to_string(), text.to_string()).map_err(|e| e.to_string())?;
    }
    let bytes: Vec<u8> = match samples {
        Samples::Eight(v) => {
            encoder.set_depth(png::BitDepth::Eight);
            v.clone()
        }
        Samples::Sixteen(v) => {
            encoder.set_depth(png::BitDepth::Sixteen);
            v.iter().flat_map(|s| s.to_be_bytes()).collect()
        }
    };
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&bytes).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// A TIFF of `samples` with the sRGB profile, `text` as its `ImageDescription` (non-ASCII
/// characters escaped as JSON `\u` escapes, since the tag is ASCII) and `dpi` as its resolution.
pub(super) fn tiff(
    width: u32,
    height: u32,
    samples: &Samples,
    text: Option<&str>,
    dpi: Option<f64>,
) -> Result<Vec<u8>, String> {
    use tiff::encoder::{ImageEncoder, Rational, TiffEncoder, TiffKind, colortype::ColorType};
    use tiff::tags::{ResolutionUnit, Tag};
    fn write<C: ColorType, K: TiffKind, W: std::io::Write + std::io::Seek>(
        mut image: ImageEncoder<'_, W, C, K>,
        data: &[C::Inner],
        text: Option<&str>,
        dpi: Option<f64>,
    ) -> tiff::TiffResult<()>
    where
        [C::Inner]: tiff::encoder::TiffValue,
    {
        if let Some(text) = text {
            image.encoder().write_tag(Tag::ImageDescription, ascii_json(text).as_str())?;
        }
        image.encoder().write_tag(Tag::Unknown(34675), &srgb_profile()[..])?;
        if let Some(dpi) = dpi {
            image.resolution(ResolutionUnit::Inch, Rational { n: (dpi * 100.0).round() as u32, d: 100 });
        }
        image.write_data(data)
    }
    let mut out = Cursor::new(Vec::new());
    let mut encoder = TiffEncoder::new(&mut out).map_err(|e| e.to_string())?;
    let written = match samples {
        Samples::Eight(v) => {
            let image =
                encoder.new_image::<tiff::encoder::colortype::RGB8>(width, height).map_err(|e| e.to_string())?;
            write(image, v, text, dpi)
        }
        Samples::Sixteen(v) => {
            let image =
                encoder.new_image::<tiff::encoder::colortype::RGB16>(width, height).map_err(|e| e.to_string())?;
            write(image, v, text, dpi)
        }
    };
    written.map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// A JPEG (quality 95) of 8-bit `rgb` with the sRGB profile, `dpi` as its density, and `text`
/// as comment segments.
pub(super) fn jpeg(
    width: u32,
    height: u32,
    rgb: &[u8],
    text: Option<&str>,
    dpi: Option<f64>,
) -> Result<Vec<u8>, String> {
    use image::ImageEncoder;
    use image::codecs::jpeg::{JpegEncoder, PixelDensity};
    let mut out = Vec::new();
    let mut encoder = JpegEncoder::new_with_quality(&mut out, 95);
    if let Some(dpi) = dpi {
        encoder.set_pixel_density(PixelDensity::dpi(dpi.round() as u16));
    }
    encoder.set_icc_profile(srgb_profile()).map_err(|e| e.to_string())?;
    encoder.write_image(rgb, width, height, image::ExtendedColorType::Rgb8).map_err(|e| e.to_string())?;
    Ok(match text {
        Some(text) => jpeg_with_text(&out, text),
        None => out,
    })
}

/// A JPEG file with `text` added as comment segments right after its first segment (SOI).
fn jpeg_with_text(jpeg: &[u8], text: &str) -> Vec<u8> {
    let mark = jpeg_mark();
    let mut out = Vec::with_capacity(jpeg.len() + text.len() + 64);
    out.extend_from_slice(&jpeg[..2]);
    for chunk in text.as_bytes().chunks(JPEG_CHUNK) {
        let len = (2 + mark.len() + chunk.len()) as u16;
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&mark);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// JSON text with every non-ASCII character written as a `\u` escape (valid because JSON has
/// non-ASCII characters only inside strings, where the escape means the same character).
fn ascii_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_io::{Image, OutputFormat, decode, encode_with};

    fn picture() -> Image {
        let data = (0..3 * 7 * 5).map(|i| (i * 11 % 256) as f32).collect();
        Image { width: 7, height: 5, data }
    }

    /// Every output format carries the text, reads back the same, and still decodes to the same
    /// pixels as without it.
    #[test]
    fn every_format_carries_settings() {
        let text =
            r#"{"impasto": "0.1.0", "content": "ph\u00f6to 📷.jpg", "big": "x"}"#.replace('x', &"x".repeat(700_000));
        let text = serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&text).unwrap()).unwrap();
        assert!(text.contains('ö') && text.contains('📷'));
        for format in [OutputFormat::Png, OutputFormat::Tiff, OutputFormat::Jpeg] {
            let with = encode_with(&picture(), format, Some(&text), Default::default()).unwrap();
            let without = encode_with(&picture(), format, None, Default::default()).unwrap();
            assert_eq!(read_settings(&without), Ok(None), "{format:?}");
            let read = read_settings(&with).unwrap().unwrap_or_else(|| panic!("{format:?}: no settings"));
            let parsed: serde_json::Value = serde_json::from_str(&read).unwrap();
            assert_eq!(parsed, serde_json::from_str::<serde_json::Value>(&text).unwrap(), "{format:?}");
            let limits = Default::default();
            assert_eq!(decode(&with, &limits).unwrap(), decode(&without, &limits).unwrap(), "{format:?}");
        }
    }

    #[test]
    fn foreign_metadata_is_not_taken_for_settings() {
        let jpeg = encode_with(&picture(), OutputFormat::Jpeg, None, Default::default()).unwrap();
        // Another program's comment, and a truncated segment.
        let mut other = jpeg[..2].to_vec();
        other.extend_from_slice(&[0xFF, 0xFE, 0, 7, b'h', b'e', b'l', b'l', b'o']);
        other.extend_from_slice(&jpeg[2..]);
        assert_eq!(read_settings(&other), Ok(None));
        assert_eq!(read_settings(&[0xFF, 0xD8, 0xFF, 0xFE, 0xFF, 0xFF, b'i']), Ok(None));
        assert_eq!(read_settings(b"{\"impasto\": 1}"), Ok(None));
        assert!(!is_image(b"{}") && is_image(&jpeg));
    }
}

#[cfg(test)]
mod bounds {
    use super::*;
    use crate::image_io::{Image, OutputFormat, encode_with};

    /// Settings larger than a run's can be are refused, however they are packed: a compressed
    /// PNG text that inflates past the bound (a bomb: a few kilobytes inflating to 16 MiB), an
    /// uncompressed one, JPEG comments adding up past it, a TIFF description; and a TIFF whose
    /// description claims more than the file holds.
    #[test]
    fn oversized_settings_are_refused_in_bounded_memory() {
        let image = Image::filled(4, 3, 10.0);
        let big = format!("{{\"impasto\": \"{}\"}}", "x".repeat(MAX_SETTINGS_BYTES + 10));
        // A compressed iTXt: PNG's encoder compresses text it is asked to.
        let mut bomb = Vec::new();
        {
            let mut e = png::Encoder::new(&mut bomb, 4, 3);
            e.set_color(png::ColorType::Rgb);
            let mut w = e.write_header().unwrap();
            let text = format!("{{\"a\": \"{}\"}}", "0".repeat(16 << 20));
            let mut chunk = png::text_metadata::ITXtChunk::new(KEYWORD, text);
            chunk.compressed = true;
            chunk.compress_text().unwrap();
            w.write_text_chunk(&chunk).unwrap();
            w.write_image_data(&[0; 36]).unwrap();
        }
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        let e = read_settings(&bomb).unwrap_err();
        assert!(e.contains("inflates to more than"), "{e}");
        for format in [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Tiff] {
            let with = encode_with(&image, format, Some(&big), Default::default()).unwrap();
            let e = read_settings(&with).unwrap_err();
            assert!(e.contains("more than 1048576 bytes of settings"), "{format:?}: {e}");
        }
    }
}
