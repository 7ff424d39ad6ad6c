//! The optimisation loop over any objective ([`optimize`]): each iteration one evaluation,
//! the best image so far kept, the observer told, the run stopped however it must end; and the
//! seeded noise start.

use std::time::Instant;

use crate::error::Result;
use crate::image_io::Image;
use crate::loss::LossTerms;
use crate::optim::{Optimizer, Verdict};

use super::observer::{Observer, Outcome, Progress, Stop};

/// An objective as the loop sees it: an image in, its loss terms and pixel gradient out.
pub type Evaluate<'a> = dyn FnMut(&Image) -> Result<(LossTerms, Vec<f32>)> + 'a;

/// The exponential moving average of the iterates, with bias correction (crowsonkb's EMA).
struct Average {
    decay: f64,
    sum: Vec<f32>,
    weight: f64,
}

impl Average {
    fn update(&mut self, x: &[f32]) {
        let d = self.decay as f32;
        if self.sum.is_empty() {
            self.sum = vec![0.0; x.len()];
        }
        self.sum.iter_mut().zip(x).for_each(|(s, v)| *s = d * *s + (1.0 - d) * v);
        self.weight = self.decay * self.weight + (1.0 - self.decay);
    }
    fn value(&self, like: &Image) -> Image {
        let k = (1.0 / self.weight) as f32;
        Image { data: self.sum.iter().map(|v| v * k).collect(), ..*like }
    }
}

/// The best evaluation so far: its image, loss and (1-based) number.
struct Best {
    image: Image,
    terms: LossTerms,
    iteration: usize,
}

impl Best {
    /// Keeps `x` if its loss is lower than the best's (reusing the best's buffer).
    fn offer(best: &mut Option<Best>, x: &Image, terms: LossTerms, iteration: usize) {
        match best {
            Some(b) if terms.total >= b.terms.total => {}
            Some(b) => {
                b.image.data.copy_from_slice(&x.data);
                (b.terms, b.iteration) = (terms, iteration);
            }
            None => *best = Some(Best { image: x.clone(), terms, iteration }),
        }
    }
}

/// The optimisation loop over any objective: `evaluate` gives the loss and gradient of an image.
/// Each iteration is one evaluation, whatever the optimizer does with it. However the run ends
/// (the last iteration, the observer, convergence, a loss that cannot be recovered from), the
/// image returned is the one with the lowest loss evaluated, or with `average` the average of
/// the iterates if that scores lower still (it is evaluated once more, at the end).
pub fn optimize(
    evaluate: &mut Evaluate<'_>,
    mut x: Image,
    optimizer: &mut dyn Optimizer,
    average: Option<f64>,
    iterations: usize,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let start = Instant::now();
    let mut avg = average.map(|decay| Average { decay, sum: Vec::new(), weight: 0.0 });
    let mut best: Option<Best> = None;
    let mut stop = Stop::Finished;
    let mut done = 0;
    for i in 1..=iterations {
        let (terms, grad) = evaluate(&x)?;
        done = i;
        let finite = terms.total.is_finite() && grad.iter().all(|g| g.is_finite());
        if !finite && best.is_none() {
            // Nothing to step back to: the start itself does not have a finite loss.
            stop = Stop::NonFinite { iteration: i };
            break;
        }
        if finite {
            Best::offer(&mut best, &x, terms, i);
        }
        if let Some(a) = &mut avg
            && finite
        {
            a.update(&x.data);
        }
        let verdict = optimizer.step(&mut x.data, finite.then_some((terms.total, &grad[..])));
        let b = best.as_ref().expect("a finite evaluation");
        let shown = avg.as_ref().map(|a| a.value(&b.image));
        let flow = observer.on_iteration(&Progress {
            iteration: i,
            iterations,
            scale: 1,
            scales: 1,
            terms,
            accepted: verdict == Verdict::Accepted,
            best: b.terms,
            best_iteration: b.iteration,
            elapsed: start.elapsed(),
            image: shown.as_ref().unwrap_or(&b.image),
        });
        if verdict == Verdict::Failed {
            stop = Stop::NonFinite { iteration: i };
            break;
        }
        if flow.is_break() {
            stop = Stop::Interrupted;
            break;
        }
        if verdict == Verdict::Converged {
            stop = Stop::Converged;
            break;
        }
    }
    let Some(mut best) = best else {
        return Ok(Outcome { image: x, terms: LossTerms::default(), best_iteration: 0, iterations: done, stop });
    };
    if let Some(a) = avg
        && a.weight > 0.0
    {
        let mean = a.value(&best.image);
        let (terms, _) = evaluate(&mean)?;
        if terms.total < best.terms.total {
            best = Best { image: mean, terms, iteration: 0 };
        }
    }
    Ok(Outcome { image: best.image, terms: best.terms, best_iteration: best.iteration, iterations: done, stop })
}

/// Uniform noise in 0..255 from a seed (SplitMix64), the same on every platform.
pub fn noise_image(width: usize, height: usize, seed: u64) -> Image {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    };
    let data = (0..3 * width * height).map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 * 255.0).collect();
    Image { width, height, data }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;
    use crate::optim::{Adam, AdamConfig, Lbfgs};

    #[test]
    fn noise_is_seeded_and_in_range() {
        let a = noise_image(8, 4, 7);
        assert_eq!(a, noise_image(8, 4, 7));
        assert_ne!(a, noise_image(8, 4, 8));
        assert!(a.data.iter().all(|v| (0.0..255.0).contains(v)));
        let mean = a.data.iter().sum::<f32>() / a.data.len() as f32;
        assert!((mean - 127.5).abs() < 30.0, "{mean}");
    }

    /// A loss that becomes NaN at the 4th evaluation: Adam cannot step back, so the run stops
    /// there and keeps the best image of the first three.
    #[test]
    fn non_finite_loss_keeps_the_best_image() {
        let mut calls = 0;
        let mut eval = |img: &Image| {
            calls += 1;
            let loss: f64 = img.data.iter().map(|v| (*v as f64).powi(2)).sum();
            let total = if calls >= 4 { f64::NAN } else { loss };
            Ok((LossTerms { total, ..Default::default() }, img.data.iter().map(|v| 2.0 * v).collect()))
        };
        let mut seen = Vec::new();
        let mut obs = |p: &Progress| {
            seen.push((p.terms.total, p.best_iteration, p.image.clone()));
            ControlFlow::Continue(())
        };
        let x = Image { width: 1, height: 1, data: vec![10.0, -4.0, 3.0] };
        let mut adam = Adam::new(AdamConfig { lr: 1.0, ..Default::default() });
        let out = optimize(&mut eval, x, &mut adam, None, 10, &mut obs).unwrap();
        assert_eq!(out.stop, Stop::NonFinite { iteration: 4 });
        assert_eq!(out.iterations, 4);
        assert_eq!(seen.len(), 4);
        assert!(seen[3].0.is_nan());
        // Adam lowered the loss at each of its steps: the third image is the best.
        assert_eq!(out.best_iteration, 3);
        assert_eq!((seen[2].1, seen[3].1), (3, 3));
        assert_eq!(out.image, seen[3].2);
        assert!(out.terms.total.is_finite() && out.terms.total < seen[0].0);
    }

    /// A line search's trials that overshoot are never what the observer shows or the run
    /// returns: the best image so far never gets worse.
    #[test]
    fn best_so_far_is_monotone_and_returned() {
        // A loss with a narrow valley along x0 = x1: long trials overshoot it.
        let f = |x: &[f32]| {
            let (a, b) = (x[0] as f64, x[1] as f64);
            let l = 1e4 * (a - b).powi(2) + (a - 3.0).powi(2) + (b - 3.0).powi(2);
            (l, vec![(2e4 * (a - b) + 2.0 * (a - 3.0)) as f32, (-2e4 * (a - b) + 2.0 * (b - 3.0)) as f32, 0.0])
        };
        let mut eval = |img: &Image| {
            let (total, g) = f(&img.data);
            Ok((LossTerms { total, ..Default::default() }, g))
        };
        let mut best = Vec::new();
        let mut evaluated = Vec::new();
        let mut obs = |p: &Progress| {
            let (l, _) = f(&p.image.data);
            assert_eq!(l, p.best.total, "the image shown is the best one");
            best.push(p.best.total);
            evaluated.push((p.terms.total, p.accepted));
            ControlFlow::Continue(())
        };
        let x = Image { width: 1, height: 1, data: vec![0.0, 1.0, 0.0] };
        let out = optimize(&mut eval, x, &mut Lbfgs::new(5), None, 40, &mut obs).unwrap();
        assert!(best.windows(2).all(|w| w[1] <= w[0]), "{best:?}");
        assert!(evaluated.iter().any(|(l, accepted)| !accepted && *l > best[0]), "no trial overshot: {evaluated:?}");
        let accepted: Vec<f64> = evaluated.iter().filter(|e| e.1).map(|e| e.0).collect();
        assert!(accepted.windows(2).all(|w| w[1] < w[0]), "an accepted step raised the loss: {accepted:?}");
        assert_eq!(out.terms.total, *best.last().unwrap());
        assert_eq!(f(&out.image.data).0, out.terms.total);
        assert!(out.terms.total < 1e-6, "{}", out.terms.total);
    }

    #[test]
    fn observer_can_interrupt() {
        let mut eval = |img: &Image| {
            let total = img.data.iter().map(|v| (*v as f64 - 50.0).powi(2)).sum();
            Ok((LossTerms { total, ..Default::default() }, img.data.iter().map(|v| 2.0 * (v - 50.0)).collect()))
        };
        let mut obs = |p: &Progress| if p.iteration == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
        let x = Image::filled(2, 2, 100.0);
        let out = optimize(&mut eval, x, &mut Lbfgs::new(5), None, 10, &mut obs).unwrap();
        assert_eq!(out.stop, Stop::Interrupted);
        assert_eq!(out.iterations, 3);
        assert!(out.best_iteration > 1 && out.terms.total < 12.0 * 2500.0, "a step was taken before the break");
    }

    /// With averaging, the images shown are the bias-corrected moving average of the iterates,
    /// and the average is written when it scores better than every iterate.
    #[test]
    fn averaged_iterates() {
        // EMA with decay 0.5 and bias correction of the iterates 100, 99, 98.
        let want3 = (0.5 * 98.0 + 0.25 * 99.0 + 0.125 * 100.0) / (1.0 - 0.125);
        let loss = |img: &Image| img.data.iter().map(|v| (*v as f64 - want3).powi(2)).sum::<f64>();
        // A constant gradient: Adam's steps are then exactly lr each.
        let mut eval =
            |img: &Image| Ok((LossTerms { total: loss(img), ..Default::default() }, vec![1.0; img.data.len()]));
        let mut seen = Vec::new();
        let mut obs = |p: &Progress| {
            seen.push(p.image.data[0] as f64);
            ControlFlow::Continue(())
        };
        let x = Image::filled(1, 1, 100.0);
        let mut adam = Adam::new(AdamConfig { lr: 1.0, ..Default::default() });
        let out = optimize(&mut eval, x.clone(), &mut adam, Some(0.5), 3, &mut obs).unwrap();
        assert!((seen[0] - 100.0).abs() < 1e-4 && (seen[2] - want3).abs() < 1e-3, "{seen:?}");
        assert!((out.image.data[0] as f64 - want3).abs() < 1e-3);
        assert_eq!(out.best_iteration, 0);
        // When an iterate scores better than the average, the iterate is written.
        let mut eval = |img: &Image| {
            let total = img.data.iter().map(|v| (*v as f64 - 98.0).powi(2)).sum();
            Ok((LossTerms { total, ..Default::default() }, vec![1.0; img.data.len()]))
        };
        let mut adam = Adam::new(AdamConfig { lr: 1.0, ..Default::default() });
        let out =
            optimize(&mut eval, x, &mut adam, Some(0.5), 3, &mut |_: &Progress| ControlFlow::Continue(())).unwrap();
        assert_eq!((out.best_iteration, out.image.data[0]), (3, 98.0));
    }
}
