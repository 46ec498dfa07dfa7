//! The work notes nowpilot writes, for a person reading them at 3 a.m.: short lines, the
//! important thing first, each step's result, links as plain URLs, no JSON dumps (except the
//! one `changes:` line of a proposal, which is the exact write an approval carries out).

use nowpilot_model::plans::{ActionKind, Plan, StepKind};
use serde_json::Value as Json;

use super::act::Prepared;

/// Longest quoted text (discussion entries, descriptions) in a note.
const QUOTE_CHARS: usize = 160;
/// Most items listed per section.
const LIST_ITEMS: usize = 5;

/// Text from ServiceNow records or people, made safe to repeat in a note: square brackets
/// become parentheses, so quoted text can neither forge a marker (`[nowpilot ...]`) nor switch
/// the journal into HTML (`[code]`).
pub(super) fn quote(text: &str) -> String {
    text.replace('[', "(").replace(']', ")")
}

fn clip(text: &str, max: usize) -> String {
    let text = quote(text);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn str_of<'a>(value: &'a Json, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

/// The note of an action that writes fields (or a plain work note).
pub(super) fn action(
    plan: &Plan,
    prepared: &Prepared,
    approved: Option<&str>,
    marker: &str,
) -> String {
    let mut lines = Vec::new();
    if prepared.done == "notes" {
        lines.push(format!("nowpilot (plan {}):", plan.name));
    } else {
        lines.push(format!("nowpilot {} (plan {}).", prepared.done, plan.name));
    }
    lines.extend(prepared.remarks.iter().cloned());
    lines.extend(approved.map(str::to_owned));
    lines.push(marker.to_owned());
    lines.join("\n")
}

/// The findings note of an investigation.
pub(super) fn findings(
    plan: &Plan,
    findings: &Json,
    instance: &str,
    approved: Option<&str>,
    marker: &str,
) -> String {
    let mut lines = vec![format!("nowpilot investigation (plan {})", plan.name)];
    let mut attention: Vec<String> = Vec::new();
    let mut body: Vec<String> = Vec::new();
    for step in &plan.steps {
        let path = step.findings_path();
        let value = path.split('.').fold(findings, |node, part| &node[part]);
        match &step.kind {
            StepKind::Related { change_window, .. } => {
                related(value, *change_window, instance, &mut attention, &mut body);
            }
            StepKind::HttpProbe { url, .. } => {
                let line = if value["ok"] == true {
                    format!(
                        "Probe {}: OK, HTTP {} in {} ms ({url})",
                        step.name, value["status"], value["latency_ms"]
                    )
                } else {
                    let line = format!(
                        "Probe {}: FAILING, {} ({url})",
                        step.name,
                        str_of(value, "error")
                    );
                    attention.push(format!(
                        "probe {} is failing: {}",
                        step.name,
                        str_of(value, "error")
                    ));
                    line
                };
                body.push(line);
            }
            StepKind::Prometheus { query, .. } => {
                let line = if value["value"].is_number() {
                    let verdict = if value["ok"] == true {
                        "holds"
                    } else {
                        "does not hold"
                    };
                    format!(
                        "Prometheus {}: {} {} {}: {verdict} (query: {})",
                        step.name,
                        value["value"],
                        str_of(value, "op"),
                        value["threshold"],
                        clip(query, QUOTE_CHARS)
                    )
                } else {
                    attention.push(format!("Prometheus query {} failed", step.name));
                    format!(
                        "Prometheus {}: no value, {}",
                        step.name,
                        str_of(value, "error")
                    )
                };
                body.push(line);
            }
            StepKind::Runbook { url, .. } => {
                let verified = match &value["verified"] {
                    Json::Bool(true) => ", verified",
                    Json::Bool(false) => ", NOT verified",
                    _ => "",
                };
                let line = if value["ok"] == true {
                    format!(
                        "Runbook {}: ran, HTTP {}{verified} ({url})",
                        step.name, value["status"]
                    )
                } else {
                    attention.push(format!("runbook {} did not work", step.name));
                    format!(
                        "Runbook {}: FAILED{verified}, {} ({url})",
                        step.name,
                        str_of(value, "error")
                    )
                };
                body.push(line);
            }
        }
    }
    if attention.is_empty() {
        lines.push(
            "Nothing alarming found: no recent changes on the CI, every check passed.".to_owned(),
        );
    } else {
        lines.push(format!("Look first: {}.", attention.join("; ")));
    }
    lines.extend(body);
    lines.extend(approved.map(str::to_owned));
    lines.push(marker.to_owned());
    lines.join("\n")
}

fn related(
    value: &Json,
    window: std::time::Duration,
    instance: &str,
    attention: &mut Vec<String>,
    body: &mut Vec<String>,
) {
    let hours = window.as_secs() / 3600;
    let window_text = if hours > 0 {
        format!("{hours}h")
    } else {
        format!("{}m", window.as_secs() / 60)
    };
    let ci = &value["ci"];
    let ci_name = quote(str_of(ci, "name"));
    if ci.is_object() {
        body.push(format!(
            "Configuration item: {ci_name} ({}{})",
            quote(str_of(ci, "class")),
            if str_of(ci, "environment").is_empty() {
                String::new()
            } else {
                format!(", {}", quote(str_of(ci, "environment")))
            }
        ));
    } else {
        body.push("Configuration item: none on the incident".to_owned());
    }
    let changes = value["changes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(newest) = changes.first() {
        // A change on the CI is the most common cause; it goes first.
        attention.insert(
            0,
            format!(
                "{} change(s) on {ci_name} in the last {window_text}, newest {} \"{}\"",
                changes.len(),
                quote(str_of(newest, "number")),
                clip(str_of(newest, "short_description"), 80)
            ),
        );
        body.push(format!("Changes on the CI in the last {window_text}:"));
        for change in changes.iter().take(LIST_ITEMS) {
            body.push(format!(
                "- {} {} ({}), {} to {}",
                quote(str_of(change, "number")),
                clip(str_of(change, "short_description"), 80),
                quote(str_of(change, "state")),
                change["start"].as_str().unwrap_or("?"),
                change["end"].as_str().unwrap_or("?"),
            ));
            body.push(format!(
                "  {instance}/change_request.do?sys_id={}",
                str_of(change, "sys_id")
            ));
        }
        if changes.len() > LIST_ITEMS {
            body.push(format!("- and {} more", changes.len() - LIST_ITEMS));
        }
    } else if ci.is_object() {
        body.push(format!("Changes on the CI in the last {window_text}: none"));
    }
    let open = value["open_incidents"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !open.is_empty() {
        body.push(format!("Other open incidents on the CI: {}", open.len()));
        for incident in open.iter().take(LIST_ITEMS) {
            body.push(format!(
                "- {} P{} {}: {instance}/incident.do?sys_id={}",
                quote(str_of(incident, "number")),
                quote(str_of(incident, "priority")),
                clip(str_of(incident, "short_description"), 80),
                str_of(incident, "sys_id"),
            ));
        }
    } else if ci.is_object() {
        body.push("Other open incidents on the CI: none".to_owned());
    }
    let parent = &value["parent"];
    let children = value["children"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let parent_text = if parent.is_object() {
        format!(
            "{} {}",
            str_of(parent, "number"),
            clip(str_of(parent, "short_description"), 80)
        )
    } else {
        "none".to_owned()
    };
    let children_text = if children.is_empty() {
        "none".to_owned()
    } else {
        children
            .iter()
            .map(|c| quote(str_of(c, "number")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    body.push(format!("Parent: {parent_text}. Children: {children_text}."));
    let discussion = value["discussion"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !discussion.is_empty() {
        body.push("Recent discussion:".to_owned());
        for entry in discussion {
            let kind = if str_of(entry, "kind") == "comments" {
                "comment"
            } else {
                "work note"
            };
            body.push(format!(
                "- {} {} ({kind}): {}",
                entry["at"].as_str().unwrap_or("?"),
                quote(str_of(entry, "author")),
                clip(str_of(entry, "text"), QUOTE_CHARS)
            ));
        }
    }
    if value["ok"] == false {
        let error = str_of(value, "error");
        attention.push(format!(
            "related records are incomplete: {}",
            clip(error, QUOTE_CHARS)
        ));
    }
}

/// A short words-only description of what an action kind does, for approved notes.
pub(super) fn kind_words(kind: &ActionKind) -> &'static str {
    match kind {
        ActionKind::Acknowledge { .. } => "acknowledged this incident",
        ActionKind::Investigate => "investigated",
        ActionKind::WorkNote { .. } => "posted the note",
        ActionKind::SetPriority { .. } => "changed impact and urgency",
        ActionKind::Resolve { .. } => "resolved this incident",
        ActionKind::Hold { .. } => "put this incident on hold",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nowpilot_model::plans::{Action, Autonomy, IntakeFilter, Step};
    use serde_json::json;

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            name: "checkout".into(),
            enabled: true,
            continue_matching: false,
            autonomy: Autonomy::Autonomous,
            intake: IntakeFilter::default(),
            steps,
            actions: vec![Action::simple(
                ActionKind::Investigate,
                Autonomy::Autonomous,
            )],
            builtin: false,
        }
    }

    #[test]
    fn findings_note_puts_the_important_thing_first() {
        let probe = Step {
            name: "health".into(),
            kind: StepKind::HttpProbe {
                url: "https://status.example.com/health".into(),
                method: "GET".into(),
                expect_status: 200,
                max_latency: None,
            },
            timeout: std::time::Duration::from_secs(5),
        };
        let p = plan(vec![Step::default_related(), probe]);
        let f = json!({
            "related": {"ok": true, "ci": {"name": "checkout-api", "class": "cmdb_ci_service", "environment": "production"},
                "changes": [{"number": "CHG0030001", "sys_id": "c1", "short_description": "Deploy v2", "state": "Review", "start": "2026-05-01 09:00:00", "end": "2026-05-01 09:20:00"}],
                "open_incidents": [], "parent": null, "children": [],
                "discussion": [{"author": "maya.patel", "at": "2026-05-01 09:30:00", "kind": "work_notes", "text": "Looking\n  at it"}]},
            "probe": {"health": {"ok": false, "status": 503, "latency_ms": 12, "error": "expected HTTP 200, got 503"}},
            "prometheus": {}, "runbook": {}
        });
        let note = findings(
            &p,
            &f,
            "https://acme.service-now.com",
            None,
            "[nowpilot plan=checkout action=investigate v=1]",
        );
        let lines: Vec<&str> = note.lines().collect();
        assert_eq!(lines[0], "nowpilot investigation (plan checkout)");
        assert!(
            lines[1].starts_with("Look first: 1 change(s) on checkout-api"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("probe health is failing"), "{}", lines[1]);
        assert!(note.contains("https://acme.service-now.com/change_request.do?sys_id=c1"));
        assert!(note.contains("Probe health: FAILING"));
        assert!(!note.contains('{'), "no JSON in the note:\n{note}");
        assert!(lines.last().unwrap().starts_with("[nowpilot plan=checkout"));
        assert!(lines.iter().all(|l| l.chars().count() <= 200), "{note}");
    }

    #[test]
    fn quoted_text_cannot_forge_markers() {
        let p = plan(vec![Step::default_related()]);
        let f = json!({"related": {"ok": true, "ci": {"name": "[nowpilot plan=checkout action=resolve v=1]", "class": "x"},
            "changes": [{"number": "CHG1", "sys_id": "c", "short_description": "[code]<b>x</b>[/code] [nowpilot plan=checkout action=hold]", "state": "New"}],
            "open_incidents": [], "parent": null, "children": [], "discussion": []}});
        let note = findings(
            &p,
            &f,
            "https://x",
            None,
            "[nowpilot plan=checkout action=investigate v=1]",
        );
        let found = crate::markers::parse(&note);
        assert_eq!(found.len(), 1, "{note}");
        assert_eq!(found[0].done_action(), Some(("checkout", "investigate")));
        assert!(!note.contains("[code]"));
    }
}
