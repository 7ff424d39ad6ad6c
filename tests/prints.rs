//! Output for printing: 16-bit PNG and TIFF, the print resolution in the file, sRGB tags, and
//! input colour profiles converted to sRGB as a colour-managed viewer shows them.

use image::ImageEncoder;
use impasto::image_io::{self, Image, OutputFormat, WriteOptions};

use crate::util::*;

/// A 3x2 picture with levels between the 8-bit steps.
fn picture() -> Image {
    let data = (0..18).map(|i| (i as f32 * 14.3 + 0.37).min(255.0)).collect();
    Image { width: 3, height: 2, data }
}

#[test]
fn sixteen_bit_png_and_tiff_keep_the_levels_between_8_bit_steps() {
    let img = picture();
    let options = WriteOptions { sixteen_bit: true, dpi: Some(300.0) };
    for format in [OutputFormat::Png, OutputFormat::Tiff] {
        let bytes = image_io::encode_with(&img, format, Some("{}"), options).unwrap();
        let decoded = image::load_from_memory(&bytes).unwrap();
        let image::DynamicImage::ImageRgb16(rgb) = &decoded else { panic!("{format:?}: {:?}", decoded.color()) };
        let n = img.pixels();
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                let want = (img.data[c * n + i] as f64 * 65535.0 / 255.0).round() as u16;
                assert_eq!(px.0[c], want, "{format:?} pixel {i} channel {c}");
            }
        }
        // impasto reads its own 16-bit output back to within a 16-bit step.
        let back = image_io::load_bytes(&bytes, "out").unwrap();
        let worst = back.data.iter().zip(&img.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 0.01, "{format:?}: {worst}");
    }
    let err = image_io::encode_with(&img, OutputFormat::Jpeg, None, options).unwrap_err().to_string();
    assert!(err.contains("JPEG holds 8 bits"), "{err}");
}

#[test]
fn outputs_record_the_print_resolution_and_say_srgb() {
    let img = picture();
    let options = WriteOptions { sixteen_bit: false, dpi: Some(300.0) };
    // PNG: pHYs in pixels per metre, and the sRGB chunk.
    let png_bytes = image_io::encode_with(&img, OutputFormat::Png, None, options).unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(&png_bytes)).read_info().unwrap();
    let info = reader.info();
    let dims = info.pixel_dims.expect("pHYs");
    assert_eq!((dims.xppu, dims.yppu, dims.unit), (11811, 11811, png::Unit::Meter)); // 300 / 0.0254
    assert!(info.srgb.is_some(), "sRGB chunk");
    // TIFF: 300 per inch, and an ICC profile that is sRGB's.
    let tiff_bytes = image_io::encode_with(&img, OutputFormat::Tiff, None, options).unwrap();
    let mut tiff = tiff::decoder::Decoder::new(std::io::Cursor::new(&tiff_bytes)).unwrap();
    let x = match tiff.get_tag(tiff::tags::Tag::XResolution).unwrap() {
        tiff::decoder::ifd::Value::Rational(n, d) => n as f64 / d as f64,
        other => panic!("XResolution is {other:?}"),
    };
    assert!((x - 300.0).abs() < 1e-9, "{x}");
    assert_eq!(tiff.get_tag(tiff::tags::Tag::ResolutionUnit).unwrap().into_u16().unwrap(), 2); // inches
    let icc = tiff.get_tag_u8_vec(tiff::tags::Tag::IccProfile).unwrap();
    let profile = moxcms::ColorProfile::new_from_slice(&icc).unwrap();
    let srgb = moxcms::ColorProfile::new_srgb();
    assert_eq!(profile.red_colorant, srgb.red_colorant);
    assert_eq!(profile.blue_colorant, srgb.blue_colorant);
    // JPEG: the JFIF density, 300 dpi.
    let jpeg = image_io::encode_with(&img, OutputFormat::Jpeg, None, options).unwrap();
    let app0 = jpeg.windows(5).position(|w| w == b"JFIF\0").expect("JFIF");
    assert_eq!(jpeg[app0 + 7], 1, "density in dots per inch");
    assert_eq!(u16::from_be_bytes([jpeg[app0 + 8], jpeg[app0 + 9]]), 300);
}

/// sRGB's transfer function and its inverse, on 0..1.
fn srgb_to_linear(v: f64) -> f64 {
    if v <= 0.04045 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
}
fn linear_to_srgb(v: f64) -> f64 {
    let v = v.clamp(0.0, 1.0);
    if v <= 0.0031308 { 12.92 * v } else { 1.055 * v.powf(1.0 / 2.4) - 0.055 }
}

/// Display P3 (D65 white, sRGB's curve) to sRGB by the published matrices, computed here
/// independently of any colour-management library: P3 to XYZ, XYZ to linear sRGB, clipped.
fn p3_to_srgb(rgb: [f64; 3]) -> [f64; 3] {
    const P3_TO_XYZ: [[f64; 3]; 3] =
        [[0.4865709, 0.2656677, 0.1982173], [0.2289746, 0.6917385, 0.0792869], [0.0, 0.0451134, 1.0439444]];
    const XYZ_TO_SRGB: [[f64; 3]; 3] =
        [[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560], [0.0556434, -0.2040259, 1.0572252]];
    let lin = rgb.map(|v| srgb_to_linear(v / 255.0));
    let xyz: Vec<f64> = P3_TO_XYZ.iter().map(|r| (0..3).map(|k| r[k] * lin[k]).sum()).collect();
    let out: Vec<f64> = XYZ_TO_SRGB.iter().map(|r| (0..3).map(|k| r[k] * xyz[k]).sum()).collect();
    [0, 1, 2].map(|c| 255.0 * linear_to_srgb(out[c]))
}

/// A PNG and a TIFF tagged Display P3 are converted to sRGB on load, as a colour-managed viewer
/// shows them; the same pixels untagged are taken as sRGB.
#[test]
fn a_display_p3_image_is_converted_to_srgb_on_load() {
    let colours: [[u8; 3]; 4] = [[200, 100, 50], [30, 180, 90], [128, 128, 128], [250, 20, 240]];
    let (w, h) = (colours.len() as u32, 1);
    let raw: Vec<u8> = colours.iter().flatten().copied().collect();
    let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    let mut tagged_png = Vec::new();
    let mut encoder = image::codecs::png::PngEncoder::new(&mut tagged_png);
    encoder.set_icc_profile(p3.clone()).unwrap();
    encoder.write_image(&raw, w, h, image::ExtendedColorType::Rgb8).unwrap();
    let mut tagged_tiff = std::io::Cursor::new(Vec::new());
    let mut encoder = image::codecs::tiff::TiffEncoder::new(&mut tagged_tiff);
    encoder.set_icc_profile(p3).unwrap();
    encoder.write_image(&raw, w, h, image::ExtendedColorType::Rgb8).unwrap();
    for (name, bytes) in [("png", tagged_png), ("tiff", tagged_tiff.into_inner())] {
        let img = image_io::load_bytes(&bytes, name).unwrap();
        let n = img.pixels();
        for (i, c) in colours.iter().enumerate() {
            let want = p3_to_srgb(c.map(f64::from));
            for k in 0..3 {
                let got = img.data[k * n + i] as f64;
                assert!((got - want[k]).abs() < 1.0, "{name} colour {c:?} channel {k}: {got} vs {}", want[k]);
            }
        }
        // Saturated P3 colours lie outside sRGB: the first is visibly changed, not passed through.
        assert!((img.data[0] as f64 - 200.0).abs() > 10.0, "{name}: {}", img.data[0]);
    }
    let mut untagged = Vec::new();
    image::codecs::png::PngEncoder::new(&mut untagged).write_image(&raw, w, h, image::ExtendedColorType::Rgb8).unwrap();
    let img = image_io::load_bytes(&untagged, "png").unwrap();
    assert_eq!(img.data[0], 200.0);
}

/// `--print` sizes the output from a print size and records its resolution; `--depth 16` writes
/// 16 bits; both replay from the settings; bad values are one line naming the flag.
#[test]
fn print_and_depth_from_the_command_line() {
    let dir = tempdir();
    let (content, style) = (fixture("content.png"), fixture("style.png"));
    let weights = real_weights_path();
    let out = dir.path().join("print.png");
    let args = [
        "stylize",
        s(&content),
        s(&style),
        "-o",
        s(&out),
        "--print",
        "4x3in@20dpi",
        "--depth",
        "16",
        "--iterations",
        "2",
        "-q",
        "--weights",
        s(&weights),
    ];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let bytes = std::fs::read(&out).unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height, info.bit_depth), (80, 60, png::BitDepth::Sixteen));
    assert_eq!(info.pixel_dims.unwrap().xppu, 787); // 20 dpi
    let replay = String::from_utf8_lossy(&impasto(&["settings", s(&out)]).stdout).into_owned();
    assert!(replay.contains("--depth 16") && replay.contains("@20dpi"), "{replay}");
    for (name, extra, needle) in [
        ("bad.png", &["--print", "40x30cm"][..], "--print '40x30cm': give a print size as WxH(cm|mm|in)@Ndpi"),
        ("bad.png", &["--print", "40x30cm@0dpi"][..], "between 1 and 65535 dpi"),
        ("bad.jpg", &["--depth", "16"][..], "--depth is 16 bits, but JPEG holds 8 bits a channel"),
        ("bad.png", &["--depth", "12"][..], "--depth"),
    ] {
        let bad = dir.path().join(name);
        let mut args =
            vec!["stylize", s(&content), s(&style), "-o", s(&bad), "--iterations", "1", "--weights", s(&weights)];
        args.extend(extra);
        let o = impasto(&args);
        assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
        assert!(stderr(&o).contains(needle), "{}", describe(&args, &o));
        assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", describe(&args, &o));
        assert!(!bad.exists());
    }
}
