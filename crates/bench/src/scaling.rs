//! `nowpilot-bench scaling`: incident passes per second with 1, 2 and 4 `nowpilot worker`
//! processes sharing RabbitMQ partitions, against one simulator with injected latency.
//!
//! Each worker is the real binary with its own ServiceNow user and a ServiceNow concurrency of
//! `C`, so one worker can do at most `C / (k × L)` passes per second (`k` calls per pass, `L`
//! the latency): the benchmark measures how much of `N ×` that the partition ownership lets
//! `N` workers reach. Per worker count: a fresh topology, the workers started and waited for
//! until their partitions are balanced, `M` new incidents (spread evenly over the partitions,
//! so the figure measures the scale-out rather than the hash's variance on a small sample),
//! one event each published straight to the partition queues, and the time from the first
//! worker request of the run to the last acknowledgement PATCH, read from the simulator's
//! request log (one clock, no scraping delay). Nothing here asserts a number.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nowpilot_model::{EventEnvelope, EventSource};
use nowpilot_queue::{AmqpBackend, EventPublisher, QueueConfig};
use secrecy::SecretString;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod processes;

use processes::{SimProcess, TopologyCleanup, WorkerProcess, worker_user};

/// `nowpilot-bench scaling` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Worker process counts to measure, in order; the first is the baseline.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Incidents per run (one pass each).
    #[arg(long, default_value_t = 800)]
    pub incidents: usize,
    /// Latency the simulator adds to every call, in ms.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// `[worker] concurrency` of each worker (ServiceNow calls in flight per process).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Partition count `P` (at least the largest worker count).
    #[arg(long, default_value_t = 8)]
    pub partitions: u16,
    /// The broker.
    #[arg(
        long,
        env = "NOWPILOT_TEST_AMQP_URL",
        default_value = nowpilot_queue::config::DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Give up on one run after this long.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub run_timeout: Duration,
}

/// The figures of one worker count.
struct Row {
    workers: usize,
    passes: usize,
    secs: f64,
    wall_secs: f64,
    calls_per_pass: f64,
    /// Worker calls by method and table.
    calls: BTreeMap<String, usize>,
    per_worker: Vec<usize>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.passes as f64 / self.secs.max(f64::EPSILON)
    }
}

/// Runs every worker count and prints the comparison.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let max_workers = args.workers.iter().copied().max().unwrap_or(1);
    if args.workers.is_empty() || args.workers.contains(&0) {
        bail!("--workers needs counts of at least 1");
    }
    if usize::from(args.partitions) < max_workers {
        bail!(
            "--partitions must be at least the largest worker count: more workers than partitions idle"
        );
    }
    let binary = crate::binary::nowpilot(None)?;
    println!(
        "nowpilot scaling benchmark: {} incidents per run, simulator latency {} ms, C = {} per worker, P = {}, {} cores, load {}",
        args.incidents,
        args.latency_ms,
        args.concurrency,
        args.partitions,
        std::thread::available_parallelism().map_or(1, usize::from),
        load_average()
    );
    let sim = SimProcess::start(&binary, args.latency_ms, max_workers).await?;
    let mut rows = Vec::new();
    for &workers in &args.workers {
        println!("-- {workers} worker process(es)");
        let row = tokio::time::timeout(args.run_timeout, measure(&args, &binary, &sim, workers))
            .await
            .with_context(|| {
                format!(
                    "the run with {workers} workers took over {:?}",
                    args.run_timeout
                )
            })??;
        println!(
            "   {} passes in {:.2} s: {:.1} passes/s ({:.2} calls/pass; per worker {:?})",
            row.passes,
            row.secs,
            row.rate(),
            row.calls_per_pass,
            row.per_worker
        );
        println!("   calls: {:?}", row.calls);
        rows.push(row);
    }
    print_table(&args, &rows);
    Ok(())
}

fn print_table(args: &Args, rows: &[Row]) {
    let Some(base) = rows.first() else {
        return;
    };
    println!();
    println!(
        "{:>7} {:>10} {:>9} {:>11} {:>10} {:>9}  passes per worker",
        "workers", "passes/s", "speedup", "ceiling/s", "of ceiling", "wall s"
    );
    for row in rows {
        // N workers × C calls in flight, each pass k calls of L seconds.
        let ceiling = row.workers as f64 * args.concurrency as f64
            / (row.calls_per_pass * args.latency_ms as f64 / 1000.0);
        println!(
            "{:>7} {:>10.1} {:>8.2}x {:>11.1} {:>9.0}% {:>9.2}  {:?}",
            row.workers,
            row.rate(),
            row.rate() / base.rate(),
            ceiling,
            100.0 * row.rate() / ceiling,
            row.wall_secs,
            row.per_worker
        );
    }
    if let Some(four) = rows.iter().find(|r| r.workers == 4) {
        println!(
            "\n4 workers reach {:.2}x one worker (target: at least 3.4x)",
            four.rate() / base.rate()
        );
    }
}

async fn measure(
    args: &Args,
    binary: &Path,
    sim: &SimProcess,
    workers: usize,
) -> anyhow::Result<Row> {
    let mut queue = QueueConfig::with_prefix(format!(
        "bench-scaling-{workers}-{:08x}",
        rand::random::<u32>()
    ));
    queue.url = SecretString::from(args.amqp_url.clone());
    queue.partitions = args.partitions;
    queue.heartbeat = Duration::from_secs(5);
    let cleanup = TopologyCleanup(queue.clone());
    nowpilot_queue::amqp::declare_topology(&queue)
        .await
        .context("cannot declare the topology (is RabbitMQ running?)")?;
    let mut procs = Vec::new();
    for i in 0..workers {
        procs.push(WorkerProcess::start(
            binary,
            i,
            &sim.base,
            &queue,
            args.concurrency,
        )?);
    }
    let result = measure_with(args, sim, &queue, &mut procs).await;
    for proc in &mut procs {
        proc.stop().await;
    }
    drop(cleanup);
    result
}

async fn measure_with(
    args: &Args,
    sim: &SimProcess,
    queue: &QueueConfig,
    procs: &mut [WorkerProcess],
) -> anyhow::Result<Row> {
    wait_balanced(procs, args.partitions).await?;
    let incidents = sim
        .balanced_incidents(args.incidents, args.partitions)
        .await?;
    let shutdown = CancellationToken::new();
    let publisher = Arc::new(AmqpBackend::connect(queue, shutdown.clone()).await?);
    // Warm-up, unmeasured: one incident per partition, so every worker has connected to the
    // simulator and cached its own user before the burst (a burst of cold passes would each
    // look the user up once).
    let warmup = sim.balanced_incidents(1, args.partitions).await?;
    publish_all(&publisher, &warmup).await?;
    wait_acted(procs, warmup.len()).await?;
    sim.clear_log().await?;
    let wall = Instant::now();
    publish_all(&publisher, &incidents).await?;
    wait_acted(procs, warmup.len() + incidents.len()).await?;
    let wall_secs = wall.elapsed().as_secs_f64();
    shutdown.cancel();
    let log = sim.request_log().await?;
    let users: Vec<String> = (0..procs.len()).map(worker_user).collect();
    let mine: Vec<&Value> = log
        .iter()
        .filter(|r| {
            r["user"]
                .as_str()
                .is_some_and(|u| users.iter().any(|w| w == u))
        })
        .collect();
    let start = mine
        .iter()
        .filter_map(|r| r["start_us"].as_u64())
        .min()
        .unwrap_or(0);
    let patches: Vec<&&Value> = mine.iter().filter(|r| r["method"] == "PATCH").collect();
    let end = patches
        .iter()
        .filter_map(|r| r["end_us"].as_u64())
        .max()
        .unwrap_or(start);
    let mut per_user: BTreeMap<&str, usize> = BTreeMap::new();
    for patch in &patches {
        if let Some(user) = patch["user"].as_str() {
            *per_user.entry(user).or_default() += 1;
        }
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for request in &mine {
        let table = request["table"].as_str().unwrap_or("-");
        let method = request["method"].as_str().unwrap_or("?");
        let one = if request["sys_id"].is_string() {
            "/{id}"
        } else {
            ""
        };
        *kinds.entry(format!("{method} {table}{one}")).or_default() += 1;
    }
    let passes = patches.len();
    if passes != incidents.len() {
        bail!(
            "{} PATCHes for {} incidents: each should be acknowledged exactly once",
            passes,
            incidents.len()
        );
    }
    Ok(Row {
        workers: procs.len(),
        passes,
        secs: (end.saturating_sub(start)) as f64 / 1e6,
        wall_secs,
        calls_per_pass: mine.len() as f64 / passes.max(1) as f64,
        calls: kinds,
        per_worker: users
            .iter()
            .map(|u| per_user.get(u.as_str()).copied().unwrap_or(0))
            .collect(),
    })
}

/// Publishes one event per incident, 32 publishers at a time.
async fn publish_all(
    publisher: &Arc<AmqpBackend>,
    incidents: &[(String, String)],
) -> anyhow::Result<()> {
    let mut publishes = tokio::task::JoinSet::new();
    for chunk in incidents.chunks(incidents.len().div_ceil(32).max(1)) {
        let (publisher, chunk) = (publisher.clone(), chunk.to_vec());
        publishes.spawn(async move {
            for (sys_id, number) in chunk {
                let event = EventEnvelope::observed(
                    "incident",
                    &sys_id,
                    0,
                    &number,
                    EventSource::Poller,
                    chrono::Utc::now(),
                );
                publisher.publish(&event).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = publishes.join_next().await {
        done??;
    }
    Ok(())
}

/// Waits until the workers together report `total` acting passes.
async fn wait_acted(procs: &mut [WorkerProcess], total: usize) -> anyhow::Result<()> {
    loop {
        let mut acted = 0.0;
        for proc in procs.iter_mut() {
            if !proc.running() {
                bail!("worker {} exited; its log: {}", proc.index, proc.log_tail());
            }
            acted += proc
                .metric_sum("nowpilot_worker_events_total", "outcome=\"acted\"")
                .await;
        }
        if acted >= total as f64 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the workers own every partition between them, evenly.
async fn wait_balanced(procs: &mut [WorkerProcess], partitions: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let even = usize::from(partitions) / procs.len();
    loop {
        let mut owned = Vec::new();
        for proc in procs.iter_mut() {
            if !proc.running() {
                bail!("worker {} exited; its log: {}", proc.index, proc.log_tail());
            }
            owned.push(
                proc.metric_sum("nowpilot_worker_partitions_owned", "")
                    .await as usize,
            );
        }
        let total: usize = owned.iter().sum();
        if total == usize::from(partitions) && owned.iter().all(|o| *o >= even && *o <= even + 1) {
            // One more heartbeat round, so nothing is still moving.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the workers did not balance the partitions within 60 s: {owned:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}
