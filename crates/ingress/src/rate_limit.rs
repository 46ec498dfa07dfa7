//! Request rate limiting per client address, answered `429` with `Retry-After` before anything
//! else looks at the request (no body read, no signature checked).
//!
//! Each client address has a token bucket of `burst` requests refilled at `rate_limit` per
//! second, kept as one number: the GCRA "theoretical arrival time". IPv6 clients are counted
//! per /64 (one host usually owns a whole /64, and could otherwise rotate through it).
//!
//! Memory is bounded: a bucket that has refilled completely carries no information and is
//! dropped by a periodic sweep, and at most [`MAX_TRACKED`] addresses are tracked. When that
//! many addresses are all active at once (a flood from many sources), further new addresses
//! share one overflow bucket per shard: they are limited together rather than not at all.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::debug;

use crate::client_addr::{PeerAddr, any_contains, canonical, client_addr};
use crate::response::Refusal;
use crate::server::IngressState;
use crate::telemetry;

/// Addresses tracked at most, over all shards.
pub(crate) const MAX_TRACKED: usize = 100_000;
/// Independent locks, so concurrent requests from different clients rarely contend.
const SHARDS: usize = 16;
/// How often a shard drops refilled buckets.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A full shard sweeps at most this often (a sweep walks the whole shard).
const FULL_SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Go ahead.
    Allow,
    /// Refused; the client may try again after this many whole seconds (at least 1).
    Deny {
        /// Seconds until a request would be allowed.
        retry_after_secs: u64,
    },
}

struct Shard {
    /// Client key → theoretical arrival time (ns since the limiter's epoch).
    arrivals: HashMap<u128, u64>,
    /// Shared by new addresses once the shard is full.
    overflow: u64,
    last_sweep: u64,
}

/// Per-address token buckets.
pub(crate) struct RateLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    /// Nanoseconds per request at the sustained rate.
    interval_ns: u64,
    /// How far ahead of now the arrival time may run: `burst × interval`.
    tolerance_ns: u64,
    per_shard: usize,
    epoch: Instant,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("interval_ns", &self.interval_ns)
            .field("tolerance_ns", &self.tolerance_ns)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `per_second` requests per second sustained, `burst` at once (both at least 1).
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        Self::with_capacity(per_second, burst, MAX_TRACKED)
    }

    fn with_capacity(per_second: u32, burst: u32, max_tracked: usize) -> Self {
        let interval_ns = 1_000_000_000 / u64::from(per_second.max(1));
        RateLimiter {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        arrivals: HashMap::new(),
                        overflow: 0,
                        last_sweep: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            interval_ns: interval_ns.max(1),
            tolerance_ns: interval_ns.max(1).saturating_mul(u64::from(burst.max(1))),
            per_shard: max_tracked.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
        }
    }

    /// Counts one request from `addr` now.
    pub(crate) fn check(&self, addr: IpAddr) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.check_at(addr, now)
    }

    fn check_at(&self, addr: IpAddr, now: u64) -> Decision {
        let key = key(addr);
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let Some(shard) = self.shards.get(index) else {
            return Decision::Allow;
        };
        // Nothing panics while the lock is held; a poisoned map is still usable.
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let since_sweep = now.saturating_sub(shard.last_sweep);
        let full = shard.arrivals.len() >= self.per_shard;
        if since_sweep >= nanos(SWEEP_EVERY) || (full && since_sweep >= nanos(FULL_SWEEP_EVERY)) {
            shard.arrivals.retain(|_, arrival| *arrival > now);
            shard.last_sweep = now;
        }
        let tracked = shard.arrivals.contains_key(&key) || shard.arrivals.len() < self.per_shard;
        let arrival = if tracked {
            shard.arrivals.get(&key).copied().unwrap_or(0)
        } else {
            shard.overflow
        };
        let next = arrival.max(now).saturating_add(self.interval_ns);
        let ahead = next - now;
        if ahead > self.tolerance_ns {
            let wait = Duration::from_nanos(ahead - self.tolerance_ns);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Decision::Deny {
                retry_after_secs: secs.max(1),
            };
        }
        if tracked {
            shard.arrivals.insert(key, next);
        } else {
            shard.overflow = next;
        }
        Decision::Allow
    }

    /// Addresses currently tracked (tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .arrivals
                    .len()
            })
            .sum()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// IPv4 as its mapped IPv6 form; IPv6 by its /64.
fn key(addr: IpAddr) -> u128 {
    match canonical(addr) {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

/// Middleware on everything the ingress listener serves: refuses a client over its rate.
pub(crate) async fn limit(
    State(state): State<IngressState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(limiter) = state.rate_limiter()
        && let Some(ConnectInfo(PeerAddr(peer))) =
            request.extensions().get::<ConnectInfo<PeerAddr>>()
    {
        let settings = state.settings();
        let client = client_addr(peer.ip(), request.headers(), &settings.trusted_proxies);
        if !any_contains(&settings.rate_limit_exempt, client)
            && let Decision::Deny { retry_after_secs } = limiter.check(client)
        {
            debug!(%client, retry_after_secs, "rate limited");
            telemetry::rate_limited();
            return Refusal::RateLimited { retry_after_secs }.into_response(retry_after_secs);
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(10, 5);
        let a = ip("203.0.113.1");
        for _ in 0..5 {
            assert_eq!(limiter.check_at(a, SECOND), Decision::Allow);
        }
        assert_eq!(
            limiter.check_at(a, SECOND),
            Decision::Deny {
                retry_after_secs: 1
            }
        );
        // Another address has its own bucket.
        assert_eq!(limiter.check_at(ip("203.0.113.2"), SECOND), Decision::Allow);
        // One interval (100 ms) later, one more request is allowed, and only one.
        let later = SECOND + SECOND / 10;
        assert_eq!(limiter.check_at(a, later), Decision::Allow);
        assert!(matches!(limiter.check_at(a, later), Decision::Deny { .. }));
        // Half a second later the bucket has five tokens again.
        let refilled = later + SECOND / 2;
        for _ in 0..5 {
            assert_eq!(limiter.check_at(a, refilled), Decision::Allow);
        }
        assert!(matches!(
            limiter.check_at(a, refilled),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn retry_after_covers_the_wait() {
        // One request per 10 s: after the burst of one, the wait is ~10 s.
        let limiter = RateLimiter::new(1, 1);
        let limiter = RateLimiter {
            interval_ns: 10 * SECOND,
            tolerance_ns: 10 * SECOND,
            ..limiter
        };
        let a = ip("198.51.100.7");
        assert_eq!(limiter.check_at(a, 0), Decision::Allow);
        assert_eq!(
            limiter.check_at(a, SECOND / 2),
            Decision::Deny {
                retry_after_secs: 10
            }
        );
    }

    #[test]
    fn ipv6_is_counted_per_slash_64_and_mapped_ipv4_as_ipv4() {
        let limiter = RateLimiter::new(1, 2);
        assert_eq!(limiter.check_at(ip("2001:db8::1"), 0), Decision::Allow);
        assert_eq!(limiter.check_at(ip("2001:db8::ffff:2"), 0), Decision::Allow);
        assert!(matches!(
            limiter.check_at(ip("2001:db8::3"), 0),
            Decision::Deny { .. }
        ));
        assert_eq!(limiter.check_at(ip("2001:db8:0:1::1"), 0), Decision::Allow);
        assert_eq!(limiter.check_at(ip("192.0.2.1"), 0), Decision::Allow);
        assert_eq!(limiter.check_at(ip("::ffff:192.0.2.1"), 0), Decision::Allow);
        assert!(matches!(
            limiter.check_at(ip("192.0.2.1"), 0),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn memory_stays_bounded() {
        let limiter = RateLimiter::with_capacity(100, 10, SHARDS * 4);
        for i in 0..10_000u32 {
            let _ = limiter.check_at(IpAddr::V4((0x0a00_0000 + i).into()), 0);
        }
        assert!(limiter.tracked() <= SHARDS * 4, "{}", limiter.tracked());
    }

    #[test]
    fn idle_entries_expire() {
        let limiter = RateLimiter::new(100, 10);
        for i in 0..10_000u32 {
            let _ = limiter.check_at(IpAddr::V4((0x0a00_0000 + i).into()), 0);
        }
        assert_eq!(limiter.tracked(), 10_000);
        // Every bucket refilled within burst/rate = 0.1 s; each shard's next sweep forgets
        // them (a thousand new addresses reach every shard).
        let later = nanos(SWEEP_EVERY) + SECOND;
        for i in 0..1_000u32 {
            let _ = limiter.check_at(IpAddr::V4((0x0b00_0000 + i).into()), later);
        }
        assert_eq!(limiter.tracked(), 1_000);
    }

    #[test]
    fn a_full_table_limits_new_addresses_together() {
        // One slot per shard: the first address of each shard is tracked, the rest overflow.
        let limiter = RateLimiter::with_capacity(1, 3, SHARDS);
        let mut denied = 0;
        for i in 0..1_000u32 {
            let addr = IpAddr::V4((0x0a00_0000 + i).into());
            if matches!(limiter.check_at(addr, 0), Decision::Deny { .. }) {
                denied += 1;
            }
        }
        // At most 16 tracked buckets of 3, plus 16 overflow buckets of 3, were allowed.
        assert!(1_000 - denied <= 2 * SHARDS * 3, "{denied}");
        assert!(limiter.tracked() <= SHARDS);
    }
}
