//! The worker's admin endpoints: `/healthz`, `/readyz` and `/metrics`. The lead mounts the
//! connection API next to them.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use nowpilot_admin::ConnectionManager;
use nowpilot_queue::EventQueue;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Renders the process's metrics in Prometheus text format (the binary owns the recorder).
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    queue: Arc<dyn EventQueue>,
    connection: ConnectionManager,
    render_metrics: RenderMetrics,
}

impl AdminState {
    /// State over the worker's queue and connection.
    pub fn new(
        queue: Arc<dyn EventQueue>,
        connection: ConnectionManager,
        render_metrics: RenderMetrics,
    ) -> Self {
        AdminState {
            queue,
            connection,
            render_metrics,
        }
    }
}

/// `/healthz` (the process runs), `/readyz` (the queue is ready and a ServiceNow client is
/// present; otherwise 503 with the reasons as JSON) and `/metrics`.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve_admin(
    router: Router,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let mut reasons = Vec::new();
    let queue = state.queue.readiness();
    if !queue.ready {
        reasons.push(format!(
            "queue: {}",
            queue.reason.as_deref().unwrap_or("not ready")
        ));
    }
    let connection = state.connection.current();
    if connection.client.is_none() {
        reasons.push(format!(
            "servicenow: {}",
            connection
                .problem
                .as_deref()
                .unwrap_or("no ServiceNow connection")
        ));
    }
    if reasons.is_empty() {
        (StatusCode::OK, axum::Json(json!({"ready": true}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "reason": reasons.join("; ")})),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut response = (state.render_metrics)().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
