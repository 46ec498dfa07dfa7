//! The admin HTTP API: the connection operations of `nowpilot connect | status | disconnect`
//! over HTTP, for the status page and for automation.
//!
//! - `GET /api/v1/connection` — live check of the current connection (`?cached=true` returns
//!   the last report without calling ServiceNow).
//! - `PUT /api/v1/connection` — body: a `[servicenow]` section as JSON; verifies, and saves
//!   only when every check passes (200), else 422 with the report and nothing changed.
//! - `DELETE /api/v1/connection` — disconnect.
//!
//! Every answer is JSON; errors are `{"code": ..., "message": ...}`. When a token is
//! configured, every `/api/` route requires `Authorization: Bearer <token>`; without one, the
//! server must listen on loopback only (checked when the configuration loads).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use hmac::{Hmac, KeyInit, Mac};
use nowpilot_servicenow::{ConnectionReport, ServiceNowConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::manager::{ConnectionManager, ManagerError};

/// Shared state of the API routes.
#[derive(Clone)]
pub struct ApiState {
    manager: ConnectionManager,
    token: Option<Arc<SecretString>>,
}

impl ApiState {
    /// API state over `manager`, protected by `token` when given.
    pub fn new(manager: ConnectionManager, token: Option<SecretString>) -> Self {
        ApiState {
            manager,
            token: token.map(Arc::new),
        }
    }
}

/// The `/api/v1/connection` routes (mount them into a larger admin router).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/api/v1/connection",
            get(get_connection)
                .put(put_connection)
                .delete(delete_connection),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// A JSON error answer.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token
        && !bearer_matches(request.headers(), token)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"code": "unauthorized", "message": "a valid bearer token is required"})),
        )
            .into_response();
    }
    next.run(request).await
}

/// Constant-time comparison of the presented bearer token with the configured one (both
/// are run through an HMAC first, so the comparison does not leak the length either).
pub(crate) fn bearer_matches(headers: &HeaderMap, token: &SecretString) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let key = b"nowpilot-admin-token-compare";
    let digest = |s: &str| {
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).ok()?;
        mac.update(s.as_bytes());
        Some(mac)
    };
    let (Some(expected), Some(presented)) = (digest(token.expose_secret()), digest(presented))
    else {
        return false;
    };
    presented
        .verify_slice(&expected.finalize().into_bytes())
        .is_ok()
}

#[derive(Debug, Deserialize)]
struct CheckQuery {
    #[serde(default)]
    cached: bool,
}

async fn get_connection(State(state): State<ApiState>, Query(q): Query<CheckQuery>) -> Response {
    let current = state.manager.current();
    if current.config.is_none() {
        return Json(json!({
            "connected": false,
            "configured": false,
            "message": "ServiceNow is not connected",
        }))
        .into_response();
    }
    let report = if q.cached {
        current.report.clone()
    } else {
        state.manager.check().await
    };
    match report {
        Some(report) => Json(report_json(&report)).into_response(),
        None => Json(json!({
            "connected": current.is_connected(),
            "configured": true,
            "message": current.problem.unwrap_or_else(|| "not checked yet".into()),
        }))
        .into_response(),
    }
}

async fn put_connection(State(state): State<ApiState>, body: axum::body::Bytes) -> Response {
    let config: ServiceNowConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_connection",
                format!("the body must be a [servicenow] section as JSON: {e}"),
            );
        }
    };
    match state.manager.connect(config).await {
        Ok(report) => Json(report_json(&report)).into_response(),
        Err(ManagerError::CheckFailed(report)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(report_json(&report))).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "save_failed",
            e.to_string(),
        ),
    }
}

async fn delete_connection(State(state): State<ApiState>) -> Response {
    let instance = state
        .manager
        .current()
        .config
        .map(|c| c.instance_url.clone());
    match state.manager.disconnect().await {
        Ok(_) => Json(json!({
            "connected": false,
            "disconnected": instance,
            "message": "ServiceNow is disconnected; write-back has stopped",
        }))
        .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "disconnect_failed",
            e.to_string(),
        ),
    }
}

fn report_json(report: &ConnectionReport) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap_or_else(|_| json!({}));
    if let Some(map) = value.as_object_mut() {
        map.insert("connected".into(), json!(report.connected()));
        map.insert("configured".into(), json!(true));
        map.insert("message".into(), json!(report.summary()));
    }
    value
}
