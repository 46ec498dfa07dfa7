//! `nowpilot run` end to end, one test body in two configurations: the memory queue and
//! RabbitMQ. The real binary runs with ingress and admin on port 0; an in-process simulator's
//! business rule posts signed callbacks to its ingress; a priority-2 incident must end In
//! Progress with exactly one acknowledgement note and one findings note.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use nowpilot_snowsim::{WebhookConfig, WebhookSecret};
use nowpilot_testkit::{TopologyGuard, amqp_config, amqp_url, unique_prefix};
use serde_json::Value;
use support::{INTEGRATION, Running, Sim, WEBHOOK_SECRET, has_marker, wait_until, write_config};

const WAIT: Duration = Duration::from_secs(60);

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The shared body: `queue` is the `[queue]` section, `env` extra environment.
async fn a_priority_2_incident_is_acknowledged_and_investigated_once(
    queue: &str,
    env: &[(&str, &str)],
) {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &sim.url, queue, "");
    let run = Running::start(dir.path(), env).await;
    sim.sim.set_webhook(WebhookConfig {
        url: Some(run.webhook().parse().unwrap()),
        secret: Some(WebhookSecret::parse(WEBHOOK_SECRET).unwrap()),
        skip_user: None,
    });

    let ci = sim.ci("checkout-api");
    let sys_id = sim.create(
        "maya.patel",
        &[
            ("short_description", "Checkout p95 latency above 2s"),
            ("impact", "1"),
            ("urgency", "2"),
            ("cmdb_ci", &ci),
        ],
    );
    assert_eq!(sim.field(&sys_id, "priority"), "2");
    wait_until("the acknowledgement and the findings", WAIT, || {
        sim.field(&sys_id, "state") == "2" && sim.our_notes(&sys_id).len() >= 2
    })
    .await;

    // Settle before counting: every callback of the incident answered (nowpilot's own
    // writes come back as echoes, answered 200 and not queued), and every queued one handled
    // (its event id in a pass on the status page).
    let mut queued: Vec<String>;
    let activity_url = format!("{}api/v1/activity", run.status);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mod_count: u64 = sim.field(&sys_id, "sys_mod_count").parse().unwrap();
        let callbacks: Vec<_> = sim
            .sim
            .callback_log()
            .into_iter()
            .filter(|c| c.sys_id == sys_id)
            .collect();
        let answered = callbacks.len() as u64 == mod_count + 1
            && callbacks
                .iter()
                .all(|c| c.status.is_some() || c.error.is_some());
        queued = callbacks
            .iter()
            .filter(|c| c.status == Some(202))
            .map(|c| c.webhook_id.clone())
            .collect();
        let activity = get_json(&activity_url).await;
        let handled: Vec<String> = activity["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["sys_id"] == sys_id.as_str())
            .flat_map(|p| p["event_ids"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect();
        if answered && queued.iter().all(|id| handled.contains(id)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "callbacks {callbacks:#?} not all handled: {activity:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!queued.is_empty(), "the creation was queued");

    let notes = sim.our_notes(&sys_id);
    assert_eq!(notes.len(), 2, "exactly two notes: {notes:#?}");
    assert!(
        has_marker(&notes[0].value, "quickstart", "acknowledge"),
        "{}",
        notes[0].value
    );
    assert!(
        has_marker(&notes[1].value, "quickstart", "investigate"),
        "{}",
        notes[1].value
    );
    assert!(
        notes[1].value.contains("CHG"),
        "the findings name the change: {}",
        notes[1].value
    );
    assert_eq!(sim.field(&sys_id, "state"), "2");
    assert!(notes.iter().all(|n| n.created_by == INTEGRATION.0));

    // The status page of the same process says so.
    let status = get_json(&format!("{}api/v1/status", run.status)).await;
    assert_eq!(status["connection"]["state"], "connected", "{status:#}");
    assert_eq!(status["process"]["role"], "run");
    let quickstart = status["plans"]["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "quickstart")
        .unwrap();
    assert!(quickstart["matched"]["incidents"].as_u64().unwrap() >= 1);

    let (code, stderr) = run.stop().await;
    assert_eq!(code, Some(0), "a clean shutdown: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn run_with_the_memory_queue() {
    a_priority_2_incident_is_acknowledged_and_investigated_once("kind = \"memory\"", &[]).await;
}

#[tokio::test]
async fn run_with_rabbitmq() {
    let prefix = unique_prefix("cli-run");
    // Declared first, dropped last: the topology is deleted after the process stopped.
    let _cleanup = TopologyGuard::new(&amqp_config(&prefix));
    let queue = format!("kind = \"amqp\"\nurl = \"{}\"", amqp_url());
    a_priority_2_incident_is_acknowledged_and_investigated_once(
        &queue,
        &[("NOWPILOT_QUEUE__PREFIX", &prefix)],
    )
    .await;
}

/// Starts `nowpilot <command>` in `dir` with JSON logs; returns the child and its log lines.
async fn spawn_logged(
    dir: &std::path::Path,
    command: &str,
    prefix: &str,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nowpilot"))
        .arg(command)
        .env("NOWPILOT_CONFIG", dir.join("nowpilot.toml"))
        .env("NOWPILOT_QUEUE__PREFIX", prefix)
        .env("NOWPILOT_TELEMETRY__LOG_FORMAT", "json")
        .env("NOWPILOT_LOG", "info,lapin=warn,amq_protocol=warn")
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            let _ = tx.send(value);
        }
    });
    (child, rx)
}

#[tokio::test]
async fn separate_ingress_and_worker_share_activity_on_the_ingress_status_page() {
    let prefix = unique_prefix("cli-split");
    let _cleanup = TopologyGuard::new(&amqp_config(&prefix));
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let queue = format!("kind = \"amqp\"\nurl = \"{}\"", amqp_url());
    write_config(dir.path(), &sim.url, &queue, "");
    let (mut worker, _worker_logs) = spawn_logged(dir.path(), "worker", &prefix).await;
    let (mut ingress, mut ingress_logs) = spawn_logged(dir.path(), "ingress", &prefix).await;
    // The ingress logs the address it bound (port 0).
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = ingress_logs.recv().await {
            if line["message"] == "ingress listening" {
                return line["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("the ingress ended before listening");
    })
    .await
    .expect("the ingress listens");
    let base = format!("http://{addr}");
    sim.sim.set_webhook(WebhookConfig {
        url: Some(format!("{base}/webhooks/servicenow").parse().unwrap()),
        secret: Some(WebhookSecret::parse(WEBHOOK_SECRET).unwrap()),
        skip_user: None,
    });
    // The ingress's page subscribes to the activity exchange; wait until it is linked.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = get_json(&format!("{base}/api/v1/status")).await;
        if status["activity"]["link"]["state"] == "connected" {
            assert_eq!(status["process"]["role"], "ingress");
            assert_eq!(status["workers"]["members"], serde_json::json!([]));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ci = sim.ci("checkout-api");
    let sys_id = sim.create(
        "maya.patel",
        &[
            ("short_description", "Checkout latency, split deployment"),
            ("impact", "1"),
            ("urgency", "2"),
            ("cmdb_ci", &ci),
        ],
    );
    // The worker (another process) handles it; its pass shows on the ingress's page.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let activity = get_json(&format!("{base}/api/v1/activity")).await;
        let acted = activity["items"].as_array().unwrap().iter().any(|p| {
            p["sys_id"] == sys_id.as_str()
                && p["outcome"] == "acted"
                && p["plans"][0] == "quickstart"
        });
        if acted {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{activity:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sim.field(&sys_id, "state"), "2");
    let html = reqwest::get(format!("{base}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(&sim.field(&sys_id, "number")), "{html}");

    for child in [&mut ingress, &mut worker] {
        let pid = child.id().unwrap().to_string();
        tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(0));
    }
}
