//! `nowpilot-bench soak`: the whole production path under a constant load for a bounded time,
//! watching memory and latency for growth.
//!
//! Everything is a separate process, as in a deployment: `nowpilot sim` (the ServiceNow
//! stand-in, with a small injected latency, whose business rule posts signed callbacks),
//! `nowpilot ingress` and `nowpilot worker` on RabbitMQ with their own queue prefix. Separate
//! processes rather than `nowpilot run`: that is how the compose and Kubernetes deployments
//! run, and it gives each component its own RSS, so growth points at a component.
//!
//! 1. **Probe**: on a fresh stack, `--probe-people` people change incidents back to back; the
//!    rate at which the worker settles events, once past a short ramp, is the capacity. That
//!    stack is then thrown away, so the probe's allocator high-water marks cannot hide growth
//!    in the soak.
//! 2. **Soak**: on another fresh stack, a constant `--fraction` of the capacity (or `--rate`),
//!    open loop, for `--warmup` (unmeasured) plus `--duration`, sampled every `--sample`.
//! 3. **Drain** until the queues are empty and every owed note was seen, then the report.
//!
//! Processes and queues are cleaned up on every exit, Ctrl-C and SIGTERM included.

mod load;
mod observe;
mod report;
mod stack;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio_util::sync::CancellationToken;

use crate::ingress::{broker_pid, cpu_seconds};
use load::Load;
use observe::{Observer, Tracker};
use report::{Phase, Sample};
use stack::{Metrics, Rss, Stack, StackOptions};

/// Flags of `nowpilot-bench soak`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured time at constant load (after the warm-up), e.g. `10m`, or `30s` for a smoke run.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured load before it (default: a tenth of --duration, between 5 s and 60 s).
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Incident changes per second; skips the capacity probe.
    #[arg(long, conflicts_with = "fraction")]
    rate: Option<f64>,
    /// The load as a fraction of the probed capacity.
    #[arg(long, default_value_t = 0.5)]
    fraction: f64,
    /// Length of the capacity probe (default: a twentieth of --duration, between 10 s and 30 s).
    #[arg(long, value_parser = humantime::parse_duration)]
    probe: Option<Duration>,
    /// People changing incidents back to back during the probe.
    #[arg(long, default_value_t = 16)]
    probe_people: usize,
    /// Sampling interval.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    sample: Duration,
    /// Report window for the per-window table and first-vs-last percentiles (default: 1 min,
    /// or a fifth of --duration when that is shorter).
    #[arg(long, value_parser = humantime::parse_duration)]
    window: Option<Duration>,
    /// Latency the simulator adds to every Table API call, in ms.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// `[worker] concurrency` (ServiceNow calls in flight).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Partition queues.
    #[arg(long, default_value_t = 16)]
    partitions: u16,
    /// Time between two changes of the same incident.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    step_gap: Duration,
    /// Delete incidents (and their journal) this long after their resolve; `0s` keeps them,
    /// and the simulator's own time per call then grows with the run.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    retain: Duration,
    /// The most changes in flight at once; beyond it a change is skipped and counted.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// The broker.
    #[arg(
        long,
        env = "NOWPILOT_TEST_AMQP_URL",
        default_value = nowpilot_queue::config::DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    amqp_url: String,
    /// The nowpilot binary (default: next to this one; build it with --release first).
    #[arg(long)]
    nowpilot: Option<PathBuf>,
    /// `[telemetry] log_level` of the nowpilot processes (their logs go to a temporary file).
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Keep each stack's directory (configuration and the processes' logs) instead of
    /// deleting it, and print where it is.
    #[arg(long)]
    keep_logs: bool,
}

impl Args {
    fn warmup(&self) -> Duration {
        self.warmup.unwrap_or_else(|| {
            (self.duration / 10).clamp(Duration::from_secs(5), Duration::from_secs(60))
        })
    }
    fn probe(&self) -> Duration {
        self.probe.unwrap_or_else(|| {
            (self.duration / 20).clamp(Duration::from_secs(10), Duration::from_secs(30))
        })
    }
    fn window(&self) -> Duration {
        let wanted = self
            .window
            .unwrap_or_else(|| (self.duration / 5).min(Duration::from_secs(60)));
        // A whole number of samples, so every window holds the same number.
        let samples = (wanted.as_secs_f64() / self.sample.as_secs_f64())
            .round()
            .max(1.0);
        self.sample.mul_f64(samples)
    }
}

/// Runs the probe and the soak and prints the report; stops everything on Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.sample.is_zero() || args.duration < args.sample * 3 {
        bail!("--duration must hold at least three --sample intervals");
    }
    if !(args.fraction > 0.0 && args.fraction <= 1.5) {
        bail!("--fraction must be in (0, 1.5]");
    }
    let binary = crate::binary::nowpilot(args.nowpilot.as_deref())?;
    let options = StackOptions {
        binary,
        amqp_url: args.amqp_url.clone(),
        latency_ms: args.latency_ms,
        concurrency: args.concurrency,
        partitions: args.partitions,
        log_level: args.log_level.clone(),
        keep_logs: args.keep_logs,
    };
    // Dropping the run (on a signal) kills the child processes and deletes the topology.
    tokio::select! {
        result = soak(&args, &options) => result,
        () = interrupted() => bail!("interrupted: processes stopped, topology deleted"),
    }
}

async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn prefix(what: &str) -> String {
    format!("bench-soak-{what}-{:08x}", rand::random::<u32>())
}

async fn soak(args: &Args, options: &StackOptions) -> anyhow::Result<()> {
    println!(
        "nowpilot soak: separate sim, ingress and worker processes on RabbitMQ; simulator latency {} ms, worker concurrency {}, {} partitions, {} between an incident's changes, retention {}",
        args.latency_ms,
        args.concurrency,
        args.partitions,
        humantime::format_duration(args.step_gap),
        humantime::format_duration(args.retain)
    );
    println!(
        "{} cores, load average {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average().map_or("?".to_owned(), |l| format!("{l:.2}"))
    );
    let rate = match args.rate {
        Some(rate) => rate,
        None => {
            let capacity = probe(args, options).await?;
            capacity * args.fraction
        }
    };
    if rate.is_nan() || rate <= 0.0 {
        bail!("the load rate is {rate}: nothing to soak");
    }
    println!();
    println!(
        "soak: {rate:.1} changes/s for {} (+{} warm-up), sampled every {}",
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup()),
        humantime::format_duration(args.sample)
    );
    let mut stack = Stack::start(options, &prefix("soak")).await?;
    let measured = measure(args, &mut stack, rate).await;
    stack.stop().await;
    let samples = measured?;
    let verdict = report::print(
        &samples,
        args.window().as_secs_f64(),
        args.sample.as_secs_f64(),
    );
    println!();
    println!(
        "load average at the end: {}",
        load_average().map_or("?".to_owned(), |l| format!("{l:.2}"))
    );
    println!("{verdict}");
    Ok(())
}

/// The capacity: passes per second of the worker while people write flat out.
async fn probe(args: &Args, options: &StackOptions) -> anyhow::Result<f64> {
    let length = args.probe();
    println!();
    println!(
        "capacity probe: {} people changing incidents back to back for {}",
        args.probe_people,
        humantime::format_duration(length)
    );
    let mut stack = Stack::start(options, &prefix("probe")).await?;
    let result = async {
        let tracker = Arc::new(Tracker::default());
        let load = Load::new(
            &stack.sim_base,
            args.step_gap,
            None,
            args.probe_people,
            tracker,
        )?;
        let http = reqwest::Client::new();
        let until = Instant::now() + length;
        let people = {
            let load = load.clone();
            let n = args.probe_people;
            tokio::spawn(async move { load.run_people(n, until).await })
        };
        // The first quarter is a ramp: connections open, queues start to fill.
        tokio::time::sleep(length / 4).await;
        let (t0, written0) = (Instant::now(), load.counters.ok.load(Ordering::Relaxed));
        let before = WorkerCounts::read(&http, &stack).await;
        people.await?;
        let secs = t0.elapsed().as_secs_f64();
        let written = (load.counters.ok.load(Ordering::Relaxed) - written0) as f64 / secs;
        let after = WorkerCounts::read(&http, &stack).await;
        let passes = (after.passes - before.passes) / secs;
        let events = (after.events - before.events) / secs;
        stack.check_alive()?;
        let depths = stack.depths().await?;
        let backlog: u64 = depths.partitions.iter().sum::<u64>() + depths.retry;
        println!(
            "probe: people wrote {written:.1} changes/s; the worker ran {passes:.1} passes/s and settled {events:.1} events/s (a pass settles every event of its incident that waited); {backlog} messages queued at the end; {} failed changes",
            load.counters.failed.load(Ordering::Relaxed)
        );
        if let Some(error) = load.counters.first_error() {
            println!("first failure: {error}");
        }
        if (backlog as f64) < passes {
            println!(
                "the worker kept up: the people were the limit, so the capacity is at least {passes:.1} changes/s (more --probe-people would find more)"
            );
        }
        // Below capacity every change gets a pass of its own, so the passes a saturated
        // worker runs per second are the changes per second the stack sustains.
        println!(
            "capacity: {passes:.1} changes/s (passes/s of the saturated worker), load average {}",
            load_average().map_or("?".to_owned(), |l| format!("{l:.2}"))
        );
        anyhow::Ok(passes)
    }
    .await;
    stack.stop().await;
    result
}

/// What the previous sample read, to turn totals into differences.
#[derive(Default)]
struct Previous {
    cpu: [f64; 4],
    ok: u64,
    failed: u64,
    counts: WorkerCounts,
}

async fn measure(args: &Args, stack: &mut Stack, rate: f64) -> anyhow::Result<Vec<Sample>> {
    let tracker = Arc::new(Tracker::default());
    let retain = (!args.retain.is_zero()).then_some(args.retain);
    let load = Load::new(
        &stack.sim_base,
        args.step_gap,
        retain,
        args.max_in_flight,
        tracker.clone(),
    )?;
    let http = reqwest::Client::new();
    let mut observer = Observer::new(&stack.sim_base);
    // Start from empty logs.
    observer.read(&tracker).await?;
    let broker = broker_pid();
    let [ingress, worker, sim] = stack.pids();
    let pids = [Some(ingress), Some(worker), Some(sim), broker];
    let mut previous = Previous {
        cpu: pids.map(|p| p.and_then(cpu_seconds).unwrap_or(0.0)),
        counts: WorkerCounts::read(&http, stack).await,
        ..Previous::default()
    };

    let (warmup, duration) = (args.warmup(), args.duration);
    let started = Instant::now();
    let until = started + warmup + duration;
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let driver = {
        let (load, stop) = (load.clone(), stop.clone());
        tokio::spawn(async move { load.run_rate(rate, until, &stop).await })
    };
    report::print_line_header();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + args.sample, args.sample);
    let mut last = started;
    let drain_limit = Duration::from_secs(90);
    loop {
        tick.tick().await;
        stack.check_alive()?;
        let now = Instant::now();
        let secs = now.duration_since(last).as_secs_f64();
        let middle = (now.duration_since(started).as_secs_f64() - secs / 2.0).max(0.0);
        last = now;
        let phase = if middle < warmup.as_secs_f64() {
            Phase::Warmup
        } else if middle < (warmup + duration).as_secs_f64() {
            Phase::Soak
        } else {
            Phase::Drain
        };
        let rss = [ingress, worker, sim].map(|p| Rss::read(p).unwrap_or_default());
        let cpu_now = pids.map(|p| p.and_then(cpu_seconds).unwrap_or(0.0));
        let observed = observer.read(&tracker).await?;
        let depths = stack.depths().await?;
        let counts = WorkerCounts::read(&http, stack).await;
        let ok = load.counters.ok.load(Ordering::Relaxed);
        let failed = load.counters.failed.load(Ordering::Relaxed)
            + load.counters.skipped.load(Ordering::Relaxed);
        let sample = Sample {
            at: now.duration_since(started).as_secs_f64(),
            phase,
            secs,
            rss,
            cpu: std::array::from_fn(|i| (cpu_now[i] - previous.cpu[i]).max(0.0)),
            changes: ok - previous.ok,
            changes_failed: failed - previous.failed,
            passes: (counts.passes - previous.counts.passes).max(0.0),
            callback_us: observed.callback_us,
            callback_failed: observed.callback_failed,
            e2e_us: observed.e2e_us,
            queue: [depths.partitions.iter().sum(), depths.retry, depths.dead],
            sim_calls: observed.sim_calls,
            sim_ms_per_call: observed.sim_busy_us as f64
                / 1000.0
                / observed.sim_calls.max(1) as f64,
            sim_slowest: (
                observed.sim_slowest.0 as f64 / 1000.0,
                observed.sim_slowest.1,
            ),
            polls: counts.polls - previous.counts.polls,
            poll_found: counts.poll_found - previous.counts.poll_found,
            load1: load_average().unwrap_or(f64::NAN),
        };
        if observed.callback_overflow {
            println!(
                "warning: the simulator's callback log turned over between two samples; use a shorter --sample"
            );
        }
        previous = Previous {
            cpu: cpu_now,
            ok,
            failed,
            counts,
        };
        sample.print_line();
        let drained = phase == Phase::Drain
            && sample.queue[0] + sample.queue[1] == 0
            && tracker.pending() == 0
            && worker_metric(&http, stack, "nowpilot_worker_passes_in_flight").await == 0.0;
        samples.push(sample);
        if drained {
            break;
        }
        if now > until + drain_limit {
            println!(
                "warning: not drained {} after the load stopped ({} notes still pending)",
                humantime::format_duration(drain_limit),
                tracker.pending()
            );
            break;
        }
    }
    driver.await?;
    print_totals(&load, &tracker, &samples, &http, stack).await;
    Ok(samples)
}

async fn print_totals(
    load: &Load,
    tracker: &Tracker,
    samples: &[Sample],
    http: &reqwest::Client,
    stack: &Stack,
) {
    let c = &load.counters;
    let notes = tracker.totals();
    println!();
    println!(
        "changes: {} written, {} failed, {} skipped (more than --max-in-flight running); {} incidents deleted by the retention ({} failed)",
        c.ok.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
        c.skipped.load(Ordering::Relaxed),
        c.purged.load(Ordering::Relaxed),
        c.purge_failed.load(Ordering::Relaxed),
    );
    if let Some(error) = c.first_error() {
        println!("first failure: {error}");
    }
    println!(
        "callbacks: {} answered 2xx, {} failed",
        samples.iter().map(|s| s.callback_us.len()).sum::<usize>(),
        samples.iter().map(|s| s.callback_failed).sum::<u64>()
    );
    println!(
        "owed notes: {} measured end to end, {} overlapped the previous pass, {} in a request-log gap, {} missing (no note within 60 s), {} without a callback in the log",
        notes.measured, notes.overlapped, notes.log_gap, notes.missing, notes.no_callback
    );
    if let Some(m) = Metrics::scrape(http, &stack.worker_base).await {
        let outcomes: Vec<String> = [
            "acted",
            "nothing_owed",
            "no_plan",
            "terminal",
            "stale",
            "retried",
            "dead_lettered",
            "requeued",
        ]
        .iter()
        .map(|o| {
            (
                o,
                m.sum("nowpilot_worker_events_total", &format!("outcome=\"{o}\"")),
            )
        })
        .filter(|(_, n)| *n > 0.0)
        .map(|(o, n)| format!("{o} {n}"))
        .collect();
        println!("worker events by outcome: {}", outcomes.join(", "));
    }
}

/// The worker's pass, event and poll counters.
#[derive(Default)]
struct WorkerCounts {
    /// Reconcile passes run.
    passes: f64,
    /// Events settled (a pass settles the events that waited for it, and stale ones cost none).
    events: f64,
    /// Polls run and the incidents they listed.
    polls: f64,
    poll_found: f64,
}

impl WorkerCounts {
    async fn read(http: &reqwest::Client, stack: &Stack) -> WorkerCounts {
        let m = Metrics::scrape(http, &stack.worker_base).await;
        let sum = |name: &str| m.as_ref().map_or(0.0, |m| m.sum(name, ""));
        WorkerCounts {
            passes: sum("nowpilot_worker_reconcile_duration_seconds_count"),
            events: sum("nowpilot_worker_events_total"),
            polls: sum("nowpilot_poller_polls_total"),
            poll_found: sum("nowpilot_poller_incidents_found_total"),
        }
    }
}

async fn worker_metric(http: &reqwest::Client, stack: &Stack, name: &str) -> f64 {
    Metrics::scrape(http, &stack.worker_base)
        .await
        .map_or(0.0, |m| m.sum(name, ""))
}

/// The 1-minute load average (other work on the machine shows here).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
