//! The client's metric names and their descriptions. Only the binary installs a recorder; it
//! calls [`describe`] afterwards so every family gets its `# HELP` line (promtool insists).
//! Labels are closed sets: HTTP methods, table names from nowpilot's own code paths and plans,
//! HTTP status codes (or `error`), and token outcomes.

/// Calls to the instance, by `method`, `table` and `status` (the HTTP code, or `error` when
/// no answer came).
pub const REQUESTS_TOTAL: &str = "nowpilot_servicenow_requests_total";
/// Latency of those calls, by `method` and `table`.
pub const REQUEST_DURATION_SECONDS: &str = "nowpilot_servicenow_request_duration_seconds";
/// Answers with HTTP 429 (rate limit rules or an exhausted semaphore pool).
pub const RATE_LIMITED_TOTAL: &str = "nowpilot_servicenow_rate_limited_total";
/// Calls in flight now.
pub const IN_FLIGHT: &str = "nowpilot_servicenow_in_flight";
/// OAuth token requests, by `outcome` (`success`, `failure`).
pub const TOKEN_REFRESHES_TOTAL: &str = "nowpilot_servicenow_token_refreshes_total";

/// Registers the descriptions with the installed recorder (a no-op without one).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS_TOTAL,
        "Calls to the ServiceNow instance, by method, table and HTTP status"
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Latency of calls to the ServiceNow instance, by method and table"
    );
    describe_counter!(
        RATE_LIMITED_TOTAL,
        "ServiceNow answers with HTTP 429 (rate limited)"
    );
    describe_gauge!(IN_FLIGHT, "Calls to the ServiceNow instance in flight");
    describe_counter!(
        TOKEN_REFRESHES_TOTAL,
        "OAuth token requests to the instance, by outcome"
    );
}
