//! `nowpilot run`: the ingress, a worker and the status page in one process, sharing one queue
//! backend and one ServiceNow connection.
//!
//! With `[queue] kind = "memory"` it needs no broker. That mode does not promise durability:
//! events accepted (202) but not yet handled, retries waiting in a timer and dead letters live
//! in memory and are lost if the process stops or crashes; ServiceNow does not resend a
//! callback, so such an incident waits for its next change (or for the poller's safety net).
//! With `kind = "amqp"` it behaves exactly like separate `ingress` and `worker` processes on
//! the same broker, and can run beside them.
//!
//! The admin address (`[worker] admin_listen`) serves the status page, `/healthz`, `/readyz`,
//! `/metrics` and the connection API. Shutdown goes ingress → worker → queue.

mod stack;
pub mod wiring;

use nowpilot_queue::QueueKind;
use tokio::net::TcpListener;

pub use stack::{Stack, StackConfig, admin_router};

use super::{EXIT_CONFIG, EXIT_FAILURE, fail, shutdown_signal};
use crate::commands::worker::{CONNECTION_WATCH_INTERVAL, admin_token};
use crate::{ConfigPath, Exit, config, telemetry};

/// Runs everything until SIGTERM or Ctrl-C.
pub async fn run(config_path: &ConfigPath) -> Result<(), Exit> {
    let loaded = config::load(config_path).map_err(|e| fail(EXIT_CONFIG, e))?;
    telemetry::init_logging(&loaded.config.telemetry, None);
    let (plans, worker) = config::worker_settings(&loaded).map_err(|e| fail(EXIT_CONFIG, e))?;
    let config = &loaded.config;
    config::check_queue(&loaded).map_err(|e| fail(EXIT_CONFIG, e))?;
    let token = admin_token(&loaded).map_err(|e| fail(EXIT_CONFIG, e))?;
    let mut ingress = config.ingress.clone();
    if ingress.echo_users.is_empty()
        && let Some(user) = worker
            .config()
            .integration_user
            .clone()
            .or_else(|| config.integration_user())
    {
        ingress.echo_users.push(user);
    }
    let ingress_listen = ingress.listen;
    let ingress = config::ingress_settings(&loaded, &ingress).map_err(|e| fail(EXIT_CONFIG, e))?;
    let render_metrics = telemetry::install_metrics().map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("cannot install the metrics recorder: {e}"),
        )
    })?;

    let admin_listen = config.worker.admin_listen;
    let ingress_listener = bind(ingress_listen, "ingress").await?;
    let admin_listener = bind(admin_listen, "admin").await?;

    let connection = nowpilot_admin::ConnectionManager::new(
        &config_path.path,
        &loaded.base_dir,
        config.servicenow.clone(),
        config.worker.client_options(),
    );
    let watcher_stop = tokio_util::sync::CancellationToken::new();
    connection.spawn_file_watcher(CONNECTION_WATCH_INTERVAL, watcher_stop.clone());
    if let Some(problem) = connection.current().problem {
        tracing::warn!(%problem, "ServiceNow is not usable yet; events wait until it is (nowpilot connect)");
    }
    if config.queue.kind == QueueKind::Memory {
        tracing::info!(
            "queue: in memory (no broker). Events not yet handled are lost if this process stops or crashes."
        );
    }

    let mut stack = Stack::start(StackConfig {
        role: "run",
        queue: config.queue.clone(),
        ingress,
        ingress_listener,
        admin_listener,
        admin_token: token,
        connection,
        plans,
        worker,
        render_metrics,
        on_event: None,
    })
    .await
    .map_err(|e| fail(EXIT_FAILURE, e))?;

    // One line per address on stdout: what an operator (or a script) needs to know.
    println!(
        "nowpilot run: ingress on http://{}{} (ServiceNow's business rule posts here)",
        stack.ingress_addr,
        nowpilot_ingress::WEBHOOK_PATH
    );
    if stack.status_page {
        println!("nowpilot run: status page on http://{}/", stack.admin_addr);
    } else {
        println!(
            "nowpilot run: admin endpoints on http://{} (status page off: set [admin] token to serve it on a non-loopback address)",
            stack.admin_addr
        );
    }

    let outcome = tokio::select! {
        () = shutdown_signal() => Ok(()),
        reason = stack.failed() => Err(reason),
    };
    stack.shutdown().await;
    watcher_stop.cancel();
    outcome.map_err(|reason| fail(EXIT_FAILURE, reason))
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, Exit> {
    TcpListener::bind(addr).await.map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("{what}: cannot listen on {addr}: {e}"),
        )
    })
}
