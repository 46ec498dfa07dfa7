//! Every answer the ingress gives, with its status, stable `code` and outcome label.
//!
//! Error bodies are always `{"code": "<stable_snake_case>", "message": "<human text>"}`. A 401
//! says only `invalid_signature`: which check failed is logged at debug and counted, never
//! told to the caller.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use nowpilot_model::{CallbackError, EventId};
use serde::Serialize;

use crate::telemetry::Outcome;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A request that was handled (2xx).
#[derive(Debug)]
pub(crate) enum Answer {
    /// Queued and confirmed by the broker.
    Accepted(EventId),
    /// This `webhook-id` was already queued.
    Duplicate,
    /// nowpilot's own change: not queued.
    Echo,
}

/// A request that was refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    UnsupportedMediaType,
    TooLarge {
        limit: usize,
    },
    BodyUnreadable,
    Unauthorized,
    Payload(CallbackError),
    Unavailable {
        code: &'static str,
        message: String,
    },
    PublishFailed {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    Timeout,
    NotFound,
    MethodNotAllowed,
    RateLimited {
        retry_after_secs: u64,
    },
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct StatusBody<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// A JSON response tagged with its outcome (read back by the webhook middleware for metrics).
fn json(status: StatusCode, body: Vec<u8>, outcome: Outcome) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, APPLICATION_JSON);
    response.extensions_mut().insert(outcome);
    response
}

/// A `{code, message}` error response.
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    outcome: Outcome,
) -> Response {
    // Serializing two strings cannot fail; the fallback keeps the no-panic rule anyway.
    let body = serde_json::to_vec(&ErrorBody { code, message })
        .unwrap_or_else(|_| br#"{"code":"internal","message":"internal error"}"#.to_vec());
    json(status, body, outcome)
}

impl Answer {
    pub(crate) fn into_response(self) -> Response {
        let (status, body, outcome) = match &self {
            Answer::Accepted(id) => (
                StatusCode::ACCEPTED,
                StatusBody {
                    status: "accepted",
                    event_id: Some(id.as_str()),
                    reason: None,
                },
                Outcome::Accepted,
            ),
            Answer::Duplicate => (
                StatusCode::OK,
                StatusBody {
                    status: "duplicate",
                    event_id: None,
                    reason: None,
                },
                Outcome::Duplicate,
            ),
            Answer::Echo => (
                StatusCode::OK,
                StatusBody {
                    status: "ignored",
                    event_id: None,
                    reason: Some("echo"),
                },
                Outcome::Echo,
            ),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        json(status, body, outcome)
    }
}

impl Refusal {
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Refusal::UnsupportedMediaType => Outcome::UnsupportedMediaType,
            Refusal::TooLarge { .. } => Outcome::TooLarge,
            Refusal::BodyUnreadable => Outcome::Malformed,
            Refusal::Unauthorized => Outcome::Unauthorized,
            Refusal::Payload(e) if e.is_malformed() => Outcome::Malformed,
            Refusal::Payload(_) => Outcome::Invalid,
            Refusal::Unavailable { .. } => Outcome::Unavailable,
            Refusal::PublishFailed { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE => {
                Outcome::Unavailable
            }
            Refusal::PublishFailed { .. } => Outcome::Error,
            Refusal::Timeout => Outcome::Timeout,
            Refusal::NotFound => Outcome::NotFound,
            Refusal::MethodNotAllowed => Outcome::MethodNotAllowed,
            Refusal::RateLimited { .. } => Outcome::RateLimited,
        }
    }

    /// The response; `retry_after_secs` goes into `Retry-After` on 503s (a 429 carries its
    /// own).
    pub(crate) fn into_response(self, retry_after_secs: u64) -> Response {
        let outcome = self.outcome();
        let (status, code, message): (StatusCode, &str, String) = match &self {
            Refusal::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be application/json".into(),
            ),
            Refusal::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
            ),
            Refusal::BodyUnreadable => (
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "the request body could not be read".into(),
            ),
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "signature verification failed".into(),
            ),
            Refusal::Payload(e) => (
                if e.is_malformed() {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                },
                e.code(),
                e.to_string(),
            ),
            Refusal::Unavailable { code, message } => {
                (StatusCode::SERVICE_UNAVAILABLE, *code, message.clone())
            }
            Refusal::PublishFailed {
                status,
                code,
                message,
            } => (*status, *code, message.clone()),
            Refusal::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                "the request did not complete in time".into(),
            ),
            Refusal::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint".into(),
            ),
            Refusal::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not accept that method".into(),
            ),
            Refusal::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from this address; retry after {retry_after_secs} s"),
            ),
        };
        let mut response = error_response(status, code, &message, outcome);
        let retry_after = match &self {
            Refusal::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(retry_after_secs),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON error for a response some inner layer produced without one (for example the
/// body-limit layer's plain-text 413), so every error body keeps the same shape.
pub(crate) fn normalize(response: Response, retry_after_secs: u64, max_body: usize) -> Response {
    if response.extensions().get::<Outcome>().is_some() {
        return response;
    }
    let refusal = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Refusal::TooLarge { limit: max_body },
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Refusal::UnsupportedMediaType,
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => Refusal::Timeout,
        StatusCode::BAD_REQUEST => Refusal::BodyUnreadable,
        _ => return response,
    };
    refusal.into_response(retry_after_secs)
}
