//! The `related` step: the incident's configuration item, recent changes on it, other open
//! incidents on it, parent and children, and the recent discussion.

use std::time::Duration;

use chrono::Utc;
use nowpilot_model::{Incident, Record};
use nowpilot_servicenow::{Client, Error, JournalKind};
use serde_json::{Value as Json, json};

use crate::history::History;

/// Change request states (`change_request.state`), out of the box.
pub fn change_state_label(value: &str) -> &str {
    match value.trim() {
        "-5" => "New",
        "-4" => "Assess",
        "-3" => "Authorize",
        "-2" => "Scheduled",
        "-1" => "Implement",
        "0" => "Review",
        "3" => "Closed",
        "4" => "Canceled",
        other => other,
    }
}

fn text(record: &Record, field: &str) -> Json {
    Json::String(record.value_or_empty(field).to_owned())
}

fn first_set(record: &Record, fields: &[&str]) -> Json {
    fields
        .iter()
        .map(|f| record.value_or_empty(f))
        .find(|v| !v.is_empty())
        .map_or(Json::Null, |v| Json::String(v.to_owned()))
}

fn incident_summary(record: &Record) -> Json {
    json!({
        "number": text(record, "number"),
        "sys_id": text(record, "sys_id"),
        "short_description": text(record, "short_description"),
        "state": text(record, "state"),
        "priority": text(record, "priority"),
    })
}

fn kind_name(kind: &JournalKind) -> &str {
    match kind {
        JournalKind::WorkNotes => "work_notes",
        JournalKind::Comments => "comments",
        JournalKind::Other(other) => other,
    }
}

/// Gathers the related records. A ServiceNow error that is worth retrying (429, 5xx,
/// timeouts) is returned, so the pass retries instead of posting half a picture; any other
/// failure becomes `error` in the finding, next to whatever could be read.
pub async fn gather(
    client: &Client,
    incident: &Incident,
    history: &History,
    change_window: Duration,
    discussion_entries: usize,
) -> Result<Json, Error> {
    let sys_id = incident.sys_id();
    let ci_id = incident.field("cmdb_ci").to_owned();
    let mut errors: Vec<String> = Vec::new();
    let mut keep = |result: Result<Json, Error>, empty: Json| -> Result<Json, Error> {
        match result {
            Ok(value) => Ok(value),
            Err(e) if e.is_retryable() => Err(e),
            Err(e) => {
                errors.push(e.to_string());
                Ok(empty)
            }
        }
    };

    let now = Utc::now();
    let from = now
        - chrono::Duration::from_std(change_window).unwrap_or_else(|_| chrono::Duration::days(1));
    let (ci, changes, open) = if ci_id.is_empty() {
        (Ok(None), Ok(Vec::new()), Ok(Vec::new()))
    } else {
        tokio::join!(
            client.configuration_item(&ci_id),
            client.changes_on_ci(&ci_id, from, now),
            client.open_incidents_on_ci(&ci_id, Some(sys_id)),
        )
    };
    let (parent, children) = tokio::join!(client.parent(&incident.record), client.children(sys_id));

    let ci = keep(
        ci.map(|ci| {
            ci.map_or(Json::Null, |r| {
                json!({
                    "name": text(&r, "name"),
                    "sys_id": text(&r, "sys_id"),
                    "class": text(&r, "sys_class_name"),
                    "operational_status": text(&r, "operational_status"),
                    "environment": text(&r, "environment"),
                    "fqdn": text(&r, "fqdn"),
                    "ip_address": text(&r, "ip_address"),
                })
            })
        }),
        Json::Null,
    )?;
    let changes = keep(
        changes.map(|rows| {
            Json::Array(
                rows.iter()
                    .map(|r| {
                        json!({
                            "number": text(r, "number"),
                            "sys_id": text(r, "sys_id"),
                            "short_description": text(r, "short_description"),
                            "state": change_state_label(r.value_or_empty("state")),
                            "start": first_set(r, &["work_start", "start_date"]),
                            "end": first_set(r, &["work_end", "end_date"]),
                        })
                    })
                    .collect(),
            )
        }),
        json!([]),
    )?;
    let open_incidents = keep(
        open.map(|rows| {
            Json::Array(
                rows.iter()
                    .map(|r| {
                        json!({
                            "number": text(r, "number"),
                            "sys_id": text(r, "sys_id"),
                            "short_description": text(r, "short_description"),
                            "priority": text(r, "priority"),
                        })
                    })
                    .collect(),
            )
        }),
        json!([]),
    )?;
    let parent = keep(
        parent.map(|p| p.as_ref().map_or(Json::Null, incident_summary)),
        Json::Null,
    )?;
    let children = keep(
        children.map(|rows| Json::Array(rows.iter().map(incident_summary).collect())),
        json!([]),
    )?;
    let discussion: Vec<Json> = history
        .discussion(discussion_entries)
        .into_iter()
        .map(|e| {
            json!({
                "author": e.author,
                "at": e.at.map(nowpilot_model::time::format_glide),
                "kind": kind_name(&e.kind),
                "text": e.text,
            })
        })
        .collect();

    let mut finding = json!({
        "ok": errors.is_empty(),
        "ci": ci,
        "changes": changes,
        "open_incidents": open_incidents,
        "parent": parent,
        "children": children,
        "discussion": discussion,
    });
    if !errors.is_empty()
        && let Some(map) = finding.as_object_mut()
    {
        map.insert("error".into(), Json::String(errors.join("; ")));
    }
    Ok(finding)
}
