//! Synthetic motions whose flow is known exactly, to measure a flow's end-point error: a small
//! and a large pan, a pan with a change of brightness, a zoom, and a square moving over a still
//! background. The frames are drawn from a smooth random texture (value noise with periods of
//! 24, 12, 6 and 3 pixels), continuous in x and y so that sub-pixel motions are exact.

use super::flow::{Flow, Gray, bilinear};

/// A smooth random texture in 0..255, continuous in x and y.
pub struct Texture {
    octaves: Vec<(f32, f32, usize, Vec<f32>)>,
    margin: f32,
}

impl Texture {
    /// The texture of `seed`, defined for coordinates within `extent` pixels of the origin.
    pub fn new(seed: u32, extent: usize) -> Self {
        let mut s = seed.wrapping_mul(2654435761) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32
        };
        let octaves = [(24.0, 0.4), (12.0, 0.3), (6.0, 0.2), (3.0, 0.1)]
            .into_iter()
            .map(|(period, amplitude)| {
                let side = (2.0 * extent as f32 / period) as usize + 3;
                (period, amplitude, side, (0..side * side).map(|_| next()).collect())
            })
            .collect();
        Texture { octaves, margin: extent as f32 }
    }

    /// The value at `(x, y)`.
    pub fn at(&self, x: f32, y: f32) -> f32 {
        let value: f32 = self
            .octaves
            .iter()
            .map(|(period, amplitude, side, grid)| {
                amplitude * bilinear(grid, *side, *side, (x + self.margin) / period, (y + self.margin) / period)
            })
            .sum();
        255.0 * value
    }
}

/// A frame whose pixel `(x, y)` is `f(x, y)`.
pub fn frame(width: usize, height: usize, f: impl Fn(f32, f32) -> f32) -> Gray {
    let mut data = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            data.push(f(x as f32, y as f32));
        }
    }
    Gray { width, height, data }
}

/// Two frames and the flow between them.
pub struct Motion {
    /// What moves.
    pub name: &'static str,
    /// The first frame.
    pub from: Gray,
    /// The second frame.
    pub to: Gray,
    /// The exact flow from `from` to `to`.
    pub truth: Flow,
    /// The pixels where the flow is defined and measurable: landing at least 2 pixels inside
    /// the frame, and away from the moving square's edges (occlusions).
    pub mask: Vec<bool>,
}

/// The pixels whose displacement lands at least `margin` pixels inside the frame.
fn landing_inside(truth: &Flow, margin: f32) -> Vec<bool> {
    let (w, h) = (truth.width as f32, truth.height as f32);
    (0..truth.u.len())
        .map(|i| {
            let (x, y) = ((i % truth.width) as f32 + truth.u[i], (i / truth.width) as f32 + truth.v[i]);
            x >= margin && y >= margin && x <= w - 1.0 - margin && y <= h - 1.0 - margin
        })
        .collect()
}

/// The texture moved by `d` (with `brightness` added): `to(x + d) = from(x) + brightness`.
fn pan(name: &'static str, width: usize, height: usize, d: (f32, f32), brightness: f32) -> Motion {
    let t = Texture::new(7, width.max(height) + 64);
    let from = frame(width, height, |x, y| t.at(x, y));
    let to = frame(width, height, |x, y| t.at(x - d.0, y - d.1) + brightness);
    let truth = Flow::from_fn(width, height, |_, _| d);
    let mask = landing_inside(&truth, 2.0);
    Motion { name, from, to, truth, mask }
}

/// Every motion at `width` x `height`; displacements grow with the size (the large pan is 8%
/// of the width).
pub fn motions(width: usize, height: usize) -> Vec<Motion> {
    let scale = width as f32 / 160.0;
    let mut all = vec![
        pan("small pan", width, height, (3.6 * scale, -2.3 * scale), 0.0),
        pan("large pan", width, height, (12.5 * scale, 7.25 * scale), 0.0),
        pan("pan, brighter", width, height, (2.0 * scale, 1.5 * scale), 20.0),
    ];
    // A zoom by 6% about the centre: `to(c + s (x - c)) = from(x)`.
    let (cx, cy, s) = (width as f32 / 2.0, height as f32 / 2.0, 1.06f32);
    let t = Texture::new(11, width.max(height) + 64);
    let truth = Flow::from_fn(width, height, |x, y| ((s - 1.0) * (x - cx), (s - 1.0) * (y - cy)));
    all.push(Motion {
        name: "zoom",
        from: frame(width, height, |x, y| t.at(x, y)),
        to: frame(width, height, |x, y| t.at(cx + (x - cx) / s, cy + (y - cy) / s)),
        mask: landing_inside(&truth, 2.0),
        truth,
    });
    // A square of a quarter of the height moving by (6, 4) * scale over a still background.
    let side = (height as f32 / 4.0).max(4.0);
    let (p, d) = ((width as f32 / 4.0, height as f32 / 4.0), (6.0 * scale, 4.0 * scale));
    let q = (p.0 + d.0, p.1 + d.1);
    let (back, front) = (Texture::new(3, width.max(height) + 64), Texture::new(5, width.max(height) + 64));
    let in_square = |x: f32, y: f32, at: (f32, f32)| x >= at.0 && x < at.0 + side && y >= at.1 && y < at.1 + side;
    let draw = |at: (f32, f32)| {
        frame(width, height, |x, y| if in_square(x, y, at) { front.at(x - at.0, y - at.1) } else { back.at(x, y) })
    };
    // Away from the square's edges in either frame: occlusions, and patches straddling them.
    let m = 5.0;
    let near_edge = |x: f32, y: f32, at: (f32, f32)| {
        x > at.0 - m
            && x < at.0 + side + m
            && y > at.1 - m
            && y < at.1 + side + m
            && !(x > at.0 + m && x < at.0 + side - m && y > at.1 + m && y < at.1 + side - m)
    };
    let mask = (0..width * height)
        .map(|i| ((i % width) as f32, (i / width) as f32))
        .map(|(x, y)| !near_edge(x, y, p) && !near_edge(x, y, q))
        .collect();
    all.push(Motion {
        name: "moving square",
        from: draw(p),
        to: draw(q),
        truth: Flow::from_fn(width, height, |x, y| if in_square(x, y, p) { d } else { (0.0, 0.0) }),
        mask,
    });
    all
}
