//! The samples of a soak and what they say: per-window figures, memory trends with their noise
//! band, latency first vs last, and the verdict.
//!
//! A trend is a least-squares line through every sample of the measured phase (after the
//! warm-up). Its **noise band** is ±2 standard deviations of the samples around that line. A
//! quantity "grew beyond noise" when the line's rise over the run is larger than the band and
//! the slope's 95 % confidence interval excludes zero; RSS sampled every few seconds is
//! strongly autocorrelated, so the confidence interval alone would call every allocator step a
//! trend, and the band is what keeps the verdict honest.

use super::stack::Rss;

/// The part of the run a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Load on, not measured (connections, caches, allocator pools fill).
    Warmup,
    /// Load on, measured.
    Soak,
    /// Load off, waiting for the last passes.
    Drain,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Warmup => "warm",
            Phase::Soak => "soak",
            Phase::Drain => "drain",
        }
    }
}

/// The processes sampled, in the order of [`Sample::rss`] and [`Sample::cpu`].
pub(super) const PROCESSES: [&str; 4] = ["ingress", "worker", "sim", "broker"];

/// One sampling interval.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    /// Seconds since the load started (end of the interval).
    pub(super) at: f64,
    pub(super) phase: Phase,
    /// The interval's length in seconds.
    pub(super) secs: f64,
    /// Resident memory at the end of the interval: ingress, worker, simulator (broker unused).
    pub(super) rss: [Rss; 3],
    /// CPU seconds used during the interval: ingress, worker, simulator, broker.
    pub(super) cpu: [f64; 4],
    /// Changes written by the load.
    pub(super) changes: u64,
    /// Changes that failed or were skipped.
    pub(super) changes_failed: u64,
    /// Reconcile passes the worker ran.
    pub(super) passes: f64,
    /// Callback latencies in µs.
    pub(super) callback_us: Vec<u64>,
    /// Callbacks that failed.
    pub(super) callback_failed: u64,
    /// End-to-end latencies in µs.
    pub(super) e2e_us: Vec<u64>,
    /// Ready messages in the partition queues, the retry tiers and the dead-letter queue.
    pub(super) queue: [u64; 3],
    /// Table API calls the simulator answered and their mean time, ms.
    pub(super) sim_calls: u64,
    pub(super) sim_ms_per_call: f64,
    /// The slowest call of the interval: ms and what it was.
    pub(super) sim_slowest: (f64, String),
    /// Polls the worker's poller ran in the interval, and the incidents they listed.
    pub(super) polls: f64,
    pub(super) poll_found: f64,
    /// The 1-minute load average.
    pub(super) load1: f64,
}

const MIB: f64 = 1024.0;

/// The `q` quantile (0..=1) of `values` in milliseconds, `None` when empty.
pub(super) fn quantile_ms(values: &mut [u64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((values.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    values
        .get(rank.min(values.len() - 1))
        .map(|v| *v as f64 / 1000.0)
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

impl Sample {
    /// One line while the soak runs.
    pub(super) fn print_line(&self) {
        let (mut cb, mut e2e) = (self.callback_us.clone(), self.e2e_us.clone());
        let pct = |cpu: f64| 100.0 * cpu / self.secs.max(1e-9);
        println!(
            "{:>6.0}s {:<5} {:>6.1}/s {:>6.1}/s  cb {:>5}/{:>6} ms  e2e {:>6}/{:>7} ms  q {:>4}/{}/{}  RSS MiB {:>5.1} {:>5.1} {:>6.1}  CPU% {:>3.0} {:>3.0} {:>3.0} {:>3.0}  sim {:.1} ms (max {:.0}: {})  load {:.2}{}{}",
            self.at,
            self.phase.label(),
            self.changes as f64 / self.secs.max(1e-9),
            self.passes / self.secs.max(1e-9),
            ms(quantile_ms(&mut cb, 0.5)),
            ms(quantile_ms(&mut cb, 0.99)),
            ms(quantile_ms(&mut e2e, 0.5)),
            ms(quantile_ms(&mut e2e, 0.99)),
            self.queue[0],
            self.queue[1],
            self.queue[2],
            self.rss[0].total_kib as f64 / MIB,
            self.rss[1].total_kib as f64 / MIB,
            self.rss[2].total_kib as f64 / MIB,
            pct(self.cpu[0]),
            pct(self.cpu[1]),
            pct(self.cpu[2]),
            pct(self.cpu[3]),
            self.sim_ms_per_call,
            self.sim_slowest.0,
            self.sim_slowest.1,
            self.load1,
            if self.polls > 0.0 {
                format!("  poll listed {}", self.poll_found)
            } else {
                String::new()
            },
            if self.changes_failed + self.callback_failed > 0 {
                format!(
                    "  FAILED: {} changes, {} callbacks",
                    self.changes_failed, self.callback_failed
                )
            } else {
                String::new()
            }
        );
    }
}

/// The header of [`Sample::print_line`].
pub(super) fn print_line_header() {
    println!(
        "{:>7} {:<5} {:>8} {:>8}  {:<18} {:<21} {:<10} {:<22} {:<17}",
        "t",
        "phase",
        "changes",
        "passes",
        "callback p50/p99",
        "end-to-end p50/p99",
        "queue r/rt/dl",
        "RSS ingress worker sim",
        "CPU% in wk sim mq"
    );
}

/// A least-squares line `y = intercept + slope × x`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fit {
    pub(super) slope: f64,
    /// Standard error of the slope.
    pub(super) slope_se: f64,
    /// Standard deviation of the points around the line.
    pub(super) resid_sd: f64,
}

/// Fits a line through `points`; `None` with fewer than three distinct x.
pub(super) fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let sse: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let resid_var = sse / (n - 2.0);
    Some(Fit {
        slope,
        slope_se: (resid_var / sxx).sqrt(),
        resid_sd: resid_var.sqrt(),
    })
}

impl Fit {
    /// Whether the line rises more than the noise band over `span` and the rise is
    /// significant.
    pub(super) fn grew(&self, span: f64) -> bool {
        self.slope * span > 2.0 * self.resid_sd && self.slope - 2.0 * self.slope_se > 0.0
    }
}

/// A trend line for the report: what, its unit, and the fit over minutes.
struct Trend {
    name: String,
    unit: &'static str,
    start: f64,
    end: f64,
    fit: Option<Fit>,
    minutes: f64,
}

impl Trend {
    fn of(
        name: impl Into<String>,
        unit: &'static str,
        points: &[(f64, f64)],
        first: &[f64],
        last: &[f64],
    ) -> Trend {
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let minutes = match (points.first(), points.last()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0.0,
        };
        Trend {
            name: name.into(),
            unit,
            start: mean(first),
            end: mean(last),
            fit: fit(points),
            minutes,
        }
    }

    fn grew(&self) -> bool {
        self.fit.is_some_and(|f| f.grew(self.minutes))
    }

    fn print(&self) {
        let Some(f) = self.fit else {
            println!("{:<22} too few samples for a trend", self.name);
            return;
        };
        println!(
            "{:<22} {:>9.2} {:>9.2} {:>+9.2} {:>+10.3} ± {:<8.3} {:>9.3} {:>+9.2}   {}",
            self.name,
            self.start,
            self.end,
            self.end - self.start,
            f.slope,
            2.0 * f.slope_se,
            2.0 * f.resid_sd,
            f.slope * self.minutes,
            if self.grew() {
                "GREW beyond noise"
            } else {
                "within noise"
            }
        );
    }
}

/// Samples grouped into report windows.
struct Window<'a> {
    from: f64,
    to: f64,
    samples: Vec<&'a Sample>,
}

impl Window<'_> {
    fn secs(&self) -> f64 {
        self.samples.iter().map(|s| s.secs).sum::<f64>().max(1e-9)
    }
    fn latencies(&self, pick: fn(&Sample) -> &Vec<u64>) -> Vec<u64> {
        self.samples
            .iter()
            .flat_map(|s| pick(s).iter().copied())
            .collect()
    }
    fn mean(&self, pick: impl Fn(&Sample) -> f64) -> f64 {
        self.samples.iter().map(|s| pick(s)).sum::<f64>() / self.samples.len().max(1) as f64
    }
}

fn windows(samples: &[Sample], per_window: usize) -> Vec<Window<'_>> {
    let measured: Vec<&Sample> = samples.iter().filter(|s| s.phase == Phase::Soak).collect();
    measured
        .chunks(per_window.max(1))
        .filter_map(|chunk| {
            let (first, last) = (chunk.first()?, chunk.last()?);
            Some(Window {
                from: first.at - first.secs,
                to: last.at,
                samples: chunk.to_vec(),
            })
        })
        .collect()
}

/// Prints the per-window table, the trends and the verdict. Returns the verdict line.
pub(super) fn print(samples: &[Sample], window_secs: f64, sample_secs: f64) -> String {
    let per_window = (window_secs / sample_secs.max(1e-9)).round().max(1.0) as usize;
    let windows = windows(samples, per_window);
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        let verdict = "verdict: no measured samples (the run ended during the warm-up)".to_owned();
        println!("{verdict}");
        return verdict;
    };
    println!();
    println!(
        "per {window_secs:.0} s window (measured phase):\n{:>13} {:>9} {:>8} {:>15} {:>17} {:>9} {:>15} {:>10} {:>16} {:>6}",
        "window s",
        "changes/s",
        "passes/s",
        "cb p50/p99 ms",
        "e2e p50/p99 ms",
        "queue max",
        "RSS in/wk MiB",
        "sim ms/call",
        "CPU% in/wk/sim/mq",
        "load"
    );
    for w in &windows {
        let (mut cb, mut e2e) = (w.latencies(|s| &s.callback_us), w.latencies(|s| &s.e2e_us));
        let cpu = |i: usize| 100.0 * w.samples.iter().map(|s| s.cpu[i]).sum::<f64>() / w.secs();
        let calls: u64 = w.samples.iter().map(|s| s.sim_calls).sum();
        let sim_ms = w
            .samples
            .iter()
            .map(|s| s.sim_ms_per_call * s.sim_calls as f64)
            .sum::<f64>()
            / calls.max(1) as f64;
        println!(
            "{:>6.0}-{:<6.0} {:>9.1} {:>8.1} {:>7}/{:<7} {:>8}/{:<8} {:>9} {:>7.1}/{:<7.1} {:>10.2} {:>4.0}/{:>3.0}/{:>3.0}/{:>3.0}    {:>6.2}",
            w.from,
            w.to,
            w.samples.iter().map(|s| s.changes).sum::<u64>() as f64 / w.secs(),
            w.samples.iter().map(|s| s.passes).sum::<f64>() / w.secs(),
            ms(quantile_ms(&mut cb, 0.5)),
            ms(quantile_ms(&mut cb, 0.99)),
            ms(quantile_ms(&mut e2e, 0.5)),
            ms(quantile_ms(&mut e2e, 0.99)),
            w.samples
                .iter()
                .map(|s| s.queue[0] + s.queue[1])
                .max()
                .unwrap_or(0),
            w.mean(|s| s.rss[0].total_kib as f64) / MIB,
            w.mean(|s| s.rss[1].total_kib as f64) / MIB,
            sim_ms,
            cpu(0),
            cpu(1),
            cpu(2),
            cpu(3),
            w.mean(|s| s.load1),
        );
    }

    let measured: Vec<&Sample> = samples.iter().filter(|s| s.phase == Phase::Soak).collect();
    let origin = measured.first().map_or(0.0, |s| s.at);
    let series = |pick: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        measured
            .iter()
            .filter_map(|s| pick(s).map(|y| ((s.at - origin) / 60.0, y)))
            .collect()
    };
    let ends = |pick: &dyn Fn(&Sample) -> Option<f64>| -> (Vec<f64>, Vec<f64>) {
        (
            first.samples.iter().filter_map(|s| pick(s)).collect(),
            last.samples.iter().filter_map(|s| pick(s)).collect(),
        )
    };
    let trend = |name: String, unit: &'static str, pick: &dyn Fn(&Sample) -> Option<f64>| {
        let (a, b) = ends(pick);
        Trend::of(name, unit, &series(pick), &a, &b)
    };

    println!();
    println!(
        "trends over the measured phase (start = mean of the first window, end = of the last; slope per minute ± its 95 % interval; noise = ±2σ around the line):"
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>22} {:>9} {:>9}",
        "", "start", "end", "change", "slope /min", "noise ±", "rise"
    );
    let mut trends = Vec::new();
    for (i, name) in PROCESSES.iter().take(3).enumerate() {
        trends.push(trend(format!("{name} RSS MiB"), "MiB", &|s: &Sample| {
            Some(s.rss[i].total_kib as f64 / MIB)
        }));
        trends.push(trend(format!("{name} anon MiB"), "MiB", &|s: &Sample| {
            Some(s.rss[i].anon_kib as f64 / MIB)
        }));
    }
    let p50 =
        |pick: fn(&Sample) -> &Vec<u64>| move |s: &Sample| quantile_ms(&mut pick(s).clone(), 0.5);
    trends.push(trend(
        "callback p50 ms".into(),
        "ms",
        &p50(|s| &s.callback_us),
    ));
    trends.push(trend("end-to-end p50 ms".into(), "ms", &p50(|s| &s.e2e_us)));
    trends.push(trend("queued messages".into(), "msgs", &|s: &Sample| {
        Some((s.queue[0] + s.queue[1]) as f64)
    }));
    trends.push(trend("sim ms/call".into(), "ms", &|s: &Sample| {
        (s.sim_calls > 0).then_some(s.sim_ms_per_call)
    }));
    for t in &trends {
        t.print();
    }

    println!();
    let (mut cb0, mut cb1) = (
        first.latencies(|s| &s.callback_us),
        last.latencies(|s| &s.callback_us),
    );
    let (mut e0, mut e1) = (
        first.latencies(|s| &s.e2e_us),
        last.latencies(|s| &s.e2e_us),
    );
    println!(
        "latency, first window ({:.0}-{:.0} s) → last window ({:.0}-{:.0} s):",
        first.from, first.to, last.from, last.to
    );
    println!(
        "  callback    p50 {} → {} ms, p99 {} → {} ms",
        ms(quantile_ms(&mut cb0, 0.5)),
        ms(quantile_ms(&mut cb1, 0.5)),
        ms(quantile_ms(&mut cb0, 0.99)),
        ms(quantile_ms(&mut cb1, 0.99)),
    );
    println!(
        "  end-to-end  p50 {} → {} ms, p99 {} → {} ms",
        ms(quantile_ms(&mut e0, 0.5)),
        ms(quantile_ms(&mut e1, 0.5)),
        ms(quantile_ms(&mut e0, 0.99)),
        ms(quantile_ms(&mut e1, 0.99)),
    );

    // The simulator is the stand-in for ServiceNow, not the system under test: its trends
    // are shown to explain latency, not judged.
    let judged: Vec<&Trend> = trends
        .iter()
        .filter(|t| !t.name.starts_with("sim"))
        .filter(|t| t.grew())
        .collect();
    if judged.is_empty() {
        "verdict: no growth beyond noise".to_owned()
    } else {
        let what: Vec<String> = judged
            .iter()
            .map(|t| {
                let slope = t.fit.map_or(0.0, |f| f.slope);
                format!("{} {:+.2} {}/min", t.name, slope, t.unit)
            })
            .collect();
        format!("verdict: grew beyond noise: {}", what.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_fitted_exactly() {
        let points: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 + 2.0 * x as f64)).collect();
        let f = fit(&points).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-9);
        assert!(f.resid_sd < 1e-9);
        assert!(f.grew(9.0));
    }

    #[test]
    fn noise_without_a_trend_does_not_grow() {
        // Alternating ±1 around a flat line: slope ~0, band ±2.
        let points: Vec<(f64, f64)> = (0..40)
            .map(|x| (x as f64, if x % 2 == 0 { 101.0 } else { 99.0 }))
            .collect();
        let f = fit(&points).unwrap();
        assert!(f.slope.abs() < 0.01);
        assert!(!f.grew(39.0));
        assert!(fit(&points[..2]).is_none());
    }

    #[test]
    fn a_small_rise_inside_the_band_is_noise() {
        // Rises 1 over the run with ±5 alternating noise: significant slope is not enough.
        let points: Vec<(f64, f64)> = (0..200)
            .map(|x| {
                let noise = if x % 2 == 0 { 5.0 } else { -5.0 };
                (x as f64, 100.0 + x as f64 / 200.0 + noise)
            })
            .collect();
        assert!(!fit(&points).unwrap().grew(199.0));
    }

    #[test]
    fn quantiles_pick_ranks() {
        let mut v = vec![5_000, 1_000, 3_000, 2_000, 4_000];
        assert_eq!(quantile_ms(&mut v, 0.5), Some(3.0));
        assert_eq!(quantile_ms(&mut v, 0.99), Some(5.0));
        assert_eq!(quantile_ms(&mut [], 0.5), None);
    }
}
