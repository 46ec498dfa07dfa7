//! The activity link: one broker connection per process, rebuilt from scratch after any
//! failure, that publishes this process's records and reads everyone's.
//!
//! Every broker call is bounded by `publish_timeout`; a failed call ends the session and the
//! loop reconnects after a jittered backoff. Nothing here is awaited by a publisher: records
//! reach this task through a bounded channel that [`super::ActivityFanout::publish`] fills with
//! `try_send`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    ACTIVITY_QUEUE_MAX_LENGTH, ActivityLink, ActivityRecord, MAX_MESSAGE_BYTES, Shared,
    activity_exchange,
};
use crate::backoff::Backoff;
use crate::config::QueueConfig;

/// How often a session checks that its connection and channel are still open, in case no
/// operation noticed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The link task's state.
pub(super) struct Link {
    uri: AMQPUri,
    bound: Duration,
    exchange: String,
    queue_prefix: String,
    connection_name: String,
    shared: Arc<Shared>,
    outbound: mpsc::Receiver<Vec<u8>>,
    shutdown: CancellationToken,
    sessions: u64,
}

/// Why a session ended.
enum End {
    /// Shutdown was requested, or every fanout handle is gone.
    Stop,
    /// The broker side failed; reconnect.
    Lost(String),
}

impl Link {
    pub(super) fn new(
        config: &QueueConfig,
        uri: AMQPUri,
        shared: Arc<Shared>,
        outbound: mpsc::Receiver<Vec<u8>>,
        shutdown: CancellationToken,
    ) -> Self {
        let exchange = activity_exchange(&config.prefix);
        Link {
            uri,
            bound: config.publish_timeout,
            queue_prefix: format!("{exchange}.{}", shared.origin),
            exchange,
            connection_name: format!(
                "nowpilot {} activity ({}, pid {})",
                env!("CARGO_PKG_VERSION"),
                config.prefix,
                std::process::id()
            ),
            shared,
            outbound,
            shutdown,
            sessions: 0,
        }
    }

    /// Connects, serves, reconnects; returns on shutdown or when every handle is dropped.
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut was_connected = false;
        let mut warned: Option<String> = None;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let shutdown = self.shutdown.clone();
            let attempt = tokio::select! {
                () = shutdown.cancelled() => break,
                attempt = self.open() => attempt,
            };
            match attempt {
                Ok((connection, channel, consumer)) => {
                    backoff.reset();
                    warned = None;
                    info!(exchange = %self.exchange, "activity link connected");
                    self.shared.set_link(ActivityLink::Connected);
                    was_connected = true;
                    let end = self.serve(&connection, &channel, consumer).await;
                    close(&connection, &channel, self.bound).await;
                    match end {
                        End::Stop => break,
                        End::Lost(reason) => {
                            warn!(%reason, "activity link lost; reconnecting (events are not affected)");
                            self.shared.set_link(ActivityLink::Disconnected { reason });
                        }
                    }
                }
                Err(reason) => {
                    // Once per distinct reason: a broker that stays away must not flood the log.
                    if warned.as_deref() == Some(reason.as_str()) {
                        debug!(%reason, "activity link: still cannot connect");
                    } else {
                        warn!(%reason, reconnecting = was_connected, "activity link: cannot connect (events are not affected)");
                        warned = Some(reason.clone());
                    }
                    self.shared.set_link(ActivityLink::Disconnected { reason });
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
        self.shared.set_link(ActivityLink::Disconnected {
            reason: "shut down".to_owned(),
        });
    }

    /// One session: connection, exchange, this process's queue and its consumer.
    async fn open(&mut self) -> Result<(Connection, Channel, Consumer), String> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.connection_name.as_str().into());
        let connection = bounded(
            self.bound,
            "connect",
            Connection::connect_uri(self.uri.clone(), properties),
        )
        .await?;
        match self.declare(&connection).await {
            Ok((channel, consumer)) => Ok((connection, channel, consumer)),
            Err(reason) => {
                let _ = tokio::time::timeout(
                    self.bound,
                    connection.close(200, "activity setup failed".into()),
                )
                .await;
                Err(reason)
            }
        }
    }

    async fn declare(&mut self, connection: &Connection) -> Result<(Channel, Consumer), String> {
        let bound = self.bound;
        let channel = bounded(bound, "channel.open", connection.create_channel()).await?;
        bounded(
            bound,
            "exchange.declare",
            channel.exchange_declare(
                ShortString::from(self.exchange.as_str()),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    // Activity is ephemeral: nothing to keep across a broker restart.
                    durable: false,
                    // Deleted when the last subscriber queue unbinds, so it leaves nothing
                    // behind. A publisher always declares it again before publishing.
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        // A new name per session: the exclusive queue of a connection the broker has not yet
        // noticed is dead would otherwise refuse us with RESOURCE_LOCKED.
        self.sessions += 1;
        let queue = format!("{}-{}", self.queue_prefix, self.sessions);
        let mut args = FieldTable::default();
        // A small cap: a page shows the latest records, and a stalled process must not make
        // the broker hold an unbounded backlog for it. Overflow drops the oldest (the default
        // `drop-head` policy).
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongInt(ACTIVITY_QUEUE_MAX_LENGTH),
        );
        // Classic, stated explicitly: exclusive queues cannot be quorum queues, whatever the
        // vhost's default queue type.
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("classic".into()),
        );
        bounded(
            bound,
            "queue.declare",
            channel.queue_declare(
                ShortString::from(queue.as_str()),
                QueueDeclareOptions {
                    // Only this connection may use it; deleted when the connection closes.
                    exclusive: true,
                    // And when its consumer goes away.
                    auto_delete: true,
                    durable: false,
                    ..QueueDeclareOptions::default()
                },
                args,
            ),
        )
        .await?;
        bounded(
            bound,
            "queue.bind",
            channel.queue_bind(
                ShortString::from(queue.as_str()),
                ShortString::from(self.exchange.as_str()),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let consumer = bounded(
            bound,
            "basic.consume",
            channel.basic_consume(
                ShortString::from(queue.as_str()),
                ShortString::from(format!("nowpilot-activity-{}", self.shared.origin).as_str()),
                BasicConsumeOptions {
                    // Automatic acks: a lost record is acceptable, a redelivered one useless.
                    no_ack: true,
                    exclusive: true,
                    no_local: false,
                    nowait: false,
                },
                FieldTable::default(),
            ),
        )
        .await?;
        Ok((channel, consumer))
    }

    /// Publishes outbound records and delivers inbound ones until something fails.
    async fn serve(
        &mut self,
        connection: &Connection,
        channel: &Channel,
        mut consumer: Consumer,
    ) -> End {
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        let shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return End::Stop,
                body = self.outbound.recv() => {
                    let Some(body) = body else { return End::Stop };
                    if let Err(reason) = self.publish(channel, &body).await {
                        return End::Lost(reason);
                    }
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => self.receive(&delivery.data),
                    Some(Err(error)) => return End::Lost(format!("consumer failed: {error}")),
                    None => return End::Lost("the broker cancelled the consumer".to_owned()),
                },
                _ = health.tick() => {
                    if !connection.status().connected() {
                        return End::Lost("the connection closed".to_owned());
                    }
                    if !channel.status().connected() {
                        return End::Lost("the channel closed".to_owned());
                    }
                }
            }
        }
    }

    async fn publish(&self, channel: &Channel, body: &[u8]) -> Result<(), String> {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            // Transient: activity is not worth a disk write.
            .with_delivery_mode(1)
            .with_app_id("nowpilot".into());
        // No confirm is awaited (the channel is not in confirm mode): dropping a record is fine.
        bounded(
            self.bound,
            "basic.publish",
            channel.basic_publish(
                ShortString::from(self.exchange.as_str()),
                ShortString::from(""),
                BasicPublishOptions {
                    // A fanout with no subscriber simply drops the record.
                    mandatory: false,
                    immediate: false,
                },
                body,
                properties,
            ),
        )
        .await
        .map(drop)
    }

    fn receive(&self, data: &[u8]) {
        if data.len() > MAX_MESSAGE_BYTES {
            debug!(bytes = data.len(), "activity: oversized message skipped");
            return;
        }
        match serde_json::from_slice::<ActivityRecord>(data) {
            // Our own records were delivered locally when published.
            Ok(record) if record.origin == self.shared.origin => {}
            Ok(record) => self.shared.deliver_locally(Arc::new(record.bounded())),
            Err(error) => debug!(%error, "activity: unreadable message skipped"),
        }
    }
}

/// Awaits a lapin call for at most `bound`; both failures become a reason string.
async fn bounded<T, F>(bound: Duration, operation: &str, future: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, lapin::Error>>,
{
    match tokio::time::timeout(bound, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{operation}: {error}")),
        Err(_) => Err(format!("{operation}: no answer within {bound:?}")),
    }
}

async fn close(connection: &Connection, channel: &Channel, bound: Duration) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(bound, channel.close(200, "done".into())).await;
    }
    if connection.status().connected() {
        let _ = tokio::time::timeout(bound, connection.close(200, "done".into())).await;
    }
}
