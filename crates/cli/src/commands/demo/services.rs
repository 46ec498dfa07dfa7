//! The services nowpilot probes and the automation it calls, standing in on loopback:
//!
//! - `GET /checkout/health`: the checkout API, healthy (its latency is the incident's topic).
//! - `GET /payments/health`: the payments API, `503` until the runbook has run.
//! - `POST /runbooks/restart-payments`: a Rundeck-like job that accepts only a request signed
//!   the Standard Webhooks way with the runbook secret (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, timestamp
//!   within 5 minutes), and then "restarts" payments.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How far a runbook call's timestamp may be from this clock.
const TOLERANCE_SECS: i64 = 300;

/// One call of the runbook endpoint.
#[derive(Debug, Clone)]
pub struct RunbookCall {
    /// Whether the signature was valid (only then did the runbook run).
    pub signed: bool,
    /// The incident number the body named.
    pub incident: String,
}

#[derive(Default)]
struct Services {
    key: Vec<u8>,
    payments_fixed: AtomicBool,
    calls: Mutex<Vec<RunbookCall>>,
}

/// The running services.
#[derive(Clone)]
pub struct ServicesHandle {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    services: Arc<Services>,
}

impl ServicesHandle {
    /// Every runbook call so far.
    pub fn runbook_calls(&self) -> Vec<RunbookCall> {
        self.services
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Starts the services on 127.0.0.1 (any port) until `shutdown`. `secret` is the runbook
/// signing secret (`whsec_<base64>`).
pub async fn start(
    secret: &SecretString,
    shutdown: CancellationToken,
) -> Result<ServicesHandle, String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.expose_secret().trim_start_matches("whsec_"))
        .map_err(|_| "the runbook secret is not whsec_<base64>".to_owned())?;
    let services = Arc::new(Services {
        key,
        ..Services::default()
    });
    let router = Router::new()
        .route("/checkout/health", get(checkout_health))
        .route("/payments/health", get(payments_health))
        .route("/runbooks/restart-payments", post(restart_payments))
        .with_state(services.clone());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot start the demo services: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot start the demo services: {e}"))?;
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    Ok(ServicesHandle {
        url: format!("http://{addr}"),
        services,
    })
}

async fn checkout_health() -> Response {
    Json(json!({"service": "checkout-api", "status": "ok"})).into_response()
}

async fn payments_health(State(services): State<Arc<Services>>) -> Response {
    if services.payments_fixed.load(Ordering::SeqCst) {
        Json(json!({"service": "payments-api", "status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"service": "payments-api", "status": "down", "error": "connection pool exhausted"})),
        )
            .into_response()
    }
}

async fn restart_payments(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signed = verify(
        &services.key,
        &headers,
        &body,
        chrono::Utc::now().timestamp(),
    );
    let incident = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["incident"]["number"].as_str().map(str::to_owned))
        .unwrap_or_default();
    services
        .calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(RunbookCall { signed, incident });
    if !signed {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or invalid Standard Webhooks signature"})),
        )
            .into_response();
    }
    services.payments_fixed.store(true, Ordering::SeqCst);
    Json(json!({"job": "restart-payments", "result": "succeeded"})).into_response()
}

/// Checks the Standard Webhooks headers of a runbook call: any `v1,` signature in the
/// (space-separated) list must be the HMAC of `{id}.{timestamp}.{body}`, and the timestamp
/// within [`TOLERANCE_SECS`] of `now`.
fn verify(key: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now - ts).abs() > TOLERANCE_SECS {
        return false;
    }
    signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .any(|signature| {
            let Ok(mut mac) = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) else {
                return false;
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(&signature).is_ok()
        })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        h.insert("webhook-timestamp", HeaderValue::from_str(ts).unwrap());
        h.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn accepts_the_standard_webhooks_vector_and_nothing_else() {
        // The Standard Webhooks reference vector (svix libraries' tests).
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let body = br#"{"test": 2432232314}"#;
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let now = 1_614_265_330;
        assert!(verify(&key, &headers(id, "1614265330", good), body, now));
        assert!(verify(
            &key,
            &headers(id, "1614265330", &format!("v1,bm9wZQ== {good}")),
            body,
            now
        ));
        assert!(!verify(&key, &headers(id, "1614265330", good), b"{}", now));
        assert!(!verify(
            &key,
            &headers("other", "1614265330", good),
            body,
            now
        ));
        assert!(!verify(
            &key,
            &headers(id, "1614265330", good),
            body,
            now + 301
        ));
        assert!(!verify(&key, &headers(id, "x", good), body, now));
        assert!(!verify(&key, &HeaderMap::new(), body, now));
    }
}
