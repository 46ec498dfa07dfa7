//! Errors at the queue's boundary.
//!
//! Three enums for three callers: [`QueueError`] for setup and operations, [`PublishError`] for
//! the ingress's hot path (each variant is a distinct broker outcome, so the ingress can count
//! them), and [`SettleError`] for a worker settling a delivery. None of them ever carries the
//! broker password: URLs are redacted before they reach an error.

use std::time::Duration;

use thiserror::Error;

/// Setup, topology and operator errors.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The configuration is invalid; the message names the field.
    #[error("invalid queue configuration: {0}")]
    Config(String),
    /// The broker could not be reached or refused the connection.
    #[error("cannot connect to the broker at {url}: {reason}")]
    Connect {
        /// The broker URL, password redacted.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The broker refused the credentials or the vhost.
    #[error("the broker at {url} refused access: {reason}")]
    AccessRefused {
        /// The broker URL, password redacted.
        url: String,
        /// The broker's reply.
        reason: String,
    },
    /// An exchange or queue exists with other arguments than this version declares.
    #[error(
        "{name} exists on the broker with arguments that differ from this version's ({detail}); \
         arguments are immutable: delete it (after draining) or use another queue.prefix"
    )]
    TopologyMismatch {
        /// The exchange or queue.
        name: String,
        /// The broker's explanation.
        detail: String,
    },
    /// A broker operation did not finish in time.
    #[error("{operation} did not complete within {after:?}")]
    Timeout {
        /// The operation.
        operation: &'static str,
        /// The bound that elapsed.
        after: Duration,
    },
    /// The broker answered an operation with an error.
    #[error("{operation} failed: {reason}")]
    Broker {
        /// The operation.
        operation: &'static str,
        /// The broker's or the client's explanation.
        reason: String,
    },
    /// There is no live broker connection right now (the supervisor is reconnecting).
    #[error("not connected to the broker: {0}")]
    NotConnected(String),
    /// A partition number outside `0..partitions`.
    #[error("partition {partition} does not exist (there are {partitions})")]
    InvalidPartition {
        /// The partition asked for.
        partition: u16,
        /// The configured partition count.
        partitions: u16,
    },
    /// The backend is shutting down and accepts no more work.
    #[error("the queue backend is shutting down")]
    ShuttingDown,
}

impl QueueError {
    /// Whether trying again later can succeed (connection trouble), as opposed to a problem that
    /// needs a person (configuration, topology, permissions).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            QueueError::Connect { .. }
                | QueueError::Timeout { .. }
                | QueueError::Broker { .. }
                | QueueError::NotConnected(_)
        )
    }
}

/// Why a publish did not end with the broker's positive confirm. Only `Ok(())` means the event
/// is durably queued.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No live connection, the broker blocked publishing (memory or disk alarm), or the backend
    /// is reconnecting. Fails fast, without waiting for a reconnect.
    #[error("the queue is unavailable: {reason}")]
    Unavailable {
        /// Why (not connected, blocked, …).
        reason: String,
    },
    /// The broker did not confirm within `publish_timeout`. The message may still be queued.
    #[error("the broker did not confirm the publish within {after:?}")]
    Timeout {
        /// The bound that elapsed.
        after: Duration,
    },
    /// The broker refused the message (`basic.nack`), e.g. the queue is full.
    #[error("the broker refused the message (nack)")]
    Nacked,
    /// The broker confirmed but returned the message: no queue is bound for its routing key.
    /// This is a topology bug, not a transient fault.
    #[error("the message was unroutable ({reply_code} {reply_text}): the topology is missing")]
    Unroutable {
        /// AMQP reply code (312 NO_ROUTE).
        reply_code: u16,
        /// The broker's text.
        reply_text: String,
    },
    /// The channel or connection closed while the publish was under way. The message may or
    /// may not be queued.
    #[error("the channel closed during the publish: {reason}")]
    ChannelClosed {
        /// The client's or broker's explanation.
        reason: String,
    },
    /// The envelope cannot be sent (it does not serialise, or its id is too long for AMQP).
    #[error("the event cannot be published: {reason}")]
    InvalidEvent {
        /// What is wrong with it.
        reason: String,
    },
    /// The backend is shutting down and accepts no more publishes.
    #[error("the queue is shutting down")]
    ShuttingDown,
}

impl PublishError {
    /// Whether publishing the same event again later can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            PublishError::InvalidEvent { .. } | PublishError::Unroutable { .. }
        )
    }

    /// The `result` label of `nowpilot_queue_publish_total` for this outcome.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PublishError::Nacked => "nack",
            PublishError::Unroutable { .. } => "unroutable",
            PublishError::Timeout { .. } => "timeout",
            PublishError::Unavailable { .. }
            | PublishError::ChannelClosed { .. }
            | PublishError::ShuttingDown => "unavailable",
            PublishError::InvalidEvent { .. } => "invalid",
        }
    }
}

/// Why settling a delivery did not take effect. In every case the broker still holds the
/// message, so it will be delivered again (processing must be idempotent).
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The delivery came from a channel that has since closed (a reconnect happened): nothing
    /// was sent, and the broker will redeliver the message.
    #[error("the delivery's channel is gone ({reason}); the broker will redeliver it")]
    Stale {
        /// What closed the channel.
        reason: String,
    },
    /// The retry or dead-letter copy was not confirmed, so the original was not acknowledged.
    #[error("the {target} copy was not confirmed: {source}")]
    CopyNotConfirmed {
        /// `retry` or `dead_letter`.
        target: &'static str,
        /// The publish outcome.
        #[source]
        source: PublishError,
    },
    /// The acknowledgement did not go out within the bound.
    #[error("settling the delivery did not complete within {after:?}")]
    Timeout {
        /// The bound that elapsed.
        after: Duration,
    },
    /// The backend is shutting down.
    #[error("the queue is shutting down")]
    ShuttingDown,
}

impl SettleError {
    /// Whether the caller may treat the failure as transient. Always true today: the broker
    /// redelivers any message that was not settled.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_retryability() {
        assert_eq!(PublishError::Nacked.metric_label(), "nack");
        assert!(PublishError::Nacked.is_retryable());
        let unroutable = PublishError::Unroutable {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        };
        assert_eq!(unroutable.metric_label(), "unroutable");
        assert!(!unroutable.is_retryable());
        assert!(
            !QueueError::TopologyMismatch {
                name: "q".into(),
                detail: "d".into()
            }
            .is_retryable()
        );
        assert!(QueueError::NotConnected("x".into()).is_retryable());
    }
}
