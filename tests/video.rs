use std::path::{Path, PathBuf};
use std::process::Command;

use impasto::image_io;
use impasto::video::{FlowSettings, Gray, dense_flow, reliability, warping_error};

use crate::util::*;

/// Whether ffmpeg and ffprobe are here; without them the tests skip with a message, unless
/// `IMPASTO_REQUIRE_FFMPEG=1` (CI, which installs them).
fn ffmpeg_here() -> bool {
    let found = ["ffmpeg", "ffprobe"]
        .iter()
        .all(|p| Command::new(p).arg("-version").output().is_ok_and(|o| o.status.success()));
    if !found {
        assert!(
            std::env::var_os("IMPASTO_REQUIRE_FFMPEG").is_none_or(|v| v != "1"),
            "IMPASTO_REQUIRE_FFMPEG=1 but ffmpeg is not installed"
        );
        eprintln!("skipped: ffmpeg is not installed");
    }
    found
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-v", "error", "-nostdin", "-y"]).args(args).output().unwrap();
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `ffprobe`'s `key=value` lines for the streams of `file` (frames counted).
fn streams(file: &Path) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=codec_type,width,height,r_frame_rate,nb_read_packets",
            "-of",
            "compact=p=0:nk=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The decoded frames of a clip, one MD5 per frame (ffmpeg's framemd5).
fn frame_hashes(file: &Path) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit(',').next().unwrap().trim().to_string())
        .collect()
}

/// A clip with sound at an unusual rate: ffmpeg's moving test pattern, 150x84, 15 fps, a tone.
fn test_clip(dir: &Path, frames: usize) -> PathBuf {
    let path = dir.join("clip.mp4");
    let seconds = format!("{}", frames as f64 / 15.0);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=150x84:rate=15",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:sample_rate=22050",
        "-t",
        &seconds,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        s(&path),
    ]);
    path
}

/// A tiny random network as a weights file: runs take a fraction of a second.
fn tiny_network(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.safetensors");
    write_safetensors(&tiny_weights(3, [4, 6, 8, 8, 8]), &path, Some("caffe"));
    path
}

#[test]
fn a_painted_clip_keeps_its_frame_rate_sound_and_aspect() {
    if !ffmpeg_here() {
        return;
    }
    let d = tempdir();
    let clip = test_clip(d.path(), 9);
    let weights = tiny_network(d.path());
    let style = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/starry_night.jpg");
    let out = d.path().join("painted.mkv");
    let args = [
        "video",
        s(&clip),
        s(&style),
        "-o",
        s(&out),
        "--weights",
        s(&weights),
        "--size",
        "61",
        "--iterations",
        "4",
        "--frame-iterations",
        "3",
        "--init",
        "content",
    ];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let info = streams(&out);
    // 61 px on the long side of a 150x84 clip: 61x34, made even: 60x34.
    assert!(
        info.iter().any(|l| l.contains("codec_type=video")
            && l.contains("width=60")
            && l.contains("height=34")
            && l.contains("r_frame_rate=15/1")
            && l.contains("nb_read_packets=9")),
        "{info:?}"
    );
    assert!(info.iter().any(|l| l.contains("codec_type=audio")), "the sound is kept: {info:?}");
    assert!(stderr(&o).contains("with its sound"), "{}", stderr(&o));
    // A shot: frames 4..6 with the sound from 0.2 s, in its own file, in the whole clip's work
    // directory (its frames and flows serve; the shot paints its own frames, from frame 4 afresh).
    let shot = d.path().join("shot.mp4");
    let work = format!("{}.impasto", s(&out));
    let args = [
        "video",
        s(&clip),
        s(&style),
        "-o",
        s(&shot),
        "--weights",
        s(&weights),
        "--size",
        "61",
        "--iterations",
        "4",
        "--frame-iterations",
        "3",
        "--init",
        "content",
        "--frames",
        "4..9",
        "--work",
        &work,
    ];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let info = streams(&shot);
    assert!(info.iter().any(|l| l.contains("codec_type=video") && l.contains("nb_read_packets=6")), "{info:?}");
    assert!(info.iter().any(|l| l.contains("codec_type=audio")), "{info:?}");
    assert!(stderr(&o).contains("frame 1/6 painted") && !stderr(&o).contains("decoding"), "{}", stderr(&o));
    // Shots 1..6 and 4..9 (the first run's last frames taken away) joined: frames 4..6
    // cross-faded from the first shot's to the second's.
    (7..=9).for_each(|k| std::fs::remove_file(Path::new(&work).join(format!("painted/{k:06}.png"))).unwrap());
    let joined = d.path().join("joined.mp4");
    let args = [
        "video",
        s(&clip),
        s(&style),
        "-o",
        s(&joined),
        "--weights",
        s(&weights),
        "--size",
        "61",
        "--iterations",
        "4",
        "--frame-iterations",
        "3",
        "--init",
        "content",
        "--work",
        &work,
        "--join",
    ];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    assert_eq!(frame_hashes(&joined).len(), 9);
    let image = |p: &str| image_io::load(Path::new(&work).join(p)).unwrap();
    let (a, b, j) = (image("painted/000005.png"), image("painted-000004/000005.png"), image("joined/000005.png"));
    assert_ne!(a, b, "the shots differ where they overlap");
    // Halfway through the overlap 4..6: the mean of the two, within the 8-bit rounding.
    let off = a.data.iter().zip(&b.data).zip(&j.data).map(|((a, b), j)| (j - 0.5 * (a + b)).abs()).fold(0.0, f32::max);
    assert!(off <= 0.5 + 1e-3, "{off}");
    assert_eq!(image("joined/000008.png"), image("painted-000004/000008.png"), "after the overlap: the second shot");
    assert_eq!(image("joined/000002.png"), image("painted/000002.png"), "before it: the first");
    // Joining frames no shot painted is refused, naming the frame.
    let (joined, work) = (d.path().join("none.mp4"), d.path().join("none.impasto"));
    let args = [
        "video",
        s(&clip),
        s(&style),
        "-o",
        s(&joined),
        "--weights",
        s(&weights),
        "--size",
        "40",
        "--join",
        "--work",
        s(&work),
    ];
    let o = impasto(&args);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
    assert!(stderr(&o).contains("frame 1 is in no painted shot"), "{}", stderr(&o));
    assert!(!joined.exists() && !work.exists(), "nothing is left behind");
    // A GIF has no sound, and says so by not claiming it.
    let gif = d.path().join("painted.gif");
    let args = [
        "video",
        s(&clip),
        s(&style),
        "-o",
        s(&gif),
        "--weights",
        s(&weights),
        "--size",
        "61",
        "--iterations",
        "4",
        "--frame-iterations",
        "3",
        "--init",
        "content",
        "--frames",
        "1..3",
    ];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    assert!(!stderr(&o).contains("sound"), "{}", stderr(&o));
    assert_eq!(frame_hashes(&gif).len(), 3);
}

#[test]
fn an_interrupted_clip_continues_to_the_frames_of_one_uninterrupted_run() {
    if !ffmpeg_here() {
        return;
    }
    let d = tempdir();
    let clip = test_clip(d.path(), 6);
    let weights = tiny_network(d.path());
    let style = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/starry_night.jpg");
    let common = |out: &Path| -> Vec<String> {
        [
            s(&clip),
            s(&style),
            "-o",
            s(out),
            "--weights",
            s(&weights),
            "--size",
            "48",
            "--iterations",
            "30",
            "--frame-iterations",
            "150",
            "--init",
            "content",
            "--temporal-frames",
            "1,2",
            "--quiet",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let whole = d.path().join("whole.mp4");
    let args: Vec<String> = std::iter::once("video".to_string()).chain(common(&whole)).collect();
    let o = impasto(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", describe(&args, &o));

    // The same clip, stopped with SIGINT once frame 2 is painted, then run again.
    let resumed = d.path().join("resumed.mp4");
    let painted = d.path().join("resumed.mp4.impasto/painted");
    let mut child = Command::new(env!("CARGO_BIN_EXE_impasto")).arg("video").args(common(&resumed)).spawn().unwrap();
    let started = std::time::Instant::now();
    while !painted.join("000002.png").exists() {
        assert!(started.elapsed().as_secs() < 120, "frame 2 never appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let done: Vec<String> = listing(&painted).into_iter().filter(|n| n.ends_with(".png")).collect();
    // Each frame takes 150 iterations: the signal lands well before the sixth.
    assert_eq!(status.code(), Some(130));
    assert!(!resumed.exists(), "no clip before every frame is painted");
    assert!(done.len() < 6, "{done:?}");
    let o = Command::new(env!("CARGO_BIN_EXE_impasto")).arg("video").args(common(&resumed)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for k in 1..=6 {
        let name = format!("{k:06}.png");
        let a = std::fs::read(d.path().join("whole.mp4.impasto/painted").join(&name)).unwrap();
        let b = std::fs::read(painted.join(&name)).unwrap();
        assert!(a == b, "frame {k} differs after the interruption");
    }
    assert_eq!(frame_hashes(&whole), frame_hashes(&resumed));
    assert_eq!(frame_hashes(&whole).len(), 6);
}

#[test]
fn the_temporal_term_steadies_a_pan_without_washing_out_the_style() {
    if !ffmpeg_here() {
        return;
    }
    // A pan over a photograph: a 96x72 window moving 2 px right and 1 px down a frame.
    let d = tempdir();
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tubingen.jpg");
    let clip = d.path().join("pan.mkv");
    ffmpeg(&[
        "-loop",
        "1",
        "-framerate",
        "10",
        "-i",
        s(&photo),
        "-vf",
        "scale=160:-2,crop=96:72:x='2*n':y='n'",
        "-frames:v",
        "5",
        "-c:v",
        "libx264",
        "-crf",
        "4",
        "-pix_fmt",
        "yuv444p",
        s(&clip),
    ]);
    let weights = real_weights_path();
    let style = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/starry_night.jpg");
    let paint = |name: &str, temporal_weight: &str| -> PathBuf {
        let out = d.path().join(name);
        let args = [
            "video",
            s(&clip),
            s(&style),
            "-o",
            s(&out),
            "--weights",
            s(&weights),
            "--size",
            "96",
            "--iterations",
            "60",
            "--frame-iterations",
            "60",
            "--init",
            "content",
            "--temporal-weight",
            temporal_weight,
            "--quiet",
        ];
        let o = impasto(&args);
        assert!(o.status.success(), "{}", describe(&args, &o));
        d.path().join(format!("{name}.impasto"))
    };
    let independent = paint("independent.mp4", "0");
    let temporal = paint("temporal.mp4", "1e4");
    // E_warp over the painted frames, with the input clip's own flow.
    let frame = |dir: &Path, sub: &str, k: usize| image_io::load(dir.join(sub).join(format!("{k:06}.png"))).unwrap();
    let e_warp = |dir: &Path| -> f64 {
        (2..=5)
            .map(|k| {
                let (now, before) = (frame(dir, "frames", k), frame(dir, "frames", k - 1));
                let backward =
                    dense_flow(&Gray::from_image(&now), &Gray::from_image(&before), &FlowSettings::default());
                let forward = dense_flow(&Gray::from_image(&before), &Gray::from_image(&now), &FlowSettings::default());
                warping_error(
                    &frame(dir, "painted", k),
                    &frame(dir, "painted", k - 1),
                    &backward,
                    &reliability(&backward, &forward),
                )
            })
            .sum::<f64>()
            / 4.0
    };
    let (e_independent, e_temporal) = (e_warp(&independent), e_warp(&temporal));
    assert!(e_temporal < 0.3 * e_independent, "E_warp {e_temporal} with the temporal term, {e_independent} without");
    // The style is kept: each painted frame's style loss within 1.5x of the independent one's.
    let style_loss = |dir: &Path, k: usize| -> f64 {
        let (content, painted) = (dir.join(format!("frames/{k:06}.png")), dir.join(format!("painted/{k:06}.png")));
        let args = ["score", s(&content), s(&style), "--image", s(&painted), "--weights", s(&weights), "--size", "96"];
        let o = impasto(&args);
        assert!(o.status.success(), "{}", describe(&args, &o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["style"].as_f64().unwrap()
    };
    let mean = |dir: &Path| (1..=5).map(|k| style_loss(dir, k)).sum::<f64>() / 5.0;
    let (s_independent, s_temporal) = (mean(&independent), mean(&temporal));
    assert!(
        s_temporal < 1.5 * s_independent,
        "style loss {s_temporal} with the temporal term, {s_independent} without"
    );
}

#[test]
fn bad_clips_and_options_are_one_line_and_exit_2_with_nothing_written() {
    if !ffmpeg_here() {
        return;
    }
    let d = tempdir();
    let dir = d.path();
    let clip = test_clip(dir, 4);
    let style = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/starry_night.jpg");
    let weights = tiny_network(dir);
    // Files that are not usable clips.
    std::fs::write(dir.join("text.mp4"), "this is not a video\n".repeat(50)).unwrap();
    let bytes = std::fs::read(&clip).unwrap();
    std::fs::write(dir.join("truncated.mp4"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(dir.join("empty.mp4"), b"").unwrap();
    ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=330:sample_rate=22050", "-t", "0.5", s(&dir.join("sound.m4a"))]);
    ffmpeg(&["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-frames:v", "1", s(&dir.join("still.png"))]);
    // A Matroska stream cut in the middle: ffprobe reads what is there, with an error.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10",
        "-t",
        "3",
        "-c:v",
        "libx264",
        s(&dir.join("whole.mkv")),
    ]);
    let whole = std::fs::read(dir.join("whole.mkv")).unwrap();
    std::fs::write(dir.join("cut.mkv"), &whole[..whole.len() / 2]).unwrap();
    // A sound file with cover art: its one picture is not a clip.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:sample_rate=22050",
        "-i",
        s(&dir.join("still.png")),
        "-t",
        "0.5",
        "-map",
        "0:a",
        "-map",
        "1:v",
        "-c:v",
        "png",
        "-disposition:v",
        "attached_pic",
        s(&dir.join("cover.m4a")),
    ]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["text.mp4".into()], "is not a video"),
        (vec!["truncated.mp4".into()], "truncated.mp4"),
        (vec!["cut.mkv".into()], "is truncated or damaged"),
        (vec!["cover.m4a".into()], "has no video stream"),
        (vec!["empty.mp4".into()], "empty.mp4"),
        (vec!["sound.m4a".into()], "has no video stream"),
        (vec!["still.png".into()], "is a still image"),
        (vec!["missing.mp4".into()], "no such file"),
        (vec!["clip.mp4".into(), "--frames".into(), "0..3".into()], "--frames"),
        (vec!["clip.mp4".into(), "--frames".into(), "3..2".into()], "--frames"),
        (vec!["clip.mp4".into(), "--frames".into(), "9..".into()], "has 4 frames"),
        (vec!["clip.mp4".into(), "--temporal-frames".into(), "1,0".into()], "--temporal-frames"),
        (vec!["clip.mp4".into(), "--temporal-frames".into(), "1,1".into()], "--temporal-frames"),
        (vec!["clip.mp4".into(), "--temporal-weight".into(), "-3".into()], "--temporal-weight"),
        (vec!["clip.mp4".into(), "--temporal-weight".into(), "nan".into()], "--temporal-weight"),
        (vec!["clip.mp4".into(), "--frame-iterations".into(), "0".into()], "--frame-iterations"),
        (vec!["clip.mp4".into(), "--size".into(), "0".into()], "--size"),
    ];
    for (first, expected) in cases {
        let out = dir.join("out.mp4");
        let mut args: Vec<String> = vec!["video".into(), s(&dir.join(&first[0])).into(), s(&style).into()];
        args.extend(first[1..].iter().cloned());
        args.extend([
            "-o".into(),
            s(&out).into(),
            "--weights".into(),
            s(&weights).into(),
            "--init".into(),
            "content".into(),
            "--size".into(),
            "32".into(),
            "--iterations".into(),
            "2".into(),
        ]);
        // The last --size wins in clap; put a case's own --size after the default one.
        if let Some(i) = first.iter().position(|a| a == "--size") {
            args.extend(["--size".into(), first[i + 1].clone()]);
        }
        let o = impasto(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
        assert_eq!(err.trim_end().lines().count(), 1, "{}", describe(&args, &o));
        assert!(err.contains(expected), "expected {expected:?}: {}", describe(&args, &o));
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{}", describe(&args, &o));
        assert!(!dir.join("out.mp4.impasto").exists(), "no work directory left: {}", describe(&args, &o));
    }
    // An output that is not a video container, and a clip written over itself.
    for (out, expected) in [("out.png", "a painted clip is written as"), ("clip.mp4", "names the clip itself")] {
        let out = dir.join(out);
        let args = ["video", s(&clip), s(&style), "-o", s(&out), "--weights", s(&weights), "--init", "content"];
        let o = impasto(&args);
        assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
        assert!(stderr(&o).contains(expected), "{}", describe(&args, &o));
    }
    assert_eq!(std::fs::read(&clip).unwrap(), bytes, "the clip is untouched");
    // No ffmpeg on PATH: said so, with how to install it.
    let empty = dir.join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let out = dir.join("out.mp4");
    let args = ["video", s(&clip), s(&style), "-o", s(&out), "--weights", s(&weights), "--init", "content"];
    let o = impasto_env(&args, &[("PATH", s(&empty))]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
    assert!(
        stderr(&o).contains("ffprobe is not installed") && stderr(&o).contains("apt-get install ffmpeg"),
        "{}",
        stderr(&o)
    );
    // A work directory of another painting is refused, not mixed in.
    let out = dir.join("a.mp4");
    let args = [
        "video",
        s(&clip),
        s(&style),
        "-o",
        s(&out),
        "--weights",
        s(&weights),
        "--init",
        "content",
        "--size",
        "32",
        "--iterations",
        "2",
        "--frame-iterations",
        "2",
        "--quiet",
    ];
    assert!(impasto(&args).status.success());
    std::fs::remove_file(&out).unwrap();
    let args = [
        "video",
        s(&clip),
        s(&style),
        "-o",
        s(&out),
        "--weights",
        s(&weights),
        "--init",
        "content",
        "--size",
        "40",
        "--iterations",
        "2",
        "--frame-iterations",
        "2",
        "--quiet",
    ];
    let o = impasto(&args);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
    assert!(stderr(&o).contains("painted with other settings"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn the_plan_of_a_clip_counts_its_frames_and_time() {
    if !ffmpeg_here() {
        return;
    }
    let d = tempdir();
    let clip = test_clip(d.path(), 7);
    let weights = tiny_network(d.path());
    let style = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/starry_night.jpg");
    let args = [
        "video",
        s(&clip),
        s(&style),
        "--dry-run",
        "--weights",
        s(&weights),
        "--size",
        "64",
        "--iterations",
        "50",
        "--frame-iterations",
        "20",
        "--init",
        "content",
        "--frames",
        "2..",
    ];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("6 frames (2..7 of 7) at 64x36, 15.000 fps, with sound"), "{text}");
    assert!(text.contains("first frame: 50 iterations") && text.contains("each later frame: 20 iterations"), "{text}");
    assert!(text.contains("total: about"), "{text}");
    assert_eq!(listing(d.path()), ["clip.mp4", "tiny.safetensors"], "a plan writes nothing");
    // `impasto plan` knows a clip by its name.
    let args = [
        "plan",
        s(&clip),
        s(&style),
        "--weights",
        s(&weights),
        "--size",
        "64",
        "--init",
        "content",
        "--temporal-weight",
        "0",
    ];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("7 frames (1..7 of 7)") && text.contains("every frame on its own"), "{text}");
}

#[test]
fn passes_alternate_over_the_clip_and_resume_mid_pass() {
    if !ffmpeg_here() {
        return;
    }
    let d = tempdir();
    let clip = test_clip(d.path(), 4);
    let weights = tiny_network(d.path());
    let style = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/starry_night.jpg");
    let out = d.path().join("passes.mp4");
    let args = [
        "video",
        s(&clip),
        s(&style),
        "-o",
        s(&out),
        "--weights",
        s(&weights),
        "--size",
        "48",
        "--iterations",
        "6",
        "--frame-iterations",
        "5",
        "--init",
        "content",
        "--passes",
        "3",
    ];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let err = stderr(&o);
    assert_eq!(err.matches("painted in").count(), 12, "{err}");
    assert!(err.contains("frame 4/4 (pass 2/3)") && err.contains("(pass 3/3)"), "{err}");
    let work = d.path().join("passes.mp4.impasto");
    for dir in ["painted", "painted-pass2-to-000004", "painted-pass3-to-000004"] {
        assert_eq!(listing(&work.join(dir)).len(), 4, "{dir}");
    }
    // Each pass changes the frames: the clip is the last pass's.
    let read = |p: &str| std::fs::read(work.join(p)).unwrap();
    assert_ne!(read("painted/000002.png"), read("painted-pass3-to-000004/000002.png"));
    assert_eq!(frame_hashes(&out).len(), 4);
    // Frames 2 and 1 of pass 2 and all of pass 3 taken away (as if stopped there): the rerun
    // paints the same ones again.
    let kept: Vec<Vec<u8>> = (1..=4).map(|k| read(&format!("painted-pass3-to-000004/{k:06}.png"))).collect();
    for k in [1, 2] {
        std::fs::remove_file(work.join(format!("painted-pass2-to-000004/{k:06}.png"))).unwrap();
    }
    std::fs::remove_dir_all(work.join("painted-pass3-to-000004")).unwrap();
    std::fs::remove_file(&out).unwrap();
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    assert_eq!(stderr(&o).matches("painted in").count(), 6, "{}", stderr(&o));
    for k in 1..=4 {
        assert!(read(&format!("painted-pass3-to-000004/{k:06}.png")) == kept[k - 1], "frame {k} of pass 3 differs");
    }
    // Bad counts of passes are refused, naming the flag.
    for bad in ["0", "33", "-1"] {
        let mut args = args.to_vec();
        let i = args.iter().position(|a| *a == "--passes").unwrap();
        args[i + 1] = bad;
        let o = impasto(&args);
        assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
        assert!(stderr(&o).contains("--passes"), "{}", stderr(&o));
    }
}

#[test]
fn fast_mode_paints_each_frame_as_stylize_paints_it() {
    if !ffmpeg_here() {
        return;
    }
    let d = tempdir();
    let clip = test_clip(d.path(), 3);
    let out = d.path().join("fast.mp4");
    let args = ["video", s(&clip), "--builtin", "5", "--size", "64", "-o", s(&out)];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    assert_eq!(frame_hashes(&out).len(), 3);
    let work = d.path().join("fast.mp4.impasto");
    assert!(listing(&work.join("flows")).is_empty(), "no flows without a temporal term");
    // Each painted frame is the picture `impasto stylize --builtin` makes of that frame.
    for k in 1..=3 {
        let frame = work.join(format!("frames/{k:06}.png"));
        let alone = d.path().join(format!("alone{k}.png"));
        let args = ["stylize", s(&frame), "--builtin", "5", "--size", "64", "-o", s(&alone)];
        let o = impasto(&args);
        assert!(o.status.success(), "{}", describe(&args, &o));
        let painted = image_io::load(work.join(format!("painted/{k:06}.png"))).unwrap();
        assert_eq!(painted, image_io::load(&alone).unwrap(), "frame {k}");
    }
}

#[test]
fn a_clip_is_painted_like_a_picture_from_its_settings() {
    if !ffmpeg_here() {
        return;
    }
    let d = tempdir();
    let clip = test_clip(d.path(), 3);
    let weights = tiny_network(d.path());
    let style = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/starry_night.jpg");
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tubingen.jpg");
    let picture = d.path().join("picture.png");
    let args = [
        "stylize",
        s(&photo),
        s(&style),
        "-o",
        s(&picture),
        "--weights",
        s(&weights),
        "--size",
        "40",
        "--iterations",
        "3",
        "--init",
        "content",
        "--style-weight",
        "2e4",
    ];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    let out = d.path().join("like.mp4");
    let args = ["video", s(&clip), "--settings", s(&picture), "-o", s(&out), "--frame-iterations", "2"];
    let o = impasto(&args);
    assert!(o.status.success(), "{}", describe(&args, &o));
    // The picture's size and style weight, on the clip's frames.
    assert!(
        streams(&out).iter().any(|l| l.contains("width=40") && l.contains("nb_read_packets=3")),
        "{:?}",
        streams(&out)
    );
    let job = std::fs::read_to_string(d.path().join("like.mp4.impasto/job.json")).unwrap();
    assert!(job.contains("20000") && job.contains("clip.mp4"), "{job}");
    // Styles or options beside --settings are refused.
    let args = ["video", s(&clip), s(&style), "--settings", s(&picture), "-o", s(&out)];
    let o = impasto(&args);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&args, &o));
    assert!(stderr(&o).contains("cannot be combined with --settings"), "{}", stderr(&o));
}
