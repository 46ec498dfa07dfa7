//! Confirmed publishes.
//!
//! A publish is `Ok` only on `Confirmation::Ack(None)`: the broker stored the message (for a
//! quorum queue, on a majority of its replicas). Every other outcome is a distinct
//! [`PublishError`], and the whole exchange with the broker (writing the frames and waiting
//! for the confirm) is bounded by `publish_timeout`. Publishing without a live session fails
//! at once: the ingress should answer 503 now, not after a reconnect.

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};
use nowpilot_model::EventEnvelope;
use nowpilot_model::partition::partition_of;
use tokio::time::Instant;

use super::headers::event_properties;
use super::{Shared, short};
use crate::error::PublishError;
use crate::telemetry;
use crate::topology::Topology;

/// Publishes a fresh event to its partition (the ingress's and poller's path).
pub(crate) async fn publish_event(
    shared: &Shared,
    event: &EventEnvelope,
) -> Result<(), PublishError> {
    let started = Instant::now();
    let result = publish_event_inner(shared, event).await;
    telemetry::published(&result, started.elapsed());
    result
}

async fn publish_event_inner(shared: &Shared, event: &EventEnvelope) -> Result<(), PublishError> {
    if shared.shutdown.is_cancelled() {
        return Err(PublishError::ShuttingDown);
    }
    let message_id = short(event.event_id.as_str()).ok_or_else(|| PublishError::InvalidEvent {
        reason: "the event id is longer than 255 bytes".to_owned(),
    })?;
    let body = serde_json::to_vec(event).map_err(|e| PublishError::InvalidEvent {
        reason: e.to_string(),
    })?;
    let partition = partition_of(&event.sys_id, shared.topology.partitions());
    publish_raw(
        shared,
        &shared.topology.events_exchange(),
        &Topology::routing_key(partition),
        &body,
        event_properties(message_id),
    )
    .await
}

/// Publishes `body` with `properties` (mandatory, confirmed) on the current session. Also used
/// for retry and dead-letter copies and replays, which must still work while shutdown drains.
pub(crate) async fn publish_raw(
    shared: &Shared,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let Some(session) = shared.live_session() else {
        let reason = shared
            .readiness()
            .reason
            .unwrap_or_else(|| "not connected to the broker".to_owned());
        return Err(PublishError::Unavailable { reason });
    };
    if let Some(reason) = session.blocked() {
        return Err(PublishError::Unavailable {
            reason: format!("the broker blocked publishing: {reason}"),
        });
    }
    let Some(channel) = session.publisher() else {
        session.fail("no publisher channel is open");
        return Err(PublishError::Unavailable {
            reason: "no publisher channel is open".to_owned(),
        });
    };
    let (Some(exchange), Some(routing_key)) = (short(exchange), short(routing_key)) else {
        return Err(PublishError::InvalidEvent {
            reason: "exchange or routing key longer than 255 bytes".to_owned(),
        });
    };
    // Counted until the confirm (or the failure) so that shutdown can wait for it.
    let _in_flight = shared.publishes.token();
    let bound = shared.config.publish_timeout;
    let exchange_with_broker = async {
        let confirm = channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    // Return the message instead of dropping it when no queue is bound: an
                    // unroutable event is a topology bug and must not look like a success.
                    mandatory: true,
                    // Not supported by RabbitMQ.
                    immediate: false,
                },
                body,
                properties,
            )
            .await?;
        confirm.await
    };
    match tokio::time::timeout(bound, exchange_with_broker).await {
        Err(_) => Err(PublishError::Timeout { after: bound }),
        Ok(Err(error)) => Err(PublishError::ChannelClosed {
            reason: error.to_string(),
        }),
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(Confirmation::Ack(Some(returned)))) => {
            session.topology_damaged();
            Err(PublishError::Unroutable {
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.to_string(),
            })
        }
        Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
        // Every publisher channel is put in confirm mode before it is used, so this means the
        // channel was replaced underneath us: not a success.
        Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::ChannelClosed {
            reason: "the channel is not in confirm mode".to_owned(),
        }),
    }
}
