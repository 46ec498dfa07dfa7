//! `nowpilot ingress`: the webhook endpoint ServiceNow's business rule posts to.
//!
//! Shutdown order matters: the ingress stops first (readiness off, listener closed, in-flight
//! publishes confirmed), and only then the queue, so no request still in flight meets a queue
//! that refuses publishes.

use std::time::Duration;

use nowpilot_ingress::IngressState;
use tokio_util::sync::CancellationToken;

use super::{EXIT_CONFIG, EXIT_FAILURE, fail, shutdown_signal};
use crate::{ConfigPath, Exit, config, telemetry};

/// Runs the ingress until SIGTERM or Ctrl-C.
pub async fn run(config_path: &ConfigPath) -> Result<(), Exit> {
    let loaded = config::load(config_path).map_err(|e| fail(EXIT_CONFIG, e))?;
    let config = loaded.config;
    telemetry::init_logging(&config.telemetry, None);

    let mut ingress = config.ingress.clone();
    if ingress.echo_users.is_empty()
        && let Some(user) = config.integration_user()
    {
        ingress.echo_users.push(user);
    }
    let settings = ingress
        .validate_in(&loaded.base_dir)
        .map_err(|e| fail(EXIT_CONFIG, e))?;
    config.queue.validate().map_err(|e| fail(EXIT_CONFIG, e))?;

    let render = telemetry::install_metrics().map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("cannot install the metrics recorder: {e}"),
        )
    })?;
    let queue_shutdown = CancellationToken::new();
    let queue = nowpilot_queue::connect(&config.queue, queue_shutdown.clone())
        .await
        .map_err(|e| fail(EXIT_FAILURE, format!("queue: {e}")))?;

    let listen = ingress.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("ingress: cannot listen on {listen}: {e}"),
        )
    })?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });

    let publisher: std::sync::Arc<dyn nowpilot_queue::EventPublisher> = queue.clone();
    let state = IngressState::new(settings, publisher, render);
    let served = nowpilot_ingress::serve(state, listener, shutdown).await;
    queue_shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(10), queue.closed())
        .await
        .is_err()
    {
        tracing::warn!("the queue did not close within 10 s");
    }
    served.map_err(|e| fail(EXIT_FAILURE, format!("ingress: {e}")))
}
