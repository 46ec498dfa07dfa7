//! Review mode: proposals, refusals, approvals by user and by group, rejection, expiry.

use std::time::Duration;

use nowpilot_worker::{Outcome, WorkerConfig};

use crate::common::*;

const PLANS: &str = r#"
[[plans]]
name = "vendor-fix"
[plans.intake]
title_contains_any = ["[review]"]
[[plans.actions]]
kind = "resolve"
close_code = "Solution provided"
close_notes = "Fixed by the vendor patch."
"#;

fn setup(ttl: Duration, user: (&'static str, &'static str)) -> Setup {
    Setup {
        worker: WorkerConfig {
            approvers: vec!["aiko.tanaka".into(), "group:Platform SRE".into()],
            proposal_ttl: ttl,
            ..WorkerConfig::default()
        },
        user,
        ..Setup::plans(PLANS)
    }
}

const DAY: Duration = Duration::from_secs(86_400);

/// Creates an incident and waits for its proposal; returns it with the proposal id.
async fn proposed(h: &Harness) -> (Created, String) {
    let inc = h.incident(&[(
        "short_description",
        "[review] vendor bug in the payment SDK",
    )]);
    h.publish(&inc, 0).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::Acted, "{report:#?}");
    assert_eq!(report.actions[0].result, "proposed");
    let notes = h.our_notes(&inc.sys_id);
    assert_eq!(notes.len(), 1);
    (inc, proposal_id(&notes[0]))
}

/// A person writes `text` as a work note and the event is delivered; waits for its pass.
async fn say(h: &Harness, inc: &Created, user: &str, text: &str) {
    let before = h.reports_for(&inc.sys_id).len();
    let v = h.write_as(user, &inc.sys_id, &[("work_notes", text)]);
    h.publish(inc, v).await;
    h.nth_report(&inc.sys_id, before + 1).await;
}

#[tokio::test]
async fn proposal_refusal_and_approval_by_a_user() {
    let h = start(setup(DAY, INTEGRATION)).await;
    let (inc, id) = proposed(&h).await;
    let proposal = &h.our_notes(&inc.sys_id)[0];
    assert!(proposal.starts_with("nowpilot proposes (plan vendor-fix, action resolve): resolve the incident with code \"Solution provided\"."), "{proposal}");
    assert!(
        proposal.contains(r#"changes: {"close_code":"Solution provided","close_notes":"Fixed by the vendor patch.","state":"6"}"#),
        "{proposal}"
    );
    assert!(proposal.contains("Approvers: aiko.tanaka, members of Platform SRE."));
    assert!(proposal.contains("Expires: "));
    assert!(proposal.lines().last().unwrap().starts_with(&format!(
        "[nowpilot proposal={id} plan=vendor-fix action=resolve"
    )));
    assert_eq!(
        h.get(&inc.sys_id).value("state"),
        Some("1"),
        "nothing done yet"
    );

    // Another event: the proposal is not posted again.
    say(&h, &inc, "maya.patel", "Vendor says the patch is deployed.").await;
    assert_eq!(h.our_notes(&inc.sys_id).len(), 1);

    // A non-approver: one refusal, nothing done, the proposal keeps waiting.
    say(
        &h,
        &inc,
        "carlos.mendes",
        &format!("/nowpilot approve {id}"),
    )
    .await;
    let notes = h.our_notes(&inc.sys_id);
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(
        notes[1].contains("carlos.mendes is not an approver"),
        "{}",
        notes[1]
    );
    assert!(notes[1].contains("The proposal is still waiting."));
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("1"));
    say(&h, &inc, "maya.patel", "still looking").await;
    assert_eq!(h.our_notes(&inc.sys_id).len(), 2, "said once");

    // An approver by user name.
    say(
        &h,
        &inc,
        "aiko.tanaka",
        &format!("Checked the logs. /nowpilot APPROVE {id}"),
    )
    .await;
    let stored = h.get(&inc.sys_id);
    assert_eq!(stored.value("state"), Some("6"));
    assert_eq!(stored.value("close_code"), Some("Solution provided"));
    assert_eq!(
        stored.value("close_notes"),
        Some("Fixed by the vendor patch.")
    );
    let notes = h.our_notes(&inc.sys_id);
    assert_eq!(notes.len(), 3);
    assert!(
        notes[2].contains(&format!("Approved by aiko.tanaka (proposal {id}).")),
        "{}",
        notes[2]
    );
    assert!(notes[2].contains("outcome=approved"));
    let last = h.reports_for(&inc.sys_id).pop().unwrap();
    assert_eq!(last.actions[0].result, "approved");
}

#[tokio::test]
async fn a_group_member_approves() {
    let h = start(setup(DAY, INTEGRATION)).await;
    let (inc, id) = proposed(&h).await;
    // maya.patel is in Platform SRE; the fallback journal names her "Maya Patel".
    say(&h, &inc, "maya.patel", &format!("/nowpilot approve {id}")).await;
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("6"));
    assert!(h.our_notes(&inc.sys_id)[1].contains("Approved by maya.patel"));
}

#[tokio::test]
async fn approval_with_the_structured_journal() {
    let h = start(setup(DAY, ADMIN)).await;
    let (inc, id) = proposed(&h).await;
    say(&h, &inc, "jonas.weber", &format!("/nowpilot approve {id}")).await;
    assert_eq!(
        h.get(&inc.sys_id).value("state"),
        Some("1"),
        "jonas is not an approver"
    );
    say(&h, &inc, "priya.raman", &format!("/nowpilot approve {id}")).await;
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("6"));
}

#[tokio::test]
async fn a_rejection_closes_the_proposal_for_good() {
    let h = start(setup(DAY, INTEGRATION)).await;
    let (inc, id) = proposed(&h).await;
    say(
        &h,
        &inc,
        "priya.raman",
        &format!("Not yet. /nowpilot reject {id}"),
    )
    .await;
    let notes = h.our_notes(&inc.sys_id);
    assert_eq!(notes.len(), 2);
    assert!(
        notes[1].contains("was rejected by priya.raman"),
        "{}",
        notes[1]
    );
    assert!(notes[1].contains("outcome=rejected"));
    let report = h.reports_for(&inc.sys_id).pop().unwrap();
    assert_eq!(report.actions[0].result, "rejected");

    say(&h, &inc, "aiko.tanaka", &format!("/nowpilot approve {id}")).await;
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("1"));
    assert_eq!(
        h.our_notes(&inc.sys_id).len(),
        2,
        "nothing proposed or done again"
    );
}

#[tokio::test]
async fn newest_answer_from_an_approver_wins() {
    let h = start(setup(DAY, INTEGRATION)).await;
    let inc = h.incident(&[("short_description", "[review] vendor bug")]);
    h.publish(&inc, 0).await;
    h.nth_report(&inc.sys_id, 1).await;
    let id = proposal_id(&h.our_notes(&inc.sys_id)[0]);
    // Both answers land before nowpilot's next pass.
    h.write_as(
        "aiko.tanaka",
        &inc.sys_id,
        &[("work_notes", &format!("/nowpilot approve {id}"))],
    );
    let v = h.write_as(
        "maya.patel",
        &inc.sys_id,
        &[("comments", &format!("/nowpilot reject {id}"))],
    );
    h.publish(&inc, v).await;
    h.nth_report(&inc.sys_id, 2).await;
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("1"));
    assert!(h.our_notes(&inc.sys_id)[1].contains("rejected by maya.patel"));
}

#[tokio::test]
async fn an_unanswered_proposal_expires() {
    let h = start(setup(Duration::from_secs(1), INTEGRATION)).await;
    let (inc, id) = proposed(&h).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    say(&h, &inc, "aiko.tanaka", &format!("/nowpilot approve {id}")).await;
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("1"), "too late");
    let notes = h.our_notes(&inc.sys_id);
    assert_eq!(notes.len(), 2);
    assert!(
        notes[1].contains("expired: nobody approved or rejected it within 1s"),
        "{}",
        notes[1]
    );
    assert!(notes[1].contains("outcome=expired"));
    say(&h, &inc, "aiko.tanaka", "anything new?").await;
    assert_eq!(h.our_notes(&inc.sys_id).len(), 2);
}
