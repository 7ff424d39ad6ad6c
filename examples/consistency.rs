//! How steady and how styled painted clips are: for each work directory `impasto video` left,
//! the warping error between consecutive painted frames on the reliable pixels (E_warp, Lai et
//! al. 2018, with the flow of the input clip's own frames) and the mean style loss per frame
//! (the still-picture objective's style term at the frames' size: consistency must not come from
//! washing the style out) and content loss per frame (nor from losing the clip's own picture).
//! Prints one Markdown row per directory.
//!
//!     cargo run --release --example consistency -- STYLE WORK_DIR [WORK_DIR...]

use std::path::{Path, PathBuf};

use impasto::Scales;
use impasto::prelude::*;
use impasto::video::{FlowSettings, Gray, dense_flow, reliability, warping_error};

fn frames(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "png")).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [style, dirs @ ..] = &args[..] else {
        return Err("usage: consistency STYLE WORK_DIR [WORK_DIR...]".into());
    };
    let net = Vgg::default_network()?;
    let style = Image::open(style)?;
    println!("| work directory | frames | size | E_warp | style loss/frame | content loss/frame |");
    println!("|---|---|---|---|---|---|");
    for dir in dirs {
        let dir = Path::new(dir);
        let painted = frames(&dir.join("painted"));
        if painted.len() < 2 {
            return Err(format!("{}: fewer than two painted frames", dir.display()).into());
        }
        let (mut e_warp, mut style_loss, mut content_loss) = (0.0, 0.0, 0.0);
        let mut previous: Option<(Image, Image)> = None;
        for path in &painted {
            let out = Image::open(path)?;
            let input = Image::open(dir.join("frames").join(path.file_name().unwrap()))?;
            if let Some((before_in, before_out)) = &previous {
                let (now, before) = (Gray::from_image(&input), Gray::from_image(before_in));
                let backward = dense_flow(&now, &before, &FlowSettings::default());
                let forward = dense_flow(&before, &now, &FlowSettings::default());
                e_warp += warping_error(&out, before_out, &backward, &reliability(&backward, &forward));
            }
            let size = out.width.max(out.height);
            let terms = Stylizer::new(StyleConfig::default().size(size).scales(Scales::Off))?.score(
                &net,
                &Inputs::new(input.clone(), [style.clone()]),
                &out,
            )?;
            style_loss += terms.style;
            content_loss += terms.content;
            previous = Some((input, out));
        }
        let n = painted.len();
        let first = Image::open(&painted[0])?;
        println!(
            "| {} | {n} | {}x{} | {:.5} | {:.4e} | {:.4e} |",
            dir.display(),
            first.width,
            first.height,
            e_warp / (n - 1) as f64,
            style_loss / n as f64,
            content_loss / n as f64
        );
    }
    Ok(())
}
