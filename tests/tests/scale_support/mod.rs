//! Shared by the `scale_*` tests: real `nowpilot worker` processes over real RabbitMQ and an
//! in-process simulator, each worker with its own ServiceNow user so the simulator's request
//! log says which worker made which request.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nowpilot_ingress::{IngressConfig, IngressState};
use nowpilot_model::Record;
use nowpilot_queue::{AmqpBackend, EventPublisher, QueueConfig};
use nowpilot_snowsim::{LoggedRequest, SimConfig, SimUser, WebhookConfig, WebhookSecret};
use nowpilot_tests::SimHandle;
use secrecy::{ExposeSecret, SecretString};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// The webhook secret.
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The person who creates and updates incidents.
pub(crate) const CALLER: &str = "test.caller";
/// Every worker's password.
pub(crate) const WORKER_PASSWORD: &str = "worker-pw";

/// A plan that acknowledges priority-2 incidents (one PATCH with one note per incident).
pub(crate) const ACK_PLAN: &str = r#"
[[plans]]
name = "ack"
autonomy = "autonomous"
[plans.intake]
priorities = [2]
[[plans.actions]]
kind = "acknowledge"
"#;

/// The `nowpilot` binary next to this test's build directory. The test crate cannot use
/// `CARGO_BIN_EXE_nowpilot` (another package's binary), so it looks where cargo puts it:
/// `target/<profile>/deps/<this test>` → `target/<profile>/nowpilot`.
pub(crate) fn nowpilot_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join(format!("nowpilot{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the nowpilot binary is missing at {}: build it first (`cargo build -p nowpilot-cli`; \
         `cargo test --workspace` builds it too)",
        binary.display()
    );
    binary
}

/// The `i`-th worker's ServiceNow user.
pub(crate) fn worker_user(i: usize) -> String {
    format!("worker.{i}")
}

/// A simulator with the caller and `workers` worker users (all admins, so the structured
/// journal is readable), calling back `webhook` when given.
pub(crate) async fn simulator(workers: usize, webhook: Option<String>) -> SimHandle {
    let mut users = vec![SimUser::new(CALLER, "caller-pw")];
    for i in 0..workers {
        users.push(SimUser::new(worker_user(i), WORKER_PASSWORD));
    }
    let mut config = SimConfig {
        users,
        ..SimConfig::default()
    };
    for user in config.users.clone() {
        config
            .user_roles
            .insert(user.user_name.clone(), vec!["admin".into()]);
    }
    config.webhook = WebhookConfig {
        url: webhook.map(|u| u.parse().expect("webhook url")),
        secret: Some(WebhookSecret::parse(SECRET).expect("secret")),
        skip_user: None,
    };
    SimHandle::start(config).await
}

/// An ingress in this process publishing to `queue`; returns its base URL.
pub(crate) async fn ingress(queue: Arc<AmqpBackend>, shutdown: CancellationToken) -> String {
    let config = IngressConfig {
        secrets: vec![SecretString::from(SECRET.to_owned())],
        ..IngressConfig::default()
    };
    let publisher: Arc<dyn EventPublisher> = queue;
    let state = IngressState::new(
        config.validate().expect("ingress config"),
        publisher,
        Arc::new(String::new),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(nowpilot_ingress::serve(state, listener, shutdown));
    url
}

/// Connects a backend for `config` and waits until it is ready.
pub(crate) async fn backend(config: &QueueConfig, shutdown: CancellationToken) -> Arc<AmqpBackend> {
    let queue = Arc::new(
        AmqpBackend::connect(config, shutdown)
            .await
            .expect("broker"),
    );
    let mut ready = queue.readiness_watch();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !ready.borrow_and_update().ready {
            ready.changed().await.expect("readiness");
        }
    })
    .await
    .expect("the broker became ready");
    queue
}

/// A `nowpilot worker` process.
pub(crate) struct WorkerProcess {
    /// Its ServiceNow user.
    pub(crate) user: String,
    child: Child,
    /// Its log file.
    pub(crate) log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Starts worker `index` against `sim_url` and `queue`; `worker_section` is extra
    /// `[worker]` TOML.
    pub(crate) fn start(
        index: usize,
        sim_url: &str,
        queue: &QueueConfig,
        worker_section: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = worker_user(index);
        let config = format!(
            r#"
[servicenow]
instance_url = "{sim_url}"
auth = "basic"
username = "{user}"
password = "{WORKER_PASSWORD}"

[queue]
url = "{url}"
prefix = "{prefix}"
partitions = {partitions}
heartbeat = "5s"
publish_timeout = "3s"
connect_timeout = "3s"

[worker]
admin_listen = "127.0.0.1:0"
member_id = "{user}"
{worker_section}

{ACK_PLAN}
"#,
            url = queue.url.expose_secret(),
            prefix = queue.prefix,
            partitions = queue.partitions,
        );
        let path = dir.path().join("nowpilot.toml");
        std::fs::write(&path, config).expect("config");
        let log = dir.path().join("worker.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(nowpilot_binary())
            .arg("--config")
            .arg(&path)
            .arg("worker")
            .env("RUST_LOG", "info,lapin=warn")
            .env_remove("NOWPILOT_QUEUE__PREFIX")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .expect("start nowpilot worker");
        WorkerProcess {
            user,
            child,
            log,
            _dir: dir,
        }
    }

    /// SIGKILL: no shutdown, no goodbye; its connections just drop.
    pub(crate) async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = self.child.wait().await;
    }

    /// SIGTERM and wait (bounded) for a graceful exit.
    pub(crate) async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.start_kill();
            }
        }
    }

    /// Whether it is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Fields for a new priority-2 incident (impact 1 × urgency 2).
pub(crate) fn p2_incident(title: &str) -> Record {
    let mut r = Record::new();
    r.set("short_description", title);
    r.set("impact", "1");
    r.set("urgency", "2");
    r
}

/// Fields of a routine update that changes nothing a plan looks at.
pub(crate) fn touch(n: usize) -> Record {
    let mut r = Record::new();
    r.set("description", format!("update {n}"));
    r
}

/// One reconcile pass as the request log shows it: from a worker's GET of the incident to its
/// last request on the incident before its next GET of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PassSpan {
    /// The worker's user.
    pub(crate) user: String,
    /// The incident.
    pub(crate) sys_id: String,
    /// First request's start (µs since the simulator started).
    pub(crate) start_us: u64,
    /// Last request's end.
    pub(crate) end_us: u64,
    /// Whether it wrote (PATCH).
    pub(crate) wrote: bool,
}

/// The passes in a request log, per worker user and incident.
///
/// Requests on one incident by one user are sequential (one pass at a time per incident in a
/// process, and each user is one process), and a pass reads the incident exactly once, at its
/// start (the journal comes from `sys_journal_field`, or from that same read's display
/// values), so a pass starts at each GET of the incident and spans every request on the
/// incident until that user's next GET of it.
pub(crate) fn pass_spans(log: &[LoggedRequest], users: &[String]) -> Vec<PassSpan> {
    let mut by_key: std::collections::BTreeMap<(String, String), Vec<&LoggedRequest>> =
        std::collections::BTreeMap::new();
    for request in log {
        let (Some(user), Some(sys_id)) = (&request.user, &request.sys_id) else {
            continue;
        };
        if request.table.as_deref() != Some("incident") || !users.contains(user) {
            continue;
        }
        by_key
            .entry((user.clone(), sys_id.clone()))
            .or_default()
            .push(request);
    }
    let mut spans = Vec::new();
    for ((user, sys_id), mut requests) in by_key {
        requests.sort_by_key(|r| r.start_us);
        let mut current: Option<PassSpan> = None;
        for request in requests {
            if request.method == "GET" {
                if let Some(done) = current.take() {
                    spans.push(done);
                }
                current = Some(PassSpan {
                    user: user.clone(),
                    sys_id: sys_id.clone(),
                    start_us: request.start_us,
                    end_us: request.end_us,
                    wrote: false,
                });
            } else if let Some(span) = current.as_mut() {
                span.end_us = span.end_us.max(request.end_us);
                span.wrote |= request.method == "PATCH";
            }
        }
        spans.extend(current);
    }
    spans
}

/// Pairs of passes by different workers on one incident that overlap in time.
pub(crate) fn overlapping(spans: &[PassSpan]) -> Vec<(PassSpan, PassSpan)> {
    let mut by_incident: std::collections::BTreeMap<&str, Vec<&PassSpan>> =
        std::collections::BTreeMap::new();
    for span in spans {
        by_incident.entry(&span.sys_id).or_default().push(span);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_incident {
        list.sort_by_key(|s| s.start_us);
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if b.start_us > a.end_us {
                    break;
                }
                if a.user != b.user {
                    out.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    out
}

/// Waits (at most `limit`) until `check` holds, checking every 200 ms.
pub(crate) async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, user: &str, sys_id: &str, start: u64, end: u64) -> LoggedRequest {
        LoggedRequest {
            method: method.into(),
            path: format!("/api/now/table/incident/{sys_id}"),
            table: Some("incident".into()),
            sys_id: Some(sys_id.into()),
            user: Some(user.into()),
            status: 200,
            start_us: start,
            end_us: end,
        }
    }

    #[test]
    fn spans_and_overlaps() {
        let users = vec!["a".to_owned(), "b".to_owned()];
        let log = vec![
            req("GET", "a", "x", 0, 10),
            req("PATCH", "a", "x", 20, 30),
            req("GET", "a", "x", 40, 45),
            req("GET", "b", "x", 50, 60),
            req("PATCH", "b", "x", 70, 80),
            // b's pass on y overlaps a's pass on y.
            req("GET", "a", "y", 0, 10),
            req("PATCH", "a", "y", 100, 110),
            req("GET", "b", "y", 50, 60),
        ];
        let spans = pass_spans(&log, &users);
        assert_eq!(spans.len(), 5);
        let x: Vec<_> = spans.iter().filter(|s| s.sys_id == "x").collect();
        assert_eq!((x[0].start_us, x[0].end_us, x[0].wrote), (0, 30, true));
        let found = overlapping(&spans);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0.sys_id, "y");
    }
}
