//! `nowpilot demo --exit`: the scenario must happen, and the proof is in the simulator's
//! records (states, journal notes and their authors, close codes, callback deliveries), read
//! here through the in-process handle, not in the demo's own output.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Output;
use std::time::Duration;

use nowpilot_model::Record;
use support::{INTEGRATION, PEOPLE, Sim, has_marker};

async fn demo(args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nowpilot"))
        .arg("demo")
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("NOWPILOT_LOG")
        .env_remove("NOWPILOT_CONFIG")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(240), output)
        .await
        .expect("the demo ended within 240 s")
        .expect("the demo ran")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The one incident whose short description is `title`.
fn incident(sim: &Sim, title: &str) -> Record {
    let found = sim
        .sim
        .query("incident", &format!("short_description={title}"))
        .unwrap();
    assert_eq!(found.len(), 1, "one incident titled {title:?}");
    found.into_iter().next().unwrap()
}

#[tokio::test]
async fn every_scenario_step_is_in_the_simulators_records() {
    let sim = Sim::start().await;
    let mut args = vec![
        "--exit".to_owned(),
        "--simulator".to_owned(),
        sim.url.clone(),
        "--step-timeout".to_owned(),
        "60s".to_owned(),
        "--sim-user".to_owned(),
        format!("{}:{}", INTEGRATION.0, INTEGRATION.1),
    ];
    for (name, password) in PEOPLE {
        args.push("--sim-user".to_owned());
        args.push(format!("{name}:{password}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = demo(&args).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    for (_, password) in PEOPLE {
        assert!(!all.contains(password), "passwords are never printed");
    }

    // Every change reached nowpilot through the business rule and the ingress (202 = queued).
    let delivered = |sys_id: &str| {
        sim.sim
            .callback_log()
            .iter()
            .filter(|c| c.sys_id == sys_id && c.status == Some(202))
            .count()
    };

    // 1. The priority-2 checkout incident: acknowledged and investigated, once.
    let checkout = incident(
        &sim,
        "Checkout API slow: p95 latency above 2s after the deploy",
    );
    let id = checkout.value_or_empty("sys_id").to_owned();
    assert_eq!(checkout.value("priority"), Some("2"));
    assert_eq!(checkout.value("state"), Some("2"), "In Progress");
    assert_eq!(
        checkout.value("cmdb_ci"),
        Some(sim.ci("checkout-api").as_str())
    );
    let notes = sim.our_notes(&id);
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(has_marker(
        &notes[0].value,
        "checkout-investigation",
        "acknowledge"
    ));
    let findings = &notes[1].value;
    assert!(has_marker(
        findings,
        "checkout-investigation",
        "investigate"
    ));
    // The change on the CI (seeded: "Deploy checkout-api v2.14.0") and the probe result.
    assert!(
        findings.contains("CHG") && findings.contains("checkout-api v2.14.0"),
        "{findings}"
    );
    assert!(
        findings.contains("Probe checkout_health: OK, HTTP 200"),
        "{findings}"
    );
    assert!(delivered(&id) >= 1);

    // 2. The priority-4 incident: seen, left alone.
    let routine = incident(&sim, "Printer on floor 3 is out of toner");
    let id = routine.value_or_empty("sys_id").to_owned();
    assert_eq!(routine.value("priority"), Some("4"));
    assert_eq!(routine.value("state"), Some("1"), "still New");
    assert!(sim.our_notes(&id).is_empty());
    assert!(delivered(&id) >= 1);
    let patches = sim
        .sim
        .request_log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.sys_id.as_deref() == Some(id.as_str()))
        .count();
    assert_eq!(patches, 0, "nothing was written to it");

    // 3. The priority-1 payments incident: runbook, verification, proposal, approval,
    //    resolution with a valid close code.
    let payments = incident(&sim, "Payments API returns 503 for every request");
    let id = payments.value_or_empty("sys_id").to_owned();
    assert_eq!(payments.value("priority"), Some("1"));
    assert_eq!(payments.value("state"), Some("6"), "Resolved");
    let code = payments.value_or_empty("close_code").to_owned();
    assert_eq!(code, "Solution provided");
    let valid = sim
        .sim
        .query(
            "sys_choice",
            &format!("name=incident^element=close_code^value={code}"),
        )
        .unwrap();
    assert_eq!(
        valid.len(),
        1,
        "the close code is one of the instance's choices"
    );
    assert!(!payments.value_or_empty("close_notes").is_empty());
    let journal = sim.sim.journal("incident", &id);
    let ours: Vec<&str> = journal
        .iter()
        .filter(|e| e.created_by == INTEGRATION.0)
        .map(|e| e.value.as_str())
        .collect();
    assert!(
        ours.iter()
            .any(|n| has_marker(n, "payments-recovery", "acknowledge"))
    );
    let findings = ours
        .iter()
        .find(|n| has_marker(n, "payments-recovery", "investigate"))
        .expect("a findings note");
    assert!(
        findings.contains("probe payments_health is failing"),
        "{findings}"
    );
    assert!(
        findings.contains("Runbook restart_payments: ran, HTTP 200, verified"),
        "{findings}"
    );
    let proposal = ours
        .iter()
        .find(|n| n.contains("/nowpilot approve "))
        .expect("a proposal note");
    let at = proposal.find("/nowpilot approve ").unwrap();
    let proposal_id = &proposal[at + "/nowpilot approve ".len()..][..6];
    let approval = journal
        .iter()
        .find(|e| {
            e.value
                .contains(&format!("/nowpilot approve {proposal_id}"))
                && e.created_by != INTEGRATION.0
        })
        .expect("an approval in the work notes");
    assert_eq!(approval.created_by, "maya.patel");
    assert_eq!(approval.element, "work_notes");
    assert!(
        ours.iter()
            .any(|n| n.contains(&format!("proposal={proposal_id}"))
                && n.contains("outcome=approved"))
    );
    assert!(
        delivered(&id) >= 2,
        "the creation and the approval went through the ingress"
    );

    // The demo's own summary agrees (checked last: the records are the proof).
    assert!(all.contains("Every step happened."), "{all}");
}

#[tokio::test]
async fn the_newcomers_command_succeeds_with_plain_output() {
    let out = demo(&["--exit"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("ServiceNow is connected"), "{all}");
    assert!(all.contains("plan checkout-investigation matched"), "{all}");
    assert!(all.contains("resolve approved"), "{all}");
    assert!(all.contains("Every step happened."), "{all}");
    assert!(
        !all.contains('\u{1b}'),
        "NO_COLOR and a pipe: no escape codes"
    );
}

#[tokio::test]
async fn a_simulator_without_the_people_is_refused_clearly() {
    let out = demo(&["--exit", "--simulator", "http://127.0.0.1:9"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--sim-user nowpilot.integration:PASSWORD"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn an_integration_user_who_cannot_read_the_journal_is_refused_with_the_fix() {
    use nowpilot_snowsim::{SimConfig, SimUser, Simulator};
    let mut users = vec![SimUser::new(INTEGRATION.0, INTEGRATION.1)];
    users.extend(PEOPLE.iter().map(|(n, p)| SimUser::new(*n, *p)));
    // The seeded role of the integration user is itil: no structured journal.
    let sim = Simulator::new(SimConfig {
        seed_demo: true,
        users,
        ..SimConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(nowpilot_snowsim::run(sim.clone(), listener, stop.clone()));
    let integration = format!("{}:{}", INTEGRATION.0, INTEGRATION.1);
    let maya = format!("{}:{}", PEOPLE[0].0, PEOPLE[0].1);
    let carlos = format!("{}:{}", PEOPLE[1].0, PEOPLE[1].1);
    let out = demo(&[
        "--exit",
        "--simulator",
        &url,
        "--sim-user",
        &integration,
        "--sim-user",
        &maya,
        "--sim-user",
        &carlos,
    ])
    .await;
    stop.cancel();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--user-roles nowpilot.integration=admin"),
        "{}",
        text(&out)
    );
    // Nothing was played: only the four seeded incidents exist.
    assert_eq!(sim.query("incident", "").unwrap().len(), 4);
}
