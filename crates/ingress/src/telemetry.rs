//! Metric names and the one place each is emitted.
//!
//! Libraries only use the `metrics` facade; the binary installs the recorder. Every label
//! value comes from a closed set defined here, so cardinality stays bounded whatever callers
//! send.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Requests to the webhook by outcome.
pub const REQUESTS_TOTAL: &str = "nowpilot_ingress_requests_total";
/// Failed signature verifications by reason.
pub const VERIFICATION_FAILURES_TOTAL: &str = "nowpilot_ingress_verification_failures_total";
/// Time from publish to the broker's confirm (or failure).
pub const PUBLISH_DURATION_SECONDS: &str = "nowpilot_ingress_publish_duration_seconds";
/// Publish outcomes by result (`ack`, `nack`, `timeout`, `unavailable`, `unroutable`, `panic`).
pub const CONFIRMS_TOTAL: &str = "nowpilot_ingress_confirms_total";
/// Webhook requests being processed.
pub const IN_FLIGHT: &str = "nowpilot_ingress_in_flight";
/// Callbacks dropped as duplicates of an already queued `webhook-id`.
pub const DUPLICATES_TOTAL: &str = "nowpilot_ingress_duplicates_total";
/// Callbacks dropped because nowpilot's own user made the change.
pub const ECHOES_DROPPED_TOTAL: &str = "nowpilot_ingress_echoes_dropped_total";
/// Requests refused with 429 because their client address was over its rate.
pub const RATE_LIMITED_TOTAL: &str = "nowpilot_ingress_rate_limited_total";
/// Webhook request duration by outcome.
pub const REQUEST_DURATION_SECONDS: &str = "nowpilot_ingress_request_duration_seconds";

/// Registers descriptions and units with whatever recorder is installed. Idempotent.
pub fn describe_metrics() {
    describe_counter!(REQUESTS_TOTAL, "Webhook requests by outcome.");
    describe_counter!(
        VERIFICATION_FAILURES_TOTAL,
        "Refused signature verifications by reason."
    );
    describe_histogram!(
        PUBLISH_DURATION_SECONDS,
        Unit::Seconds,
        "Time from publish to the broker's confirm."
    );
    describe_counter!(CONFIRMS_TOTAL, "Publish outcomes by result.");
    describe_gauge!(IN_FLIGHT, "Webhook requests being processed.");
    describe_counter!(DUPLICATES_TOTAL, "Callbacks dropped as duplicates.");
    describe_counter!(
        ECHOES_DROPPED_TOTAL,
        "Callbacks dropped because nowpilot's own user made the change."
    );
    describe_counter!(
        RATE_LIMITED_TOTAL,
        "Requests refused with 429: the client address was over its rate."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Webhook request duration by outcome."
    );
}

/// How a request ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted,
    Duplicate,
    Echo,
    Unauthorized,
    Malformed,
    Invalid,
    TooLarge,
    UnsupportedMediaType,
    Unavailable,
    Timeout,
    NotFound,
    MethodNotAllowed,
    RateLimited,
    Error,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Echo => "echo",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Malformed => "malformed",
            Outcome::Invalid => "invalid",
            Outcome::TooLarge => "too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::Unavailable => "unavailable",
            Outcome::Timeout => "timeout",
            Outcome::NotFound => "not_found",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::RateLimited => "rate_limited",
            Outcome::Error => "error",
        }
    }
}

/// Counts a finished webhook request (and its duration).
pub(crate) fn request_finished(outcome: Outcome, elapsed: Duration) {
    let label = outcome.as_str();
    counter!(REQUESTS_TOTAL, "outcome" => label).increment(1);
    histogram!(REQUEST_DURATION_SECONDS, "outcome" => label).record(elapsed.as_secs_f64());
    match outcome {
        Outcome::Duplicate => counter!(DUPLICATES_TOTAL).increment(1),
        Outcome::Echo => counter!(ECHOES_DROPPED_TOTAL).increment(1),
        _ => {}
    }
}

/// Counts a request outside the webhook route (404, 405): no duration histogram.
pub(crate) fn request_refused(outcome: Outcome) {
    counter!(REQUESTS_TOTAL, "outcome" => outcome.as_str()).increment(1);
}

/// Counts a request refused by the rate limiter (no duration histogram: it did no work).
pub(crate) fn rate_limited() {
    request_refused(Outcome::RateLimited);
    counter!(RATE_LIMITED_TOTAL).increment(1);
}

/// Counts a failed verification.
pub(crate) fn verification_failed(reason: &'static str) {
    counter!(VERIFICATION_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// Records one publish's result and duration.
pub(crate) fn publish_finished(result: &'static str, elapsed: Duration) {
    counter!(CONFIRMS_TOTAL, "result" => result).increment(1);
    histogram!(PUBLISH_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

/// Keeps `nowpilot_ingress_in_flight` up while alive, whichever way the request ends.
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn enter() -> Self {
        gauge!(IN_FLIGHT).increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(IN_FLIGHT).decrement(1.0);
    }
}
