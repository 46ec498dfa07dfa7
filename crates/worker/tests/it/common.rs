//! A simulator on port 0, a memory queue and a running worker, with helpers to seed
//! incidents, publish events and wait for passes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use nowpilot_admin::ConnectionManager;
use nowpilot_model::plans::{PlanConfig, PlanSet};
use nowpilot_model::{EventEnvelope, EventSource, Record};
use nowpilot_queue::{
    DeadLetter, EventPublisher, EventQueue, MemoryBackend, QueueConfig, QueueKind,
};
use nowpilot_servicenow::{ClientOptions, ServiceNowConfig};
use nowpilot_snowsim::{JournalEntry, LoggedRequest, SimConfig, SimUser, Simulator};
use nowpilot_worker::{PassReport, WorkerConfig, WorkerDeps, WorkerError};
use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The integration user of most tests: role `itil`, so `sys_journal_field` is hidden from it
/// and the journal comes from the display-value fallback (display names as authors).
pub(crate) const INTEGRATION: (&str, &str) = ("nowpilot.integration", "integration-pw");
/// An admin integration user: the structured journal (user names as authors).
pub(crate) const ADMIN: (&str, &str) = ("admin", "admin");

/// How a test harness is built.
pub(crate) struct Setup {
    pub(crate) worker: WorkerConfig,
    pub(crate) plans: String,
    pub(crate) user: (&'static str, &'static str),
    pub(crate) connected: bool,
    pub(crate) sim: SimConfig,
    pub(crate) client: ClientOptions,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            worker: WorkerConfig::default(),
            plans: String::new(),
            user: INTEGRATION,
            connected: true,
            sim: SimConfig {
                users: vec![
                    SimUser::new("admin", "admin"),
                    SimUser::new(INTEGRATION.0, INTEGRATION.1),
                ],
                seed_demo: true,
                ..SimConfig::default()
            },
            client: ClientOptions::default(),
        }
    }
}

impl Setup {
    /// These plans, the Quickstart plan not included.
    pub(crate) fn plans(plans: impl Into<String>) -> Self {
        Setup {
            plans: plans.into(),
            ..Setup::default()
        }
    }

    /// The Quickstart plan only.
    pub(crate) fn quickstart() -> Self {
        Setup {
            worker: WorkerConfig {
                quickstart: true,
                ..WorkerConfig::default()
            },
            ..Setup::default()
        }
    }
}

#[derive(Deserialize)]
struct PlansFile {
    #[serde(default)]
    plans: Vec<PlanConfig>,
}

/// Parses `[[plans]]` TOML into a plan set.
pub(crate) fn plan_set(text: &str, quickstart: bool) -> PlanSet {
    let file: PlansFile = toml::from_str(text).expect("plans TOML");
    PlanSet::new(&file.plans, quickstart).expect("valid plans")
}

pub(crate) struct Harness {
    pub(crate) sim: Simulator,
    pub(crate) base: String,
    pub(crate) queue: Arc<MemoryBackend>,
    pub(crate) manager: ConnectionManager,
    pub(crate) user: (&'static str, &'static str),
    reports: Arc<Mutex<Vec<PassReport>>>,
    notify: Arc<Notify>,
    worker_stop: CancellationToken,
    worker: Option<JoinHandle<Result<(), WorkerError>>>,
    sim_stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.worker_stop.cancel();
        self.sim_stop.cancel();
    }
}

pub(crate) async fn start(setup: Setup) -> Harness {
    let sim = Simulator::new(setup.sim);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sim_stop = CancellationToken::new();
    tokio::spawn(nowpilot_snowsim::run(
        sim.clone(),
        listener,
        sim_stop.clone(),
    ));

    let dir = tempfile::tempdir().unwrap();
    let initial = setup.connected.then(|| connection(&base, setup.user));
    let manager = ConnectionManager::new(
        dir.path().join("nowpilot.toml"),
        dir.path(),
        initial,
        setup.client,
    );
    let worker_stop = CancellationToken::new();
    let queue_config = QueueConfig {
        kind: QueueKind::Memory,
        partitions: 4,
        prefetch: 32,
        ..QueueConfig::default()
    };
    let queue = Arc::new(MemoryBackend::new(&queue_config, worker_stop.child_token()).unwrap());
    let plans = plan_set(&setup.plans, setup.worker.quickstart);
    let settings = setup.worker.validate(&plans).expect("valid worker config");
    let reports = Arc::new(Mutex::new(Vec::new()));
    let notify = Arc::new(Notify::new());
    let sink = {
        let reports = reports.clone();
        let notify = notify.clone();
        Arc::new(move |report: PassReport| {
            reports.lock().unwrap().push(report);
            notify.notify_waiters();
        })
    };
    let deps = WorkerDeps::new(queue.clone(), manager.clone(), plans, settings).with_activity(sink);
    let worker = tokio::spawn(nowpilot_worker::run(deps, worker_stop.clone()));
    Harness {
        sim,
        base,
        queue,
        manager,
        user: setup.user,
        reports,
        notify,
        worker_stop,
        worker: Some(worker),
        sim_stop,
        _dir: dir,
    }
}

pub(crate) fn connection(base: &str, user: (&str, &str)) -> ServiceNowConfig {
    let mut c = ServiceNowConfig::basic(base, user.0, SecretString::from(user.1.to_owned()));
    c.timeout = Duration::from_secs(10);
    c
}

pub(crate) fn record(fields: &[(&str, &str)]) -> Record {
    let mut r = Record::new();
    for (k, v) in fields {
        r.set(*k, *v);
    }
    r
}

/// A created incident.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    pub(crate) sys_id: String,
    pub(crate) number: String,
    pub(crate) version: u64,
}

impl Harness {
    /// Inserts an incident (as a person, `carlos.mendes`).
    pub(crate) fn incident(&self, fields: &[(&str, &str)]) -> Created {
        let r = self
            .sim
            .insert_as("carlos.mendes", "incident", record(fields))
            .unwrap();
        Created {
            sys_id: r.value_or_empty("sys_id").to_owned(),
            number: r.value_or_empty("number").to_owned(),
            version: r.value_or_empty("sys_mod_count").parse().unwrap(),
        }
    }

    /// A sys_id by name from a reference table.
    pub(crate) fn sys_id_of(&self, table: &str, query: &str) -> String {
        self.sim.query(table, query).unwrap()[0]
            .value_or_empty("sys_id")
            .to_owned()
    }

    /// A person writes on the incident; returns the new version.
    pub(crate) fn write_as(&self, user: &str, sys_id: &str, fields: &[(&str, &str)]) -> u64 {
        let r = self
            .sim
            .update_as(user, "incident", sys_id, record(fields))
            .unwrap();
        r.value_or_empty("sys_mod_count").parse().unwrap()
    }

    /// Publishes the event for `sys_id` at `version`.
    pub(crate) async fn publish(&self, created: &Created, version: u64) {
        let envelope = EventEnvelope::observed(
            "incident",
            &created.sys_id,
            version,
            &created.number,
            EventSource::Callback,
            Utc::now(),
        );
        self.queue.publish(&envelope).await.unwrap();
    }

    /// The stored record.
    pub(crate) fn get(&self, sys_id: &str) -> Record {
        self.sim.get("incident", sys_id).unwrap()
    }

    /// The journal, oldest first.
    pub(crate) fn journal(&self, sys_id: &str) -> Vec<JournalEntry> {
        self.sim.journal("incident", sys_id)
    }

    /// Journal entries written by the integration user.
    pub(crate) fn our_notes(&self, sys_id: &str) -> Vec<String> {
        self.journal(sys_id)
            .into_iter()
            .filter(|e| e.created_by == self.user.0)
            .map(|e| e.value)
            .collect()
    }

    /// Requests about this incident.
    pub(crate) fn requests(&self, sys_id: &str) -> Vec<LoggedRequest> {
        self.sim
            .request_log()
            .into_iter()
            .filter(|r| r.sys_id.as_deref() == Some(sys_id))
            .collect()
    }

    /// PATCHes of this incident.
    pub(crate) fn patches(&self, sys_id: &str) -> usize {
        self.requests(sys_id)
            .iter()
            .filter(|r| r.method == "PATCH")
            .count()
    }

    /// Every report so far.
    pub(crate) fn reports(&self) -> Vec<PassReport> {
        self.reports.lock().unwrap().clone()
    }

    /// Reports for one incident.
    pub(crate) fn reports_for(&self, sys_id: &str) -> Vec<PassReport> {
        self.reports()
            .into_iter()
            .filter(|r| r.sys_id == sys_id)
            .collect()
    }

    /// Waits (at most 60 s) until `check` holds over the reports of `sys_id`.
    pub(crate) async fn wait_for<F>(&self, sys_id: &str, what: &str, check: F) -> Vec<PassReport>
    where
        F: Fn(&[PassReport]) -> bool,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.notify.notified();
            let reports = self.reports_for(sys_id);
            if check(&reports) {
                return reports;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; reports: {reports:#?}");
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Waits for the `n`-th report of `sys_id` and returns it.
    pub(crate) async fn nth_report(&self, sys_id: &str, n: usize) -> PassReport {
        let reports = self
            .wait_for(sys_id, &format!("report #{n}"), |r| r.len() >= n)
            .await;
        reports[n - 1].clone()
    }

    /// Waits until the worker has taken every published event off the queue (they may still
    /// be unsettled: running, waiting in a lane, or waiting for a connection).
    pub(crate) async fn wait_taken(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let depths = self.queue.depths().await.unwrap();
            if depths.partitions.iter().all(|d| *d == 0) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "events not taken: {depths:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Dead letters in the queue.
    pub(crate) async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.queue.dead_letters(100).await.unwrap()
    }

    /// Stops the worker and waits for it.
    pub(crate) async fn stop(&mut self) -> Result<(), WorkerError> {
        self.worker_stop.cancel();
        match self.worker.take() {
            Some(handle) => handle.await.unwrap(),
            None => Ok(()),
        }
    }
}

/// The proposal id in a note (`/nowpilot approve <id>`).
pub(crate) fn proposal_id(note: &str) -> String {
    let at = note.find("/nowpilot approve ").expect("a proposal") + "/nowpilot approve ".len();
    note[at..at + 6].to_owned()
}

/// Whether the note ends with a marker for `plan`/`action`.
pub(crate) fn has_marker(note: &str, plan: &str, action: &str) -> bool {
    note.lines().last().is_some_and(|l| {
        l.starts_with("[nowpilot") && l.contains(&format!("plan={plan} action={action}"))
    })
}

/// The runbook signing secret of the step tests (`[worker] runbook_secret`).
pub(crate) const RUNBOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Whether `headers` carry a fresh (±300 s) Standard Webhooks signature of `body` by
/// [`RUNBOOK_SECRET`], as a runbook endpoint would check it.
pub(crate) fn runbook_signed(headers: &axum::http::HeaderMap, body: &[u8]) -> bool {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sig)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let age = Utc::now().timestamp() - ts.parse::<i64>().unwrap_or(0);
    if age.abs() > 300 {
        return false;
    }
    let key = b64
        .decode(RUNBOOK_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let tag = sig.strip_prefix("v1,").and_then(|t| b64.decode(t).ok());
    tag.is_some_and(|tag| mac.verify_slice(&tag).is_ok())
}
