//! The processes of the scaling benchmark: a `nowpilot sim`, the `nowpilot worker`s, and the
//! topology each run deletes afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use nowpilot_model::partition::partition_of;
use nowpilot_queue::QueueConfig;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const ADMIN: (&str, &str) = ("admin", "admin");
const WORKER_PASSWORD: &str = "bench-worker";

/// The ServiceNow user of worker `index`.
pub(super) fn worker_user(index: usize) -> String {
    format!("bench.worker.{index}")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Deletes a run's topology when dropped.
pub(super) struct TopologyCleanup(pub(super) QueueConfig);

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
pub(super) struct SimProcess {
    _child: Child,
    pub(super) base: String,
    http: reqwest::Client,
}

impl SimProcess {
    pub(super) async fn start(
        binary: &Path,
        latency_ms: u64,
        workers: usize,
    ) -> anyhow::Result<Self> {
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
        let base = crate::binary::sim_listening(&mut child).await?;
        Ok(SimProcess {
            _child: child,
            base,
            http: reqwest::Client::new(),
        })
    }

    /// `count` new priority-2 incidents, the same number in every partition.
    pub(super) async fn balanced_incidents(
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

    pub(super) async fn clear_log(&self) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/_sim/requests", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub(super) async fn request_log(&self) -> anyhow::Result<Vec<Value>> {
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
pub(super) struct WorkerProcess {
    pub(super) index: usize,
    child: Child,
    admin: String,
    http: reqwest::Client,
    dir: PathBuf,
}

impl WorkerProcess {
    pub(super) fn start(
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

    pub(super) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The sum of a metric's samples whose labels contain `labels` (0 when not served yet).
    pub(super) async fn metric_sum(&self, name: &str, labels: &str) -> f64 {
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

    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("worker.log")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    pub(super) async fn stop(&mut self) {
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
