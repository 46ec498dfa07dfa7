//! The one-process stack: ingress, worker and admin page over one queue backend and one
//! ServiceNow connection, and its shutdown in the right order (ingress → worker → queue).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nowpilot_admin::status::StatusPage;
use nowpilot_admin::{ConnectionManager, status};
use nowpilot_ingress::{IngressSettings, IngressState};
use nowpilot_model::plans::PlanSet;
use nowpilot_queue::{ActivityFanout, EventPublisher, EventQueue, QueueConfig};
use nowpilot_worker::{WorkerDeps, WorkerSettings};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::wiring::{self, Descriptions, EventObserver, ObservedPublisher};
use crate::commands::worker::with_connection_api;
use crate::telemetry::MetricsRender;

/// How long the worker may take to stop (its own grace for running passes is 20 s).
const WORKER_STOP: Duration = Duration::from_secs(40);
/// How long the queue may take to close.
const QUEUE_STOP: Duration = Duration::from_secs(10);
/// How long the admin server may take to close (idle keep-alive connections can hold it).
const ADMIN_STOP: Duration = Duration::from_secs(5);

/// What the stack runs with, validated.
pub struct StackConfig {
    /// `run` or `demo`, for the status page.
    pub role: &'static str,
    /// The `[queue]` section.
    pub queue: QueueConfig,
    /// The validated `[ingress]` section.
    pub ingress: IngressSettings,
    /// Where the ingress listens (bound already, so port 0 works).
    pub ingress_listener: TcpListener,
    /// Where `/healthz`, `/readyz`, `/metrics`, the connection API and the status page are.
    pub admin_listener: TcpListener,
    /// The `[admin]` token.
    pub admin_token: Option<SecretString>,
    /// The ServiceNow connection.
    pub connection: ConnectionManager,
    /// The plans.
    pub plans: PlanSet,
    /// The validated `[worker]` section.
    pub worker: WorkerSettings,
    /// The Prometheus exposition.
    pub render_metrics: MetricsRender,
    /// Told about every event the ingress queued (the demo's timeline).
    pub on_event: Option<EventObserver>,
}

/// A running stack.
pub struct Stack {
    /// Where the ingress listens.
    pub ingress_addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// Whether the status page is served on the admin address.
    pub status_page: bool,
    /// The activity of this process's worker (and, over RabbitMQ, of every worker).
    pub activity: ActivityFanout,
    queue: Arc<dyn EventQueue>,
    ingress_stop: CancellationToken,
    worker_stop: CancellationToken,
    queue_stop: CancellationToken,
    background_stop: CancellationToken,
    ingress: Option<JoinHandle<Result<(), nowpilot_ingress::IngressError>>>,
    worker: Option<JoinHandle<Result<(), nowpilot_worker::WorkerError>>>,
    admin: JoinHandle<std::io::Result<()>>,
}

impl Stack {
    /// Connects the queue and starts everything. An unreachable broker is not an error (the
    /// backend keeps reconnecting); a refused login or a mismatched topology is.
    pub async fn start(config: StackConfig) -> Result<Stack, String> {
        let ingress_addr = local_addr(&config.ingress_listener)?;
        let admin_addr = local_addr(&config.admin_listener)?;
        let queue_stop = CancellationToken::new();
        let queue = nowpilot_queue::connect(&config.queue, queue_stop.clone())
            .await
            .map_err(|e| format!("queue: {e}"))?;
        let background_stop = CancellationToken::new();
        let activity = ActivityFanout::connect(&config.queue, background_stop.clone())
            .map_err(|e| format!("activity: {e}"))?;
        let descriptions = Descriptions::default();
        let deps = WorkerDeps::new(
            queue.clone(),
            config.connection.clone(),
            config.plans,
            config.worker,
        )
        .with_activity(wiring::activity_sink(
            activity.clone(),
            descriptions.clone(),
        ));

        // With RabbitMQ, `run` takes part in partition ownership like any worker, so it can
        // share a queue with other workers; with the memory queue it owns every partition.
        let ownership = nowpilot_queue::PartitionOwnership::start(
            &config.queue,
            deps.settings.ownership_settings(),
        )
        .map_err(|e| format!("queue: {e}"))?;
        let page = wiring::status_page(
            config.role,
            config.connection.clone(),
            queue.clone(),
            Some(deps.plans.clone()),
            activity.clone(),
            true,
            wiring::members_provider(&config.queue, &ownership),
        );
        page.spawn(background_stop.clone());
        let (admin, status_page) = admin_router(
            &config.connection,
            queue.clone(),
            config.render_metrics.clone(),
            admin_addr,
            config.admin_token,
            &page,
        );
        let admin = tokio::spawn(nowpilot_worker::serve_admin(
            admin,
            config.admin_listener,
            background_stop.clone(),
        ));

        let worker_stop = CancellationToken::new();
        let worker = tokio::spawn(nowpilot_worker::run_owned(
            deps,
            ownership,
            worker_stop.clone(),
        ));

        let ingress_stop = CancellationToken::new();
        let publisher: Arc<dyn EventPublisher> = Arc::new(ObservedPublisher::new(
            queue.clone(),
            descriptions,
            config.on_event,
        ));
        let state = IngressState::new(config.ingress, publisher, config.render_metrics);
        let ingress = tokio::spawn(nowpilot_ingress::serve(
            state,
            config.ingress_listener,
            ingress_stop.clone(),
        ));
        Ok(Stack {
            ingress_addr,
            admin_addr,
            status_page,
            activity,
            queue,
            ingress_stop,
            worker_stop,
            queue_stop,
            background_stop,
            ingress: Some(ingress),
            worker: Some(worker),
            admin,
        })
    }

    /// Resolves only if the ingress or the worker stopped on its own (a failure): says which
    /// and why. Each failure is reported once; afterwards this waits for the other part.
    pub async fn failed(&mut self) -> String {
        let ingress = async {
            match self.ingress.as_mut() {
                Some(handle) => Some(handle.await),
                None => std::future::pending().await,
            }
        };
        let worker = async {
            match self.worker.as_mut() {
                Some(handle) => Some(handle.await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = ingress => {
                self.ingress = None;
                match result {
                    Some(Ok(Ok(()))) | None => "the ingress stopped".to_owned(),
                    Some(Ok(Err(e))) => format!("ingress: {e}"),
                    Some(Err(e)) => format!("the ingress task failed: {e}"),
                }
            }
            result = worker => {
                self.worker = None;
                match result {
                    Some(Ok(Ok(()))) | None => "the worker stopped".to_owned(),
                    Some(Ok(Err(e))) => format!("worker: {e}"),
                    Some(Err(e)) => format!("the worker task failed: {e}"),
                }
            }
        }
    }

    /// Stops everything in order: the ingress first (readiness off, in-flight requests and
    /// their publishes finish), then the worker (running passes finish, waiting events go back
    /// to the queue), then the queue, then the admin server and the activity link.
    pub async fn shutdown(self) {
        self.ingress_stop.cancel();
        if let Some(ingress) = self.ingress {
            // The ingress bounds its own drain (drain_delay + shutdown_grace).
            if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(120), ingress).await {
                tracing::warn!(error = %e, "the ingress stopped with an error");
            }
        }
        self.worker_stop.cancel();
        if let Some(worker) = self.worker
            && tokio::time::timeout(WORKER_STOP, worker).await.is_err()
        {
            tracing::warn!("the worker did not stop within {WORKER_STOP:?}");
        }
        self.queue_stop.cancel();
        if tokio::time::timeout(QUEUE_STOP, self.queue.closed())
            .await
            .is_err()
        {
            tracing::warn!("the queue did not close within {QUEUE_STOP:?}");
        }
        self.background_stop.cancel();
        let _ = tokio::time::timeout(ADMIN_STOP, self.admin).await;
    }
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, String> {
    listener
        .local_addr()
        .map_err(|e| format!("cannot read a listener's address: {e}"))
}

/// `/healthz`, `/readyz`, `/metrics`, the connection API and the status page, the last two
/// subject to the admin token rule. Returns whether the status page is served.
pub fn admin_router(
    connection: &ConnectionManager,
    queue: Arc<dyn EventQueue>,
    render_metrics: MetricsRender,
    listen: SocketAddr,
    token: Option<SecretString>,
    page: &StatusPage,
) -> (axum::Router, bool) {
    let router = nowpilot_worker::admin_router(nowpilot_worker::AdminState::new(
        queue,
        connection.clone(),
        render_metrics,
    ));
    let router = with_connection_api(router, listen, connection, token.clone());
    let served = token.is_some() || listen.ip().is_loopback();
    (status::mount(router, listen, page, token), served)
}
