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
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nowpilot_model::partition::partition_of;
use nowpilot_model::{EventEnvelope, EventSource};
use nowpilot_queue::{AmqpBackend, EventPublisher, QueueConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const ADMIN: (&str, &str) = ("admin", "admin");
const WORKER_PASSWORD: &str = "bench-worker";

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
    let binary = nowpilot_binary()?;
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
    sim.clear_log().await?;
    let wall = Instant::now();
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
    // Done when every worker reports as many acting passes as there are incidents.
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
        if acted >= incidents.len() as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
        per_worker: users
            .iter()
            .map(|u| per_user.get(u.as_str()).copied().unwrap_or(0))
            .collect(),
    })
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

fn nowpilot_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .context("the benchmark has no directory")?
        .join("nowpilot");
    if !binary.is_file() {
        bail!(
            "{} is missing: build it next to the benchmark (cargo build --release -p nowpilot-cli -p nowpilot-bench)",
            binary.display()
        );
    }
    Ok(binary)
}

fn worker_user(index: usize) -> String {
    format!("bench.worker.{index}")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Deletes a run's topology when dropped.
struct TopologyCleanup(QueueConfig);

impl Drop for TopologyCleanup {
    fn drop(&mut self) {
        let config = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(nowpilot_queue::amqp::delete_topology(&config))
                .map_err(anyhow::Error::from)
        })
        .join();
    }
}

/// A `nowpilot sim` child process; killed when dropped.
struct SimProcess {
    _child: Child,
    base: String,
    http: reqwest::Client,
}

impl SimProcess {
    async fn start(binary: &Path, latency_ms: u64, workers: usize) -> anyhow::Result<Self> {
        let mut command = Command::new(binary);
        command
            .arg("sim")
            .args(["--listen", "127.0.0.1:0"])
            .args(["--latency-ms", &latency_ms.to_string()])
            .args(["--user", &format!("{}:{}", ADMIN.0, ADMIN.1)]);
        for i in 0..workers {
            command.args(["--user", &format!("{}:{WORKER_PASSWORD}", worker_user(i))]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} sim", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("no stdout from the simulator")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("snowsim listening on ") {
                    return Ok(url.trim().to_owned());
                }
            }
            bail!("the simulator exited before listening")
        })
        .await
        .context("the simulator did not start listening within 30 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(SimProcess {
            _child: child,
            base,
            http: reqwest::Client::new(),
        })
    }

    /// `count` new priority-2 incidents, the same number in every partition.
    async fn balanced_incidents(
        &self,
        count: usize,
        partitions: u16,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let per = count.div_ceil(usize::from(partitions)).max(1);
        let mut buckets: Vec<Vec<(String, String)>> = vec![Vec::new(); usize::from(partitions)];
        let mut made = 0usize;
        while buckets.iter().any(|b| b.len() < per) {
            if made > count * 4 + 1000 {
                bail!("could not spread incidents over the partitions");
            }
            let mut batch = tokio::task::JoinSet::new();
            for i in made..made + 64 {
                let (http, base) = (self.http.clone(), self.base.clone());
                batch.spawn(async move { create_incident(&http, &base, i).await });
            }
            made += 64;
            while let Some(created) = batch.join_next().await {
                let (sys_id, number) = created??;
                let bucket = &mut buckets[usize::from(partition_of(&sys_id, partitions))];
                if bucket.len() < per {
                    bucket.push((sys_id, number));
                }
            }
        }
        Ok(buckets.into_iter().flatten().collect())
    }

    async fn clear_log(&self) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/_sim/requests", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn request_log(&self) -> anyhow::Result<Vec<Value>> {
        let log: Value = self
            .http
            .get(format!("{}/_sim/requests", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(match log {
            Value::Array(entries) => entries,
            Value::Object(mut map) => match map.remove("requests") {
                Some(Value::Array(entries)) => entries,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        })
    }
}

/// Creates one priority-2 incident as a person would; returns its sys_id and number.
async fn create_incident(
    http: &reqwest::Client,
    base: &str,
    i: usize,
) -> anyhow::Result<(String, String)> {
    let body = json!({
        "short_description": format!("scaling benchmark {i}"),
        "impact": "1",
        "urgency": "2",
        // A journal entry from the start: passes read the journal from sys_journal_field
        // and never fall back to a second read of the incident.
        "comments": "Opened by the scaling benchmark.",
    });
    let answer: Value = http
        .post(format!("{base}/api/now/table/incident"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let field = |name: &str| {
        answer["result"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    Ok((field("sys_id"), field("number")))
}

/// One `nowpilot worker` child process.
struct WorkerProcess {
    index: usize,
    child: Child,
    admin: String,
    http: reqwest::Client,
    dir: PathBuf,
}

impl WorkerProcess {
    fn start(
        binary: &Path,
        index: usize,
        sim: &str,
        queue: &QueueConfig,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "nowpilot-bench-scaling-{}-{index}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let config = format!(
            r#"[servicenow]
instance_url = "{sim}"
auth = "basic"
username = "{user}"
password = "{WORKER_PASSWORD}"

[queue]
url = "{url}"
prefix = "{prefix}"
partitions = {partitions}
heartbeat = "5s"

[worker]
admin_listen = "127.0.0.1:{port}"
concurrency = {concurrency}
poller = false
member_id = "{user}"

[[plans]]
name = "ack"
autonomy = "autonomous"
[plans.intake]
priorities = [2]
[[plans.actions]]
kind = "acknowledge"
"#,
            user = worker_user(index),
            url = queue.url.expose_secret(),
            prefix = queue.prefix,
            partitions = queue.partitions,
        );
        let path = dir.join("nowpilot.toml");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.join("worker.log"))?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&path)
            .arg("worker")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} worker", binary.display()))?;
        Ok(WorkerProcess {
            index,
            child,
            admin: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            dir,
        })
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The sum of a metric's samples whose labels contain `labels` (0 when not served yet).
    async fn metric_sum(&self, name: &str, labels: &str) -> f64 {
        let Ok(response) = self
            .http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
        else {
            return 0.0;
        };
        let Ok(text) = response.text().await else {
            return 0.0;
        };
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("worker.log")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
