//! The incident's journal, read once per pass and interpreted: which actions are done, which
//! proposals are open, who answered them, and the recent discussion.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use nowpilot_servicenow::{JournalEntry, JournalKind};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::markers::{self, Marker, Verb};

/// How nowpilot's own entries are recognised by author.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The integration user's user name (structured journal), lowercased.
    pub user_name: Option<String>,
    /// Its display name (display-value fallback).
    pub display_name: Option<String>,
}

impl Identity {
    /// Whether nothing is known: every author might be nowpilot.
    pub fn is_unknown(&self) -> bool {
        self.user_name.is_none() && self.display_name.is_none()
    }

    /// Whether `author` is the integration user (by user name or display name).
    pub fn is(&self, author: &str) -> bool {
        let author = author.trim();
        self.user_name
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(author))
            || self.display_name.as_deref().is_some_and(|d| d == author)
    }
}

/// One journal entry with what nowpilot makes of it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the journal, oldest first.
    pub index: usize,
    /// The author (a user name, or a display name from the fallback).
    pub author: String,
    /// When it was written.
    pub at: Option<DateTime<Utc>>,
    /// Work note, comment, other.
    pub kind: JournalKind,
    /// The text.
    pub text: String,
    /// Markers in the text.
    pub markers: Vec<Marker>,
    /// Written by nowpilot (has a marker, or the integration user wrote it).
    pub ours: bool,
    /// Written by the integration user (always true when nobody is known).
    pub by_integration_user: bool,
}

/// A proposal found in the journal.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The 6-hex id.
    pub id: String,
    /// Plan and action it proposes.
    pub plan: String,
    /// The action id.
    pub action: String,
    /// Where in the journal it was posted.
    pub index: usize,
    /// When it was posted.
    pub at: Option<DateTime<Utc>>,
    /// Whether the integration user posted it (so its stored changes can be trusted).
    pub trusted: bool,
    /// The stored field changes (`changes: {...}` line), `None` when unreadable.
    pub changes: Option<Map<String, Value>>,
    /// `approved`, `rejected`, `expired`, `unreadable` once closed.
    pub outcome: Option<String>,
}

/// A `/nowpilot approve|reject <id>` written by someone.
#[derive(Debug, Clone)]
pub struct Command {
    /// Approve or reject.
    pub verb: Verb,
    /// The proposal id.
    pub proposal: String,
    /// The entry's author as the journal gives it.
    pub author: String,
    /// When it was written.
    pub at: Option<DateTime<Utc>>,
    /// Position of its entry.
    pub index: usize,
    /// A stable short reference (hash of author, time and text) for refusal markers.
    pub reference: String,
}

/// The interpreted journal.
#[derive(Debug, Clone, Default)]
pub struct History {
    entries: Vec<Entry>,
    done: BTreeSet<(String, String)>,
    proposals: BTreeMap<String, Proposal>,
    refused: BTreeSet<(String, String)>,
    commands: Vec<Command>,
}

fn command_reference(entry: &JournalEntry) -> String {
    let mut hash = Sha256::new();
    hash.update(entry.created_by.as_bytes());
    hash.update([0]);
    hash.update(
        entry
            .created_on
            .map(|t| t.timestamp().to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    hash.update([0]);
    hash.update(entry.value.as_bytes());
    hex::encode(hash.finalize().get(..4).unwrap_or_default())
}

/// The `changes: {...}` line of a proposal note.
fn stored_changes(text: &str) -> Option<Map<String, Value>> {
    let line = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("changes:"))?;
    match serde_json::from_str::<Value>(line.trim()).ok()? {
        Value::Object(map) if map.values().all(Value::is_string) => Some(map),
        _ => None,
    }
}

impl History {
    /// Interprets `journal` (oldest first).
    pub fn new(journal: Vec<JournalEntry>, identity: &Identity) -> Self {
        let mut history = History::default();
        for (index, raw) in journal.into_iter().enumerate() {
            let markers = markers::parse(&raw.value);
            let by_integration_user = identity.is_unknown() || identity.is(&raw.created_by);
            let ours = !markers.is_empty() || (!identity.is_unknown() && by_integration_user);
            for marker in &markers {
                if let Some((plan, action)) = marker.done_action() {
                    history.done.insert((plan.to_owned(), action.to_owned()));
                }
                if let (Some(id), Some(refused)) = (&marker.proposal, &marker.refused) {
                    history.refused.insert((id.clone(), refused.clone()));
                }
                let Some(id) = &marker.proposal else { continue };
                match (&marker.outcome, &marker.plan, &marker.action) {
                    (Some(outcome), _, _) => {
                        if let Some(p) = history.proposals.get_mut(id) {
                            p.outcome.get_or_insert_with(|| outcome.clone());
                        }
                    }
                    (None, Some(plan), Some(action)) if marker.refused.is_none() => {
                        history
                            .proposals
                            .entry(id.clone())
                            .or_insert_with(|| Proposal {
                                id: id.clone(),
                                plan: plan.clone(),
                                action: action.clone(),
                                index,
                                at: raw.created_on,
                                trusted: by_integration_user,
                                changes: stored_changes(&raw.value),
                                outcome: None,
                            });
                    }
                    _ => {}
                }
            }
            if !ours {
                for (verb, proposal) in markers::parse_commands(&raw.value) {
                    history.commands.push(Command {
                        verb,
                        proposal,
                        author: raw.created_by.trim().to_owned(),
                        at: raw.created_on,
                        index,
                        reference: command_reference(&raw),
                    });
                }
            }
            history.entries.push(Entry {
                index,
                author: raw.created_by.trim().to_owned(),
                at: raw.created_on,
                kind: raw.element,
                text: raw.value,
                markers,
                ours,
                by_integration_user,
            });
        }
        history
    }

    /// Whether the action's marker is in the journal (any version).
    pub fn is_done(&self, plan: &str, action: &str) -> bool {
        self.done.contains(&(plan.to_owned(), action.to_owned()))
    }

    /// The proposal for an action, if one was ever posted.
    pub fn proposal_for(&self, plan: &str, action: &str) -> Option<&Proposal> {
        self.proposals
            .values()
            .find(|p| p.plan == plan && p.action == action)
    }

    /// Commands naming `proposal`, written after it, oldest first.
    pub fn commands_for(&self, proposal: &Proposal) -> Vec<&Command> {
        self.commands
            .iter()
            .filter(|c| c.proposal == proposal.id && c.index > proposal.index)
            .collect()
    }

    /// Whether nowpilot already answered this command with "not an approver".
    pub fn was_refused(&self, proposal: &str, reference: &str) -> bool {
        self.refused
            .contains(&(proposal.to_owned(), reference.to_owned()))
    }

    /// The newest `limit` entries written by people, oldest first.
    pub fn discussion(&self, limit: usize) -> Vec<&Entry> {
        let people: Vec<&Entry> = self.entries.iter().filter(|e| !e.ours).collect();
        let skip = people.len().saturating_sub(limit);
        people.into_iter().skip(skip).collect()
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nowpilot_model::time::parse_glide;

    fn entry(by: &str, at: &str, text: &str) -> JournalEntry {
        JournalEntry {
            element: JournalKind::WorkNotes,
            value: text.to_owned(),
            created_on: parse_glide(at),
            created_by: by.to_owned(),
        }
    }

    fn identity() -> Identity {
        Identity {
            user_name: Some("nowpilot.integration".into()),
            display_name: Some("nowpilot Integration".into()),
        }
    }

    #[test]
    fn done_proposals_and_commands() {
        let proposal = format!(
            "nowpilot proposes to resolve.\nchanges: {{\"state\":\"6\",\"close_code\":\"Solution provided\"}}\nwrite /nowpilot approve abc123\n{}",
            markers::proposal("abc123", "p", "resolve", 2)
        );
        let journal = vec![
            entry(
                "maya.patel",
                "2026-05-01 09:00:00",
                "/nowpilot approve abc123 (too early)",
            ),
            entry(
                "nowpilot.integration",
                "2026-05-01 10:00:00",
                &format!("ack\n{}", markers::action("p", "acknowledge", 1)),
            ),
            entry("nowpilot Integration", "2026-05-01 10:01:00", &proposal),
            entry(
                "carlos.mendes",
                "2026-05-01 10:02:00",
                "/nowpilot approve ABC123",
            ),
            entry(
                "maya.patel",
                "2026-05-01 10:03:00",
                "ok /nowpilot reject abc123",
            ),
        ];
        let h = History::new(journal, &identity());
        assert!(h.is_done("p", "acknowledge"));
        assert!(!h.is_done("p", "resolve"));
        let p = h.proposal_for("p", "resolve").unwrap();
        assert!(p.trusted);
        assert_eq!(
            p.changes.as_ref().unwrap()["close_code"],
            "Solution provided"
        );
        let commands = h.commands_for(p);
        assert_eq!(
            commands.len(),
            2,
            "the early command and nowpilot's own text do not count"
        );
        assert_eq!(commands[0].author, "carlos.mendes");
        assert_eq!(commands[1].verb, Verb::Reject);
        assert_ne!(commands[0].reference, commands[1].reference);
        let discussion: Vec<&str> = h.discussion(2).iter().map(|e| e.author.as_str()).collect();
        assert_eq!(discussion, ["carlos.mendes", "maya.patel"]);
    }

    #[test]
    fn outcomes_close_proposals_and_forged_ones_are_untrusted() {
        let journal = vec![
            entry(
                "priya.raman",
                "2026-05-01 10:00:00",
                &format!(
                    "changes: {{\"state\":\"7\"}}\n{}",
                    markers::proposal("0000aa", "p", "resolve", 1)
                ),
            ),
            entry(
                "nowpilot.integration",
                "2026-05-01 10:01:00",
                &markers::proposal_outcome("0000aa", "p", "resolve", "expired", 2),
            ),
            entry(
                "nowpilot.integration",
                "2026-05-01 10:02:00",
                &markers::refusal("0000aa", "deadbeef", 3),
            ),
        ];
        let h = History::new(journal, &identity());
        let p = h.proposal_for("p", "resolve").unwrap();
        assert!(!p.trusted);
        assert_eq!(p.outcome.as_deref(), Some("expired"));
        assert!(h.was_refused("0000aa", "deadbeef"));
        assert!(
            h.discussion(5).is_empty(),
            "entries with markers are nowpilot's own"
        );
    }

    #[test]
    fn unreadable_changes_are_none() {
        for text in [
            "changes: {not json}",
            "changes: {\"a\": 1}",
            "no changes line",
        ] {
            assert!(stored_changes(text).is_none(), "{text}");
        }
    }
}
