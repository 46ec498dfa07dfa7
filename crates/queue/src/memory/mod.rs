//! The in-memory backend: the queue's semantics inside one process.
//!
//! It serves the one-process mode (`nowpilot run`/`demo`) and tests that need no broker, and
//! behaves like the RabbitMQ topology where a worker can tell:
//!
//! - `P` partitions chosen by the same hash; each partition delivers in publish order;
//! - at most `prefetch` unsettled deliveries per consumer;
//! - a delivery that is requeued or dropped unsettled goes back to the **front** of its
//!   partition, marked redelivered, with a delivery count; past the delivery limit (20) it is
//!   dead-lettered with reason `delivery_limit`, as the broker does;
//! - retries wait in tokio timers for the tier's delay and come back with `attempt + 1`;
//! - dead letters carry the same reason, error text, time and attempt; replay and depths work
//!   the same way.
//!
//! What it does **not** promise: nothing survives the process (messages, retries waiting in a
//! timer and dead letters are lost at exit or shutdown); there is no other process to share
//! with; publishes never block on a full queue (there is no length limit); readiness is simply
//! "not shut down".

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::Utc;
use nowpilot_model::partition::partition_of;
use nowpilot_model::{EventEnvelope, EventId, EventSource};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::api::{
    DeadLetter, Delivery, DeliveryStream, EventPublisher, EventQueue, QueueDepths, Readiness,
    ReplayReport, ReplaySelector, Settler, check_partitions, reasons,
};
use crate::config::QueueConfig;
use crate::error::{PublishError, QueueError, SettleError};
use crate::telemetry;
use crate::topology::{RetryTier, Topology};

/// The delivery limit, as on the partition queues.
const DELIVERY_LIMIT: u32 = crate::amqp::declare::DELIVERY_LIMIT.unsigned_abs();

struct Message {
    envelope: EventEnvelope,
    attempt: u32,
    /// How many times it was given back (the broker's `x-delivery-count`).
    returns: u32,
}

#[derive(Default)]
struct State {
    partitions: Vec<VecDeque<Message>>,
    retrying: u64,
    dead: Vec<DeadLetter>,
}

struct Subscription {
    id: u64,
    partition: u16,
    stop: CancellationToken,
    finished: CancellationToken,
}

struct Inner {
    topology: Topology,
    prefetch: usize,
    state: Mutex<State>,
    /// One per partition: woken when a message is added.
    wakeups: Vec<Notify>,
    shutdown: CancellationToken,
    readiness: watch::Sender<Readiness>,
    tasks: TaskTracker,
    subscriptions: Mutex<Vec<Arc<Subscription>>>,
    next_id: AtomicU64,
    closed: CancellationToken,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscriptions(&self) -> MutexGuard<'_, Vec<Arc<Subscription>>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self, partition: u16) {
        if let Some(wakeup) = self.wakeups.get(usize::from(partition)) {
            wakeup.notify_waiters();
        }
    }

    fn push_back(&self, partition: u16, message: Message) {
        if let Some(queue) = self.state().partitions.get_mut(usize::from(partition)) {
            queue.push_back(message);
        }
        self.wake(partition);
    }

    /// A delivery came back unsettled: to the front, or to the dead letters past the limit.
    fn give_back(&self, partition: u16, mut message: Message) {
        message.returns = message.returns.saturating_add(1);
        if message.returns > DELIVERY_LIMIT {
            let attempt = message.attempt;
            self.dead_letter(
                message.envelope,
                reasons::DELIVERY_LIMIT,
                "delivered more times than the delivery limit allows",
                attempt,
            );
            return;
        }
        if let Some(queue) = self.state().partitions.get_mut(usize::from(partition)) {
            queue.push_front(message);
        }
        self.wake(partition);
    }

    fn dead_letter(&self, envelope: EventEnvelope, reason: &str, error: &str, attempt: u32) {
        let letter = DeadLetter {
            message_id: Some(envelope.event_id.to_string()),
            event: Some(envelope),
            reason: reason.to_owned(),
            error: Some(error.to_owned()),
            dead_at: Some(Utc::now()),
            attempt,
        };
        self.state().dead.push(letter);
    }
}

/// The in-memory backend. Dropping it shuts it down (like cancelling its token).
pub struct MemoryBackend {
    inner: Arc<Inner>,
    _shutdown_on_drop: DropGuard,
}

impl MemoryBackend {
    /// A fresh, empty backend with `config`'s partitions and prefetch; it shuts down when
    /// `shutdown` is cancelled. Must be called inside a tokio runtime.
    pub fn new(config: &QueueConfig, shutdown: CancellationToken) -> Result<Self, QueueError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| QueueError::Config("the memory queue needs a tokio runtime".to_owned()))?;
        let own = shutdown.child_token();
        let partitions = config.partitions;
        let inner = Arc::new(Inner {
            topology: Topology::new(config.prefix.clone(), partitions),
            prefetch: usize::from(config.prefetch),
            state: Mutex::new(State {
                partitions: (0..partitions).map(|_| VecDeque::new()).collect(),
                ..State::default()
            }),
            wakeups: (0..partitions).map(|_| Notify::new()).collect(),
            shutdown: own.clone(),
            readiness: watch::Sender::new(Readiness::ready()),
            tasks: TaskTracker::new(),
            subscriptions: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            closed: CancellationToken::new(),
        });
        let watcher = inner.clone();
        runtime.spawn(async move {
            watcher.shutdown.cancelled().await;
            watcher
                .readiness
                .send_replace(Readiness::not_ready("shutting down"));
            watcher.tasks.close();
            watcher.tasks.wait().await;
            watcher.closed.cancel();
        });
        Ok(MemoryBackend {
            inner,
            _shutdown_on_drop: own.drop_guard(),
        })
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("topology", &self.inner.topology)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventPublisher for MemoryBackend {
    async fn publish(&self, event: &EventEnvelope) -> Result<(), PublishError> {
        let started = Instant::now();
        let result = if self.inner.shutdown.is_cancelled() {
            Err(PublishError::ShuttingDown)
        } else if event.event_id.as_str().len() > 255 {
            // The AMQP backend cannot carry such an id either; keep the two alike.
            Err(PublishError::InvalidEvent {
                reason: "the event id is longer than 255 bytes".to_owned(),
            })
        } else {
            let partition = partition_of(&event.sys_id, self.inner.topology.partitions());
            self.inner.push_back(
                partition,
                Message {
                    envelope: event.clone(),
                    attempt: 0,
                    returns: 0,
                },
            );
            Ok(())
        };
        telemetry::published(&result, started.elapsed());
        result
    }

    fn readiness(&self) -> Readiness {
        self.inner.readiness.borrow().clone()
    }

    fn readiness_watch(&self) -> watch::Receiver<Readiness> {
        self.inner.readiness.subscribe()
    }
}

#[async_trait]
impl EventQueue for MemoryBackend {
    fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    async fn consume(&self, partitions: &[u16]) -> Result<DeliveryStream, QueueError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(QueueError::ShuttingDown);
        }
        let partitions = check_partitions(partitions, self.inner.topology.partitions())?;
        let capacity = partitions.len().max(1) * self.inner.prefetch;
        let (sender, receiver) = mpsc::channel(capacity);
        let stream_gone = CancellationToken::new();
        for partition in partitions {
            let subscription = Arc::new(Subscription {
                id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
                partition,
                stop: CancellationToken::new(),
                finished: CancellationToken::new(),
            });
            self.inner.subscriptions().push(subscription.clone());
            self.inner.tasks.spawn(run_subscription(
                self.inner.clone(),
                subscription,
                sender.clone(),
                stream_gone.clone(),
            ));
        }
        Ok(DeliveryStream::new(receiver, stream_gone.drop_guard()))
    }

    async fn stop_consuming(&self, partitions: &[u16]) -> Result<(), QueueError> {
        let partitions = check_partitions(partitions, self.inner.topology.partitions())?;
        let stopping: Vec<_> = self
            .inner
            .subscriptions()
            .iter()
            .filter(|s| partitions.contains(&s.partition))
            .cloned()
            .collect();
        for subscription in &stopping {
            subscription.stop.cancel();
        }
        for subscription in stopping {
            subscription.finished.cancelled().await;
        }
        Ok(())
    }

    async fn depths(&self) -> Result<QueueDepths, QueueError> {
        let state = self.inner.state();
        Ok(QueueDepths {
            partitions: state.partitions.iter().map(|q| q.len() as u64).collect(),
            retry: state.retrying,
            dead: state.dead.len() as u64,
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self
            .inner
            .state()
            .dead
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn replay(&self, selector: ReplaySelector) -> Result<ReplayReport, QueueError> {
        let wanted: Option<BTreeSet<EventId>> = match selector {
            ReplaySelector::All => None,
            ReplaySelector::Ids(ids) => Some(ids.into_iter().collect()),
        };
        let mut report = ReplayReport::default();
        let mut replayed = Vec::new();
        {
            let mut state = self.inner.state();
            let mut kept = Vec::with_capacity(state.dead.len());
            for letter in std::mem::take(&mut state.dead) {
                match &letter.event {
                    None => {
                        report.unreadable += 1;
                        kept.push(letter);
                    }
                    Some(event)
                        if wanted
                            .as_ref()
                            .is_some_and(|w| !w.contains(&event.event_id)) =>
                    {
                        kept.push(letter);
                    }
                    Some(event) => {
                        let mut event = event.clone();
                        event.source = EventSource::Replay;
                        replayed.push(event);
                    }
                }
            }
            state.dead = kept;
        }
        for event in replayed {
            report.replayed.push(event.event_id.clone());
            let partition = partition_of(&event.sys_id, self.inner.topology.partitions());
            self.inner.push_back(
                partition,
                Message {
                    envelope: event,
                    attempt: 0,
                    returns: 0,
                },
            );
        }
        if let Some(wanted) = wanted {
            let seen: BTreeSet<&EventId> = report.replayed.iter().collect();
            report.not_found = wanted.into_iter().filter(|id| !seen.contains(id)).collect();
        }
        Ok(report)
    }

    async fn delete_topology(&self) -> Result<(), QueueError> {
        let all: Vec<u16> = (0..self.inner.topology.partitions()).collect();
        self.stop_consuming(&all).await?;
        let mut state = self.inner.state();
        state.partitions.iter_mut().for_each(VecDeque::clear);
        state.dead.clear();
        Ok(())
    }

    async fn closed(&self) {
        self.inner.closed.cancelled().await;
    }
}

async fn run_subscription(
    inner: Arc<Inner>,
    subscription: Arc<Subscription>,
    sender: mpsc::Sender<Delivery>,
    stream_gone: CancellationToken,
) {
    let partition = subscription.partition;
    let permits = Arc::new(Semaphore::new(inner.prefetch));
    'deliveries: loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = subscription.stop.cancelled() => break,
            () = stream_gone.cancelled() => break,
            () = inner.shutdown.cancelled() => break,
        };
        let message = loop {
            let wakeup = inner.wakeups.get(usize::from(partition));
            let Some(wakeup) = wakeup else {
                break 'deliveries;
            };
            let notified = wakeup.notified();
            tokio::pin!(notified);
            // Registered before looking, so a publish in between is not missed.
            notified.as_mut().enable();
            let next = inner
                .state()
                .partitions
                .get_mut(usize::from(partition))
                .and_then(VecDeque::pop_front);
            if let Some(message) = next {
                break message;
            }
            tokio::select! {
                () = notified => {}
                () = subscription.stop.cancelled() => break 'deliveries,
                () = stream_gone.cancelled() => break 'deliveries,
                () = inner.shutdown.cancelled() => break 'deliveries,
            }
        };
        let delivery = Delivery::new(
            message.envelope.clone(),
            partition,
            message.attempt,
            message.returns > 0,
            (message.returns > 0).then_some(message.returns),
            Settler::Memory(MemorySettler {
                inner: inner.clone(),
                partition,
                message,
                _permit: permit,
            }),
        );
        // An unsent delivery is dropped, which puts it back at the front.
        tokio::select! {
            sent = sender.send(delivery) => if sent.is_err() { break },
            () = subscription.stop.cancelled() => break,
            () = stream_gone.cancelled() => break,
            () = inner.shutdown.cancelled() => break,
        }
    }
    subscription.finished.cancel();
    inner.subscriptions().retain(|s| s.id != subscription.id);
}

/// The in-memory half of a [`Delivery`].
pub(crate) struct MemorySettler {
    inner: Arc<Inner>,
    partition: u16,
    message: Message,
    _permit: OwnedSemaphorePermit,
}

impl MemorySettler {
    pub(crate) fn ack(self) -> Result<(), SettleError> {
        Ok(())
    }

    pub(crate) fn requeue(self) -> Result<(), SettleError> {
        self.inner.give_back(self.partition, self.message);
        Ok(())
    }

    pub(crate) fn retry(
        self,
        envelope: EventEnvelope,
        tier: RetryTier,
        attempt: u32,
    ) -> Result<(), SettleError> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.give_back(self.partition, self.message);
            return Err(SettleError::ShuttingDown);
        };
        let inner = self.inner.clone();
        let partition = self.partition;
        inner.state().retrying += 1;
        let timer = inner.clone();
        inner.tasks.spawn_on(
            async move {
                tokio::select! {
                    () = tokio::time::sleep(tier.delay) => {
                        timer.state().retrying -= 1;
                        timer.push_back(partition, Message { envelope, attempt, returns: 0 });
                    }
                    // Nothing survives the process: a waiting retry is dropped at shutdown.
                    () = timer.shutdown.cancelled() => timer.state().retrying -= 1,
                }
            },
            &runtime,
        );
        Ok(())
    }

    pub(crate) fn dead_letter(
        self,
        envelope: EventEnvelope,
        reason: &str,
        error: &str,
        attempt: u32,
    ) -> Result<(), SettleError> {
        self.inner.dead_letter(envelope, reason, error, attempt);
        Ok(())
    }

    pub(crate) fn release_on_drop(self) {
        self.inner.give_back(self.partition, self.message);
    }
}
