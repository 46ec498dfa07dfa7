//! `POST /webhooks/servicenow`: the checks, in order, so each failure has exactly one answer
//! and nothing unauthenticated is parsed.
//!
//! 1. content type `application/json` (parameters allowed) — else 415;
//! 2. body size, from `Content-Length` and again while the body streams in — else 413;
//! 3. signature over the raw bytes — else 401;
//! 4. JSON — else 400; required fields and types — else 422;
//! 5. echo (nowpilot's own user) — 200 `ignored`;
//! 6. duplicate `webhook-id` — 200 `duplicate`;
//! 7. publish and wait for the broker's confirm — 202, or 503 with `Retry-After`.
//!
//! Steps 1–2 and the per-request timeout live in [`gate`], a middleware placed outside the
//! tower-http body-limit layer, so the content type is judged before the declared length.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use http::{HeaderMap, header};
use http_body_util::LengthLimitError;
use nowpilot_model::{CallbackPayload, EventEnvelope};
use tracing::{debug, error, warn};

use crate::dedupe::Claim;
use crate::publisher::{confirm_label, failure};
use crate::response::{Answer, Refusal, normalize};
use crate::server::IngressState;
use crate::telemetry::{self, InFlight, Outcome};
use crate::verify::Verified;

/// Middleware around the webhook route: content type, declared length, timeout and metrics.
pub(crate) async fn gate(
    State(state): State<IngressState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::enter();
    let settings = state.settings();
    let retry_after = state.retry_after_secs();
    let response = match precheck(request.headers(), settings.max_body) {
        Err(refusal) => refusal.into_response(retry_after),
        Ok(()) => match tokio::time::timeout(settings.request_timeout, next.run(request)).await {
            Ok(response) => normalize(response, retry_after, settings.max_body),
            Err(_) => {
                debug!("webhook request timed out");
                Refusal::Timeout.into_response(retry_after)
            }
        },
    };
    let outcome = response
        .extensions()
        .get::<Outcome>()
        .copied()
        .unwrap_or(Outcome::Error);
    telemetry::request_finished(outcome, started.elapsed());
    response
}

fn precheck(headers: &HeaderMap, max_body: usize) -> Result<(), Refusal> {
    if !is_json(headers) {
        return Err(Refusal::UnsupportedMediaType);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body as u64) {
        return Err(Refusal::TooLarge { limit: max_body });
    }
    Ok(())
}

/// `application/json`, with or without parameters such as `; charset=utf-8`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The webhook handler proper (runs after [`gate`]).
pub(crate) async fn servicenow_webhook(
    State(state): State<IngressState>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    match process(&state, &parts.headers, body).await {
        Ok(answer) => answer.into_response(),
        Err(refusal) => refusal.into_response(state.retry_after_secs()),
    }
}

async fn process(state: &IngressState, headers: &HeaderMap, body: Body) -> Result<Answer, Refusal> {
    let settings = state.settings();
    let bytes = read_body(body, settings.max_body).await?;

    let verified = settings
        .verifier
        .verify(headers, &bytes, Utc::now().timestamp())
        .map_err(|failure| {
            debug!(reason = failure.as_str(), "signature verification failed");
            telemetry::verification_failed(failure.as_str());
            Refusal::Unauthorized
        })?;

    let payload = CallbackPayload::parse(&bytes).map_err(|e| {
        debug!(code = e.code(), error = %e, "callback payload refused");
        Refusal::Payload(e)
    })?;

    if is_echo(&settings.echo_users, &payload.sys_updated_by) {
        debug!(sys_id = %payload.sys_id, "dropping nowpilot's own change (echo)");
        return Ok(Answer::Echo);
    }

    let envelope = EventEnvelope::from_callback(payload, Utc::now());
    let key = match verified {
        Verified::Standard { webhook_id } => webhook_id,
        // The body-only scheme has no id header; the record version is the natural key.
        Verified::BodyOnly => envelope.event_id.as_str().to_owned(),
    };

    let owner = loop {
        match state.dedupe().claim(&key) {
            Claim::Owner(owner) => break owner,
            Claim::Duplicate => {
                debug!(webhook_id = %key, "duplicate delivery");
                return Ok(Answer::Duplicate);
            }
            // Another request is publishing this id: its outcome decides ours.
            Claim::Wait(mut done) => {
                let _closed = done.changed().await;
            }
        }
    };

    // The publish runs as its own tracked task: if the caller hangs up or times out it still
    // completes (and is remembered for dedupe), and shutdown waits for it.
    let event_id = envelope.event_id.clone();
    let publisher = Arc::clone(state.publisher());
    let task = state.tracker().spawn(async move {
        let started = Instant::now();
        let result = publisher.publish(&envelope).await;
        let label = match &result {
            Ok(()) => "ack",
            Err(e) => confirm_label(e),
        };
        telemetry::publish_finished(label, started.elapsed());
        if result.is_ok() {
            owner.confirm();
        }
        result
    });
    match task.await {
        Ok(Ok(())) => Ok(Answer::Accepted(event_id)),
        Ok(Err(e)) => {
            let failure = failure(&e);
            warn!(
                event_id = %event_id,
                error = %e,
                status = %failure.status,
                "publish not confirmed"
            );
            Err(Refusal::PublishFailed {
                status: failure.status,
                code: failure.code,
                message: e.to_string(),
            })
        }
        Err(join_error) => {
            error!(event_id = %event_id, error = %join_error, "publish task failed");
            telemetry::publish_finished("panic", std::time::Duration::ZERO);
            Err(Refusal::Unavailable {
                code: "publish_failed",
                message: "the event could not be queued".into(),
            })
        }
    }
}

/// Reads the whole body, stopping as soon as it exceeds `limit` (the body may be chunked or
/// its length may lie; the bytes are counted as they arrive).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if caused_by_length_limit(&e) {
            Refusal::TooLarge { limit }
        } else {
            debug!(error = %e, "request body could not be read");
            Refusal::BodyUnreadable
        }
    })
}

fn caused_by_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

fn is_echo(echo_users: &[String], updated_by: &str) -> bool {
    let updated_by = updated_by.trim();
    !updated_by.is_empty()
        && echo_users
            .iter()
            .any(|u| u.eq_ignore_ascii_case(updated_by))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn content_type_rules() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=UTF-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn echo_matching_ignores_case_and_never_matches_empty() {
        let users = vec!["nowpilot.integration".to_owned()];
        assert!(is_echo(&users, "NowPilot.Integration"));
        assert!(!is_echo(&users, "beth.anglin"));
        assert!(!is_echo(&users, ""));
    }
}
