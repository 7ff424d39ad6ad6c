//! A clip being painted, on disk: its [`VideoSettings`], and the work directory that holds the
//! decoded frames, the flows between them and the painted frames, so that a run stopped at any
//! point (Ctrl-C, a crash, a full disk) continues at the first frame not painted and paints what
//! one uninterrupted run paints. Every painted frame is read back from its PNG file before the
//! next frame is held to it, whether it was painted a moment ago or by an earlier run.
//!
//! ```text
//! WORK/job.json            what is painted here (settings, video settings, frame size)
//! WORK/frames/000001.png   the clip's frames at the painted size, numbered from 1
//! WORK/flows/000002-000001.flow   the flow from frame 2 to frame 1 (cached)
//! WORK/painted/000001.png  the painted frames of the shot from frame 1
//! WORK/painted-000040/000041.png  those of a shot from frame 40 (`--frames 40..`)
//! WORK/joined/000001.png   the frames of overlapping shots cross-faded (`--join`)
//! ```
//!
//! A painted frame depends on the frames of its shot before it, so each shot start has its
//! own painted frames: shots that start at one frame share them, and a shot never takes a frame
//! another shot painted.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::clip::frame_path;
use super::{Flow, FlowSettings, Gray, dense_flow, reliability, warp};
use crate::image_io::{self, Image};
use crate::loss::temporal::TemporalTarget;
use crate::{Error, Result};

/// How a clip is painted, beyond the settings of each frame (Ruder et al.'s temporal method).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoSettings {
    /// The temporal term's weight γ (0 paints every frame independently).
    pub temporal_weight: f64,
    /// The earlier frames each frame is held to, by distance (`[1]`: the previous frame; `[1, 2,
    /// 4]` adds long-term terms, each on the pixels the closer ones do not cover).
    pub temporal_frames: Vec<usize>,
    /// The iterations of each frame after a shot's first (which has the run's own): a frame that
    /// starts from its warped predecessor needs fewer.
    pub frame_iterations: usize,
    /// Passes over the shot (Ruder et al.'s multi-pass method, for strong camera motion): the
    /// first forward as above, then alternately backward and forward, each frame starting from
    /// its last pass's picture blended with the neighbour just painted, warped, and held to
    /// that neighbour, for `frame_iterations`.
    pub passes: usize,
}

/// How much of the warped neighbour a later pass blends into a frame's start (Ruder et al.'s δ).
pub const PASS_BLEND: f32 = 0.5;
/// The most passes a run may make.
pub const MAX_PASSES: usize = 32;

/// The default temporal weight: at 1e4 the warping error fell to a tenth of independent
/// frames' with the style loss kept (README, Video).
pub const DEFAULT_TEMPORAL_WEIGHT: f64 = 1e4;
/// The farthest earlier frame a term may reach.
pub const MAX_TEMPORAL_DISTANCE: usize = 32;

impl Default for VideoSettings {
    fn default() -> Self {
        VideoSettings {
            temporal_weight: DEFAULT_TEMPORAL_WEIGHT,
            temporal_frames: vec![1],
            frame_iterations: 75,
            passes: 1,
        }
    }
}

impl VideoSettings {
    /// Checks every setting; the error names the first one at fault (`video.temporal_weight`...).
    pub fn validate(&self) -> Result<()> {
        if !(self.temporal_weight.is_finite() && self.temporal_weight >= 0.0) {
            return Err(Error::setting(
                "video.temporal_weight",
                format!("must be a finite number >= 0, got {}", self.temporal_weight),
            ));
        }
        if !self.temporal_frames.contains(&1) {
            return Err(Error::setting(
                "video.temporal_frames",
                "needs 1, the previous frame (each frame starts from it; 2, 4... add long-term terms)",
            ));
        }
        for (i, &d) in self.temporal_frames.iter().enumerate() {
            if !(1..=MAX_TEMPORAL_DISTANCE).contains(&d) {
                return Err(Error::setting(
                    "video.temporal_frames",
                    format!("holds {d}; each distance is 1..={MAX_TEMPORAL_DISTANCE}"),
                ));
            }
            if self.temporal_frames[..i].contains(&d) {
                return Err(Error::setting("video.temporal_frames", format!("holds {d} twice")));
            }
        }
        if !(1..=100_000).contains(&self.frame_iterations) {
            return Err(Error::setting(
                "video.frame_iterations",
                format!("must be 1..=100000, got {}", self.frame_iterations),
            ));
        }
        if !(1..=MAX_PASSES).contains(&self.passes) {
            return Err(Error::setting("video.passes", format!("must be 1..={MAX_PASSES}, got {}", self.passes)));
        }
        Ok(())
    }

    /// Each step of a shot `first..=last` in the order it is painted: `(pass, frame)`, the first
    /// pass forward, then alternately backward and forward.
    pub fn steps(&self, first: usize, last: usize) -> Vec<(usize, usize)> {
        (1..=self.passes)
            .flat_map(|p| {
                let frames: Vec<usize> =
                    if p % 2 == 1 { (first..=last).collect() } else { (first..=last).rev().collect() };
                frames.into_iter().map(move |k| (p, k))
            })
            .collect()
    }

    /// The distances in increasing order (the closest frame first).
    fn distances(&self) -> Vec<usize> {
        let mut d = self.temporal_frames.clone();
        d.sort_unstable();
        d
    }
}

/// The work directory of one clip painted one way, seen from one shot (the frames from
/// `first` on) and one of its passes.
#[derive(Clone, Debug)]
pub struct WorkDir {
    root: PathBuf,
    first: usize,
    /// The shot's last frame: a later pass runs back from it, so its frames depend on it.
    last: Option<usize>,
    pass: usize,
}

/// What a frame after a shot's first starts from and is held to.
#[derive(Clone, Debug)]
pub struct FrameHold {
    /// The previous painted frame warped into this one: the optimisation's start.
    pub start: Image,
    /// One temporal term per earlier frame within reach.
    pub targets: Vec<TemporalTarget>,
}

impl WorkDir {
    /// Opens (or makes) the work directory at `root` for the job `job` describes (any text
    /// that changes when the painting would: the settings as JSON), for the shot that starts at
    /// frame `first` (from 1). A directory made for another job is refused, naming it: its
    /// painted frames would not be this job's.
    pub fn open(root: &Path, job: &str, first: usize) -> Result<WorkDir> {
        let io = |path: &Path, e: std::io::Error| Error::Output { path: path.into(), message: e.to_string() };
        let work = WorkDir { root: root.into(), first: first.max(1), last: None, pass: 1 };
        for dir in [root.join("frames"), root.join("flows"), work.painted_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        }
        let file = root.join("job.json");
        match std::fs::read_to_string(&file) {
            Ok(text) if text == job => {}
            Ok(_) => {
                return Err(Error::Output {
                    path: root.into(),
                    message: "holds a clip painted with other settings (or another clip); remove it, or give --work \
                              another directory"
                        .into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => image_io::write_atomically(&file, job.as_bytes())?,
            Err(e) => return Err(io(&file, e)),
        }
        Ok(work)
    }

    /// The work directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the decoded frames.
    pub fn frames_dir(&self) -> PathBuf {
        self.root.join("frames")
    }

    /// The same work directory seen from pass `pass` (from 1) of its shot, which ends at frame
    /// `last` (the first pass's frames do not depend on where the shot ends; a later pass's,
    /// which runs back from it, do).
    pub fn pass(&self, pass: usize, last: usize) -> WorkDir {
        WorkDir { pass: pass.max(1), last: Some(last), ..self.clone() }
    }

    /// The directory of the shot's painted frames in this pass (`painted`, `painted-000040`;
    /// for a later pass `painted-pass2-to-000120`, `painted-000040-pass2-to-000120`).
    pub fn painted_dir(&self) -> PathBuf {
        let mut name = match self.first {
            1 => "painted".to_string(),
            k => format!("painted-{k:06}"),
        };
        if self.pass > 1 {
            name.push_str(&format!("-pass{}-to-{:06}", self.pass, self.last.unwrap_or(0)));
        }
        self.root.join(name)
    }

    /// Decoded frame `k` (from 1).
    pub fn frame(&self, k: usize) -> PathBuf {
        frame_path(&self.frames_dir(), k)
    }

    /// The shot's painted frame `k` (from 1).
    pub fn painted(&self, k: usize) -> PathBuf {
        frame_path(&self.painted_dir(), k)
    }

    /// Whether every frame of `range` is decoded.
    pub fn has_frames(&self, range: std::ops::RangeInclusive<usize>) -> bool {
        range.into_iter().all(|k| self.frame(k).is_file())
    }

    /// Where in `steps` (a shot's [`VideoSettings::steps`], the shot ending at `last`) the
    /// painting stands: the index of the first step not painted yet, if any.
    pub fn first_unpainted(&self, steps: &[(usize, usize)], last: usize) -> Option<usize> {
        steps.iter().position(|&(p, k)| !self.pass(p, last).painted(k).is_file())
    }

    /// Writes painted frame `k` (under a scratch name, renamed when complete).
    pub fn save_painted(&self, k: usize, image: &Image) -> Result<()> {
        let bytes = image_io::encode(image, image_io::OutputFormat::Png)?;
        let dir = self.painted_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::Output { path: dir, message: e.to_string() })?;
        image_io::write_atomically(&self.painted(k), &bytes)
    }

    /// The shots painted here in this pass, each as its first frame and the last of the frames
    /// painted from it without a gap, in order of their first frame.
    pub fn shots(&self) -> Vec<(usize, usize)> {
        self.shot_views().into_iter().map(|(shot, last)| (shot.first, last)).collect()
    }

    /// Each shot painted here in this pass, as a view of it, with the last frame painted from
    /// its first without a gap.
    fn shot_views(&self) -> Vec<(WorkDir, usize)> {
        let marker = format!("-pass{}-to-", self.pass);
        let mut shots: Vec<(WorkDir, usize)> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                // A later pass's directory names the shot's end: `painted-000040-pass2-to-000120`.
                let (base, end) = match self.pass {
                    1 => (name.as_str(), None),
                    _ => name.split_once(marker.as_str()).map(|(b, e)| (b, e.parse::<usize>().ok()))?,
                };
                if (self.pass > 1 && end.is_none()) || base.contains("-pass") {
                    return None;
                }
                let first = match base {
                    "painted" => 1,
                    n => n.strip_prefix("painted-")?.parse().ok().filter(|&k: &usize| k > 1)?,
                };
                let shot = WorkDir { first, last: end, ..self.clone() };
                let last = (first..).take_while(|&k| shot.painted(k).is_file()).last()?;
                Some((shot, last))
            })
            .collect();
        shots.sort_unstable_by_key(|(shot, last)| (shot.first, *last));
        shots
    }

    /// Frame `k` of the clip the painted shots make together: the frame of the one shot that
    /// covers it, or, where shots overlap, a cross-fade from the earlier shot's frames to the
    /// later one's across the overlap, so that a long clip painted as overlapping shots (one
    /// per task of a cluster) does not jump where they meet; a shot that ends within an
    /// earlier one is left out. An error names a frame no shot covers.
    pub fn joined(&self, k: usize) -> Result<Image> {
        self.joined_of(&self.shot_views(), k)
    }

    /// [`WorkDir::joined`] from the shots, listed once.
    fn joined_of(&self, shots: &[(WorkDir, usize)], k: usize) -> Result<Image> {
        let mut covering = shots.iter().filter(|(shot, last)| (shot.first..=*last).contains(&k));
        let Some((shot, mut end)) = covering.next().map(|(s, l)| (s, *l)) else {
            return Err(Error::Config(format!(
                "frame {k} is in no painted shot in {}: paint it first (--frames)",
                self.root.display()
            )));
        };
        let mut image = image_io::load(shot.painted(k))?;
        for (next_shot, last) in covering {
            // A shot within the ones before it (ending no later) adds nothing.
            if *last <= end {
                continue;
            }
            let next = image_io::load(next_shot.painted(k))?;
            if (next.width, next.height) != (image.width, image.height) {
                return Err(Error::image(&next_shot.painted(k), "is not the size of the other shots' frames"));
            }
            // The later shot's share rises from 0 before the overlap to 1 after it.
            let a = next_shot.first;
            let w = (k - a + 1) as f32 / (end - a + 2) as f32;
            image.data.iter_mut().zip(&next.data).for_each(|(x, y)| *x += w * (y - *x));
            end = *last;
        }
        Ok(image)
    }

    /// The directory of joined frames ([`WorkDir::joined`]), for encoding.
    pub fn joined_dir(&self) -> PathBuf {
        self.root.join("joined")
    }

    /// Writes the joined frames of `range` into [`WorkDir::joined_dir`]; an error names the
    /// first frame no shot covers, before any is written.
    pub fn write_joined(&self, range: std::ops::RangeInclusive<usize>) -> Result<()> {
        let shots = self.shot_views();
        if let Some(k) = range.clone().find(|&k| !shots.iter().any(|(shot, last)| (shot.first..=*last).contains(&k))) {
            return self.joined_of(&shots, k).map(|_| ());
        }
        let dir = self.joined_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::Output { path: dir.clone(), message: e.to_string() })?;
        for k in range {
            let bytes = image_io::encode(&self.joined_of(&shots, k)?, image_io::OutputFormat::Png)?;
            image_io::write_atomically(&frame_path(&dir, k), &bytes)?;
        }
        Ok(())
    }

    /// The flow from frame `from` to frame `to`, from the cache or computed and cached. A cached
    /// file that does not hold a flow of the frames' size is computed afresh.
    pub fn flow(&self, from: usize, to: usize, settings: &FlowSettings) -> Result<Flow> {
        let path = self.root.join("flows").join(format!("{from:06}-{to:06}.flow"));
        let (a, b) = (image_io::load(self.frame(from))?, image_io::load(self.frame(to))?);
        if let Some(flow) = std::fs::read(&path).ok().and_then(|bytes| read_flow(&bytes, a.width, a.height)) {
            return Ok(flow);
        }
        let flow = dense_flow(&Gray::from_image(&a), &Gray::from_image(&b), settings);
        image_io::write_atomically(&path, &flow_bytes(&flow))?;
        Ok(flow)
    }

    /// The flows frame `k` needs (to and from each earlier frame of the shot within reach),
    /// computed and cached ahead of its painting.
    pub fn prepare_flows(&self, k: usize, video: &VideoSettings, settings: &FlowSettings) -> Result<()> {
        if video.temporal_weight == 0.0 {
            return Ok(());
        }
        for d in video.distances().into_iter().filter(|&d| k >= self.first + d) {
            self.flow(k, k - d, settings)?;
            self.flow(k - d, k, settings)?;
        }
        Ok(())
    }

    /// What frame `k` starts from and is held to, from the shot's painted frames; `None` for
    /// the shot's first frame, which starts as a still picture, and for every frame when the
    /// temporal weight is 0 (each frame painted on its own).
    /// Each earlier frame `k - d` is warped along the flow from `k` to it and holds the pixels
    /// where that flow is reliable and no closer frame's is (Ruder et al.'s long-term weights).
    pub fn hold(&self, k: usize, video: &VideoSettings, settings: &FlowSettings) -> Result<Option<FrameHold>> {
        if k <= self.first || video.temporal_weight == 0.0 {
            return Ok(None);
        }
        let mut covered: Option<Vec<f32>> = None;
        let mut targets = Vec::new();
        let mut start = None;
        for d in video.distances().into_iter().filter(|&d| k >= self.first + d) {
            let backward = self.flow(k, k - d, settings)?;
            let forward = self.flow(k - d, k, settings)?;
            let painted = image_io::load(self.painted(k - d))?;
            if (painted.width, painted.height) != (backward.width, backward.height) {
                return Err(Error::image(&self.painted(k - d), "is not the size of the clip's frames"));
            }
            let (warped, _) = warp(&painted, &backward);
            let c = reliability(&backward, &forward);
            let weights: Vec<f32> = match &covered {
                None => c.clone(),
                Some(cov) => c.iter().zip(cov).map(|(c, cov)| (c - cov).max(0.0)).collect(),
            };
            match &mut covered {
                None => covered = Some(c),
                Some(cov) => cov.iter_mut().zip(&c).for_each(|(cov, c)| *cov += c),
            }
            if start.is_none() {
                start = Some(warped.clone());
            }
            targets.push(TemporalTarget::new(warped, weights, video.temporal_weight)?);
        }
        Ok(start.map(|start| FrameHold { start, targets }))
    }
}

impl WorkDir {
    /// What frame `k` starts from and is held to in this pass, a later one (Ruder et al.'s
    /// multi-pass method): its picture from the pass before, blended where the flow is
    /// reliable with the neighbour this pass painted just before it (`neighbour`: `k + 1` in a
    /// backward pass, `k - 1` in a forward one; none at the pass's first frame), warped into it
    /// (`x + δ c (ω − x)`, δ = [`PASS_BLEND`]), and held to that warped neighbour.
    pub fn hold_in_pass(
        &self,
        k: usize,
        neighbour: Option<usize>,
        video: &VideoSettings,
        settings: &FlowSettings,
    ) -> Result<FrameHold> {
        let before = WorkDir { pass: self.pass - 1, ..self.clone() };
        let mut start = image_io::load(before.painted(k))?;
        let Some(n) = neighbour else {
            return Ok(FrameHold { start, targets: Vec::new() });
        };
        let (backward, forward) = (self.flow(k, n, settings)?, self.flow(n, k, settings)?);
        let painted = image_io::load(self.painted(n))?;
        if (painted.width, painted.height) != (start.width, start.height)
            || (start.width, start.height) != (backward.width, backward.height)
        {
            return Err(Error::image(&self.painted(n), "is not the size of the clip's frames"));
        }
        let (warped, _) = warp(&painted, &backward);
        let c = reliability(&backward, &forward);
        let pixels = c.len();
        for (i, x) in start.data.iter_mut().enumerate() {
            *x += PASS_BLEND * c[i % pixels] * (warped.data[i] - *x);
        }
        let targets = if video.temporal_weight > 0.0 {
            vec![TemporalTarget::new(warped, c, video.temporal_weight)?]
        } else {
            Vec::new()
        };
        Ok(FrameHold { start, targets })
    }
}

const FLOW_MAGIC: &[u8; 8] = b"IMPFLOW1";

/// A flow as a file: the magic, width and height (u32, little-endian), then u and v (f32).
fn flow_bytes(flow: &Flow) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 8 * flow.u.len());
    out.extend_from_slice(FLOW_MAGIC);
    out.extend_from_slice(&(flow.width as u32).to_le_bytes());
    out.extend_from_slice(&(flow.height as u32).to_le_bytes());
    for v in flow.u.iter().chain(&flow.v) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The flow in `bytes` if it is one of `width` x `height` with finite values.
fn read_flow(bytes: &[u8], width: usize, height: usize) -> Option<Flow> {
    let n = width * height;
    if bytes.len() != 16 + 8 * n || &bytes[..8] != FLOW_MAGIC {
        return None;
    }
    let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes")) as usize;
    if (word(8), word(12)) != (width, height) {
        return None;
    }
    let values: Vec<f32> =
        bytes[16..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    if values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let (u, v) = values.split_at(n);
    Some(Flow { width, height, u: u.to_vec(), v: v.to_vec() })
}

#[cfg(test)]
mod tests;
