//! Review mode: proposals, and the answers people write back.
//!
//! A proposal is a work note with a short id, what nowpilot proposes in words, the exact
//! field changes as one JSON line, how to answer, who may, and when it expires. It is posted
//! at most once per action (its marker). Later passes look for `/nowpilot approve|reject <id>`
//! written after it; the newest answer from an approver wins, and an answer written after the
//! proposal expired does not count. An approval writes exactly the stored changes (only the
//! fields the action kind may write, and only from a proposal nowpilot itself posted). An
//! answer from anyone else gets one reply saying they are not an approver, and the proposal
//! keeps waiting, and that answer never counts later (even if its author becomes an approver).
//! Rejected, expired and unreadable proposals are closed for good: nowpilot does not propose
//! the action again.
//!
//! Expiry is noticed by the next pass after `proposal_ttl` (any event on the incident, or the
//! poller). Journal entries without a readable time (the display-value fallback with a user
//! time zone format other than `yyyy-MM-dd HH:mm:ss`) never expire and never arrive late.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nowpilot_model::plans::{Action, ActionKind, Plan};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use super::act::{Prepared, writable_fields};
use super::notes::kind_words;
use super::{Pass, PassError};
use crate::history::Proposal;
use crate::lookups::Author;
use crate::markers::{self, Verb};

/// The proposal id of an action on an incident: 6 hex characters, the same on every pass.
pub(crate) fn proposal_id(sys_id: &str, plan: &str, action: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("{sys_id}|{plan}|{action}").as_bytes());
    hex::encode(hash.finalize().get(..3).unwrap_or_default())
}

fn ttl_text(ttl: std::time::Duration) -> String {
    humantime::format_duration(ttl).to_string()
}

fn describe_changes(changes: &Map<String, Json>) -> String {
    changes
        .iter()
        .map(|(k, v)| format!("{k} = {}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Pass<'_> {
    /// Posts the proposal for an owed review action.
    pub(super) async fn propose(
        &mut self,
        plan: &Plan,
        action: &Action,
        prepared: Prepared,
    ) -> Result<(), PassError> {
        let id = proposal_id(self.sys_id(), &plan.name, &action.id);
        let settings = &self.ctx.settings;
        let ttl = settings.config().proposal_ttl;
        let expires = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d));
        // Sorted keys, whatever map order serde_json was built with: the line reads the same
        // on every instance and in every test.
        let ordered: BTreeMap<&String, &Json> = prepared.changes.iter().collect();
        let changes = serde_json::to_string(&ordered).unwrap_or_else(|_| "{}".to_owned());
        let mut lines = vec![format!(
            "nowpilot proposes (plan {}, action {}): {}.",
            plan.name, action.id, prepared.summary
        )];
        lines.extend(prepared.remarks.iter().cloned());
        lines.push(format!("changes: {changes}"));
        lines.push(format!(
            "To carry it out, an approver writes in the work notes: /nowpilot approve {id}"
        ));
        lines.push(format!("To turn it down: /nowpilot reject {id}"));
        lines.push(format!("Approvers: {}.", settings.approvers().describe()));
        lines.push(match expires {
            Some(at) => format!(
                "Expires: {} UTC ({} from now).",
                nowpilot_model::time::format_glide(at),
                ttl_text(ttl)
            ),
            None => format!("Expires after {}.", ttl_text(ttl)),
        });
        lines.push(markers::proposal(
            &id,
            &plan.name,
            &action.id,
            self.version(),
        ));
        let kind = action.kind.name().as_str();
        match self.write(Map::new(), lines.join("\n")).await {
            Ok(_) => {
                self.report(
                    &plan.name,
                    &action.id,
                    kind,
                    "proposed",
                    format!("proposal {id}: {}", prepared.summary),
                );
                Ok(())
            }
            Err(e) => {
                self.report(&plan.name, &action.id, kind, "failed", e.message.clone());
                Err(e)
            }
        }
    }

    /// Looks for answers to an open proposal and acts on them.
    pub(super) async fn answer(
        &mut self,
        plan: &Plan,
        action: &Action,
        proposal: &Proposal,
        findings: &mut Option<Json>,
    ) -> Result<(), PassError> {
        if proposal.outcome.is_some() {
            return Ok(());
        }
        let ttl = self.ctx.settings.config().proposal_ttl;
        let deadline: Option<DateTime<Utc>> = proposal
            .at
            .zip(chrono::Duration::from_std(ttl).ok())
            .and_then(|(at, ttl)| at.checked_add_signed(ttl));
        let commands: Vec<_> = self
            .history
            .commands_for(proposal)
            .into_iter()
            .cloned()
            .collect();
        let mut decision: Option<(Verb, String)> = None;
        for command in commands {
            if let (Some(deadline), Some(at)) = (deadline, command.at)
                && at > deadline
            {
                continue;
            }
            // A refused answer stays refused, even if its author becomes an approver later.
            if self.history.was_refused(&proposal.id, &command.reference) {
                continue;
            }
            match self.authorize(&command.author).await? {
                Ok(user) => decision = Some((command.verb, user)),
                Err(why) => {
                    let why = super::notes::quote(&why);
                    let note = format!(
                        "nowpilot cannot accept \"/nowpilot {} {}\" from {}: {why}.\nApprovers: {}. The proposal is still waiting.\n{}",
                        command.verb.as_str(),
                        proposal.id,
                        super::notes::quote(&command.author),
                        self.ctx.settings.approvers().describe(),
                        markers::refusal(&proposal.id, &command.reference, self.version()),
                    );
                    self.write(Map::new(), note).await?;
                    self.report(
                        &plan.name,
                        &action.id,
                        action.kind.name().as_str(),
                        "refused",
                        format!(
                            "{} may not answer proposal {}: {why}",
                            command.author, proposal.id
                        ),
                    );
                }
            }
        }
        match decision {
            Some((Verb::Approve, user)) => {
                let user = super::notes::quote(&user);
                self.approve(plan, action, proposal, &user, findings).await
            }
            Some((Verb::Reject, user)) => {
                let user = super::notes::quote(&user);
                let text = format!(
                    "Proposal {} (plan {}, action {}) was rejected by {user}. Nothing was done, and nowpilot will not propose it again.",
                    proposal.id, plan.name, action.id
                );
                self.close(plan, action, proposal, "rejected", text).await
            }
            None if deadline.is_some_and(|d| Utc::now() > d) => {
                let text = format!(
                    "Proposal {} (plan {}, action {}) expired: nobody approved or rejected it within {}. Nothing was done, and nowpilot will not propose it again.",
                    proposal.id,
                    plan.name,
                    action.id,
                    ttl_text(ttl)
                );
                self.close(plan, action, proposal, "expired", text).await
            }
            None => Ok(()),
        }
    }

    /// Writes a closing note for a proposal.
    async fn close(
        &mut self,
        plan: &Plan,
        action: &Action,
        proposal: &Proposal,
        outcome: &'static str,
        text: String,
    ) -> Result<(), PassError> {
        let marker = markers::proposal_outcome(
            &proposal.id,
            &plan.name,
            &action.id,
            outcome,
            self.version(),
        );
        self.write(Map::new(), format!("{text}\n{marker}")).await?;
        let result = if outcome == "unreadable" || outcome == "untrusted" {
            "failed"
        } else {
            outcome
        };
        self.report(
            &plan.name,
            &action.id,
            action.kind.name().as_str(),
            result,
            text,
        );
        Ok(())
    }

    /// Carries out an approved proposal: exactly its stored changes.
    async fn approve(
        &mut self,
        plan: &Plan,
        action: &Action,
        proposal: &Proposal,
        approver: &str,
        findings: &mut Option<Json>,
    ) -> Result<(), PassError> {
        if !proposal.trusted {
            let text = format!(
                "Proposal {} was approved by {approver}, but it was not written by nowpilot's integration user, so nowpilot will not carry it out. Nothing was done.",
                proposal.id
            );
            return self.close(plan, action, proposal, "untrusted", text).await;
        }
        let allowed = writable_fields(&action.kind);
        let changes = proposal
            .changes
            .clone()
            .filter(|c| c.keys().all(|k| allowed.contains(&k.as_str())));
        let Some(changes) = changes else {
            let text = format!(
                "Proposal {} was approved by {approver}, but its changes line cannot be read back (or names fields a {} action does not write). Nothing was done.",
                proposal.id,
                action.kind.name().as_str()
            );
            return self.close(plan, action, proposal, "unreadable", text).await;
        };
        let mut remarks = Vec::new();
        let done = match &action.kind {
            ActionKind::WorkNote { text } => {
                remarks.push(text.clone());
                "notes".to_owned()
            }
            kind => {
                if !changes.is_empty() {
                    remarks.push(format!("Changes: {}.", describe_changes(&changes)));
                }
                kind_words(kind).to_owned()
            }
        };
        let prepared = Prepared {
            summary: format!("carry out proposal {}", proposal.id),
            done,
            remarks,
            changes,
        };
        let marker = markers::proposal_outcome(
            &proposal.id,
            &plan.name,
            &action.id,
            "approved",
            self.version(),
        );
        self.carry_out(
            plan,
            action,
            prepared,
            Some((&proposal.id, approver)),
            marker,
            findings,
        )
        .await
    }

    /// Whether `author` may answer proposals: `Ok(user name)` or `Err(why not)`.
    async fn authorize(&self, author: &str) -> Result<Result<String, String>, PassError> {
        let lookups = self.lookups();
        let user = match lookups.author(author).await? {
            Author::User(user) => user,
            Author::Unknown => {
                return Ok(Err(format!(
                    "nowpilot cannot find a ServiceNow user with the user name or name {author:?}"
                )));
            }
            Author::Ambiguous(n) => {
                return Ok(Err(format!(
                    "{n} ServiceNow users have the user name or name {author:?}, so nowpilot cannot tell who wrote it"
                )));
            }
        };
        let approvers = self.ctx.settings.approvers();
        if approvers
            .users
            .contains(&user.user_name.to_ascii_lowercase())
        {
            return Ok(Ok(user.user_name));
        }
        for group in &approvers.groups {
            let Some(group_id) = lookups.group_id(group).await? else {
                tracing::warn!(
                    group,
                    "[worker] approvers names a group:{group} that ServiceNow does not have (group names are exact)"
                );
                continue;
            };
            if lookups.is_member(&group_id, &user.sys_id).await? {
                return Ok(Ok(user.user_name));
            }
        }
        Ok(Err(format!("{} is not an approver", user.user_name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_stable_and_distinct() {
        let a = proposal_id("0123456789abcdef0123456789abcdef", "p", "resolve");
        assert_eq!(a.len(), 6);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            a,
            proposal_id("0123456789abcdef0123456789abcdef", "p", "resolve")
        );
        assert_ne!(
            a,
            proposal_id("0123456789abcdef0123456789abcdef", "p", "hold")
        );
    }
}
