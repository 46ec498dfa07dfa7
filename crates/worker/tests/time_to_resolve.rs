//! `nowpilot_worker_time_to_resolve_seconds`: one sample per resolve nowpilot wrote, measured
//! from the incident's `opened_at`; nothing for a refused resolve or another action. A separate
//! test binary because it installs the process-wide recorder.

// Helpers outside #[test] functions panic on purpose: a failed expectation fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "it/common.rs"]
#[allow(dead_code)]
mod common;

use chrono::{Duration as Span, Utc};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use nowpilot_worker::Outcome;

use common::*;

const PLANS: &str = r#"
[[plans]]
name = "auto-resolve"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[auto-resolve]"]
[[plans.actions]]
kind = "resolve"
close_code = "solution provided"
close_notes = "Restarted the pool; checks are green."

[[plans]]
name = "bad-code"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[bad-code]"]
[[plans.actions]]
kind = "resolve"
close_code = "Fixed it"
close_notes = "Done."

[[plans]]
name = "ack"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[ack]"]
[[plans.actions]]
kind = "acknowledge"
"#;

const METRIC: &str = "nowpilot_worker_time_to_resolve_seconds";

/// The time-to-resolve samples recorded since the previous call (a snapshot drains them).
fn samples(snapshotter: &Snapshotter) -> Vec<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, _, _, _)| key.key().name() == METRIC)
        .map(|(_, _, _, value)| match value {
            DebugValue::Histogram(values) => values.into_iter().map(|v| v.into_inner()).collect(),
            other => panic!("{METRIC} is not a histogram: {other:?}"),
        })
        .unwrap_or_default()
}

/// `opened_at` as ServiceNow stores it (UTC, `YYYY-MM-DD HH:MM:SS`), `ago` before now.
fn opened(ago: Span) -> String {
    (Utc::now() - ago).format("%Y-%m-%d %H:%M:%S").to_string()
}

#[tokio::test]
async fn a_resolve_nowpilot_wrote_is_measured_from_opened_at() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let h = start(Setup::plans(PLANS)).await;

    // Refused by the instance's choices: nothing resolved, nothing measured.
    let refused = h.incident(&[
        ("short_description", "[bad-code] disk full"),
        ("opened_at", &opened(Span::hours(1))),
    ]);
    h.publish(&refused, 0).await;
    let report = h.nth_report(&refused.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::DeadLettered, "{report:#?}");
    // Acknowledged, not resolved: MTTA's business, not this metric's.
    let acked = h.incident(&[
        ("short_description", "[ack] queue backlog"),
        ("opened_at", &opened(Span::hours(1))),
    ]);
    h.publish(&acked, 0).await;
    let report = h.nth_report(&acked.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::Acted, "{report:#?}");
    assert_eq!(samples(&snapshotter), Vec::<f64>::new());

    let resolved = h.incident(&[
        ("short_description", "[auto-resolve] pool exhausted"),
        ("opened_at", &opened(Span::hours(2))),
    ]);
    h.publish(&resolved, 0).await;
    let report = h.nth_report(&resolved.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::Acted, "{report:#?}");
    assert_eq!(h.get(&resolved.sys_id).value("state"), Some("6"));

    let recorded = samples(&snapshotter);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    // Two hours of incident age, plus however long the test took to get here (bounded loosely:
    // this checks the unit and the starting point, not the machine's speed).
    let seconds = recorded[0];
    assert!(
        (7200.0..7200.0 + 3600.0).contains(&seconds),
        "expected about two hours in seconds, got {seconds}"
    );

    // A redelivery finds the resolve done: no second sample. (A snapshot drains histogram
    // samples, so this one holds only what came after the last.)
    h.publish(&resolved, 0).await;
    h.nth_report(&resolved.sys_id, 2).await;
    assert_eq!(samples(&snapshotter), Vec::<f64>::new());
}
