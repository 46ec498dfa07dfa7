//! What one pass did, for the activity feed (the status page shows the last 200) and tests.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How an event was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Something was written; acked.
    Acted,
    /// A plan matched but nothing was owed (done before, waiting for review); acked.
    NothingOwed,
    /// No plan matched; acked.
    NoPlan,
    /// The incident is resolved, closed or canceled; nothing is done; acked.
    Terminal,
    /// A newer version of the incident was already handled; acked at once.
    Stale,
    /// A transient failure; sent to a retry tier.
    Retried,
    /// A permanent failure or an exhausted retry budget; dead-lettered.
    DeadLettered,
    /// Requeued because the worker is shutting down.
    Requeued,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Acted => "acted",
            Outcome::NothingOwed => "nothing_owed",
            Outcome::NoPlan => "no_plan",
            Outcome::Terminal => "terminal",
            Outcome::Stale => "stale",
            Outcome::Retried => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Requeued => "requeued",
        }
    }
}

/// What happened to one action in a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionReport {
    /// The plan.
    pub plan: String,
    /// The action id.
    pub action: String,
    /// The action kind (`acknowledge`, `resolve`, ...).
    pub kind: &'static str,
    /// `done`, `proposed`, `approved`, `rejected`, `expired`, `failed`, `refused` (an answer
    /// from someone who may not approve) or `mismatch` (ServiceNow computed another priority).
    pub result: &'static str,
    /// A sentence for people.
    pub detail: String,
}

/// One reconcile pass (or one stale delivery) as the activity feed shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassReport {
    /// When the pass ended.
    pub at: DateTime<Utc>,
    /// The incident's sys_id.
    pub sys_id: String,
    /// The incident's number, when known.
    pub number: String,
    /// The events this pass settled (coalesced deliveries).
    pub event_ids: Vec<String>,
    /// The plans that matched.
    pub plans: Vec<String>,
    /// How the events were settled.
    pub outcome: Outcome,
    /// Dead-letter reason code, when dead-lettered.
    pub reason: Option<String>,
    /// What each action did.
    pub actions: Vec<ActionReport>,
    /// The error, for retries and dead letters.
    pub error: Option<String>,
    /// How long the pass took, in milliseconds.
    pub duration_ms: u64,
}

/// Receives one [`PassReport`] per pass. Called on the worker's tasks: keep it quick (push to
/// a bounded buffer or a channel).
pub type ActivitySink = Arc<dyn Fn(PassReport) + Send + Sync>;
