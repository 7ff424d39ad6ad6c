//! [`Size`]: an image's (or a layer's, or a tile's) width and height, named. Every size in the
//! library is one of these, in this order, so no call site swaps a `(height, width)` pair by
//! hand.

use serde::{Deserialize, Serialize};

/// A width and a height, in pixels (or positions of a layer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl Size {
    /// `width` x `height`.
    pub const fn new(width: usize, height: usize) -> Self {
        Size { width, height }
    }

    /// A `side` x `side` square.
    pub const fn square(side: usize) -> Self {
        Size { width: side, height: side }
    }

    /// `width * height` (saturating: a size made of untrusted numbers cannot wrap it).
    pub const fn pixels(self) -> usize {
        self.width.saturating_mul(self.height)
    }

    /// The longer side.
    pub fn long_side(self) -> usize {
        self.width.max(self.height)
    }

    /// The shorter side.
    pub fn short_side(self) -> usize {
        self.width.min(self.height)
    }

    /// This size halved `times` times, odd rows and columns dropped (as 2x2 pooling does).
    pub const fn halved(self, times: usize) -> Self {
        Size { width: self.width >> times, height: self.height >> times }
    }

    /// Width over height.
    pub fn aspect(self) -> f64 {
        self.width as f64 / self.height.max(1) as f64
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_width_by_height() {
        let s = Size::new(640, 480);
        assert_eq!((s.to_string(), s.pixels(), s.long_side(), s.short_side()), ("640x480".into(), 307_200, 640, 480));
        assert_eq!(Size::new(33, 17).halved(2), Size::new(8, 4));
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"width":640,"height":480}"#);
        assert!(serde_json::from_str::<Size>(r#"{"width":1,"height":2,"depth":3}"#).is_err());
    }
}
