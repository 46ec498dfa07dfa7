//! The processes of the soak: a `nowpilot sim` whose business rule posts signed callbacks to a
//! `nowpilot ingress`, which queues them on RabbitMQ for a `nowpilot worker`, which writes back
//! to the simulator. Every process is a child of the benchmark, killed if the benchmark drops
//! it (error, Ctrl-C); the topology is deleted by a guard in the same way.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use nowpilot_queue::{AmqpBackend, EventQueue, QueueConfig, QueueDepths};
use secrecy::{ExposeSecret, SecretString};
use tokio::process::{Child, Command};
use tokio_util::sync::{CancellationToken, DropGuard};

/// The person who opens, updates and resolves incidents in the simulator.
pub(super) const PERSON: (&str, &str) = ("admin", "admin");
/// nowpilot's integration user: its writes fire no callback (the business rule's first line).
pub(super) const INTEGRATION_USER: &str = "nowpilot.integration";
/// Where the ingress takes callbacks (`nowpilot_ingress::WEBHOOK_PATH`).
const WEBHOOK_PATH: &str = "/webhooks/servicenow";

/// What the stack is started with.
#[derive(Debug, Clone)]
pub(super) struct StackOptions {
    pub(super) binary: PathBuf,
    pub(super) amqp_url: String,
    pub(super) latency_ms: u64,
    pub(super) concurrency: usize,
    pub(super) partitions: u16,
    pub(super) log_level: String,
    pub(super) keep_logs: bool,
}

/// One child process and its log file.
pub(super) struct Proc {
    pub(super) name: &'static str,
    pub(super) pid: u32,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> anyhow::Result<Proc> {
        let stderr = File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start nowpilot {name}"))?;
        let pid = child
            .id()
            .with_context(|| format!("nowpilot {name} exited at once"))?;
        Ok(Proc {
            name,
            pid,
            child,
            log,
        })
    }

    /// Whether the process is still running.
    pub(super) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log, for error messages.
    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(1500);
        let tail = text.get(start..).unwrap_or_default().trim();
        if tail.is_empty() {
            "(empty log)".to_owned()
        } else {
            tail.to_owned()
        }
    }

    /// SIGTERM (a graceful drain), then SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) {
        if !self.running() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Deletes the run's exchanges and queues when dropped, unless it already did.
struct TopologyGuard {
    config: QueueConfig,
    armed: bool,
}

impl TopologyGuard {
    async fn delete(&mut self) {
        if self.armed {
            self.armed = false;
            if let Err(e) = nowpilot_queue::amqp::delete_topology(&self.config).await {
                println!(
                    "warning: cannot delete the topology {}: {e}",
                    self.config.prefix
                );
            }
        }
    }
}

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Drop cannot await; a short-lived runtime on its own thread can.
        let config = self.config.clone();
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

/// Removes the run's directory (configuration with secrets, logs) when dropped, unless told
/// to keep it.
struct DirGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if self.keep {
            println!("kept the configuration and logs in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A running stack. Field order is drop order: the processes die before the topology goes.
pub(super) struct Stack {
    pub(super) sim: Proc,
    pub(super) ingress: Proc,
    pub(super) worker: Proc,
    /// `http://127.0.0.1:<port>` of the simulator.
    pub(super) sim_base: String,
    /// `http://127.0.0.1:<port>` of the ingress (also its `/metrics`).
    pub(super) ingress_base: String,
    /// `http://127.0.0.1:<port>` of the worker's admin endpoints (`/metrics`).
    pub(super) worker_base: String,
    pub(super) queue: QueueConfig,
    /// This process's own connection, for queue depths.
    broker: AmqpBackend,
    broker_stop: DropGuard,
    topology: TopologyGuard,
    _dir: DirGuard,
}

impl Stack {
    /// Starts the simulator, the ingress and the worker on a fresh topology named `prefix`,
    /// and waits until the ingress is ready and the worker owns every partition.
    pub(super) async fn start(options: &StackOptions, prefix: &str) -> anyhow::Result<Stack> {
        let dir = std::env::temp_dir().join(format!("nowpilot-{prefix}"));
        std::fs::create_dir_all(&dir)?;
        let dir_guard = DirGuard {
            path: dir.clone(),
            keep: options.keep_logs,
        };
        let mut queue = QueueConfig::with_prefix(prefix);
        queue.url = SecretString::from(options.amqp_url.clone());
        queue.partitions = options.partitions;
        nowpilot_queue::amqp::declare_topology(&queue)
            .await
            .context("cannot declare the topology (is RabbitMQ running?)")?;
        let topology = TopologyGuard {
            config: queue.clone(),
            armed: true,
        };
        let broker_stop = CancellationToken::new();
        let broker = AmqpBackend::connect(&queue, broker_stop.clone()).await?;

        let key: [u8; 32] = rand::random();
        let secret = SecretString::from(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ));
        let password = SecretString::from(format!("soak-{:016x}", rand::random::<u64>()));
        let ingress_port = free_port()?;
        let admin_port = free_port()?;
        let ingress_base = format!("http://127.0.0.1:{ingress_port}");
        let worker_base = format!("http://127.0.0.1:{admin_port}");

        let (sim, sim_base) = start_sim(options, &dir, &ingress_base, &secret, &password).await?;
        let config = dir.join("nowpilot.toml");
        std::fs::write(
            &config,
            render_config(
                options,
                &queue,
                &sim_base,
                &password,
                &secret,
                ingress_port,
                admin_port,
            ),
        )?;
        let ingress = Proc::spawn(
            "ingress",
            nowpilot(&options.binary, &config, "ingress"),
            dir.join("ingress.log"),
        )?;
        let worker = Proc::spawn(
            "worker",
            nowpilot(&options.binary, &config, "worker"),
            dir.join("worker.log"),
        )?;
        let mut stack = Stack {
            sim,
            ingress,
            worker,
            sim_base,
            ingress_base,
            worker_base,
            queue,
            broker,
            broker_stop: broker_stop.drop_guard(),
            topology,
            _dir: dir_guard,
        };
        stack.wait_ready().await?;
        Ok(stack)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let partitions = f64::from(self.queue.partitions);
        loop {
            self.check_alive()?;
            let ingress_ready = http
                .get(format!("{}/readyz", self.ingress_base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let owned = Metrics::scrape(&http, &self.worker_base)
                .await
                .map(|m| m.sum("nowpilot_worker_partitions_owned", ""))
                .unwrap_or(0.0);
            if ingress_ready && owned >= partitions {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the stack was not ready within 60 s (ingress ready: {ingress_ready}, worker owns {owned} of {partitions} partitions); worker log: {}",
                    self.worker.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Fails with the log of the first process that exited.
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        for proc in [&mut self.sim, &mut self.ingress, &mut self.worker] {
            if !proc.running() {
                bail!(
                    "nowpilot {} exited; its log: {}",
                    proc.name,
                    proc.log_tail()
                );
            }
        }
        Ok(())
    }

    /// The three processes, for sampling: ingress, worker, simulator.
    pub(super) fn pids(&self) -> [u32; 3] {
        [self.ingress.pid, self.worker.pid, self.sim.pid]
    }

    /// Messages waiting in the partition queues, the retry tiers and the dead-letter queue.
    pub(super) async fn depths(&self) -> anyhow::Result<QueueDepths> {
        Ok(self.broker.depths().await?)
    }

    /// Stops the processes in the order of a deployment's shutdown (ingress, worker, then the
    /// simulator) and deletes the topology.
    pub(super) async fn stop(mut self) {
        self.ingress.stop(Duration::from_secs(15)).await;
        self.worker.stop(Duration::from_secs(30)).await;
        self.sim.stop(Duration::from_secs(5)).await;
        drop(self.broker_stop);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.broker.closed()).await;
        self.topology.delete().await;
    }
}

fn nowpilot(binary: &Path, config: &Path, subcommand: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("--config")
        .arg(config)
        .arg(subcommand)
        .stdout(Stdio::null());
    command
}

async fn start_sim(
    options: &StackOptions,
    dir: &Path,
    ingress_base: &str,
    secret: &SecretString,
    password: &SecretString,
) -> anyhow::Result<(Proc, String)> {
    let mut command = Command::new(&options.binary);
    command
        .arg("sim")
        .args(["--listen", "127.0.0.1:0", "--instance-name", "soak"])
        .args(["--latency-ms", &options.latency_ms.to_string()])
        .args(["--user", &format!("{}:{}", PERSON.0, PERSON.1)])
        .args([
            "--user",
            &format!("{INTEGRATION_USER}:{}", password.expose_secret()),
        ])
        .args(["--webhook-url", &format!("{ingress_base}{WEBHOOK_PATH}")])
        .args(["--webhook-skip-user", INTEGRATION_USER])
        // The secret goes through the environment, not the command line (`ps` shows that).
        .env("NOWPILOT_SIM_WEBHOOK_SECRET", secret.expose_secret())
        .env("RUST_LOG", &options.log_level)
        .stdout(Stdio::piped());
    let mut sim = Proc::spawn("sim", command, dir.join("sim.log"))?;
    let base = crate::binary::sim_listening(&mut sim.child).await?;
    Ok((sim, base))
}

/// The plan: acknowledge every High or Critical incident, note when it turns out to be a
/// network incident, note its escalation to Critical. Each of those is one PATCH, so every
/// change of the lifecycle in `load.rs` that owes a note gets exactly one.
const PLAN: &str = r#"
[[plans]]
name = "soak"
autonomy = "autonomous"
[plans.intake]
priorities = [1, 2]
states = ["new", "in_progress"]
[[plans.actions]]
kind = "acknowledge"
[[plans.actions]]
kind = "work_note"
id = "network"
when = 'incident.category == "network"'
text = "Network incident: the network on-call rota has been paged."
[[plans.actions]]
kind = "work_note"
id = "critical"
when = "priority == 1"
text = "Escalated to Critical: the incident manager has been informed."
"#;

fn render_config(
    options: &StackOptions,
    queue: &QueueConfig,
    sim_base: &str,
    password: &SecretString,
    secret: &SecretString,
    ingress_port: u16,
    admin_port: u16,
) -> String {
    format!(
        r#"[servicenow]
instance_url = "{sim_base}"
auth = "basic"
username = "{INTEGRATION_USER}"
password = "{password}"

[queue]
url = "{url}"
prefix = "{prefix}"
partitions = {partitions}

[ingress]
listen = "127.0.0.1:{ingress_port}"
secrets = ["{secret}"]

[worker]
admin_listen = "127.0.0.1:{admin_port}"
concurrency = {concurrency}

[telemetry]
log_level = "{log_level}"
{PLAN}"#,
        password = password.expose_secret(),
        url = queue.url.expose_secret(),
        prefix = queue.prefix,
        partitions = queue.partitions,
        secret = secret.expose_secret(),
        concurrency = options.concurrency,
        log_level = options.log_level,
    )
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Resident memory of a process, in KiB (Linux): `VmRSS` (everything resident) and `RssAnon`
/// (heap and stacks, without the mapped binary and libraries).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Rss {
    pub(super) total_kib: u64,
    pub(super) anon_kib: u64,
}

impl Rss {
    pub(super) fn read(pid: u32) -> Option<Rss> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        };
        Some(Rss {
            total_kib: field("VmRSS:")?,
            anon_kib: field("RssAnon:").unwrap_or(0),
        })
    }
}

/// One scrape of a Prometheus text endpoint.
pub(super) struct Metrics(String);

impl Metrics {
    pub(super) async fn scrape(http: &reqwest::Client, base: &str) -> Option<Metrics> {
        let response = http
            .get(format!("{base}/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        Some(Metrics(response.text().await.ok()?))
    }

    /// The sum of the samples of `name` whose labels contain `labels` (0 when absent).
    pub(super) fn sum(&self, name: &str, labels: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |total, v| total + v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_matches_name_and_labels() {
        let m = Metrics(
            "# HELP x\nnowpilot_worker_events_total{outcome=\"acted\",plan=\"soak\"} 3\n\
             nowpilot_worker_events_total{outcome=\"no_plan\",plan=\"none\"} 2\n\
             nowpilot_worker_events_total_other 100\nnowpilot_worker_partitions_owned 16\n"
                .to_owned(),
        );
        assert_eq!(m.sum("nowpilot_worker_events_total", ""), 5.0);
        assert_eq!(
            m.sum("nowpilot_worker_events_total", "outcome=\"acted\""),
            3.0
        );
        assert_eq!(m.sum("nowpilot_worker_partitions_owned", ""), 16.0);
        assert_eq!(m.sum("missing", ""), 0.0);
    }
}
