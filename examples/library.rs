//! impasto as a library: a sky in one style and the ground in another, with the content's
//! colours kept, coarse to fine.
//!
//!     cargo run --release --example library -- examples/tubingen.jpg examples/starry_night.jpg \
//!         examples/shipwreck.jpg examples/tubingen_sky.png out.png [SIZE]
//!
//! The mask is white where the first style goes (the sky); the second style gets its inverse.

use impasto::prelude::*;
use impasto::{Colour, Scales, StyleInput};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [content, sky_style, ground_style, sky_mask, out] = &args[..5] else {
        return Err("usage: library CONTENT SKY_STYLE GROUND_STYLE SKY_MASK OUT [SIZE]".into());
    };
    let size: usize = args.get(5).map_or(Ok(384), |s| s.parse())?;

    // The default network (fetched on first use) with max pooling.
    let net = Vgg::default_network()?;

    let load = Image::open;
    let sky = load(sky_mask)?;
    let ground = Image::new(sky.width, sky.height, sky.data.iter().map(|v| 255.0 - v).collect())?;

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
        temporal: Vec::new(),
    };
    let outcome = Stylizer::new(config)?.stylize(&net, &inputs, |p| {
        if p.iteration.is_multiple_of(20) {
            eprintln!(
                "scale {}/{} iteration {}/{}: loss {:.4e}",
                p.scale, p.scales, p.iteration, p.iterations, p.terms.total
            );
        }
    })?;
    outcome.image.save(out)?;
    eprintln!("wrote {out}");
    Ok(())
}
