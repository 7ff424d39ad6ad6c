//! The studio's memory budget: what uploads in flight, their decoding and the queued jobs'
//! decoded images may hold at once. Each takes a [`Reservation`] before it allocates and gives
//! it back when it lets go (a guard: dropped with the upload or the job, however it ends); a
//! request that does not fit is answered 503 and the server keeps serving.

use std::sync::{Arc, Mutex};

/// A byte budget shared by every request.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: Mutex<u64>,
}

/// Bytes held from a [`Budget`] until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Budget { limit, used: Mutex::new(0) })
    }

    /// The bytes it allows in all.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The bytes held now.
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `bytes` more, if they fit.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let after = used.checked_add(bytes).filter(|&t| t <= self.limit)?;
        *used = after;
        Some(Reservation { budget: self.clone(), bytes })
    }
}

impl Reservation {
    /// Holds `more` bytes besides, if they fit (else holds what it held).
    pub fn grow(&mut self, more: u64) -> bool {
        let mut used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        match used.checked_add(more).filter(|&t| t <= self.budget.limit) {
            Some(after) => {
                *used = after;
                self.bytes += more;
                true
            }
            None => false,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_and_go_back() {
        let b = Budget::new(100);
        let mut a = b.reserve(60).unwrap();
        assert!(b.reserve(50).is_none(), "60 + 50 > 100");
        assert!(!a.grow(41) && a.grow(40));
        assert_eq!((b.used(), a.bytes()), (100, 100));
        drop(a);
        assert_eq!(b.used(), 0);
        assert!(b.reserve(u64::MAX).is_none());
        let _c = b.reserve(100).unwrap();
        assert!(b.reserve(1).is_none());
    }
}
