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
    let loaded = images
        .iter()
        .map(|name| if name == "-" { Ok(None) } else { image_io::load(Path::new(name)).map(Some) })
        .collect::<Result<Vec<Option<Image>>, _>>()?;
    let cells: Vec<Option<&Image>> = loaded.iter().map(Option::as_ref).collect();
    let sheet = image_io::contact_sheet(&cells, columns, cell, GAP);
    image_io::save(&sheet, Path::new(out))?;
    Ok(())
}
