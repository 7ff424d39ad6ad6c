//! impasto as a library: a sky in one style and the ground in another, with the content's
//! colours kept, coarse to fine.
//!
//!     cargo run --release --example library -- examples/tubingen.jpg examples/starry_night.jpg \
//!         examples/shipwreck.jpg examples/tubingen_sky.png out.png [SIZE]
//!
//! The mask is white where the first style goes (the sky); the second style gets its inverse.

use std::ops::ControlFlow;
use std::path::Path;

use impasto::colour::Colour;
use impasto::image_io::{self, Image};
use impasto::loss::StyleInput;
use impasto::transfer::{Inputs, Progress, Scales, StyleConfig, Stylizer};
use impasto::vgg::Vgg;
use impasto::weights;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [content, sky_style, ground_style, sky_mask, out] = &args[..5] else {
        return Err("usage: library CONTENT SKY_STYLE GROUND_STYLE SKY_MASK OUT [SIZE]".into());
    };
    let size: usize = args.get(5).map_or(Ok(384), |s| s.parse())?;

    // The default network (fetched on first use) with max pooling.
    let path = weights::fetch::ensure_default_weights(&mut |msg| eprintln!("{msg}"))?;
    let net = Vgg::new(weights::load(&path, None)?, Default::default());

    let load = |p: &String| image_io::load(Path::new(p));
    let sky = load(sky_mask)?;
    let ground = Image { data: sky.data.iter().map(|v| 255.0 - v).collect(), ..sky.clone() };

    let config = StyleConfig::default()
        .size(size)
        .iterations(200)
        .scales(Scales::List(vec![size / 2, size]))
        .colour(Colour::Keep);
    // Each style with the region it rules.
    let inputs = Inputs {
        content: load(content)?,
        styles: vec![
            StyleInput::new(load(sky_style)?).region_mask(sky),
            StyleInput::new(load(ground_style)?).region_mask(ground),
        ],
        start: None,
    };
    let outcome = Stylizer::new(config)?.stylize(&net, &inputs, &mut |p: &Progress| {
        if p.iteration.is_multiple_of(20) {
            eprintln!(
                "scale {}/{} iteration {}/{}: loss {:.4e}",
                p.scale, p.scales, p.iteration, p.iterations, p.terms.total
            );
        }
        ControlFlow::Continue(())
    })?;
    image_io::save(&outcome.image, Path::new(out))?;
    eprintln!("wrote {out}");
    Ok(())
}
