//! `nowpilot worker`: takes events off the queue and acts on ServiceNow through the plans.
//!
//! The admin address serves `/healthz`, `/readyz`, `/metrics`, the connection API and the status
//! page (`/`, under the same access rule as the connection API). Shutdown stops the worker first
//! (running passes finish, waiting ones are requeued), then the queue.

use std::{net::SocketAddr, time::Duration};

use axum::Router;
use nowpilot_admin::{ConnectionManager, api};
use nowpilot_config::Loaded;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::run::wiring;
use super::{EXIT_CONFIG, EXIT_FAILURE, fail, shutdown_signal};
use crate::{
    ConfigPath, Exit,
    config::{self, NowpilotConfig},
    telemetry,
};

/// How often a running process looks for a changed connection on disk.
pub const CONNECTION_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Runs the worker until SIGTERM or Ctrl-C.
pub async fn run(config_path: &ConfigPath) -> Result<(), Exit> {
    let loaded = config::load(config_path).map_err(|e| fail(EXIT_CONFIG, e))?;
    telemetry::init_logging(&loaded.config.telemetry, None);
    let (plans, settings) = config::worker_settings(&loaded).map_err(|e| fail(EXIT_CONFIG, e))?;
    let config = &loaded.config;
    config::check_queue(&loaded).map_err(|e| fail(EXIT_CONFIG, e))?;
    let token = admin_token(&loaded).map_err(|e| fail(EXIT_CONFIG, e))?;
    let render = telemetry::install_metrics().map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("cannot install the metrics recorder: {e}"),
        )
    })?;

    let manager = ConnectionManager::new(
        &config_path.path,
        &loaded.base_dir,
        config.servicenow.clone(),
        config.worker.client_options(),
    );
    let shutdown = CancellationToken::new();
    manager.spawn_file_watcher(CONNECTION_WATCH_INTERVAL, shutdown.clone());
    if let Some(problem) = manager.current().problem {
        tracing::warn!(%problem, "ServiceNow is not usable yet; events wait until it is (nowpilot connect)");
    }

    let queue_shutdown = CancellationToken::new();
    let queue = nowpilot_queue::connect(&config.queue, queue_shutdown.clone())
        .await
        .map_err(|e| fail(EXIT_FAILURE, format!("queue: {e}")))?;

    // Pass reports go to every status page of the deployment (this one included).
    let activity = nowpilot_queue::ActivityFanout::connect(&config.queue, shutdown.clone())
        .map_err(|e| fail(EXIT_FAILURE, format!("activity: {e}")))?;
    let deps = nowpilot_worker::WorkerDeps::new(queue.clone(), manager.clone(), plans, settings)
        .with_activity(wiring::activity_sink(
            activity.clone(),
            wiring::Descriptions::default(),
        ));
    // With RabbitMQ the workers sharing the queue split its partitions (locks, membership);
    // with the memory queue this process owns them all.
    let ownership = nowpilot_queue::PartitionOwnership::start(
        &config.queue,
        deps.settings.ownership_settings(),
    )
    .map_err(|e| fail(EXIT_CONFIG, format!("queue: {e}")))?;
    let page = wiring::status_page(
        "worker",
        manager.clone(),
        queue.clone(),
        Some(deps.plans.clone()),
        activity,
        true,
        wiring::members_provider(&config.queue, &ownership),
    );
    page.spawn(shutdown.clone());
    let (admin, _) = super::run::admin_router(
        &manager,
        queue.clone(),
        render,
        config.worker.admin_listen,
        token,
        &page,
    );
    let admin_listener = tokio::net::TcpListener::bind(config.worker.admin_listen)
        .await
        .map_err(|e| {
            fail(
                EXIT_FAILURE,
                format!(
                    "worker: cannot listen on {}: {e}",
                    config.worker.admin_listen
                ),
            )
        })?;
    let admin_task = tokio::spawn(nowpilot_worker::serve_admin(
        admin,
        admin_listener,
        shutdown.clone(),
    ));

    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    let result = nowpilot_worker::run_owned(deps, ownership, shutdown.clone()).await;
    shutdown.cancel();
    queue_shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(10), queue.closed())
        .await
        .is_err()
    {
        tracing::warn!("the queue did not close within 10 s");
    }
    let _ = admin_task.await;
    result.map_err(|e| fail(EXIT_FAILURE, format!("worker: {e}")))
}

/// The `[admin]` token, read from its file when configured that way.
pub fn admin_token(
    loaded: &Loaded<NowpilotConfig>,
) -> Result<Option<SecretString>, nowpilot_config::ConfigError> {
    let admin = &loaded.config.admin;
    match (&admin.token, &admin.token_file) {
        (Some(_), Some(_)) => Err(loaded.error(
            "admin.token_file",
            "set either admin.token or admin.token_file, not both",
        )),
        (Some(token), None) => Ok(Some(token.clone())),
        (None, Some(path)) => {
            use std::io::Read as _;
            /// Largest token file read: bounded while reading, as a device or a pipe may
            /// never end (`/dev/zero`).
            const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
            let path = loaded.resolve_path(path);
            let mut text = String::new();
            let read = std::fs::File::open(&path)
                .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES + 1).read_to_string(&mut text))
                .map_err(|e| {
                    loaded.error(
                        "admin.token_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
            if read as u64 > MAX_TOKEN_FILE_BYTES {
                return Err(loaded.error(
                    "admin.token_file",
                    format!(
                        "{} is larger than {MAX_TOKEN_FILE_BYTES} bytes; is it the right file?",
                        path.display()
                    ),
                ));
            }
            let token = text.trim_end_matches(['\n', '\r']);
            if token.is_empty() {
                return Err(
                    loaded.error("admin.token_file", format!("{} is empty", path.display()))
                );
            }
            Ok(Some(SecretString::from(token.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

/// Adds the connection API to an admin router: behind the token when one is configured, open
/// on a loopback address, and not at all on another address without a token.
pub fn with_connection_api(
    router: Router,
    listen: SocketAddr,
    manager: &ConnectionManager,
    token: Option<SecretString>,
) -> Router {
    if token.is_none() && !listen.ip().is_loopback() {
        tracing::info!(
            %listen,
            "the admin API (/api/v1/connection) is off: set [admin] token to use it on a non-loopback address"
        );
        return router;
    }
    router.merge(api::router(api::ApiState::new(manager.clone(), token)))
}
