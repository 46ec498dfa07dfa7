//! The real contract end to end: the ServiceNow business rule (run by the Node.js harness in
//! `deploy/servicenow/test/`) signs a callback, and the ingress accepts exactly those bytes.
//!
//! Skipped, with a notice, when `node` is not on PATH.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use nowpilot_model::Operation;
use serde_json::Value;

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/servicenow/test/harness.js")
}

fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the harness with `args` and returns what it printed.
fn run_rule(args: &[&str]) -> Value {
    let output = Command::new("node")
        .arg(harness())
        .args(args)
        .output()
        .expect("running node");
    assert!(
        output.status.success(),
        "harness failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("harness output is JSON")
}

#[tokio::test]
async fn the_business_rules_request_is_accepted() {
    if !node_available() {
        eprintln!("SKIPPED: `node` is not on PATH; the business-rule contract test did not run");
        return;
    }
    let server = start(config()).await;
    let secret = whsec(SECRET_BYTES);
    let url = server.url(nowpilot_ingress::WEBHOOK_PATH);

    let printed = run_rule(&["--url", &url, "--secret", &secret, "--user", "beth.anglin"]);
    assert_eq!(printed["sent"], true, "{printed}");
    let request = &printed["request"];
    assert_eq!(request["method"], "post");
    assert_eq!(request["url"], url.as_str());

    // Send exactly what the rule would send: same URL, headers and body bytes.
    let mut builder = server
        .client
        .post(request["url"].as_str().unwrap())
        .body(request["body"].as_str().unwrap().to_owned());
    for (name, value) in request["headers"].as_object().unwrap() {
        builder = builder.header(name.as_str(), value.as_str().unwrap());
    }
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["event_id"], "9d385017c611228701d22104cc95c371-4");

    let published = server.publisher.published();
    assert_eq!(published.len(), 1);
    let callback = published[0].callback.as_ref().unwrap();
    assert_eq!(callback.operation, Operation::Update);
    assert_eq!(callback.instance, "dev12345");
    assert_eq!(published[0].number, "INC0010001");
    // The \u-escaped text arrives as the original characters.
    assert_eq!(
        callback.record.value("short_description"),
        Some("Caf\u{e9} POS down \u{2014} caisse bloqu\u{e9}e \u{2615} \u{1f680}")
    );
    assert_eq!(callback.record.value("assigned_to"), Some(""));
    assert!(callback.record.value("work_notes").is_none());

    // The same callback again (ServiceNow does not retry, but a replay must not queue twice).
    let mut again = server
        .client
        .post(request["url"].as_str().unwrap())
        .body(request["body"].as_str().unwrap().to_owned());
    for (name, value) in request["headers"].as_object().unwrap() {
        again = again.header(name.as_str(), value.as_str().unwrap());
    }
    assert_eq!(again.send().await.unwrap().status().as_u16(), 200);
    assert_eq!(server.publisher.published().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn the_integration_users_changes_send_nothing() {
    if !node_available() {
        eprintln!("SKIPPED: `node` is not on PATH; the business-rule contract test did not run");
        return;
    }
    let printed = run_rule(&[
        "--secret",
        &whsec(SECRET_BYTES),
        "--user",
        "nowpilot.integration",
        "--integration-user",
        "nowpilot.integration",
    ]);
    assert_eq!(printed["sent"], false, "{printed}");
    assert_eq!(printed["request"], Value::Null);
}
