//! Scaling out without ever handling one incident in two places: three `nowpilot worker`
//! processes over real RabbitMQ and the simulator take 2,000 callbacks for 200 incidents while
//! one of them is SIGKILLed and a fourth joins midway. Afterwards every incident is handled,
//! each acknowledgement note was written exactly once, and the simulator's request log shows no
//! two overlapping passes on one incident.
//!
//! Each worker authenticates as its own ServiceNow user, so the request log attributes every
//! request to a worker; a pass's span runs from that worker's GET of the incident to its last
//! request on it before its next GET (see `scale_support::pass_spans`).
//!
//! The workers are the `nowpilot` binary of this build (`target/<profile>/nowpilot`, which
//! `cargo test --workspace` builds; after changing the worker alone, rebuild it with
//! `cargo build -p nowpilot-cli` before running only this test).

// Test code: failing loudly is right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scale_support;

use std::time::Duration;

use nowpilot_queue::{EventQueue, QueueConfig};
use nowpilot_testkit::{TopologyGuard, amqp_config, unique_prefix};
use scale_support::{
    CALLER, WorkerProcess, backend, ingress, overlapping, p2_incident, pass_spans, simulator,
    touch, wait_until, worker_user,
};
use tokio_util::sync::CancellationToken;

const INCIDENTS: usize = 200;
const CALLBACKS_PER_INCIDENT: usize = 10;

fn queue_config() -> QueueConfig {
    let mut config = amqp_config(&unique_prefix("scale-failover"));
    config.partitions = 8;
    config
}

const WORKER_SECTION: &str = r#"
concurrency = 8
poller = false
membership_heartbeat = "500ms"
member_timeout = "2s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_die_and_join_under_load_without_overlapping_passes() {
    tokio::time::timeout(Duration::from_secs(240), scenario())
        .await
        .expect("the scenario finished in time");
}

async fn scenario() {
    let config = queue_config();
    let _cleanup = TopologyGuard::new(&config);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let queue = backend(&config, shutdown.child_token()).await;
    let ingress_url = ingress(queue.clone(), shutdown.child_token()).await;
    let sim = simulator(4, Some(format!("{ingress_url}/webhooks/servicenow"))).await;
    let users: Vec<String> = (0..4).map(worker_user).collect();

    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::start(i, &sim.url, &config, WORKER_SECTION))
        .collect();

    // Every worker has partitions before the storm starts.
    for worker in &workers {
        wait_until(
            "every worker to consume partitions",
            Duration::from_secs(60),
            || worker.log_text().contains("consuming partition"),
        )
        .await;
    }

    // 200 incidents (200 insert callbacks), then nine rounds of updates (1,800 more), paced so
    // that the kill and the join happen while callbacks are flowing.
    let mut sys_ids = Vec::with_capacity(INCIDENTS);
    for i in 0..INCIDENTS {
        let created = sim
            .sim
            .insert_as(CALLER, "incident", p2_incident(&format!("storm {i}")))
            .expect("insert");
        sys_ids.push(created.value_or_empty("sys_id").to_owned());
    }
    for round in 1..CALLBACKS_PER_INCIDENT {
        if round == 3 {
            // Killed mid-work: only once it has passes behind it.
            wait_until("the first worker to work", Duration::from_secs(60), || {
                sim.sim
                    .request_log()
                    .iter()
                    .any(|r| r.user.as_deref() == Some(users[0].as_str()) && r.method == "PATCH")
            })
            .await;
            workers[0].kill().await;
        }
        if round == 6 {
            workers.push(WorkerProcess::start(3, &sim.url, &config, WORKER_SECTION));
        }
        for sys_id in &sys_ids {
            sim.sim
                .update_as(CALLER, "incident", sys_id, touch(round))
                .expect("update");
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    let handled = |sys_id: &String| {
        sim.sim
            .get("incident", sys_id)
            .is_some_and(|r| r.value_or_empty("state") == "2")
    };
    wait_until(
        "every incident acknowledged",
        Duration::from_secs(120),
        || sys_ids.iter().all(handled),
    )
    .await;
    // Let the tail drain: the caller's last round and the workers' own echoes, until the
    // callback log stops growing and the partition queues are empty.
    let mut last = usize::MAX;
    let mut depths = queue.depths().await.expect("depths");
    for _ in 0..60 {
        let callbacks = sim.sim.callback_log().len();
        depths = queue.depths().await.expect("depths");
        if callbacks == last && depths.partitions.iter().all(|d| *d == 0) && depths.retry == 0 {
            break;
        }
        last = callbacks;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        depths.partitions.iter().all(|d| *d == 0),
        "events left: {depths:?}"
    );
    assert_eq!(depths.dead, 0, "nothing was dead-lettered");

    // Every callback the caller's writes fired reached the ingress and was queued.
    let callbacks = sim.sim.callback_log();
    let accepted = callbacks.iter().filter(|c| c.status == Some(202)).count();
    assert!(
        accepted >= INCIDENTS * CALLBACKS_PER_INCIDENT,
        "{accepted} callbacks accepted"
    );

    // Each acknowledgement note exactly once.
    for sys_id in &sys_ids {
        let notes: Vec<_> = sim
            .sim
            .journal("incident", sys_id)
            .into_iter()
            .filter(|e| e.element == "work_notes" && e.value.contains("action=acknowledge"))
            .collect();
        assert_eq!(notes.len(), 1, "incident {sys_id}: {notes:#?}");
    }

    // No two passes on one incident overlapped.
    let log = sim.sim.request_log();
    let spans = pass_spans(&log, &users);
    let overlaps = overlapping(&spans);
    assert!(
        overlaps.is_empty(),
        "{} overlapping passes, e.g. {:#?}",
        overlaps.len(),
        overlaps.first()
    );

    // The scenario really exercised what it claims: the killed worker had passes before it
    // died, the joiner had passes after it joined, and the survivors took over.
    let passes_by = |user: &str| spans.iter().filter(|s| s.user == user).count();
    eprintln!(
        "scale_failover: {accepted} callbacks accepted, {} passes ({} wrote); per worker: {:?}",
        spans.len(),
        spans.iter().filter(|s| s.wrote).count(),
        users
            .iter()
            .map(|u| (u.as_str(), passes_by(u)))
            .collect::<Vec<_>>()
    );
    assert!(
        passes_by(&users[0]) > 0,
        "the killed worker worked before dying"
    );
    assert!(
        passes_by(&users[3]) > 0,
        "the joining worker got partitions: {}",
        workers[3].log_text()
    );
    for worker in &mut workers[1..] {
        assert!(
            worker.running(),
            "{} died: {}",
            worker.user,
            worker.log_text()
        );
    }

    for worker in &mut workers[1..] {
        worker.stop().await;
    }
}
