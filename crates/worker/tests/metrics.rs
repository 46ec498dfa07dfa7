//! Metrics: the names the brief asks for, with bounded labels. A separate test binary because
//! it installs the process-wide recorder.

// Helpers outside #[test] functions panic on purpose: a failed expectation fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "it/common.rs"]
#[allow(dead_code)]
mod common;

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use nowpilot_worker::Outcome;

use common::*;

type Labels = Vec<(String, String)>;

fn snapshot(snapshotter: &Snapshotter) -> Vec<(String, Labels, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (key.name().to_owned(), labels, value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn find<'a>(
    all: &'a [(String, Labels, DebugValue)],
    name: &str,
    want: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    let want = labels(want);
    all.iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| v)
}

fn counter(all: &[(String, Labels, DebugValue)], name: &str, want: &[(&str, &str)]) -> u64 {
    match find(all, name, want) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {want:?}: {other:?}"),
    }
}

fn gauge(all: &[(String, Labels, DebugValue)], name: &str) -> f64 {
    match find(all, name, &[]) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{name}: {other:?}"),
    }
}

fn histogram_len(all: &[(String, Labels, DebugValue)], name: &str) -> usize {
    match find(all, name, &[]) {
        Some(DebugValue::Histogram(values)) => values.len(),
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
async fn the_worker_measures_what_it_does() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let h = start(Setup {
        connected: false,
        ..Setup::quickstart()
    })
    .await;
    let inc = h.incident(&[
        ("short_description", "Checkout down"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    h.publish(&inc, 0).await;
    h.publish(&inc, 0).await;
    h.wait_taken().await;
    // The pass reaches the connection gate right after the delivery is taken.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        let all = snapshot(&snapshotter);
        let is_one = |name: &str| matches!(find(&all, name, &[]), Some(DebugValue::Gauge(v)) if v.into_inner() == 1.0);
        if is_one("nowpilot_worker_waiting_for_connection") && is_one("nowpilot_worker_lane_depth")
        {
            break all;
        }
        assert!(tokio::time::Instant::now() < deadline, "never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        gauge(&waiting, "nowpilot_worker_waiting_for_connection"),
        1.0
    );
    assert_eq!(gauge(&waiting, "nowpilot_worker_passes_in_flight"), 1.0);
    assert_eq!(gauge(&waiting, "nowpilot_worker_lane_depth"), 1.0);

    h.manager.connect(connection(&h.base, ADMIN)).await.unwrap();
    h.wait_for(&inc.sys_id, "both events", |r| {
        r.iter().map(|p| p.event_ids.len()).sum::<usize>() >= 2
    })
    .await;
    h.publish(&inc, 1).await;
    h.wait_for(&inc.sys_id, "the echo", |r| {
        r.iter().any(|p| p.outcome == Outcome::Stale)
    })
    .await;
    let gone = h.incident(&[
        ("short_description", "x"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    h.sim.delete("incident", &gone.sys_id).unwrap();
    h.publish(&gone, 0).await;
    h.nth_report(&gone.sys_id, 1).await;

    let all = snapshot(&snapshotter);
    let events = "nowpilot_worker_events_total";
    assert_eq!(
        counter(
            &all,
            events,
            &[("outcome", "acted"), ("plan", "quickstart")]
        ),
        1
    );
    assert_eq!(
        counter(
            &all,
            events,
            &[("outcome", "waiting"), ("plan", "quickstart")]
        ),
        1
    );
    // The second delivery (coalesced behind the first) and the echo of nowpilot's own write.
    assert_eq!(
        counter(&all, events, &[("outcome", "stale"), ("plan", "none")]),
        2
    );
    assert_eq!(
        counter(
            &all,
            events,
            &[("outcome", "dead_lettered"), ("plan", "none")]
        ),
        1
    );
    let actions = "nowpilot_worker_actions_total";
    assert_eq!(
        counter(
            &all,
            actions,
            &[("kind", "acknowledge"), ("result", "done")]
        ),
        1
    );
    assert_eq!(
        counter(
            &all,
            actions,
            &[("kind", "investigate"), ("result", "done")]
        ),
        1
    );
    assert_eq!(
        counter(
            &all,
            "nowpilot_worker_dead_letters_total",
            &[("reason", "not_found")]
        ),
        1
    );
    assert_eq!(histogram_len(&all, "nowpilot_worker_mtta_seconds"), 1);
    assert!(histogram_len(&all, "nowpilot_worker_reconcile_duration_seconds") >= 2);
    assert_eq!(gauge(&all, "nowpilot_worker_waiting_for_connection"), 0.0);
    assert_eq!(gauge(&all, "nowpilot_worker_lane_depth"), 0.0);
    for (name, labels, _) in &all {
        for (_, value) in labels {
            assert!(
                !value.contains(&inc.sys_id) && !value.contains(&inc.number),
                "an incident in a label of {name}: {labels:?}"
            );
        }
    }
}
