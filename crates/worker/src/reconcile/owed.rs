//! Whether an action is owed: its `when`, and the rule that findings decide actions only in
//! the pass that investigated.

use nowpilot_model::State;
use nowpilot_model::plans::{Action, ActionKind, IncidentVars};
use serde_json::{Value as Json, json};

use super::PassError;

/// Whether a CEL source uses the identifier `findings` (outside string literals).
pub(crate) fn mentions_findings(source: &str) -> bool {
    let bytes = source.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\'' {
            // Skip the literal, honouring backslash escapes.
            i += 1;
            while let Some(&c) = bytes.get(i) {
                i += if c == b'\\' { 2 } else { 1 };
                if c == b {
                    break;
                }
            }
            continue;
        }
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            {
                i += 1;
            }
            let preceded_by_dot = start > 0 && bytes.get(start - 1) == Some(&b'.');
            if !preceded_by_dot && source.get(start..i) == Some("findings") {
                return true;
            }
            continue;
        }
        i += 1;
    }
    false
}

/// Whether the action's condition depends on this pass's investigation.
pub(crate) fn depends_on_findings(action: &Action) -> bool {
    action
        .when
        .as_ref()
        .is_some_and(|w| mentions_findings(w.source()))
}

/// Whether an action not yet done is owed now. `findings` is this pass's investigation, if
/// it ran; an action that depends on findings is not owed without them.
pub(crate) fn is_owed(
    plan: &str,
    action: &Action,
    state_at_start: &State,
    vars: &IncidentVars,
    findings: Option<&Json>,
) -> Result<bool, PassError> {
    // Acknowledging is owed only while the incident is New: a person who already moved it on
    // did the acknowledging.
    if matches!(action.kind, ActionKind::Acknowledge { .. }) && *state_at_start != State::New {
        return Ok(false);
    }
    let Some(when) = &action.when else {
        return Ok(true);
    };
    if depends_on_findings(action) && findings.is_none() {
        return Ok(false);
    }
    let empty = json!({});
    let findings = findings.unwrap_or(&empty);
    when.evaluate(&vars.with(&[("findings", findings)]))
        .map_err(|e| {
            PassError::permanent(
                "bad_plan",
                format!(
                    "plan {plan:?}, action {:?}: the condition `{}` cannot be evaluated for this incident: {e}",
                    action.id,
                    when.source()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_identifier_only() {
        assert!(mentions_findings("findings.probe.x.ok"));
        assert!(mentions_findings(
            "priority <= 2 && size(findings.related.changes) > 0"
        ));
        assert!(!mentions_findings("title.contains(\"findings\")"));
        assert!(!mentions_findings("title.contains('a \\' findings')"));
        assert!(!mentions_findings("incident.findings_count == \"1\""));
        assert!(!mentions_findings("display.findings == \"x\""));
        assert!(!mentions_findings("priority == 1"));
        assert!(!mentions_findings("\"unterminated findings"));
    }
}
