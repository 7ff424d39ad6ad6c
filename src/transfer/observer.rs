//! What a run tells its caller: each evaluation as [`Progress`], to an [`Observer`] that may stop
//! the run (the library never prints: progress bars, periodic saves and Ctrl-C live in the
//! observer), and the [`Outcome`] with why it ended ([`Stop`]).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::colour::Presenter;
use crate::image_io::Image;
use crate::loss::LossTerms;

/// One evaluation, as reported to the observer.
#[non_exhaustive]
pub struct Progress<'a> {
    /// 1-based evaluation count, over all scales.
    pub iteration: usize,
    /// Evaluations in the whole run.
    pub iterations: usize,
    /// 1-based scale of the pyramid, and how many there are.
    pub scale: usize,
    /// How many scales there are.
    pub scales: usize,
    /// This evaluation's loss (not finite if it overflowed: a line search then steps back).
    pub terms: LossTerms,
    /// Whether the evaluated image became the optimizer's iterate (the start, or a step it
    /// took); `false` for a line search's trials.
    pub accepted: bool,
    /// The lowest loss evaluated so far at this scale, and at which evaluation (over all scales).
    pub best: LossTerms,
    /// The evaluation `best` came from (1-based over all scales).
    pub best_iteration: usize,
    /// Since the start of the optimisation (of the first scale).
    pub elapsed: Duration,
    /// The best image so far at this scale (the running average, with `average`): what would be
    /// written if the run stopped now.
    pub image: &'a Image,
}

/// Receives every evaluation; `Break` stops the run (the best image so far is returned). Any
/// closure `|p: &Progress| ...` returning `()` or a `ControlFlow<()>` is one ([`Verdict`]).
pub trait Observer {
    /// Called after each evaluation; `ControlFlow::Break(())` stops the run.
    fn on_iteration(&mut self, progress: &Progress<'_>) -> ControlFlow<()>;
}

/// What an observer closure may return: `()` (go on) or a `ControlFlow<()>` (`Break` stops).
pub trait Verdict {
    /// As a `ControlFlow`.
    fn flow(self) -> ControlFlow<()>;
}

impl Verdict for () {
    fn flow(self) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

impl Verdict for ControlFlow<()> {
    fn flow(self) -> ControlFlow<()> {
        self
    }
}

impl<F, R> Observer for F
where
    F: FnMut(&Progress<'_>) -> R,
    R: Verdict,
{
    fn on_iteration(&mut self, progress: &Progress<'_>) -> ControlFlow<()> {
        self(progress).flow()
    }
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// All iterations ran.
    Finished,
    /// The optimizer found no further decrease (a stationary point, to the loss's precision).
    Converged,
    /// The observer asked to stop.
    Interrupted,
    /// The loss was NaN or infinite at this evaluation and the optimizer could not step back
    /// (the first evaluation of a scale, or Adam).
    NonFinite {
        /// The evaluation (1-based over all scales).
        iteration: usize,
    },
    /// The time limit was reached.
    TimeLimit,
}

/// The result of a run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// The image with the lowest loss evaluated (at the last scale reached), or the start if no
    /// loss was finite.
    pub image: Image,
    /// Its loss (zero if none was finite).
    pub terms: LossTerms,
    /// Which evaluation it came from (1-based over all scales; 0 if none was finite, or for an
    /// average of the iterates that scored better than each of them).
    pub best_iteration: usize,
    /// Evaluations made.
    pub iterations: usize,
    /// Why the run stopped.
    pub stop: Stop,
}

/// Passes a scale's progress on with the run's iteration count and the scale's number.
pub(super) struct ScaleObserver<'o> {
    pub inner: &'o mut dyn Observer,
    pub offset: usize,
    pub total: usize,
    pub scale: usize,
    pub scales: usize,
    pub start: Instant,
    pub time_limit: Option<Duration>,
    pub timed_out: bool,
    /// The colour mode's view of this scale's images.
    pub presenter: Presenter,
}

impl Observer for ScaleObserver<'_> {
    fn on_iteration(&mut self, p: &Progress<'_>) -> ControlFlow<()> {
        if self.time_limit.is_some_and(|t| self.start.elapsed() >= t) {
            self.timed_out = true;
            return ControlFlow::Break(());
        }
        let shown = self.presenter.show(p.image);
        self.inner.on_iteration(&Progress {
            image: &shown,
            iteration: self.offset + p.iteration,
            best_iteration: self.offset + p.best_iteration,
            iterations: self.total,
            scale: self.scale,
            scales: self.scales,
            elapsed: self.start.elapsed(),
            ..*p
        })
    }
}
