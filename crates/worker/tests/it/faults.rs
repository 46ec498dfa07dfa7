//! ServiceNow misbehaving: a 429 storm, 503s, an exhausted retry budget.

use std::time::Duration;

use nowpilot_servicenow::ClientOptions;
use nowpilot_snowsim::{FaultSettings, ForcedStatus};
use nowpilot_worker::{Outcome, WorkerConfig};

use crate::common::*;

#[tokio::test]
async fn a_rate_limit_storm_delays_work_but_loses_nothing() {
    let mut setup = Setup::quickstart();
    // Retries come back after the shortest tier (5 s), eight times at most.
    setup.worker.retry_delays = vec![Duration::from_secs(1); 8];
    setup.sim.rate_limit = Some(5);
    setup.sim.rate_limit_window = Duration::from_secs(1);
    // The client sits through one 429 per call; a second one goes to the queue's retry tiers.
    setup.client = ClientOptions {
        max_rate_limit_waits: 1,
        ..ClientOptions::default()
    };
    let h = start(setup).await;
    let incidents: Vec<Created> = (0..6)
        .map(|i| {
            h.incident(&[
                ("short_description", &format!("outage {i}")),
                ("impact", "1"),
                ("urgency", "2"),
            ])
        })
        .collect();
    for inc in &incidents {
        h.publish(inc, 0).await;
    }
    for inc in &incidents {
        h.wait_for(&inc.sys_id, "handled despite 429s", |r| {
            r.last().is_some_and(|r| r.outcome == Outcome::Acted)
        })
        .await;
    }
    for inc in &incidents {
        assert_eq!(h.get(&inc.sys_id).value("state"), Some("2"));
        assert_eq!(
            h.our_notes(&inc.sys_id).len(),
            2,
            "written once despite retries"
        );
    }
    let limited = h
        .sim
        .request_log()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert!(limited > 0, "the storm happened");
    let retried = h
        .reports()
        .iter()
        .filter(|r| r.outcome == Outcome::Retried)
        .count();
    assert!(retried > 0, "some work went through the retry tiers");
    assert!(h.dead_letters().await.is_empty());
}

#[tokio::test]
async fn server_errors_are_retried_until_they_pass() {
    let h = start(Setup::quickstart()).await;
    h.sim.set_faults(FaultSettings {
        forced: Some(ForcedStatus {
            status: 503,
            duration: Duration::from_secs(2),
        }),
        ..FaultSettings::default()
    });
    let inc = h.incident(&[
        ("short_description", "Checkout down"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    h.publish(&inc, 0).await;
    let first = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(first.outcome, Outcome::Retried, "{first:#?}");
    assert!(first.error.unwrap().contains("503"));
    let second = h.nth_report(&inc.sys_id, 2).await;
    assert_eq!(second.outcome, Outcome::Acted, "{second:#?}");
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("2"));
    assert_eq!(h.our_notes(&inc.sys_id).len(), 2);
    assert!(h.dead_letters().await.is_empty());
}

#[tokio::test]
async fn an_exhausted_retry_budget_dead_letters() {
    let h = start(Setup {
        worker: WorkerConfig {
            quickstart: true,
            retry_delays: Vec::new(),
            ..WorkerConfig::default()
        },
        ..Setup::default()
    })
    .await;
    h.sim.set_faults(FaultSettings {
        forced: Some(ForcedStatus {
            status: 500,
            duration: Duration::from_secs(60),
        }),
        ..FaultSettings::default()
    });
    let inc = h.incident(&[
        ("short_description", "Checkout down"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    h.publish(&inc, 0).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::DeadLettered);
    let dead = h.dead_letters().await;
    assert_eq!(dead[0].reason, "retry_budget_exhausted");
    assert!(
        dead[0].error.as_deref().unwrap().contains("500"),
        "{dead:#?}"
    );
}
