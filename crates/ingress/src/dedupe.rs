//! Remembers which deliveries were already queued, so a resent callback is not queued twice.
//!
//! - An id is remembered only **after** its publish was confirmed; a failed publish leaves no
//!   trace, so the sender's retry is accepted.
//! - Two concurrent requests with the same id never both publish: the second waits for the
//!   first's outcome, then answers "duplicate" (first confirmed) or tries itself (first failed).
//! - Memory is bounded: at most `capacity` ids, oldest forgotten first, each for at most `ttl`
//!   (the signature tolerance: an older replay fails the timestamp check anyway).
//! - It is per process. Replicas do not share it; a duplicate that reaches two replicas is
//!   queued twice, which is harmless because workers reconcile.
//!
//! Ids are stored as 128-bit keyed hashes rather than strings: ~80 bytes per entry instead of
//! ~150, and a collision needs about 2^64 ids.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The most entries reserved at start; a larger `capacity` grows past it on demand.
const PREALLOCATED_MAX: usize = 1_000_000;

/// A 128-bit digest of an id.
type Key = u128;

enum Entry {
    /// A request is publishing this id; waiters subscribe to the sender, which is dropped when
    /// the entry changes.
    InFlight(watch::Sender<()>),
    /// Confirmed at this instant.
    Done(Instant),
}

struct Inner {
    entries: HashMap<Key, Entry, BuildHasherDefault<PassThrough>>,
    /// Confirmed keys in confirmation order, for expiry and eviction.
    order: VecDeque<(Key, Instant)>,
}

/// The dedupe memory. Cheap to share behind an `Arc`.
pub(crate) struct Dedupe {
    inner: Mutex<Inner>,
    hashers: (RandomState, RandomState),
    capacity: usize,
    ttl: Duration,
}

/// What a request should do with its id.
pub(crate) enum Claim {
    /// This request owns the id: publish, then [`Owner::confirm`] (or drop to release).
    Owner(Owner),
    /// The id was already queued within the window.
    Duplicate,
    /// Another request is publishing the same id: wait for this, then claim again.
    Wait(watch::Receiver<()>),
}

impl Dedupe {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        // Sized up front: growing by doubling would hold the old and the new table at once
        // (and the allocator keeps both for a while), which made the ingress's peak memory
        // half again its steady size under a storm. Untouched capacity costs no resident memory.
        let reserved = capacity.saturating_add(1).min(PREALLOCATED_MAX);
        Dedupe {
            inner: Mutex::new(Inner {
                entries: HashMap::with_capacity_and_hasher(reserved, BuildHasherDefault::default()),
                order: VecDeque::with_capacity(reserved),
            }),
            hashers: (RandomState::new(), RandomState::new()),
            capacity,
            ttl,
        }
    }

    /// Claims `id` now.
    pub(crate) fn claim(self: &Arc<Self>, id: &str) -> Claim {
        self.claim_at(id, Instant::now())
    }

    fn claim_at(self: &Arc<Self>, id: &str, now: Instant) -> Claim {
        let key = self.key(id);
        let mut inner = self.lock();
        match inner.entries.get(&key) {
            Some(Entry::InFlight(sender)) => return Claim::Wait(sender.subscribe()),
            Some(Entry::Done(at)) if now.saturating_duration_since(*at) < self.ttl => {
                return Claim::Duplicate;
            }
            // Expired or absent: take it.
            Some(Entry::Done(_)) | None => {}
        }
        let (sender, _) = watch::channel(());
        inner.entries.insert(key, Entry::InFlight(sender));
        Claim::Owner(Owner {
            dedupe: Arc::clone(self),
            key,
            confirmed: false,
        })
    }

    /// How many ids are remembered or in flight (for tests and diagnostics).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn key(&self, id: &str) -> Key {
        let high = self.hashers.0.hash_one(id);
        let low = self.hashers.1.hash_one(id);
        (u128::from(high) << 64) | u128::from(low)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code path panics while holding the lock; if one ever did, the map is still
        // consistent enough to keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn confirm_at(&self, key: Key, now: Instant) {
        let mut inner = self.lock();
        // Replacing the entry drops the in-flight sender, which wakes every waiter.
        inner.entries.insert(key, Entry::Done(now));
        inner.order.push_back((key, now));
        while let Some(&(old_key, at)) = inner.order.front() {
            let expired = now.saturating_duration_since(at) >= self.ttl;
            if !expired && inner.order.len() <= self.capacity {
                break;
            }
            inner.order.pop_front();
            // Remove only the entry this queue item describes: the key may have been
            // re-confirmed (a later item) or be in flight again.
            if matches!(inner.entries.get(&old_key), Some(Entry::Done(t)) if *t == at) {
                inner.entries.remove(&old_key);
            }
        }
    }

    fn release(&self, key: Key) {
        let mut inner = self.lock();
        if matches!(inner.entries.get(&key), Some(Entry::InFlight(_))) {
            inner.entries.remove(&key);
        }
    }
}

/// Ownership of an id being published. Dropping it without [`Owner::confirm`] forgets the id
/// and wakes waiters, so a failed (or cancelled) publish is never remembered as delivered.
pub(crate) struct Owner {
    dedupe: Arc<Dedupe>,
    key: Key,
    confirmed: bool,
}

impl Owner {
    /// Records the id as queued.
    pub(crate) fn confirm(mut self) {
        self.confirmed = true;
        self.dedupe.confirm_at(self.key, Instant::now());
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if !self.confirmed {
            self.dedupe.release(self.key);
        }
    }
}

/// The keys are already uniformly random digests; hashing them again is wasted work.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        // Truncation is the point: the low half of a random digest is a fine hash.
        self.0 = n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dedupe(capacity: usize, ttl_secs: u64) -> Arc<Dedupe> {
        Arc::new(Dedupe::new(capacity, Duration::from_secs(ttl_secs)))
    }

    fn owner(claim: Claim) -> Owner {
        match claim {
            Claim::Owner(o) => o,
            Claim::Duplicate => panic!("unexpected duplicate"),
            Claim::Wait(_) => panic!("unexpected wait"),
        }
    }

    #[test]
    fn confirmed_ids_are_duplicates_until_they_expire() {
        let d = dedupe(10, 300);
        let t0 = Instant::now();
        let o = owner(d.claim_at("a", t0));
        d.confirm_at(o.key, t0);
        std::mem::forget(o); // confirmed by hand above
        assert!(matches!(
            d.claim_at("a", t0 + Duration::from_secs(299)),
            Claim::Duplicate
        ));
        let again = owner(d.claim_at("a", t0 + Duration::from_secs(300)));
        drop(again);
        assert!(matches!(d.claim_at("a", t0), Claim::Owner(_)));
    }

    #[test]
    fn released_ids_are_not_remembered() {
        let d = dedupe(10, 300);
        drop(owner(d.claim("a")));
        assert_eq!(d.len(), 0);
        owner(d.claim("a")).confirm();
        assert!(matches!(d.claim("a"), Claim::Duplicate));
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let d = dedupe(3, 300);
        for id in ["a", "b", "c", "d"] {
            owner(d.claim(id)).confirm();
        }
        assert_eq!(d.len(), 3);
        assert!(matches!(d.claim("a"), Claim::Owner(_)));
        for id in ["b", "c", "d"] {
            assert!(matches!(d.claim(id), Claim::Duplicate), "{id}");
        }
    }

    #[test]
    fn expired_entries_are_swept_on_confirm() {
        let d = dedupe(100, 10);
        let t0 = Instant::now();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let o = owner(d.claim_at(id, t0));
            d.confirm_at(o.key, t0 + Duration::from_secs(i as u64));
            std::mem::forget(o);
        }
        let o = owner(d.claim_at("z", t0 + Duration::from_secs(11)));
        d.confirm_at(o.key, t0 + Duration::from_secs(11));
        std::mem::forget(o);
        // a (t0) and b (t0+1) are 10 s or more old; c (t0+2) is not.
        assert_eq!(d.len(), 2);
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_confirm_and_on_release() {
        let d = dedupe(10, 300);
        let first = owner(d.claim("a"));
        let Claim::Wait(mut rx) = d.claim("a") else {
            panic!("second claim must wait");
        };
        drop(first);
        assert!(rx.changed().await.is_err());
        let second = owner(d.claim("a"));
        let Claim::Wait(mut rx) = d.claim("a") else {
            panic!("third claim must wait");
        };
        second.confirm();
        assert!(rx.changed().await.is_err());
        assert!(matches!(d.claim("a"), Claim::Duplicate));
    }
}
