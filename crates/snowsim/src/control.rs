//! The `/_sim/` control endpoints: request and callback logs, faults, the webhook target.
//!
//! They need no authentication: the simulator is for tests and demos only.

use std::time::Duration;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use url::Url;

use crate::{
    config::{FaultSettings, ForcedStatus, WebhookConfig, WebhookSecret},
    http::json_response,
    sim::Simulator,
};

fn bad_request(message: impl Into<String>) -> Response {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": message.into() }))
}

/// `GET /_sim/requests`: the request log, oldest first.
pub(crate) async fn requests(State(sim): State<Simulator>) -> Response {
    Json(sim.request_log()).into_response()
}

/// `DELETE /_sim/requests`: forget the request log.
pub(crate) async fn clear_requests(State(sim): State<Simulator>) -> StatusCode {
    sim.clear_request_log();
    StatusCode::NO_CONTENT
}

/// `GET /_sim/callbacks`: callback outcomes, oldest first.
pub(crate) async fn callbacks(State(sim): State<Simulator>) -> Response {
    Json(sim.callback_log()).into_response()
}

/// The JSON form of [`FaultSettings`]. Missing members mean "none" (a POST replaces all).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    /// Added latency in milliseconds.
    #[serde(default)]
    latency_ms: u64,
    /// Fraction of Table API requests that fail at random.
    #[serde(default)]
    fault_rate: f64,
    /// Seed of the random sequence.
    #[serde(default)]
    seed: Option<u64>,
    /// Answer every Table API and token request with this status...
    #[serde(default)]
    status: Option<u16>,
    /// ...for this many seconds.
    #[serde(default)]
    status_seconds: Option<f64>,
}

impl From<&FaultSettings> for FaultsBody {
    fn from(f: &FaultSettings) -> Self {
        FaultsBody {
            latency_ms: u64::try_from(f.latency.as_millis()).unwrap_or(u64::MAX),
            fault_rate: f.fault_rate,
            seed: f.seed,
            status: f.forced.map(|x| x.status),
            status_seconds: f.forced.map(|x| x.duration.as_secs_f64()),
        }
    }
}

/// `GET /_sim/faults`.
pub(crate) async fn get_faults(State(sim): State<Simulator>) -> Response {
    Json(FaultsBody::from(&sim.faults())).into_response()
}

/// `POST /_sim/faults`: replace the fault settings.
pub(crate) async fn set_faults(State(sim): State<Simulator>, body: Bytes) -> Response {
    let parsed: FaultsBody = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => return bad_request(format!("invalid faults: {e}")),
    };
    if !(0.0..=1.0).contains(&parsed.fault_rate) {
        return bad_request("fault_rate must be between 0 and 1");
    }
    let forced = match (parsed.status, parsed.status_seconds) {
        (None, None) => None,
        (Some(status), Some(seconds)) => {
            if !(100..=599).contains(&status) {
                return bad_request("status must be an HTTP status code");
            }
            let Ok(duration) = Duration::try_from_secs_f64(seconds) else {
                return bad_request("status_seconds must be a non-negative number");
            };
            Some(ForcedStatus { status, duration })
        }
        _ => return bad_request("status and status_seconds go together"),
    };
    sim.set_faults(FaultSettings {
        latency: Duration::from_millis(parsed.latency_ms),
        fault_rate: parsed.fault_rate,
        seed: parsed.seed,
        forced,
    });
    Json(FaultsBody::from(&sim.faults())).into_response()
}

/// The JSON form of the webhook target.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    /// The receiver URL; `null` or missing stops callbacks.
    #[serde(default)]
    url: Option<String>,
    /// `whsec_<base64>`; `null` or missing sends unsigned callbacks.
    #[serde(default)]
    secret: Option<String>,
    /// Changes by this user fire nothing.
    #[serde(default)]
    skip_user: Option<String>,
}

fn webhook_view(config: &WebhookConfig) -> serde_json::Value {
    json!({
        "url": config.url.as_ref().map(Url::as_str),
        "secret_set": config.secret.is_some(),
        "skip_user": config.skip_user,
    })
}

/// `GET /_sim/webhook` (the secret is never shown).
pub(crate) async fn get_webhook(State(sim): State<Simulator>) -> Response {
    Json(webhook_view(&sim.webhook())).into_response()
}

/// `POST /_sim/webhook`: replace the callback target.
pub(crate) async fn set_webhook(State(sim): State<Simulator>, body: Bytes) -> Response {
    let parsed: WebhookBody = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => return bad_request(format!("invalid webhook: {e}")),
    };
    let url = match parsed.url.as_deref().map(Url::parse) {
        None => None,
        Some(Ok(url)) if matches!(url.scheme(), "http" | "https") => Some(url),
        Some(_) => return bad_request("url must be an absolute http(s) URL"),
    };
    let secret = match parsed.secret.as_deref().map(WebhookSecret::parse) {
        None => None,
        Some(Ok(secret)) => Some(secret),
        Some(Err(_)) => return bad_request("secret must be whsec_ followed by base64"),
    };
    let config = WebhookConfig {
        url,
        secret,
        skip_user: parsed.skip_user.filter(|u| !u.is_empty()),
    };
    sim.set_webhook(config);
    Json(webhook_view(&sim.webhook())).into_response()
}
