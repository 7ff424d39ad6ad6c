//! `impasto video CLIP STYLE... -o OUT`: a clip painted frame by frame in a work directory
//! ([`impasto::video::work`]): decoded once, the flows computed a frame ahead of the painting
//! on a thread of their own, each painted frame kept, the clip encoded with its frame rate and
//! sound when every frame is painted. Ctrl-C stops at the current frame; the same command
//! again continues there and paints what one uninterrupted run paints.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use impasto::device::{self, SharedBackend};
use impasto::engine::Backend;
use impasto::image_io::Image;
use impasto::settings::Settings;
use impasto::transfer::{Init, Inputs, Scales, Stop, Stylizer};
use impasto::video::clip::{self, Clip};
use impasto::video::work::FrameHold;
use impasto::video::{FlowSettings, VideoSettings, WorkDir};

use super::args::VideoArgs;
use super::progress::CliObserver;
use super::{in_terms, same_file};

/// Runs `impasto video`.
pub fn video(a: &VideoArgs) -> Result<i32> {
    let (settings, video) = a.settings().map_err(|e| in_video_flags(e.into(), &Settings::new("", [])))?;
    run(a, &settings, &video).map_err(|e| in_video_flags(e, &settings))
}

/// Whether a file name is a clip's by its extension (`impasto plan CLIP ...` plans a video).
pub fn is_clip_name(path: &Path) -> bool {
    const CLIPS: [&str; 14] =
        ["mp4", "m4v", "mkv", "mov", "webm", "avi", "gif", "mpg", "mpeg", "ts", "mts", "wmv", "flv", "ogv"];
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| CLIPS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Errors in the command line's terms: the video's fields as its flags, the rest as stylize's.
fn in_video_flags(e: anyhow::Error, settings: &Settings) -> anyhow::Error {
    match e.downcast::<impasto::Error>() {
        Ok(impasto::Error::Setting { field, message }) if field.starts_with("video.") => {
            anyhow::anyhow!("--{} {message}", field["video.".len()..].replace('_', "-"))
        }
        Ok(e) => in_terms(e.into(), settings, None),
        Err(e) => e,
    }
}

/// The frames a run paints: `--frames`, within the clip.
fn frame_range(a: &VideoArgs, clip: &Clip) -> Result<(usize, usize)> {
    let (first, last) = a.frames.unwrap_or((1, None));
    if first > clip.frames {
        bail!("--frames {first}..: {} has {} frames", clip.path.display(), clip.frames);
    }
    Ok((first, last.unwrap_or(clip.frames).min(clip.frames)))
}

/// The work directory: `--work`, else `OUT.impasto` beside the output.
fn work_dir(a: &VideoArgs, output: &Path) -> PathBuf {
    a.work.clone().unwrap_or_else(|| {
        let mut name = output.file_name().unwrap_or_default().to_os_string();
        name.push(".impasto");
        output.with_file_name(name)
    })
}

fn run(a: &VideoArgs, settings: &Settings, video: &VideoSettings) -> Result<i32> {
    video.validate()?;
    Stylizer::new(settings.config.clone())?;
    if let Some(fast) = &settings.fast {
        fast.check()?;
    }
    if let Some(output) = &a.output {
        clip::check_output(output)?;
        if same_file(output, &settings.content) {
            bail!("{}: --output names the clip itself", output.display());
        }
    }
    if settings.is_fast_only() && video.passes > 1 {
        bail!("--passes: fast mode paints each frame once, in one pass of its network");
    }
    if settings.config.time_limit.is_some() {
        bail!(
            "--time-limit: a clip's frames would depend on the clock (and a rerun would not paint them again alike); use --iterations and --frame-iterations"
        );
    }
    let clip = clip::probe(&settings.content)?;
    let (first, last) = frame_range(a, &clip)?;
    let (width, height) = clip::frame_size(&clip, settings.config.size);
    // Each frame is decoded at the painted size, so every scale of a run is the frame's own.
    let mut frame_settings = settings.clone();
    frame_settings.config = frame_settings.config.size(width.max(height));
    frame_settings.plan = None;
    let count = last - first + 1;
    if a.dry_run {
        return dry_run(&frame_settings, video, &clip, (first, last), (width, height));
    }
    let output = a.output.as_deref().expect("clap requires --output without --dry-run");
    let root = work_dir(a, output);
    let job = serde_json::json!({
        "clip": { "path": clip.path, "frames": clip.frames, "width": clip.width, "height": clip.height, "rate": clip.rate.to_string() },
        "size": [width, height],
        "settings": serde_json::from_str::<serde_json::Value>(&frame_settings.to_json())?,
        "video": video,
    });
    // Ctrl-C from here on stops at a frame, or stops ffmpeg and says so.
    let signal = super::progress::interrupt_flag();
    let interrupted = || match signal.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        s => Some(128 + s),
    };
    // A work directory this run makes and leaves with nothing in it is taken away again.
    let made = !root.exists();
    let work = WorkDir::open(&root, &serde_json::to_string_pretty(&job)?, first)?;
    let undo = |e: anyhow::Error| {
        // Made here, so painted here if at all, in order: nothing painted if not the first step.
        if made && work.first_unpainted(&video.steps(first, last), last) == Some(0) {
            let _ = std::fs::remove_dir_all(&root);
        }
        match interrupted() {
            Some(code) => {
                errln!("impasto: interrupted; the same command continues where this one stopped");
                Ok(code)
            }
            None => Err(e),
        }
    };
    if a.join {
        if let Err(e) = work.pass(video.passes, last).write_joined(first..=last) {
            return undo(e.into());
        }
        return encode(a, &clip, &work.joined_dir(), (first, last), (width, height), output, &root).or_else(undo);
    }
    if !work.has_frames(first..=last) {
        if !a.quiet {
            errln!("impasto: decoding frames {first}..{last} of {} at {width}x{height}", clip.path.display());
        }
        if let Err(e) = clip::extract(&clip, &work.frames_dir(), (width, height), first, count) {
            return undo(e.into());
        }
    }
    // A clip that counted more frames than it decodes (with no decoder error) ends earlier.
    let last = (first..=last).take_while(|&k| work.frame(k).is_file()).last().unwrap_or(first);
    let count = last - first + 1;
    let steps = video.steps(first, last);
    if let Some(from) = work.first_unpainted(&steps, last) {
        let painter = Painter { settings: &frame_settings, video, work: &work, first, last, quiet: a.quiet, output };
        if let Some(code) = painter.paint(&steps, from)? {
            return Ok(code);
        }
    } else if !a.quiet {
        errln!("impasto: all {count} frames are painted in {}; encoding", root.display());
    }
    encode(a, &clip, &work.pass(video.passes, last).painted_dir(), (first, last), (width, height), output, &root)
        .or_else(undo)
}

/// Encodes frames `first..=last` of `dir` with the clip's rate and sound.
fn encode(
    a: &VideoArgs,
    clip: &Clip,
    dir: &Path,
    (first, last): (usize, usize),
    (width, height): (usize, usize),
    output: &Path,
    root: &Path,
) -> Result<i32> {
    let count = last - first + 1;
    let start_seconds = (first - 1) as f64 / clip.rate.fps();
    let sound = clip::encode(dir, first, count, clip.rate, Some((clip, start_seconds)), output)?;
    if !a.quiet {
        let sound = if sound { ", with its sound" } else { "" };
        errln!(
            "impasto: wrote {} ({count} frames of {width}x{height} at {:.3} fps{sound}; frames kept in {})",
            output.display(),
            clip.rate.fps(),
            root.display()
        );
    }
    Ok(0)
}

/// `impasto video --dry-run`: the frames, their size, and the time of the first frame and of
/// each later one on this machine.
fn dry_run(
    settings: &Settings,
    video: &VideoSettings,
    clip: &Clip,
    (first, last): (usize, usize),
    (width, height): (usize, usize),
) -> Result<i32> {
    let count = last - first + 1;
    outln!(
        "impasto plan: {} frames ({first}..{last} of {}) at {width}x{height}, {:.3} fps{}",
        count,
        clip.frames,
        clip.rate.fps(),
        if clip.audio { ", with sound" } else { "" }
    );
    if settings.is_fast_only() {
        outln!("fast mode: one pass of a feed-forward network a frame; no optimisation, no temporal term");
        return Ok(0);
    }
    // A frame of the clip's size stands for every frame: the plan depends on sizes alone.
    let frame = Image::filled(width, height, 128.0);
    let first_settings = match settings.config.init {
        // The fast picture is the start: a picture of the frame's size stands for it.
        Init::Fast => Settings { config: settings.config.clone().init(Init::Image), start: None, ..settings.clone() },
        _ => settings.clone(),
    };
    let mut inputs = first_settings.load_inputs_for(frame.clone())?;
    if first_settings.config.init == Init::Image && inputs.start.is_none() {
        inputs.start = Some(frame.clone());
    }
    let stylizer = Stylizer::new(first_settings.config.clone())?;
    let vgg = super::load_network(settings, true)?;
    let (net, plan) = device::backend(vgg, settings.network.device, &|b| stylizer.plan(b, &inputs), &mut |_| {})?;
    let net = &*net;
    let plan = match plan {
        Some(plan) => plan,
        None => stylizer.plan(net, &inputs)?,
    };
    let (rate, _) = super::plan::calibrate(net)?;
    let first_time = super::plan::run_seconds(net, &settings.config, &plan, rate)?;
    let later_time = if video.temporal_weight == 0.0 {
        outln!("every frame on its own: {} iterations, {}", plan.iterations(), super::plan::duration(first_time));
        first_time
    } else {
        let later = later_frame(settings, video);
        inputs.start = Some(frame);
        let later_plan = Stylizer::new(later.config.clone())?.plan(net, &inputs)?;
        let later_time = super::plan::run_seconds(net, &later.config, &later_plan, rate)?;
        outln!(
            "first frame: {} iterations, {}; each later frame: {} iterations from the warped previous one, {}",
            plan.iterations(),
            super::plan::duration(first_time),
            later_plan.iterations(),
            super::plan::duration(later_time)
        );
        later_time
    };
    if video.passes > 1 {
        outln!("then {} more passes of {count} frames, each as a later frame", video.passes - 1);
    }
    let total = first_time + later_time * ((count - 1) + (video.passes - 1) * count) as f64;
    outln!("total: about {} (flows and encoding not counted)", super::plan::duration(total));
    Ok(0)
}

/// The settings of a frame after a shot's first: it starts from the warped previous painted
/// frame (given as the start image), at one scale, with the video's iterations.
fn later_frame(settings: &Settings, video: &VideoSettings) -> Settings {
    let config = settings.config.clone().init(Init::Image).scales(Scales::Off).iterations(video.frame_iterations);
    Settings { config, start: None, ..settings.clone() }
}

/// Paints the frames of one run.
struct Painter<'a> {
    settings: &'a Settings,
    video: &'a VideoSettings,
    work: &'a WorkDir,
    first: usize,
    last: usize,
    quiet: bool,
    output: &'a Path,
}

impl Painter<'_> {
    /// Paints the shot's `steps` (each pass's frames) from index `from`, the first not painted,
    /// the first pass's flows a frame ahead on their own thread. Returns the exit code when the
    /// run stops early (interrupted), `None` when every step is painted.
    fn paint(&self, steps: &[(usize, usize)], from: usize) -> Result<Option<i32>> {
        let flow = FlowSettings::default();
        // At most a frame ahead: the flows do not race the painting for the cores.
        let (tx, rx) = mpsc::sync_channel::<impasto::Result<usize>>(1);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let stop = &stop;
        // The first pass's frames still to paint need their flows (later passes reuse them);
        // fast mode needs none.
        let fast = self.settings.is_fast_only();
        let ahead: Vec<usize> = steps[from..].iter().filter(|(p, _)| *p == 1 && !fast).map(|&(_, k)| k).collect();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for k in ahead {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let done = self.work.prepare_flows(k, self.video, &flow).map(|()| k);
                    let failed = done.is_err();
                    if tx.send(done).is_err() || failed {
                        break;
                    }
                }
            });
            let result = self.paint_steps(steps, from, &rx, &flow);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            drop(rx);
            result
        })
    }

    /// What step `(pass, k)` starts from and is held to: `None` for a still picture.
    fn hold(&self, pass: usize, k: usize, flow: &FlowSettings) -> Result<Option<FrameHold>> {
        if pass == 1 {
            return Ok(self.work.hold(k, self.video, flow)?);
        }
        // A backward pass's neighbour is the next frame, a forward pass's the previous one.
        let neighbour = if pass % 2 == 0 {
            Some(k + 1).filter(|&n| n <= self.last)
        } else {
            k.checked_sub(1).filter(|&n| n >= self.first)
        };
        Ok(Some(self.work.pass(pass, self.last).hold_in_pass(k, neighbour, self.video, flow)?))
    }

    fn paint_steps(
        &self,
        steps: &[(usize, usize)],
        from: usize,
        flows: &mpsc::Receiver<impasto::Result<usize>>,
        flow: &FlowSettings,
    ) -> Result<Option<i32>> {
        let started = Instant::now();
        let mut net: Option<SharedBackend> = None;
        let mut fast = None;
        let total = self.last - self.first + 1;
        for (done, &(pass, k)) in steps[from..].iter().enumerate() {
            if pass == 1 && !self.settings.is_fast_only() {
                // The flows of frame k are ready when their thread says so.
                flows.recv().context("the flow thread stopped")??;
            }
            let painting = Instant::now();
            let mut settings = self.settings.clone();
            settings.content = self.work.frame(k);
            let image = if settings.is_fast_only() {
                let nets = match &mut fast {
                    Some(nets) => nets,
                    None => fast.insert(super::fast::networks(&settings, self.quiet)?),
                };
                settings.fast_picture(nets, &settings.load_inputs()?)?
            } else {
                let hold = self.hold(pass, k, flow)?;
                if hold.is_some() {
                    settings = later_frame(&settings, self.video);
                }
                let mut inputs = settings.load_inputs()?;
                if let Some(hold) = hold {
                    inputs.start = Some(hold.start);
                    inputs.temporal = hold.targets;
                }
                let stylizer = Stylizer::new(settings.config.clone())?;
                let net = match &mut net {
                    Some(net) => &**net,
                    None => &**net.insert(self.network(&settings)?),
                };
                match self.optimise(&stylizer, net, &inputs, pass, k)? {
                    Ok(image) => image,
                    Err(code) => return Ok(Some(code)),
                }
            };
            self.work.pass(pass, self.last).save_painted(k, &image)?;
            if !self.quiet {
                let left_steps = steps.len() - from - done - 1;
                let each = started.elapsed().as_secs_f64() / (done + 1) as f64;
                let of_pass =
                    if self.video.passes > 1 { format!(" (pass {pass}/{})", self.video.passes) } else { String::new() };
                errln!(
                    "impasto: frame {}/{total}{of_pass} painted in {:.1} s; {left_steps} left, about {}",
                    k - self.first + 1,
                    painting.elapsed().as_secs_f64(),
                    super::plan::duration(each * left_steps as f64)
                );
            }
        }
        Ok(None)
    }

    /// The network on its device, chosen for the shot's first frame whichever frame this run
    /// starts at (under `auto`, the GPU only if that frame fits it: a resumed run chooses as an
    /// uninterrupted one does).
    fn network(&self, settings: &Settings) -> Result<SharedBackend> {
        let vgg = super::load_network(settings, self.quiet)?;
        let first = Settings { content: self.work.frame(self.first), ..self.settings.clone() };
        let plan_first = |b: &dyn Backend| Stylizer::new(first.config.clone())?.plan(b, &first.load_inputs()?);
        let mut said = None;
        let (net, _) = device::backend(vgg, settings.network.device, &plan_first, &mut |m| said = Some(m.to_string()))?;
        if let (Some(line), false) = (said, self.quiet) {
            errln!("impasto: {line}");
        }
        Ok(net)
    }

    /// Optimises one frame: its image, or the exit code when the run was stopped (nothing of
    /// the frame is kept: the rerun paints it whole).
    fn optimise(
        &self,
        stylizer: &Stylizer,
        net: &dyn Backend,
        inputs: &Inputs,
        pass: usize,
        k: usize,
    ) -> Result<std::result::Result<Image, i32>> {
        let plan = stylizer.plan(net, inputs)?;
        let mut observer = CliObserver::new(plan.iterations(), self.quiet, None, None, self.output)?;
        let outcome = stylizer.run(net, &plan, inputs, &mut observer);
        observer.finish();
        let outcome = outcome?;
        match outcome.stop {
            Stop::Finished | Stop::Converged | Stop::TimeLimit => Ok(Ok(outcome.image)),
            Stop::Interrupted => {
                let signal = observer.signal().unwrap_or(signal_hook::consts::SIGINT);
                let at = if self.video.passes > 1 { format!("frame {k} of pass {pass}") } else { format!("frame {k}") };
                errln!(
                    "impasto: interrupted at {at}; the frames painted are kept in {}; the same command continues there",
                    self.work.root().display()
                );
                Ok(Err(128 + signal))
            }
            Stop::NonFinite { iteration } => {
                errln!(
                    "impasto: frame {k}: the loss became NaN or infinite at iteration {iteration}; the frames \
                     painted are kept; try lower --style-weight, --content-weight, --temporal-weight or --lr"
                );
                Ok(Err(super::EXIT_FAILED))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_directory_sits_beside_the_output() {
        let a = |work: Option<&str>| VideoArgs {
            run: Default::default(),
            output: None,
            settings: None,
            work: work.map(PathBuf::from),
            frames: None,
            temporal_weight: None,
            temporal_frames: None,
            frame_iterations: None,
            passes: None,
            join: false,
            dry_run: false,
            quiet: false,
        };
        assert_eq!(work_dir(&a(None), Path::new("out/clip.mp4")), Path::new("out/clip.mp4.impasto"));
        assert_eq!(work_dir(&a(Some("w")), Path::new("out/clip.mp4")), Path::new("w"));
    }
}
