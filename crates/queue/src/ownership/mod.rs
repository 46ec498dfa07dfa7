//! Partition ownership: each of the `P` partition queues is consumed by at most one worker at
//! a time, and the partitions spread evenly over the live workers.
//!
//! Three mechanisms, each with one job:
//!
//! - **Locks decide safety.** Partition `n` is owned by whoever holds the exclusive queue
//!   `{prefix}.lock.p{n}` on its coordination connection ([`broker`]). A second declarer gets
//!   `RESOURCE_LOCKED`; the broker deletes the queue when the holder's connection dies, so a
//!   SIGKILLed or cut-off worker loses its locks without doing anything. (Quorum queues on
//!   RabbitMQ 3.10 accept a second "exclusive" consumer, so consumer exclusivity cannot do this.)
//! - **Membership decides balance.** Every worker publishes a [`Heartbeat`] each
//!   `heartbeat_interval` on the fanout exchange `{prefix}.members` and hears everyone's through
//!   its own exclusive queue; members silent for `member_timeout` are gone. Rendezvous hashing
//!   with bounded loads ([`assign`]) over the live ids says who *should* own each partition.
//! - **Fences keep a handover clean.** A new lock holder starts consuming only once no other
//!   live member still lists the partition as owned and the partition queue has no consumer
//!   left (or, for a consumer whose process is unreachable, after `takeover_grace`).
//!
//! A worker gets its partitions as [`OwnershipEvent`]s from [`PartitionOwnership::next`]:
//! `Acquired(p)` → consume `p`; `Release(p)` → stop consuming `p`, let running passes finish
//! (or requeue what waits), then call [`PartitionOwnership::released`]; only then is the lock
//! deleted, so the next owner never overlaps a pass. `Revoked(p)` means the lock is already gone
//! (the coordination connection died): stop at once, abort running passes, and call
//! `released` too. The memory backend (one process) owns every partition
//! ([`PartitionOwnership::all`]).
//!
//! Metrics: `nowpilot_worker_partitions_owned`, `nowpilot_worker_rebalances_total{change}`
//! (`acquired`, `released`, `revoked`) and `nowpilot_worker_live_members`.

pub mod assign;
pub mod broker;
mod coordinator;
pub mod membership;

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use assign::{assign, partitions_of, weight};
pub use membership::{Heartbeat, MemberView};

use crate::config::{QueueConfig, QueueKind};
use crate::error::QueueError;

/// Gauge: partitions this worker consumes now.
pub const PARTITIONS_OWNED: &str = "nowpilot_worker_partitions_owned";
/// Counter: partitions acquired, released or revoked, by `change`.
pub const REBALANCES_TOTAL: &str = "nowpilot_worker_rebalances_total";
/// Gauge: live workers this worker knows of, itself included.
pub const LIVE_MEMBERS: &str = "nowpilot_worker_live_members";

/// Registers the metric descriptions.
pub fn describe() {
    metrics::describe_gauge!(PARTITIONS_OWNED, "Partitions this worker consumes");
    metrics::describe_counter!(
        REBALANCES_TOTAL,
        "Partitions acquired, released or revoked (lock lost), by change"
    );
    metrics::describe_gauge!(
        LIVE_MEMBERS,
        "Live workers seen through membership heartbeats"
    );
}

/// What the worker must do with a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnershipEvent {
    /// The partition is ours and its previous owner is done: consume it.
    Acquired(u16),
    /// Another worker should have it: stop consuming, let running passes finish or requeue
    /// their deliveries, then call [`PartitionOwnership::released`].
    Release(u16),
    /// The lock is already lost: stop at once (abort running passes, requeue everything), then
    /// call [`PartitionOwnership::released`].
    Revoked(u16),
}

/// Timing of the coordination. The defaults move partitions within a few seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipSettings {
    /// This process's member id; unique per process (the default adds the pid and a random
    /// suffix to the host name).
    pub member_id: String,
    /// How often a heartbeat is published (default 1 s).
    pub heartbeat_interval: Duration,
    /// How long a silent member counts as alive (default 3 s).
    pub member_timeout: Duration,
    /// How often a wanted but locked partition is tried again (default 500 ms).
    pub lock_retry: Duration,
    /// How long a new lock holder waits for consumers of a previous owner that cannot be
    /// reached any more before it consumes anyway (default 6 s).
    pub takeover_grace: Duration,
    /// The AMQP heartbeat of the coordination connection (default 2 s): how fast the broker
    /// notices a cut-off worker and frees its locks (about two of these).
    pub connection_heartbeat: Duration,
}

impl Default for OwnershipSettings {
    fn default() -> Self {
        OwnershipSettings {
            member_id: default_member_id(),
            heartbeat_interval: Duration::from_secs(1),
            member_timeout: Duration::from_secs(3),
            lock_retry: Duration::from_millis(500),
            takeover_grace: Duration::from_secs(6),
            connection_heartbeat: Duration::from_secs(2),
        }
    }
}

impl OwnershipSettings {
    /// Checks the timings against each other.
    pub fn validate(&self) -> Result<(), QueueError> {
        if self.member_id.trim().is_empty()
            || self.member_id.len() > membership::MAX_MEMBER_ID
            || self.member_id.chars().any(char::is_control)
        {
            return Err(QueueError::Config(format!(
                "the member id must be 1 to {} printable characters",
                membership::MAX_MEMBER_ID
            )));
        }
        if self.heartbeat_interval < Duration::from_millis(100) {
            return Err(QueueError::Config(
                "the membership heartbeat must be at least 100ms".to_owned(),
            ));
        }
        if self.member_timeout < self.heartbeat_interval * 2 {
            return Err(QueueError::Config(
                "the member timeout must be at least twice the membership heartbeat, or members flap".to_owned(),
            ));
        }
        if self.lock_retry.is_zero() || self.connection_heartbeat < Duration::from_secs(1) {
            return Err(QueueError::Config(
                "lock_retry must be positive and the connection heartbeat at least 1s".to_owned(),
            ));
        }
        Ok(())
    }
}

/// `{host}-{pid}-{random}`: the pod name on Kubernetes, unique even for two processes on one
/// host or a restarted process.
pub fn default_member_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 100 && !h.chars().any(char::is_control))
        .unwrap_or_else(|| "worker".to_owned());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// This worker's partitions, as a stream of events (see the module docs).
#[derive(Debug)]
pub struct PartitionOwnership {
    events: mpsc::UnboundedReceiver<OwnershipEvent>,
    released: mpsc::UnboundedSender<u16>,
    members: watch::Receiver<Vec<MemberView>>,
    /// Keeps the static variant's stream open; unused by the coordinated one.
    _events_sender: Option<mpsc::UnboundedSender<OwnershipEvent>>,
    stop: Option<DropGuard>,
    finished: CancellationToken,
}

impl PartitionOwnership {
    /// Owns every partition at once and forever (one process, or the memory backend).
    pub fn all(partitions: u16) -> Self {
        let every: Vec<u16> = (0..partitions.max(1)).collect();
        Self::fixed(&every)
    }

    /// Owns `partitions` at once and forever (a static split, tests).
    pub fn fixed(partitions: &[u16]) -> Self {
        let (sender, events) = mpsc::unbounded_channel();
        let mut given: Vec<u16> = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            if !given.contains(&partition) {
                given.push(partition);
                let _ = sender.send(OwnershipEvent::Acquired(partition));
            }
        }
        let (released, _) = mpsc::unbounded_channel();
        let finished = CancellationToken::new();
        finished.cancel();
        let (_, members) = watch::channel(Vec::new());
        metrics::gauge!(PARTITIONS_OWNED).set(given.len() as f64);
        metrics::gauge!(LIVE_MEMBERS).set(1.0);
        PartitionOwnership {
            events,
            released,
            members,
            _events_sender: Some(sender),
            stop: None,
            finished,
        }
    }

    /// Ownership driven by hand: the returned [`ManualOwnership`] sends the events and sees
    /// the `released` notices. For tests of a worker's hand-over, and for embedders with their
    /// own coordination.
    pub fn manual() -> (Self, ManualOwnership) {
        let (sender, events) = mpsc::unbounded_channel();
        let (released, released_rx) = mpsc::unbounded_channel();
        let finished = CancellationToken::new();
        finished.cancel();
        let (_, members) = watch::channel(Vec::new());
        let ownership = PartitionOwnership {
            events,
            released,
            members,
            _events_sender: None,
            stop: None,
            finished,
        };
        let control = ManualOwnership {
            events: sender,
            released: released_rx,
        };
        (ownership, control)
    }

    /// Ownership for the backend `config` names: coordinated over RabbitMQ for `amqp`, every
    /// partition for `memory`. For RabbitMQ this returns at once and keeps (re)connecting in
    /// the background; configuration problems are errors.
    pub fn start(config: &QueueConfig, settings: OwnershipSettings) -> Result<Self, QueueError> {
        match config.kind {
            QueueKind::Memory => Ok(Self::all(config.partitions)),
            QueueKind::Amqp => {
                config.validate()?;
                settings.validate()?;
                crate::amqp::uri::parse(
                    &config.url,
                    settings.connection_heartbeat,
                    config.connect_timeout,
                )?;
                describe();
                let (events_sender, events) = mpsc::unbounded_channel();
                let (released, released_rx) = mpsc::unbounded_channel();
                let (members_tx, members) = watch::channel(Vec::new());
                let stop = CancellationToken::new();
                let finished = CancellationToken::new();
                let coordinator = coordinator::Coordinator::new(
                    config.clone(),
                    settings,
                    events_sender,
                    released_rx,
                    members_tx,
                );
                let (stop_task, done) = (stop.clone(), finished.clone());
                tokio::spawn(async move {
                    coordinator.run(stop_task).await;
                    done.cancel();
                });
                Ok(PartitionOwnership {
                    events,
                    released,
                    members,
                    _events_sender: None,
                    stop: Some(stop.drop_guard()),
                    finished,
                })
            }
        }
    }

    /// The next event; `None` once ownership has ended (it was closed).
    pub async fn next(&mut self) -> Option<OwnershipEvent> {
        self.events.recv().await
    }

    /// Tells the coordinator a `Release`d or `Revoked` partition is no longer consumed and no
    /// pass of it runs: its lock may go.
    pub fn released(&self, partition: u16) {
        let _ = self.released.send(partition);
    }

    /// The live members (this process first), for status pages.
    pub fn members(&self) -> watch::Receiver<Vec<MemberView>> {
        self.members.clone()
    }

    /// Leaves: announces it to the other members and closes the coordination connection, which
    /// frees every lock. Call it after the worker stopped consuming and its passes ended.
    pub async fn close(mut self) {
        drop(self.stop.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.finished.cancelled()).await;
    }
}

/// The other end of [`PartitionOwnership::manual`].
#[derive(Debug)]
pub struct ManualOwnership {
    events: mpsc::UnboundedSender<OwnershipEvent>,
    released: mpsc::UnboundedReceiver<u16>,
}

impl ManualOwnership {
    /// Sends an event to the worker; `false` once the worker is gone.
    pub fn send(&self, event: OwnershipEvent) -> bool {
        self.events.send(event).is_ok()
    }

    /// The next partition the worker reported released; `None` once it is gone.
    pub async fn released(&mut self) -> Option<u16> {
        self.released.recv().await
    }

    /// A released partition if one was reported already.
    pub fn try_released(&mut self) -> Option<u16> {
        self.released.try_recv().ok()
    }
}

#[cfg(test)]
mod tests;
