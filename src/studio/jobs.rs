//! The studio's jobs: a queue run one at a time by one worker thread on the shared network.
//! Each job publishes its [`Status`] on a `watch` channel (the event streams read it), keeps a
//! small JPEG preview that is encoded only while someone watches, and can be cancelled; a
//! finished or cancelled run goes to the gallery with the best image so far.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::engine::Backend;
use crate::image_io::{self, Image, OutputFormat, fit_long_side, resize};
use crate::settings::Settings;
use crate::transfer::{Inputs, Progress, Stop, Stylizer};

use super::budget::Reservation;
use super::store::{Store, new_id};

/// The long side of previews, in pixels.
pub const PREVIEW_SIDE: usize = 320;
/// A preview is encoded every this many evaluations (while someone watches).
pub const PREVIEW_EVERY: usize = 3;

/// What a job is doing, as the page sees it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Status {
    pub id: String,
    /// `queued`, `running`, `done`, `failed`.
    pub state: String,
    pub iteration: usize,
    pub iterations: usize,
    pub loss: f64,
    pub best: f64,
    pub seconds: f64,
    /// Bumped each time a new preview is ready.
    pub preview: u64,
    /// Why the run ended (`finished`, `converged`, `interrupted`...), once done.
    pub stop: Option<String>,
    /// The gallery entry it made, once done.
    pub gallery: Option<String>,
    pub error: Option<String>,
}

pub struct Job {
    pub id: String,
    /// The order it came in.
    seq: u64,
    /// The settings, with the plan the job runs.
    settings: Settings,
    stylizer: Stylizer,
    /// The decoded images until it runs or is cancelled, with the memory they hold.
    inputs: Mutex<Option<(Inputs, Reservation)>>,
    pub status: watch::Sender<Status>,
    pub cancel: AtomicBool,
    /// Event streams open on this job.
    pub watchers: AtomicUsize,
    pub preview: Mutex<Option<Vec<u8>>>,
}

/// The most ended jobs whose status is kept (the oldest go first).
pub const KEPT_ENDED: usize = 256;

/// The queue and the jobs it has seen.
pub struct Jobs {
    queue: Mutex<VecDeque<Arc<Job>>>,
    all: Mutex<HashMap<String, Arc<Job>>>,
    wake: Condvar,
    seq: std::sync::atomic::AtomicU64,
}

impl Jobs {
    /// Starts the worker thread on `net`, writing to `store`.
    pub fn start(net: Arc<dyn Backend + Send>, store: Arc<Store>) -> Arc<Self> {
        let jobs = Arc::new(Jobs {
            queue: Mutex::new(VecDeque::new()),
            all: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            seq: std::sync::atomic::AtomicU64::new(0),
        });
        let worker = jobs.clone();
        std::thread::Builder::new()
            .name("impasto-studio-worker".into())
            .spawn(move || worker.work(&*net, &store))
            .expect("a worker thread");
        jobs
    }

    /// Queues a run of `settings` (which carry its plan) by `stylizer` on these `inputs`, which
    /// hold `memory` until the job runs or is cancelled.
    pub fn submit(&self, settings: Settings, stylizer: Stylizer, inputs: Inputs, memory: Reservation) -> Arc<Job> {
        let id = new_id("j-");
        let iterations = settings.plan.as_ref().map_or(0, |p| p.iterations());
        let status = Status { id: id.clone(), state: "queued".into(), iterations, ..Status::default() };
        let job = Arc::new(Job {
            id: id.clone(),
            seq: self.seq.fetch_add(1, Ordering::SeqCst),
            settings,
            stylizer,
            inputs: Mutex::new(Some((inputs, memory))),
            status: watch::channel(status).0,
            cancel: AtomicBool::new(false),
            watchers: AtomicUsize::new(0),
            preview: Mutex::new(None),
        });
        {
            let mut all = self.all.lock().unwrap();
            all.insert(id, job.clone());
            // Ended jobs are kept for their status a while, not forever.
            let mut ended: Vec<(u64, String)> = all
                .values()
                .filter(|j| matches!(j.status.borrow().state.as_str(), "done" | "failed"))
                .map(|j| (j.seq, j.id.clone()))
                .collect();
            if ended.len() > KEPT_ENDED {
                ended.sort();
                for (_, id) in &ended[..ended.len() - KEPT_ENDED] {
                    all.remove(id);
                }
            }
        }
        self.queue.lock().unwrap().push_back(job.clone());
        self.wake.notify_one();
        job
    }

    /// Jobs waiting to run.
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.all.lock().unwrap().get(id).cloned()
    }

    /// The running and queued jobs, in order.
    pub fn active(&self) -> Vec<Status> {
        let mut v: Vec<Status> = self
            .all
            .lock()
            .unwrap()
            .values()
            .map(|j| j.status.borrow().clone())
            .filter(|s| s.state == "queued" || s.state == "running")
            .collect();
        v.sort_by_key(|s| (s.state != "running", s.id.clone()));
        let order: Vec<String> = self.queue.lock().unwrap().iter().map(|j| j.id.clone()).collect();
        v.sort_by_key(|s| (s.state != "running", order.iter().position(|o| *o == s.id)));
        v
    }

    /// Cancels a job: a queued one leaves the queue, a running one stops after the current
    /// evaluation and keeps its best image. False if it is not queued or running.
    pub fn cancel(&self, id: &str) -> bool {
        let Some(job) = self.get(id) else { return false };
        let state = job.status.borrow().state.clone();
        match state.as_str() {
            "queued" => {
                self.queue.lock().unwrap().retain(|j| j.id != id);
                // Its images, and the memory they hold, go now.
                drop(job.inputs.lock().unwrap().take());
                job.status.send_modify(|s| {
                    s.state = "done".into();
                    s.stop = Some("cancelled".into());
                });
                true
            }
            "running" => {
                job.cancel.store(true, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }

    fn work(&self, net: &dyn Backend, store: &Store) {
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap();
                loop {
                    if let Some(j) = q.pop_front() {
                        break j;
                    }
                    q = self.wake.wait(q).unwrap();
                }
            };
            // A panic in a run (a bug, a device failure) fails that job, not the studio.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&job, net, store)))
                .unwrap_or_else(|_| Err(crate::Error::Config("the run stopped on an internal error".into())));
            job.status.send_modify(|s| {
                s.state = if result.is_ok() { "done".into() } else { "failed".into() };
                if let Err(e) = &result {
                    s.error = Some(e.to_string());
                }
            });
        }
    }
}

/// Runs one job to the gallery.
fn run(job: &Job, net: &dyn Backend, store: &Store) -> crate::Result<()> {
    let Some((inputs, _memory)) = job.inputs.lock().unwrap().take() else {
        return Err(crate::Error::config("the job was cancelled before it ran"));
    };
    let plan = job.settings.plan.as_ref().ok_or_else(|| crate::Error::config("a job without a plan"))?;
    job.status.send_modify(|s| s.state = "running".into());
    let mut losses: Vec<f64> = Vec::new();
    let outcome = job.stylizer.run(net, plan, &inputs, &mut |p: &Progress| {
        losses.push(p.terms.total);
        let preview = job.watchers.load(Ordering::SeqCst) > 0
            && (p.iteration == 1 || p.iteration.is_multiple_of(PREVIEW_EVERY) || p.iteration == p.iterations);
        if preview && let Ok(jpeg) = preview_jpeg(p.image) {
            *job.preview.lock().unwrap() = Some(jpeg);
        }
        job.status.send_modify(|s| {
            s.iteration = p.iteration;
            s.iterations = p.iterations;
            s.loss = p.terms.total;
            s.best = p.best.total;
            s.seconds = p.elapsed.as_secs_f64();
            if preview {
                s.preview += 1;
            }
        });
        if job.cancel.load(Ordering::SeqCst) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })?;
    let stop = match outcome.stop {
        Stop::Interrupted => "stopped".to_string(),
        other => serde_json::to_value(other).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or("done".into()),
    };
    let (gallery, dir) = store.new_entry().map_err(|e| crate::Error::Config(format!("the gallery: {e}")))?;
    let json = job.settings.to_json();
    let command = job.settings.command_line(std::path::Path::new("picture.png"));
    let write = |name: &str, bytes: &[u8]| image_io::write_atomically(&dir.join(name), bytes);
    image_io::save_with(&outcome.image, &dir.join("image.png"), Some(&json), Default::default())?;
    write("thumbnail.jpg", &preview_jpeg(&outcome.image).map_err(crate::Error::Config)?)?;
    write("settings.json", json.as_bytes())?;
    write("losses.json", serde_json::to_string(&losses).unwrap_or_default().as_bytes())?;
    let entry = serde_json::json!({
        "stop": stop, "width": outcome.image.width, "height": outcome.image.height,
        "loss": outcome.terms.total, "command": command,
    });
    write("entry.json", entry.to_string().as_bytes())?;
    job.status.send_modify(|s| {
        s.stop = Some(stop.clone());
        s.gallery = Some(gallery.clone());
        s.best = outcome.terms.total;
    });
    Ok(())
}

/// `image` at most [`PREVIEW_SIDE`] pixels long, as a JPEG.
pub fn preview_jpeg(image: &Image) -> Result<Vec<u8>, String> {
    let (w, h) = if image.width.max(image.height) > PREVIEW_SIDE {
        fit_long_side(image.width, image.height, PREVIEW_SIDE)
    } else {
        (image.width, image.height)
    };
    image_io::encode(&resize(image, w, h), OutputFormat::Jpeg).map_err(|e| e.to_string())
}
