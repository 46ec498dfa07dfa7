//! Partition consumers and the settlement of their deliveries.
//!
//! Each consumed partition is one task with its own channel (so a per-consumer prefetch is a
//! per-channel one, and a channel error on one partition touches no other). The task follows the
//! sessions: when the session breaks it waits for the next one and subscribes again, so a
//! [`DeliveryStream`] survives reconnects. A consumer that ends while nobody asked it to
//! (`basic.cancel` from the broker, e.g. its queue was deleted) fails the session, so the
//! supervisor redeclares the topology before the task subscribes again.
//!
//! Settlement follows one rule: a retry or dead-letter copy is confirmed by the broker before the
//! original is acknowledged. A crash in between leaves both (a harmless duplicate), never
//! neither.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Acker, BasicProperties, Channel, Consumer};
use nowpilot_model::EventEnvelope;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::headers::{self, copied_properties, long};
use super::publish::publish_raw;
use super::session::Session;
use super::{Shared, bounded, timed};
use crate::api::{Delivery, DeliveryStream, Settler, check_partitions, reasons};
use crate::error::{QueueError, SettleError};
use crate::topology::{RetryTier, Topology};

/// The partition consumers of one backend.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) tasks: TaskTracker,
    subscriptions: Mutex<Vec<Arc<Subscription>>>,
    next_id: AtomicU64,
}

struct Subscription {
    id: u64,
    partition: u16,
    /// Cancelled by `stop_consuming`.
    stop: CancellationToken,
    /// Cancelled once no further delivery will come (after `basic.cancel-ok`, or at task end).
    finished: CancellationToken,
}

impl Registry {
    fn add(&self, partition: u16) -> Arc<Subscription> {
        let subscription = Arc::new(Subscription {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            partition,
            stop: CancellationToken::new(),
            finished: CancellationToken::new(),
        });
        self.lock().push(subscription.clone());
        subscription
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
    }

    fn of(&self, partitions: &[u16]) -> Vec<Arc<Subscription>> {
        self.lock()
            .iter()
            .filter(|s| partitions.contains(&s.partition))
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Subscription>>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts one consumer task per partition, all feeding one stream.
pub(crate) fn consume(
    shared: &Arc<Shared>,
    partitions: &[u16],
) -> Result<DeliveryStream, QueueError> {
    if shared.shutdown.is_cancelled() {
        return Err(QueueError::ShuttingDown);
    }
    let partitions = check_partitions(partitions, shared.topology.partitions())?;
    // Never more than `prefetch` unsettled deliveries per partition exist, so this never fills
    // up for long; it only decouples the tasks from the reader.
    let capacity = partitions.len().max(1) * usize::from(shared.config.prefetch);
    let (sender, receiver) = mpsc::channel(capacity);
    let stream_gone = CancellationToken::new();
    for partition in partitions {
        let subscription = shared.consumers.add(partition);
        shared.consumers.tasks.spawn(run_subscription(
            shared.clone(),
            subscription,
            sender.clone(),
            stream_gone.clone(),
        ));
    }
    Ok(DeliveryStream::new(receiver, stream_gone.drop_guard()))
}

/// Cancels the consumers of `partitions` and waits (bounded) until no more deliveries come.
pub(crate) async fn stop_consuming(shared: &Shared, partitions: &[u16]) -> Result<(), QueueError> {
    let partitions = check_partitions(partitions, shared.topology.partitions())?;
    let subscriptions = shared.consumers.of(&partitions);
    for subscription in &subscriptions {
        subscription.stop.cancel();
    }
    let bound = shared.config.publish_timeout * 2;
    for subscription in subscriptions {
        timed(bound, "basic.cancel", subscription.finished.cancelled()).await?;
    }
    Ok(())
}

enum End {
    Stopped,
    StreamGone,
    Shutdown,
    SessionLost,
    ConsumerEnded(String),
}

async fn run_subscription(
    shared: Arc<Shared>,
    subscription: Arc<Subscription>,
    sender: mpsc::Sender<Delivery>,
    stream_gone: CancellationToken,
) {
    let partition = subscription.partition;
    let outstanding = Arc::new(Outstanding::default());
    let mut sessions = shared.session.subscribe();
    loop {
        let session = tokio::select! {
            session = next_live_session(&mut sessions) => match session {
                Some(session) => session,
                None => break,
            },
            () = subscription.stop.cancelled() => break,
            () = stream_gone.cancelled() => break,
            () = shared.shutdown.cancelled() => break,
        };
        let (channel, consumer) = match subscribe(&shared, &session, partition).await {
            Ok(subscribed) => subscribed,
            Err(error) => {
                warn!(partition, %error, "cannot subscribe to the partition; rebuilding the session");
                session.fail(format!(
                    "subscribing to partition {partition} failed: {error}"
                ));
                continue;
            }
        };
        debug!(partition, "consuming");
        let end = pump(
            &shared,
            &session,
            &subscription,
            &consumer,
            &sender,
            &stream_gone,
            &outstanding,
        )
        .await;
        let bound = shared.config.publish_timeout;
        match end {
            End::Stopped | End::Shutdown => {
                let _ = bounded(
                    bound,
                    "basic.cancel",
                    channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
                )
                .await;
                subscription.finished.cancel();
                // Deliveries already handed out may still be settled on this channel.
                tokio::select! {
                    () = outstanding.idle() => {}
                    () = stream_gone.cancelled() => {}
                    () = session.lost() => {}
                    () = tokio::time::sleep(bound), if matches!(end, End::Shutdown) => {}
                }
                close_channel(&channel, bound).await;
                break;
            }
            End::StreamGone => {
                // Closing the channel returns everything unsettled to the queue.
                close_channel(&channel, bound).await;
                break;
            }
            End::SessionLost => {}
            End::ConsumerEnded(reason) => {
                if !subscription.stop.is_cancelled() && !shared.shutdown.is_cancelled() {
                    warn!(partition, %reason, "the consumer ended; rebuilding the session");
                    session.fail(format!(
                        "the consumer of partition {partition} ended: {reason}"
                    ));
                }
            }
        }
    }
    subscription.finished.cancel();
    shared.consumers.remove(subscription.id);
}

/// The next session that is not known to be broken; `None` if the backend is gone.
async fn next_live_session(
    sessions: &mut tokio::sync::watch::Receiver<Option<Arc<Session>>>,
) -> Option<Arc<Session>> {
    loop {
        if let Some(session) = sessions.borrow_and_update().as_ref()
            && !session.is_lost()
        {
            return Some(session.clone());
        }
        sessions.changed().await.ok()?;
    }
}

async fn subscribe(
    shared: &Shared,
    session: &Session,
    partition: u16,
) -> Result<(Channel, Consumer), QueueError> {
    let bound = shared.config.publish_timeout;
    let channel = bounded(bound, "channel.open", session.connection.create_channel()).await?;
    let subscribed = async {
        bounded(
            bound,
            "basic.qos",
            // Per consumer (`global: false`): global QoS is a channel error on quorum queues.
            channel.basic_qos(shared.config.prefetch, BasicQosOptions { global: false }),
        )
        .await?;
        let tag = format!("nowpilot-p{partition}-{:08x}", rand::random::<u32>());
        bounded(
            bound,
            "basic.consume",
            channel.basic_consume(
                shared.topology.partition_queue(partition).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions {
                    // Manual acks: a delivery is removed only when settled.
                    no_ack: false,
                    // Other workers may consume too; ownership is decided elsewhere (quorum
                    // queues accept a second "exclusive" consumer on 3.10 anyway).
                    exclusive: false,
                    no_local: false,
                    nowait: false,
                },
                FieldTable::default(),
            ),
        )
        .await
    }
    .await;
    match subscribed {
        Ok(consumer) => Ok((channel, consumer)),
        Err(error) => {
            close_channel(&channel, bound).await;
            Err(error)
        }
    }
}

async fn close_channel(channel: &Channel, bound: Duration) {
    if channel.status().connected() {
        let _ = timed(bound, "channel.close", channel.close(200, "done".into())).await;
    }
}

async fn pump(
    shared: &Arc<Shared>,
    session: &Session,
    subscription: &Subscription,
    consumer: &Consumer,
    sender: &mpsc::Sender<Delivery>,
    stream_gone: &CancellationToken,
    outstanding: &Arc<Outstanding>,
) -> End {
    let mut consumer = consumer.clone();
    loop {
        let next = tokio::select! {
            biased;
            () = subscription.stop.cancelled() => return End::Stopped,
            () = shared.shutdown.cancelled() => return End::Shutdown,
            () = stream_gone.cancelled() => return End::StreamGone,
            () = session.lost() => return End::SessionLost,
            next = consumer.next() => next,
        };
        let raw = match next {
            Some(Ok(raw)) => raw,
            Some(Err(error)) => return End::ConsumerEnded(error.to_string()),
            None => return End::ConsumerEnded("cancelled by the broker".to_owned()),
        };
        let delivery = match convert(shared, subscription.partition, raw, outstanding) {
            Ok(delivery) => delivery,
            Err(unreadable) => {
                let (settler, error) = *unreadable;
                warn!(partition = subscription.partition, %error, "unreadable message; dead-lettering it");
                let attempt =
                    headers::int_header(&settler.properties, headers::ATTEMPT).unwrap_or(0);
                if let Err(error) = settler
                    .dead_letter(reasons::MALFORMED, &error, attempt)
                    .await
                {
                    warn!(%error, "could not dead-letter an unreadable message");
                }
                continue;
            }
        };
        tokio::select! {
            sent = sender.send(delivery) => if sent.is_err() { return End::StreamGone },
            // The unsent delivery is dropped, which requeues it.
            () = subscription.stop.cancelled() => return End::Stopped,
            () = shared.shutdown.cancelled() => return End::Shutdown,
            () = session.lost() => return End::SessionLost,
        }
    }
}

fn convert(
    shared: &Arc<Shared>,
    partition: u16,
    raw: lapin::message::Delivery,
    outstanding: &Arc<Outstanding>,
) -> Result<Delivery, Box<(AmqpSettler, String)>> {
    let attempt = headers::int_header(&raw.properties, headers::ATTEMPT).unwrap_or(0);
    let delivery_count = headers::int_header(&raw.properties, headers::DELIVERY_COUNT);
    let redelivered = raw.redelivered;
    let parsed = serde_json::from_slice::<EventEnvelope>(&raw.data);
    let settler = AmqpSettler {
        shared: shared.clone(),
        acker: raw.acker,
        body: raw.data,
        properties: raw.properties,
        partition,
        guard: Outstanding::acquire(outstanding),
    };
    match parsed {
        Ok(envelope) => Ok(Delivery::new(
            envelope,
            partition,
            attempt,
            redelivered,
            delivery_count,
            Settler::Amqp(settler),
        )),
        Err(error) => Err(Box::new((
            settler,
            format!("the body is not an event envelope: {error}"),
        ))),
    }
}

/// Counts a partition's deliveries that are handed out and not yet settled.
#[derive(Default)]
struct Outstanding {
    count: AtomicUsize,
    idle: Notify,
}

impl Outstanding {
    fn acquire(this: &Arc<Outstanding>) -> OutstandingGuard {
        this.count.fetch_add(1, Ordering::SeqCst);
        OutstandingGuard(this.clone())
    }

    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct OutstandingGuard(Arc<Outstanding>);

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The AMQP half of a [`Delivery`].
pub(crate) struct AmqpSettler {
    shared: Arc<Shared>,
    acker: Acker,
    body: Vec<u8>,
    properties: BasicProperties,
    partition: u16,
    guard: OutstandingGuard,
}

impl AmqpSettler {
    fn stale_if_unusable(&self) -> Result<(), SettleError> {
        if self.acker.usable() {
            Ok(())
        } else {
            Err(SettleError::Stale {
                reason: "the channel it arrived on has closed".to_owned(),
            })
        }
    }

    pub(crate) async fn ack(self) -> Result<(), SettleError> {
        self.stale_if_unusable()?;
        let bound = self.shared.config.publish_timeout;
        let sent = tokio::time::timeout(bound, self.acker.ack(BasicAckOptions::default())).await;
        drop(self.guard);
        match sent {
            Err(_) => Err(SettleError::Timeout { after: bound }),
            Ok(Ok(true)) => Ok(()),
            // lapin's Ok(false): nothing was sent (the acker was poisoned by a channel error).
            Ok(Ok(false)) => Err(SettleError::Stale {
                reason: "the channel it arrived on has closed".to_owned(),
            }),
            Ok(Err(error)) => Err(SettleError::Stale {
                reason: error.to_string(),
            }),
        }
    }

    pub(crate) async fn requeue(self) -> Result<(), SettleError> {
        self.stale_if_unusable()?;
        let bound = self.shared.config.publish_timeout;
        let sent = tokio::time::timeout(bound, self.acker.nack(requeue())).await;
        drop(self.guard);
        match sent {
            Err(_) => Err(SettleError::Timeout { after: bound }),
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(SettleError::Stale {
                reason: "the channel it arrived on has closed".to_owned(),
            }),
            Ok(Err(error)) => Err(SettleError::Stale {
                reason: error.to_string(),
            }),
        }
    }

    pub(crate) async fn retry(
        self,
        tier: RetryTier,
        reason: &str,
        attempt: u32,
    ) -> Result<(), SettleError> {
        let properties = copied_properties(
            &self.properties,
            [
                (headers::ATTEMPT, AMQPValue::LongLongInt(i64::from(attempt))),
                (headers::TIER, long(tier.name)),
                (headers::RETRY_REASON, long(reason)),
            ],
        );
        // The headers exchange routes on `tier`; the routing key `p.{n}` travels with the
        // message and brings it back to this partition when the delay expires.
        let exchange = self.shared.topology.retry_exchange();
        let key = Topology::routing_key(self.partition);
        self.copy_then_ack("retry", &exchange, &key, properties)
            .await
    }

    pub(crate) async fn dead_letter(
        self,
        reason: &str,
        error: &str,
        attempt: u32,
    ) -> Result<(), SettleError> {
        let properties = copied_properties(
            &self.properties,
            [
                (headers::REASON, long(reason)),
                (headers::ERROR, long(error)),
                (
                    headers::DEAD_AT,
                    long(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
                ),
                (headers::ATTEMPT, AMQPValue::LongLongInt(i64::from(attempt))),
            ],
        );
        // Straight to the dead-letter queue through the default exchange.
        let queue = self.shared.topology.dead_queue();
        self.copy_then_ack("dead_letter", "", &queue, properties)
            .await
    }

    async fn copy_then_ack(
        self,
        target: &'static str,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
    ) -> Result<(), SettleError> {
        // A copy of a delivery we can no longer acknowledge would only be a duplicate.
        self.stale_if_unusable()?;
        match publish_raw(&self.shared, exchange, routing_key, &self.body, properties).await {
            Ok(()) => self.ack().await,
            Err(source) => {
                // Give the original back now rather than holding its prefetch slot; the
                // delivery limit ends a loop of failing copies in the dead-letter queue.
                let _ = self.requeue().await;
                Err(SettleError::CopyNotConfirmed { target, source })
            }
        }
    }

    /// The delivery was dropped unsettled: requeue it in the background.
    pub(crate) fn release_on_drop(self) {
        if !self.acker.usable() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (process exit): closing the channel returns the message.
            return;
        };
        let bound = self.shared.config.publish_timeout;
        runtime.spawn(async move {
            let _ = tokio::time::timeout(bound, self.acker.nack(requeue())).await;
            drop(self.guard);
        });
    }
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        multiple: false,
        requeue: true,
    }
}
