//! Injected faults and the rate-limit rule.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rand::{RngExt as _, SeedableRng, rngs::StdRng};

use crate::{config::FaultSettings, locks::lock};

/// The `X-RateLimit-Rule` value: the sys_id of the (single, simulated) rule.
pub(crate) const RATE_LIMIT_RULE: &str = "a1c3e5f7092b4d6f8a0c2e4f6a8b0d1e";

/// A random failure drawn for one Table API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RandomFault {
    /// 500 with the error envelope.
    Internal,
    /// 503 with a load balancer's HTML page.
    Unavailable,
}

/// The current fault settings and the state of their random sequence.
#[derive(Debug)]
pub(crate) struct FaultState {
    settings: FaultSettings,
    rng: StdRng,
    next_is_internal: bool,
    forced_until: Option<Instant>,
}

impl FaultState {
    /// Applies settings from `now`: reseeds the sequence and starts any forced period.
    pub(crate) fn new(settings: FaultSettings, now: Instant) -> Self {
        let rng = match settings.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        let forced_until = settings.forced.and_then(|f| now.checked_add(f.duration));
        FaultState {
            settings,
            rng,
            next_is_internal: true,
            forced_until,
        }
    }

    /// The settings in effect.
    pub(crate) fn settings(&self) -> &FaultSettings {
        &self.settings
    }

    /// A forced status still in effect, with the time it has left.
    pub(crate) fn forced(&self, now: Instant) -> Option<(u16, Duration)> {
        let until = self.forced_until?;
        let status = self.settings.forced?.status;
        (until > now).then(|| (status, until - now))
    }

    /// Whether this Table API request fails at random; failures alternate 500 and 503.
    pub(crate) fn draw(&mut self) -> Option<RandomFault> {
        let rate = self.settings.fault_rate;
        if rate.is_nan() || rate <= 0.0 {
            return None;
        }
        if self.rng.random::<f64>() >= self.settings.fault_rate {
            return None;
        }
        let fault = if self.next_is_internal {
            RandomFault::Internal
        } else {
            RandomFault::Unavailable
        };
        self.next_is_internal = !self.next_is_internal;
        Some(fault)
    }
}

/// A fixed-window rate limit per user: the window opens with a user's first request.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    pub(crate) limit: u32,
    pub(crate) window: Duration,
    users: Mutex<HashMap<String, Window>>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    count: u32,
}

/// The rate-limit outcome of one request, and the values of its headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateVerdict {
    /// Whether the request may proceed.
    pub(crate) allowed: bool,
    /// `X-RateLimit-Limit`.
    pub(crate) limit: u32,
    /// `X-RateLimit-Reset`: unix seconds of the window's end.
    pub(crate) reset_unix: u64,
    /// `Retry-After`: whole seconds until the window ends, at least 1.
    pub(crate) retry_after: u64,
}

impl RateLimiter {
    /// A limit of `limit` requests per `window` per user.
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            limit,
            window,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `user` at `now` (a rejected request does not count).
    pub(crate) fn check(&self, user: &str, now: Instant) -> RateVerdict {
        let mut users = lock(&self.users);
        let window = users.entry(user.to_owned()).or_insert(Window {
            started: now,
            count: 0,
        });
        if now.saturating_duration_since(window.started) >= self.window {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        let allowed = window.count < self.limit;
        if allowed {
            window.count += 1;
        }
        let remaining = self
            .window
            .saturating_sub(now.saturating_duration_since(window.started));
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        RateVerdict {
            allowed,
            limit: self.limit,
            reset_unix: ceil_secs(unix_now + remaining),
            retry_after: ceil_secs(remaining).max(1),
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ForcedStatus;

    #[test]
    fn seeded_faults_repeat_and_alternate() {
        let settings = FaultSettings {
            fault_rate: 0.5,
            seed: Some(42),
            ..FaultSettings::default()
        };
        let now = Instant::now();
        let run = || {
            let mut state = FaultState::new(settings.clone(), now);
            (0..200).map(|_| state.draw()).collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        let faults: Vec<RandomFault> = first.into_iter().flatten().collect();
        assert!(faults.len() > 50 && faults.len() < 150, "{}", faults.len());
        for pair in faults.windows(2) {
            assert_ne!(pair[0], pair[1]);
        }
        let mut none = FaultState::new(FaultSettings::default(), now);
        assert!((0..100).all(|_| none.draw().is_none()));
        let mut all = FaultState::new(
            FaultSettings {
                fault_rate: 1.0,
                ..FaultSettings::default()
            },
            now,
        );
        assert!((0..100).all(|_| all.draw().is_some()));
    }

    #[test]
    fn forced_status_lasts_its_duration() {
        let now = Instant::now();
        let state = FaultState::new(
            FaultSettings {
                forced: Some(ForcedStatus {
                    status: 503,
                    duration: Duration::from_secs(5),
                }),
                ..FaultSettings::default()
            },
            now,
        );
        assert_eq!(state.forced(now), Some((503, Duration::from_secs(5))));
        assert_eq!(state.forced(now + Duration::from_secs(5)), None);
    }

    #[test]
    fn rate_limit_windows() {
        let limiter = RateLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(limiter.check("a", t0).allowed);
        assert!(limiter.check("a", t0 + Duration::from_secs(1)).allowed);
        let v = limiter.check("a", t0 + Duration::from_millis(2500));
        assert!(!v.allowed);
        assert_eq!(v.retry_after, 8);
        assert_eq!(v.limit, 2);
        // Other users have their own window.
        assert!(limiter.check("b", t0 + Duration::from_secs(3)).allowed);
        // The window ends: a new one opens.
        assert!(limiter.check("a", t0 + Duration::from_secs(10)).allowed);
        let late = limiter.check("a", t0 + Duration::from_millis(19_999));
        assert!(late.allowed);
        assert_eq!(late.retry_after, 1);
    }
}
