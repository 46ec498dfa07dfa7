//! Acquiring partitions and handing them over (see [`super`]): what stops, what is requeued,
//! and when a partition is reported released.

use std::time::Duration;

use nowpilot_queue::{Delivery, PartitionOwnership};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Lanes, SHUTDOWN_GRACE};
use crate::WorkerError;
use crate::reconcile::Verdict;
use crate::telemetry;

/// How long after abandoning a partition's passes the deadline is checked again.
const ABORT_RECHECK: Duration = Duration::from_secs(1);

/// A partition being handed over.
pub(super) struct Releasing {
    /// The lock is already gone: abandon running passes at once.
    pub(super) revoked: bool,
    /// When running passes are abandoned.
    pub(super) deadline: Instant,
    /// No delivery of it will come any more.
    pub(super) stream_done: bool,
}

impl Lanes {
    pub(super) async fn acquire(
        &mut self,
        partition: u16,
        shutdown: &CancellationToken,
    ) -> Result<(), WorkerError> {
        if self.streams.iter().any(|(p, _)| *p == partition) {
            return Ok(());
        }
        let stream = self.queue.consume(&[partition]).await?;
        self.streams.push((partition, stream));
        self.acquired_at.insert(partition, Instant::now());
        tracing::info!(partition, "consuming partition");
        if partition == 0 {
            self.poller.start(shutdown);
        }
        Ok(())
    }

    /// Starts handing `partition` over (see the module docs).
    pub(super) fn release(
        &mut self,
        partition: u16,
        revoked: bool,
        ownership: &PartitionOwnership,
    ) {
        if partition == 0 {
            self.poller.stop();
        }
        self.acquired_at.remove(&partition);
        let consuming = self.streams.iter().any(|(p, _)| *p == partition);
        let deadline = if revoked {
            Instant::now()
        } else {
            Instant::now() + SHUTDOWN_GRACE
        };
        match self.releasing.get_mut(&partition) {
            Some(releasing) => {
                releasing.revoked |= revoked;
                releasing.deadline = releasing.deadline.min(deadline);
            }
            None if !consuming => {
                ownership.released(partition);
                return;
            }
            None => {
                tracing::info!(partition, revoked, "handing partition over");
                self.releasing.insert(
                    partition,
                    Releasing {
                        revoked,
                        deadline,
                        stream_done: false,
                    },
                );
                let queue = self.queue.clone();
                tokio::spawn(async move {
                    if let Err(error) = queue.stop_consuming(&[partition]).await {
                        tracing::warn!(partition, %error, "stopping the partition's consumer failed; its channel closes when the stream ends");
                    }
                });
            }
        }
        // What waits behind running passes goes back to the queue now.
        let mut requeue = Vec::new();
        for waiting in self.busy.values_mut() {
            let (theirs, ours): (Vec<Delivery>, Vec<Delivery>) = std::mem::take(waiting)
                .into_iter()
                .partition(|d| d.partition == partition);
            *waiting = ours;
            requeue.extend(theirs);
        }
        self.waiting = self.waiting.saturating_sub(requeue.len());
        telemetry::lane_depth(self.waiting);
        for delivery in requeue {
            self.settle_alone(delivery, Verdict::Interrupted);
        }
        if revoked {
            self.enforce_deadlines();
        }
        self.check_release(partition, ownership);
    }

    /// Reports `partition` released once its stream ended and none of its passes runs.
    pub(super) fn check_release(&mut self, partition: u16, ownership: &PartitionOwnership) {
        let Some(releasing) = self.releasing.get(&partition) else {
            return;
        };
        let running = self.running.values().any(|r| r.partition == partition);
        if releasing.stream_done && !running {
            self.releasing.remove(&partition);
            tracing::info!(partition, "partition handed over");
            ownership.released(partition);
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.releasing
            .iter()
            .filter(|(p, _)| self.running.values().any(|r| r.partition == **p))
            .map(|(_, r)| r.deadline)
            .min()
    }

    /// Abandons the running passes of partitions whose hand-over deadline passed.
    pub(super) fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        for (partition, releasing) in &mut self.releasing {
            if releasing.deadline > now {
                continue;
            }
            for running in self.running.values().filter(|r| r.partition == *partition) {
                if !running.abort.is_finished() {
                    if !releasing.revoked {
                        tracing::warn!(partition, sys_id = %running.sys_id, "a pass still runs after the hand-over grace period; abandoning it (its events go back to the queue)");
                    }
                    running.abort.abort();
                }
            }
            // An abandoned pass ends at its next await; look again only if it somehow does not.
            releasing.deadline = now + ABORT_RECHECK;
        }
    }
}
