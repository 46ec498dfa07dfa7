//! The router, the shared state, the probe endpoints and the serve loop with graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::{info, warn};

use crate::client_addr::PeerAddr;
use crate::config::{IngressConfig, IngressConfigError, IngressSettings};
use crate::dedupe::Dedupe;
use crate::publisher::EventPublisher;
use crate::rate_limit::{self, RateLimiter};
use crate::response::Refusal;
use crate::telemetry::{self, Outcome};
use crate::tls::{self, TlsListener};
use crate::webhook;

/// Renders the process's metrics in Prometheus text format (the binary owns the recorder).
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// The path ServiceNow posts to.
pub const WEBHOOK_PATH: &str = "/webhooks/servicenow";

/// Why the ingress could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The `[ingress]` section is unusable.
    #[error(transparent)]
    Config(#[from] IngressConfigError),
    /// The HTTP server failed.
    #[error("ingress server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
pub struct IngressState {
    inner: Arc<StateInner>,
}

struct StateInner {
    settings: IngressSettings,
    publisher: Arc<dyn EventPublisher>,
    render_metrics: RenderMetrics,
    dedupe: Arc<Dedupe>,
    tracker: TaskTracker,
    shutting_down: AtomicBool,
    retry_after_secs: u64,
    rate_limiter: Option<RateLimiter>,
}

impl IngressState {
    /// State for `settings`, publishing through `publisher`.
    pub fn new(
        settings: IngressSettings,
        publisher: Arc<dyn EventPublisher>,
        render_metrics: RenderMetrics,
    ) -> Self {
        telemetry::describe_metrics();
        let dedupe = Arc::new(Dedupe::new(settings.dedupe_capacity, settings.dedupe_ttl));
        // Retry-After is whole seconds; round up so "1.5s" never becomes "1".
        let retry_after_secs = settings
            .retry_after
            .as_secs()
            .saturating_add(u64::from(settings.retry_after.subsec_nanos() > 0))
            .max(1);
        let rate_limiter = settings
            .rate_limit
            .map(|(per_second, burst)| RateLimiter::new(per_second, burst));
        IngressState {
            inner: Arc::new(StateInner {
                rate_limiter,
                settings,
                publisher,
                render_metrics,
                dedupe,
                tracker: TaskTracker::new(),
                shutting_down: AtomicBool::new(false),
                retry_after_secs,
            }),
        }
    }

    /// Marks the ingress as shutting down: `/readyz` answers 503 from now on. Requests are
    /// still served; [`serve`] calls this before it stops accepting.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
    }

    /// Whether [`IngressState::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Waits (at most `limit`) for publishes still running; true when none is left.
    pub async fn wait_for_publishes(&self, limit: Duration) -> bool {
        self.inner.tracker.close();
        tokio::time::timeout(limit, self.inner.tracker.wait())
            .await
            .is_ok()
    }

    pub(crate) fn settings(&self) -> &IngressSettings {
        &self.inner.settings
    }
    pub(crate) fn publisher(&self) -> &Arc<dyn EventPublisher> {
        &self.inner.publisher
    }
    pub(crate) fn dedupe(&self) -> &Arc<Dedupe> {
        &self.inner.dedupe
    }
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }
    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.inner.retry_after_secs
    }
    pub(crate) fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.inner.rate_limiter.as_ref()
    }
}

/// The ingress's HTTP surface: the webhook, `/healthz`, `/readyz`, `/metrics`, and JSON 404 /
/// 405 for everything else.
pub fn router(state: IngressState) -> Router {
    let max_body = state.settings().max_body;
    // route_layer: only requests that matched POST reach these (a GET gets 405, not 415).
    // The last layer added runs first: the gate judges content type and declared length
    // before tower-http's limit, which then caps the bytes actually streamed.
    let webhook_route = post(webhook::servicenow_webhook)
        .route_layer(RequestBodyLimitLayer::new(max_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), webhook::gate));
    Router::new()
        .route(WEBHOOK_PATH, webhook_route)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // For any extractor added later; the webhook reads its body under its own limit.
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
}

#[derive(Serialize)]
struct Ready<'a> {
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

async fn healthz() -> Response {
    axum::Json(Health { status: "ok" }).into_response()
}

async fn readyz(State(state): State<IngressState>) -> Response {
    if state.is_shutting_down() {
        return ready_response(false, Some("shutting down"));
    }
    let readiness = state.publisher().readiness();
    ready_response(readiness.ready, readiness.reason.as_deref())
}

fn ready_response(ready: bool, reason: Option<&str>) -> Response {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let reason = if ready {
        None
    } else {
        Some(reason.unwrap_or("publisher not ready"))
    };
    (status, axum::Json(Ready { ready, reason })).into_response()
}

async fn metrics(State(state): State<IngressState>) -> Response {
    let text = (state.inner.render_metrics)();
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn not_found(State(state): State<IngressState>) -> Response {
    telemetry::request_refused(Outcome::NotFound);
    Refusal::NotFound.into_response(state.retry_after_secs())
}

async fn method_not_allowed(State(state): State<IngressState>) -> Response {
    telemetry::request_refused(Outcome::MethodNotAllowed);
    Refusal::MethodNotAllowed.into_response(state.retry_after_secs())
}

/// Validates `config` and serves until `shutdown` is cancelled, then shuts down gracefully
/// (see [`serve`]). Relative `secrets_file` paths are used as given; resolve them first.
pub async fn run(
    config: IngressConfig,
    publisher: Arc<dyn EventPublisher>,
    render_metrics: RenderMetrics,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let settings = config.validate()?;
    serve(
        IngressState::new(settings, publisher, render_metrics),
        listener,
        shutdown,
    )
    .await
}

/// Serves `state` on `listener` until `shutdown` is cancelled. Then, in order: `/readyz`
/// answers 503; after `drain_delay` the listener stops accepting; in-flight requests and their
/// publishes finish, bounded by `shutdown_grace`; then this returns. Work still running after
/// the grace period is abandoned with a warning (the sender gets no answer, and ServiceNow's
/// poller safety net covers the event).
pub async fn serve(
    state: IngressState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let app = router(state.clone());
    serve_router(state, app, listener, shutdown).await
}

/// Like [`serve`], with `app` as the router: [`router`]`(state)` plus the caller's routes
/// (the CLI adds the status page). The shutdown sequence is the same. Everything `app` serves
/// is behind the per-address rate limit, and served over HTTPS when TLS is configured.
pub async fn serve_router(
    state: IngressState,
    app: axum::Router,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let tls = state.settings().tls.clone();
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        info!(%addr, scheme, "ingress listening");
    }
    let app = app
        .layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        ))
        .into_make_service_with_connect_info::<PeerAddr>();
    let signal = shutdown_signal(&state, &shutdown);
    match tls {
        None => {
            let server = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .into_future();
            drive(state, server, shutdown).await
        }
        Some(tls) => {
            tls::reload_on_sighup(Arc::clone(&tls.cert), shutdown.clone());
            let listener = TlsListener::new(listener, tls.config).map_err(IngressError::Serve)?;
            let server = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .into_future();
            drive(state, server, shutdown).await
        }
    }
}

/// Resolves when the server should stop accepting: readiness off first, then `drain_delay`.
fn shutdown_signal(
    state: &IngressState,
    shutdown: &CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let drain_delay = state.settings().drain_delay;
    let state = state.clone();
    let shutdown = shutdown.clone();
    async move {
        shutdown.cancelled().await;
        state.begin_shutdown();
        if !drain_delay.is_zero() {
            info!(
                ?drain_delay,
                "readiness withdrawn; draining before closing the listener"
            );
            tokio::time::sleep(drain_delay).await;
        }
        info!("closing the listener; finishing in-flight requests");
    }
}

/// Runs `server` until `shutdown`, then bounds the drain and the publishes still running.
async fn drive(
    state: IngressState,
    server: impl std::future::Future<Output = std::io::Result<()>>,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let drain_delay = state.settings().drain_delay;
    let grace = state.settings().shutdown_grace;
    let mut server = std::pin::pin!(server);

    tokio::select! {
        result = &mut server => return result.map_err(IngressError::Serve),
        () = shutdown.cancelled() => {}
    }
    let deadline = tokio::time::Instant::now() + drain_delay + grace;
    match tokio::time::timeout_at(deadline, &mut server).await {
        Ok(result) => result.map_err(IngressError::Serve)?,
        Err(_) => warn!(
            ?grace,
            "connections still open after the shutdown grace period"
        ),
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !state.wait_for_publishes(remaining).await {
        warn!(
            ?grace,
            "publishes still unconfirmed after the shutdown grace period"
        );
    }
    info!("ingress stopped");
    Ok(())
}
