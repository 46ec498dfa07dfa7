//! The RabbitMQ backend (lapin 4.12, AMQP 0-9-1, RabbitMQ 3.10 and 4.x).
//!
//! - [`session`]: the connection generation and the supervisor that rebuilds it.
//! - [`declare`]: the topology declarations and their arguments.
//! - `publish`: confirmed publishes over a small pool of confirm channels.
//! - [`consume`]: partition consumers, deliveries and their settlement.
//! - `ops`: depths, dead letters, replay and deletion for operators.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use lapin::uri::AMQPUri;
use lapin::{ErrorKind, types::ShortString};
use nowpilot_model::EventEnvelope;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::api::{
    DeadLetter, DeliveryStream, EventPublisher, EventQueue, QueueDepths, Readiness, ReplayReport,
    ReplaySelector,
};
use crate::config::QueueConfig;
use crate::error::{PublishError, QueueError};
use crate::topology::Topology;

pub mod consume;
pub mod declare;
pub mod headers;
mod ops;
mod publish;
pub(crate) mod session;
pub(crate) mod uri;

pub use declare::StrandedQueue;
pub use ops::{declare_topology, delete_topology};

use session::Session;

/// State shared by the backend handle, the supervisor and the consumer tasks.
pub(crate) struct Shared {
    pub(crate) config: QueueConfig,
    /// The parsed broker URL. Holds the password: never log or format it.
    pub(crate) uri: AMQPUri,
    pub(crate) topology: Topology,
    pub(crate) connection_name: String,
    /// The live session, `None` while (re)connecting.
    pub(crate) session: watch::Sender<Option<Arc<Session>>>,
    readiness: watch::Sender<Readiness>,
    /// Cancelled by the caller's token or when the backend handle is dropped.
    pub(crate) shutdown: CancellationToken,
    /// In-flight publishes, drained at shutdown.
    pub(crate) publishes: TaskTracker,
    pub(crate) consumers: consume::Registry,
    closed: CancellationToken,
    closing: AtomicBool,
    pub(crate) stranded: Mutex<Vec<StrandedQueue>>,
}

impl Shared {
    fn new(config: &QueueConfig, uri: AMQPUri, shutdown: CancellationToken) -> Self {
        Shared {
            config: config.clone(),
            uri,
            topology: Topology::new(config.prefix.clone(), config.partitions),
            connection_name: format!(
                "nowpilot {} ({}, pid {})",
                env!("CARGO_PKG_VERSION"),
                config.prefix,
                std::process::id()
            ),
            session: watch::Sender::new(None),
            readiness: watch::Sender::new(Readiness::not_ready("connecting")),
            shutdown,
            publishes: TaskTracker::new(),
            consumers: consume::Registry::default(),
            closed: CancellationToken::new(),
            closing: AtomicBool::new(false),
            stranded: Mutex::new(Vec::new()),
        }
    }

    /// The installed session, if it is not known to be broken.
    pub(crate) fn live_session(&self) -> Option<Arc<Session>> {
        self.session
            .borrow()
            .as_ref()
            .filter(|s| !s.is_lost())
            .cloned()
    }

    /// Publishes `ready` unless shutdown began (then readiness stays false).
    pub(crate) fn set_readiness(&self, readiness: Readiness) {
        let readiness = if self.shutdown.is_cancelled() && readiness.ready {
            Readiness::not_ready("shutting down")
        } else {
            readiness
        };
        self.readiness.send_if_modified(|current| {
            if *current == readiness {
                false
            } else {
                *current = readiness;
                true
            }
        });
    }

    pub(crate) fn readiness(&self) -> Readiness {
        self.readiness.borrow().clone()
    }

    /// At shutdown with a live session: let consumers settle, drain publishes, close.
    async fn drain_and_close(&self, session: &Session) {
        let bound = self.config.publish_timeout;
        self.wait_consumers().await;
        self.publishes.close();
        if tokio::time::timeout(bound, self.publishes.wait())
            .await
            .is_err()
        {
            warn!(
                in_flight = self.publishes.len(),
                "shutdown: publishes still waiting for confirms; closing anyway"
            );
        }
        session.close(bound).await;
    }

    async fn wait_consumers(&self) {
        self.consumers.tasks.close();
        // Consumers get one publish timeout to cancel, and another for their deliveries.
        let bound = self.config.publish_timeout * 2;
        if tokio::time::timeout(bound, self.consumers.tasks.wait())
            .await
            .is_err()
        {
            warn!("shutdown: consumers did not finish in time; closing anyway");
        }
    }

    async fn finish_shutdown(&self) {
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        self.wait_consumers().await;
        self.publishes.close();
        crate::telemetry::connected(false);
        self.closed.cancel();
    }
}

/// The RabbitMQ backend. Dropping it shuts it down (like cancelling its token).
pub struct AmqpBackend {
    shared: Arc<Shared>,
    _shutdown_on_drop: DropGuard,
}

impl AmqpBackend {
    /// Validates `config`, connects and declares the topology, and starts the supervisor that
    /// keeps the connection alive until `shutdown` is cancelled.
    ///
    /// Problems a person must fix (invalid configuration, refused credentials, a topology
    /// declared with other arguments) are returned at once. If the broker is merely unreachable,
    /// the backend is returned anyway, not ready, and keeps reconnecting in the background, so
    /// a process can start before its broker.
    pub async fn connect(
        config: &QueueConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, QueueError> {
        config.validate()?;
        let uri = uri::parse(&config.url, config.heartbeat, config.connect_timeout)?;
        let own = shutdown.child_token();
        let shared = Arc::new(Shared::new(config, uri, own.clone()));
        let first = match session::establish(&shared).await {
            Ok(ready) => {
                // Installed before returning, so the caller can publish at once.
                shared.session.send_replace(Some(ready.0.clone()));
                shared.set_readiness(Readiness::ready());
                Some(ready)
            }
            Err(
                error @ (QueueError::TopologyMismatch { .. }
                | QueueError::AccessRefused { .. }
                | QueueError::Config(_)),
            ) => return Err(error),
            Err(error) => {
                warn!(%error, "the broker is not reachable yet; retrying in the background");
                shared.set_readiness(Readiness::not_ready(error.to_string()));
                None
            }
        };
        tokio::spawn(session::supervise(shared.clone(), first));
        Ok(AmqpBackend {
            shared,
            _shutdown_on_drop: own.drop_guard(),
        })
    }

    /// Partition queues found beyond the configured count at the last declaration.
    pub fn stranded_partitions(&self) -> Vec<StrandedQueue> {
        self.shared
            .stranded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl std::fmt::Debug for AmqpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBackend")
            .field("url", &self.shared.config.redacted_url())
            .field("prefix", &self.shared.config.prefix)
            .field("readiness", &self.shared.readiness())
            .finish()
    }
}

#[async_trait]
impl EventPublisher for AmqpBackend {
    async fn publish(&self, event: &EventEnvelope) -> Result<(), PublishError> {
        publish::publish_event(&self.shared, event).await
    }

    fn readiness(&self) -> Readiness {
        self.shared.readiness()
    }

    fn readiness_watch(&self) -> watch::Receiver<Readiness> {
        self.shared.readiness.subscribe()
    }
}

#[async_trait]
impl EventQueue for AmqpBackend {
    fn topology(&self) -> &Topology {
        &self.shared.topology
    }

    async fn consume(&self, partitions: &[u16]) -> Result<DeliveryStream, QueueError> {
        consume::consume(&self.shared, partitions)
    }

    async fn stop_consuming(&self, partitions: &[u16]) -> Result<(), QueueError> {
        consume::stop_consuming(&self.shared, partitions).await
    }

    async fn depths(&self) -> Result<QueueDepths, QueueError> {
        ops::depths(&self.shared).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        ops::dead_letters(&self.shared, limit).await
    }

    async fn replay(&self, selector: ReplaySelector) -> Result<ReplayReport, QueueError> {
        ops::replay(&self.shared, selector).await
    }

    async fn delete_topology(&self) -> Result<(), QueueError> {
        let all: Vec<u16> = (0..self.shared.topology.partitions()).collect();
        consume::stop_consuming(&self.shared, &all).await?;
        ops::delete_with_session(&self.shared).await
    }

    async fn closed(&self) {
        self.shared.closed.cancelled().await;
    }
}

/// The AMQP reply code of a broker error (404, 406, …), if it is one.
pub(crate) fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// A lapin error as a [`QueueError`] for `operation`.
pub(crate) fn lapin_error(operation: &'static str, error: &lapin::Error) -> QueueError {
    QueueError::Broker {
        operation,
        reason: error.to_string(),
    }
}

/// Awaits `future` for at most `bound`.
pub(crate) async fn timed<F: Future>(
    bound: Duration,
    operation: &'static str,
    future: F,
) -> Result<F::Output, QueueError> {
    tokio::time::timeout(bound, future)
        .await
        .map_err(|_| QueueError::Timeout {
            operation,
            after: bound,
        })
}

/// Awaits a lapin call for at most `bound`, mapping both failure kinds to [`QueueError`].
pub(crate) async fn bounded<T, F>(
    bound: Duration,
    operation: &'static str,
    future: F,
) -> Result<T, QueueError>
where
    F: Future<Output = Result<T, lapin::Error>>,
{
    timed(bound, operation, future)
        .await?
        .map_err(|error| lapin_error(operation, &error))
}

/// An AMQP short string from data that may be too long (ids from the outside world).
pub(crate) fn short(value: &str) -> Option<ShortString> {
    ShortString::try_new(value).ok()
}
