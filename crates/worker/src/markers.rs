//! The markers nowpilot ends its work notes with, and the commands people write back.
//!
//! Every note nowpilot writes ends with one marker line, so a later pass can tell from the
//! journal alone what was already done (ServiceNow stays the system of record):
//!
//! | marker | meaning |
//! |---|---|
//! | `[nowpilot plan=P action=A v=N]` | action `A` of plan `P` was carried out (incident at version `N`) |
//! | `[nowpilot proposal=ID plan=P action=A v=N]` | action `A` was proposed for review as `ID` |
//! | `[nowpilot proposal=ID plan=P action=A outcome=approved v=N]` | the proposal was carried out (the action is done) |
//! | `[nowpilot proposal=ID plan=P action=A outcome=rejected v=N]` | an approver rejected it: never proposed again |
//! | `[nowpilot proposal=ID plan=P action=A outcome=expired v=N]` | nobody answered within `proposal_ttl`: closed, nothing done |
//! | `[nowpilot proposal=ID plan=P action=A outcome=unreadable v=N]` | the proposal's changes could not be read back: closed, nothing done |
//! | `[nowpilot proposal=ID plan=P action=A outcome=untrusted v=N]` | the proposal was not written by the integration user: closed, nothing done |
//! | `[nowpilot proposal=ID refused=REF v=N]` | the command `REF` came from someone who may not approve (said once per command) |
//! | `[nowpilot plan=P action=A note=priority_mismatch v=N]` | follow-up: ServiceNow computed another priority than the target |
//!
//! Any marker saying an action is done counts, whoever wrote it: nowpilot would rather skip an
//! action than write twice. Proposals are different: only one posted by the integration user
//! (when nowpilot knows who that is) can be approved, since its `changes:` line is what an
//! approval writes.
//!
//! Parsing is tolerant: case-insensitive, any whitespace (the display-value fallback rewrites
//! it), unknown keys ignored, the marker anywhere in the entry. Values are limited to
//! `[A-Za-z0-9._-]`, which plan names and action ids already are.
//!
//! Commands: `/nowpilot approve <id>` or `/nowpilot reject <id>`, case-insensitive, anywhere
//! in a line of a work note or comment.

use std::collections::BTreeMap;

/// One parsed marker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marker {
    /// `plan=`.
    pub plan: Option<String>,
    /// `action=`.
    pub action: Option<String>,
    /// `v=`.
    pub version: Option<u64>,
    /// `proposal=`.
    pub proposal: Option<String>,
    /// `outcome=`.
    pub outcome: Option<String>,
    /// `refused=`.
    pub refused: Option<String>,
    /// `note=`.
    pub note: Option<String>,
}

impl Marker {
    /// The plan and action this marker says are done, if it says so: a plain action marker,
    /// a follow-up of one, or an approved proposal.
    pub fn done_action(&self) -> Option<(&str, &str)> {
        let (plan, action) = (self.plan.as_deref()?, self.action.as_deref()?);
        match (&self.proposal, self.outcome.as_deref()) {
            (None, _) => Some((plan, action)),
            (Some(_), Some("approved")) => Some((plan, action)),
            _ => None,
        }
    }
}

/// `[nowpilot plan=P action=A v=N]`.
pub fn action(plan: &str, action: &str, version: u64) -> String {
    format!("[nowpilot plan={plan} action={action} v={version}]")
}

/// `[nowpilot plan=P action=A note=NOTE v=N]`.
pub fn follow_up(plan: &str, action: &str, note: &str, version: u64) -> String {
    format!("[nowpilot plan={plan} action={action} note={note} v={version}]")
}

/// `[nowpilot proposal=ID plan=P action=A v=N]`.
pub fn proposal(id: &str, plan: &str, action: &str, version: u64) -> String {
    format!("[nowpilot proposal={id} plan={plan} action={action} v={version}]")
}

/// `[nowpilot proposal=ID plan=P action=A outcome=O v=N]`.
pub fn proposal_outcome(id: &str, plan: &str, action: &str, outcome: &str, version: u64) -> String {
    format!("[nowpilot proposal={id} plan={plan} action={action} outcome={outcome} v={version}]")
}

/// `[nowpilot proposal=ID refused=REF v=N]`.
pub fn refusal(id: &str, command_ref: &str, version: u64) -> String {
    format!("[nowpilot proposal={id} refused={command_ref} v={version}]")
}

fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Every marker in `text`, in order. Never fails; text that is not a marker is skipped.
pub fn parse(text: &str) -> Vec<Marker> {
    const OPEN: &str = "[nowpilot";
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = lower.get(from..).and_then(|rest| rest.find(OPEN)) {
        let start = from + found + OPEN.len();
        let Some(close) = text.get(start..).and_then(|rest| rest.find(']')) else {
            break;
        };
        let body = text.get(start..start + close).unwrap_or_default();
        from = start + close + 1;
        // `[nowpilotx ...]` is not ours: the tag must end at whitespace or the bracket.
        if !body.is_empty() && !body.starts_with(char::is_whitespace) {
            continue;
        }
        let mut pairs: BTreeMap<String, String> = BTreeMap::new();
        for token in body.split_whitespace() {
            if let Some((k, v)) = token.split_once('=')
                && valid_value(v)
            {
                pairs.insert(k.to_ascii_lowercase(), v.to_owned());
            }
        }
        let mut take = |key: &str| pairs.remove(key);
        let marker = Marker {
            plan: take("plan"),
            action: take("action"),
            version: take("v").and_then(|v| v.parse().ok()),
            proposal: take("proposal").map(|p| p.to_ascii_lowercase()),
            outcome: take("outcome").map(|o| o.to_ascii_lowercase()),
            refused: take("refused").map(|r| r.to_ascii_lowercase()),
            note: take("note").map(|n| n.to_ascii_lowercase()),
        };
        let meaningful =
            marker.proposal.is_some() || (marker.plan.is_some() && marker.action.is_some());
        if meaningful {
            out.push(marker);
        }
    }
    out
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `/nowpilot approve <id>`.
    Approve,
    /// `/nowpilot reject <id>`.
    Reject,
}

impl Verb {
    /// The command word.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Approve => "approve",
            Verb::Reject => "reject",
        }
    }
}

/// Every `/nowpilot approve|reject <id>` in `text`, in order; ids lowercased. Ids are the
/// 6 hexadecimal characters nowpilot hands out.
pub fn parse_commands(text: &str) -> Vec<(Verb, String)> {
    const PREFIX: &str = "/nowpilot";
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = lower.get(from..).and_then(|rest| rest.find(PREFIX)) {
        let after = from + found + PREFIX.len();
        from = after;
        let rest = lower.get(after..).unwrap_or_default();
        if !rest.starts_with(char::is_whitespace) {
            continue;
        }
        let mut words = rest.split_whitespace();
        let verb = match words.next() {
            Some("approve") => Verb::Approve,
            Some("reject") => Verb::Reject,
            _ => continue,
        };
        let Some(id) = words.next() else { continue };
        let id = id.trim_end_matches(['.', ',', ';', ':', '!', ')']);
        if id.len() == 6 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push((verb, id.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        let text = format!(
            "nowpilot acknowledged.\n{}",
            action("quickstart", "acknowledge", 3)
        );
        let m = parse(&text);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].done_action(), Some(("quickstart", "acknowledge")));
        assert_eq!(m[0].version, Some(3));

        let p = parse(&proposal("a1b2c3", "p", "resolve", 4));
        assert_eq!(p[0].proposal.as_deref(), Some("a1b2c3"));
        assert_eq!(p[0].done_action(), None);
        let approved = parse(&proposal_outcome("a1b2c3", "p", "resolve", "approved", 5));
        assert_eq!(approved[0].done_action(), Some(("p", "resolve")));
        let rejected = parse(&proposal_outcome("a1b2c3", "p", "resolve", "rejected", 5));
        assert_eq!(rejected[0].done_action(), None);
        assert_eq!(rejected[0].outcome.as_deref(), Some("rejected"));
        let refused = parse(&refusal("a1b2c3", "0badf00d", 6));
        assert_eq!(refused[0].refused.as_deref(), Some("0badf00d"));
        let f = parse(&follow_up("p", "set_priority", "priority_mismatch", 7));
        assert_eq!(f[0].done_action(), Some(("p", "set_priority")));
        assert_eq!(f[0].note.as_deref(), Some("priority_mismatch"));
    }

    #[test]
    fn parsing_tolerates_rewritten_whitespace_and_case() {
        let text = "done\r\n[NOWPILOT   plan=quickstart\n\taction=investigate\u{a0} v=12 ]  ";
        let m = parse(text);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].done_action(), Some(("quickstart", "investigate")));
        assert_eq!(m[0].version, Some(12));
    }

    #[test]
    fn non_markers_are_ignored() {
        for text in [
            "[nowpilot] acknowledged",
            "[nowpilotx plan=a action=b]",
            "[nowpilot plan=a]",
            "[nowpilot plan=a action=b",
            "[nowpilot plan=<script> action=b]",
            "",
            "]]][[[nowpilot",
        ] {
            assert!(parse(text).is_empty(), "{text:?}");
        }
        let two = format!("{} and {}", action("a", "b", 1), action("c", "d", 2));
        assert_eq!(parse(&two).len(), 2);
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse_commands("/nowpilot approve A1B2C3"),
            vec![(Verb::Approve, "a1b2c3".to_owned())]
        );
        assert_eq!(
            parse_commands("looks right.  /NowPilot   reject 0f0f0f."),
            vec![(Verb::Reject, "0f0f0f".to_owned())]
        );
        assert_eq!(
            parse_commands("/nowpilot approve a1b2c3\n/nowpilot reject d4e5f6"),
            vec![
                (Verb::Approve, "a1b2c3".to_owned()),
                (Verb::Reject, "d4e5f6".to_owned())
            ]
        );
        for text in [
            "/nowpilot approve",
            "/nowpilot approve xyz123",
            "/nowpilot approve a1b2c3d4",
            "/nowpilot approves a1b2c3",
            "/nowpilotapprove a1b2c3",
            "nowpilot approve a1b2c3",
        ] {
            assert!(parse_commands(text).is_empty(), "{text:?}");
        }
    }

    #[test]
    fn total_on_garbage() {
        let mut state = 0x1234_5678_u32;
        let alphabet: Vec<char> = "[]=/ nowpilt=approvejc0123abcdef\n\u{e9}".chars().collect();
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..(state % 80) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                text.push(alphabet[(state as usize) % alphabet.len()]);
            }
            let _ = parse(&text);
            let _ = parse_commands(&text);
        }
    }
}
