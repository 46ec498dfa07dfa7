//! Preparing and carrying out actions: the field changes each kind writes, checked against
//! the instance first (close codes, hold reasons, groups, users, the priority matrix).

use chrono::Utc;
use nowpilot_model::plans::{Action, ActionKind, Plan};
use nowpilot_model::{Priority, Record};
use nowpilot_servicenow::MatrixSource;
use serde_json::{Map, Value as Json};

use super::notes;
use super::{Pass, PassError};
use crate::lookups::match_choice;
use crate::markers;
use crate::steps::Subject;

/// An action ready to write: its field changes and words for notes.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The field changes (stored values), without the work note.
    pub(crate) changes: Map<String, Json>,
    /// What it would do, as a clause for proposals ("resolve the incident with code ...").
    pub(crate) summary: String,
    /// What it did, as a clause for its note ("resolved this incident with code ...").
    pub(crate) done: String,
    /// Extra lines for the note (the plan's `note`, matrix caveats).
    pub(crate) remarks: Vec<String>,
}

fn set(changes: &mut Map<String, Json>, field: &str, value: &str) {
    changes.insert(field.to_owned(), Json::String(value.to_owned()));
}

/// The fields an approved proposal of this kind may write; anything else in a stored
/// proposal is refused.
pub(crate) fn writable_fields(kind: &ActionKind) -> &'static [&'static str] {
    match kind {
        ActionKind::Acknowledge { .. } => &["state", "assignment_group", "assigned_to"],
        ActionKind::SetPriority { .. } => &["impact", "urgency"],
        ActionKind::Resolve { .. } => &["state", "close_code", "close_notes"],
        ActionKind::Hold { .. } => &["state", "hold_reason"],
        ActionKind::Investigate | ActionKind::WorkNote { .. } => &[],
    }
}

impl Pass<'_> {
    /// Works out an action's changes, checking its parameters against the instance.
    pub(super) async fn prepare(
        &self,
        plan: &Plan,
        action: &Action,
    ) -> Result<Prepared, PassError> {
        let mut changes = Map::new();
        let mut remarks = Vec::new();
        let where_ = || format!("plan {:?}, action {:?}", plan.name, action.id);
        let summary = match &action.kind {
            ActionKind::Acknowledge {
                assignment_group,
                assigned_to,
                note,
            } => {
                set(&mut changes, "state", "2");
                let mut summary = "acknowledge the incident (state New → In Progress)".to_owned();
                let mut done = "acknowledged this incident (state New → In Progress)".to_owned();
                if let Some(group) = assignment_group {
                    let id = self.lookups().resolve_group(group).await?.ok_or_else(|| {
                        PassError::permanent(
                            "unknown_group",
                            format!("{}: there is no ServiceNow group named {group:?}", where_()),
                        )
                    })?;
                    set(&mut changes, "assignment_group", &id);
                    summary.push_str(&format!(", assign it to group {group}"));
                    done.push_str(&format!(", assigned it to group {group}"));
                }
                if let Some(user) = assigned_to {
                    let id = self.lookups().resolve_user(user).await?.ok_or_else(|| {
                        PassError::permanent(
                            "unknown_user",
                            format!("{}: there is no ServiceNow user named {user:?}", where_()),
                        )
                    })?;
                    set(&mut changes, "assigned_to", &id);
                    summary.push_str(&format!(", assign it to {user}"));
                    done.push_str(&format!(", assigned it to {user}"));
                }
                remarks.extend(note.clone());
                (summary, done)
            }
            ActionKind::Investigate => {
                let steps: Vec<String> = plan
                    .steps
                    .iter()
                    .map(|s| s.findings_path().replace('.', " "))
                    .collect();
                (
                    format!("run the investigation ({})", steps.join(", ")),
                    "investigated".to_owned(),
                )
            }
            ActionKind::WorkNote { text } => {
                remarks.push(text.clone());
                ("post a work note".to_owned(), "notes".to_owned())
            }
            ActionKind::SetPriority { priority, note } => {
                let report = self.lookups().priority_matrix().await;
                let (impact, urgency) = report
                    .matrix
                    .choose(*priority, self.incident.impact(), self.incident.urgency())
                    .ok_or_else(|| {
                        PassError::permanent(
                            "priority_unreachable",
                            format!(
                                "{}: no impact and urgency give priority {priority} in the instance's priority lookup",
                                where_()
                            ),
                        )
                    })?;
                set(&mut changes, "impact", impact.as_value());
                set(&mut changes, "urgency", urgency.as_value());
                match &report.source {
                    MatrixSource::Instance { .. } => {}
                    MatrixSource::DefaultEmpty => remarks.push(
                        "The instance's priority lookup (dl_u_priority) has no active rows; nowpilot used ServiceNow's default matrix.".to_owned(),
                    ),
                    MatrixSource::DefaultUnreadable { reason } => remarks.push(format!(
                        "nowpilot could not read the instance's priority lookup (dl_u_priority) and used ServiceNow's default matrix: {reason}"
                    )),
                }
                remarks.extend(note.clone());
                (
                    format!(
                        "set impact {impact} and urgency {urgency}, which give priority {priority}"
                    ),
                    format!(
                        "set impact {impact} and urgency {urgency}, which give priority {priority}"
                    ),
                )
            }
            ActionKind::Resolve {
                close_code,
                close_notes,
            } => {
                let codes = self.lookups().close_codes().await?;
                let code = match_choice(&codes, close_code).ok_or_else(|| {
                    let valid: Vec<&str> = codes.iter().map(|c| c.label.as_str()).collect();
                    PassError::permanent(
                        "invalid_close_code",
                        format!(
                            "{}: close code {close_code:?} is not a resolution code of this instance; valid codes: {}",
                            where_(),
                            if valid.is_empty() { "(none readable)".to_owned() } else { valid.join(", ") }
                        ),
                    )
                })?;
                set(&mut changes, "state", "6");
                set(&mut changes, "close_code", &code.value);
                set(&mut changes, "close_notes", close_notes);
                remarks.push(format!("Resolution notes: {close_notes}"));
                (
                    format!("resolve the incident with code {:?}", code.label),
                    format!("resolved this incident with code {:?}", code.label),
                )
            }
            ActionKind::Hold { hold_reason, note } => {
                let reasons = self.lookups().hold_reasons().await?;
                let reason = match_choice(&reasons, hold_reason).ok_or_else(|| {
                    let valid: Vec<&str> = reasons.iter().map(|c| c.label.as_str()).collect();
                    PassError::permanent(
                        "invalid_hold_reason",
                        format!(
                            "{}: hold reason {hold_reason:?} is not an on-hold reason of this instance; valid reasons: {}",
                            where_(),
                            if valid.is_empty() { "(none readable)".to_owned() } else { valid.join(", ") }
                        ),
                    )
                })?;
                set(&mut changes, "state", "3");
                set(&mut changes, "hold_reason", &reason.value);
                remarks.extend(note.clone());
                (
                    format!("put the incident on hold ({})", reason.label),
                    format!("put this incident on hold ({})", reason.label),
                )
            }
        };
        let (summary, done) = summary;
        Ok(Prepared {
            changes,
            summary,
            done,
            remarks,
        })
    }

    /// Carries out an autonomous action: one PATCH with its changes and note.
    pub(super) async fn perform(
        &mut self,
        plan: &Plan,
        action: &Action,
        prepared: Prepared,
        findings: &mut Option<Json>,
    ) -> Result<(), PassError> {
        let marker = markers::action(&plan.name, &action.id, self.version());
        self.carry_out(plan, action, prepared, None, marker, findings)
            .await
    }

    /// Writes an action (autonomous, or approved with `approval = (proposal id, approver)`).
    pub(super) async fn carry_out(
        &mut self,
        plan: &Plan,
        action: &Action,
        prepared: Prepared,
        approval: Option<(&str, &str)>,
        marker: String,
        findings: &mut Option<Json>,
    ) -> Result<(), PassError> {
        let kind = action.kind.name().as_str();
        let approved_line = approval.map(|(id, by)| format!("Approved by {by} (proposal {id})."));
        let result = if approval.is_some() {
            "approved"
        } else {
            "done"
        };
        if matches!(action.kind, ActionKind::Investigate) {
            let subject = Subject {
                client: &self.client,
                incident: &self.incident,
                history: &self.history,
                event_id: &self.job.event_id,
            };
            let found = self.ctx.investigator.investigate(plan, &subject).await?;
            let note = notes::findings(
                plan,
                &found,
                self.client.instance().as_str(),
                approved_line.as_deref(),
                &marker,
            );
            *findings = Some(found);
            return match self.write(Map::new(), note).await {
                Ok(_) => {
                    self.report(&plan.name, &action.id, kind, result, "posted the findings");
                    Ok(())
                }
                Err(e) => {
                    self.report(&plan.name, &action.id, kind, "failed", e.message.clone());
                    Err(e)
                }
            };
        }
        let note = notes::action(plan, &prepared, approved_line.as_deref(), &marker);
        let written = match self.write(prepared.changes.clone(), note).await {
            Ok(record) => record,
            Err(e) => {
                self.report(&plan.name, &action.id, kind, "failed", e.message.clone());
                return Err(e);
            }
        };
        self.report(&plan.name, &action.id, kind, result, prepared.done.clone());
        match &action.kind {
            ActionKind::Acknowledge { .. } => {
                if let Some(elapsed) = self.since_opened() {
                    crate::telemetry::mtta(elapsed);
                }
            }
            ActionKind::Resolve { .. } => {
                if let Some(elapsed) = self.since_opened() {
                    crate::telemetry::time_to_resolve(elapsed);
                }
            }
            ActionKind::SetPriority { priority, .. } => {
                self.check_priority(plan, action, *priority, &written)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Time since the incident was opened, for MTTA and time to resolve. `None` without an
    /// `opened_at`, or when it lies in the future (clock skew): no sample beats a wrong one.
    fn since_opened(&self) -> Option<std::time::Duration> {
        let opened = self.incident.opened_at()?;
        (Utc::now() - opened).to_std().ok()
    }

    /// After writing impact and urgency: did ServiceNow compute the target priority? If not,
    /// one follow-up note says so (its own marker keeps it from repeating).
    async fn check_priority(
        &mut self,
        plan: &Plan,
        action: &Action,
        target: Priority,
        written: &Record,
    ) -> Result<(), PassError> {
        let computed = written.value("priority").and_then(Priority::from_value);
        if computed == Some(target) {
            return Ok(());
        }
        let shown = computed.map_or_else(
            || format!("{:?}", written.value_or_empty("priority")),
            |p| p.to_string(),
        );
        let note = format!(
            "nowpilot set impact {} and urgency {} for priority {target}, but ServiceNow computed priority {shown} (plan {}).\n\
             The instance's priority lookup differs from the one nowpilot read; check System Policy > Rules > Priority Lookup Rules.\n{}",
            written.value_or_empty("impact"),
            written.value_or_empty("urgency"),
            plan.name,
            markers::follow_up(&plan.name, &action.id, "priority_mismatch", self.version()),
        );
        self.write(Map::new(), note).await?;
        // Not counted again: the action itself was counted as done.
        self.actions.push(crate::report::ActionReport {
            plan: plan.name.clone(),
            action: action.id.clone(),
            kind: "set_priority",
            result: "mismatch",
            detail: format!("ServiceNow computed priority {shown}, not {target}"),
        });
        Ok(())
    }
}
