//! The HTTP surface: routes, the request log middleware, ServiceNow's error envelope, and the
//! checks every Table API and token request goes through (latency, faults, authentication).

use std::{borrow::Cow, time::Instant};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use serde_json::json;

use crate::{
    auth::{parse_basic, parse_bearer},
    control,
    limits::RandomFault,
    locks::{lock, read},
    oauth,
    reqlog::LoggedRequest,
    schema::SYS_USER,
    sim::{Caller, Simulator},
    table_api,
};

/// The full router of a simulator.
pub(crate) fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/api/now/table/{table}", any(table_api::handle))
        .route("/api/now/table/{table}/{sys_id}", any(table_api::handle))
        .route("/api/now/{version}/table/{table}", any(table_api::handle))
        .route(
            "/api/now/{version}/table/{table}/{sys_id}",
            any(table_api::handle),
        )
        .route("/oauth_token.do", post(oauth::token))
        .route(
            "/oauth_auth.do",
            get(oauth::authorize_form).post(oauth::authorize_submit),
        )
        .route(
            "/_sim/requests",
            get(control::requests).delete(control::clear_requests),
        )
        .route("/_sim/callbacks", get(control::callbacks))
        .route(
            "/_sim/faults",
            get(control::get_faults).post(control::set_faults),
        )
        .route(
            "/_sim/webhook",
            get(control::get_webhook).post(control::set_webhook),
        )
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(sim.clone(), log_requests))
        .with_state(sim)
}

/// What a handler tells the request log beyond method, path and status.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogInfo {
    pub(crate) table: Option<String>,
    pub(crate) sys_id: Option<String>,
    pub(crate) user: Option<String>,
}

/// Attaches log details to a response.
pub(crate) fn with_info(mut response: Response, info: LogInfo) -> Response {
    response.extensions_mut().insert(info);
    response
}

async fn log_requests(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    let start_us = sim.micros();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let info = response
        .extensions()
        .get::<LogInfo>()
        .cloned()
        .unwrap_or_default();
    sim.inner.requests.push(LoggedRequest {
        method,
        path,
        table: info.table,
        sys_id: info.sys_id,
        user: info.user,
        status: response.status().as_u16(),
        start_us,
        end_us: sim.micros(),
    });
    response
}

async fn fallback(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        not_a_resource().into_response()
    } else {
        ApiError::new(StatusCode::NOT_FOUND, "Not Found", None).into_response()
    }
}

/// A ServiceNow error: `{"error":{"message","detail"},"status":"failure"}`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: Cow<'static, str>,
    pub(crate) detail: Option<Cow<'static, str>>,
}

impl ApiError {
    /// An error with this status, message and detail.
    pub(crate) fn new(
        status: StatusCode,
        message: impl Into<Cow<'static, str>>,
        detail: Option<&'static str>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            detail: detail.map(Cow::Borrowed),
        }
    }

    /// An error whose detail is computed.
    pub(crate) fn detailed(
        status: StatusCode,
        message: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            detail: Some(detail.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {"message": self.message, "detail": self.detail},
            "status": "failure",
        });
        json_response(self.status, &body)
    }
}

/// A JSON response with ServiceNow's content type.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

/// 400 for URLs that match no API.
pub(crate) fn not_a_resource() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "Requested URI does not represent any resource",
        None,
    )
}

/// 401 for missing, wrong or expired credentials.
pub(crate) fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "User Not Authenticated",
        Some("Required to provide Auth information"),
    )
}

/// The scheme and authority clients used to reach us, e.g. `http://127.0.0.1:8090`.
pub(crate) fn base_url(uri: &Uri, headers: &HeaderMap) -> String {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|s| matches!(*s, "http" | "https"))
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

/// A header's value as text, if present and visible ASCII.
pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Simulator {
    /// Sleeps for the configured latency, then answers for a forced status or a random fault
    /// (random faults only when `random` is set: they apply to the Table API alone).
    pub(crate) async fn injected(&self, random: bool) -> Option<Response> {
        let latency = lock(&self.inner.faults).settings().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut faults = lock(&self.inner.faults);
        if let Some((status, remaining)) = faults.forced(Instant::now()) {
            return Some(forced_response(status, remaining));
        }
        match random.then(|| faults.draw()).flatten()? {
            RandomFault::Internal => Some(
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    Some("Injected fault"),
                )
                .into_response(),
            ),
            RandomFault::Unavailable => Some(load_balancer_503()),
        }
    }

    /// The caller, from Basic credentials or a bearer token; `None` means 401.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Option<Caller> {
        let header = header_str(headers, header::AUTHORIZATION)?;
        let user = if let Some((user, password)) = parse_basic(header) {
            self.inner
                .accounts
                .check_password(&user, &password)
                .then_some(user)?
        } else {
            let token = parse_bearer(header)?;
            lock(&self.inner.tokens).user_for_access(token, Instant::now())?
        };
        self.caller(&user)
    }

    /// A caller by user name, if the user exists and may sign in.
    pub(crate) fn caller(&self, user: &str) -> Option<Caller> {
        let store = read(&self.inner.store);
        let row = store.user_by_name(user)?;
        let field = |name: &str| SYS_USER.position(name).map_or("", |p| row[p].as_str());
        if field("active") == "false" || field("locked_out") == "true" {
            return None;
        }
        Some(Caller {
            user_name: user.to_owned(),
            sys_id: field("sys_id").to_owned(),
            level: self.inner.accounts.level(user),
        })
    }
}

fn forced_response(status: u16, remaining: std::time::Duration) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return load_balancer_503();
    }
    let reason = status.canonical_reason().unwrap_or("Injected status");
    let mut response =
        ApiError::new(status, reason, Some("Injected by the simulator")).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

/// The HTML page a load balancer sends when no node is available.
fn load_balancer_503() -> Response {
    let body = "<html><head><title>503 Service Unavailable</title></head><body>\
                <h1>Service Unavailable</h1><p>No server is available to handle this request.</p>\
                </body></html>";
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}
