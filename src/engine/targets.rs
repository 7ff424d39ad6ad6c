//! Style targets computed once: a style image's [`Moments`] at each style layer, kept by the
//! backend that computed them and reused by the next objective that asks for the same ones (the
//! next photo of a batch after the same painting, a pyramid's scales that share a size, a
//! video's frames).
//!
//! An entry is keyed by a SHA-256 digest of everything the moments depend on besides the
//! network: the style image's pixels as the network sees them (after resizing and any colour
//! mode), its source mask, the tile side its passes ran in, the style layers and the kind of
//! moments. The network is the backend's own (a cache is never shared between backends), so a
//! cached value is exactly what computing it again would give, and a replay is bit for bit
//! whether or not the cache held it. Entries are dropped least recently used first when the
//! cache holds more than its byte budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::image_io::Image;
use crate::loss::moments::Moments;
use crate::vgg::LayerId;

/// The default byte budget: about 25 style images at the five default layers.
pub const DEFAULT_BUDGET: usize = 128 << 20;

/// What a cached entry is for (see the module's doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TargetKey([u8; 32]);

struct Entry {
    key: TargetKey,
    moments: Arc<[Moments]>,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    bytes: usize,
    clock: u64,
}

/// A bounded store of style targets (least recently used out first).
pub struct TargetCache {
    state: Mutex<State>,
    budget: AtomicUsize,
    computed: AtomicUsize,
}

impl Default for TargetCache {
    fn default() -> Self {
        TargetCache::new(DEFAULT_BUDGET)
    }
}

impl TargetCache {
    /// An empty cache holding at most `budget` bytes (0: it keeps nothing).
    pub fn new(budget: usize) -> Self {
        TargetCache {
            state: Mutex::new(State::default()),
            budget: AtomicUsize::new(budget),
            computed: AtomicUsize::new(0),
        }
    }

    /// The key of a style image's moments (see the module's doc).
    pub fn key(
        image: &Image,
        source_mask: Option<&Image>,
        tile: Option<usize>,
        layers: &[LayerId],
        centred: bool,
    ) -> TargetKey {
        let mut h = Sha256::new();
        let mut bytes = Vec::with_capacity(4 << 12);
        let mut add_image = |h: &mut Sha256, img: &Image| {
            h.update((img.width as u64).to_le_bytes());
            h.update((img.height as u64).to_le_bytes());
            for chunk in img.data.chunks(1 << 12) {
                bytes.clear();
                chunk.iter().for_each(|v| bytes.extend_from_slice(&v.to_bits().to_le_bytes()));
                h.update(&bytes);
            }
        };
        add_image(&mut h, image);
        match source_mask {
            Some(m) => {
                h.update([1]);
                add_image(&mut h, m);
            }
            None => h.update([0]),
        }
        h.update((tile.map_or(0, |t| t as u64 + 1)).to_le_bytes());
        for l in layers {
            h.update(l.to_string().as_bytes());
            h.update([b',']);
        }
        h.update([centred as u8]);
        TargetKey(h.finalize().into())
    }

    /// The moments under `key`, or `compute`'s (kept for next time if they fit the budget).
    pub fn get_or_compute(
        &self,
        key: TargetKey,
        compute: impl FnOnce() -> Result<Vec<Moments>>,
    ) -> Result<Arc<[Moments]>> {
        {
            let mut state = self.lock();
            state.clock += 1;
            let clock = state.clock;
            if let Some(e) = state.entries.iter_mut().find(|e| e.key == key) {
                e.used = clock;
                return Ok(e.moments.clone());
            }
        }
        let moments: Arc<[Moments]> = compute()?.into();
        self.computed.fetch_add(1, Ordering::Relaxed);
        let bytes: usize = moments.iter().map(Moments::bytes).sum();
        let budget = self.budget.load(Ordering::Relaxed);
        if bytes <= budget {
            let mut state = self.lock();
            if !state.entries.iter().any(|e| e.key == key) {
                state.clock += 1;
                let used = state.clock;
                state.bytes += bytes;
                state.entries.push(Entry { key, moments: moments.clone(), bytes, used });
                Self::evict(&mut state, budget);
            }
        }
        Ok(moments)
    }

    /// How many times targets were computed rather than found (since the cache was made).
    pub fn computed(&self) -> usize {
        self.computed.load(Ordering::Relaxed)
    }

    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes the byte budget (dropping entries to fit it).
    pub fn set_budget(&self, budget: usize) {
        self.budget.store(budget, Ordering::Relaxed);
        Self::evict(&mut self.lock(), budget);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        *self.lock() = State::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn evict(state: &mut State, budget: usize) {
        while state.bytes > budget {
            let Some(oldest) = state.entries.iter().enumerate().min_by_key(|(_, e)| e.used).map(|(i, _)| i) else {
                break;
            };
            let e = state.entries.swap_remove(oldest);
            state.bytes -= e.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(c: usize, v: f64) -> Vec<Moments> {
        vec![Moments { weight: 1.0, sum: Vec::new(), second: vec![v; c * c], centred: false }]
    }

    #[test]
    fn a_key_names_every_input() {
        let img = Image::filled(4, 3, 7.0);
        let layers: Vec<LayerId> = vec!["relu1_1".parse().unwrap()];
        let k = TargetCache::key(&img, None, None, &layers, false);
        assert_eq!(k, TargetCache::key(&img.clone(), None, None, &layers, false));
        let mut other = img.clone();
        other.data[5] = 7.5;
        for different in [
            TargetCache::key(&other, None, None, &layers, false),
            TargetCache::key(&img, Some(&img), None, &layers, false),
            TargetCache::key(&img, None, Some(512), &layers, false),
            TargetCache::key(&img, None, None, &["relu2_1".parse().unwrap()], false),
            TargetCache::key(&img, None, None, &layers, true),
            TargetCache::key(&Image::filled(3, 4, 7.0), None, None, &layers, false),
        ] {
            assert_ne!(k, different);
        }
    }

    #[test]
    fn entries_are_reused_and_the_least_recently_used_go_first() {
        let one = moments(8, 1.0);
        let each: usize = one.iter().map(Moments::bytes).sum();
        let cache = TargetCache::new(2 * each);
        let key = |n: u8| TargetKey([n; 32]);
        let mut calls = 0;
        let mut get = |n: u8| {
            cache
                .get_or_compute(key(n), || {
                    calls += 1;
                    Ok(moments(8, n as f64))
                })
                .unwrap()[0]
                .second[0]
        };
        assert_eq!((get(1), get(2), get(1)), (1.0, 2.0, 1.0));
        // 3 pushes out 2, the least recently used; 1 stays.
        assert_eq!(get(3), 3.0);
        assert_eq!(get(1), 1.0);
        assert_eq!(get(2), 2.0);
        drop(get);
        assert_eq!(calls, 4, "1, 2, 3, then 2 again");
        assert_eq!(cache.computed(), 4);
        assert!(cache.bytes() <= 2 * each && cache.len() == 2);
        // A zero budget keeps nothing; an error is not kept.
        let none = TargetCache::new(0);
        none.get_or_compute(key(1), || Ok(moments(2, 1.0))).unwrap();
        assert!(none.is_empty());
        assert!(none.get_or_compute(key(2), || Err(crate::Error::config("no"))).is_err());
        assert_eq!(none.computed(), 1);
    }
}
