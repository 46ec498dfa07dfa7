//! Never missing an incident: with the ingress down, 50 incidents change; the poller of a real
//! `nowpilot worker` enqueues all 50 within two poll intervals and each is handled once.
//!
//! "Within two intervals" is read from the simulator's request log, so no clock of this test
//! is involved: a poll is the worker's list request on the incident table (the plan does
//! nothing else that lists incidents), and every incident's first pass (its GET by the worker)
//! must start before the third poll that began after the changes. A pass can only start after
//! the poll that enqueued it, so this holds exactly when one of the first two polls did.

// Test code: failing loudly is right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scale_support;

use std::time::Duration;

use nowpilot_testkit::{TopologyGuard, amqp_config, unique_prefix};
use scale_support::{CALLER, WorkerProcess, p2_incident, simulator, wait_until, worker_user};

const INCIDENTS: usize = 50;
const POLL_INTERVAL_SECS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_enqueues_what_callbacks_missed() {
    tokio::time::timeout(Duration::from_secs(120), scenario())
        .await
        .expect("the scenario finished in time");
}

async fn scenario() {
    let mut config = amqp_config(&unique_prefix("scale-poller"));
    config.partitions = 4;
    let _cleanup = TopologyGuard::new(&config);
    // The ingress is down: callbacks go to a port nobody listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/webhooks/servicenow", dead.local_addr().unwrap());
    drop(dead);
    let sim = simulator(1, Some(dead_url)).await;
    let user = worker_user(0);
    let section = format!(
        "poll_interval = \"{POLL_INTERVAL_SECS}s\"\npoll_window = \"2m\"\nmembership_heartbeat = \"500ms\"\nmember_timeout = \"2s\"\n"
    );
    let mut worker = WorkerProcess::start(0, &sim.url, &config, &section);

    // A poll is the worker's list request on the incident table. (Its connection check at
    // start lists incidents too; that one comes before the changes, and any other such request
    // would only make the check below stricter.)
    let polls_by_worker = |after_us: u64| -> Vec<u64> {
        sim.sim
            .request_log()
            .into_iter()
            .filter(|r| {
                r.method == "GET"
                    && r.user.as_deref() == Some(user.as_str())
                    && r.table.as_deref() == Some("incident")
                    && r.sys_id.is_none()
                    && r.start_us > after_us
            })
            .map(|r| r.start_us)
            .collect()
    };
    // It owns partition 0, so it runs the poller.
    wait_until(
        "the worker to run the poller",
        Duration::from_secs(60),
        || worker.log_text().contains("this worker runs the poller"),
    )
    .await;

    let mut sys_ids = Vec::with_capacity(INCIDENTS);
    for i in 0..INCIDENTS {
        let created = sim
            .sim
            .insert_as(CALLER, "incident", p2_incident(&format!("missed {i}")))
            .expect("insert");
        sys_ids.push(created.value_or_empty("sys_id").to_owned());
    }
    // A request of this test marks, on the simulator's clock, the moment the changes were done.
    let marker = reqwest::Client::new()
        .get(format!(
            "{}/api/now/table/incident?sysparm_limit=1",
            sim.url
        ))
        .basic_auth(CALLER, Some("caller-pw"))
        .send()
        .await
        .unwrap();
    assert!(marker.status().is_success());
    let changed_us = sim
        .sim
        .request_log()
        .iter()
        .rev()
        .find(|r| r.user.as_deref() == Some(CALLER))
        .map(|r| r.start_us)
        .expect("the marker request is logged");

    // Every callback failed: the ingress was down.
    wait_until("the callbacks to fail", Duration::from_secs(30), || {
        sim.sim.callback_log().len() >= INCIDENTS
    })
    .await;
    let callbacks = sim.sim.callback_log();
    assert!(
        callbacks.iter().all(|c| c.status.is_none()),
        "{callbacks:#?}"
    );

    wait_until("all 50 acknowledged", Duration::from_secs(60), || {
        sys_ids.iter().all(|id| {
            sim.sim
                .get("incident", id)
                .is_some_and(|r| r.value_or_empty("state") == "2")
        })
    })
    .await;

    let log = sim.sim.request_log();
    let polls = polls_by_worker(changed_us);
    let first_pass = |sys_id: &str| {
        log.iter()
            .filter(|r| {
                r.method == "GET"
                    && r.user.as_deref() == Some(user.as_str())
                    && r.sys_id.as_deref() == Some(sys_id)
            })
            .map(|r| r.start_us)
            .min()
            .expect("a pass read the incident")
    };
    for sys_id in &sys_ids {
        let started = first_pass(sys_id);
        let polls_before = polls.iter().filter(|p| **p < started).count();
        // 0: a poll under way while the incidents changed already caught it.
        assert!(
            polls_before <= 2,
            "incident {sys_id} was picked up after {polls_before} polls since the change (polls at {polls:?} µs, pass at {started} µs)"
        );
    }

    // Handled once: one acknowledgement note each, and a later poll enqueues nothing again.
    let polls_so_far = polls_by_worker(changed_us).len();
    wait_until("two more polls", Duration::from_secs(30), || {
        polls_by_worker(changed_us).len() >= polls_so_far + 2
    })
    .await;
    for sys_id in &sys_ids {
        let notes = sim
            .sim
            .journal("incident", sys_id)
            .into_iter()
            .filter(|e| e.element == "work_notes" && e.value.contains("action=acknowledge"))
            .count();
        assert_eq!(notes, 1, "incident {sys_id}");
        let requests: Vec<_> = sim
            .sim
            .request_log()
            .into_iter()
            .filter(|r| {
                r.user.as_deref() == Some(user.as_str()) && r.sys_id.as_deref() == Some(sys_id)
            })
            .collect();
        let passes = requests.iter().filter(|r| r.method == "GET").count();
        assert_eq!(
            passes,
            1,
            "incident {sys_id} was passed over again: {requests:#?}, now {:?}",
            sim.sim.get("incident", sys_id)
        );
    }
    assert!(worker.running(), "{}", worker.log_text());
    worker.stop().await;
}
