//! Cutting an image into tiles whose interiors' features are exactly the whole image's, so that
//! an objective can be evaluated at any size in the memory of one tile.
//!
//! A stack of 3x3 convolutions (zero padded) and 2x2 poolings computes each output position from
//! a bounded window of pixels. Cut a tile out of an image and only the positions near its cut
//! edges change (they see zeros where the image had pixels): a *halo* of that width around the
//! tile's interior absorbs them, and with the tile's origin on the grid of the deepest pooling
//! (16 px up to block 5) every interior position's features, at every layer, are those of the
//! whole image. Where a tile meets the image's own edge nothing is cut and it needs no halo.
//!
//! The interiors partition the image at every layer's resolution (odd rows and columns dropped
//! by pooling fall outside the last tiles exactly as they fall outside the image), so sums over
//! positions (Gram matrices, means, the content loss) are the sums of the tiles' interior sums,
//! and the gradient of the loss with respect to the pixels is the sum of the tiles' gradients,
//! each added back where its tile (halo included) came from. [`crate::loss::Objective`] does
//! that; this module owns only the geometry.

use std::borrow::Cow;

use crate::size::Size;

/// How a run is cut into tiles (`--tile`, `tile` in the settings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tiling {
    /// The whole image when it fits in memory, else the largest tiles that do.
    #[default]
    Auto,
    /// Never tile.
    Off,
    /// Tiles of this many pixels a side (their interiors; rounded up to the pooling grid).
    Side(usize),
}

impl std::str::FromStr for Tiling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Tiling::Auto),
            "off" => Ok(Tiling::Off),
            n => match n.parse::<usize>() {
                Ok(side) if side >= MIN_TILE => Ok(Tiling::Side(side)),
                _ => Err(format!("'{s}' is not auto, off or a tile side of at least {MIN_TILE} pixels")),
            },
        }
    }
}

/// The smallest tile side `--tile` takes: below it the halos cost many times the interior.
pub const MIN_TILE: usize = 64;

/// A rectangle of positions: `x..x+width` by `y..y+height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl Rect {
    /// This rectangle of pixels at a layer `pools` poolings down (origins on the pooling grid).
    fn at_level(self, pools: usize) -> Rect {
        let (x1, y1) = ((self.x + self.width) >> pools, (self.y + self.height) >> pools);
        let (x, y) = (self.x >> pools, self.y >> pools);
        Rect { x, y, width: x1 - x, height: y1 - y }
    }

    /// Positions covered.
    pub fn area(&self) -> usize {
        self.width * self.height
    }

    /// Its width and height.
    pub fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

/// The width of the halo a network needs and the grid tile origins must lie on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halo {
    /// Pixels around an interior (a multiple of `align`).
    pub pixels: usize,
    /// Tile origins are multiples of this (2^poolings before the deepest layer).
    pub align: usize,
}

impl Halo {
    /// The halo of a stack of `stages` (`true` a 3x3 convolution, `false` a 2x2 pooling), up to
    /// the deepest layer used: each convolution spoils one more position next to a cut edge, each
    /// pooling halves (rounding up) the spoiled positions.
    pub fn of(stages: impl IntoIterator<Item = bool>) -> Halo {
        let (mut spoiled, mut pools) = (0usize, 0usize);
        for conv in stages {
            if conv {
                spoiled += 1;
            } else {
                spoiled = spoiled.div_ceil(2);
                pools += 1;
            }
        }
        Halo { pixels: spoiled << pools, align: 1 << pools }
    }
}

/// One tile: the pixels it is computed on and the interior whose positions it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Interior and halo, clipped to the image.
    pub outer: Rect,
    /// The positions this tile counts (the interiors partition the image).
    pub interior: Rect,
}

/// Where a tile's interior lies at one layer, in the tile's activation and in the whole image's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The tile's activation: its width and height at this layer.
    pub tile_width: usize,
    /// The tile's activation height at this layer.
    pub tile_height: usize,
    /// The interior in the tile's activation.
    pub local: Rect,
    /// The interior in the whole image's activation.
    pub global: Rect,
}

impl Tile {
    /// This tile at a layer `pools` poolings down.
    pub fn window(&self, pools: usize) -> Window {
        let outer = self.outer.at_level(pools);
        let global = self.interior.at_level(pools);
        let local = Rect { x: global.x - outer.x, y: global.y - outer.y, ..global };
        Window { tile_width: outer.width, tile_height: outer.height, local, global }
    }
}

/// An image's tiles, row by row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileGrid {
    /// The image's size.
    pub size: Size,
    /// Its tiles, row by row, covering it exactly.
    pub tiles: Vec<Tile>,
}

impl TileGrid {
    /// One tile, the whole image.
    pub fn whole(size: Size) -> TileGrid {
        let all = Rect { x: 0, y: 0, width: size.width, height: size.height };
        TileGrid { size, tiles: vec![Tile { outer: all, interior: all }] }
    }

    /// Tiles whose interiors are at most `side` (rounded up to `halo.align`) a side, spread
    /// evenly over each axis, each with `halo` around it where it is cut. `None` tiles nothing.
    pub fn new(size: Size, side: Option<usize>, halo: Halo) -> TileGrid {
        let Some(side) = side else { return TileGrid::whole(size) };
        let (width, height) = (size.width, size.height);
        let side = side.max(1).next_multiple_of(halo.align);
        let cuts = |len: usize| -> Vec<(usize, usize)> {
            // n interiors of whole grid cells, as even as the grid allows.
            let n = len.div_ceil(side).max(1);
            let cells = len.div_ceil(halo.align);
            let (base, extra) = (cells / n, cells % n);
            let mut bounds: Vec<usize> = (0..n).map(|i| (halo.align * (i * base + i.min(extra))).min(len)).collect();
            bounds.push(len);
            bounds.dedup();
            bounds.windows(2).map(|w| (w[0], w[1])).collect()
        };
        let (xs, ys) = (cuts(width), cuts(height));
        let mut tiles = Vec::with_capacity(xs.len() * ys.len());
        for &(y0, y1) in &ys {
            for &(x0, x1) in &xs {
                let (ox, oy) = (x0.saturating_sub(halo.pixels), y0.saturating_sub(halo.pixels));
                let (ox1, oy1) = ((x1 + halo.pixels).min(width), (y1 + halo.pixels).min(height));
                tiles.push(Tile {
                    outer: Rect { x: ox, y: oy, width: ox1 - ox, height: oy1 - oy },
                    interior: Rect { x: x0, y: y0, width: x1 - x0, height: y1 - y0 },
                });
            }
        }
        TileGrid { size, tiles }
    }

    /// The largest tile (interior and halo), as a size that holds each tile.
    pub fn largest_outer(&self) -> Size {
        let w = self.tiles.iter().map(|t| t.outer.width).max().unwrap_or(0);
        let h = self.tiles.iter().map(|t| t.outer.height).max().unwrap_or(0);
        Size::new(w, h)
    }

    /// Whether this is one tile, the whole image.
    pub fn is_whole(&self) -> bool {
        self.tiles.len() == 1
    }
}

/// The `rect` of `c` planes of `width` columns (borrowed when it is all of them).
pub fn crop(planes: &[f32], c: usize, width: usize, rect: Rect) -> Cow<'_, [f32]> {
    let height = planes.len() / (c * width).max(1);
    if rect == (Rect { x: 0, y: 0, width, height }) {
        return Cow::Borrowed(planes);
    }
    let mut out = Vec::with_capacity(c * rect.area());
    for plane in planes.chunks_exact(width * height).take(c) {
        for y in rect.y..rect.y + rect.height {
            out.extend_from_slice(&plane[y * width + rect.x..y * width + rect.x + rect.width]);
        }
    }
    Cow::Owned(out)
}

/// Adds `src` (`c` planes of `rect`'s size) into `rect` of `dst` (`c` planes of `width`
/// columns).
pub fn add_into(dst: &mut [f32], c: usize, width: usize, rect: Rect, src: &[f32]) {
    let height = dst.len() / (c * width).max(1);
    for (k, plane) in dst.chunks_exact_mut(width * height).take(c).enumerate() {
        let from = &src[k * rect.area()..(k + 1) * rect.area()];
        for (row, y) in (rect.y..rect.y + rect.height).enumerate() {
            let d = &mut plane[y * width + rect.x..y * width + rect.x + rect.width];
            d.iter_mut().zip(&from[row * rect.width..(row + 1) * rect.width]).for_each(|(a, b)| *a += b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VGG19 up to relu5_1: 2 convs, pool, 2, pool, 4, pool, 4, pool, 1.
    fn vgg_to_block5() -> Halo {
        let blocks = [2, 2, 4, 4];
        let mut stages = Vec::new();
        for n in blocks {
            stages.extend(std::iter::repeat_n(true, n));
            stages.push(false);
        }
        stages.push(true);
        Halo::of(stages)
    }

    #[test]
    fn the_halo_of_vgg19_counts_spoiled_positions_by_hand() {
        // conv1: 1, 2; pool 1; conv2: 2, 3; pool 2; conv3: 6; pool 3; conv4: 7; pool 4; conv5_1: 5.
        assert_eq!(vgg_to_block5(), Halo { pixels: 5 * 16, align: 16 });
        assert_eq!(Halo::of([true, true]), Halo { pixels: 2, align: 1 });
        assert_eq!(Halo::of([true, false, false]), Halo { pixels: 4, align: 4 });
    }

    #[test]
    fn interiors_partition_the_image_at_every_level() {
        let halo = vgg_to_block5();
        for (w, h, side) in [(333, 201, 100), (64, 64, 64), (1000, 17, 256), (97, 300, 64)] {
            let grid = TileGrid::new(Size::new(w, h), Some(side), halo);
            for pools in 0..=4 {
                let (lw, lh) = (w >> pools, h >> pools);
                let mut count = vec![0u8; lw * lh];
                for t in &grid.tiles {
                    assert_eq!(t.outer.x % halo.align, 0);
                    assert_eq!(t.outer.y % halo.align, 0);
                    let win = t.window(pools);
                    for y in 0..win.global.height {
                        for x in 0..win.global.width {
                            count[(win.global.y + y) * lw + win.global.x + x] += 1;
                        }
                    }
                    // The interior lies inside the tile with the halo's room where it is cut.
                    assert!(win.local.x + win.local.width <= win.tile_width);
                    assert!(win.local.y + win.local.height <= win.tile_height);
                    assert_eq!(win.tile_width, (t.outer.x + t.outer.width) / (1 << pools) - t.outer.x / (1 << pools));
                    if t.interior.x > 0 {
                        assert!(t.interior.x - t.outer.x >= halo.pixels.min(t.interior.x));
                    }
                }
                assert!(count.iter().all(|&c| c == 1), "{w}x{h} tiles of {side} at level {pools}");
            }
            assert!(grid.tiles.iter().all(|t| t.interior.width <= side.next_multiple_of(16)));
        }
    }

    #[test]
    fn crop_and_add_into_are_inverse() {
        let (c, w, h) = (2, 5, 4);
        let planes: Vec<f32> = (0..c * w * h).map(|i| i as f32).collect();
        let rect = Rect { x: 1, y: 2, width: 3, height: 2 };
        let part = crop(&planes, c, w, rect);
        assert_eq!(&part[..3], &[11.0, 12.0, 13.0]);
        assert_eq!(part[6], 31.0);
        let mut sum = vec![0.0; c * w * h];
        add_into(&mut sum, c, w, rect, &part);
        for (i, v) in sum.iter().enumerate() {
            let (x, y) = (i % w, (i / w) % h);
            let inside = (1..4).contains(&x) && (2..4).contains(&y);
            assert_eq!(*v, if inside { planes[i] } else { 0.0 });
        }
        assert!(matches!(crop(&planes, c, w, Rect { x: 0, y: 0, width: w, height: h }), Cow::Borrowed(_)));
    }

    #[test]
    fn tiling_parses() {
        assert_eq!("auto".parse::<Tiling>(), Ok(Tiling::Auto));
        assert_eq!("off".parse::<Tiling>(), Ok(Tiling::Off));
        assert_eq!("512".parse::<Tiling>(), Ok(Tiling::Side(512)));
        assert!("12".parse::<Tiling>().unwrap_err().contains("at least 64"));
        assert!("big".parse::<Tiling>().is_err());
    }
}
