//! The coordinator task: keeps the coordination connection, hears and sends heartbeats, and
//! moves each partition through its states:
//!
//! ```text
//! Free ──lock taken──▶ Locked ──fences pass──▶ Owned ──not ours any more──▶ Releasing
//!  ▲                    │ (not ours: unlock)     │ (connection lost: Revoked)   │
//!  └────────────────────┴────────────────────────┴──── worker released, unlock ◀┘
//! ```
//!
//! Nothing here blocks on the worker: events go out on an unbounded channel and `released`
//! notices come back on another.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::broker::{Coordination, LockAttempt};
use super::membership::{Heartbeat, MemberView, Members};
use super::{LIVE_MEMBERS, OwnershipEvent, OwnershipSettings, PARTITIONS_OWNED, REBALANCES_TOTAL};
use crate::backoff::Backoff;
use crate::config::QueueConfig;
use crate::topology::Topology;

/// How often the state machine steps when nothing else happens.
const TICK: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not ours; try to lock it at `next_try` if it should be.
    Free { next_try: Instant },
    /// Our lock; waiting for the fences.
    Locked { since: Instant, warned: bool },
    /// The worker consumes it.
    Owned,
    /// The worker was told to stop; `lock` says whether a lock remains to delete.
    Releasing { lock: bool },
}

pub(crate) struct Coordinator {
    config: QueueConfig,
    topology: Topology,
    settings: OwnershipSettings,
    started_at: DateTime<Utc>,
    events: mpsc::UnboundedSender<OwnershipEvent>,
    released: mpsc::UnboundedReceiver<u16>,
    members_view: watch::Sender<Vec<MemberView>>,
    members: Members,
    slots: Vec<Slot>,
    connection: Option<Coordination>,
    /// No partition is locked before this: time to hear every live member first.
    warm_until: Instant,
    next_connect: Instant,
    next_heartbeat: Instant,
    backoff: Backoff,
}

impl Coordinator {
    pub(crate) fn new(
        config: QueueConfig,
        settings: OwnershipSettings,
        events: mpsc::UnboundedSender<OwnershipEvent>,
        released: mpsc::UnboundedReceiver<u16>,
        members_view: watch::Sender<Vec<MemberView>>,
    ) -> Self {
        let now = Instant::now();
        let topology = Topology::new(config.prefix.clone(), config.partitions);
        let members = Members::new(
            settings.member_id.clone(),
            settings.member_timeout,
            topology.partitions(),
        );
        Coordinator {
            slots: vec![Slot::Free { next_try: now }; usize::from(topology.partitions())],
            config,
            topology,
            settings,
            started_at: Utc::now(),
            events,
            released,
            members_view,
            members,
            connection: None,
            warm_until: now,
            next_connect: now,
            next_heartbeat: now,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
        }
    }

    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let connected = self.connection.is_some();
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(partition) = self.released.recv() => self.on_released(partition).await,
                beat = next_heartbeat(self.connection.as_mut()), if connected => match beat {
                    Some(Some(beat)) => {
                        if self.members.observe(beat, Instant::now()) {
                            self.step().await;
                        }
                    }
                    Some(None) => debug!("ignored a message on the members exchange that is not a heartbeat"),
                    None => self.lost("the membership subscription ended").await,
                },
                _ = tick.tick() => self.step().await,
            }
        }
        self.leave().await;
    }

    fn own_heartbeat(&self, leaving: bool) -> Heartbeat {
        let owned = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Slot::Owned | Slot::Releasing { .. }))
            .filter_map(|(p, _)| u16::try_from(p).ok())
            .collect();
        Heartbeat {
            id: self.settings.member_id.clone(),
            started_at: self.started_at,
            owned,
            partitions: self.topology.partitions(),
            leaving,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    async fn heartbeat(&mut self) {
        let beat = self.own_heartbeat(false);
        self.next_heartbeat = Instant::now() + self.settings.heartbeat_interval;
        let Some(connection) = self.connection.as_ref() else {
            return;
        };
        if let Err(error) = connection.publish(&beat).await {
            self.lost(&format!("cannot publish a heartbeat: {error}"))
                .await;
        }
    }

    fn emit(&self, event: OwnershipEvent) {
        let change = match event {
            OwnershipEvent::Acquired(p) => {
                info!(partition = p, member = %self.settings.member_id, "partition acquired");
                "acquired"
            }
            OwnershipEvent::Release(p) => {
                info!(partition = p, member = %self.settings.member_id, "partition handed over");
                "released"
            }
            OwnershipEvent::Revoked(p) => {
                warn!(partition = p, member = %self.settings.member_id, "partition lock lost; stopping its work at once");
                "revoked"
            }
        };
        metrics::counter!(REBALANCES_TOTAL, "change" => change).increment(1);
        // The receiver is gone only while the worker shuts down.
        let _ = self.events.send(event);
    }

    fn publish_view(&self) {
        let owned = self
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Owned))
            .count();
        metrics::gauge!(PARTITIONS_OWNED).set(owned as f64);
        let live = self.members.live_ids().len();
        metrics::gauge!(LIVE_MEMBERS).set(live as f64);
        let view = self
            .members
            .view(&self.own_heartbeat(false), Instant::now());
        self.members_view.send_if_modified(|current| {
            if *current == view {
                false
            } else {
                *current = view;
                true
            }
        });
    }

    async fn connect(&mut self) {
        let now = Instant::now();
        if now < self.next_connect {
            return;
        }
        match Coordination::connect(
            &self.config,
            &self.settings.member_id,
            self.settings.connection_heartbeat,
        )
        .await
        {
            Ok(connection) => {
                info!(member = %self.settings.member_id, "coordination connection up; listening for members before taking partitions");
                self.backoff.reset();
                self.connection = Some(connection);
                self.members.clear();
                // Two heartbeats' time to hear every live member before deciding anything.
                self.warm_until = Instant::now() + self.settings.heartbeat_interval * 2;
                self.heartbeat().await;
            }
            Err(error) => {
                let delay = self.backoff.next_delay();
                warn!(%error, retry_in = ?delay, "cannot open the coordination connection; no partition is consumed until it is up");
                self.next_connect = Instant::now() + delay;
            }
        }
    }

    /// The coordination connection is gone, and with it every lock.
    async fn lost(&mut self, reason: &str) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        warn!(%reason, "coordination connection lost: every partition lock is gone");
        let now = Instant::now();
        for partition in 0..self.topology.partitions() {
            let slot = &mut self.slots[usize::from(partition)];
            match *slot {
                Slot::Locked { .. } => *slot = Slot::Free { next_try: now },
                Slot::Owned | Slot::Releasing { .. } => {
                    *slot = Slot::Releasing { lock: false };
                    self.emit(OwnershipEvent::Revoked(partition));
                }
                Slot::Free { .. } => {}
            }
        }
        self.members.clear();
        self.next_connect = now + self.backoff.next_delay();
        self.publish_view();
        // Most likely dead already; closing must not delay the reconnect.
        let bound = self.config.publish_timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(bound, connection.close()).await;
        });
    }

    async fn on_released(&mut self, partition: u16) {
        let Some(slot) = self.slots.get(usize::from(partition)).copied() else {
            return;
        };
        let Slot::Releasing { lock } = slot else {
            return;
        };
        if lock
            && let Some(connection) = self.connection.as_mut()
            && let Err(error) = connection.unlock(partition).await
        {
            // A lock that cannot be deleted must not outlive this decision: dropping the
            // connection frees it (and every other lock, which the next step retakes).
            self.lost(&format!(
                "cannot delete the lock of partition {partition}: {error}"
            ))
            .await;
        }
        self.slots[usize::from(partition)] = Slot::Free {
            next_try: Instant::now() + self.settings.lock_retry,
        };
        debug!(partition, "partition released");
        self.publish_view();
        // Tell the next owner at once rather than at the next heartbeat.
        self.heartbeat().await;
    }

    async fn step(&mut self) {
        if self.connection.is_none() {
            self.connect().await;
        }
        if let Some(connection) = &self.connection
            && !connection.alive()
        {
            self.lost("the coordination connection closed").await;
            return;
        }
        let now = Instant::now();
        self.members.expire(now);
        if now >= self.next_heartbeat {
            self.heartbeat().await;
        }
        if self.connection.is_none() || now < self.warm_until {
            self.publish_view();
            return;
        }
        let mine = super::assign::partitions_of(
            self.topology.partitions(),
            &self.members.live_ids(),
            &self.settings.member_id,
        );
        let mut changed = false;
        for partition in 0..self.topology.partitions() {
            if self.connection.is_none() {
                break;
            }
            let wanted = mine.contains(&partition);
            changed |= self.step_partition(partition, wanted).await;
        }
        self.publish_view();
        if changed {
            self.heartbeat().await;
        }
    }

    /// Advances one partition; returns whether what this member claims changed.
    async fn step_partition(&mut self, partition: u16, wanted: bool) -> bool {
        let index = usize::from(partition);
        let now = Instant::now();
        match (self.slots[index], wanted) {
            (Slot::Free { next_try }, true) if now >= next_try => {
                let Some(connection) = self.connection.as_mut() else {
                    return false;
                };
                match connection.try_lock(partition).await {
                    Ok(LockAttempt::Taken) => {
                        debug!(partition, "lock taken; checking the previous owner is done");
                        self.slots[index] = Slot::Locked {
                            since: now,
                            warned: false,
                        };
                        // Check the fences at once: an uncontended start should not wait a tick.
                        return Box::pin(self.step_partition(partition, wanted)).await;
                    }
                    Ok(LockAttempt::Held) => {
                        self.slots[index] = Slot::Free {
                            next_try: now + self.settings.lock_retry,
                        };
                    }
                    Err(error) => {
                        warn!(partition, %error, "cannot try the partition lock");
                        self.slots[index] = Slot::Free {
                            next_try: now + self.settings.lock_retry,
                        };
                    }
                }
                false
            }
            (Slot::Locked { .. }, false) => {
                if let Some(connection) = self.connection.as_mut()
                    && let Err(error) = connection.unlock(partition).await
                {
                    self.lost(&format!(
                        "cannot delete the lock of partition {partition}: {error}"
                    ))
                    .await;
                    return false;
                }
                self.slots[index] = Slot::Free {
                    next_try: now + self.settings.lock_retry,
                };
                false
            }
            (Slot::Locked { since, warned }, true) => {
                if let Some(other) = self.members.claimed_by_other(partition) {
                    debug!(
                        partition,
                        member = other,
                        "waiting for the previous owner to finish"
                    );
                    return false;
                }
                let Some(connection) = self.connection.as_mut() else {
                    return false;
                };
                let consumers = match connection.consumers(&self.topology, partition).await {
                    Ok(Some(count)) => count,
                    Ok(None) => {
                        debug!(partition, "the partition queue does not exist yet");
                        return false;
                    }
                    Err(error) => {
                        warn!(partition, %error, "cannot inspect the partition queue");
                        return false;
                    }
                };
                let waited = now.saturating_duration_since(since);
                if consumers > 0 && waited < self.settings.takeover_grace {
                    if !warned && waited >= self.settings.takeover_grace / 2 {
                        warn!(
                            partition,
                            consumers,
                            "the partition still has consumers from a previous owner; waiting for them to go"
                        );
                        self.slots[index] = Slot::Locked {
                            since,
                            warned: true,
                        };
                    }
                    return false;
                }
                if consumers > 0 {
                    warn!(
                        partition,
                        consumers,
                        "taking the partition over although consumers remain: they belong to a process whose locks are gone (cut off, or not coordinating — every worker must use partition ownership)"
                    );
                }
                self.slots[index] = Slot::Owned;
                self.emit(OwnershipEvent::Acquired(partition));
                true
            }
            (Slot::Owned, false) => {
                self.slots[index] = Slot::Releasing { lock: true };
                self.emit(OwnershipEvent::Release(partition));
                false
            }
            _ => false,
        }
    }

    /// Shutdown: say goodbye so the others rebalance at once, then close (freeing the locks).
    async fn leave(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.publish(&self.own_heartbeat(true)).await;
            connection.close().await;
        }
        for slot in &mut self.slots {
            *slot = Slot::Free {
                next_try: Instant::now(),
            };
        }
        metrics::gauge!(PARTITIONS_OWNED).set(0.0);
        info!(member = %self.settings.member_id, "left the worker group");
    }
}

async fn next_heartbeat(connection: Option<&mut Coordination>) -> Option<Option<Heartbeat>> {
    match connection {
        Some(connection) => connection.next_heartbeat().await,
        None => std::future::pending().await,
    }
}
