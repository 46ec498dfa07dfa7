//! Metric names and the helpers that record them (facade only: the binary installs the
//! recorder). Label values are closed sets, never event ids.

use std::time::Duration;

use crate::error::{PublishError, SettleError};

/// `nowpilot_queue_publish_total{result}`: ack, nack, unroutable, timeout, unavailable, invalid.
pub const PUBLISH_TOTAL: &str = "nowpilot_queue_publish_total";
/// `nowpilot_queue_publish_duration_seconds`: from the call to the confirm (or the failure).
pub const PUBLISH_DURATION: &str = "nowpilot_queue_publish_duration_seconds";
/// `nowpilot_queue_connected`: 1 while a broker connection with a declared topology is up.
pub const CONNECTED: &str = "nowpilot_queue_connected";
/// `nowpilot_queue_reconnects_total`: connections established after the first one.
pub const RECONNECTS_TOTAL: &str = "nowpilot_queue_reconnects_total";
/// `nowpilot_queue_deliveries_total{outcome}`: ack, retry, dead_letter, requeue, stale_ack,
/// failed (the settlement did not take effect for another reason).
pub const DELIVERIES_TOTAL: &str = "nowpilot_queue_deliveries_total";

/// Registers descriptions once (optional; the binary may call it at start).
pub fn describe() {
    metrics::describe_counter!(PUBLISH_TOTAL, "Event publishes by broker outcome.");
    metrics::describe_histogram!(
        PUBLISH_DURATION,
        metrics::Unit::Seconds,
        "Time from publish to the broker's confirm or the failure."
    );
    metrics::describe_gauge!(
        CONNECTED,
        "1 while the queue backend is connected and ready."
    );
    metrics::describe_counter!(RECONNECTS_TOTAL, "Broker connections re-established.");
    metrics::describe_counter!(DELIVERIES_TOTAL, "Delivery settlements by outcome.");
}

pub(crate) fn published(result: &Result<(), PublishError>, elapsed: Duration) {
    let label = match result {
        Ok(()) => "ack",
        Err(e) => e.metric_label(),
    };
    metrics::counter!(PUBLISH_TOTAL, "result" => label).increment(1);
    metrics::histogram!(PUBLISH_DURATION).record(elapsed.as_secs_f64());
}

pub(crate) fn connected(up: bool) {
    metrics::gauge!(CONNECTED).set(if up { 1.0 } else { 0.0 });
}

pub(crate) fn reconnected() {
    metrics::counter!(RECONNECTS_TOTAL).increment(1);
}

pub(crate) fn settled(outcome: &'static str, result: &Result<(), SettleError>) {
    let label = match result {
        Ok(()) => outcome,
        Err(SettleError::Stale { .. }) => "stale_ack",
        Err(_) => "failed",
    };
    metrics::counter!(DELIVERIES_TOTAL, "outcome" => label).increment(1);
}
