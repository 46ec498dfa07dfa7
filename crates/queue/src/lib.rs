//! nowpilot's event queue.
//!
//! The ingress (and the poller) publish [`EventEnvelope`](nowpilot_model::EventEnvelope)s; the
//! workers consume them per partition. Two backends implement the same traits:
//!
//! - [`AmqpBackend`]: RabbitMQ. Partitioned quorum queues behind a direct exchange, a
//!   dead-letter exchange and queue, and TTL delay queues for retries ([`topology`]). Publishes
//!   use publisher confirms and return `Ok` only on the broker's ack; a supervisor task keeps
//!   one connection alive and rebuilds it (topology, channels, consumers) after any failure.
//! - [`MemoryBackend`]: the same semantics inside one process, for `nowpilot run`/`demo` and
//!   tests without a broker.
//!
//! The ingress holds an `Arc<dyn` [`EventPublisher`]`>`; workers and the CLI an
//! `Arc<dyn` [`EventQueue`]`>`, obtained from [`connect`].
//!
//! Modules: [`config`] (the `[queue]` section), [`topology`] (every broker name), [`api`] (the
//! traits, deliveries and operator views), [`error`], [`telemetry`] (metric names), [`amqp`] and
//! [`memory`] (the backends).
//!
//! [`ownership`]: which worker consumes which partition (locks, membership, rendezvous
//! hashing).
//!
//! [`activity`]: the activity fanout that carries pass reports to every status page, apart from
//! the event path.

pub mod activity;
pub mod amqp;
pub mod api;
mod backoff;
pub mod config;
pub mod error;
pub mod memory;
pub mod ownership;
pub mod telemetry;
pub mod topology;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use activity::{ActivityAction, ActivityFanout, ActivityLink, ActivityRecord};
pub use amqp::{AmqpBackend, StrandedQueue};
pub use api::{
    DeadLetter, Delivery, DeliveryStream, EventPublisher, EventQueue, QueueDepths, Readiness,
    ReplayReport, ReplaySelector, reasons,
};
pub use config::{QueueConfig, QueueConfigError, QueueKind};
pub use error::{PublishError, QueueError, SettleError};
pub use memory::MemoryBackend;
pub use ownership::{
    ManualOwnership, MemberView, OwnershipEvent, OwnershipSettings, PartitionOwnership,
};
pub use topology::{RETRY_TIERS, RetryTier, Topology, TopologyNames};

/// Starts the backend `config.kind` names; it runs until `shutdown` is cancelled (or the
/// returned handle is dropped), and [`EventQueue::closed`] resolves once it has shut down.
///
/// For RabbitMQ, configuration, credential and topology problems are errors here; an
/// unreachable broker is not (the backend starts not ready and keeps reconnecting).
pub async fn connect(
    config: &QueueConfig,
    shutdown: CancellationToken,
) -> Result<Arc<dyn EventQueue>, QueueError> {
    match config.kind {
        QueueKind::Amqp => Ok(Arc::new(AmqpBackend::connect(config, shutdown).await?)),
        QueueKind::Memory => Ok(Arc::new(MemoryBackend::new(config, shutdown)?)),
    }
}
