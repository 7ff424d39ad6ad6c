//! The objective's evaluation, written once over any [`Engine`]: an [`ObjectiveSpec`]'s terms
//! at an image, in tiles, with their gradient with respect to the pixels.
//!
//! It is evaluated on the whole image or, to bound the memory at print sizes, tile by tile
//! (geometry in [`crate::tiles`]): a first pass over the tiles sums the content loss and each
//! style group's [`Moments`] over the tiles' interiors; the terms and their
//! [`FeatureGradient`]s follow from the sums (on the host, for every engine); with
//! `normalize_gradients` a pass sums each term's layer-gradient L1 norm; a second pass
//! back-propagates each tile's share with those global statistics and adds its pixel gradient
//! into the image's. Both give the same numbers as the whole image (tested to 1e-5); one tile is
//! the untiled case, with one forward pass. Total variation, a pixel term, is computed on the
//! image itself.
//!
//! Targets are computed when the objective is built: the content image's features (in tiles
//! too), and each style image's moments, which come from the backend's [`TargetCache`] when
//! they were computed before for the same image, size, layers and tiles.

use crate::engine::{Engine, Evaluator, GradientPart, LayerGradient, Measured, Statistic, TargetCache, wrong_size};
use crate::error::{Error, Result};
use crate::image_io::Image;
use crate::linalg;
use crate::size::Size;
use crate::tiles::{self, Tile, TileGrid};

use super::masks::{self, downsample, mask_weights};
use super::moments::{FeatureGradient, Moments, StyleTarget};
use super::spec::ObjectiveSpec;
use super::tv::total_variation;
use super::{LossTerms, StyleInput};

/// One tile's share of the targets, kept where the engine computes: each content term's
/// target on the tile's interior, and each style group's region there with its weight.
struct TileTargets<R> {
    content: Vec<R>,
    /// Per style term, per group.
    regions: Vec<Vec<Option<(R, f64)>>>,
}

/// The objective for one content image and its style images, at the content image's size, on
/// engine `E`.
pub struct Objective<E: Engine> {
    engine: E,
    spec: ObjectiveSpec,
    grid: TileGrid,
    tiles: Vec<TileTargets<E::Resident>>,
    /// Per style term, per group.
    targets: Vec<Vec<Box<dyn StyleTarget>>>,
}

impl<E: Engine> Objective<E> {
    /// Computes the targets of `spec` for `content` (of the spec's size) after `styles` (at
    /// their own sizes), in tiles of `tile` pixels (`None`: whole), on `engine`; style targets
    /// come from `cache` where they are there.
    pub fn new(
        engine: E,
        spec: &ObjectiveSpec,
        content: &Image,
        styles: &[StyleInput],
        tile: Option<usize>,
        cache: &TargetCache,
    ) -> Result<Self> {
        let size = spec.size;
        if (content.width, content.height) != (size.width, size.height) {
            return Err(wrong_size(content, size));
        }
        let grid = spec.grid(tile);
        let content_targets = content_targets(&engine, spec, content, tile)?;
        let style_moments =
            styles.iter().map(|s| style_moments(&engine, spec, s, tile, cache)).collect::<Result<Vec<_>>>()?;
        let measure = spec.style_loss.measure();
        let mut targets = Vec::new();
        for (ti, term) in spec.style.iter().enumerate() {
            let mut per_group = Vec::new();
            for group in &term.groups {
                let mut target = measure.target(term.channels);
                for &(s, blend) in &group.members {
                    target.add(blend, &style_moments[s][ti]);
                }
                target.finish();
                per_group.push(target);
            }
            targets.push(per_group);
        }
        let mut tiles = Vec::new();
        for tile in &grid.tiles {
            let mut content = Vec::new();
            for (t, whole) in spec.content.iter().zip(&content_targets) {
                let (c, _, w) = t.shape;
                let part = tiles::crop(whole, c, w, tile.window(t.pools).global).into_owned();
                content.push(engine.resident(part)?);
            }
            let mut regions = Vec::new();
            for t in &spec.style {
                let window = tile.window(t.pools);
                let mut per_group = Vec::new();
                for g in &t.groups {
                    per_group.push(match &g.region {
                        None => None,
                        Some(r) => {
                            let part = tiles::crop(r, 1, size.width >> t.pools, window.global).into_owned();
                            let weight = masks::weight(&part);
                            Some((engine.resident(part)?, weight))
                        }
                    });
                }
                regions.push(per_group);
            }
            tiles.push(TileTargets { content, regions });
        }
        Ok(Objective { engine, spec: spec.clone(), grid, tiles, targets })
    }

    /// The tiles an evaluation runs on (one, the whole image, when untiled).
    pub fn grid(&self) -> &TileGrid {
        &self.grid
    }

    /// The specification it evaluates.
    pub fn spec(&self) -> &ObjectiveSpec {
        &self.spec
    }

    /// The loss of `img` and, if `with_grad`, its gradient with respect to the pixels.
    pub fn evaluate(&self, img: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)> {
        let spec = &self.spec;
        if (img.width, img.height) != (spec.size.width, spec.size.height) {
            return Err(wrong_size(img, spec.size));
        }
        let engine = &self.engine;
        let tiles = &self.grid.tiles;
        let last = tiles.len() - 1;
        let mut terms = LossTerms::default();
        // First pass: the content loss and the style moments, summed over the tiles' interiors.
        let mut sums: Vec<Vec<Option<Moments>>> =
            spec.style.iter().map(|t| t.groups.iter().map(|_| None).collect()).collect();
        let mut kept = None;
        for (i, tile) in tiles.iter().enumerate() {
            let pass = self.forward(img, tile)?;
            let measured = engine.statistics(&pass, &self.statistics(i, tile))?;
            let mut measured = measured.into_iter();
            for t in &spec.content {
                let (c, h, w) = t.shape;
                terms.content += t.weight * number(measured.next())? / (c * h * w) as f64;
            }
            for (t, sums) in spec.style.iter().zip(&mut sums) {
                if tile.window(t.pools).local.area() == 0 {
                    continue;
                }
                for sum in sums.iter_mut() {
                    Moments::accumulate(sum, moments(measured.next())?);
                }
            }
            if with_grad && i == last {
                kept = Some(pass);
            } else {
                engine.recycle(pass);
            }
        }
        // The terms, and their gradients with respect to the features, from the sums.
        let mut gradients: Vec<Vec<Option<FeatureGradient>>> = Vec::new();
        for ((t, sums), targets) in spec.style.iter().zip(&sums).zip(&self.targets) {
            let mut layer = Vec::new();
            for (sum, target) in sums.iter().zip(targets) {
                let grad = match sum {
                    Some(sum) => {
                        let (loss, grad) = target.term(sum, t.strength, with_grad);
                        terms.style += loss;
                        grad
                    }
                    None => None,
                };
                layer.push(grad);
            }
            gradients.push(layer);
        }
        let mut grad = None;
        if with_grad {
            let scales = self.normalisation(img, &mut kept, &gradients)?;
            // Second pass: each tile's share of the gradient, back through the network.
            let mut whole = if self.grid.is_whole() { None } else { Some(linalg::zeros(img.data.len())) };
            for (i, tile) in tiles.iter().enumerate().rev() {
                let pass = match kept.take() {
                    Some(pass) if i == last => pass,
                    _ => self.forward(img, tile)?,
                };
                let g = engine.backward(pass, &self.layer_gradients(i, tile, &gradients, &scales))?;
                match &mut whole {
                    Some(sum) => tiles::add_into(sum, 3, img.width, tile.outer, &g),
                    None => grad = Some(g),
                }
            }
            grad = grad.or(whole);
        }
        if spec.tv_weight > 0.0 {
            terms.tv = total_variation(img, spec.tv_weight, grad.as_deref_mut());
        }
        terms.total = terms.content + terms.style + terms.tv;
        Ok((terms, grad))
    }

    /// The engine's forward pass over `tile` of `img`.
    fn forward(&self, img: &Image, tile: &Tile) -> Result<E::Pass> {
        let pixels = tiles::crop(&img.data, 3, img.width, tile.outer);
        self.engine.forward(&pixels, tile.outer.size(), &self.spec.layers)
    }

    /// What the first pass measures on tile `i`: each content term's squared distance, then
    /// each style group's moments (none for a layer where the tile has no interior).
    fn statistics(&self, i: usize, tile: &Tile) -> Vec<Statistic<'_, E::Resident>> {
        let spec = &self.spec;
        let centred = spec.style_loss.measure().centred();
        let mut asks = Vec::new();
        for (t, target) in spec.content.iter().zip(&self.tiles[i].content) {
            asks.push(Statistic::SquaredDistance { layer: t.layer, window: tile.window(t.pools), target });
        }
        for (t, regions) in spec.style.iter().zip(&self.tiles[i].regions) {
            let window = tile.window(t.pools);
            if window.local.area() == 0 {
                continue;
            }
            for region in regions {
                let mask = region.as_ref().map(|(r, w)| (r, *w));
                asks.push(Statistic::Moments { layer: t.layer, window, mask, centred });
            }
        }
        asks
    }

    /// Each term's layer-gradient factor: 1, or with `normalize_gradients` its strength over
    /// its layer gradient's L1 norm over the whole image (a pass over the tiles of its own).
    fn normalisation(
        &self,
        img: &Image,
        kept: &mut Option<E::Pass>,
        gradients: &[Vec<Option<FeatureGradient>>],
    ) -> Result<Vec<f32>> {
        let spec = &self.spec;
        let strengths: Vec<f64> =
            spec.content.iter().map(|t| t.weight).chain(spec.style.iter().map(|t| t.strength)).collect();
        if !spec.normalize_gradients {
            return Ok(vec![1.0; strengths.len()]);
        }
        let ones = vec![1.0; strengths.len()];
        let mut l1 = vec![0.0f64; strengths.len()];
        let last = self.grid.tiles.len() - 1;
        for (i, tile) in self.grid.tiles.iter().enumerate() {
            let norms = match kept {
                Some(pass) if i == last => {
                    self.engine.gradient_norms(pass, &self.layer_gradients(i, tile, gradients, &ones))?
                }
                _ => {
                    let pass = self.forward(img, tile)?;
                    let norms = self.engine.gradient_norms(&pass, &self.layer_gradients(i, tile, gradients, &ones));
                    self.engine.recycle(pass);
                    norms?
                }
            };
            l1.iter_mut().zip(norms).for_each(|(sum, n)| *sum += n);
        }
        Ok(strengths.iter().zip(&l1).map(|(s, n)| (s / (n + 1e-8)) as f32).collect())
    }

    /// The terms' gradients with respect to the layers' outputs on tile `i` (its interior's
    /// share; zero on the halo), content terms first, each times its scale.
    fn layer_gradients<'a>(
        &'a self,
        i: usize,
        tile: &Tile,
        gradients: &'a [Vec<Option<FeatureGradient>>],
        scales: &[f32],
    ) -> Vec<LayerGradient<'a, E::Resident>> {
        let spec = &self.spec;
        let mut scales = scales.iter().copied();
        let mut out = Vec::new();
        for (t, target) in spec.content.iter().zip(&self.tiles[i].content) {
            let (c, h, w) = t.shape;
            let factor = (2.0 * t.weight / (c * h * w) as f64) as f32;
            out.push(LayerGradient {
                layer: t.layer,
                window: tile.window(t.pools),
                scale: scales.next().unwrap_or(1.0),
                part: GradientPart::Content { target, factor },
            });
        }
        for ((t, grads), regions) in spec.style.iter().zip(gradients).zip(&self.tiles[i].regions) {
            let window = tile.window(t.pools);
            let groups = if window.local.area() == 0 {
                Vec::new()
            } else {
                grads
                    .iter()
                    .zip(regions)
                    .filter_map(|(fg, region)| fg.as_ref().map(|fg| (region.as_ref().map(|(r, _)| r), fg)))
                    .collect()
            };
            out.push(LayerGradient {
                layer: t.layer,
                window,
                scale: scales.next().unwrap_or(1.0),
                part: GradientPart::Style { groups },
            });
        }
        out
    }
}

impl<E: Engine> Evaluator for Objective<E> {
    fn size(&self) -> Size {
        self.spec.size
    }

    fn evaluate(&self, image: &Image, with_grad: bool) -> Result<(LossTerms, Option<Vec<f32>>)> {
        Objective::evaluate(self, image, with_grad)
    }

    fn tiles(&self) -> usize {
        self.grid.tiles.len()
    }
}

/// The content image's features at each content layer, whole (computed in tiles of `tile`).
fn content_targets<E: Engine>(
    engine: &E,
    spec: &ObjectiveSpec,
    content: &Image,
    tile: Option<usize>,
) -> Result<Vec<Vec<f32>>> {
    let mut whole: Vec<Vec<f32>> = spec.content.iter().map(|t| vec![0.0; t.shape.0 * t.shape.1 * t.shape.2]).collect();
    if spec.content.is_empty() {
        return Ok(whole);
    }
    for tile in &spec.content_grid(tile).tiles {
        let pixels = tiles::crop(&content.data, 3, content.width, tile.outer);
        let pass = engine.forward(&pixels, tile.outer.size(), &spec.content_layers)?;
        let asks: Vec<Statistic<'_, E::Resident>> =
            spec.content.iter().map(|t| Statistic::Features { layer: t.layer, window: tile.window(t.pools) }).collect();
        let measured = engine.statistics(&pass, &asks);
        engine.recycle(pass);
        for ((t, target), m) in spec.content.iter().zip(&mut whole).zip(measured?) {
            let Measured::Features(part) = m else { return Err(unexpected()) };
            let (c, _, w) = t.shape;
            tiles::add_into(target, c, w, tile.window(t.pools).global, &part);
        }
    }
    Ok(whole)
}

/// A style image's moments at each style layer (the source mask's weights on its positions),
/// from the cache or computed in tiles of `tile`.
fn style_moments<E: Engine>(
    engine: &E,
    spec: &ObjectiveSpec,
    style: &StyleInput,
    tile: Option<usize>,
    cache: &TargetCache,
) -> Result<std::sync::Arc<[Moments]>> {
    let img = &style.image;
    let size = Size::new(img.width, img.height);
    let centred = spec.style_loss.measure().centred();
    let key = TargetCache::key(img, style.source_mask.as_ref(), tile, &spec.style_layers, centred);
    cache.get_or_compute(key, || {
        let source = style.source_mask.as_ref().map(|m| mask_weights(m, size));
        let sources: Vec<Option<Vec<f32>>> =
            spec.style.iter().map(|t| source.as_ref().map(|m| downsample(m, size, t.pools))).collect();
        let mut sums: Vec<Option<Moments>> = spec.style.iter().map(|_| None).collect();
        for tile in &spec.style_grid(size, tile).tiles {
            let pixels = tiles::crop(&img.data, 3, img.width, tile.outer);
            let pass = engine.forward(&pixels, tile.outer.size(), &spec.style_layers)?;
            let mut masks = Vec::new();
            let mut which = Vec::new();
            for (li, (t, src)) in spec.style.iter().zip(&sources).enumerate() {
                let window = tile.window(t.pools);
                if window.local.area() == 0 {
                    continue;
                }
                let mask = match src {
                    Some(src) => {
                        let part = tiles::crop(src, 1, img.width >> t.pools, window.global).into_owned();
                        let weight = masks::weight(&part);
                        Some((engine.resident(part)?, weight))
                    }
                    None => None,
                };
                masks.push(mask);
                which.push((li, window));
            }
            let asks: Vec<Statistic<'_, E::Resident>> = which
                .iter()
                .zip(&masks)
                .map(|(&(li, window), mask)| Statistic::Moments {
                    layer: spec.style[li].layer,
                    window,
                    mask: mask.as_ref().map(|(r, w)| (r, *w)),
                    centred,
                })
                .collect();
            let measured = engine.statistics(&pass, &asks);
            engine.recycle(pass);
            for (&(li, _), m) in which.iter().zip(measured?) {
                Moments::accumulate(&mut sums[li], moments(Some(m))?);
            }
        }
        sums.into_iter()
            .zip(&spec.style)
            .map(|(s, t)| s.ok_or_else(|| Error::config(format!("the style image has no positions at {}", t.layer))))
            .collect()
    })
}

fn unexpected() -> Error {
    Error::config("the engine answered a statistic with another kind of value")
}

fn number(m: Option<Measured>) -> Result<f64> {
    match m {
        Some(Measured::Number(v)) => Ok(v),
        _ => Err(unexpected()),
    }
}

fn moments(m: Option<Measured>) -> Result<Moments> {
    match m {
        Some(Measured::Moments(v)) => Ok(v),
        _ => Err(unexpected()),
    }
}
