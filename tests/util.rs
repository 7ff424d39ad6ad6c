use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use impasto::image_io::{self, Image};
use impasto::vgg::{Pooling, Vgg};
use impasto::weights::{self, ConvParams, Preprocess, VggWeights};

/// The default weights, obtained the way a user gets them (fetched on first use).
pub fn real_weights_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        weights::fetch::ensure_default_weights(&mut |m| eprintln!("{m}")).expect("fetch the default weights")
    })
    .clone()
}

/// The default VGG19 with max pooling, loaded once.
pub fn real_net() -> &'static Vgg {
    static NET: OnceLock<Vgg> = OnceLock::new();
    NET.get_or_init(|| Vgg::new(weights::load(&real_weights_path(), None).unwrap(), Pooling::Max))
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pastiche").join(name)
}

pub fn fixture_image(name: &str) -> Image {
    image_io::load(&fixture(name)).unwrap()
}

/// A deterministic generator of uniform numbers in [-1, 1).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
    pub fn image(&mut self, width: usize, height: usize) -> Image {
        Image { width, height, data: (0..3 * width * height).map(|_| (self.next() + 1.0) * 127.5).collect() }
    }
}

/// A VGG19-shaped network with `widths[b]` channels in block `b` and random (He) weights.
pub fn tiny_weights(seed: u64, widths: [usize; 5]) -> VggWeights {
    let mut rng = Lcg(seed);
    let mut c_in = 3;
    let blocks = weights::VGG19_BLOCKS
        .iter()
        .zip(widths)
        .map(|(&n, c_out)| {
            (0..n)
                .map(|_| {
                    let scale = (6.0 / (9.0 * c_in as f32)).sqrt();
                    let p =
                        ConvParams { c_in, c_out, weight: rng.vec(c_out * c_in * 9, scale), bias: rng.vec(c_out, 0.1) };
                    c_in = c_out;
                    p
                })
                .collect()
        })
        .collect();
    VggWeights { blocks, preprocess: Preprocess::Caffe }
}

/// Writes `w` as a safetensors file with torchvision's `features.N` keys.
pub fn write_safetensors(w: &VggWeights, path: &Path, preprocess: Option<&str>) {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut idx = 0;
    for block in &w.blocks {
        for c in block {
            tensors.push((format!("features.{idx}.weight"), vec![c.c_out, c.c_in, 3, 3], bytes(&c.weight)));
            tensors.push((format!("features.{idx}.bias"), vec![c.c_out], bytes(&c.bias)));
            idx += 2;
        }
        idx += 1;
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, shape, data)| (k.clone(), TensorView::new(Dtype::F32, shape.clone(), data).unwrap()))
        .collect();
    let meta = preprocess.map(|p| HashMap::from([("preprocess".to_string(), p.to_string())]));
    safetensors::tensor::serialize_to_file(views, meta, path).unwrap();
}

/// Writes pickles the way `torch.save` does, for files in the legacy and zip formats.
pub mod pickle {
    /// A tensor to save: name, storage type ("FloatStorage", "ByteStorage"), raw little-endian
    /// storage bytes, element count, offset, size and stride of the view.
    pub struct Entry {
        pub name: String,
        pub storage_type: &'static str,
        pub bytes: Vec<u8>,
        pub numel: usize,
        pub offset: usize,
        pub size: Vec<usize>,
        pub stride: Vec<usize>,
    }

    pub fn floats(name: &str, v: &[f32], size: &[usize]) -> Entry {
        let mut stride = vec![1; size.len()];
        for d in (0..size.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * size[d + 1];
        }
        Entry {
            name: name.into(),
            storage_type: "FloatStorage",
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            numel: v.len(),
            offset: 0,
            size: size.to_vec(),
            stride,
        }
    }

    fn str_op(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// BININT, or LONG1 for values that do not fit in an i32.
    fn int_op(out: &mut Vec<u8>, v: usize) {
        if v <= i32::MAX as usize {
            out.push(b'J');
            out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            out.extend_from_slice(&[0x8a, 8]);
            out.extend_from_slice(&(v as i64).to_le_bytes());
        }
    }

    /// The pickle of an OrderedDict of tensors whose storages are keyed "0", "1", ...
    pub fn state_dict(entries: &[Entry]) -> Vec<u8> {
        let mut out = vec![0x80, 2];
        out.extend_from_slice(b"ccollections\nOrderedDict\n)R(");
        for (k, e) in entries.iter().enumerate() {
            str_op(&mut out, &e.name);
            out.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            str_op(&mut out, "storage");
            out.extend_from_slice(format!("ctorch\n{}\n", e.storage_type).as_bytes());
            str_op(&mut out, &k.to_string());
            str_op(&mut out, "cpu");
            int_op(&mut out, e.numel);
            out.extend_from_slice(b"NtQ");
            int_op(&mut out, e.offset);
            out.push(b'(');
            e.size.iter().for_each(|&v| int_op(&mut out, v));
            out.extend_from_slice(b"t(");
            e.stride.iter().for_each(|&v| int_op(&mut out, v));
            out.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtR");
        }
        out.extend_from_slice(b"u.");
        out
    }

    /// A legacy (pre-1.6) torch.save file.
    pub fn legacy_file(entries: &[Entry]) -> Vec<u8> {
        let mut out = vec![0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.'];
        out.extend_from_slice(&[0x80, 2, b'M', 0xe9, 0x03, b'.']);
        out.extend_from_slice(&[0x80, 2, b'}']);
        str_op(&mut out, "little_endian");
        out.extend_from_slice(&[0x88, b's', b'.']);
        out.extend(state_dict(entries));
        out.extend_from_slice(&[0x80, 2, b']', b'(']);
        for k in 0..entries.len() {
            str_op(&mut out, &k.to_string());
        }
        out.extend_from_slice(b"e.");
        for e in entries {
            out.extend_from_slice(&(e.numel as i64).to_le_bytes());
            out.extend_from_slice(&e.bytes);
        }
        out
    }

    /// A zip torch.save file (PyTorch >= 1.6).
    pub fn zip_file(entries: &[Entry]) -> Vec<u8> {
        use std::io::Write;
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            let opt = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            zip.start_file("archive/data.pkl", opt).unwrap();
            zip.write_all(&state_dict(entries)).unwrap();
            for (k, e) in entries.iter().enumerate() {
                zip.start_file(format!("archive/data/{k}"), opt).unwrap();
                zip.write_all(&e.bytes).unwrap();
            }
            zip.start_file("archive/version", opt).unwrap();
            zip.write_all(b"3\n").unwrap();
            zip.finish().unwrap();
        }
        buf.into_inner()
    }
}

/// `w` as torch.save entries with `features.N` keys.
pub fn feature_entries(w: &VggWeights) -> Vec<pickle::Entry> {
    let mut out = Vec::new();
    let mut idx = 0;
    for block in &w.blocks {
        for c in block {
            out.push(pickle::floats(&format!("features.{idx}.weight"), &c.weight, &[c.c_out, c.c_in, 3, 3]));
            out.push(pickle::floats(&format!("features.{idx}.bias"), &c.bias, &[c.c_out]));
            idx += 2;
        }
        idx += 1;
    }
    out
}

/// Runs the impasto binary.
pub fn impasto(args: &[&str]) -> Output {
    impasto_env(args, &[])
}

pub fn impasto_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_impasto"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run impasto")
}

/// Stderr as text, for messages.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Prints the command's output when an assertion about it fails.
pub fn describe<S: AsRef<str>>(args: &[S], o: &Output) -> String {
    format!(
        "impasto {}\nexit: {:?}\nstdout: {}\nstderr: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>().join(" "),
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    )
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// CRC-32 (IEEE), as PNG chunks carry it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb88320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Appends a PNG chunk of this kind and data, with its length and CRC.
pub fn png_chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// The PNG signature and an IHDR for an 8-bit RGB image of `width` x `height`.
pub fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    out
}

/// A PNG that declares `width` x `height` and holds one tiny, meaningless IDAT chunk.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = png_header(width, height);
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// One HTTP/1.1 request to `addr` (`headers`: extra header lines, each ending in CRLF); the
/// status and the body (de-chunked).
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    headers: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(120))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    // Read to the end of the body: its Content-Length, or the connection's end.
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        out.extend_from_slice(&buf[..n]);
        if let Some(p) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..p]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|len| out.len() >= p + 4 + len) {
                break;
            }
        }
    }
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").map_or(out.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out[split..].to_vec();
    let body = if head.contains("transfer-encoding: chunked") { unchunk(&body) } else { body };
    (status, body)
}

fn unchunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = body.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&body[..p]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if n == 0 || body.len() < p + 2 + n {
            break;
        }
        out.extend_from_slice(&body[p + 2..p + 2 + n]);
        body = &body[(p + 4 + n).min(body.len())..];
    }
    out
}
