//! Latency samples and their summary.

use std::time::Duration;

/// What one measured phase produced.
#[derive(Debug, Default)]
pub struct Phase {
    /// Successful operations.
    pub ok: u64,
    /// Failed operations.
    pub failed: u64,
    /// Latency of each successful operation, in microseconds.
    pub latencies_us: Vec<u64>,
    /// How long the phase ran.
    pub elapsed: Duration,
}

impl Phase {
    /// Merges another task's samples into this one.
    pub fn absorb(&mut self, other: Phase) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.latencies_us.extend(other.latencies_us);
    }

    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// The `q` quantile (0..1) of the latencies, in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let rank = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        self.latencies_us[rank.min(self.latencies_us.len() - 1)] as f64 / 1000.0
    }
}
