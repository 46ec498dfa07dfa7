//! Actions that change fields: resolve (valid, invalid code, data policy), set priority (and
//! the mismatch note), hold, acknowledge with assignment.

use nowpilot_worker::Outcome;

use crate::common::*;

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
name = "blank-code"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[blank-code]"]
[[plans.actions]]
kind = "resolve"
close_code = "Blank code"
close_notes = "Done."

[[plans]]
name = "raise"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[raise]"]
[[plans.actions]]
kind = "set_priority"
priority = 2
note = "Revenue impact confirmed."

[[plans]]
name = "park"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[park]"]
[[plans.actions]]
kind = "hold"
hold_reason = "awaiting change"

[[plans]]
name = "assign"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[assign]"]
[[plans.actions]]
kind = "acknowledge"
assignment_group = "Platform SRE"
assigned_to = "priya.raman"
note = "Paging the SRE on call."

[[plans]]
name = "unknown-group"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[unknown-group]"]
[[plans.actions]]
kind = "acknowledge"
assignment_group = "Nobody Team"
"#;

#[tokio::test]
async fn resolve_writes_state_6_with_the_instance_code_value() {
    let h = start(Setup::plans(PLANS)).await;
    let inc = h.incident(&[("short_description", "[auto-resolve] pool exhausted")]);
    h.publish(&inc, 0).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::Acted, "{report:#?}");
    let stored = h.get(&inc.sys_id);
    assert_eq!(stored.value("state"), Some("6"));
    assert_eq!(stored.value("close_code"), Some("Solution provided"));
    assert_eq!(
        stored.value("close_notes"),
        Some("Restarted the pool; checks are green.")
    );
    let notes = h.our_notes(&inc.sys_id);
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].starts_with("nowpilot resolved this incident with code \"Solution provided\""),
        "{}",
        notes[0]
    );
    assert!(has_marker(&notes[0], "auto-resolve", "resolve"));
    assert_eq!(h.patches(&inc.sys_id), 1, "change and note in one PATCH");
}

#[tokio::test]
async fn an_invalid_close_code_is_dead_lettered_with_nothing_written() {
    let h = start(Setup::plans(PLANS)).await;
    let inc = h.incident(&[("short_description", "[bad-code] something")]);
    h.publish(&inc, 0).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::DeadLettered);
    assert_eq!(report.reason.as_deref(), Some("invalid_close_code"));
    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "invalid_close_code");
    let error = dead[0].error.clone().unwrap();
    assert!(error.contains("\"Fixed it\""), "{error}");
    assert!(
        error.contains("Solution provided, Workaround provided"),
        "lists the valid codes: {error}"
    );
    assert_eq!(h.patches(&inc.sys_id), 0);
    assert!(h.journal(&inc.sys_id).is_empty());
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("1"));
}

#[tokio::test]
async fn a_data_policy_refusal_is_dead_lettered_with_servicenows_detail() {
    let h = start(Setup::plans(PLANS)).await;
    // A choice whose stored value is blank: it passes nowpilot's check, and the instance's
    // data policy refuses the resolve.
    h.sim
        .insert(
            "sys_choice",
            record(&[
                ("name", "incident"),
                ("element", "close_code"),
                ("value", " "),
                ("label", "Blank code"),
            ]),
        )
        .unwrap();
    let inc = h.incident(&[("short_description", "[blank-code] x")]);
    h.publish(&inc, 0).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.reason.as_deref(), Some("data_policy"), "{report:#?}");
    let dead = h.dead_letters().await;
    assert_eq!(dead[0].reason, "data_policy");
    assert!(
        dead[0]
            .error
            .as_deref()
            .unwrap()
            .contains("Data Policy Exception: mandatory: Resolution code"),
        "{dead:#?}"
    );
    assert!(
        h.journal(&inc.sys_id).is_empty(),
        "the refused PATCH wrote nothing"
    );
    assert_eq!(h.get(&inc.sys_id).value("state"), Some("1"));
}

#[tokio::test]
async fn set_priority_writes_impact_and_urgency_and_notes_a_mismatch() {
    let h = start(Setup::plans(PLANS)).await;
    let inc = h.incident(&[
        ("short_description", "[raise] checkout slow"),
        ("impact", "3"),
        ("urgency", "3"),
    ]);
    h.publish(&inc, 0).await;
    h.nth_report(&inc.sys_id, 1).await;
    let stored = h.get(&inc.sys_id);
    assert_eq!(stored.value("impact"), Some("1"));
    assert_eq!(stored.value("urgency"), Some("2"));
    assert_eq!(
        stored.value("priority"),
        Some("2"),
        "ServiceNow computed the target"
    );
    let notes = h.our_notes(&inc.sys_id);
    assert_eq!(notes.len(), 1, "no mismatch note: {notes:#?}");
    assert!(
        notes[0].contains("which give priority 2 - High"),
        "{}",
        notes[0]
    );
    assert!(notes[0].contains("Revenue impact confirmed."));

    // The instance's lookup changes after nowpilot cached it: (1, 2) now gives 3.
    let row = h.sys_id_of("dl_u_priority", "impact=1^urgency=2");
    h.sim
        .update("dl_u_priority", &row, record(&[("priority", "3")]))
        .unwrap();
    let second = h.incident(&[
        ("short_description", "[raise] payments slow"),
        ("impact", "3"),
        ("urgency", "3"),
    ]);
    h.publish(&second, 0).await;
    let report = h.nth_report(&second.sys_id, 1).await;
    assert!(
        report.actions.iter().any(|a| a.result == "mismatch"),
        "{report:#?}"
    );
    assert_eq!(h.get(&second.sys_id).value("priority"), Some("3"));
    let notes = h.our_notes(&second.sys_id);
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(
        notes[1].contains("ServiceNow computed priority 3 - Moderate"),
        "{}",
        notes[1]
    );
    assert!(notes[1].contains("note=priority_mismatch"));

    // A later event repeats neither note.
    let v = h.write_as("maya.patel", &second.sys_id, &[("work_notes", "ok")]);
    h.publish(&second, v).await;
    let again = h.nth_report(&second.sys_id, 2).await;
    assert_eq!(again.outcome, Outcome::NothingOwed);
    assert_eq!(h.our_notes(&second.sys_id).len(), 2);
}

#[tokio::test]
async fn hold_resolves_the_reason_label() {
    let h = start(Setup::plans(PLANS)).await;
    let inc = h.incident(&[("short_description", "[park] waiting for the network change")]);
    h.publish(&inc, 0).await;
    h.nth_report(&inc.sys_id, 1).await;
    let stored = h.get(&inc.sys_id);
    assert_eq!(stored.value("state"), Some("3"));
    assert_eq!(stored.value("hold_reason"), Some("5"));
    let notes = h.our_notes(&inc.sys_id);
    assert!(
        notes[0].contains("on hold (Awaiting Change)"),
        "{}",
        notes[0]
    );
}

#[tokio::test]
async fn acknowledge_assigns_by_name_and_skips_incidents_already_moved_on() {
    let h = start(Setup::plans(PLANS)).await;
    let inc = h.incident(&[("short_description", "[assign] db latency")]);
    h.publish(&inc, 0).await;
    h.nth_report(&inc.sys_id, 1).await;
    let stored = h.get(&inc.sys_id);
    assert_eq!(stored.value("state"), Some("2"));
    assert_eq!(
        stored.value("assignment_group"),
        Some(h.sys_id_of("sys_user_group", "name=Platform SRE").as_str())
    );
    assert_eq!(
        stored.value("assigned_to"),
        Some(h.sys_id_of("sys_user", "user_name=priya.raman").as_str())
    );
    assert!(h.our_notes(&inc.sys_id)[0].contains("Paging the SRE on call."));

    // Someone moved this one on before nowpilot saw it: no acknowledgement, no note.
    let moved = h.incident(&[("short_description", "[assign] other")]);
    let v = h.write_as("maya.patel", &moved.sys_id, &[("state", "2")]);
    h.publish(&moved, v).await;
    let report = h.nth_report(&moved.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::NothingOwed);
    assert_eq!(h.patches(&moved.sys_id), 0);
}

#[tokio::test]
async fn an_unknown_group_is_a_permanent_error() {
    let h = start(Setup::plans(PLANS)).await;
    let inc = h.incident(&[("short_description", "[unknown-group] x")]);
    h.publish(&inc, 0).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.reason.as_deref(), Some("unknown_group"));
    assert!(report.error.unwrap().contains("Nobody Team"));
    assert_eq!(h.patches(&inc.sys_id), 0);
}
