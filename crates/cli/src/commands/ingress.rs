//! `nowpilot ingress`: the webhook endpoint ServiceNow's business rule posts to.
//!
//! Shutdown order matters: the ingress stops first (readiness off, listener closed, in-flight
//! publishes confirmed), and only then the queue, so no request still in flight meets a queue
//! that refuses publishes.
//!
//! The listen address also serves the status page (`/`, `/api/v1/status`, `/api/v1/activity`)
//! when `[admin] token` is set or the address is loopback; it shows the activity of every
//! worker on the same broker.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nowpilot_admin::ConnectionManager;
use nowpilot_admin::status::StatusPage;
use nowpilot_ingress::IngressState;
use nowpilot_model::plans::PlanSet;
use nowpilot_queue::{ActivityFanout, EventQueue};
use tokio_util::sync::CancellationToken;

use super::run::wiring;
use super::worker::{CONNECTION_WATCH_INTERVAL, admin_token};
use super::{EXIT_CONFIG, EXIT_FAILURE, fail, shutdown_signal};
use crate::{ConfigPath, Exit, config, config::NowpilotConfig, telemetry};

/// Runs the ingress until SIGTERM or Ctrl-C.
pub async fn run(config_path: &ConfigPath) -> Result<(), Exit> {
    let loaded = config::load(config_path).map_err(|e| fail(EXIT_CONFIG, e))?;
    let config = loaded.config.clone();
    telemetry::init_logging(&config.telemetry, None);

    let mut ingress = config.ingress.clone();
    if ingress.echo_users.is_empty()
        && let Some(user) = config.integration_user()
    {
        ingress.echo_users.push(user);
    }
    let settings = config::ingress_settings(&loaded, &ingress).map_err(|e| fail(EXIT_CONFIG, e))?;
    config::check_queue(&loaded).map_err(|e| fail(EXIT_CONFIG, e))?;
    let token = admin_token(&loaded).map_err(|e| fail(EXIT_CONFIG, e))?;

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
    let page = status_page(
        config_path,
        &loaded.base_dir,
        &config,
        queue.clone(),
        &shutdown,
    )
    .map_err(|e| fail(EXIT_FAILURE, e))?;
    let router = nowpilot_admin::status::mount(
        nowpilot_ingress::router(state.clone()),
        listen,
        &page,
        token,
    );
    let served = nowpilot_ingress::serve_router(state, router, listener, shutdown.clone()).await;
    shutdown.cancel();
    queue_shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(10), queue.closed())
        .await
        .is_err()
    {
        tracing::warn!("the queue did not close within 10 s");
    }
    served.map_err(|e| fail(EXIT_FAILURE, format!("ingress: {e}")))
}

/// The ingress's status page: the connection as configured (checked in the background), the
/// queue, the plans when they load, and every worker's activity.
fn status_page(
    config_path: &ConfigPath,
    base_dir: &Path,
    config: &NowpilotConfig,
    queue: Arc<dyn EventQueue>,
    shutdown: &CancellationToken,
) -> Result<StatusPage, String> {
    let connection = ConnectionManager::new(
        &config_path.path,
        base_dir,
        config.servicenow.clone(),
        config.worker.client_options(),
    );
    connection.spawn_file_watcher(CONNECTION_WATCH_INTERVAL, shutdown.clone());
    let activity = ActivityFanout::connect(&config.queue, shutdown.clone())
        .map_err(|e| format!("activity: {e}"))?;
    // The ingress does not run plans; it shows them when they are valid on their own.
    let plans = PlanSet::new(&config.plans, config.worker.quickstart)
        .map_err(|e| tracing::debug!(error = %e, "the status page shows no plans"))
        .ok()
        .map(Arc::new);
    let page = wiring::status_page("ingress", connection, queue, plans, activity, false, None);
    page.spawn(shutdown.clone());
    Ok(page)
}
