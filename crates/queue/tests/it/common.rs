//! Helpers shared by the queue's integration tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lapin::{Channel, Connection, ConnectionProperties};
use nowpilot_model::partition::partition_of;
use nowpilot_model::{EventEnvelope, EventSource};
use nowpilot_queue::{
    AmqpBackend, Delivery, DeliveryStream, EventQueue, MemoryBackend, QueueConfig, QueueKind,
};
use nowpilot_testkit::{TopologyGuard, amqp_config, amqp_url, unique_prefix};
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen (generous: the machine is shared).
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// An event for `sys_id` at version `mod_count`.
pub(crate) fn event(sys_id: &str, mod_count: u64) -> EventEnvelope {
    EventEnvelope::observed(
        "incident",
        sys_id,
        mod_count,
        "INC0010001",
        EventSource::Poller,
        Utc::now(),
    )
}

/// A sys_id-shaped string (32 hex characters) from `n`.
pub(crate) fn sys_id(n: u64) -> String {
    format!("{n:032x}")
}

/// A sys_id that lands in `partition` of `partitions`.
pub(crate) fn sys_id_in(partition: u16, partitions: u16) -> String {
    (0u64..)
        .map(sys_id)
        .find(|s| partition_of(s, partitions) == partition)
        .expect("some sys_id lands in every partition")
}

/// The next delivery, failing the test if none comes within [`PATIENCE`].
pub(crate) async fn recv(stream: &mut DeliveryStream) -> Delivery {
    tokio::time::timeout(PATIENCE, stream.recv())
        .await
        .expect("no delivery in time")
        .expect("the delivery stream ended")
}

/// Polls `check` until it returns true, failing the test after [`PATIENCE`].
pub(crate) async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A backend under test, with its shutdown token and topology cleanup.
pub(crate) struct Backend {
    pub(crate) queue: Arc<dyn EventQueue>,
    pub(crate) shutdown: CancellationToken,
    // Dropped last (fields drop in order): the backend is gone before its topology is deleted.
    _guard: Option<TopologyGuard>,
}

/// Logs to the test's captured output (shown when a test fails); `RUST_LOG` filters.
pub(crate) fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("nowpilot_queue=debug"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Which backend a generic test runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Amqp,
    Memory,
}

impl Backend {
    /// A backend of `kind` on its own prefix, with `adjust` applied to the test configuration.
    pub(crate) async fn start(
        kind: Kind,
        name: &str,
        adjust: impl FnOnce(&mut QueueConfig),
    ) -> Backend {
        let mut config = amqp_config(&unique_prefix(name));
        adjust(&mut config);
        match kind {
            Kind::Amqp => Backend::amqp_with(config).await,
            Kind::Memory => Backend::memory_with(config),
        }
    }

    /// A RabbitMQ backend on its own prefix.
    pub(crate) async fn amqp(name: &str) -> Backend {
        Backend::amqp_with(amqp_config(&unique_prefix(name))).await
    }

    /// A RabbitMQ backend with `config` (its topology is deleted at the end).
    pub(crate) async fn amqp_with(config: QueueConfig) -> Backend {
        init_logs();
        let mut cleanup = config.clone();
        cleanup.url = amqp_url().into();
        let guard = TopologyGuard::new(&cleanup);
        let shutdown = CancellationToken::new();
        let queue = AmqpBackend::connect(&config, shutdown.clone())
            .await
            .expect("connect");
        Backend {
            queue: Arc::new(queue),
            shutdown,
            _guard: Some(guard),
        }
    }

    /// An in-memory backend with `config`.
    pub(crate) fn memory_with(mut config: QueueConfig) -> Backend {
        config.kind = QueueKind::Memory;
        let shutdown = CancellationToken::new();
        let queue = MemoryBackend::new(&config, shutdown.clone()).expect("memory backend");
        Backend {
            queue: Arc::new(queue),
            shutdown,
            _guard: None,
        }
    }

    /// Shuts the backend down and waits until it has closed.
    pub(crate) async fn finish(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.queue.closed())
            .await
            .expect("the backend did not close in time");
    }
}

/// A plain lapin connection and channel to the test broker, for looking behind the backend.
pub(crate) async fn raw_channel() -> (Connection, Channel) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("raw connection");
    let channel = connection.create_channel().await.expect("raw channel");
    (connection, channel)
}
