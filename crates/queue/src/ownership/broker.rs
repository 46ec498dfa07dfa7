//! The coordination connection: one AMQP connection per worker that holds its partition locks
//! and carries its membership heartbeats.
//!
//! Why a connection of its own: the lock queues are exclusive to the connection that declared
//! them, so the broker deletes them the moment that connection dies — a SIGKILLed process, a
//! cut network (after the AMQP heartbeat timeout, kept short here), a broker restart. The event
//! connection of the backend reconnects on its own and resubscribes its consumers; if the locks
//! lived there, a rebuild would silently drop them while the resubscribed consumers ran on.
//! Keeping the locks apart makes "lock held" a fact the coordinator can watch, and the worker is
//! told to stop consuming as soon as the coordination connection is gone. The other direction
//! (consumers lost while the lock is held) is harmless: the broker requeues their deliveries, no
//! one else may consume the partition, and the backend resubscribes on its new session.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};

use super::membership::{Heartbeat, MAX_HEARTBEAT_BYTES};
use crate::amqp::{bounded, reply_code, timed, uri};
use crate::config::QueueConfig;
use crate::error::QueueError;
use crate::topology::Topology;

/// The lock queue of `partition`.
pub fn lock_queue(prefix: &str, partition: u16) -> String {
    format!("{prefix}.lock.p{partition}")
}

/// The fanout exchange heartbeats go through.
pub fn members_exchange(prefix: &str) -> String {
    format!("{prefix}.members")
}

/// What trying to take a lock found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LockAttempt {
    /// The lock is ours.
    Taken,
    /// Another connection holds it (RESOURCE_LOCKED).
    Held,
}

/// One coordination connection and its channels.
pub(crate) struct Coordination {
    connection: Connection,
    /// Heartbeats out and the members queue in.
    members: Channel,
    consumer: Consumer,
    /// Lock declarations; the broker closes it on RESOURCE_LOCKED, so it is reopened as needed.
    locks: Option<Channel>,
    /// Passive declarations of partition queues (consumer counts); reopened after a 404.
    inspect: Option<Channel>,
    prefix: String,
    bound: Duration,
}

impl Coordination {
    /// Connects, declares the members exchange and this member's own queue, and subscribes.
    pub(crate) async fn connect(
        config: &QueueConfig,
        member_id: &str,
        heartbeat: Duration,
    ) -> Result<Self, QueueError> {
        let bound = config.publish_timeout;
        let uri = uri::parse(&config.url, heartbeat, config.connect_timeout)?;
        let name = format!("nowpilot coordination ({}, {member_id})", config.prefix);
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection = match timed(
            config.connect_timeout,
            "connect",
            Connection::connect_uri(uri, properties),
        )
        .await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) if reply_code(&error) == Some(403) => {
                return Err(QueueError::AccessRefused {
                    url: config.redacted_url(),
                    reason: error.to_string(),
                });
            }
            Ok(Err(error)) => {
                return Err(QueueError::Connect {
                    url: config.redacted_url(),
                    reason: error.to_string(),
                });
            }
            Err(_) => {
                return Err(QueueError::Connect {
                    url: config.redacted_url(),
                    reason: format!("timed out after {:?}", config.connect_timeout),
                });
            }
        };
        match Self::subscribe(&connection, &config.prefix, bound).await {
            Ok((members, consumer)) => Ok(Coordination {
                connection,
                members,
                consumer,
                locks: None,
                inspect: None,
                prefix: config.prefix.clone(),
                bound,
            }),
            Err(error) => {
                let _ = timed(
                    bound,
                    "connection.close",
                    connection.close(200, "setup failed".into()),
                )
                .await;
                Err(error)
            }
        }
    }

    async fn subscribe(
        connection: &Connection,
        prefix: &str,
        bound: Duration,
    ) -> Result<(Channel, Consumer), QueueError> {
        let channel = bounded(bound, "channel.open", connection.create_channel()).await?;
        let exchange = members_exchange(prefix);
        // Transient and auto-deleted with its last member queue: membership is live state and
        // leaves nothing behind on the broker once every worker is gone.
        bounded(
            bound,
            "exchange.declare",
            channel.exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: false,
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        // A server-named queue only this connection sees, gone with it.
        let queue = bounded(
            bound,
            "queue.declare",
            channel.queue_declare(
                "".into(),
                QueueDeclareOptions::exclusive().auto_delete(),
                FieldTable::default(),
            ),
        )
        .await?;
        bounded(
            bound,
            "queue.bind",
            channel.queue_bind(
                queue.name().clone(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let consumer = bounded(
            bound,
            "basic.consume",
            channel.basic_consume(
                queue.name().clone(),
                "nowpilot-members".into(),
                // Heartbeats are state, not work: losing one is harmless, so no acks.
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        Ok((channel, consumer))
    }

    /// Whether the connection and the members channel are still up.
    pub(crate) fn alive(&self) -> bool {
        self.connection.status().connected() && self.members.status().connected()
    }

    /// The next heartbeat from anyone (this member's own included); `None` when the
    /// subscription ended (the connection or channel is gone).
    pub(crate) async fn next_heartbeat(&mut self) -> Option<Option<Heartbeat>> {
        match self.consumer.next().await {
            Some(Ok(delivery)) => Some(Heartbeat::parse(&delivery.data)),
            Some(Err(_)) | None => None,
        }
    }

    /// Publishes a heartbeat (no confirm: a lost one is replaced a second later).
    pub(crate) async fn publish(&self, beat: &Heartbeat) -> Result<(), QueueError> {
        let body = serde_json::to_vec(beat).map_err(|e| QueueError::Broker {
            operation: "basic.publish",
            reason: e.to_string(),
        })?;
        if body.len() > MAX_HEARTBEAT_BYTES {
            return Err(QueueError::Broker {
                operation: "basic.publish",
                reason: "the heartbeat is too large".to_owned(),
            });
        }
        bounded(
            self.bound,
            "basic.publish",
            self.members.basic_publish(
                members_exchange(&self.prefix).as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type("application/json".into()),
            ),
        )
        .await
        .map(drop)
    }

    async fn channel(
        slot: &mut Option<Channel>,
        connection: &Connection,
        bound: Duration,
    ) -> Result<Channel, QueueError> {
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = bounded(bound, "channel.open", connection.create_channel()).await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Tries to take the lock of `partition`: an exclusive queue declared on this connection.
    pub(crate) async fn try_lock(&mut self, partition: u16) -> Result<LockAttempt, QueueError> {
        let channel = Self::channel(&mut self.locks, &self.connection, self.bound).await?;
        let name = lock_queue(&self.prefix, partition);
        let declared = timed(
            self.bound,
            "queue.declare",
            channel.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::exclusive().auto_delete(),
                FieldTable::default(),
            ),
        )
        .await?;
        match declared {
            Ok(_) => Ok(LockAttempt::Taken),
            // RESOURCE_LOCKED: another connection declared it exclusively. The broker closed
            // this channel; the next attempt opens a new one.
            Err(error) if reply_code(&error) == Some(405) => Ok(LockAttempt::Held),
            Err(error) => Err(crate::amqp::lapin_error("queue.declare", &error)),
        }
    }

    /// Gives the lock of `partition` up.
    pub(crate) async fn unlock(&mut self, partition: u16) -> Result<(), QueueError> {
        let channel = Self::channel(&mut self.locks, &self.connection, self.bound).await?;
        let name = lock_queue(&self.prefix, partition);
        bounded(
            self.bound,
            "queue.delete",
            channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()),
        )
        .await
        .map(drop)
    }

    /// How many consumers the partition's queue has; `None` when the queue does not exist
    /// (the topology is not declared yet).
    pub(crate) async fn consumers(
        &mut self,
        topology: &Topology,
        partition: u16,
    ) -> Result<Option<u32>, QueueError> {
        let channel = Self::channel(&mut self.inspect, &self.connection, self.bound).await?;
        let name = topology.partition_queue(partition);
        let declared = timed(
            self.bound,
            "queue.declare",
            channel.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            ),
        )
        .await?;
        match declared {
            Ok(queue) => Ok(Some(queue.consumer_count())),
            Err(error) if reply_code(&error) == Some(404) => Ok(None),
            Err(error) => Err(crate::amqp::lapin_error("queue.declare", &error)),
        }
    }

    /// Closes the connection (the broker deletes every lock and the member queue with it).
    pub(crate) async fn close(&self) {
        if self.connection.status().connected() {
            let _ = timed(
                self.bound,
                "connection.close",
                self.connection.close(200, "leaving".into()),
            )
            .await;
        }
    }
}
