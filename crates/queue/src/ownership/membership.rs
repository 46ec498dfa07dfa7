//! Membership: who is alive, from the heartbeats every worker publishes on the fanout exchange
//! `{prefix}.members`.
//!
//! Membership decides balance only (who *should* own what). Safety comes from the locks; the
//! `owned` list in each heartbeat adds one more fence: a partition is not consumed while
//! another live member still says it owns it (it may be finishing passes after giving up its
//! lock's connection).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The largest heartbeat accepted; anything bigger is not ours.
pub const MAX_HEARTBEAT_BYTES: usize = 64 * 1024;

/// The longest member id accepted.
pub const MAX_MEMBER_ID: usize = 200;

/// One heartbeat, as published (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The member's id (unique per process).
    pub id: String,
    /// When the member started.
    pub started_at: DateTime<Utc>,
    /// Partitions it consumes or is still finishing.
    pub owned: Vec<u16>,
    /// Its partition count `P` (must be the same everywhere).
    pub partitions: u16,
    /// The member is shutting down: forget it now rather than after the timeout.
    #[serde(default)]
    pub leaving: bool,
    /// nowpilot's version, for operators.
    #[serde(default)]
    pub version: String,
}

impl Heartbeat {
    /// Parses a heartbeat body; `None` for anything that is not one.
    pub fn parse(body: &[u8]) -> Option<Heartbeat> {
        if body.len() > MAX_HEARTBEAT_BYTES {
            return None;
        }
        let beat: Heartbeat = serde_json::from_slice(body).ok()?;
        let valid_id = !beat.id.is_empty()
            && beat.id.len() <= MAX_MEMBER_ID
            && !beat.id.chars().any(char::is_control);
        valid_id.then_some(beat)
    }
}

/// A live member, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// Its id.
    pub id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The partitions it owns.
    pub owned: Vec<u16>,
    /// Whether it is this process.
    pub this_process: bool,
    /// How long ago its last heartbeat arrived, in milliseconds (0 for this process).
    pub last_seen_ms: u64,
}

struct Seen {
    beat: Heartbeat,
    at: Instant,
}

/// The other members, as their heartbeats report them.
pub(crate) struct Members {
    own_id: String,
    timeout: Duration,
    partitions: u16,
    seen: HashMap<String, Seen>,
    warned_mismatch: bool,
}

impl Members {
    pub(crate) fn new(own_id: String, timeout: Duration, partitions: u16) -> Self {
        Members {
            own_id,
            timeout,
            partitions,
            seen: HashMap::new(),
            warned_mismatch: false,
        }
    }

    /// Records a heartbeat received at `now`; returns whether the set of live members changed.
    pub(crate) fn observe(&mut self, beat: Heartbeat, now: Instant) -> bool {
        if beat.id == self.own_id {
            return false;
        }
        if beat.partitions != self.partitions && !self.warned_mismatch {
            self.warned_mismatch = true;
            tracing::error!(
                member = %beat.id,
                theirs = beat.partitions,
                ours = self.partitions,
                "another worker uses a different queue.partitions: P must be the same everywhere (see docs/operations.md, changing P)"
            );
        }
        if beat.leaving {
            return self.seen.remove(&beat.id).is_some();
        }
        let owned: Vec<u16> = beat
            .owned
            .iter()
            .copied()
            .filter(|p| *p < self.partitions)
            .collect();
        let beat = Heartbeat { owned, ..beat };
        self.seen
            .insert(beat.id.clone(), Seen { beat, at: now })
            .is_none()
    }

    /// Forgets members silent for longer than the timeout; returns whether any went.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let before = self.seen.len();
        let timeout = self.timeout;
        self.seen
            .retain(|_, seen| now.saturating_duration_since(seen.at) <= timeout);
        self.seen.len() != before
    }

    /// Forgets everyone (after a reconnect the old view is stale).
    pub(crate) fn clear(&mut self) {
        self.seen.clear();
    }

    /// Live member ids, this process included.
    pub(crate) fn live_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.seen.keys().cloned().collect();
        ids.push(self.own_id.clone());
        ids.sort();
        ids
    }

    /// Whether another live member says it owns `partition`.
    pub(crate) fn claimed_by_other(&self, partition: u16) -> Option<&str> {
        self.seen
            .values()
            .find(|s| s.beat.owned.contains(&partition))
            .map(|s| s.beat.id.as_str())
    }

    /// The view for operators, this process first.
    pub(crate) fn view(&self, own: &Heartbeat, now: Instant) -> Vec<MemberView> {
        let mut others: Vec<MemberView> = self
            .seen
            .values()
            .map(|s| MemberView {
                id: s.beat.id.clone(),
                started_at: s.beat.started_at,
                owned: s.beat.owned.clone(),
                this_process: false,
                last_seen_ms: u64::try_from(now.saturating_duration_since(s.at).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        let mut all = vec![MemberView {
            id: own.id.clone(),
            started_at: own.started_at,
            owned: own.owned.clone(),
            this_process: true,
            last_seen_ms: 0,
        }];
        all.extend(others);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, owned: &[u16]) -> Heartbeat {
        Heartbeat {
            id: id.to_owned(),
            started_at: Utc::now(),
            owned: owned.to_vec(),
            partitions: 4,
            leaving: false,
            version: String::new(),
        }
    }

    #[test]
    fn heartbeats_round_trip_and_junk_is_refused() {
        let b = beat("w1", &[0, 2]);
        let json = serde_json::to_vec(&b).unwrap();
        assert_eq!(Heartbeat::parse(&json), Some(b));
        assert_eq!(Heartbeat::parse(b"not json"), None);
        assert_eq!(Heartbeat::parse(br#"{"id":""}"#), None);
        let long = beat(&"x".repeat(MAX_MEMBER_ID + 1), &[]);
        assert_eq!(Heartbeat::parse(&serde_json::to_vec(&long).unwrap()), None);
        assert_eq!(Heartbeat::parse(&vec![b' '; MAX_HEARTBEAT_BYTES + 1]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn members_expire_leave_and_claim() {
        let t0 = Instant::now();
        let mut m = Members::new("me".into(), Duration::from_secs(3), 4);
        assert!(
            !m.observe(beat("me", &[1]), t0),
            "own heartbeats are ignored"
        );
        assert!(m.observe(beat("w1", &[0, 9]), t0));
        assert!(!m.observe(beat("w1", &[0]), t0));
        assert!(m.observe(beat("w2", &[]), t0));
        assert_eq!(m.live_ids(), ["me", "w1", "w2"]);
        assert_eq!(m.claimed_by_other(0), Some("w1"));
        assert_eq!(m.claimed_by_other(1), None);
        // Partitions beyond P are dropped from claims.
        assert_eq!(m.claimed_by_other(9), None);
        m.observe(beat("w2", &[]), t0 + Duration::from_secs(2));
        assert!(m.expire(t0 + Duration::from_millis(3500)));
        assert_eq!(m.live_ids(), ["me", "w2"]);
        let mut leaving = beat("w2", &[]);
        leaving.leaving = true;
        assert!(m.observe(leaving, t0 + Duration::from_secs(4)));
        assert_eq!(m.live_ids(), ["me"]);
    }
}
