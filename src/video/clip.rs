//! A clip on disk, read and written through the system's `ffprobe` and `ffmpeg` as
//! subprocesses: they read every container and codec a user's clips come in, the binding crates
//! would tie the build to one FFmpeg's headers, and a subprocess that fails on a hostile file
//! cannot take impasto down with it. Frames travel as PNG files in a directory, numbered from 1
//! (`000001.png`), so a run can stop and resume between any two of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

use crate::{Error, Result};

/// The most frames a clip may have (an hour at 25 fps is 90 000).
pub const MAX_FRAMES: usize = 200_000;
/// The longest side a clip's frames may have, in pixels (the source; the painted size is the
/// run's `size`).
pub const MAX_SIDE: usize = 16_384;

/// What `ffprobe` says about a clip.
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    /// The file.
    pub path: PathBuf,
    /// The first video stream's frame size.
    pub width: usize,
    /// The first video stream's frame size.
    pub height: usize,
    /// Its frames, counted (not the container's estimate).
    pub frames: usize,
    /// Its frame rate, kept for the painted clip.
    pub rate: Rate,
    /// Whether it has an audio stream (copied into the painted clip).
    pub audio: bool,
}

/// A frame rate as the fraction ffmpeg gives (`30000/1001`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Frames...
    pub num: u32,
    /// ...per this many seconds.
    pub den: u32,
}

impl Rate {
    /// Frames per second.
    pub fn fps(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }

    fn parse(text: &str) -> Option<Rate> {
        let (n, d) = text.split_once('/').unwrap_or((text, "1"));
        let rate = Rate { num: n.trim().parse().ok()?, den: d.trim().parse().ok()? };
        (rate.num > 0 && rate.den > 0 && rate.fps() <= 1000.0).then_some(rate)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// The video containers a painted clip can be written as (by its extension).
pub const OUTPUT_EXTENSIONS: [&str; 6] = ["mp4", "mkv", "mov", "webm", "avi", "gif"];

/// Checks a painted clip's path before any work: a known extension, and a directory that exists.
pub fn check_output(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if !ext.as_deref().is_some_and(|e| OUTPUT_EXTENSIONS.contains(&e)) {
        return Err(Error::Output {
            path: path.into(),
            message: format!("a painted clip is written as {}", OUTPUT_EXTENSIONS.map(|e| format!(".{e}")).join(", ")),
        });
    }
    if path.is_dir() {
        return Err(Error::Output { path: path.into(), message: "is a directory".into() });
    }
    let dir = parent(path);
    if !dir.is_dir() {
        return Err(Error::Output { path: path.into(), message: format!("{} is not a directory", dir.display()) });
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Runs one of ffmpeg's programs; a missing program is a clear error saying how to install it.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<Output> {
    Command::new(program).args(args).stdin(std::process::Stdio::null()).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Config(format!(
                "{program} is not installed (video needs ffmpeg and ffprobe on PATH: apt-get install ffmpeg, \
                 brew install ffmpeg, or ffmpeg.org)"
            ))
        } else {
            Error::Config(format!("cannot run {program}: {e}"))
        }
    })
}

/// The last line ffmpeg wrote on standard error, with the file name it repeats taken out.
fn last_line(stderr: &[u8], path: &Path) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message");
    let name = path.to_string_lossy();
    line.replace(&format!("{name}: "), "").chars().take(200).collect()
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeStream {
    codec_type: Option<String>,
    disposition: Option<ProbeDisposition>,
    width: Option<u64>,
    height: Option<u64>,
    r_frame_rate: Option<String>,
    avg_frame_rate: Option<String>,
    nb_read_packets: Option<String>,
}

#[derive(Deserialize)]
struct ProbeDisposition {
    #[serde(default)]
    attached_pic: u8,
}

#[derive(Deserialize)]
struct ProbeFormat {
    format_name: Option<String>,
}

/// Reads what a clip holds, counting its frames; every way a file can fail to be a usable clip
/// (not a video, a still image, no video stream, no frames, absurd sizes) is an [`Error::Image`]
/// naming it.
pub fn probe(path: &Path) -> Result<Clip> {
    let bad = |message: String| Error::image(path, message);
    if !path.is_file() {
        return Err(bad(if path.exists() { "is not a file".into() } else { "no such file".into() }));
    }
    let out = run(
        "ffprobe",
        &[
            "-v".as_ref(),
            "error".as_ref(),
            "-count_packets".as_ref(),
            "-show_entries".as_ref(),
            "stream=codec_type,width,height,r_frame_rate,avg_frame_rate,nb_read_packets:stream_disposition=attached_pic:format=format_name".as_ref(),
            "-of".as_ref(),
            "json".as_ref(),
            path.as_os_str(),
        ],
    )?;
    if !out.status.success() {
        return Err(bad(format!("is not a video ffmpeg can read ({})", last_line(&out.stderr, path))));
    }
    // Read to the end with errors ("File ended prematurely"): frames are missing.
    if !out.stderr.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(format!("is truncated or damaged ({})", last_line(&out.stderr, path))));
    }
    let probe: Probe =
        serde_json::from_slice(&out.stdout).map_err(|e| bad(format!("ffprobe's answer is not understood: {e}")))?;
    let format = probe.format.and_then(|f| f.format_name).unwrap_or_default();
    if format.starts_with("image2") || format.ends_with("_pipe") {
        return Err(bad("is a still image, not a video (impasto stylize paints it)".into()));
    }
    let audio = probe.streams.iter().any(|s| s.codec_type.as_deref() == Some("audio"));
    // A sound file's cover art is a "video" stream of one picture: not a clip.
    let video = probe
        .streams
        .iter()
        .find(|s| {
            s.codec_type.as_deref() == Some("video") && s.disposition.as_ref().is_none_or(|d| d.attached_pic == 0)
        })
        .ok_or_else(|| bad("has no video stream".into()))?;
    let (width, height) = match (video.width, video.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w as usize, h as usize),
        _ => return Err(bad("its video stream has no frame size".into())),
    };
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(bad(format!("its frames are {width}x{height}; at most {MAX_SIDE} pixels a side")));
    }
    let frames: usize = video.nb_read_packets.as_deref().and_then(|n| n.parse().ok()).unwrap_or(0);
    if frames == 0 {
        return Err(bad("has no frames".into()));
    }
    if frames > MAX_FRAMES {
        return Err(bad(format!("has {frames} frames; at most {MAX_FRAMES} (cut it into shots)")));
    }
    // The average rate: a variable-rate clip (a phone's) has its real rate there.
    let rate = [&video.avg_frame_rate, &video.r_frame_rate]
        .into_iter()
        .find_map(|r| r.as_deref().and_then(Rate::parse))
        .ok_or_else(|| bad("its video stream has no frame rate".into()))?;
    Ok(Clip { path: path.into(), width, height, frames, rate, audio })
}

/// The painted frames' size for a clip painted at `size` on its long side: the source's aspect,
/// both sides even (the usual video encoders need it), at least 16 (the network's smallest).
pub fn frame_size(clip: &Clip, size: usize) -> (usize, usize) {
    let (w, h) = crate::image_io::fit_long_side(clip.width, clip.height, size);
    let even = |n: usize| (n & !1).max(16);
    (even(w), even(h))
}

/// The path of frame `k` (from 1) in a frame directory.
pub fn frame_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("{k:06}.png"))
}

/// Decodes frames `first..first + count` (from 1) of a clip, scaled to `width` x `height`, into
/// `dir` as `000001.png`... (by their number in the clip). They are written into a scratch
/// directory beside `dir` and moved in once all are there: `dir` never holds half a frame. A clip
/// that yields fewer frames than it counted, with errors from the decoder, is truncated or
/// damaged: an error.
pub fn extract(clip: &Clip, dir: &Path, (width, height): (usize, usize), first: usize, count: usize) -> Result<()> {
    // A scratch directory of this call's own: shots of one clip may decode side by side.
    let scratch = crate::image_io::temp_path(parent(dir));
    let io = |e: std::io::Error| Error::Output { path: scratch.clone(), message: e.to_string() };
    std::fs::create_dir_all(&scratch).map_err(io)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::Output { path: dir.into(), message: e.to_string() })?;
    let filter =
        format!("select='between(n\\,{}\\,{})',scale={width}:{height}:flags=bicubic", first - 1, first + count - 2);
    let pattern = scratch.join("%06d.png");
    let start = first.to_string();
    let frames = count.to_string();
    let out = run(
        "ffmpeg",
        &[
            "-v".as_ref(),
            "error".as_ref(),
            "-nostdin".as_ref(),
            "-i".as_ref(),
            clip.path.as_os_str(),
            "-map".as_ref(),
            "0:v:0".as_ref(),
            "-vf".as_ref(),
            filter.as_ref(),
            "-fps_mode".as_ref(),
            "passthrough".as_ref(),
            "-frames:v".as_ref(),
            frames.as_ref(),
            "-start_number".as_ref(),
            start.as_ref(),
            "-pix_fmt".as_ref(),
            "rgb24".as_ref(),
            pattern.as_os_str(),
        ],
    )?;
    let decoded = (first..first + count).take_while(|&k| frame_path(&scratch, k).is_file()).count();
    let result = if !out.status.success() {
        Err(Error::image(&clip.path, format!("cannot be decoded ({})", last_line(&out.stderr, &clip.path))))
    } else if decoded < count && !out.stderr.is_empty() {
        Err(Error::image(
            &clip.path,
            format!(
                "is truncated or damaged: {decoded} of {count} frames decoded ({})",
                last_line(&out.stderr, &clip.path)
            ),
        ))
    } else if decoded == 0 {
        Err(Error::image(&clip.path, "has no frames that can be decoded".to_string()))
    } else {
        (first..first + decoded)
            .try_for_each(|k| std::fs::rename(frame_path(&scratch, k), frame_path(dir, k)))
            .map_err(io)
    };
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Encodes frames `first..first + count` of `dir` at `rate` into `output`, with the audio of
/// `sound` (a clip, from `start` seconds) when it has any: copied, or re-encoded where the
/// container cannot hold it as it is (a GIF holds none). The clip is written beside `output`
/// under a scratch name and renamed when complete. Returns whether it has sound.
pub fn encode(
    dir: &Path,
    first: usize,
    count: usize,
    rate: Rate,
    sound: Option<(&Clip, f64)>,
    output: &Path,
) -> Result<bool> {
    let ext = output.extension().and_then(|e| e.to_str()).unwrap_or("mp4").to_ascii_lowercase();
    // A name of this call's own, ending in the extension that tells ffmpeg the container.
    let scratch = PathBuf::from(format!("{}.{ext}", crate::image_io::temp_path(parent(output)).display()));
    let pattern = dir.join("%06d.png");
    let (rate_text, start_number) = (rate.to_string(), first.to_string());
    let length = format!("{:.9}", count as f64 * f64::from(rate.den) / f64::from(rate.num));
    let offset = sound.map(|(_, s)| format!("{s:.6}")).unwrap_or_default();
    let attempt = |audio: Option<&str>| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-v".as_ref(),
            "error".as_ref(),
            "-nostdin".as_ref(),
            "-y".as_ref(),
            "-framerate".as_ref(),
            rate_text.as_ref(),
            "-start_number".as_ref(),
            start_number.as_ref(),
            "-i".as_ref(),
            pattern.as_os_str(),
        ];
        if let (Some(codec), Some((clip, _))) = (audio, sound) {
            args.extend::<[&std::ffi::OsStr; 10]>([
                "-ss".as_ref(),
                offset.as_ref(),
                "-i".as_ref(),
                clip.path.as_os_str(),
                "-map".as_ref(),
                "0:v".as_ref(),
                "-map".as_ref(),
                "1:a?".as_ref(),
                "-c:a".as_ref(),
                codec.as_ref(),
            ]);
        }
        // The length, not a frame count: `-frames:v` drops the audio.
        args.extend::<[&std::ffi::OsStr; 2]>(["-t".as_ref(), length.as_ref()]);
        if ext == "gif" {
            args.extend::<[&std::ffi::OsStr; 2]>([
                "-vf".as_ref(),
                "split[a][b];[a]palettegen[p];[b][p]paletteuse".as_ref(),
            ]);
        } else {
            args.extend::<[&std::ffi::OsStr; 2]>(["-pix_fmt".as_ref(), "yuv420p".as_ref()]);
        }
        if matches!(ext.as_str(), "mp4" | "mkv" | "mov") {
            args.extend::<[&std::ffi::OsStr; 4]>(["-c:v".as_ref(), "libx264".as_ref(), "-crf".as_ref(), "17".as_ref()]);
        }
        args.push(scratch.as_os_str());
        run("ffmpeg", &args)
    };
    let with_audio = sound.is_some_and(|(c, _)| c.audio) && ext != "gif";
    crate::image_io::register(&scratch);
    let result = encode_into(&scratch, attempt, with_audio, &ext, output);
    crate::image_io::unregister(&scratch);
    result.map(|()| with_audio)
}

/// [`encode`]'s attempts (`attempt` runs ffmpeg with the audio codec given, or no audio) and
/// the rename of the finished clip.
fn encode_into(
    scratch: &Path,
    attempt: impl Fn(Option<&str>) -> Result<Output>,
    with_audio: bool,
    ext: &str,
    output: &Path,
) -> Result<()> {
    let mut out = attempt(with_audio.then_some("copy"))?;
    if !out.status.success() && with_audio {
        // The container cannot hold the audio as it is (AAC in WebM): encode it afresh.
        out = attempt(Some(if ext == "webm" { "libopus" } else { "aac" }))?;
    }
    if !out.status.success() {
        let _ = std::fs::remove_file(scratch);
        return Err(Error::Output {
            path: output.into(),
            message: format!("ffmpeg: {}", last_line(&out.stderr, scratch)),
        });
    }
    std::fs::rename(scratch, output).map_err(|e| {
        let _ = std::fs::remove_file(scratch);
        Error::Output { path: output.into(), message: e.to_string() }
    })
}
