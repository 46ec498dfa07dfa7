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
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique, realistic callback of about `size` bytes.
fn callback(size: usize) -> Vec<u8> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let sys_id = format!(
        "{:032x}",
        (u128::from(n) << 64) | u128::from(rand::random::<u64>())
    );
    let mut body = serde_json::json!({
        "schema_version": 1,
        "instance": "bench",
        "table": "incident",
        "operation": "update",
        "sys_id": sys_id,
        "sys_mod_count": "3",
        "sys_updated_on": "2026-11-28 10:00:00",
        "sys_updated_by": "beth.anglin",
        "record": {
            "number": format!("INC{:07}", n % 10_000_000),
            "state": "2", "priority": "2", "impact": "2", "urgency": "1",
            "category": "software", "short_description": "Checkout API p95 latency above 2s",
            "assignment_group": "d625dccec0a8016700a222a0f7900d06",
            "cmdb_ci": "b0c25d1bc0a800090168be1bfcdcd759",
            "description": "",
        }
    });
    let base = serde_json::to_vec(&body).map(|v| v.len()).unwrap_or(0);
    let pad = size.saturating_sub(base);
    body["record"]["description"] = serde_json::Value::String("x".repeat(pad));
    serde_json::to_vec(&body).unwrap_or_default()
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
    let mut queue_config = QueueConfig::with_prefix(prefix.clone());
    queue_config.url = SecretString::from(args.amqp_url.clone());
    queue_config.partitions = args.partitions;

    // (a) raw confirmed publishes.
    let shutdown = CancellationToken::new();
    let backend = Arc::new(AmqpBackend::connect(&queue_config, shutdown.clone()).await?);
    wait_ready(backend.as_ref()).await?;
    let mut raw = raw_phase(&backend, &args).await;
    backend.delete_topology().await.ok();
    shutdown.cancel();
    backend.closed().await;

    // (b) signed HTTP callbacks through a separate ingress process.
    let result = ingress_phase(&args, &prefix).await;
    // Clean up the broker whatever happened.
    let cleanup_shutdown = CancellationToken::new();
    if let Ok(cleanup) = AmqpBackend::connect(&queue_config, cleanup_shutdown.clone()).await {
        let _ = wait_ready(&cleanup).await;
        cleanup.delete_topology().await.ok();
        cleanup_shutdown.cancel();
        cleanup.closed().await;
    }
    let (mut http, rss_peak, rss_idle) = result?;

    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>8}",
        "", "rate/s", "p50 ms", "p99 ms", "failed"
    );
    for (name, phase) in [
        ("(a) raw confirmed publishes", &mut raw),
        ("(b) signed callbacks via ingress", &mut http),
    ] {
        println!(
            "{:<34} {:>10.0} {:>10.2} {:>10.2} {:>8}",
            name,
            phase.rate(),
            phase.quantile_ms(0.50),
            phase.quantile_ms(0.99),
            phase.failed
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
        rss_idle as f64 / 1024.0,
        rss_peak as f64 / 1024.0
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

async fn raw_phase(backend: &Arc<AmqpBackend>, args: &Args) -> Phase {
    let envelope = |size| {
        let body = callback(size);
        CallbackPayload::parse(&body)
            .map(|p| EventEnvelope::from_callback(p, chrono::Utc::now()))
            .ok()
    };
    let measure = |duration: Duration| async move {
        let deadline = Instant::now() + duration;
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let backend = backend.clone();
            let size = args.payload_bytes;
            tasks.push(tokio::spawn(async move {
                let mut phase = Phase::default();
                while Instant::now() < deadline {
                    let Some(event) = envelope(size) else {
                        phase.failed += 1;
                        continue;
                    };
                    let started = Instant::now();
                    match backend.publish(&event).await {
                        Ok(()) => {
                            phase.ok += 1;
                            phase
                                .latencies_us
                                .push(started.elapsed().as_micros() as u64);
                        }
                        Err(_) => phase.failed += 1,
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
    };
    measure(args.warmup).await;
    measure(args.duration).await
}

type IngressResult = (Phase, u64, u64);

async fn ingress_phase(args: &Args, prefix: &str) -> anyhow::Result<IngressResult> {
    let binary = match &args.nowpilot {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("nowpilot"))
            .context("no directory for the nowpilot binary")?,
    };
    if !binary.exists() {
        bail!(
            "{} not found: build it first (cargo build --release --bin nowpilot)",
            binary.display()
        );
    }
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
             [ingress]\nlisten = \"127.0.0.1:{port}\"\nsecrets = [\"{secret}\"]\n\n\
             [telemetry]\nlog_level = \"warn\"\n",
            args.amqp_url, args.partitions
        ),
    )?;
    let mut child = tokio::process::Command::new(&binary)
        .arg("--config")
        .arg(&config_path)
        .arg("ingress")
        .kill_on_drop(true)
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
    let rss_idle = rss_kib(pid).unwrap_or(0);

    let peak = Arc::new(AtomicU64::new(rss_idle));
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

    let url = format!("{base}/webhooks/servicenow");
    let measure = |duration: Duration| {
        let http = http.clone();
        let url = url.clone();
        let key = key.to_vec();
        async move {
            let deadline = Instant::now() + duration;
            let mut tasks = Vec::new();
            for _ in 0..args.concurrency {
                let http = http.clone();
                let url = url.clone();
                let key = key.clone();
                let size = args.payload_bytes;
                tasks.push(tokio::spawn(async move {
                    let mut phase = Phase::default();
                    while Instant::now() < deadline {
                        let body = callback(size);
                        let id = format!("bench-{}", SEQ.fetch_add(1, Ordering::Relaxed));
                        let ts = chrono::Utc::now().timestamp().to_string();
                        let signature = sign(&key, &id, &ts, &body);
                        let started = Instant::now();
                        let answer = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("webhook-id", &id)
                            .header("webhook-timestamp", &ts)
                            .header("webhook-signature", signature)
                            .body(body)
                            .send()
                            .await;
                        match answer {
                            Ok(r) if r.status() == 202 => {
                                phase.ok += 1;
                                phase
                                    .latencies_us
                                    .push(started.elapsed().as_micros() as u64);
                            }
                            _ => phase.failed += 1,
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
    };
    measure(args.warmup).await;
    let phase = measure(args.duration).await;
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
    Ok((phase, peak.load(Ordering::Relaxed), rss_idle))
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

/// Resident set size of `pid` in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
