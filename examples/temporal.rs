//! How much the temporal term steadies a clip: a pan across a photo (a window sliding 3 px
//! right and 1 px down a frame), painted frame by frame independently and with the temporal
//! term at several weights. Prints, per method, the warping error between consecutive painted
//! frames on the reliable pixels (E_warp, Lai et al. 2018, with the input clip's flow) and the
//! mean style loss per frame (consistency must not come from washing the style out).
//!
//!     cargo run --release --example temporal -- examples/tubingen.jpg examples/starry_night.jpg \
//!         [FRAMES=6] [SIZE=128] [ITERATIONS=100] [WEIGHTS=1e2,1e3,1e4]

use std::time::Instant;

use impasto::loss::temporal::TemporalTarget;
use impasto::prelude::*;
use impasto::video::{FlowSettings, Gray, dense_flow, reliability, warp, warping_error};
use impasto::{Init, Scales};

/// The `w` x `h` window of `img` at `(x0, y0)`.
fn crop(img: &Image, x0: usize, y0: usize, w: usize, h: usize) -> Image {
    let mut data = Vec::with_capacity(3 * w * h);
    for c in 0..3 {
        let plane = img.plane(c);
        for y in y0..y0 + h {
            data.extend_from_slice(&plane[y * img.width + x0..y * img.width + x0 + w]);
        }
    }
    Image { width: w, height: h, data }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [content, style] = &args[..2] else {
        return Err("usage: temporal CONTENT STYLE [FRAMES] [SIZE] [ITERATIONS] [WEIGHTS]".into());
    };
    let frames: usize = args.get(2).map_or(Ok(6), |s| s.parse())?;
    let size: usize = args.get(3).map_or(Ok(128), |s| s.parse())?;
    let iterations: usize = args.get(4).map_or(Ok(100), |s| s.parse())?;
    let weights: Vec<f64> =
        args.get(5).map_or("1e2,1e3,1e4", String::as_str).split(',').map(str::parse).collect::<Result<_, _>>()?;
    let net = Vgg::default_network()?;
    let style = Image::open(style)?;
    let (w, h) = (size, size * 3 / 4);
    let photo = impasto::image_io::resize_to_fit(&Image::open(content)?, w + 3 * frames + 8);
    if photo.height < h + frames {
        return Err("the photo is too wide for this clip".into());
    }
    let clip: Vec<Image> = (0..frames).map(|k| crop(&photo, 3 * k, k, w, h)).collect();
    // The input clip's flows and reliabilities, once: frame k to k-1 and back.
    let mut flows = vec![None];
    for k in 1..frames {
        let (now, before) = (Gray::from_image(&clip[k]), Gray::from_image(&clip[k - 1]));
        let backward = dense_flow(&now, &before, &FlowSettings::default());
        let forward = dense_flow(&before, &now, &FlowSettings::default());
        let c = reliability(&backward, &forward);
        flows.push(Some((backward, c)));
    }
    let config = StyleConfig::default().size(size).iterations(iterations).scales(Scales::Off);
    println!("{frames} frames of {w}x{h}, {iterations} iterations each");
    println!("{:<22} {:>12} {:>16} {:>10}", "method", "E_warp", "style loss/frame", "s/frame");
    for weight in std::iter::once(None).chain(weights.iter().copied().map(Some)) {
        let start = Instant::now();
        let mut painted: Vec<Image> = Vec::new();
        let mut style_loss = 0.0;
        for (k, frame) in clip.iter().enumerate() {
            let mut inputs = Inputs::new(frame.clone(), [style.clone()]);
            let mut config = config.clone();
            if let (Some(weight), Some((backward, c))) = (weight, &flows[k]) {
                let (warped, _) = warp(&painted[k - 1], backward);
                inputs.temporal = vec![TemporalTarget::new(warped.clone(), c.clone(), weight)?];
                inputs.start = Some(warped);
                config = config.init(Init::Image);
            }
            let stylizer = Stylizer::new(config)?;
            let out = stylizer.stylize(&net, &inputs, |_| ())?.image;
            // The still-picture terms only: the same measure for every method.
            style_loss += Stylizer::new(StyleConfig::default().size(size).scales(Scales::Off))?
                .score(&net, &Inputs::new(frame.clone(), [style.clone()]), &out)?
                .style;
            painted.push(out);
        }
        let e_warp: f64 = (1..frames)
            .map(|k| {
                let (backward, c) = flows[k].as_ref().unwrap();
                warping_error(&painted[k], &painted[k - 1], backward, c)
            })
            .sum::<f64>()
            / (frames - 1) as f64;
        let name = weight.map_or("independent".to_string(), |w| format!("temporal {w:e}"));
        let seconds = start.elapsed().as_secs_f64() / frames as f64;
        println!("{name:<22} {e_warp:>12.5} {:>16.4e} {seconds:>10.2}", style_loss / frames as f64);
    }
    Ok(())
}
