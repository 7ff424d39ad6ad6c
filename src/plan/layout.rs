//! Fitting one scale into the memory: its peak estimated from the backend's figures
//! ([`scale_memory`]), and the choice of tiles and L-BFGS history ([`fit`]): the whole image if
//! it fits, else (with `tile` auto) the largest tiles that do; with a fitted history the most
//! pairs up to the configured number that fit, preferring tiles to fewer than
//! [`PREFERRED_MIN_HISTORY`] pairs. What is chosen automatically leaves a tenth of the memory
//! spare (for the estimate's error and whatever else runs); what is asked for gets it all.

use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::memory::gib;
use crate::size::Size;
use crate::tiles::{TileGrid, Tiling};
use crate::transfer::StyleConfig;

/// A history fitted to the memory keeps at least this many pairs before the objective is tiled
/// instead, and at least [`MIN_FITTED_HISTORY`] at all.
pub const PREFERRED_MIN_HISTORY: usize = 20;
/// The fewest pairs a fitted history keeps.
pub const MIN_FITTED_HISTORY: usize = 5;
/// What the process holds whatever the size: the program, the weights as loaded, the thread
/// pool (measured: the peaks at 512, 2048 and tiled 2048 px run 0.2-0.25 GiB above the rest
/// of the estimate).
const PROCESS_BASELINE: u64 = 256 << 20;
/// The tile sides `tile` auto tries when the whole image does not fit, largest first.
pub const AUTO_TILES: [usize; 10] = [4096, 3072, 2048, 1536, 1024, 768, 512, 384, 256, 128];

/// What one scale holds: its size, its style images' sizes, how many styles have region masks,
/// and the L-BFGS history wanted (and whether it may be fitted), `None` with Adam or scoring.
pub struct Shape<'a> {
    /// The image's size.
    pub size: Size,
    /// Its style images' sizes.
    pub styles: &'a [Size],
    /// How many styles have a region mask.
    pub regions: usize,
    /// The L-BFGS history wanted and whether it may be fitted; `None` with Adam or scoring.
    pub history: Option<(usize, bool)>,
}

/// The tiles an evaluation of a scale of `size` in tiles of `tile` runs on.
pub fn grid(config: &StyleConfig, net: &dyn Backend, size: Size, tile: Option<usize>) -> Result<TileGrid> {
    Ok(TileGrid::new(size, tile, net.halo(&config.loss.layers())?))
}

/// Peak bytes of one scale: the images, and the larger of a style image's pass (one at a time,
/// while the targets are computed) and the evaluator in tiles of `tile` with the optimizer
/// (`history` L-BFGS pairs, or Adam's moments). Saturates rather than wraps. An
/// [`Error::Memory`] where the backend cannot evaluate that way at all.
pub fn scale_memory(
    config: &StyleConfig,
    net: &dyn Backend,
    shape: &Shape<'_>,
    tile: Option<usize>,
    history: Option<usize>,
) -> Result<u64> {
    let grid = grid(config, net, shape.size, tile)?;
    let image = 12u64.saturating_mul(shape.size.pixels() as u64);
    let optimizer = match history {
        // The pairs, the iterate, its gradient, the direction and the best image so far.
        Some(h) => (2 * h as u64 + 6).saturating_mul(image),
        None if shape.history.is_some() => 4 * image,
        None => 0,
    };
    let mut style = 0u64;
    let layers = &config.loss.style_layers;
    if !shape.styles.is_empty() && !layers.is_empty() {
        let halo = net.halo(layers)?;
        for &s in shape.styles {
            // A style image larger than any image may be is refused by name once the layout has
            // said what the run would need; here it counts as one of the largest size (its real
            // need is more), so that no product of absurd sides wraps.
            let most = crate::transfer::MAX_SIZE;
            let s = Size::new(s.width.min(most), s.height.min(most));
            let pass_size = TileGrid::new(s, tile, halo).largest_outer();
            let pass = net.memory_estimate(pass_size, layers)?;
            style = style.max(pass.saturating_add(12u64.saturating_mul(s.pixels() as u64)));
        }
    }
    // The style images' passes come before the optimizer's state exists: the peak is the
    // larger of the two (measured: 8.0 GiB at 2048x1536, against 7.9 estimated this way).
    let evaluation = net.evaluator_memory(&config.loss, &grid, shape.regions)?.saturating_add(optimizer);
    let targets = targets_memory(config, net, shape)?;
    Ok(evaluation.max(style).saturating_add(targets).saturating_add(4 * image).saturating_add(PROCESS_BASELINE))
}

/// Bytes the style targets hold: each style's moments at every style layer (`C x C` in f64) and
/// each group's target (the blended matrix, and each member's, in f32).
fn targets_memory(config: &StyleConfig, net: &dyn Backend, shape: &Shape<'_>) -> Result<u64> {
    let styles = shape.styles.len() as u64;
    let groups = if shape.regions > 0 { styles } else { 1 };
    let mut squares = 0u64;
    for &layer in &config.loss.style_layers {
        let (c, _, _) = net.shape(layer, shape.size)?;
        squares = squares.saturating_add((c * c + c) as u64);
    }
    Ok(squares.saturating_mul(12 * styles + 8 * groups))
}

/// The tile side, the L-BFGS history and the estimated peak of one scale within `budget`.
pub fn fit(
    config: &StyleConfig,
    net: &dyn Backend,
    shape: &Shape<'_>,
    budget: Option<u64>,
) -> Result<(Option<usize>, Option<usize>, u64)> {
    let long = shape.size.long_side();
    let tiles: Vec<Option<usize>> = match config.tile {
        Tiling::Off => vec![None],
        Tiling::Side(t) => vec![Some(t)],
        Tiling::Auto => {
            std::iter::once(None).chain(AUTO_TILES.iter().filter(|&&t| t < long).map(|&t| Some(t))).collect()
        }
    };
    let (history, fit) = match shape.history {
        Some((h, fit)) => (Some(h), fit),
        None => (None, false),
    };
    // A layout the backend cannot run at all (a buffer larger than a device allows) does not
    // fit, whatever the memory; its reason is kept for the message.
    let mut impossible: Option<Error> = None;
    let mut need = |tile, history| match scale_memory(config, net, shape, tile, history) {
        Err(e @ Error::Memory { .. }) => {
            impossible.get_or_insert(e);
            Ok(u64::MAX)
        }
        other => other,
    };
    let share = if fit || config.tile == Tiling::Auto { 0.9 } else { 1.0 };
    let fits = |bytes: u64| bytes != u64::MAX && budget.is_none_or(|b| bytes as f64 <= share * b as f64);
    let floors: &[usize] = if fit { &[PREFERRED_MIN_HISTORY, MIN_FITTED_HISTORY] } else { &[0] };
    let mut smallest = u64::MAX;
    for &floor in floors {
        for &tile in &tiles {
            let history = match history {
                Some(most) if fit => {
                    let least = floor.min(most);
                    let at_least = need(tile, Some(least))?;
                    if !fits(at_least) {
                        smallest = smallest.min(at_least);
                        continue;
                    }
                    // The most pairs in least..=most that fit (memory grows with pairs).
                    let (mut lo, mut hi) = (least, most);
                    while lo < hi {
                        let mid = lo + (hi - lo).div_ceil(2);
                        if fits(need(tile, Some(mid))?) { lo = mid } else { hi = mid - 1 }
                    }
                    Some(lo)
                }
                h => h,
            };
            let bytes = need(tile, history)?;
            smallest = smallest.min(bytes);
            if fits(bytes) {
                let whole = grid(config, net, shape.size, tile)?.is_whole();
                return Ok((tile.filter(|_| !whole), history, bytes));
            }
        }
    }
    if smallest == u64::MAX
        && let Some(e) = impossible
    {
        return Err(e);
    }
    let avail = budget.unwrap_or(0);
    let least = history.map(|h| if fit { h.min(MIN_FITTED_HISTORY) } else { h });
    let last_tile = tiles[tiles.len() - 1];
    let without_styles =
        scale_memory(config, net, &Shape { styles: &[], ..*shape }, last_tile, least).unwrap_or(u64::MAX);
    let lower: &[&str] = if smallest > 2 * without_styles.min(u64::MAX / 2) {
        &["style_scale", "size"]
    } else if history.is_some() {
        &["size", "optimizer.lbfgs.history"]
    } else {
        &["size"]
    };
    Err(Error::Memory {
        message: format!(
            "a {} run needs about {} of memory but only {} is available",
            shape.size,
            gib(smallest),
            gib(avail),
        ),
        lower: lower.iter().map(|f| f.to_string()).collect(),
    })
}
