//! An ONNX model from arbitrary bytes: parsing and loading never panic, and a graph that loads
//! runs on small inputs of its declared shapes within its element budget, or says why not.
#![no_main]
use impasto::fast::graph::{Graph, Tensor};
use impasto::fast::onnx::Dim;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(graph) = Graph::from_bytes(data, 1 << 18) else { return };
    let mut feeds = Vec::new();
    for input in graph.inputs() {
        let shape: Vec<usize> = match &input.shape {
            Some(dims) => dims.iter().map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Free => 8,
            }).collect(),
            None => vec![1, 3, 8, 8],
        };
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        match n {
            Some(n) if n <= 1 << 16 => feeds.push((input.name.as_str(), Tensor::f32(shape, vec![0.5; n]))),
            _ => return,
        }
    }
    let _ = graph.run(feeds);
});
