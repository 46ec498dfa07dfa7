//! Operator views and actions: depths, dead letters, replay, declaring and deleting.
//!
//! Looking at dead letters must never lose one. `dead_letters` takes messages with `basic.get`
//! (manual ack), keeps them unacknowledged so the next get returns the next message, and then
//! gives them all back with one `basic.nack(multiple, requeue)`; if anything fails in between,
//! closing the channel returns them just the same. Each look counts as a delivery on
//! RabbitMQ 3.x and 4.0–4.2, which is why the dead-letter queue's delivery limit is set out of
//! reach (`declare::DEAD_QUEUE_DELIVERY_LIMIT`). A quorum queue applies such a requeue
//! asynchronously, so both operations wait (briefly) until the broker counts the messages again
//! before returning. Replay uses the same walk, acknowledging a dead letter only after its
//! re-publish was confirmed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use nowpilot_model::partition::partition_of;
use nowpilot_model::{EventEnvelope, EventId, EventSource};

use super::declare::{StrandedQueue, declare};
use super::headers::{self, event_properties};
use super::publish::publish_raw;
use super::session::Session;
use super::{Shared, bounded, reply_code, short, timed, uri};
use crate::api::{DeadLetter, QueueDepths, ReplayReport, ReplaySelector, reasons};
use crate::config::QueueConfig;
use crate::error::QueueError;
use crate::topology::{RETRY_TIERS, Topology};

/// The most dead letters one replay walks.
const REPLAY_WALK_CAP: usize = 1_000_000;

/// How long a look or replay waits for its requeued dead letters to be counted again.
const RETURN_SETTLE_BOUND: Duration = Duration::from_secs(2);

async fn ops_channel(shared: &Shared) -> Result<(Arc<Session>, Channel), QueueError> {
    let session = shared.live_session().ok_or_else(|| {
        QueueError::NotConnected(
            shared
                .readiness()
                .reason
                .unwrap_or_else(|| "no session".to_owned()),
        )
    })?;
    let bound = shared.config.publish_timeout;
    let channel = bounded(bound, "channel.open", session.connection.create_channel()).await?;
    Ok((session, channel))
}

async fn close(channel: &Channel, bound: Duration) {
    if channel.status().connected() {
        let _ = timed(bound, "channel.close", channel.close(200, "done".into())).await;
    }
}

/// The ready-message count of `queue` (passive declare).
async fn message_count(channel: &Channel, queue: &str, bound: Duration) -> Result<u32, QueueError> {
    let declared = timed(
        bound,
        "queue.declare",
        channel.queue_declare(
            queue.into(),
            QueueDeclareOptions::durable().passive(),
            FieldTable::default(),
        ),
    )
    .await?;
    match declared {
        Ok(queue) => Ok(queue.message_count()),
        Err(error) if reply_code(&error) == Some(404) => Err(QueueError::Broker {
            operation: "queue.declare",
            reason: format!("queue {queue} does not exist (the topology is not declared)"),
        }),
        Err(error) => Err(super::lapin_error("queue.declare", &error)),
    }
}

pub(crate) async fn depths(shared: &Shared) -> Result<QueueDepths, QueueError> {
    let (_session, channel) = ops_channel(shared).await?;
    let bound = shared.config.publish_timeout;
    let counted = async {
        let topology = &shared.topology;
        let mut partitions = Vec::with_capacity(usize::from(topology.partitions()));
        for partition in 0..topology.partitions() {
            let queue = topology.partition_queue(partition);
            partitions.push(u64::from(message_count(&channel, &queue, bound).await?));
        }
        let mut retry = 0;
        for tier in RETRY_TIERS {
            retry += u64::from(message_count(&channel, &topology.retry_queue(tier), bound).await?);
        }
        let dead = u64::from(message_count(&channel, &topology.dead_queue(), bound).await?);
        Ok(QueueDepths {
            partitions,
            retry,
            dead,
        })
    }
    .await;
    close(&channel, bound).await;
    counted
}

fn dead_letter_view(message: &lapin::message::Delivery) -> DeadLetter {
    let properties = &message.properties;
    let death = headers::first_death(properties);
    let reason = headers::string_header(properties, headers::REASON)
        .or_else(|| death.as_ref().and_then(|(reason, _)| reason.clone()))
        .unwrap_or_else(|| reasons::UNKNOWN.to_owned());
    let dead_at = headers::string_header(properties, headers::DEAD_AT)
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| death.and_then(|(_, time)| time));
    DeadLetter {
        event: serde_json::from_slice(&message.data).ok(),
        message_id: properties.message_id().as_ref().map(|m| m.to_string()),
        reason,
        error: headers::string_header(properties, headers::ERROR),
        dead_at,
        attempt: headers::int_header(properties, headers::ATTEMPT).unwrap_or(0),
    }
}

async fn get(
    channel: &Channel,
    queue: &str,
    bound: Duration,
) -> Result<Option<lapin::message::Delivery>, QueueError> {
    let got = bounded(
        bound,
        "basic.get",
        // Manual ack: nothing leaves the queue until acknowledged.
        channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }),
    )
    .await?;
    Ok(got.map(|message| message.delivery))
}

/// Returns every unacknowledged message up to `tag` to the queue.
async fn give_back(channel: &Channel, tag: u64, bound: Duration) -> Result<(), QueueError> {
    bounded(
        bound,
        "basic.nack",
        channel.basic_nack(
            tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        ),
    )
    .await
}

pub(crate) async fn dead_letters(
    shared: &Shared,
    limit: usize,
) -> Result<Vec<DeadLetter>, QueueError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let (_session, channel) = ops_channel(shared).await?;
    let bound = shared.config.publish_timeout;
    let queue = shared.topology.dead_queue();
    let looked = async {
        let mut letters = Vec::new();
        let mut last_tag = None;
        while letters.len() < limit {
            let Some(message) = get(&channel, &queue, bound).await? else {
                break;
            };
            last_tag = Some(message.delivery_tag);
            letters.push(dead_letter_view(&message));
        }
        if let Some(tag) = last_tag {
            give_back(&channel, tag, bound).await?;
        }
        Ok(letters)
    }
    .await;
    // Also returns anything still unacknowledged if the walk failed half-way.
    close(&channel, bound).await;
    if let Ok(letters) = &looked {
        settle_returns(shared, &queue, letters.len()).await;
    }
    looked
}

/// Waits (briefly, bounded) until the broker counts at least `at_least` ready messages in
/// `queue` again. A quorum queue applies a requeue asynchronously, after the nack was sent, so
/// a `replay` right after a look could otherwise miss the dead letters just looked at.
async fn settle_returns(shared: &Shared, queue: &str, at_least: usize) {
    if at_least == 0 {
        return;
    }
    let Ok((_session, channel)) = ops_channel(shared).await else {
        return;
    };
    let bound = shared.config.publish_timeout;
    let deadline = tokio::time::Instant::now() + RETURN_SETTLE_BOUND;
    while tokio::time::Instant::now() < deadline {
        match message_count(&channel, queue, bound).await {
            Ok(count) if usize::try_from(count).unwrap_or(usize::MAX) >= at_least => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => break,
        }
    }
    close(&channel, bound).await;
}

pub(crate) async fn replay(
    shared: &Shared,
    selector: ReplaySelector,
) -> Result<ReplayReport, QueueError> {
    let (_session, channel) = ops_channel(shared).await?;
    let bound = shared.config.publish_timeout;
    let outcome = replay_on(shared, &channel, selector, bound).await;
    close(&channel, bound).await;
    outcome
}

async fn replay_on(
    shared: &Shared,
    channel: &Channel,
    selector: ReplaySelector,
    bound: Duration,
) -> Result<ReplayReport, QueueError> {
    let queue = shared.topology.dead_queue();
    let wanted: Option<BTreeSet<EventId>> = match selector {
        ReplaySelector::All => None,
        ReplaySelector::Ids(ids) => Some(ids.into_iter().collect()),
    };
    let mut report = ReplayReport::default();
    let mut last_held = None;
    let mut held = 0usize;
    // Held messages are not returned by later gets, so the walk ends when the queue is empty;
    // the cap only guards against a queue refilled faster than it is walked.
    for _ in 0..REPLAY_WALK_CAP {
        let Some(message) = get(channel, &queue, bound).await? else {
            break;
        };
        let tag = message.delivery_tag;
        let Ok(mut event) = serde_json::from_slice::<EventEnvelope>(&message.data) else {
            report.unreadable += 1;
            last_held = Some(tag);
            held += 1;
            continue;
        };
        if wanted
            .as_ref()
            .is_some_and(|w| !w.contains(&event.event_id))
        {
            last_held = Some(tag);
            held += 1;
            continue;
        }
        event.source = EventSource::Replay;
        let republished = republish(shared, &event).await;
        match republished {
            Ok(()) => {
                bounded(
                    bound,
                    "basic.ack",
                    channel.basic_ack(tag, BasicAckOptions { multiple: false }),
                )
                .await?;
                report.replayed.push(event.event_id);
            }
            Err(reason) => {
                // Everything not replayed (this one included) goes back to the queue.
                give_back(channel, tag, bound).await?;
                return Err(QueueError::Broker {
                    operation: "replay",
                    reason: format!("re-publishing {} failed: {reason}", event.event_id),
                });
            }
        }
    }
    if let Some(tag) = last_held {
        give_back(channel, tag, bound).await?;
        settle_returns(shared, &queue, held).await;
    }
    if let Some(wanted) = wanted {
        let seen: BTreeSet<&EventId> = report.replayed.iter().collect();
        report.not_found = wanted.into_iter().filter(|id| !seen.contains(id)).collect();
    }
    Ok(report)
}

async fn republish(shared: &Shared, event: &EventEnvelope) -> Result<(), String> {
    let message_id = short(event.event_id.as_str()).ok_or("the event id is too long")?;
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let partition = partition_of(&event.sys_id, shared.topology.partitions());
    publish_raw(
        shared,
        &shared.topology.events_exchange(),
        &Topology::routing_key(partition),
        &body,
        event_properties(message_id),
    )
    .await
    .map_err(|e| e.to_string())
}

pub(crate) async fn delete_with_session(shared: &Shared) -> Result<(), QueueError> {
    let session = shared.live_session().ok_or_else(|| {
        QueueError::NotConnected("cannot delete the topology while disconnected".to_owned())
    })?;
    delete_names(
        &session.connection,
        &shared.topology,
        shared.config.publish_timeout,
    )
    .await
}

/// Deletes every queue and exchange of `topology`; missing ones are fine.
async fn delete_names(
    connection: &Connection,
    topology: &Topology,
    bound: Duration,
) -> Result<(), QueueError> {
    let names = topology.names();
    let mut channel = bounded(bound, "channel.open", connection.create_channel()).await?;
    for queue in &names.queues {
        let deleted = timed(
            bound,
            "queue.delete",
            channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
        )
        .await?;
        match deleted {
            Ok(_) => {}
            // Already gone; NOT_FOUND closed the channel.
            Err(error) if reply_code(&error) == Some(404) => {
                channel = bounded(bound, "channel.open", connection.create_channel()).await?;
            }
            Err(error) => return Err(super::lapin_error("queue.delete", &error)),
        }
    }
    for exchange in &names.exchanges {
        let deleted = timed(
            bound,
            "exchange.delete",
            channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()),
        )
        .await?;
        match deleted {
            Ok(()) => {}
            Err(error) if reply_code(&error) == Some(404) => {
                channel = bounded(bound, "channel.open", connection.create_channel()).await?;
            }
            Err(error) => return Err(super::lapin_error("exchange.delete", &error)),
        }
    }
    close(&channel, bound).await;
    Ok(())
}

async fn one_off_connection(config: &QueueConfig) -> Result<Connection, QueueError> {
    config.validate()?;
    let uri = uri::parse(&config.url, config.heartbeat, config.connect_timeout)?;
    let properties = ConnectionProperties::default().with_connection_name("nowpilot admin".into());
    let connecting = Connection::connect_uri(uri, properties);
    timed(config.connect_timeout, "connect", connecting)
        .await?
        .map_err(|error| QueueError::Connect {
            url: config.redacted_url(),
            reason: error.to_string(),
        })
}

async fn close_connection(connection: &Connection, config: &QueueConfig) {
    let _ = timed(
        config.publish_timeout,
        "connection.close",
        connection.close(200, "done".into()),
    )
    .await;
}

/// Declares the topology of `config` once, on a short-lived connection (for the CLI and tests).
/// Returns partition queues stranded beyond the configured count.
pub async fn declare_topology(config: &QueueConfig) -> Result<Vec<StrandedQueue>, QueueError> {
    let connection = one_off_connection(config).await?;
    let topology = Topology::new(config.prefix.clone(), config.partitions);
    let declared = declare(&connection, &topology, config.publish_timeout).await;
    close_connection(&connection, config).await;
    declared
}

/// Deletes the topology of `config` (with its messages) on a short-lived connection. Missing
/// queues and exchanges are not an error.
pub async fn delete_topology(config: &QueueConfig) -> Result<(), QueueError> {
    let connection = one_off_connection(config).await?;
    let topology = Topology::new(config.prefix.clone(), config.partitions);
    let deleted = delete_names(&connection, &topology, config.publish_timeout).await;
    close_connection(&connection, config).await;
    deleted
}
