//! Declaring the topology: idempotent, with byte-identical arguments from every process.
//!
//! Queue arguments are immutable on the broker: redeclaring a queue with different `x-…`
//! arguments fails with PRECONDITION_FAILED (and closes the channel). That is why every
//! argument below is a constant of this version, and why a mismatch becomes
//! [`QueueError::TopologyMismatch`] naming the queue rather than a bare channel error.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use tracing::warn;

use super::{bounded, lapin_error, reply_code, timed};
use crate::config::MAX_PARTITIONS;
use crate::error::QueueError;
use crate::topology::{RETRY_TIERS, RetryTier, Topology};

/// The poison-message cap of the partition queues: after this many deliveries the broker
/// dead-letters a message to `{prefix}.dlx`. RabbitMQ 4 applies 20 by default and, without a
/// dead-letter exchange, silently drops the message; 3.10 has no default. Setting it explicitly
/// gives the same behaviour on both.
pub const DELIVERY_LIMIT: i32 = 20;

/// The dead-letter queue's delivery limit: effectively none. Looking at dead letters
/// (`basic.get` then `basic.nack` with requeue) counts as a delivery on RabbitMQ 3.x and
/// 4.0–4.2, and RabbitMQ 4's default limit of 20 would silently drop a dead letter after 20
/// looks (the dead queue has no dead-letter exchange of its own). 3.10 rejects -1 ("no limit"),
/// so the largest signed 32-bit value stands in for it.
pub const DEAD_QUEUE_DELIVERY_LIMIT: i32 = i32::MAX;

/// A partition queue that exists beyond the configured partition count (the count was lowered):
/// its messages are no longer consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrandedQueue {
    /// The queue name.
    pub name: String,
    /// Ready messages in it when the topology was declared.
    pub messages: u32,
}

fn long(value: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.into()))
}

/// The arguments of every partition queue.
pub(crate) fn partition_queue_args(topology: &Topology) -> FieldTable {
    let mut args = FieldTable::default();
    // Replicated, Raft-based queue: a publish is confirmed only once a majority stored it.
    // Only settable at declaration (https://www.rabbitmq.com/docs/quorum-queues).
    args.insert("x-queue-type".into(), long("quorum"));
    // Where poison messages go when they exceed the delivery limit
    // (https://www.rabbitmq.com/docs/dlx).
    args.insert(
        "x-dead-letter-exchange".into(),
        long(topology.dead_letter_exchange()),
    );
    // Dead-letter with publisher-confirm semantics inside the broker, so a message is removed
    // from the partition only once the dead-letter queue has it (quorum queues, 3.10+).
    args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
    // Required by at-least-once dead-lettering; also means a full queue nacks publishes (the
    // ingress answers 503) instead of dropping the oldest message.
    args.insert("x-overflow".into(), long("reject-publish"));
    // Poison-message cap; see `DELIVERY_LIMIT`.
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(DELIVERY_LIMIT),
    );
    args
}

/// The arguments of the dead-letter queue.
pub(crate) fn dead_queue_args() -> FieldTable {
    let mut args = FieldTable::default();
    // Replicated like the partitions: a dead letter is the last copy of an event.
    args.insert("x-queue-type".into(), long("quorum"));
    // Peeking must never drop a dead letter; see `DEAD_QUEUE_DELIVERY_LIMIT`.
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(DEAD_QUEUE_DELIVERY_LIMIT),
    );
    args
}

/// The arguments of the delay queue of `tier`.
pub(crate) fn retry_queue_args(topology: &Topology, tier: RetryTier) -> FieldTable {
    let mut args = FieldTable::default();
    // Classic, stated explicitly so that a vhost whose default queue type is quorum does not
    // change the expiry semantics: a classic queue with a queue-wide TTL expires from the head
    // and dead-letters the expired message, the long-standing path on 3.x and 4.x alike.
    args.insert("x-queue-type".into(), long("classic"));
    // The delay: every message waits exactly this long (queue-wide TTL, in milliseconds).
    let ttl_ms = i32::try_from(tier.delay.as_millis()).unwrap_or(i32::MAX);
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl_ms));
    // Expired messages go back to the events exchange. No x-dead-letter-routing-key: the
    // broker then keeps the message's own routing key `p.{n}`, so it returns to its partition.
    args.insert(
        "x-dead-letter-exchange".into(),
        long(topology.events_exchange()),
    );
    args
}

/// The binding arguments of the delay queue of `tier` on the headers exchange.
pub(crate) fn retry_binding_args(tier: RetryTier) -> FieldTable {
    let mut args = FieldTable::default();
    // Match on every listed header (here just `tier`).
    args.insert("x-match".into(), long("all"));
    args.insert("tier".into(), long(tier.name));
    args
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        // Survives a broker restart.
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// Declares the whole topology on `connection`; every broker call is bounded by `bound`.
/// Returns the partition queues left over from a larger partition count.
pub(crate) async fn declare(
    connection: &Connection,
    topology: &Topology,
    bound: Duration,
) -> Result<Vec<StrandedQueue>, QueueError> {
    let channel = bounded(bound, "channel.open", connection.create_channel()).await?;
    let exchanges = [
        (topology.events_exchange(), ExchangeKind::Direct),
        (topology.dead_letter_exchange(), ExchangeKind::Fanout),
        (topology.retry_exchange(), ExchangeKind::Headers),
    ];
    for (name, kind) in exchanges {
        let declaring = channel.exchange_declare(
            ShortString::from(name.as_str()),
            kind,
            durable_exchange(),
            FieldTable::default(),
        );
        checked(&name, timed(bound, "exchange.declare", declaring).await)?;
    }

    declare_queue(&channel, &topology.dead_queue(), dead_queue_args(), bound).await?;
    bind(
        &channel,
        &topology.dead_queue(),
        &topology.dead_letter_exchange(),
        "",
        FieldTable::default(),
        bound,
    )
    .await?;

    for partition in 0..topology.partitions() {
        let queue = topology.partition_queue(partition);
        declare_queue(&channel, &queue, partition_queue_args(topology), bound).await?;
        let key = Topology::routing_key(partition);
        bind(
            &channel,
            &queue,
            &topology.events_exchange(),
            &key,
            FieldTable::default(),
            bound,
        )
        .await?;
    }

    for tier in RETRY_TIERS {
        let queue = topology.retry_queue(tier);
        declare_queue(&channel, &queue, retry_queue_args(topology, tier), bound).await?;
        bind(
            &channel,
            &queue,
            &topology.retry_exchange(),
            "",
            retry_binding_args(tier),
            bound,
        )
        .await?;
    }
    let _ = bounded(
        bound,
        "channel.close",
        channel.close(200, "declared".into()),
    )
    .await;

    let stranded = find_stranded(connection, topology, bound).await?;
    for queue in &stranded {
        warn!(
            queue = %queue.name,
            messages = queue.messages,
            partitions = topology.partitions(),
            "a partition queue exists beyond queue.partitions (was it lowered?): messages there are \
             stranded and will not be consumed; move them or restore the partition count"
        );
    }
    Ok(stranded)
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    args: FieldTable,
    bound: Duration,
) -> Result<(), QueueError> {
    let declaring = channel.queue_declare(
        ShortString::from(name),
        // Durable: the queue definition survives a broker restart (quorum queues must be).
        QueueDeclareOptions::durable(),
        args,
    );
    checked(name, timed(bound, "queue.declare", declaring).await).map(|_| ())
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
    bound: Duration,
) -> Result<(), QueueError> {
    let binding = channel.queue_bind(
        ShortString::from(queue),
        ShortString::from(exchange),
        ShortString::from(key),
        QueueBindOptions::default(),
        args,
    );
    checked(queue, timed(bound, "queue.bind", binding).await)
}

/// Turns PRECONDITION_FAILED on `name` into a [`QueueError::TopologyMismatch`].
fn checked<T>(
    name: &str,
    result: Result<Result<T, lapin::Error>, QueueError>,
) -> Result<T, QueueError> {
    match result? {
        Ok(value) => Ok(value),
        Err(error) if reply_code(&error) == Some(406) => Err(QueueError::TopologyMismatch {
            name: name.to_owned(),
            detail: error.to_string(),
        }),
        Err(error) => Err(lapin_error("declare", &error)),
    }
}

/// Passive-declares `{prefix}.events.p{n}` for n from P upwards until one is missing.
async fn find_stranded(
    connection: &Connection,
    topology: &Topology,
    bound: Duration,
) -> Result<Vec<StrandedQueue>, QueueError> {
    let mut stranded = Vec::new();
    let channel = bounded(bound, "channel.open", connection.create_channel()).await?;
    for partition in topology.partitions()..MAX_PARTITIONS {
        let name = topology.partition_queue(partition);
        let probe = channel.queue_declare(
            ShortString::from(name.as_str()),
            QueueDeclareOptions::durable().passive(),
            FieldTable::default(),
        );
        match timed(bound, "queue.declare", probe).await? {
            Ok(queue) => stranded.push(StrandedQueue {
                name,
                messages: queue.message_count(),
            }),
            // NOT_FOUND closed this channel; nothing beyond it either.
            Err(error) if reply_code(&error) == Some(404) => return Ok(stranded),
            Err(error) => return Err(lapin_error("queue.declare", &error)),
        }
    }
    let _ = bounded(bound, "channel.close", channel.close(200, "probed".into())).await;
    Ok(stranded)
}
