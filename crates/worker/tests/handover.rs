//! Partition hand-over inside the worker, driven by hand ([`PartitionOwnership::manual`]) over
//! the memory queue and the simulator with injected latency: a released partition reports
//! released only after its running pass wrote; a revoked one abandons the pass at once and its
//! event goes back to the queue; a partition not owned is not consumed; and a poller event
//! counts as a missed callback only for the partition's owner, once it saw a whole window.

// Test code: failing loudly is right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use nowpilot_admin::ConnectionManager;
use nowpilot_model::partition::partition_of;
use nowpilot_model::plans::{PlanConfig, PlanSet};
use nowpilot_model::{EventEnvelope, EventSource, Record};
use nowpilot_queue::{
    EventPublisher, EventQueue, ManualOwnership, MemoryBackend, OwnershipEvent, PartitionOwnership,
    QueueConfig, QueueKind,
};
use nowpilot_servicenow::{ClientOptions, ServiceNowConfig};
use nowpilot_snowsim::{FaultSettings, SimConfig, SimUser, Simulator};
use nowpilot_worker::{WorkerConfig, WorkerDeps};
use secrecy::SecretString;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

const USER: (&str, &str) = ("nowpilot.integration", "integration-pw");
const PARTITIONS: u16 = 4;

struct Rig {
    sim: Simulator,
    queue: Arc<MemoryBackend>,
    control: ManualOwnership,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn rig(latency: Duration) -> Rig {
    rig_with(latency, Duration::from_secs(600)).await
}

async fn rig_with(latency: Duration, poll_window: Duration) -> Rig {
    let mut config = SimConfig {
        users: vec![SimUser::new("admin", "admin"), SimUser::new(USER.0, USER.1)],
        faults: FaultSettings {
            latency,
            ..FaultSettings::default()
        },
        ..SimConfig::default()
    };
    config
        .user_roles
        .insert(USER.0.into(), vec!["admin".into()]);
    let sim = Simulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(nowpilot_snowsim::run(sim.clone(), listener, stop.clone()));

    let dir = tempfile::tempdir().unwrap();
    let mut snow = ServiceNowConfig::basic(&base, USER.0, SecretString::from(USER.1.to_owned()));
    snow.timeout = Duration::from_secs(30);
    let manager = ConnectionManager::new(
        dir.path().join("nowpilot.toml"),
        dir.path(),
        Some(snow),
        ClientOptions::default(),
    );
    let queue_config = QueueConfig {
        kind: QueueKind::Memory,
        partitions: PARTITIONS,
        ..QueueConfig::default()
    };
    let queue = Arc::new(MemoryBackend::new(&queue_config, stop.child_token()).unwrap());
    #[derive(Deserialize)]
    struct File {
        plans: Vec<PlanConfig>,
    }
    let file: File = toml::from_str(
        r#"
        [[plans]]
        name = "ack"
        autonomy = "autonomous"
        [plans.intake]
        priorities = [2]
        [[plans.actions]]
        kind = "acknowledge"
        "#,
    )
    .unwrap();
    let plans = PlanSet::new(&file.plans, false).unwrap();
    let worker = WorkerConfig {
        poller: false,
        poll_interval: Duration::from_secs(1),
        poll_window,
        integration_user: Some(USER.0.into()),
        ..WorkerConfig::default()
    };
    let settings = worker.validate(&plans).unwrap();
    let deps = WorkerDeps::new(queue.clone(), manager, plans, settings);
    let (ownership, control) = PartitionOwnership::manual();
    tokio::spawn(nowpilot_worker::run_owned(deps, ownership, stop.clone()));
    Rig {
        sim,
        queue,
        control,
        stop,
        _dir: dir,
    }
}

impl Rig {
    /// A new priority-2 incident (opened with a comment, so a pass reads it once).
    fn incident(&self) -> (String, u16) {
        let mut r = Record::new();
        r.set("short_description", "hand-over");
        r.set("impact", "1");
        r.set("urgency", "2");
        r.set("comments", "opened");
        let created = self.sim.insert_as("admin", "incident", r).unwrap();
        let sys_id = created.value_or_empty("sys_id").to_owned();
        let partition = partition_of(&sys_id, PARTITIONS);
        (sys_id, partition)
    }

    async fn publish(&self, sys_id: &str) {
        let version = self
            .sim
            .get("incident", sys_id)
            .unwrap()
            .value_or_empty("sys_mod_count")
            .parse()
            .unwrap();
        let event = EventEnvelope::observed(
            "incident",
            sys_id,
            version,
            "",
            EventSource::Poller,
            Utc::now(),
        );
        self.queue.publish(&event).await.unwrap();
    }

    fn requests(&self, method: &str, sys_id: &str) -> usize {
        self.sim
            .request_log()
            .iter()
            .filter(|r| r.method == method && r.sys_id.as_deref() == Some(sys_id))
            .count()
    }

    fn state(&self, sys_id: &str) -> String {
        self.sim
            .get("incident", sys_id)
            .unwrap()
            .value_or_empty("state")
            .to_owned()
    }

    async fn depth(&self, partition: u16) -> u64 {
        self.queue.depths().await.unwrap().partitions[usize::from(partition)]
    }

    async fn released(&mut self) -> u16 {
        tokio::time::timeout(Duration::from_secs(30), self.control.released())
            .await
            .expect("a released notice")
            .expect("the worker is running")
    }
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_released_partition_lets_its_running_pass_finish_first() {
    let mut rig = rig(Duration::from_millis(1000)).await;
    let (sys_id, partition) = rig.incident();
    rig.publish(&sys_id).await;
    // Not owned: not consumed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.depth(partition).await, 1);
    assert_eq!(rig.requests("GET", &sys_id), 0);

    assert!(rig.control.send(OwnershipEvent::Acquired(partition)));
    wait_until("the pass to read the incident", async || {
        rig.requests("GET", &sys_id) == 1
    })
    .await;
    // Mid-pass (the journal read and the PATCH are still to come): hand the partition over.
    assert_eq!(rig.requests("PATCH", &sys_id), 0);
    assert!(rig.control.send(OwnershipEvent::Release(partition)));
    assert_eq!(rig.released().await, partition);
    // Released only after the pass wrote.
    assert_eq!(rig.requests("PATCH", &sys_id), 1);
    assert_eq!(rig.state(&sys_id), "2");

    // Events arriving now wait for the next owner.
    rig.publish(&sys_id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.depth(partition).await, 1);
    assert!(rig.control.send(OwnershipEvent::Acquired(partition)));
    wait_until("the event to be consumed again", async || {
        rig.depth(partition).await == 0
    })
    .await;
}

#[tokio::test]
async fn a_revoked_partition_abandons_its_pass_and_requeues_the_event() {
    let mut rig = rig(Duration::from_millis(1500)).await;
    let (sys_id, partition) = rig.incident();
    rig.publish(&sys_id).await;
    assert!(rig.control.send(OwnershipEvent::Acquired(partition)));
    wait_until("the pass to read the incident", async || {
        rig.requests("GET", &sys_id) == 1
    })
    .await;
    // The lock is gone: stop at once, even mid-pass.
    assert!(rig.control.send(OwnershipEvent::Revoked(partition)));
    assert_eq!(rig.released().await, partition);
    assert_eq!(rig.requests("PATCH", &sys_id), 0);
    assert_eq!(rig.state(&sys_id), "1");
    wait_until("the event to go back to the queue", async || {
        rig.depth(partition).await == 1
    })
    .await;
    // The next owner (here the same worker) finds it and does the work.
    assert!(rig.control.send(OwnershipEvent::Acquired(partition)));
    wait_until("the acknowledgement", async || rig.state(&sys_id) == "2").await;
    assert_eq!(rig.requests("PATCH", &sys_id), 1);
}

#[tokio::test]
async fn releasing_a_partition_never_acquired_answers_at_once() {
    let mut rig = rig(Duration::ZERO).await;
    assert!(rig.control.send(OwnershipEvent::Release(3)));
    assert_eq!(rig.released().await, 3);
    assert!(rig.control.try_released().is_none());
}

/// The missed-callbacks counter of this test binary so far (the debugging recorder's snapshot
/// resets counters, so this keeps the running total).
fn missed_callbacks() -> u64 {
    static SNAPSHOTTER: std::sync::OnceLock<Snapshotter> = std::sync::OnceLock::new();
    static TOTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let snapshotter = SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    });
    let new: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "nowpilot_poller_missed_callbacks_total")
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("{other:?}"),
        })
        .sum();
    TOTAL.fetch_add(new, std::sync::atomic::Ordering::SeqCst) + new
}

#[tokio::test]
async fn only_an_owner_that_saw_a_whole_window_counts_missed_callbacks() {
    let before = missed_callbacks();
    let window = Duration::from_secs(2);
    let rig = rig_with(Duration::ZERO, window).await;
    let (first, partition) = rig.incident();
    assert!(rig.control.send(OwnershipEvent::Acquired(partition)));
    // Just acquired: the worker cannot know whether a callback of the window went elsewhere.
    rig.publish(&first).await;
    wait_until("the first acknowledgement", async || {
        rig.state(&first) == "2"
    })
    .await;
    assert_eq!(missed_callbacks(), before);

    tokio::time::sleep(window).await;
    // A whole window later, a poller event for a version no callback brought is a miss...
    let second = loop {
        let (sys_id, p) = rig.incident();
        if p == partition {
            break sys_id;
        }
    };
    rig.publish(&second).await;
    wait_until("the second acknowledgement", async || {
        rig.state(&second) == "2"
    })
    .await;
    assert_eq!(missed_callbacks(), before + 1);
    // ...and one for a version already handled is not (it is acknowledged as stale).
    rig.publish(&first).await;
    wait_until("the stale event to be settled", async || {
        rig.depth(partition).await == 0
    })
    .await;
    assert_eq!(missed_callbacks(), before + 1);
}
