//! The interpreter's operators against plain loops written here, on awkward shapes.

use super::*;

/// Deterministic values in -1..1.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn graph() -> Graph {
    Graph {
        nodes: Vec::new(),
        constants: HashMap::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        last_use: HashMap::new(),
        max_elements: 1 << 26,
        kernel: crate::kernels::default_kernel(),
    }
}

fn conv_node() -> Node {
    Node { label: "test".into(), op: Op::Identity, inputs: vec![], outputs: vec![], filter: OnceLock::new() }
}

/// The convolution by its definition, in f64.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    [c, h, w]: [usize; 3],
    wt: &[f32],
    m: usize,
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    pads: [usize; 4],
    group: usize,
    bias: Option<&[f32]>,
) -> (Vec<f32>, usize, usize) {
    let oh = (h + pads[0] + pads[2] - kh) / sh + 1;
    let ow = (w + pads[1] + pads[3] - kw) / sw + 1;
    let (cg, mg) = (c / group, m / group);
    let mut out = vec![0.0f32; m * oh * ow];
    for o in 0..m {
        let g = o / mg;
        for y in 0..oh {
            for xx in 0..ow {
                let mut acc = bias.map_or(0.0, |b| b[o] as f64);
                for ci in 0..cg {
                    for dy in 0..kh {
                        for dx in 0..kw {
                            let iy = (y * sh + dy) as isize - pads[0] as isize;
                            let ix = (xx * sw + dx) as isize - pads[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let v = x[((g * cg + ci) * h + iy as usize) * w + ix as usize] as f64;
                                acc += v * wt[((o * cg + ci) * kh + dy) * kw + dx] as f64;
                            }
                        }
                    }
                }
                out[(o * oh + y) * ow + xx] = acc as f32;
            }
        }
    }
    (out, oh, ow)
}

#[test]
fn convolutions_match_their_definition() {
    // (c, m, h, w, k, stride, pads, group): the 3x3 kernel path (pads 0 and 1), strided and
    // asymmetric pads (MobileNet's), 9x9, depthwise, grouped, 1x1.
    let cases = [
        (5, 7, 11, 13, [3, 3], [1, 1], [1, 1, 1, 1], 1),
        (4, 6, 9, 10, [3, 3], [1, 1], [0, 0, 0, 0], 1),
        (3, 5, 17, 12, [3, 3], [2, 2], [0, 0, 1, 1], 1),
        (3, 4, 19, 21, [9, 9], [1, 1], [0, 0, 0, 0], 1),
        (6, 6, 10, 7, [3, 3], [1, 1], [1, 1, 1, 1], 6),
        (6, 6, 13, 9, [3, 3], [2, 2], [0, 0, 1, 1], 6),
        (6, 4, 8, 9, [3, 2], [1, 2], [2, 0, 1, 1], 2),
        (8, 3, 5, 6, [1, 1], [1, 1], [0, 0, 0, 0], 1),
    ];
    let g = graph();
    for (i, &(c, m, h, w, k, s, pads, group)) in cases.iter().enumerate() {
        let x = values(c * h * w, i as u32);
        let wt = values(m * (c / group) * k[0] * k[1], 100 + i as u32);
        let b = values(m, 200 + i as u32);
        let (want, oh, ow) = naive_conv(&x, [c, h, w], &wt, m, k, s, pads, group, Some(&b));
        let got = g
            .conv(
                &conv_node(),
                &Tensor::f32(vec![1, c, h, w], x),
                &Tensor::f32(vec![m, c / group, k[0], k[1]], wt),
                Some(&Tensor::f32(vec![m], b)),
                Some(k),
                s,
                pads,
                group,
            )
            .unwrap();
        assert_eq!(got.shape, [1, m, oh, ow], "case {i}");
        let err = got.floats().unwrap().iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 1e-4, "case {i}: max error {err}");
    }
}

#[test]
fn a_weight_that_does_not_fit_the_input_is_an_error() {
    let g = graph();
    let err = g
        .conv(
            &conv_node(),
            &Tensor::f32(vec![1, 3, 8, 8], vec![0.0; 192]),
            &Tensor::f32(vec![4, 5, 3, 3], vec![0.0; 180]),
            None,
            None,
            [1, 1],
            [1; 4],
            1,
        )
        .unwrap_err();
    assert!(err.contains("does not fit"), "{err}");
}

#[test]
fn broadcasting_matches_an_index_by_index_computation() {
    let g = graph();
    for (a, b) in [
        (vec![2, 3, 4, 5], vec![1, 3, 1, 1]),
        (vec![2, 3, 4, 5], vec![5]),
        (vec![1, 3, 1, 1], vec![2, 3, 4, 5]),
        (vec![4, 1], vec![1, 6]),
        (vec![3, 1, 5], vec![3, 4, 1]),
        (vec![2, 3], vec![]),
    ] {
        let (na, nb) = (a.iter().product::<usize>(), b.iter().product::<usize>());
        let (x, y) = (values(na, 1), values(nb, 2));
        let out =
            g.binary(Binary::Sub, &Tensor::f32(a.clone(), x.clone()), &Tensor::f32(b.clone(), y.clone())).unwrap();
        let shape = broadcast(&a, &b).unwrap();
        assert_eq!(out.shape, shape);
        let rank = shape.len();
        let index = |s: &[usize], idx: &[usize]| {
            let lead = rank - s.len();
            s.iter().enumerate().fold(0, |acc, (d, &n)| acc * n + if n == 1 { 0 } else { idx[d + lead] })
        };
        let total: usize = shape.iter().product();
        for flat in 0..total {
            let mut idx = vec![0; rank];
            let mut r = flat;
            for d in (0..rank).rev() {
                idx[d] = r % shape[d];
                r /= shape[d];
            }
            let want = x[index(&a, &idx)] - y[index(&b, &idx)];
            assert_eq!(out.floats().unwrap()[flat], want, "{a:?} - {b:?} at {idx:?}");
        }
    }
}

#[test]
fn reflect_padding_and_slices_follow_onnx() {
    let g = graph();
    let x = Tensor::f32(vec![1, 1, 2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = g.pad(&x, &[0, 0, 1, 2, 0, 0, 0, 1], None, PadMode::Reflect).unwrap();
    assert_eq!(out.shape, [1, 1, 3, 6]);
    #[rustfmt::skip]
    assert_eq!(out.floats().unwrap(), [
        6.0, 5.0, 4.0, 5.0, 6.0, 5.0,
        3.0, 2.0, 1.0, 2.0, 3.0, 2.0,
        6.0, 5.0, 4.0, 5.0, 6.0, 5.0,
    ]);
    let err = g.pad(&x, &[0, 0, 2, 0, 0, 0, 0, 0], None, PadMode::Reflect).unwrap_err();
    assert!(err.contains("reflect"), "{err}");
    // The exporters' idiom: the pads reversed by a slice with step -1 from the end.
    let v = Tensor::i64(vec![4], vec![1, 2, 3, 4]);
    let s = g.slice(&v, &[-1], &[i64::MIN + 1], None, Some(&Tensor::i64(vec![1], vec![-1]))).unwrap();
    assert_eq!(s.ints().unwrap(), [4, 3, 2, 1]);
}

#[test]
fn fake_quantization_rounds_half_to_even_and_saturates() {
    let x = Tensor::f32(vec![5], vec![0.25, 0.75, -10.0, 10.0, 0.5]);
    let q = quantize(&x, &Tensor::f32(vec![], vec![0.5]), Some(&Tensor::i64(vec![], vec![0])), 1, true).unwrap();
    // 0.5 and 1.5 round to even (0, 2); -20 and 20 saturate to -128..127 only past it.
    assert_eq!(q.ints().unwrap(), [0, 2, -20, 20, 1]);
    let q = quantize(&x, &Tensor::f32(vec![], vec![0.01]), Some(&Tensor::i64(vec![], vec![10])), 1, false).unwrap();
    assert_eq!(q.ints().unwrap(), [35, 85, 0, 255, 60]);
}

#[test]
fn reductions_and_pools_match_sums() {
    let x = Tensor::f32(vec![2, 3, 2], (0..12).map(|v| v as f32).collect());
    let r = reduce(&x, Some(vec![0]), false, false, false).unwrap();
    assert_eq!(r.shape, [3, 2]);
    assert_eq!(r.floats().unwrap(), [6.0, 8.0, 10.0, 12.0, 14.0, 16.0]);
    let r = reduce(&x, Some(vec![-1]), true, true, false).unwrap();
    assert_eq!(r.shape, [2, 3, 1]);
    assert_eq!(r.floats().unwrap(), [0.5, 2.5, 4.5, 6.5, 8.5, 10.5]);
    let p = global_average_pool(&Tensor::f32(vec![1, 2, 2, 2], vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 8.0])).unwrap();
    assert_eq!(p.floats().unwrap(), [2.5, 2.0]);
}

#[test]
fn tensors_beyond_the_element_budget_are_refused_before_allocation() {
    let mut g = graph();
    g.max_elements = 1000;
    let x = Tensor::f32(vec![1, 1, 10, 10], vec![0.0; 100]);
    let err = g.resize(&x, Some(&Tensor::f32(vec![4], vec![1.0, 1.0, 100.0, 100.0])), None).unwrap_err();
    assert!(err.contains("larger than"), "{err}");
    let err = g.pad(&x, &[0, 0, 0, 0, 0, 0, 1 << 30, 0], None, PadMode::Constant).unwrap_err();
    assert!(err.contains("larger than"), "{err}");
}

#[test]
fn an_empty_tensor_with_a_huge_dimension_is_refused() {
    // Zero elements in all, but a gather table of 2^40 entries for its last dimension.
    let mut g = graph();
    g.max_elements = 1000;
    let x = Tensor::f32(vec![1, 0, 2, 2], vec![]);
    let err = g.pad(&x, &[0, 0, 0, 0, 0, 0, 0, 1 << 40], None, PadMode::Constant).unwrap_err();
    assert!(err.contains("larger than"), "{err}");
    let ok = g.pad(&x, &[0, 0, 0, 0, 0, 0, 1, 1], None, PadMode::Constant).unwrap();
    assert_eq!((ok.shape.as_slice(), ok.numel()), ([1, 0, 3, 3].as_slice(), 0));
}

#[test]
fn a_constant_that_is_an_output_runs() {
    // Not folded (outputs are never folded away), so it runs as a node with no inputs.
    let mut g = graph();
    let value = Tensor::f32(vec![2], vec![1.5, -2.0]);
    g.nodes.push(Node {
        label: "c".into(),
        op: Op::Constant(value.clone()),
        inputs: vec![],
        outputs: vec!["y".into()],
        filter: OnceLock::new(),
    });
    g.outputs.push("y".into());
    assert_eq!(g.run(vec![]).unwrap(), [value]);
}
