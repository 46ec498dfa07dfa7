//! Metrics: names, bounded labels, and the counters the brief asks for. A separate test binary
//! because it installs the process-wide recorder.

// Test helpers may fail loudly: a panic is a test failure here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "it/fake.rs"]
#[allow(dead_code)]
mod fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use nowpilot_servicenow::{GrantCredentials, ReadOptions};

use fake::*;

#[tokio::test]
async fn requests_rate_limits_tokens_and_in_flight_are_measured() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let fake = Fake::start(move |r| {
        if r.is_token_call() {
            return Reply::token("AT", None, 1800);
        }
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::envelope(429, "Rate limit exceeded", None).header("Retry-After", "0")
        } else {
            Reply::result(incident_json())
        }
    })
    .await;
    let client = fake.oauth(GrantCredentials::ClientCredentials);
    client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();

    let mut requests_by_status = Vec::new();
    let mut saw = (false, false, false, false);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        for (_, v) in &labels {
            assert!(
                !v.contains(SYS_ID),
                "a sys_id in a metric label: {labels:?}"
            );
        }
        match (key.name(), value) {
            ("nowpilot_servicenow_requests_total", DebugValue::Counter(n)) => {
                requests_by_status.push((labels, n))
            }
            ("nowpilot_servicenow_rate_limited_total", DebugValue::Counter(n)) => {
                assert_eq!(n, 1);
                saw.0 = true;
            }
            ("nowpilot_servicenow_token_refreshes_total", DebugValue::Counter(n)) => {
                assert_eq!(labels, [("outcome".to_owned(), "success".to_owned())]);
                assert_eq!(n, 1);
                saw.1 = true;
            }
            ("nowpilot_servicenow_in_flight", DebugValue::Gauge(v)) => {
                assert_eq!(v.into_inner(), 0.0, "every call finished");
                saw.2 = true;
            }
            ("nowpilot_servicenow_request_duration_seconds", DebugValue::Histogram(values)) => {
                assert!(!values.is_empty());
                assert!(
                    labels.iter().all(|(k, _)| k == "method" || k == "table"),
                    "{labels:?}"
                );
                saw.3 = true;
            }
            _ => {}
        }
    }
    assert_eq!(saw, (true, true, true, true));
    requests_by_status.sort();
    let label = |m: &str, t: &str, s: &str| {
        vec![
            ("method".to_owned(), m.to_owned()),
            ("table".to_owned(), t.to_owned()),
            ("status".to_owned(), s.to_owned()),
        ]
    };
    assert_eq!(
        requests_by_status,
        vec![
            (label("GET", "incident", "200"), 1),
            (label("GET", "incident", "429"), 1),
            (label("POST", "oauth_token.do", "200"), 1),
        ]
    );
}
