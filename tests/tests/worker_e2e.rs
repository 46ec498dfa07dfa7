//! The worker end to end over real RabbitMQ: the simulator's business rule → ingress →
//! RabbitMQ → worker → ServiceNow (the simulator), asserting on the simulator's records.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use nowpilot_model::{EventEnvelope, EventSource};
use nowpilot_queue::{EventPublisher, EventQueue};
use nowpilot_snowsim::SimConfig;
use nowpilot_tests::pipeline::{INTEGRATION, Pipeline, Setup};
use nowpilot_worker::{Outcome, WorkerConfig};

const WAIT: Duration = Duration::from_secs(90);

fn quickstart(name: &'static str) -> Setup {
    let mut setup = Setup::new(name, "");
    setup.worker = WorkerConfig {
        quickstart: true,
        ..WorkerConfig::default()
    };
    setup
}

fn has_marker(note: &str, plan: &str, action: &str) -> bool {
    note.lines()
        .any(|l| l.starts_with("[nowpilot") && l.contains(&format!("plan={plan} action={action}")))
}

#[tokio::test]
async fn a_new_priority_2_incident_is_acknowledged_and_investigated_once() {
    let p = Pipeline::start(quickstart("e2e-worker-p2")).await;
    let ci = p.sim.sim.query("cmdb_ci", "name=checkout-api").unwrap()[0]
        .value_or_empty("sys_id")
        .to_owned();
    let sys_id = p.create(
        "maya.patel",
        &[
            ("short_description", "Checkout p95 latency above 2s"),
            ("impact", "1"),
            ("urgency", "2"),
            ("cmdb_ci", &ci),
        ],
    );
    assert_eq!(p.get(&sys_id).value("priority"), Some("2"));
    p.wait_until("acknowledgement and findings", WAIT, || {
        p.get(&sys_id).value("state") == Some("2") && p.our_notes(&sys_id).len() >= 2
    })
    .await;
    // Our own writes fired callbacks too; give them time to arrive and be dropped as echoes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notes = p.our_notes(&sys_id);
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
    // The findings name the change implemented on the CI.
    assert!(notes[1].value.contains("CHG"), "{}", notes[1].value);
    let incident = p.get(&sys_id);
    assert_eq!(incident.value("state"), Some("2"));
}

#[tokio::test]
async fn a_priority_4_incident_is_left_alone() {
    let p = Pipeline::start(quickstart("e2e-worker-p4")).await;
    let sys_id = p.create(
        "maya.patel",
        &[
            ("short_description", "Printer toner low"),
            ("impact", "3"),
            ("urgency", "2"),
        ],
    );
    assert_eq!(p.get(&sys_id).value("priority"), Some("4"));
    p.wait_until("a pass over the incident", WAIT, || {
        !p.reports_for(&sys_id).is_empty()
    })
    .await;
    let reports = p.reports_for(&sys_id);
    assert_eq!(reports[0].outcome, Outcome::NoPlan, "{reports:#?}");
    let patches = p
        .sim
        .sim
        .request_log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.sys_id.as_deref() == Some(&sys_id))
        .count();
    assert_eq!(patches, 0);
    assert!(p.our_notes(&sys_id).is_empty());
    assert_eq!(p.get(&sys_id).value("state"), Some("1"));
}

#[tokio::test]
async fn the_same_event_delivered_three_times_writes_once() {
    let p = Pipeline::start(quickstart("e2e-worker-dup")).await;
    // The business rule delivers the creation once; three more deliveries of the very same
    // event follow (a redelivery storm).
    let sys_id = p.create(
        "maya.patel",
        &[
            ("short_description", "Duplicate test"),
            ("impact", "2"),
            ("urgency", "1"),
        ],
    );
    let version: u64 = p
        .get(&sys_id)
        .value_or_empty("sys_mod_count")
        .parse()
        .unwrap();
    let envelope = EventEnvelope::observed(
        "incident",
        &sys_id,
        version,
        "",
        EventSource::Replay,
        chrono::Utc::now(),
    );
    for _ in 0..3 {
        p.queue.publish(&envelope).await.unwrap();
    }
    p.wait_until("the incident handled", WAIT, || {
        p.our_notes(&sys_id).len() >= 2
    })
    .await;
    // Let every delivery (the callback's and our three) be processed.
    p.wait_until("four deliveries settled", WAIT, || {
        p.reports_for(&sys_id)
            .iter()
            .map(|r| r.event_ids.len())
            .sum::<usize>()
            >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(p.our_notes(&sys_id).len(), 2, "{:#?}", p.our_notes(&sys_id));
}

const RESOLVE_PLANS: &str = r#"
[[plans]]
name = "auto-resolve"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["synthetic check"]
[[plans.actions]]
kind = "resolve"
close_code = "Solution provided"
close_notes = "The synthetic check recovered on its own."

[[plans]]
name = "bad-code"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["bad code"]
[[plans.actions]]
kind = "resolve"
close_code = "Fixed by magic"
close_notes = "nope"
"#;

#[tokio::test]
async fn a_resolve_plan_closes_with_a_valid_code_and_an_invalid_code_is_dead_lettered() {
    let p = Pipeline::start(Setup::new("e2e-worker-resolve", RESOLVE_PLANS)).await;
    let good = p.create(
        "maya.patel",
        &[("short_description", "Synthetic check failed: login")],
    );
    let bad = p.create("maya.patel", &[("short_description", "bad code example")]);
    p.wait_until("the good one resolved", WAIT, || {
        p.get(&good).value("state") == Some("6")
    })
    .await;
    let incident = p.get(&good);
    assert_eq!(incident.value("close_code"), Some("Solution provided"));
    assert_eq!(
        incident.value("close_notes"),
        Some("The synthetic check recovered on its own.")
    );

    let mut letters = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while letters.is_empty() && tokio::time::Instant::now() < deadline {
        letters = p.queue.dead_letters(10).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter.reason, "invalid_close_code");
    assert!(
        letter
            .error
            .as_deref()
            .unwrap()
            .contains("Solution provided"),
        "{letter:?}"
    );
    assert_eq!(letter.event.as_ref().unwrap().sys_id, bad);
    // Nothing was written to the bad one.
    assert_eq!(p.get(&bad).value("state"), Some("1"));
    assert!(p.our_notes(&bad).is_empty());
}

const REVIEW_PLANS: &str = r#"
[[plans]]
name = "resolve-with-review"
autonomy = "review"
[plans.intake]
title_contains_any = ["stale alert"]
[[plans.actions]]
kind = "resolve"
close_code = "Solution provided"
close_notes = "Alert source decommissioned."
"#;

#[tokio::test]
async fn a_review_proposal_is_carried_out_only_after_an_approver_approves() {
    let mut setup = Setup::new("e2e-worker-review", REVIEW_PLANS);
    setup.worker = WorkerConfig {
        approvers: vec!["maya.patel".into()],
        ..WorkerConfig::default()
    };
    let p = Pipeline::start(setup).await;
    let sys_id = p.create(
        "carlos.mendes",
        &[("short_description", "Stale alert from old host")],
    );
    p.wait_until("a proposal", WAIT, || !p.our_notes(&sys_id).is_empty())
        .await;
    let proposal = p.our_notes(&sys_id)[0].value.clone();
    let at = proposal
        .find("/nowpilot approve ")
        .expect("the proposal says how to approve");
    let id = &proposal[at + "/nowpilot approve ".len()..][..6];
    assert_eq!(p.get(&sys_id).value("state"), Some("1"), "nothing done yet");

    // Someone who is not an approver: refused, nothing done.
    p.update(
        "carlos.mendes",
        &sys_id,
        &[("work_notes", &format!("/nowpilot approve {id}"))],
    );
    p.wait_until("the refusal note", WAIT, || p.our_notes(&sys_id).len() >= 2)
        .await;
    assert!(p.our_notes(&sys_id)[1].value.contains("carlos.mendes"));
    assert_eq!(p.get(&sys_id).value("state"), Some("1"));

    // The approver: carried out exactly as proposed.
    p.update(
        "maya.patel",
        &sys_id,
        &[("work_notes", &format!("/nowpilot approve {id}"))],
    );
    p.wait_until("the resolution", WAIT, || {
        p.get(&sys_id).value("state") == Some("6")
    })
    .await;
    let incident = p.get(&sys_id);
    assert_eq!(incident.value("close_code"), Some("Solution provided"));
    assert_eq!(
        incident.value("close_notes"),
        Some("Alert source decommissioned.")
    );
    let last = p.our_notes(&sys_id).last().unwrap().value.clone();
    assert!(last.contains("maya.patel"), "{last}");
}

#[tokio::test]
async fn a_429_storm_delays_work_without_losing_it() {
    let mut setup = quickstart("e2e-worker-429");
    setup.sim = SimConfig {
        rate_limit: Some(12),
        rate_limit_window: Duration::from_secs(3),
        ..setup.sim
    };
    let p = Pipeline::start(setup).await;
    let mut incidents = Vec::new();
    for i in 0..6 {
        incidents.push(p.create(
            "maya.patel",
            &[
                ("short_description", &format!("Storm incident {i}")),
                ("impact", "1"),
                ("urgency", "2"),
            ],
        ));
    }
    p.wait_until(
        "every incident acknowledged and investigated",
        Duration::from_secs(240),
        || {
            incidents
                .iter()
                .all(|s| p.get(s).value("state") == Some("2") && p.our_notes(s).len() >= 2)
        },
    )
    .await;
    for s in &incidents {
        assert_eq!(
            p.our_notes(s).len(),
            2,
            "written once: {:#?}",
            p.our_notes(s)
        );
    }
    let limited = p
        .sim
        .sim
        .request_log()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert!(limited > 0, "the rate limit was hit");
    assert!(
        p.queue.dead_letters(10).await.unwrap().is_empty(),
        "nothing dead-lettered"
    );
    let _ = INTEGRATION;
}
