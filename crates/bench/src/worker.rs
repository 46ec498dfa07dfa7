//! The worker benchmark: incident passes per second and CPU time per pass against the
//! simulator, at a configured ServiceNow concurrency `C`, for each injected latency `L`.
//!
//! The simulator runs as a separate `nowpilot sim` process, so this process's CPU is the
//! worker's (plus the in-memory queue and the feeder that publishes one event per incident).
//! Per latency: create the incidents through the Table API, run the worker here
//! (`nowpilot_worker::run` over a `MemoryBackend`, `[worker] concurrency = C`), warm up on
//! separate incidents, then publish one event per measured incident and time until the activity
//! sink has seen every pass. The simulator's request log gives the calls per pass `k` (measured,
//! not assumed) and the most Table API calls that overlapped in time, which must not exceed `C`.
//! With `L > 0` the ceiling is `C / (k × L)` passes/s.

mod sim;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use nowpilot_admin::ConnectionManager;
use nowpilot_model::{
    EventEnvelope, EventSource,
    plans::{PlanConfig, PlanSet},
};
use nowpilot_queue::{EventPublisher, EventQueue, MemoryBackend, QueueConfig, QueueKind};
use nowpilot_servicenow::ServiceNowConfig;
use nowpilot_worker::{Outcome, PassReport, WorkerConfig, WorkerDeps, WorkerError};
use secrecy::SecretString;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::ingress::cpu_seconds;
use sim::{CallStats, Created, INTEGRATION_USER, SimProcess};

/// Flags of `nowpilot-bench worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `[worker] concurrency`: the most ServiceNow calls the worker keeps in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured incidents per latency (one pass each).
    #[arg(long, default_value_t = 3000)]
    incidents: usize,
    /// Unmeasured warm-up incidents per latency (connections, caches, allocator).
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Injected simulator latencies in milliseconds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,50")]
    latencies: Vec<u64>,
    /// The plan every pass runs: `note` (one work note) or `quickstart` (acknowledge, then
    /// investigate: the built-in Quickstart plan).
    #[arg(long, value_enum, default_value_t = PlanChoice::Note)]
    plan: PlanChoice,
    /// Partitions of the in-memory queue.
    #[arg(long, default_value_t = 16)]
    partitions: u16,
    /// Unsettled deliveries per partition (`[queue] prefetch`); partitions × prefetch bounds
    /// the passes running at once.
    #[arg(long, default_value_t = 32)]
    prefetch: u16,
    /// Give up on a phase after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Run with what `nowpilot worker` installs: a Prometheus recorder and an info-level log
    /// subscriber (stderr), so CPU per pass includes metrics and spans. Off: both are no-ops.
    #[arg(long)]
    telemetry: bool,
    /// The nowpilot binary (default: next to this one; build it with --release first).
    #[arg(long)]
    nowpilot: Option<PathBuf>,
}

/// Which plan the passes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PlanChoice {
    /// One autonomous work note: read, journal, one PATCH.
    Note,
    /// The built-in Quickstart plan: acknowledge and investigate.
    Quickstart,
}

/// The figures of one latency.
struct Row {
    latency_ms: u64,
    passes: usize,
    elapsed: Duration,
    cpu_here: f64,
    cpu_sim: f64,
    calls: CallStats,
    outcomes: BTreeMap<&'static str, u64>,
    first_error: Option<String>,
    load: String,
}

impl Row {
    fn rate(&self) -> f64 {
        self.passes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn per_pass_us(&self, secs: f64) -> f64 {
        secs * 1e6 / self.passes.max(1) as f64
    }
    fn k(&self) -> f64 {
        self.calls.calls as f64 / self.passes.max(1) as f64
    }
    fn ceiling(&self, concurrency: usize) -> Option<f64> {
        (self.latency_ms > 0 && self.k() > 0.0)
            .then(|| concurrency as f64 / (self.k() * self.latency_ms as f64 / 1000.0))
    }
}

/// Runs every latency and prints the table.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.incidents == 0 {
        bail!("--incidents must be at least 1");
    }
    let binary = crate::binary::nowpilot(args.nowpilot.as_deref())?;
    println!(
        "nowpilot worker benchmark: concurrency C = {}, {} incidents (+{} warm-up) per latency, plan {:?}, {} partitions × prefetch {}",
        args.concurrency, args.incidents, args.warmup, args.plan, args.partitions, args.prefetch
    );
    println!(
        "cores: {}, load average at start: {}, telemetry {}",
        cores(),
        load_average(),
        if args.telemetry {
            "on (Prometheus recorder, info-level logs)"
        } else {
            "off"
        }
    );
    if args.telemetry {
        install_telemetry()?;
    }
    let mut rows = Vec::new();
    for &latency_ms in &args.latencies {
        println!();
        println!("-- simulator latency {latency_ms} ms");
        // Ctrl-C drops the phase, and with it the simulator process (kill on drop).
        let row = tokio::select! {
            row = measure(&args, &binary, latency_ms) => row?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        };
        rows.push(row);
    }
    print_table(&args, &rows);
    Ok(())
}

async fn measure(args: &Args, binary: &std::path::Path, latency_ms: u64) -> anyhow::Result<Row> {
    let sim = SimProcess::start(binary, latency_ms, args.concurrency).await?;
    let result = measure_on(args, &sim, latency_ms).await;
    sim.stop().await;
    result
}

async fn measure_on(args: &Args, sim: &SimProcess, latency_ms: u64) -> anyhow::Result<Row> {
    let started = Instant::now();
    let created = sim
        .create_incidents(args.warmup + args.incidents, args.concurrency)
        .await?;
    println!(
        "created {} incidents in {:.1} s ({})",
        created.len(),
        started.elapsed().as_secs_f64(),
        sim.base
    );
    let (warm, measured) = created.split_at(args.warmup);
    let worker = Harness::start(args, sim)?;
    let result = async {
        if !warm.is_empty() {
            worker.feed(&envelopes(warm), args.timeout).await?;
            let (warm_outcomes, warm_error) = worker.tally.take();
            println!("warm-up: {warm_outcomes:?}");
            if let Some(error) = warm_error {
                println!("first warm-up failure: {error}");
            }
        }
        sim.clear_request_log().await?;
        let events = envelopes(measured);
        let load_before = load_average();
        let (here0, sim0) = (cpu_of(std::process::id()), cpu_of(sim.pid));
        let elapsed = worker.feed(&events, args.timeout).await?;
        let (here1, sim1) = (cpu_of(std::process::id()), cpu_of(sim.pid));
        let (outcomes, first_error) = worker.tally.take();
        let (calls, logged) = sim.table_calls().await?;
        if logged >= sim::REQUEST_LOG_CAPACITY {
            println!(
                "warning: the simulator's request log is full ({logged} entries): k and the in-flight peak cover only its newest calls; use fewer --incidents"
            );
        }
        let row = Row {
            latency_ms,
            passes: events.len(),
            elapsed,
            cpu_here: here1 - here0,
            cpu_sim: sim1 - sim0,
            calls: CallStats::of(&calls),
            outcomes,
            first_error,
            load: format!("{load_before} → {}", load_average()),
        };
        print_row(args, &row);
        anyhow::Ok(row)
    }
    .await;
    worker.stop().await;
    result
}

/// One event per incident, built before the clock starts.
fn envelopes(incidents: &[Created]) -> Vec<EventEnvelope> {
    incidents
        .iter()
        .map(|c| {
            EventEnvelope::observed(
                "incident",
                &c.sys_id,
                c.version,
                &c.number,
                EventSource::Callback,
                chrono::Utc::now(),
            )
        })
        .collect()
}

/// Counts pass reports; wakes the feeder when the expected number arrived.
#[derive(Default)]
struct Tally {
    seen: AtomicUsize,
    expected: AtomicUsize,
    done: Notify,
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn record(&self, report: &PassReport) {
        if let Ok(mut outcomes) = self.outcomes.lock() {
            *outcomes.entry(report.outcome.as_str()).or_default() += 1;
        }
        if report.outcome != Outcome::Acted
            && let (Some(error), Ok(mut first)) = (&report.error, self.first_error.lock())
            && first.is_none()
        {
            *first = Some(format!("{} ({}): {error}", report.number, report.sys_id));
        }
        let seen = self.seen.fetch_add(1, Ordering::AcqRel) + 1;
        if seen >= self.expected.load(Ordering::Acquire) {
            self.done.notify_one();
        }
    }

    /// The outcomes and the first failure so far, starting a new count.
    fn take(&self) -> (BTreeMap<&'static str, u64>, Option<String>) {
        self.seen.store(0, Ordering::Release);
        let outcomes = self
            .outcomes
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default();
        let first_error = self.first_error.lock().ok().and_then(|mut e| e.take());
        (outcomes, first_error)
    }
}

/// The worker under test, in this process.
struct Harness {
    queue: Arc<MemoryBackend>,
    tally: Arc<Tally>,
    worker_stop: CancellationToken,
    queue_stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), WorkerError>>,
    dir: PathBuf,
}

impl Harness {
    fn start(args: &Args, sim: &SimProcess) -> anyhow::Result<Harness> {
        let config = WorkerConfig {
            concurrency: args.concurrency,
            quickstart: args.plan == PlanChoice::Quickstart,
            ..WorkerConfig::default()
        };
        let plans = match args.plan {
            PlanChoice::Quickstart => PlanSet::new(&[], true)?,
            PlanChoice::Note => {
                let note: PlanConfig = serde_json::from_value(serde_json::json!({
                    "name": "bench-note",
                    "autonomy": "autonomous",
                    "intake": {"priorities": [2]},
                    "actions": [{"kind": "work_note", "text": "Seen by nowpilot (benchmark)."}],
                }))?;
                PlanSet::new(&[note], false)?
            }
        };
        let settings = config.validate(&plans)?;

        // The manager wants a config path for `connect`/the file watcher; neither is used.
        let dir = std::env::temp_dir().join(format!(
            "nowpilot-bench-worker-{:08x}",
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut connection = ServiceNowConfig::basic(
            sim.base.clone(),
            INTEGRATION_USER,
            SecretString::from(sim.integration_password.clone()),
        );
        connection.timeout = Duration::from_secs(60);
        let manager = ConnectionManager::new(
            dir.join("nowpilot.toml"),
            &dir,
            Some(connection),
            settings.client_options(),
        );
        if let Some(problem) = manager.current().problem {
            bail!("the ServiceNow connection is unusable: {problem}");
        }

        let queue_stop = CancellationToken::new();
        let queue_config = QueueConfig {
            kind: QueueKind::Memory,
            partitions: args.partitions,
            prefetch: args.prefetch,
            ..QueueConfig::with_prefix("bench-worker")
        };
        queue_config.validate()?;
        let queue = Arc::new(MemoryBackend::new(&queue_config, queue_stop.clone())?);
        let tally = Arc::new(Tally::default());
        let sink = {
            let tally = tally.clone();
            Arc::new(move |report: PassReport| tally.record(&report))
        };
        let deps = WorkerDeps::new(queue.clone(), manager, plans, settings).with_activity(sink);
        let worker_stop = CancellationToken::new();
        let task = tokio::spawn(nowpilot_worker::run(deps, worker_stop.clone()));
        Ok(Harness {
            queue,
            tally,
            worker_stop,
            queue_stop,
            task,
            dir,
        })
    }

    /// Publishes `events` and waits until as many passes were reported; returns the time from
    /// the first publish to the last report.
    async fn feed(&self, events: &[EventEnvelope], limit: Duration) -> anyhow::Result<Duration> {
        self.tally.expected.store(events.len(), Ordering::Release);
        let started = Instant::now();
        for event in events {
            self.queue.publish(event).await?;
        }
        let deadline = tokio::time::Instant::now() + limit;
        while self.tally.seen.load(Ordering::Acquire) < events.len() {
            if self.task.is_finished() {
                bail!("the worker stopped during the benchmark");
            }
            // Wake up now and then to notice a worker that died.
            let wait = tokio::time::sleep(Duration::from_secs(1));
            tokio::select! {
                () = self.tally.done.notified() => {}
                () = wait => {}
                () = tokio::time::sleep_until(deadline) => bail!(
                    "only {} of {} passes after {}",
                    self.tally.seen.load(Ordering::Acquire),
                    events.len(),
                    humantime::format_duration(limit)
                ),
            }
        }
        Ok(started.elapsed())
    }

    /// Stops the worker, then the queue (in that order, as `nowpilot worker` does).
    async fn stop(self) {
        self.worker_stop.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Err(e))) => println!("worker: {e}"),
            Ok(Err(e)) => println!("worker task: {e}"),
            Err(_) => println!("the worker did not stop within 30 s"),
            Ok(Ok(Ok(()))) => {}
        }
        self.queue_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.queue.closed()).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `nowpilot worker` runs with: the Prometheus recorder (with its upkeep) and an
/// info-level subscriber, which makes the client's `servicenow_call` spans real.
fn install_telemetry() -> anyhow::Result<()> {
    // Histogram buckets as `nowpilot worker` sets them (summaries would cost more).
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )?
        .install_recorder()?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

fn cpu_of(pid: u32) -> f64 {
    cpu_seconds(pid).unwrap_or(f64::NAN)
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

/// The 1-minute load average (other engineers may be compiling on the same machine).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn print_row(args: &Args, row: &Row) {
    let kinds: Vec<String> = row
        .calls
        .by_kind
        .iter()
        .map(|(kind, n)| format!("{kind} {:.2}", *n as f64 / row.passes.max(1) as f64))
        .collect();
    println!(
        "{} passes in {:.2} s: {:.0} passes/s; outcomes {:?}",
        row.passes,
        row.elapsed.as_secs_f64(),
        row.rate(),
        row.outcomes
    );
    if let Some(error) = &row.first_error {
        println!("first failure: {error}");
    }
    println!(
        "calls per pass k = {:.2}: {}{}",
        row.k(),
        kinds.join(", "),
        if row.calls.failed > 0 {
            format!(" ({} calls failed)", row.calls.failed)
        } else {
            String::new()
        }
    );
    println!(
        "in flight (simulator's view): max {} (C = {}), mean {:.1}; mean call {:.2} ms in the simulator; CPU µs/pass: this process {:.1}, simulator {:.1}; load {}",
        row.calls.max_in_flight,
        args.concurrency,
        row.calls.busy_seconds / row.elapsed.as_secs_f64().max(1e-9),
        row.calls.busy_seconds * 1e3 / row.calls.calls.max(1) as f64,
        row.per_pass_us(row.cpu_here),
        row.per_pass_us(row.cpu_sim),
        row.load
    );
}

fn print_table(args: &Args, rows: &[Row]) {
    let c = args.concurrency;
    println!();
    println!(
        "{:>7} {:>10} {:>12} {:>11} {:>6} {:>14} {:>11} {:>7}   load avg",
        "latency",
        "passes/s",
        "CPU µs/pass",
        "(simulator)",
        "k",
        "max in flight",
        "ceiling/s",
        "ratio",
    );
    for row in rows {
        let ceiling = row.ceiling(c);
        println!(
            "{:>5}ms {:>10.0} {:>12.1} {:>11.1} {:>6.2} {:>8} / {:<3} {:>11} {:>7}   {}{}",
            row.latency_ms,
            row.rate(),
            row.per_pass_us(row.cpu_here),
            row.per_pass_us(row.cpu_sim),
            row.k(),
            row.calls.max_in_flight,
            c,
            ceiling.map_or("-".to_owned(), |x| format!("{x:.0}")),
            ceiling.map_or("-".to_owned(), |x| format!("{:.3}", row.rate() / x)),
            row.load,
            if row.calls.max_in_flight > c as u64 {
                "   MORE THAN C IN FLIGHT"
            } else {
                ""
            },
        );
    }
    println!();
    println!(
        "targets: ratio >= 0.90 of C / (k × L) for L > 0 at C = 64; max in flight <= C; CPU < 200 µs/pass at 0 ms"
    );
    println!(
        "\"CPU µs/pass\" is this process (worker + in-memory queue + feeder) per pass; \"(simulator)\" is the nowpilot sim process. Both share {} cores.",
        cores()
    );
}
