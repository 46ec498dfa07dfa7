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
//! Ids are stored as 128-bit keyed hashes rather than strings, and times as milliseconds since
//! the memory was created: about 56 bytes per remembered id, table and expiry queue together
//! (100 000 ids: ~5.5 MiB). A collision needs about 2^64 ids.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The most entries reserved at start; a larger `capacity` grows past it on demand.
const PREALLOCATED_MAX: usize = 1_000_000;

/// A 128-bit digest of an id, in two halves (8-byte alignment keeps table slots at 24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    high: u64,
    low: u64,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The digest is already uniformly random: its low half is a fine table hash.
        state.write_u64(self.low);
    }
}

/// The state of an id in the table: [`IN_FLIGHT`], or the stamp of its confirmation.
type Stamp = u64;

/// A request is publishing this id; its waiters subscribe to the sender in `waiters`.
const IN_FLIGHT: Stamp = 0;

struct Inner {
    entries: HashMap<Key, Stamp, BuildHasherDefault<PassThrough>>,
    /// Senders of the ids in flight, dropped (waking every waiter) when the id settles.
    waiters: HashMap<Key, watch::Sender<()>, BuildHasherDefault<PassThrough>>,
    /// Confirmed keys in confirmation order, for expiry and eviction.
    order: VecDeque<(Key, Stamp)>,
}

/// The dedupe memory. Cheap to share behind an `Arc`.
pub(crate) struct Dedupe {
    inner: Mutex<Inner>,
    hashers: (RandomState, RandomState),
    capacity: usize,
    ttl_ms: u64,
    epoch: Instant,
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
                waiters: HashMap::default(),
                order: VecDeque::with_capacity(reserved),
            }),
            hashers: (RandomState::new(), RandomState::new()),
            capacity,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
        }
    }

    /// Claims `id` now.
    pub(crate) fn claim(self: &Arc<Self>, id: &str) -> Claim {
        self.claim_at(id, Instant::now())
    }

    fn claim_at(self: &Arc<Self>, id: &str, now: Instant) -> Claim {
        let key = self.key(id);
        let now = self.stamp(now);
        let mut inner = self.lock();
        match inner.entries.get(&key).copied() {
            Some(IN_FLIGHT) => {
                if let Some(sender) = inner.waiters.get(&key) {
                    return Claim::Wait(sender.subscribe());
                }
                // No sender cannot happen (they come and go together); take the id over.
            }
            Some(at) if now.saturating_sub(at) < self.ttl_ms => return Claim::Duplicate,
            // Expired or absent: take it.
            Some(_) | None => {}
        }
        let (sender, _) = watch::channel(());
        inner.entries.insert(key, IN_FLIGHT);
        inner.waiters.insert(key, sender);
        Claim::Owner(Owner {
            dedupe: Arc::clone(self),
            key,
            confirmed: false,
        })
    }

    /// Milliseconds since the memory was created, plus one (0 is [`IN_FLIGHT`]).
    fn stamp(&self, at: Instant) -> Stamp {
        let ms = u64::try_from(at.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX - 1);
        ms.saturating_add(1)
    }

    /// How many ids are remembered or in flight (for tests and diagnostics).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn key(&self, id: &str) -> Key {
        Key {
            high: self.hashers.0.hash_one(id),
            low: self.hashers.1.hash_one(id),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code path panics while holding the lock; if one ever did, the map is still
        // consistent enough to keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn confirm_at(&self, key: Key, now: Instant) {
        let now = self.stamp(now);
        let mut inner = self.lock();
        inner.entries.insert(key, now);
        // Dropping the in-flight sender wakes every waiter.
        inner.waiters.remove(&key);
        inner.order.push_back((key, now));
        while let Some(&(old_key, at)) = inner.order.front() {
            let expired = now.saturating_sub(at) >= self.ttl_ms;
            if !expired && inner.order.len() <= self.capacity {
                break;
            }
            inner.order.pop_front();
            // Remove only the entry this queue item describes: the key may have been
            // re-confirmed (a later item) or be in flight again.
            if inner.entries.get(&old_key) == Some(&at) {
                inner.entries.remove(&old_key);
            }
        }
    }

    fn release(&self, key: Key) {
        let mut inner = self.lock();
        if inner.entries.get(&key) == Some(&IN_FLIGHT) {
            inner.entries.remove(&key);
        }
        inner.waiters.remove(&key);
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
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
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
