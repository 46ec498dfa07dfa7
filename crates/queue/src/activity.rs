//! The activity fanout: every process's pass reports, delivered to every status page.
//!
//! A worker publishes one small [`ActivityRecord`] per pass (incident number, plans, what each
//! action did, the outcome; never incident text beyond the number and short description, never
//! a secret). Every process that shows a status page subscribes. With the memory backend the
//! records stay in the process. With RabbitMQ they travel over a fanout exchange
//! `{prefix}.activity`, and each subscribing process reads them from its own exclusive,
//! auto-delete queue capped at [`ACTIVITY_QUEUE_MAX_LENGTH`] messages:
//!
//! ```text
//! worker A ─┐                                  ┌─▶ {prefix}.activity.{origin A}-{n} ─▶ page A
//! worker B ─┴─▶ {prefix}.activity  (fanout) ───┼─▶ {prefix}.activity.{origin B}-{n} ─▶ page B
//!                                              └─▶ {prefix}.activity.{origin C}-{n} ─▶ page C (ingress)
//! ```
//!
//! The fanout is deliberately **decoupled from the event path**: it has its own connection,
//! [`ActivityFanout::publish`] never waits and never fails (a record that cannot be sent right
//! now is dropped and counted), messages are transient and unconfirmed, and a full subscriber
//! queue drops its oldest record. Losing activity under pressure is fine; slowing events is not.
//! A process always sees its own records at once, from memory, whatever the broker does; copies
//! of its own records coming back from the broker are skipped (each process has a random
//! `origin`). The link reconnects on its own after any failure.
//!
//! The exchange is non-durable and auto-delete: it disappears with the last subscriber, so it
//! leaves nothing behind on the broker.

mod link;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api::truncate_utf8;
use crate::config::{QueueConfig, QueueKind};
use crate::error::QueueError;

/// The longest a subscriber's broker queue gets; beyond it the oldest record is dropped.
pub const ACTIVITY_QUEUE_MAX_LENGTH: i32 = 200;

/// Records waiting to be sent to the broker; beyond it new records are dropped (and counted).
const OUTBOUND_CAPACITY: usize = 256;

/// Records buffered for each in-process subscriber; a slower subscriber loses the oldest.
const LOCAL_CAPACITY: usize = 512;

/// The largest activity message read from the broker; anything bigger is not ours.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Most bytes of any free text in a record (details, errors, the short description).
pub const MAX_TEXT_BYTES: usize = 512;
/// Most bytes of a short identifier (number, plan, action, outcome, reason).
const MAX_NAME_BYTES: usize = 128;
/// Most actions kept per record.
const MAX_ACTIONS: usize = 32;
/// Most event ids and plans kept per record.
const MAX_LIST: usize = 32;

/// The fanout exchange of a deployment.
pub fn activity_exchange(prefix: &str) -> String {
    format!("{prefix}.activity")
}

/// What one action did in a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityAction {
    /// The plan.
    pub plan: String,
    /// The action id.
    pub action: String,
    /// The action kind (`acknowledge`, `investigate`, `resolve`, ...).
    pub kind: String,
    /// `done`, `proposed`, `approved`, `rejected`, `expired`, `failed`, `refused`, `mismatch`.
    pub result: String,
    /// A sentence for people.
    #[serde(default)]
    pub detail: String,
}

/// One reconcile pass (or one settled delivery) as the status pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRecord {
    /// When the pass ended.
    pub at: DateTime<Utc>,
    /// The publishing process (set by [`ActivityFanout::publish`]).
    #[serde(default)]
    pub origin: String,
    /// The incident's sys_id.
    pub sys_id: String,
    /// The incident's number, when known.
    #[serde(default)]
    pub number: String,
    /// The incident's short description, when the publisher knows it.
    #[serde(default)]
    pub short_description: Option<String>,
    /// The events the pass settled.
    #[serde(default)]
    pub event_ids: Vec<String>,
    /// The plans that matched, in order.
    #[serde(default)]
    pub plans: Vec<String>,
    /// How the events were settled (`acted`, `nothing_owed`, `no_plan`, `terminal`, `stale`,
    /// `retried`, `dead_lettered`, `requeued`).
    pub outcome: String,
    /// The dead-letter reason code, when dead-lettered.
    #[serde(default)]
    pub reason: Option<String>,
    /// What each action did.
    #[serde(default)]
    pub actions: Vec<ActivityAction>,
    /// The error, for retries and dead letters.
    #[serde(default)]
    pub error: Option<String>,
    /// How long the pass took, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
}

fn clip(text: &mut String, max: usize) {
    let kept = truncate_utf8(text, max).len();
    text.truncate(kept);
}

impl ActivityRecord {
    /// The record cut to the fanout's limits: free text to [`MAX_TEXT_BYTES`], lists to a few
    /// dozen entries. Applied on publish and on receipt, so a record is always small.
    pub fn bounded(mut self) -> Self {
        for name in [
            &mut self.origin,
            &mut self.sys_id,
            &mut self.number,
            &mut self.outcome,
        ] {
            clip(name, MAX_NAME_BYTES);
        }
        for text in [
            self.short_description.as_mut(),
            self.error.as_mut(),
            self.reason.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            clip(text, MAX_TEXT_BYTES);
        }
        self.event_ids.truncate(MAX_LIST);
        self.plans.truncate(MAX_LIST);
        for name in self.event_ids.iter_mut().chain(self.plans.iter_mut()) {
            clip(name, MAX_NAME_BYTES);
        }
        self.actions.truncate(MAX_ACTIONS);
        for action in &mut self.actions {
            for name in [
                &mut action.plan,
                &mut action.action,
                &mut action.kind,
                &mut action.result,
            ] {
                clip(name, MAX_NAME_BYTES);
            }
            clip(&mut action.detail, MAX_TEXT_BYTES);
        }
        self
    }
}

/// How the fanout reaches other processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ActivityLink {
    /// The memory backend: records stay in this process.
    InProcess,
    /// Connected to the broker: records are shared with every process of the deployment.
    Connected,
    /// Not connected right now (reconnecting); this process still sees its own records.
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// State shared by the handles and the link task.
pub(crate) struct Shared {
    pub(crate) origin: String,
    pub(crate) local: broadcast::Sender<Arc<ActivityRecord>>,
    pub(crate) link: watch::Sender<ActivityLink>,
    pub(crate) dropped: AtomicU64,
}

impl Shared {
    /// Hands a record to this process's subscribers (none listening is fine).
    pub(crate) fn deliver_locally(&self, record: Arc<ActivityRecord>) {
        let _ = self.local.send(record);
    }

    pub(crate) fn set_link(&self, link: ActivityLink) {
        self.link.send_if_modified(|current| {
            if *current == link {
                false
            } else {
                *current = link;
                true
            }
        });
    }
}

/// Publishes and receives activity. Cheap to clone; clones share one link.
#[derive(Clone)]
pub struct ActivityFanout {
    shared: Arc<Shared>,
    outbound: Option<mpsc::Sender<Vec<u8>>>,
}

impl std::fmt::Debug for ActivityFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityFanout")
            .field("origin", &self.shared.origin)
            .field("link", &*self.shared.link.borrow())
            .finish_non_exhaustive()
    }
}

impl ActivityFanout {
    fn with_link(link: ActivityLink) -> (Self, Arc<Shared>) {
        let (local, _) = broadcast::channel(LOCAL_CAPACITY);
        let shared = Arc::new(Shared {
            origin: format!("{:016x}", rand::random::<u64>()),
            local,
            link: watch::Sender::new(link),
            dropped: AtomicU64::new(0),
        });
        (
            ActivityFanout {
                shared: shared.clone(),
                outbound: None,
            },
            shared,
        )
    }

    /// A fanout that stays inside this process (the memory backend, tests).
    pub fn in_process() -> Self {
        Self::with_link(ActivityLink::InProcess).0
    }

    /// The fanout for `config`: in-process for the memory backend; for RabbitMQ, a link task on
    /// its own connection that runs (and reconnects) until `shutdown` is cancelled or every
    /// handle is dropped. An unreachable broker is not an error: the link keeps trying.
    /// Must be called inside a tokio runtime.
    pub fn connect(config: &QueueConfig, shutdown: CancellationToken) -> Result<Self, QueueError> {
        config.validate()?;
        if config.kind == QueueKind::Memory {
            return Ok(Self::in_process());
        }
        let uri = crate::amqp::uri::parse(&config.url, config.heartbeat, config.connect_timeout)?;
        let (mut fanout, shared) = Self::with_link(ActivityLink::Disconnected {
            reason: "connecting".to_owned(),
        });
        let (sender, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
        fanout.outbound = Some(sender);
        let link = link::Link::new(config, uri, shared, receiver, shutdown);
        tokio::spawn(link.run());
        Ok(fanout)
    }

    /// This process's random id, carried by every record it publishes.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// Publishes a record: this process's subscribers get it at once; other processes get it
    /// through the broker when the link is up. Never waits, never fails: a record that cannot
    /// be queued for the broker is dropped and counted ([`ActivityFanout::dropped`]).
    pub fn publish(&self, record: ActivityRecord) {
        let mut record = record.bounded();
        record.origin.clone_from(&self.shared.origin);
        if let Some(outbound) = &self.outbound {
            match serde_json::to_vec(&record) {
                Ok(body) => {
                    if outbound.try_send(body).is_err() {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.shared.deliver_locally(Arc::new(record));
    }

    /// Every record published from now on, by this process or (over the broker) another one.
    /// A subscriber that falls far behind skips the oldest records
    /// ([`broadcast::error::RecvError::Lagged`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ActivityRecord>> {
        self.shared.local.subscribe()
    }

    /// How the fanout reaches other processes right now.
    pub fn link(&self) -> ActivityLink {
        self.shared.link.borrow().clone()
    }

    /// Link changes.
    pub fn link_watch(&self) -> watch::Receiver<ActivityLink> {
        self.shared.link.subscribe()
    }

    /// Records not sent to the broker because the link was down or behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}
