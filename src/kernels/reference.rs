//! The plain six-loop 3x3 convolution: slow, obviously right, the yardstick for the others.

use super::{Conv3x3, ConvShape, Filter, check};

/// The naive convolution.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reference;

impl Conv3x3 for Reference {
    fn conv(&self, s: ConvShape, input: &[f32], filter: &Filter, bias: Option<&[f32]>, relu: bool, out: &mut [f32]) {
        check(s, input, filter, bias, out);
        let weight = filter.weight();
        let (h, w) = (s.height as isize, s.width as isize);
        for o in 0..s.c_out {
            for y in 0..h {
                for x in 0..w {
                    let mut acc = bias.map_or(0.0, |b| b[o]) as f64;
                    for i in 0..s.c_in {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (yy, xx) = (y + ky - 1, x + kx - 1);
                                if yy < 0 || yy >= h || xx < 0 || xx >= w {
                                    continue;
                                }
                                let v = input[(i * s.height + yy as usize) * s.width + xx as usize];
                                acc += (weight[((o * s.c_in + i) * 3 + ky as usize) * 3 + kx as usize] * v) as f64;
                            }
                        }
                    }
                    let v = acc as f32;
                    out[(o * s.height + y as usize) * s.width + x as usize] = if relu { v.max(0.0) } else { v };
                }
            }
        }
    }

    fn name(&self) -> &'static str {
        "reference"
    }
}
