//! A photo painted after a painting, the way a newcomer writes it: the default network
//! (fetched once), two images, one call, one file.
//!
//!     cd examples/first-painting
//!     cargo run --release -- ../tubingen.jpg ../starry_night.jpg out.png

use impasto::prelude::*;

fn main() -> impasto::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [photo, painting, out] = &args[..] else {
        eprintln!("usage: first-painting PHOTO PAINTING OUT.png");
        std::process::exit(2);
    };
    let net = Vgg::default_network()?;
    let config = StyleConfig::default().size(384).iterations(300);
    impasto::stylize(&net, &Image::open(photo)?, &Image::open(painting)?, &config)?.save(out)
}
