//! Jittered exponential backoff for reconnects.
//!
//! "Full jitter": each delay is uniform in `[base/2, base]`, with `base` doubling from `min` to
//! `max`, so that many processes losing the same broker do not reconnect in lockstep.

use std::time::Duration;

/// A reconnect delay sequence.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// Back to the first delay (after a success).
    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }

    /// The next delay to wait.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::random_range(0..=jitter_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_bounds_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut bases = Vec::new();
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(5), "{d:?}");
            bases.push(d);
        }
        assert!(bases[0] >= Duration::from_millis(50) && bases[0] <= Duration::from_millis(100));
        // Late delays sit between max/2 and max.
        assert!(bases[9] >= Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
