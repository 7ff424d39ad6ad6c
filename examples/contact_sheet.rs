//! Tiles images into a contact sheet: a grid of cells of one height, each image fitted into its
//! cell (aspect ratio kept, centred on white), with a white gap between cells.
//!
//!     cargo run --release --example contact_sheet -- OUT COLUMNS CELL IMAGE...
//!
//! `docs/make_corpus.sh` uses it for `docs/corpus.jpg`: the first row holds the style images, the
//! first column the content images, and each other cell the result for its row's content and
//! its column's style. `-` as an image leaves a cell empty.

use std::path::Path;

use impasto::image_io::{self, Image};

const GAP: usize = 6;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, columns, cell, images @ ..] = args.as_slice() else {
        return Err("usage: contact_sheet OUT COLUMNS CELL IMAGE...".into());
    };
    let (columns, cell): (usize, usize) = (columns.parse()?, cell.parse()?);
    if columns == 0 || cell == 0 || images.is_empty() {
        return Err("COLUMNS and CELL must be positive, and there must be images".into());
    }
    let rows = images.len().div_ceil(columns);
    let width = columns * cell + (columns + 1) * GAP;
    let height = rows * cell + (rows + 1) * GAP;
    let mut sheet = Image { width, height, data: vec![255.0; 3 * width * height] };
    for (k, name) in images.iter().enumerate() {
        if name == "-" {
            continue;
        }
        let img = image_io::load(Path::new(name))?;
        let scale = cell as f64 / img.width.max(img.height) as f64;
        let (w, h) = (
            ((img.width as f64 * scale).round() as usize).max(1),
            ((img.height as f64 * scale).round() as usize).max(1),
        );
        let small = image_io::resize(&img, w, h);
        let x0 = GAP + (k % columns) * (cell + GAP) + (cell - w) / 2;
        let y0 = GAP + (k / columns) * (cell + GAP) + (cell - h) / 2;
        for c in 0..3 {
            for y in 0..h {
                let src = &small.data[(c * h + y) * w..][..w];
                let dst = (c * height + y0 + y) * width + x0;
                sheet.data[dst..dst + w].copy_from_slice(src);
            }
        }
    }
    image_io::save(&sheet, Path::new(out))?;
    Ok(())
}
