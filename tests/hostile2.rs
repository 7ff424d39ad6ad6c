//! Hostile input, round two (the issue of that name): the settings, the metadata and pipes,
//! through the binary under the same 6 GiB address-space limit as round one, with the same
//! promise: exit 2, one line naming the file or field and the problem, nothing written, a small
//! peak. The studio's classes are in `studio`. Each class is numbered as in the issue; each case
//! failed on f1d203b (checked with `IMPASTO_TEST_BIN` pointing at that build).

use std::process::{Command, Stdio};

use crate::hostile::{examples, in_own_process, refused, weights, zeros_zlib};
use crate::util::*;

/// A PNG (1x1, grey) whose `impasto-settings` iTXt is compressed and inflates to `zeros` bytes.
fn itxt_bomb(zeros: usize) -> Vec<u8> {
    let mut png = png_header(1, 1);
    let mut data = b"impasto-settings\0\x01\x00\0\0".to_vec();
    data.extend(zeros_zlib(1 << 20, zeros >> 20, 0));
    png_chunk(&mut png, b"iTXt", &data);
    png_chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01]);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// A JPEG whose comment segments carry `bytes` of settings-marked text.
fn jpeg_with_comments(bytes: usize) -> Vec<u8> {
    let jpeg = crate::hostile::tiny_jpeg();
    let mut out = jpeg[..2].to_vec();
    let mark = b"impasto-settings\0";
    let chunk = 60_000;
    let mut left = bytes;
    let mut first = true;
    while left > 0 {
        let n = left.min(chunk);
        let mut payload = mark.to_vec();
        payload.extend(std::iter::repeat_n(b' ', n));
        if first {
            payload[mark.len()] = b'{';
            first = false;
        }
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        left -= n;
    }
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Classes 1, 7: settings in images and files that are bombs, too long, or followed by more.
#[test]
fn hostile_settings_files() {
    if in_own_process("hostile2::hostile_settings_files") {
        return;
    }
    let dir = tempdir();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.png");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    // 1. A 2 GiB iTXt bomb (a few MB on disk), and 40 MB of JPEG comments.
    let bomb = write("bomb.png", &itxt_bomb(2 << 30));
    refused(&["settings", &bomb], &["bomb.png", "inflates to more than"], &out_dir);
    refused(&["stylize", "--settings", &bomb, "-o", s(&out)], &["bomb.png", "inflates to more than"], &out_dir);
    refused(&["stylize", "--plan", &bomb, "-o", s(&out)], &["bomb.png", "inflates to more than"], &out_dir);
    let comments = write("comments.jpg", &jpeg_with_comments(40 << 20));
    refused(&["settings", &comments], &["comments.jpg", "more than 1048576 bytes of settings"], &out_dir);
    // 7. One JSON value and nothing after it.
    let c = examples("tubingen.jpg");
    let st = examples("starry_night.jpg");
    let good =
        serde_json::json!({"content": s(&c), "styles": [{"image": s(&st)}], "config": {"size": 64, "iterations": 1}});
    for (name, text) in [("garbage.json", format!("{good} garbage")), ("two.json", format!("{good}\n{good}"))] {
        let f = write(name, text.as_bytes());
        refused(
            &["stylize", "--settings", &f, "-o", s(&out), "--quiet"],
            &[name, "has more after the settings"],
            &out_dir,
        );
    }
}

/// Classes 2, 8, 10, 11: counts and totals that grew memory or wrapped, errors that named the
/// wrong thing, a log over an input.
#[test]
fn hostile_counts_and_names() {
    if in_own_process("hostile2::hostile_counts_and_names") {
        return;
    }
    let dir = tempdir();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.png");
    let (w, c, st) = (weights(), examples("tubingen.jpg"), examples("starry_night.jpg"));
    let (c, st) = (c.to_str().unwrap(), st.to_str().unwrap());
    let tiny = dir.path().join("tiny.png");
    image::DynamicImage::ImageRgb8(image::RgbImage::new(1, 1)).save(&tiny).unwrap();
    let settings = |name: &str, json: serde_json::Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, json.to_string()).unwrap();
        p.to_str().unwrap().to_string()
    };
    // 2. Repeated layers, thousands of styles (in a file and on the command line).
    let many_layers = settings(
        "layers.json",
        serde_json::json!({"content": c, "styles": [{"image": st}], "config": {"loss": {"style_layers": vec!["relu5_1"; 5000]}}}),
    );
    refused(
        &["stylize", "--settings", &many_layers, "-o", s(&out)],
        &["layers.json", "config.loss.style_layers has 5000 layers"],
        &out_dir,
    );
    let twice = settings(
        "twice.json",
        serde_json::json!({"content": c, "styles": [{"image": st}], "config": {"loss": {"style_layers": ["relu1_1", "relu2_1", "relu1_1"]}}}),
    );
    refused(
        &["stylize", "--settings", &twice, "-o", s(&out)],
        &["config.loss.style_layers names relu1_1 twice"],
        &out_dir,
    );
    let styles: Vec<serde_json::Value> = (0..3000).map(|_| serde_json::json!({"image": s(&tiny)})).collect();
    let many_styles =
        settings("styles.json", serde_json::json!({"content": c, "styles": styles, "config": {"size": 32}}));
    refused(
        &["stylize", "--settings", &many_styles, "-o", s(&out)],
        &["styles has 3000 style images, at most 64"],
        &out_dir,
    );
    let mut args = vec!["stylize", c];
    args.extend(std::iter::repeat_n(s(&tiny), 3000));
    args.extend(["-o", s(&out), "--weights", &w]);
    refused(&args, &["STYLE has 3000 style images, at most 64"], &out_dir);
    refused(
        &["stylize", c, st, "-o", s(&out), "--style-layers", "relu5_1,relu5_1"],
        &["--style-layers names relu5_1 twice"],
        &out_dir,
    );
    // The plan counts every style's targets: 60 styles need more than one.
    let peak = |styles: usize| {
        let mut args = vec!["plan", c];
        args.extend(std::iter::repeat_n(st, styles));
        args.extend(["--size", "128", "--weights", &w]);
        let o = impasto(&args);
        assert!(o.status.success(), "{}", describe(&args, &o));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = text.lines().find(|l| l.contains("(peak)")).unwrap_or_else(|| panic!("{text}")).to_string();
        let cell = line.split('|').find(|c| c.contains("(peak)")).unwrap();
        let gib: f64 = cell.trim().split(' ').next().unwrap().parse().unwrap();
        gib
    };
    let (one, sixty) = (peak(1), peak(60));
    assert!(sixty > one + 0.3, "60 styles' targets ({sixty} GiB) against one's ({one} GiB)");
    // 8. The field or flag at fault.
    let dpi =
        settings("dpi.json", serde_json::json!({"content": c, "styles": [{"image": st}], "output": {"dpi": 0.0}}));
    refused(&["stylize", "--settings", &dpi, "-o", s(&out)], &["dpi.json: output.dpi is 0"], &out_dir);
    for print in ["1x1mm@1dpi", "5x5in@65535dpi", "1e9x1e9in@300dpi"] {
        refused(
            &["stylize", c, st, "-o", s(&out), "--print", print, "--weights", &w],
            &["--print gives a long side of"],
            &out_dir,
        );
    }
    // 10. Totals that wrapped.
    let max = "18446744073709551615";
    refused(
        &[
            "plan",
            c,
            st,
            "--size",
            "600",
            "--scales",
            "300,600",
            "--scale-iterations",
            &format!("{max},{max}"),
            "--weights",
            &w,
        ],
        &["--scale-iterations make more than 100000000 evaluations in all"],
        &out_dir,
    );
    refused(
        &["stylize", c, st, "-o", s(&out), "--iterations", "1000000000"],
        &["--iterations must be between 1 and 100000000"],
        &out_dir,
    );
    // 11. A log over an input (the content, the weights); the input is left as it was.
    let content = dir.path().join("content.jpg");
    std::fs::copy(c, &content).unwrap();
    let before = std::fs::read(&content).unwrap();
    refused(
        &["stylize", s(&content), st, "-o", s(&out), "--log", s(&content), "--size", "32", "--iterations", "1"],
        &["--log names an input", "content.jpg"],
        &out_dir,
    );
    assert_eq!(std::fs::read(&content).unwrap(), before);
}

/// Classes 6 and 9: a file name too long for the file system is refused before any work; a
/// TIFF claiming more than it holds is one line (the `tiff` crate's debug print never shows).
#[test]
fn hostile_names_and_tiffs() {
    if in_own_process("hostile2::hostile_names_and_tiffs") {
        return;
    }
    let dir = tempdir();
    let (w, c, st) = (weights(), examples("tubingen.jpg"), examples("starry_night.jpg"));
    let (c, st) = (c.to_str().unwrap(), st.to_str().unwrap());
    let long = dir.path().join(format!("{}.png", "x".repeat(296)));
    let started = std::time::Instant::now();
    refused(
        &["stylize", c, st, "-o", s(&long), "--size", "64", "--weights", &w],
        &["the file name is 300 bytes long"],
        dir.path(),
    );
    assert!(started.elapsed().as_secs() < 20, "refused before the run");
    // A dry run given an output checks it too.
    let nowhere = dir.path().join("missing").join("out.png");
    refused(&["stylize", c, st, "-o", s(&nowhere), "--dry-run", "--weights", &w], &["does not exist"], dir.path());
    // A TIFF with a text tag claiming four billion bytes, and one with 60,000 tags.
    let tiff = |entries: &[(u16, u16, u32, u32)], count: Option<u16>| {
        let mut b = b"II*\0".to_vec();
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&count.unwrap_or(entries.len() as u16).to_le_bytes());
        for (tag, kind, n, value) in entries {
            for v in [
                tag.to_le_bytes().to_vec(),
                kind.to_le_bytes().to_vec(),
                n.to_le_bytes().to_vec(),
                value.to_le_bytes().to_vec(),
            ] {
                b.extend_from_slice(&v);
            }
        }
        b.extend_from_slice(&[0; 4]);
        b.resize(b.len() + 256, 0);
        b
    };
    let base = [
        (256u16, 3u16, 1u32, 8u32),
        (257, 3, 1, 8),
        (258, 3, 1, 8),
        (262, 3, 1, 1),
        (273, 4, 1, 200),
        (277, 3, 1, 1),
        (279, 4, 1, 64),
    ];
    let mut claims = base.to_vec();
    claims.push((270, 2, 4_000_000_000, 100));
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.png");
    for (name, bytes) in [("claims.tif", tiff(&claims, None)), ("tags.tif", tiff(&base, Some(60000)))] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        refused(&["stylize", s(&p), st, "-o", s(&out), "--weights", &w], &[name], &out_dir);
        refused(&["settings", s(&p)], &[name], &out_dir);
    }
}

/// Class 3: a reader that goes away. Each command exits quietly (0) when its standard output
/// is closed, with no panic; the studio keeps serving.
#[test]
fn closed_pipes_end_commands_quietly() {
    let dir = tempdir();
    let (w, c, st) = (weights(), examples("tubingen.jpg"), examples("starry_night.jpg"));
    let (c, st) = (c.to_str().unwrap(), st.to_str().unwrap());
    let png = dir.path().join("out.png");
    let o =
        impasto(&["stylize", c, st, "-o", s(&png), "--size", "32", "--iterations", "1", "--weights", &w, "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    for args in [
        vec!["plan", c, st, "--size", "4096", "--weights", &w],
        vec!["plan", c, st, "--json", "--weights", &w],
        vec!["stylize", c, st, "--dry-run", "--weights", &w],
        vec!["settings", s(&png)],
        vec!["score", c, st, "--image", c, "--size", "32", "--weights", &w],
        vec!["bench", "--sizes", "16", "--runs", "1"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_impasto"))
            .args(&args)
            .env("IMPASTO_HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
    }
    // `serve | true`: it keeps serving (the address is on its standard error too).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_impasto"))
        .args([
            "serve",
            "--port",
            &port.to_string(),
            "--dir",
            s(&dir.path().join("studio")),
            "--weights",
            &w,
            "--device",
            "cpu",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(serve.stdout.take());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            break http(addr, "GET", "/", &addr.to_string(), "", b"").0;
        }
        assert!(serve.try_wait().unwrap().is_none(), "the server died");
        assert!(start.elapsed().as_secs() < 60, "the server did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status, 200);
    assert!(serve.try_wait().unwrap().is_none(), "still serving");
    // SAFETY: kill sends a signal to the child this test started, by its PID.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let _ = serve.wait();
}
