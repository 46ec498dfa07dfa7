//! The queue's public vocabulary: the two traits, deliveries and their settlement, readiness and
//! the operator views (depths, dead letters, replay).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nowpilot_model::{EventEnvelope, EventId};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::DropGuard;

use crate::error::{PublishError, QueueError, SettleError};
use crate::telemetry;
use crate::topology::{RetryTier, Topology};

/// Dead-letter reason codes written by nowpilot itself (workers add their own).
pub mod reasons {
    /// The message body is not an event envelope nowpilot can read.
    pub const MALFORMED: &str = "malformed";
    /// The broker dead-lettered the message after too many deliveries (poison message).
    pub const DELIVERY_LIMIT: &str = "delivery_limit";
    /// The dead letter carries no reason nowpilot understands.
    pub const UNKNOWN: &str = "unknown";
}

/// The most bytes of error text kept with a dead letter.
pub const MAX_ERROR_TEXT: usize = 1024;

/// The most bytes of a reason code.
pub const MAX_REASON_CODE: usize = 64;

/// Whether the backend can take publishes right now, and if not, why (for `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// True when a publish would be attempted (connected, topology declared, not blocked).
    pub ready: bool,
    /// Why not, when not ready.
    pub reason: Option<String>,
}

impl Readiness {
    /// Ready.
    pub fn ready() -> Self {
        Readiness {
            ready: true,
            reason: None,
        }
    }

    /// Not ready, because of `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Readiness {
            ready: false,
            reason: Some(reason.into()),
        }
    }
}

/// Messages waiting in each part of the topology (ready messages; deliveries not yet
/// acknowledged are not counted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueDepths {
    /// Per partition, index = partition number.
    pub partitions: Vec<u64>,
    /// Waiting in all retry tiers together.
    pub retry: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

/// One message of the dead-letter queue, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// The event, when the body is a readable envelope (`None` for malformed messages).
    pub event: Option<EventEnvelope>,
    /// The AMQP message id (the event id for everything nowpilot publishes).
    pub message_id: Option<String>,
    /// A short reason code (`malformed`, `delivery_limit`, or the worker's code).
    pub reason: String,
    /// The human-readable error, at most 1 KiB.
    pub error: Option<String>,
    /// When it was dead-lettered.
    pub dead_at: Option<DateTime<Utc>>,
    /// How many retries it had been through.
    pub attempt: u32,
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelector {
    /// Every dead letter that holds a readable event.
    All,
    /// Only these events (every dead letter of each id).
    Ids(Vec<EventId>),
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// The events re-published to their partitions and removed from the dead-letter queue.
    pub replayed: Vec<EventId>,
    /// Requested ids that were not in the dead-letter queue.
    pub not_found: Vec<EventId>,
    /// Dead letters left in place because their body is not a readable event.
    pub unreadable: usize,
}

/// Publishing events: all the ingress needs.
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Queues `event` on its partition. `Ok` only once the broker confirmed it durably stored;
    /// every other outcome is an error (and the caller must not acknowledge the event).
    async fn publish(&self, event: &EventEnvelope) -> Result<(), PublishError>;

    /// Whether publishes can succeed right now.
    fn readiness(&self) -> Readiness;

    /// Readiness changes, for health endpoints and gauges.
    fn readiness_watch(&self) -> watch::Receiver<Readiness>;
}

/// The whole queue: publishing, consuming and operations.
#[async_trait]
pub trait EventQueue: EventPublisher {
    /// The topology (prefix, partition count) this backend uses.
    fn topology(&self) -> &Topology;

    /// Starts consuming `partitions` and returns their deliveries as one stream. The stream
    /// survives reconnects (it re-subscribes the same partitions) and ends when all its
    /// partitions were stopped with [`EventQueue::stop_consuming`] or the backend shut down.
    /// Dropping the stream cancels its consumers; unsettled deliveries go back to the queue.
    async fn consume(&self, partitions: &[u16]) -> Result<DeliveryStream, QueueError>;

    /// Cancels this process's consumers of `partitions`: no new deliveries arrive for them.
    /// Deliveries already handed out stay valid until settled; each partition's channel closes
    /// once they all are (or are dropped, which requeues them).
    async fn stop_consuming(&self, partitions: &[u16]) -> Result<(), QueueError>;

    /// How many messages wait where.
    async fn depths(&self) -> Result<QueueDepths, QueueError>;

    /// Up to `limit` dead letters, oldest first, without removing them.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;

    /// Re-publishes dead letters to their partitions (as `source = replay`, attempt 0), then
    /// removes them from the dead-letter queue.
    async fn replay(&self, selector: ReplaySelector) -> Result<ReplayReport, QueueError>;

    /// Deletes every exchange and queue of the topology, with their messages. For tests and
    /// operators; this process's consumers are stopped first, but other processes would
    /// declare it again.
    async fn delete_topology(&self) -> Result<(), QueueError>;

    /// Resolves once the backend has shut down (after its shutdown token was cancelled):
    /// publishes drained, channels and connection closed.
    async fn closed(&self);
}

/// The backend-specific half of a delivery.
pub(crate) enum Settler {
    Amqp(crate::amqp::consume::AmqpSettler),
    Memory(crate::memory::MemorySettler),
}

/// One event handed to a consumer. Settle it exactly once with [`ack`](Delivery::ack),
/// [`retry`](Delivery::retry), [`dead_letter`](Delivery::dead_letter) or
/// [`requeue`](Delivery::requeue); a delivery dropped unsettled goes back to its queue.
pub struct Delivery {
    /// The event.
    pub envelope: EventEnvelope,
    /// The partition it came from.
    pub partition: u16,
    /// How many times it went through a retry tier (header `x-nowpilot-attempt`, default 0).
    pub attempt: u32,
    /// The broker delivered it before (to this or another consumer).
    pub redelivered: bool,
    /// The broker's delivery counter (`x-delivery-count`), when present.
    pub delivery_count: Option<u32>,
    settler: Option<Settler>,
}

impl Delivery {
    pub(crate) fn new(
        envelope: EventEnvelope,
        partition: u16,
        attempt: u32,
        redelivered: bool,
        delivery_count: Option<u32>,
        settler: Settler,
    ) -> Self {
        Delivery {
            envelope,
            partition,
            attempt,
            redelivered,
            delivery_count,
            settler: Some(settler),
        }
    }

    /// Done: removes the message from the queue. An error means nothing was removed (the
    /// delivery's channel is gone) and the broker will deliver it again.
    pub async fn ack(mut self) -> Result<(), SettleError> {
        let result = match self.settler.take() {
            Some(Settler::Amqp(s)) => s.ack().await,
            Some(Settler::Memory(s)) => s.ack(),
            None => Ok(()),
        };
        telemetry::settled("ack", &result);
        result
    }

    /// Try again after at least `delay`: a copy with `attempt + 1` goes to the smallest retry
    /// tier that is at least `delay` long (capped at the largest), and only once the broker
    /// confirmed the copy is the original acknowledged. Returns the tier used.
    pub async fn retry(mut self, delay: Duration, reason: &str) -> Result<RetryTier, SettleError> {
        let tier = RetryTier::for_delay(delay);
        let reason = truncate_utf8(reason, MAX_ERROR_TEXT);
        let attempt = self.attempt.saturating_add(1);
        let result = match self.settler.take() {
            Some(Settler::Amqp(s)) => s.retry(tier, reason, attempt).await,
            Some(Settler::Memory(s)) => s.retry(self.envelope.clone(), tier, attempt),
            None => Ok(()),
        };
        telemetry::settled("retry", &result);
        result.map(|()| tier)
    }

    /// Give up: a copy goes to the dead-letter queue with `reason_code` (a short code, at most
    /// 64 bytes) and `error_text` (at most 1 KiB kept), and once it is confirmed the original is
    /// acknowledged.
    pub async fn dead_letter(
        mut self,
        reason_code: &str,
        error_text: &str,
    ) -> Result<(), SettleError> {
        let reason = truncate_utf8(reason_code, MAX_REASON_CODE);
        let error = truncate_utf8(error_text, MAX_ERROR_TEXT);
        let result = match self.settler.take() {
            Some(Settler::Amqp(s)) => s.dead_letter(reason, error, self.attempt).await,
            Some(Settler::Memory(s)) => {
                s.dead_letter(self.envelope.clone(), reason, error, self.attempt)
            }
            None => Ok(()),
        };
        telemetry::settled("dead_letter", &result);
        result
    }

    /// Put it back at once (for shutdown): the broker delivers it again, marked redelivered.
    pub async fn requeue(mut self) -> Result<(), SettleError> {
        let result = match self.settler.take() {
            Some(Settler::Amqp(s)) => s.requeue().await,
            Some(Settler::Memory(s)) => s.requeue(),
            None => Ok(()),
        };
        telemetry::settled("requeue", &result);
        result
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // An unsettled delivery must not hold its prefetch slot forever: give it back.
        match self.settler.take() {
            Some(Settler::Amqp(s)) => s.release_on_drop(),
            Some(Settler::Memory(s)) => s.release_on_drop(),
            None => {}
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("event_id", &self.envelope.event_id)
            .field("partition", &self.partition)
            .field("attempt", &self.attempt)
            .field("redelivered", &self.redelivered)
            .field("delivery_count", &self.delivery_count)
            .finish_non_exhaustive()
    }
}

/// The deliveries of one [`EventQueue::consume`] call. Also a [`futures::Stream`].
pub struct DeliveryStream {
    receiver: mpsc::Receiver<Delivery>,
    _cancel_on_drop: DropGuard,
}

impl DeliveryStream {
    pub(crate) fn new(receiver: mpsc::Receiver<Delivery>, cancel_on_drop: DropGuard) -> Self {
        DeliveryStream {
            receiver,
            _cancel_on_drop: cancel_on_drop,
        }
    }

    /// The next delivery; `None` once every partition of the stream was stopped or the backend
    /// shut down.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }
}

impl futures::Stream for DeliveryStream {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.receiver.poll_recv(cx)
    }
}

impl fmt::Debug for DeliveryStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryStream").finish_non_exhaustive()
    }
}

// Workers move deliveries and streams into spawned tasks.
const _: () = {
    const fn assert_send_static<T: Send + 'static>() {}
    assert_send_static::<Delivery>();
    assert_send_static::<DeliveryStream>();
};

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or("")
}

/// Checks a partition list against the partition count; duplicates are dropped.
pub(crate) fn check_partitions(partitions: &[u16], count: u16) -> Result<Vec<u16>, QueueError> {
    let mut out = Vec::with_capacity(partitions.len());
    for &partition in partitions {
        if partition >= count {
            return Err(QueueError::InvalidPartition {
                partition,
                partitions: count,
            });
        }
        if !out.contains(&partition) {
            out.push(partition);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("abcdef", 3), "abc");
        // 'é' is two bytes: cutting inside it steps back.
        assert_eq!(truncate_utf8("aé", 2), "a");
        let long = "x".repeat(5000);
        assert_eq!(truncate_utf8(&long, MAX_ERROR_TEXT).len(), MAX_ERROR_TEXT);
    }

    #[test]
    fn partition_lists_are_checked() {
        assert_eq!(check_partitions(&[1, 0, 1], 2).unwrap(), vec![1, 0]);
        assert!(matches!(
            check_partitions(&[2], 2),
            Err(QueueError::InvalidPartition { partition: 2, .. })
        ));
    }
}
