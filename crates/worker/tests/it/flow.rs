//! The main flow: Quickstart on a new High incident, untouched incidents, duplicates and
//! coalescing, the disconnected state, and shutdown.

use std::time::Duration;

use nowpilot_queue::EventQueue;
use nowpilot_snowsim::FaultSettings;
use nowpilot_worker::Outcome;

use crate::common::*;

#[tokio::test]
async fn quickstart_acknowledges_and_investigates_a_new_high_incident() {
    let h = start(Setup::quickstart()).await;
    let ci = h.sys_id_of("cmdb_ci", "name=checkout-api");
    let inc = h.incident(&[
        ("short_description", "Checkout failing for EU customers"),
        ("impact", "1"),
        ("urgency", "2"),
        ("cmdb_ci", &ci),
    ]);
    assert_eq!(h.get(&inc.sys_id).value("priority"), Some("2"));
    h.write_as(
        "maya.patel",
        &inc.sys_id,
        &[("comments", "Customers see a 502 at payment.")],
    );
    h.publish(&inc, 1).await;

    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::Acted, "{report:#?}");
    assert_eq!(report.plans, ["quickstart"]);

    let stored = h.get(&inc.sys_id);
    assert_eq!(stored.value("state"), Some("2"), "In Progress");
    let notes = h.our_notes(&inc.sys_id);
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(
        notes[0].starts_with("nowpilot acknowledged this incident"),
        "{}",
        notes[0]
    );
    assert!(has_marker(&notes[0], "quickstart", "acknowledge"));
    let findings = &notes[1];
    assert!(has_marker(findings, "quickstart", "investigate"));
    assert!(
        findings.starts_with("nowpilot investigation (plan quickstart)"),
        "{findings}"
    );
    // The important thing first: the deploy on the CI 40 minutes ago.
    let second = findings.lines().nth(1).unwrap();
    assert!(
        second.starts_with("Look first: 1 change(s) on checkout-api"),
        "{findings}"
    );
    assert!(
        findings.contains("Deploy checkout-api v2.14.0"),
        "{findings}"
    );
    assert!(
        findings.contains(&format!("{}/change_request.do?sys_id=", h.base)),
        "{findings}"
    );
    assert!(
        findings.contains("Other open incidents on the CI: 1"),
        "{findings}"
    );
    assert!(
        findings.contains("Customers see a 502 at payment."),
        "{findings}"
    );
    assert_eq!(h.patches(&inc.sys_id), 2);
    assert!(h.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_low_priority_incident_is_untouched() {
    let h = start(Setup::quickstart()).await;
    let inc = h.incident(&[
        ("short_description", "Printer toner low"),
        ("impact", "2"),
        ("urgency", "3"),
    ]);
    assert_eq!(h.get(&inc.sys_id).value("priority"), Some("4"));
    h.publish(&inc, inc.version).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::NoPlan);
    assert_eq!(h.patches(&inc.sys_id), 0);
    assert!(h.journal(&inc.sys_id).is_empty());
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("1"));
}

#[tokio::test]
async fn terminal_incidents_get_nothing() {
    let h = start(Setup::quickstart()).await;
    let inc = h.incident(&[
        ("short_description", "x"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    let v = h.write_as(
        "maya.patel",
        &inc.sys_id,
        &[
            ("state", "6"),
            ("close_code", "Duplicate"),
            ("close_notes", "dup"),
        ],
    );
    h.publish(&inc, v).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::Terminal);
    assert_eq!(h.patches(&inc.sys_id), 0);
}

#[tokio::test]
async fn duplicates_are_written_once() {
    let h = start(Setup::quickstart()).await;
    let inc = h.incident(&[
        ("short_description", "Checkout down"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    for _ in 0..3 {
        h.publish(&inc, 0).await;
    }
    h.wait_for(&inc.sys_id, "three events settled", |r| {
        r.iter().map(|p| p.event_ids.len()).sum::<usize>() >= 3
    })
    .await;
    let notes = h.our_notes(&inc.sys_id);
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert_eq!(h.patches(&inc.sys_id), 2);
    let outcomes: Vec<Outcome> = h
        .reports_for(&inc.sys_id)
        .iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(outcomes[0], Outcome::Acted);
    assert!(
        outcomes[1..]
            .iter()
            .all(|o| matches!(o, Outcome::Stale | Outcome::NothingOwed)),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn twenty_events_at_once_are_coalesced_and_never_overlap() {
    let mut setup = Setup::quickstart();
    // Latency makes overlapping passes visible in the request log, were there any.
    setup.sim.faults = FaultSettings {
        latency: Duration::from_millis(15),
        ..FaultSettings::default()
    };
    let h = start(setup).await;
    let inc = h.incident(&[
        ("short_description", "Checkout down"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    let other = h.incident(&[
        ("short_description", "Payments down"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    for v in 0..20 {
        h.publish(&inc, v).await;
    }
    h.publish(&other, 0).await;
    h.wait_for(&inc.sys_id, "twenty events settled", |r| {
        r.iter().map(|p| p.event_ids.len()).sum::<usize>() >= 20
    })
    .await;
    h.wait_for(&other.sys_id, "the other incident", |r| !r.is_empty())
        .await;

    assert_eq!(h.our_notes(&inc.sys_id).len(), 2);
    assert_eq!(h.patches(&inc.sys_id), 2);
    assert_eq!(h.our_notes(&other.sys_id).len(), 2);
    let reports = h.reports_for(&inc.sys_id);
    assert!(
        reports.iter().any(|r| r.event_ids.len() > 1),
        "deliveries waiting behind the first pass are coalesced: {reports:#?}"
    );
    assert!(reports.len() < 20, "{} passes for 20 events", reports.len());
    let mut requests = h.requests(&inc.sys_id);
    requests.sort_by_key(|r| r.start_us);
    for pair in requests.windows(2) {
        assert!(
            pair[1].start_us >= pair[0].end_us,
            "two requests on one incident overlap: {pair:#?}"
        );
    }
}

#[tokio::test]
async fn events_wait_while_disconnected_and_proceed_after_connect() {
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.reports().is_empty(), "nothing settled while disconnected");
    assert!(h.requests(&inc.sys_id).is_empty());
    assert!(h.dead_letters().await.is_empty());

    h.manager.connect(connection(&h.base, ADMIN)).await.unwrap();
    h.wait_for(&inc.sys_id, "both events after connect", |r| {
        r.iter().map(|p| p.event_ids.len()).sum::<usize>() >= 2
    })
    .await;
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("2"));
    let notes: Vec<_> = h
        .journal(&inc.sys_id)
        .into_iter()
        .filter(|e| e.created_by == "admin")
        .collect();
    assert_eq!(notes.len(), 2);
    assert!(h.dead_letters().await.is_empty());
}

#[tokio::test]
async fn the_structured_journal_works_too() {
    // As admin, sys_journal_field is readable: authors are user names, not display names.
    let h = start(Setup {
        user: ADMIN,
        ..Setup::quickstart()
    })
    .await;
    let inc = h.incident(&[
        ("short_description", "Checkout down"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    h.publish(&inc, 0).await;
    h.nth_report(&inc.sys_id, 1).await;
    let v = h.write_as(
        "maya.patel",
        &inc.sys_id,
        &[("work_notes", "Looking into it.")],
    );
    h.publish(&inc, v).await;
    let second = h.nth_report(&inc.sys_id, 2).await;
    assert_eq!(second.outcome, Outcome::NothingOwed, "{second:#?}");
    assert_eq!(h.our_notes(&inc.sys_id).len(), 2);
}

#[tokio::test]
async fn echoes_of_own_writes_are_stale() {
    let h = start(Setup::quickstart()).await;
    let inc = h.incident(&[
        ("short_description", "Checkout down"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    h.publish(&inc, 0).await;
    h.nth_report(&inc.sys_id, 1).await;
    let version: u64 = h
        .get(&inc.sys_id)
        .value("sys_mod_count")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(version, 2, "two writes");
    // The callbacks of nowpilot's own two writes.
    h.publish(&inc, 1).await;
    h.publish(&inc, 2).await;
    let reports = h.wait_for(&inc.sys_id, "echoes", |r| r.len() >= 3).await;
    assert!(
        reports[1..].iter().all(|r| r.outcome == Outcome::Stale),
        "{reports:#?}"
    );
    assert_eq!(h.patches(&inc.sys_id), 2);
    // One pass: the read (whose display values also serve the journal) and its two writes.
    assert_eq!(
        h.requests(&inc.sys_id).len(),
        3,
        "no pass ran for the echoes"
    );
}

#[tokio::test]
async fn shutdown_requeues_waiting_events() {
    let mut h = start(Setup {
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
    h.stop().await.unwrap();
    let reports = h.reports_for(&inc.sys_id);
    assert!(!reports.is_empty());
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Requeued),
        "{reports:#?}"
    );
    // Both events are back in the queue for the next worker, none dead, none settled.
    let depths = h.queue.depths().await.unwrap();
    assert_eq!(depths.partitions.iter().sum::<u64>(), 2, "{depths:?}");
    assert!(h.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_deleted_incident_is_dead_lettered_as_not_found() {
    let h = start(Setup::quickstart()).await;
    let inc = h.incident(&[
        ("short_description", "x"),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    h.sim.delete("incident", &inc.sys_id).unwrap();
    h.publish(&inc, 0).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::DeadLettered);
    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "not_found");
    assert!(
        dead[0].error.as_deref().unwrap().contains("ACL hides it"),
        "{dead:#?}"
    );
}
