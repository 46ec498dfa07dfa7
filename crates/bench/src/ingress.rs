//! The ingress benchmark.
//!
//! (a) **raw**: this process publishes envelopes through nowpilot's own RabbitMQ publisher
//!     (persistent, mandatory, waiting for each confirm) to the partition quorum queues, with
//!     `concurrency` publishers — the broker's limit for this workload, without HTTP.
//! (b) **ingress**: a `nowpilot ingress` process receives signed callbacks of the same size
//!     from `concurrency` HTTP clients; each answer (202) means the same confirmed publish
//!     happened behind it.
//!
//! It prints rate, p50 and p99 latency of both, the ratio (b)/(a), and the ingress process's
//! resident memory (peak, sampled under load).

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use nowpilot_model::{CallbackPayload, EventEnvelope};
use nowpilot_queue::{AmqpBackend, EventPublisher, EventQueue, QueueConfig};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::stats::Phase;

/// Flags of `nowpilot-bench ingress`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent publishers / HTTP clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Approximate callback body size in bytes.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Measured time per phase.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before each phase.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// The broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Partition queues.
    #[arg(long, default_value_t = 16)]
    partitions: u16,
    /// The nowpilot binary (default: next to this one; build it with --release first).
    #[arg(long)]
    nowpilot: Option<PathBuf>,
    /// Runtime worker threads of the ingress process (TOKIO_WORKER_THREADS; default: one per
    /// core).
    #[arg(long)]
    ingress_threads: Option<usize>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Callback bodies of about `size` bytes, each with a fresh sys_id and number, built from a
/// pre-rendered template so the load generator spends its CPU on sending, not on JSON.
#[derive(Clone)]
struct Bodies {
    template: Arc<str>,
}

impl Bodies {
    fn new(size: usize) -> Self {
        let render = |description: &str| {
            serde_json::json!({
                "schema_version": 1,
                "instance": "bench",
                "table": "incident",
                "operation": "update",
                "sys_id": "@SYSID@",
                "sys_mod_count": "3",
                "sys_updated_on": "2026-11-28 10:00:00",
                "sys_updated_by": "beth.anglin",
                "record": {
                    "number": "@NUMBER@",
                    "state": "2", "priority": "2", "impact": "2", "urgency": "1",
                    "category": "software", "short_description": "Checkout API p95 latency above 2s",
                    "assignment_group": "d625dccec0a8016700a222a0f7900d06",
                    "cmdb_ci": "b0c25d1bc0a800090168be1bfcdcd759",
                    "description": description,
                }
            })
            .to_string()
        };
        // The placeholders become a 32-character sys_id and a 10-character number.
        let base = render("").len() - "@SYSID@".len() - "@NUMBER@".len() + 32 + 10;
        Bodies {
            template: render(&"x".repeat(size.saturating_sub(base))).into(),
        }
    }

    /// A unique body and its sys_id.
    fn next(&self) -> (Vec<u8>, String) {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let sys_id = format!("{:016x}{:016x}", n, rand::random::<u64>());
        let body = self.template.replacen("@SYSID@", &sys_id, 1).replacen(
            "@NUMBER@",
            &format!("INC{:07}", n % 10_000_000),
            1,
        );
        (body.into_bytes(), sys_id)
    }
}

/// CPU seconds used by the processes involved, between two readings.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    this: f64,
    ingress: f64,
    broker: f64,
}

impl Cpu {
    fn read(ingress: Option<u32>) -> Cpu {
        Cpu {
            this: cpu_seconds(std::process::id()).unwrap_or(0.0),
            ingress: ingress.and_then(cpu_seconds).unwrap_or(0.0),
            broker: broker_pid().and_then(cpu_seconds).unwrap_or(0.0),
        }
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            this: self.this - earlier.this,
            ingress: self.ingress - earlier.ingress,
            broker: self.broker - earlier.broker,
        }
    }
}

/// Runs both phases and prints the comparison.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let prefix = format!("bench-ingress-{:08x}", rand::random::<u32>());
    println!(
        "nowpilot ingress benchmark: concurrency {}, ~{} B callbacks, {} per phase, {} partitions, prefix {prefix}",
        args.concurrency,
        args.payload_bytes,
        humantime::format_duration(args.duration),
        args.partitions
    );
    let bodies = Bodies::new(args.payload_bytes);
    let mut queue_config = QueueConfig::with_prefix(prefix.clone());
    queue_config.url = SecretString::from(args.amqp_url.clone());
    queue_config.partitions = args.partitions;

    // (a) raw confirmed publishes.
    let shutdown = CancellationToken::new();
    let backend = Arc::new(AmqpBackend::connect(&queue_config, shutdown.clone()).await?);
    wait_ready(backend.as_ref()).await?;
    let (mut raw, raw_cpu) = raw_phase(&backend, &args, &bodies).await;
    backend.delete_topology().await.ok();
    shutdown.cancel();
    backend.closed().await;

    // (b) signed HTTP callbacks through a separate ingress process.
    let result = ingress_phase(&args, &prefix, &bodies).await;
    // Clean up the broker whatever happened.
    let cleanup_shutdown = CancellationToken::new();
    if let Ok(cleanup) = AmqpBackend::connect(&queue_config, cleanup_shutdown.clone()).await {
        let _ = wait_ready(&cleanup).await;
        cleanup.delete_topology().await.ok();
        cleanup_shutdown.cancel();
        cleanup.closed().await;
    }
    let IngressRun {
        phase: mut http,
        cpu: http_cpu,
        rss_peak_kib,
        rss_idle_kib,
    } = result?;

    println!();
    println!(
        "{:<34} {:>9} {:>8} {:>8} {:>7}   {:>22}",
        "", "rate/s", "p50 ms", "p99 ms", "failed", "CPU µs/op: here ingress broker"
    );
    for (name, phase, cpu) in [
        ("(a) raw confirmed publishes", &mut raw, raw_cpu),
        ("(b) signed callbacks via ingress", &mut http, http_cpu),
    ] {
        let ok = phase.ok;
        let per_op = |secs: f64| {
            if ok > 0 {
                secs * 1e6 / ok as f64
            } else {
                f64::NAN
            }
        };
        println!(
            "{:<34} {:>9.0} {:>8.2} {:>8.2} {:>7}   {:>9.1} {:>7.1} {:>7.1}",
            name,
            phase.rate(),
            phase.quantile_ms(0.50),
            phase.quantile_ms(0.99),
            phase.failed,
            per_op(cpu.this),
            per_op(cpu.ingress),
            per_op(cpu.broker),
        );
    }
    let ratio = if raw.rate() > 0.0 {
        http.rate() / raw.rate()
    } else {
        f64::NAN
    };
    println!();
    println!("ratio (b)/(a): {ratio:.3}   (target >= 0.85)");
    println!(
        "ingress RSS: {:.1} MiB idle, {:.1} MiB peak under load   (target < 40 MiB)",
        rss_idle_kib as f64 / 1024.0,
        rss_peak_kib as f64 / 1024.0
    );
    println!(
        "cores: {} (\"here\" is this process: the publishers in (a), the HTTP load generator in (b))",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    Ok(())
}

async fn wait_ready(backend: &dyn EventQueue) -> anyhow::Result<()> {
    let mut watch = backend.readiness_watch();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !watch.borrow_and_update().ready {
            if watch.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .context("the broker did not become ready within 30 s")
}

/// Runs `concurrency` copies of `op` until `duration` has passed; gathers their samples.
async fn drive<F, Fut>(concurrency: usize, duration: Duration, op: F) -> Phase
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut phase = Phase::default();
            while Instant::now() < deadline {
                let started = Instant::now();
                if op().await {
                    phase.ok += 1;
                    phase
                        .latencies_us
                        .push(started.elapsed().as_micros() as u64);
                } else {
                    phase.failed += 1;
                }
            }
            phase
        }));
    }
    let started = Instant::now();
    let mut total = Phase::default();
    for t in tasks {
        if let Ok(p) = t.await {
            total.absorb(p);
        }
    }
    total.elapsed = started.elapsed();
    total
}

async fn raw_phase(backend: &Arc<AmqpBackend>, args: &Args, bodies: &Bodies) -> (Phase, Cpu) {
    // The envelope the ingress would publish for such a callback, with a fresh sys_id each time.
    let template = CallbackPayload::parse(&bodies.next().0)
        .map(|p| EventEnvelope::from_callback(p, chrono::Utc::now()))
        .ok();
    let op = {
        let backend = backend.clone();
        move || {
            let backend = backend.clone();
            let template = template.clone();
            async move {
                let Some(mut event) = template else {
                    return false;
                };
                let n = SEQ.fetch_add(1, Ordering::Relaxed);
                event.sys_id = format!("{:016x}{:016x}", n, rand::random::<u64>());
                event.event_id = nowpilot_model::EventId::new(&event.sys_id, 3);
                if let Some(callback) = event.callback.as_mut() {
                    callback.sys_id.clone_from(&event.sys_id);
                }
                backend.publish(&event).await.is_ok()
            }
        }
    };
    drive(args.concurrency, args.warmup, op.clone()).await;
    let before = Cpu::read(None);
    let phase = drive(args.concurrency, args.duration, op).await;
    (phase, Cpu::read(None).since(before))
}

struct IngressRun {
    phase: Phase,
    cpu: Cpu,
    rss_peak_kib: u64,
    rss_idle_kib: u64,
}

async fn ingress_phase(args: &Args, prefix: &str, bodies: &Bodies) -> anyhow::Result<IngressRun> {
    let binary = crate::binary::nowpilot(args.nowpilot.as_deref())?;
    let key: [u8; 32] = rand::random();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let dir = std::env::temp_dir().join(format!("{prefix}-config"));
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("nowpilot.toml");
    std::fs::write(
        &config_path,
        format!(
            "[queue]\nkind = \"amqp\"\nurl = \"{}\"\nprefix = \"{prefix}\"\npartitions = {}\n\n\
             [ingress]\nlisten = \"127.0.0.1:{port}\"\nsecrets = [\"{secret}\"]\n",
            args.amqp_url, args.partitions
        ),
    )?;
    let mut command = tokio::process::Command::new(&binary);
    command
        .arg("--config")
        .arg(&config_path)
        .arg("ingress")
        .kill_on_drop(true);
    if let Some(threads) = args.ingress_threads {
        command.env("TOKIO_WORKER_THREADS", threads.to_string());
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id().context("the ingress exited at once")?;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let base = format!("http://127.0.0.1:{port}");
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if ready.is_err() {
        bail!("the ingress did not become ready within 30 s");
    }
    let rss_idle_kib = rss_kib(pid).unwrap_or(0);

    let peak = Arc::new(AtomicU64::new(rss_idle_kib));
    let sampler_stop = CancellationToken::new();
    let sampler = {
        let peak = peak.clone();
        let stop = sampler_stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let url: Arc<str> = format!("{base}/webhooks/servicenow").into();
    let key: Arc<[u8]> = key.to_vec().into();
    let op = {
        let bodies = bodies.clone();
        move || {
            let (http, url, key, bodies) = (http.clone(), url.clone(), key.clone(), bodies.clone());
            async move {
                let (body, sys_id) = bodies.next();
                let id = format!("{sys_id}-3");
                let ts = chrono::Utc::now().timestamp().to_string();
                let signature = sign(&key, &id, &ts, &body);
                let answer = http
                    .post(&*url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", &ts)
                    .header("webhook-signature", signature)
                    .body(body)
                    .send()
                    .await;
                matches!(answer, Ok(r) if r.status() == 202)
            }
        }
    };
    drive(args.concurrency, args.warmup, op.clone()).await;
    let before = Cpu::read(Some(pid));
    let phase = drive(args.concurrency, args.duration, op).await;
    let cpu = Cpu::read(Some(pid)).since(before);
    sampler_stop.cancel();
    let _ = sampler.await;

    // SIGTERM: the ingress drains and exits on its own.
    let _ = tokio::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(IngressRun {
        phase,
        cpu,
        rss_peak_kib: peak.load(Ordering::Relaxed),
        rss_idle_kib,
    })
}

fn sign(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// CPU time (user + system) a process has used so far, in seconds (Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// The RabbitMQ node's process (`beam.smp`), to account for the broker's CPU.
pub fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == "beam.smp").then_some(pid)
        })
}

/// Resident set size of `pid` in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
