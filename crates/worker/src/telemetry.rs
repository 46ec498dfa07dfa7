//! The worker's metrics. Labels are bounded: outcomes, reasons and action kinds are fixed
//! sets, plan names come from the configuration. Never a sys_id or an incident number.

use std::time::Duration;

/// Events settled, by `outcome` and `plan` (the first matched plan, `none` without one).
pub const EVENTS: &str = "nowpilot_worker_events_total";
/// Duration of one reconcile pass.
pub const RECONCILE_DURATION: &str = "nowpilot_worker_reconcile_duration_seconds";
/// Actions, by `kind` and `result` (done, proposed, approved, rejected, expired, failed).
pub const ACTIONS: &str = "nowpilot_worker_actions_total";
/// Events sent to a retry tier.
pub const RETRIES: &str = "nowpilot_worker_retries_total";
/// Events dead-lettered, by `reason`.
pub const DEAD_LETTERS: &str = "nowpilot_worker_dead_letters_total";
/// Time from an incident's `opened_at` to nowpilot's acknowledgement.
pub const MTTA: &str = "nowpilot_worker_mtta_seconds";
/// Time from an incident's `opened_at` to the moment nowpilot's resolve was written.
pub const TIME_TO_RESOLVE: &str = "nowpilot_worker_time_to_resolve_seconds";
/// Deliveries waiting behind a running pass of the same incident.
pub const LANE_DEPTH: &str = "nowpilot_worker_lane_depth";
/// Passes running now.
pub const PASSES_IN_FLIGHT: &str = "nowpilot_worker_passes_in_flight";
/// 1 while passes wait for a ServiceNow connection.
pub const WAITING_FOR_CONNECTION: &str = "nowpilot_worker_waiting_for_connection";
/// Settlements the queue refused (the broker redelivers; markers make that harmless).
pub const SETTLE_ERRORS: &str = "nowpilot_worker_settle_errors_total";

/// Registers descriptions once (the recorder, if any, shows them as `# HELP`).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(EVENTS, "Events settled by the worker, by outcome and plan");
    describe_histogram!(
        RECONCILE_DURATION,
        Unit::Seconds,
        "Duration of one reconcile pass"
    );
    describe_counter!(ACTIONS, "Plan actions, by kind and result");
    describe_counter!(RETRIES, "Events sent to a retry tier");
    describe_counter!(DEAD_LETTERS, "Events dead-lettered, by reason");
    describe_histogram!(
        MTTA,
        Unit::Seconds,
        "Time from opened_at to nowpilot's acknowledgement"
    );
    describe_histogram!(
        TIME_TO_RESOLVE,
        Unit::Seconds,
        "Time from opened_at to nowpilot's resolve being written"
    );
    describe_gauge!(LANE_DEPTH, "Deliveries waiting behind a running pass");
    describe_gauge!(PASSES_IN_FLIGHT, "Reconcile passes running");
    describe_gauge!(
        WAITING_FOR_CONNECTION,
        "1 while passes wait for a ServiceNow connection"
    );
    describe_counter!(SETTLE_ERRORS, "Settlements the queue refused");
}

/// One settled event.
pub fn event(outcome: &'static str, plan: &str) {
    metrics::counter!(EVENTS, "outcome" => outcome, "plan" => plan.to_owned()).increment(1);
}

/// One action result.
pub fn action(kind: &'static str, result: &'static str) {
    metrics::counter!(ACTIONS, "kind" => kind, "result" => result).increment(1);
}

/// One pass's duration.
pub fn reconcile_duration(elapsed: Duration) {
    metrics::histogram!(RECONCILE_DURATION).record(elapsed.as_secs_f64());
}

/// One retry.
pub fn retried() {
    metrics::counter!(RETRIES).increment(1);
}

/// One dead letter.
pub fn dead_lettered(reason: &'static str) {
    metrics::counter!(DEAD_LETTERS, "reason" => reason).increment(1);
}

/// Time to acknowledge.
pub fn mtta(elapsed: Duration) {
    metrics::histogram!(MTTA).record(elapsed.as_secs_f64());
}

/// Time to resolve: only resolves nowpilot wrote itself (autonomous or approved), so a person
/// resolving in ServiceNow is not counted here.
pub fn time_to_resolve(elapsed: Duration) {
    metrics::histogram!(TIME_TO_RESOLVE).record(elapsed.as_secs_f64());
}

/// Deliveries waiting in lanes.
pub fn lane_depth(depth: usize) {
    metrics::gauge!(LANE_DEPTH).set(depth as f64);
}

/// Passes running.
pub fn passes_in_flight(count: usize) {
    metrics::gauge!(PASSES_IN_FLIGHT).set(count as f64);
}

/// Waiting for a connection or not.
pub fn waiting_for_connection(waiting: bool) {
    metrics::gauge!(WAITING_FOR_CONNECTION).set(if waiting { 1.0 } else { 0.0 });
}

/// A refused settlement.
pub fn settle_error() {
    metrics::counter!(SETTLE_ERRORS).increment(1);
}
