//! The objective as data: its terms with their weights, built once per scale from the loss
//! configuration, the output size and the style inputs. This is the one place the objective's
//! rules live; every engine evaluates what it says and restates none of it:
//!
//! - a content term per content layer, `content_weight * mean((F - P)²)`;
//! - a style term per style layer, with strength `style_weight * w_l` (`w_l` given, or the
//!   measure's default for the layer's channels), holding one *group* of styles for all the
//!   style images, or, when any style has a region mask, one group per style with its region
//!   at the layer's resolution (the mask's luminance, resized to the output and averaged 2x2
//!   down to the layer) and its norm `Σ m²`; a region that is black everywhere is no group;
//! - the blend weights: normalised to sum to 1, except with regions (each style rules its own);
//! - the pixel terms: total variation, with its weight;
//! - whether each term's layer gradient is normalised by its L1 norm.

use crate::engine::Backend;
use crate::error::Result;
use crate::size::Size;
use crate::tiles::{Halo, TileGrid};
use crate::vgg::{Chw, LayerId};

use super::masks::{downsample, mask_weights, weight};
use super::{LossConfig, StyleInput, StyleLoss};

/// One content term: a squared distance to the content image's features at `layer`.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentTerm {
    /// The layer compared.
    pub layer: LayerId,
    /// Poolings before the layer (its resolution is the image's halved that often).
    pub pools: usize,
    /// `content_weight`.
    pub weight: f64,
    /// The layer's shape at the objective's size: the mean is over its `C H W` values.
    pub shape: Chw,
}

/// One style term: style images' moments against the candidate's at `layer`, per group.
#[derive(Clone, Debug, PartialEq)]
pub struct StyleTerm {
    /// The layer compared.
    pub layer: LayerId,
    /// Poolings before the layer.
    pub pools: usize,
    /// `style_weight * w_l`.
    pub strength: f64,
    /// The layer's channels.
    pub channels: usize,
    /// One per region (one group without region masks).
    pub groups: Vec<StyleGroup>,
}

/// Style images compared together over one region.
#[derive(Clone, Debug, PartialEq)]
pub struct StyleGroup {
    /// Each style's index among the inputs and its blend weight (as the term uses it).
    pub members: Vec<(usize, f64)>,
    /// The region at the layer's resolution (`None`: everywhere).
    pub region: Option<Vec<f32>>,
    /// `Σ m²` over the region, the positions' count without one.
    pub norm: f64,
}

/// The halos tiles need for each kind of pass (a content or style image's pass reads fewer
/// layers than an evaluation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Halos {
    /// An evaluation's (every layer the objective reads).
    pub evaluation: Halo,
    /// The content image's pass (`None`: no content term).
    pub content: Option<Halo>,
    /// A style image's pass (`None`: no style term).
    pub style: Option<Halo>,
}

/// The objective at one size, as named terms.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectiveSpec {
    /// The image's size.
    pub size: Size,
    /// Every layer an evaluation reads, in network order.
    pub layers: Vec<LayerId>,
    /// The content layers, as configured.
    pub content_layers: Vec<LayerId>,
    /// The style layers, as configured.
    pub style_layers: Vec<LayerId>,
    /// The content terms.
    pub content: Vec<ContentTerm>,
    /// The style terms.
    pub style: Vec<StyleTerm>,
    /// How style is compared.
    pub style_loss: StyleLoss,
    /// The total-variation term's weight (a pixel term).
    pub tv_weight: f64,
    /// Each term's gradient divided by its L1 norm.
    pub normalize_gradients: bool,
    /// The halos tiles need.
    pub halos: Halos,
}

impl ObjectiveSpec {
    /// The terms of `config` for an output of `size` after `styles` (their blends and region
    /// masks; the images themselves are not read), with the layer shapes of `net`.
    pub fn new(net: &dyn Backend, config: &LossConfig, size: Size, styles: &[StyleInput]) -> Result<Self> {
        let measure = config.style_loss.measure();
        let mut content = Vec::new();
        for &layer in &config.content_layers {
            let shape = net.shape(layer, size)?;
            content.push(ContentTerm { layer, pools: net.pools_before(layer)?, weight: config.content_weight, shape });
        }
        let regions = styles.iter().any(|s| s.region_mask.is_some());
        let mut blend: Vec<f64> = styles.iter().map(|s| s.blend).collect();
        if !regions {
            let sum: f64 = blend.iter().sum();
            blend.iter_mut().for_each(|b| *b /= sum);
        }
        let region_masks: Vec<Option<Vec<f32>>> =
            styles.iter().map(|s| s.region_mask.as_ref().map(|m| mask_weights(m, size))).collect();
        let mut style = Vec::new();
        for (li, &layer) in config.style_layers.iter().enumerate() {
            let pools = net.pools_before(layer)?;
            let (channels, lh, lw) = net.shape(layer, size)?;
            let layer_weight = match &config.style_layer_weights {
                Some(w) => w[li],
                None => measure.default_layer_weight(channels),
            };
            let mut groups = Vec::new();
            if regions {
                for (s, region) in region_masks.iter().enumerate() {
                    let region = region.as_ref().map(|m| downsample(m, size, pools));
                    let norm = region.as_deref().map_or((lh * lw) as f64, weight);
                    groups.push(StyleGroup { members: vec![(s, blend[s])], region, norm });
                }
            } else if !styles.is_empty() {
                groups.push(StyleGroup {
                    members: blend.iter().copied().enumerate().collect(),
                    region: None,
                    norm: (lh * lw) as f64,
                });
            }
            // A region that is black everywhere: its style applies nowhere.
            groups.retain(|g| g.norm > 0.0);
            style.push(StyleTerm { layer, pools, strength: config.style_weight * layer_weight, channels, groups });
        }
        let halo_of = |layers: &[LayerId]| (!layers.is_empty()).then(|| net.halo(layers)).transpose();
        let layers = config.layers();
        Ok(ObjectiveSpec {
            size,
            halos: Halos {
                evaluation: net.halo(&layers)?,
                content: halo_of(&config.content_layers)?,
                style: halo_of(&config.style_layers)?,
            },
            layers,
            content_layers: config.content_layers.clone(),
            style_layers: config.style_layers.clone(),
            content,
            style,
            style_loss: config.style_loss,
            tv_weight: config.tv_weight,
            normalize_gradients: config.normalize_gradients,
        })
    }

    /// The tiles an evaluation in tiles of `tile` pixels runs on (one, the whole image, for
    /// `None`).
    pub fn grid(&self, tile: Option<usize>) -> TileGrid {
        TileGrid::new(self.size, tile, self.halos.evaluation)
    }

    /// The tiles the content image's pass runs on.
    pub fn content_grid(&self, tile: Option<usize>) -> TileGrid {
        self.halos.content.map_or_else(|| TileGrid::whole(self.size), |h| TileGrid::new(self.size, tile, h))
    }

    /// The tiles a style image of `size` runs on.
    pub fn style_grid(&self, size: Size, tile: Option<usize>) -> TileGrid {
        self.halos.style.map_or_else(|| TileGrid::whole(size), |h| TileGrid::new(size, tile, h))
    }

    /// Whether a layer gradient reaches the image at all (some term with a weight).
    pub fn groups(&self) -> usize {
        self.style.iter().map(|t| t.groups.len()).sum()
    }
}
