//! The poller: the safety net for lost callbacks.
//!
//! ServiceNow sends each callback once and never retries it, so a callback lost on the way (the
//! ingress down, a network blip, a 503) would leave an incident unhandled. Every
//! `poll_interval`, the worker that owns partition 0 (one per deployment, elected by the same
//! locks as the partitions) lists the incidents updated in the last `poll_window` that match an
//! enabled plan, and enqueues an event for every version this process has not handled or
//! enqueued yet. The window overlaps several intervals, so a slow or failed poll loses nothing.
//! Events from the poller and from callbacks are the same to the worker, and duplicates are
//! harmless: a version already handled is acknowledged as stale without a pass.
//!
//! The intake filters become one encoded query, one `^NQ` segment per enabled plan, with
//! `sys_updated_on>=<window start>` in each: priorities, states, categories and subcategories
//! by value, assignment groups and configuration items by sys_id or, for names, by dot-walk
//! (`assignment_group.name=...`). Title filters and CEL `when` expressions cannot be written
//! as a query: the plans are matched again on each listed incident, in process. A criterion
//! that cannot be written safely (a value with `^` or a line break) is left out of the query,
//! which only widens it. Rows come sorted by `sys_created_on, sys_id`, which changes for no
//! update, so pages do not skip rows while incidents change under the poll.
//!
//! The poller only knows what its own process handled, so with several workers it also
//! enqueues versions other workers handled through callbacks; those are acknowledged as stale
//! by their owner. Whether a callback was really missed is decided there, by the worker that
//! owns the incident's partition (and has owned it for a whole window, so it saw every
//! callback of the window): that is what `nowpilot_poller_missed_callbacks_total` counts.
//!
//! Metrics: `nowpilot_poller_polls_total{outcome}` (`ok`, `disconnected`, `failed`,
//! `publish_failed`), `nowpilot_poller_incidents_found_total` (matching incidents listed),
//! `nowpilot_poller_missed_callbacks_total` (poller events for versions no callback had
//! delivered, counted by the partition's owner).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nowpilot_model::plans::{IntakeFilter, PlanSet};
use nowpilot_model::{EventEnvelope, EventSource, Incident, is_sys_id};
use nowpilot_queue::EventQueue;
use nowpilot_servicenow::{DisplayValue, EncodedQuery, ListRequest};
use tokio_util::sync::CancellationToken;

use crate::reconcile::Context;
use crate::versions::{HandledVersions, SharedVersions};

/// `nowpilot_poller_polls_total{outcome}`.
pub const POLLS: &str = "nowpilot_poller_polls_total";
/// `nowpilot_poller_incidents_found_total`.
pub const INCIDENTS_FOUND: &str = "nowpilot_poller_incidents_found_total";
/// `nowpilot_poller_missed_callbacks_total`.
pub const MISSED_CALLBACKS: &str = "nowpilot_poller_missed_callbacks_total";

/// The most incidents one poll reads; beyond it the window is too wide for the instance.
const MAX_ROWS: usize = 10_000;
/// Incidents whose enqueued version is remembered.
const ENQUEUED_CAPACITY: usize = 100_000;

/// Counts one version the poller found that no callback had delivered (the worker owning the
/// incident's partition decides, see `lanes`).
pub(crate) fn missed_callback() {
    metrics::counter!(MISSED_CALLBACKS).increment(1);
}

/// Registers the poller's metric descriptions.
pub fn describe() {
    metrics::describe_counter!(POLLS, "Polls for incidents updated recently, by outcome");
    metrics::describe_counter!(
        INCIDENTS_FOUND,
        "Incidents the poller listed that match an enabled plan"
    );
    metrics::describe_counter!(
        MISSED_CALLBACKS,
        "Poller events whose version no callback had delivered (counted by the worker owning the partition)"
    );
}

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PollStats {
    /// Incidents listed that match a plan.
    pub(crate) found: usize,
    /// Events enqueued.
    pub(crate) enqueued: usize,
}

struct Shared {
    ctx: Arc<Context>,
    queue: Arc<dyn EventQueue>,
    handled: SharedVersions,
    enqueued: Mutex<HandledVersions>,
    interval: Duration,
    window: Duration,
}

/// Starts and stops the poller as partition 0 comes and goes.
pub(crate) struct PollerControl {
    shared: Option<Arc<Shared>>,
    running: Option<CancellationToken>,
}

impl PollerControl {
    /// A poller that never runs (`[worker] poller = false`).
    pub(crate) fn disabled() -> Self {
        PollerControl {
            shared: None,
            running: None,
        }
    }

    /// A poller with the `[worker]` settings of `ctx`, not yet running.
    pub(crate) fn new(
        ctx: Arc<Context>,
        queue: Arc<dyn EventQueue>,
        handled: SharedVersions,
    ) -> Self {
        describe();
        let config = ctx.settings.config();
        let (interval, window) = (config.poll_interval, config.poll_window);
        PollerControl {
            shared: Some(Arc::new(Shared {
                ctx,
                queue,
                handled,
                enqueued: Mutex::new(HandledVersions::new(ENQUEUED_CAPACITY)),
                interval,
                window,
            })),
            running: None,
        }
    }

    /// Starts polling (no-op when disabled or already running).
    pub(crate) fn start(&mut self, shutdown: &CancellationToken) {
        let Some(shared) = &self.shared else {
            return;
        };
        if self.running.is_some() {
            return;
        }
        let token = shutdown.child_token();
        self.running = Some(token.clone());
        tracing::info!(interval = ?shared.interval, window = ?shared.window, "this worker runs the poller");
        tokio::spawn(run(shared.clone(), token));
    }

    /// Stops polling (a poll under way is abandoned; the next poller's window covers it).
    pub(crate) fn stop(&mut self) {
        if let Some(token) = self.running.take() {
            tracing::info!("this worker no longer runs the poller");
            token.cancel();
        }
    }
}

async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    // The first poll waits one interval: a worker that just started or just became the poller
    // should not add a burst to a restart storm, and the window covers the gap.
    let start = tokio::time::Instant::now() + shared.interval;
    let mut ticks = tokio::time::interval_at(start, shared.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = poll_and_count(&shared) => {}
        }
    }
}

async fn poll_and_count(shared: &Shared) {
    let outcome = match poll_once(shared).await {
        Ok(stats) => {
            metrics::counter!(INCIDENTS_FOUND).increment(stats.found as u64);
            if stats.enqueued > 0 {
                tracing::info!(
                    found = stats.found,
                    enqueued = stats.enqueued,
                    "the poller enqueued incident versions no callback had delivered"
                );
            } else {
                tracing::debug!(found = stats.found, "poll: nothing missed");
            }
            "ok"
        }
        Err(PollError::Disconnected) => "disconnected",
        Err(PollError::ServiceNow(error)) => {
            tracing::warn!(%error, "poll failed; the next one covers the same window");
            "failed"
        }
        Err(PollError::Publish(error)) => {
            tracing::warn!(%error, "the poller could not enqueue an event; the next poll tries again");
            "publish_failed"
        }
    };
    metrics::counter!(POLLS, "outcome" => outcome).increment(1);
}

enum PollError {
    Disconnected,
    ServiceNow(String),
    Publish(String),
}

async fn poll_once(shared: &Shared) -> Result<PollStats, PollError> {
    let Some(client) = shared.ctx.connection.current().client.clone() else {
        return Err(PollError::Disconnected);
    };
    let plans = &shared.ctx.plans;
    let window = chrono::Duration::from_std(shared.window).unwrap_or(chrono::Duration::MAX);
    let since = Utc::now()
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let Some(query) = poll_query(plans, since) else {
        return Ok(PollStats::default());
    };
    let request = ListRequest::from_query(&query)
        .map_err(|e| PollError::ServiceNow(e.to_string()))?
        .display_value(DisplayValue::Both);
    let records = client
        .list_all("incident", &request, MAX_ROWS)
        .await
        .map_err(|e| PollError::ServiceNow(e.to_string()))?;
    if records.len() >= MAX_ROWS {
        tracing::warn!(
            rows = MAX_ROWS,
            "the poll reached its row limit: shorten [worker] poll_window or narrow the plans' intake"
        );
    }
    let mut stats = PollStats::default();
    for record in records {
        let incident = Incident::from(record);
        if incident.state().is_terminal() || !is_sys_id(incident.sys_id()) {
            continue;
        }
        if plans.select(&incident).matched.is_empty() {
            continue;
        }
        stats.found += 1;
        let version = incident.mod_count();
        let sys_id = incident.sys_id();
        let known = {
            let mut enqueued = shared
                .enqueued
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            enqueued.get(sys_id).max(shared.handled.get(sys_id))
        };
        if known.is_some_and(|v| version <= v) {
            continue;
        }
        let event = EventEnvelope::observed(
            "incident",
            sys_id,
            version,
            incident.number(),
            EventSource::Poller,
            Utc::now(),
        );
        shared
            .queue
            .publish(&event)
            .await
            .map_err(|e| PollError::Publish(e.to_string()))?;
        shared
            .enqueued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(sys_id, version);
        stats.enqueued += 1;
    }
    Ok(stats)
}

/// Whether `value` can go into an encoded query as is.
fn writable(value: &str) -> bool {
    !value.is_empty() && !value.contains(['^', '\n', '\r'])
}

/// `field=a^ORfield=b` (AND-ed to what came before); the query unchanged when a value cannot
/// be written (leaving a criterion out only widens the query).
fn any_of(query: EncodedQuery, field: &str, values: &[String]) -> EncodedQuery {
    if values.is_empty() || !values.iter().all(|v| writable(v)) {
        return query;
    }
    let mut query = query;
    for (i, value) in values.iter().enumerate() {
        query = if i == 0 {
            query.eq(field, value)
        } else {
            query.or_eq(field, value)
        };
    }
    query
}

/// A reference criterion: sys_ids as `fieldINa,b`, names as `field.name=x` (dot-walk), OR-ed.
fn reference(query: EncodedQuery, field: &str, values: &[String]) -> EncodedQuery {
    if values.is_empty() || !values.iter().all(|v| writable(v)) {
        return query;
    }
    let (ids, names): (Vec<&String>, Vec<&String>) = values.iter().partition(|v| is_sys_id(v));
    let dotted = format!("{field}.name");
    let mut query = query;
    let mut first = true;
    if !ids.is_empty() {
        query = query.in_list(field, &ids);
        first = false;
    }
    for name in names {
        query = if first {
            query.eq(&dotted, name)
        } else {
            query.or_eq(&dotted, name)
        };
        first = false;
    }
    query
}

fn plan_segment(query: EncodedQuery, intake: &IntakeFilter, since: DateTime<Utc>) -> EncodedQuery {
    let mut query = query.gte_time("sys_updated_on", since);
    if !intake.priorities.is_empty() {
        query = query.in_list(
            "priority",
            intake.priorities.iter().map(|p| p.number().to_string()),
        );
    }
    if !intake.states.is_empty() {
        let states: Vec<String> = intake
            .states
            .iter()
            .map(|s| s.as_value().into_owned())
            .collect();
        if states.iter().all(|s| writable(s) && !s.contains(',')) {
            query = query.in_list("state", &states);
        }
    }
    query = reference(query, "assignment_group", &intake.assignment_groups);
    query = reference(query, "cmdb_ci", &intake.configuration_items);
    query = any_of(query, "category", &intake.categories);
    any_of(query, "subcategory", &intake.subcategories)
}

/// The poll's encoded query: one `^NQ` segment per enabled plan, each with the window; `None`
/// when no plan is enabled.
pub(crate) fn poll_query(plans: &PlanSet, since: DateTime<Utc>) -> Option<EncodedQuery> {
    let enabled: Vec<_> = plans.plans().iter().filter(|p| p.enabled).collect();
    if enabled.is_empty() {
        return None;
    }
    let mut query = EncodedQuery::new();
    for (i, plan) in enabled.iter().enumerate() {
        if i > 0 {
            query = query.new_query();
        }
        query = plan_segment(query, &plan.intake, since);
    }
    let query = query.order_by("sys_created_on").order_by("sys_id");
    if query.build().is_ok() {
        return Some(query);
    }
    // Belt and braces: anything the builder still refuses falls back to the window alone.
    Some(
        EncodedQuery::new()
            .gte_time("sys_updated_on", since)
            .order_by("sys_created_on")
            .order_by("sys_id"),
    )
}

/// Shared with the lanes' handled versions for tests of the enqueue rule.
#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use nowpilot_model::plans::PlanConfig;
    use serde::Deserialize;

    use super::*;

    fn plans(text: &str) -> PlanSet {
        #[derive(Deserialize)]
        struct File {
            plans: Vec<PlanConfig>,
        }
        let file: File = toml::from_str(text).unwrap();
        PlanSet::new(&file.plans, false).unwrap()
    }

    fn since() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()
    }

    #[test]
    fn intake_filters_become_one_segment_per_plan() {
        let set = plans(
            r#"
            [[plans]]
            name = "p1"
            [plans.intake]
            priorities = [1, 2]
            states = ["new", "in_progress"]
            assignment_groups = ["Platform SRE", "0123456789abcdef0123456789abcdef"]
            categories = ["software"]
            title_contains_any = ["checkout"]
            [[plans.actions]]
            kind = "acknowledge"

            [[plans]]
            name = "off"
            enabled = false
            [plans.intake]
            priorities = [4]
            [[plans.actions]]
            kind = "acknowledge"

            [[plans]]
            name = "p3"
            [plans.intake]
            configuration_items = ["db-01"]
            when = "impact == 1"
            [[plans.actions]]
            kind = "acknowledge"
            "#,
        );
        let q = poll_query(&set, since()).unwrap().build().unwrap();
        assert_eq!(
            q,
            "sys_updated_on>=2026-11-28 10:00:00^priorityIN1,2^stateIN1,2\
             ^assignment_groupIN0123456789abcdef0123456789abcdef^ORassignment_group.name=Platform SRE\
             ^category=software\
             ^NQsys_updated_on>=2026-11-28 10:00:00^cmdb_ci.name=db-01\
             ^ORDERBYsys_created_on^ORDERBYsys_id"
        );
    }

    #[test]
    fn unwritable_values_widen_and_no_plan_means_no_poll() {
        let set = plans(
            r#"
            [[plans]]
            name = "p"
            [plans.intake]
            categories = ["a^b", "ok"]
            priorities = [3]
            [[plans.actions]]
            kind = "acknowledge"
            "#,
        );
        let q = poll_query(&set, since()).unwrap().build().unwrap();
        assert_eq!(
            q,
            "sys_updated_on>=2026-11-28 10:00:00^priorityIN3^ORDERBYsys_created_on^ORDERBYsys_id"
        );
        assert!(poll_query(&PlanSet::default(), since()).is_none());
    }
}
