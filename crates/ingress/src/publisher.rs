//! The seam between the ingress and the queue.
//!
//! The ingress only publishes: it holds an `Arc<dyn EventPublisher>` (the RabbitMQ backend,
//! the in-memory backend, or a test fake). This module re-exports the queue's vocabulary and
//! maps each publish failure to the ingress's answer.

use http::StatusCode;
pub use nowpilot_queue::{EventPublisher, PublishError, Readiness};

/// How a failed publish is answered.
pub(crate) struct PublishFailure {
    /// 503 when a later retry can succeed, 500 when the event itself cannot be queued.
    pub(crate) status: StatusCode,
    /// The stable `code` of the error body.
    pub(crate) code: &'static str,
}

/// The `result` label of `nowpilot_ingress_confirms_total` for a failed publish.
pub(crate) fn confirm_label(error: &PublishError) -> &'static str {
    error.metric_label()
}

/// The answer to a publish that was not confirmed.
pub(crate) fn failure(error: &PublishError) -> PublishFailure {
    let (status, code) = match error {
        PublishError::Unavailable { .. }
        | PublishError::ChannelClosed { .. }
        | PublishError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable"),
        PublishError::Timeout { .. } => (StatusCode::SERVICE_UNAVAILABLE, "publish_timeout"),
        PublishError::Nacked => (StatusCode::SERVICE_UNAVAILABLE, "publish_rejected"),
        // A missing topology is redeclared on the next reconnect (or by an operator): a later
        // retry can succeed, so this stays a 503 although the queue calls it not retryable.
        PublishError::Unroutable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "publish_unroutable"),
        PublishError::InvalidEvent { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "event_unpublishable")
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "publish_failed"),
    };
    PublishFailure { status, code }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_transient_failure_is_a_503() {
        let transient = [
            PublishError::Unavailable {
                reason: "not connected".into(),
            },
            PublishError::Timeout {
                after: Duration::from_secs(5),
            },
            PublishError::Nacked,
            PublishError::ShuttingDown,
            PublishError::Unroutable {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
            },
        ];
        for error in &transient {
            assert_eq!(
                failure(error).status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{error}"
            );
        }
        let invalid = PublishError::InvalidEvent {
            reason: "id too long".into(),
        };
        assert_eq!(failure(&invalid).status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
