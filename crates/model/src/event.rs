//! The envelope that travels through the queue from ingress (or poller) to worker.
//!
//! An event only says "look at this incident, at least at this version": the worker reads the
//! incident as it is now before acting (a reconcile), so an envelope never carries instructions.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::callback::CallbackPayload;

/// The envelope's schema version. Bump on a change old workers cannot read.
pub const ENVELOPE_SCHEMA_VERSION: u32 = 1;

/// The id of one version of one record: `"{sys_id}-{sys_mod_count}"`.
///
/// It is unique per record version, so it is both the AMQP `message_id` and the dedup key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// The id of `sys_id` at version `mod_count`.
    pub fn new(sys_id: &str, mod_count: u64) -> Self {
        EventId(format!("{sys_id}-{mod_count}"))
    }

    /// Parses `"<sys_id>-<sys_mod_count>"` as an operator types it; `None` when it is not that
    /// shape.
    pub fn parse(text: &str) -> Option<Self> {
        let (sys_id, count) = text.trim().rsplit_once('-')?;
        let count: u64 = count.parse().ok()?;
        crate::record::is_sys_id(sys_id).then(|| EventId::new(sys_id, count))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    /// A signed callback from the ServiceNow business rule.
    Callback,
    /// The poller found a version no callback had delivered.
    Poller,
    /// An operator re-drove a dead letter.
    Replay,
}

impl EventSource {
    /// A stable lowercase name (for logs and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Callback => "callback",
            EventSource::Poller => "poller",
            EventSource::Replay => "replay",
        }
    }
}

/// One queued event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// [`ENVELOPE_SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// `"{sys_id}-{sys_mod_count}"`.
    pub event_id: EventId,
    /// The table (always `incident` today).
    pub table: String,
    /// The record's sys_id: the partition key.
    pub sys_id: String,
    /// The record's `sys_mod_count` when the event was produced.
    pub sys_mod_count: u64,
    /// The record's number (INC…), for logs; may be empty.
    #[serde(default)]
    pub number: String,
    /// Who produced the event.
    pub source: EventSource,
    /// When nowpilot received or produced it.
    pub received_at: DateTime<Utc>,
    /// The callback as received (callbacks only), unknown fields included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackPayload>,
}

impl EventEnvelope {
    /// The envelope for a verified callback.
    pub fn from_callback(payload: CallbackPayload, received_at: DateTime<Utc>) -> Self {
        EventEnvelope {
            schema_version: ENVELOPE_SCHEMA_VERSION,
            event_id: EventId::new(&payload.sys_id, payload.sys_mod_count),
            table: payload.table.clone(),
            sys_id: payload.sys_id.clone(),
            sys_mod_count: payload.sys_mod_count,
            number: payload.record.value_or_empty("number").to_owned(),
            source: EventSource::Callback,
            received_at,
            callback: Some(payload),
        }
    }

    /// An envelope for a version found without a callback (poller, replay).
    pub fn observed(
        table: &str,
        sys_id: &str,
        sys_mod_count: u64,
        number: &str,
        source: EventSource,
        received_at: DateTime<Utc>,
    ) -> Self {
        EventEnvelope {
            schema_version: ENVELOPE_SCHEMA_VERSION,
            event_id: EventId::new(sys_id, sys_mod_count),
            table: table.to_owned(),
            sys_id: sys_id.to_owned(),
            sys_mod_count,
            number: number.to_owned(),
            source,
            received_at,
            callback: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_sys_id_dash_mod_count() {
        assert_eq!(
            EventId::new("0123456789abcdef0123456789abcdef", 7).as_str(),
            "0123456789abcdef0123456789abcdef-7"
        );
    }

    #[test]
    fn event_ids_parse_back() {
        let id = EventId::new("0123456789abcdef0123456789abcdef", 12);
        assert_eq!(EventId::parse(id.as_str()), Some(id));
        assert_eq!(EventId::parse("nope-1"), None);
        assert_eq!(EventId::parse("0123456789abcdef0123456789abcdef-x"), None);
    }

    #[test]
    fn envelope_round_trips() {
        let e = EventEnvelope::observed(
            "incident",
            "0123456789abcdef0123456789abcdef",
            3,
            "INC0010001",
            EventSource::Poller,
            Utc::now(),
        );
        let json = serde_json::to_string(&e).unwrap();
        let back: EventEnvelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
