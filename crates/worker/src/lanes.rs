//! Consuming: per-incident lanes.
//!
//! Different incidents run concurrently; the same `sys_id` runs strictly one pass at a time.
//! Deliveries for a busy incident wait in its lane; when the running pass ends, **one** new
//! pass covers all of them, and its outcome settles every one. The highest version handled
//! per incident is remembered (bounded LRU): a delivery at or below it is acknowledged at once
//! as `stale`, which is also how the echoes of nowpilot's own writes are recognised.
//!
//! Work is bounded by the queue: each pass and each waiting delivery holds one unsettled
//! delivery, and the broker hands out at most `prefetch` per partition. ServiceNow calls are
//! further capped by the client's in-flight limit.
//!
//! Shutdown: stop taking deliveries, requeue what waits in lanes, let running passes finish
//! (at most [`SHUTDOWN_GRACE`]), then abandon the rest (their deliveries go back unsettled).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nowpilot_model::is_sys_id;
use nowpilot_queue::{Delivery, EventQueue};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::WorkerError;
use crate::reconcile::{Context, Job, Verdict, reconcile};
use crate::report::{ActivitySink, Outcome, PassReport};
use crate::telemetry;
use crate::versions::HandledVersions;

/// How long running passes may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Incidents whose handled version is remembered.
const HANDLED_CAPACITY: usize = 100_000;
/// How long settlements may take at the very end of shutdown.
const SETTLE_GRACE: Duration = Duration::from_secs(5);

struct PassDone {
    sys_id: String,
    handled: Option<u64>,
}

struct Lanes {
    ctx: Arc<Context>,
    activity: Option<ActivitySink>,
    /// Incidents with a running pass → deliveries waiting behind it.
    busy: HashMap<String, Vec<Delivery>>,
    waiting: usize,
    handled: HandledVersions,
    passes: JoinSet<PassDone>,
    running: HashMap<tokio::task::Id, String>,
    settles: TaskTracker,
}

/// Consumes `partitions` until `shutdown` (or until the queue stops delivering).
pub(crate) async fn consume(
    ctx: Arc<Context>,
    queue: Arc<dyn EventQueue>,
    partitions: &[u16],
    activity: Option<ActivitySink>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let mut stream = queue.consume(partitions).await?;
    tracing::info!(?partitions, "worker consuming");
    let mut lanes = Lanes {
        ctx,
        activity,
        busy: HashMap::new(),
        waiting: 0,
        handled: HandledVersions::new(HANDLED_CAPACITY),
        passes: JoinSet::new(),
        running: HashMap::new(),
        settles: TaskTracker::new(),
    };
    let mut ended = false;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(joined) = lanes.passes.join_next_with_id(), if !lanes.passes.is_empty() => {
                lanes.finished(joined, &shutdown);
            }
            next = stream.recv() => match next {
                Some(delivery) => lanes.accept(delivery),
                None => {
                    ended = true;
                    break;
                }
            },
        }
    }
    lanes.drain(&shutdown).await;
    drop(stream);
    if ended && !shutdown.is_cancelled() {
        return Err(WorkerError::StreamEnded);
    }
    tracing::info!("worker stopped");
    Ok(())
}

impl Lanes {
    fn accept(&mut self, delivery: Delivery) {
        let envelope = &delivery.envelope;
        if envelope.table != "incident" || !is_sys_id(&envelope.sys_id) {
            let error = format!(
                "nowpilot handles incident events with a sys_id; this one is for table {:?}, sys_id {:?}",
                envelope.table.chars().take(80).collect::<String>(),
                envelope.sys_id.chars().take(80).collect::<String>()
            );
            self.settle_alone(
                delivery,
                Verdict::DeadLetter {
                    reason: "unsupported_event",
                    error,
                },
            );
            return;
        }
        let sys_id = envelope.sys_id.clone();
        if self.is_stale(&delivery) {
            self.settle_alone(delivery, Verdict::Ack(Outcome::Stale));
            return;
        }
        if let Some(waiting) = self.busy.get_mut(&sys_id) {
            waiting.push(delivery);
            self.waiting += 1;
            telemetry::lane_depth(self.waiting);
            return;
        }
        self.start(sys_id, vec![delivery]);
    }

    fn is_stale(&mut self, delivery: &Delivery) -> bool {
        self.handled
            .get(&delivery.envelope.sys_id)
            .is_some_and(|v| delivery.envelope.sys_mod_count <= v)
    }

    fn start(&mut self, sys_id: String, deliveries: Vec<Delivery>) {
        self.busy.insert(sys_id.clone(), Vec::new());
        let ctx = self.ctx.clone();
        let activity = self.activity.clone();
        let handle = self.passes.spawn(run_pass(ctx, activity, deliveries));
        self.running.insert(handle.id(), sys_id);
        telemetry::passes_in_flight(self.passes.len());
    }

    fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, PassDone), JoinError>,
        shutdown: &CancellationToken,
    ) {
        let (sys_id, handled) = match joined {
            Ok((id, done)) => {
                self.running.remove(&id);
                (done.sys_id, done.handled)
            }
            Err(error) => {
                tracing::error!(%error, "a reconcile pass failed unexpectedly; its events go back to the queue");
                let Some(sys_id) = self.running.remove(&error.id()) else {
                    return;
                };
                (sys_id, None)
            }
        };
        telemetry::passes_in_flight(self.passes.len());
        if let Some(version) = handled {
            self.handled.record(&sys_id, version);
        }
        let waiting = self.busy.remove(&sys_id).unwrap_or_default();
        self.waiting = self.waiting.saturating_sub(waiting.len());
        telemetry::lane_depth(self.waiting);
        let mut next = Vec::new();
        for delivery in waiting {
            if self.is_stale(&delivery) {
                self.settle_alone(delivery, Verdict::Ack(Outcome::Stale));
            } else if shutdown.is_cancelled() {
                self.settle_alone(delivery, Verdict::Interrupted);
            } else {
                next.push(delivery);
            }
        }
        if !next.is_empty() {
            self.start(sys_id, next);
        }
    }

    /// Settles one delivery without a pass (stale, unsupported, requeued at shutdown).
    fn settle_alone(&self, delivery: Delivery, verdict: Verdict) {
        let ctx = self.ctx.clone();
        let activity = self.activity.clone();
        self.settles.spawn(async move {
            let job = job_for(&delivery);
            let (outcome, reason) = settle(&ctx, delivery, &verdict, "none").await;
            if let Some(sink) = activity {
                sink(PassReport {
                    at: Utc::now(),
                    sys_id: job.sys_id,
                    number: job.number,
                    event_ids: vec![job.event_id],
                    plans: Vec::new(),
                    outcome,
                    reason,
                    actions: Vec::new(),
                    error: verdict_error(&verdict),
                    duration_ms: 0,
                });
            }
        });
    }

    async fn drain(&mut self, shutdown: &CancellationToken) {
        let waiting: Vec<Delivery> = self.busy.values_mut().flat_map(std::mem::take).collect();
        self.waiting = 0;
        telemetry::lane_depth(0);
        for delivery in waiting {
            self.settle_alone(delivery, Verdict::Interrupted);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.passes.is_empty() {
            match tokio::time::timeout_at(deadline, self.passes.join_next_with_id()).await {
                Ok(Some(joined)) => self.finished(joined, shutdown),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        passes = self.passes.len(),
                        "passes still running after the shutdown grace period; abandoning them (their events go back to the queue)"
                    );
                    self.passes.abort_all();
                    while self.passes.join_next().await.is_some() {}
                    break;
                }
            }
        }
        telemetry::passes_in_flight(0);
        self.settles.close();
        if tokio::time::timeout(SETTLE_GRACE, self.settles.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "settlements still pending at shutdown; the broker will redeliver those events"
            );
        }
    }
}

fn job_for(delivery: &Delivery) -> Job {
    Job {
        sys_id: delivery.envelope.sys_id.clone(),
        number: delivery.envelope.number.clone(),
        event_id: delivery.envelope.event_id.to_string(),
    }
}

fn verdict_error(verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::Retry { error, .. } | Verdict::DeadLetter { error, .. } => Some(error.clone()),
        _ => None,
    }
}

async fn run_pass(
    ctx: Arc<Context>,
    activity: Option<ActivitySink>,
    deliveries: Vec<Delivery>,
) -> PassDone {
    let newest = deliveries
        .iter()
        .max_by_key(|d| d.envelope.sys_mod_count)
        .map(job_for);
    let Some(job) = newest else {
        return PassDone {
            sys_id: String::new(),
            handled: None,
        };
    };
    let result = reconcile(&ctx, &job).await;
    let elapsed = result.busy;
    if !matches!(result.verdict, Verdict::Interrupted) {
        telemetry::reconcile_duration(elapsed);
    }
    let plan = result
        .plans
        .first()
        .map_or("none", String::as_str)
        .to_owned();
    if result.waited {
        for _ in &deliveries {
            telemetry::event("waiting", &plan);
        }
    }
    let event_ids: Vec<String> = deliveries
        .iter()
        .map(|d| d.envelope.event_id.to_string())
        .collect();
    let mut outcome = Outcome::Requeued;
    let mut reason = None;
    for delivery in deliveries {
        (outcome, reason) = settle(&ctx, delivery, &result.verdict, &plan).await;
    }
    match &result.verdict {
        Verdict::DeadLetter { reason, error } => {
            tracing::warn!(sys_id = %job.sys_id, number = %result.number, reason, %error, "events dead-lettered");
        }
        Verdict::Retry { error, .. } => {
            tracing::info!(sys_id = %job.sys_id, number = %result.number, %error, "events will be retried");
        }
        _ => {}
    }
    if let Some(sink) = activity {
        sink(PassReport {
            at: Utc::now(),
            sys_id: job.sys_id.clone(),
            number: result.number.clone(),
            event_ids,
            plans: result.plans.clone(),
            outcome,
            reason,
            actions: result.actions.clone(),
            error: verdict_error(&result.verdict),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        });
    }
    PassDone {
        sys_id: job.sys_id,
        handled: result.handled_version,
    }
}

/// Settles one delivery as the verdict says; returns how, and the dead-letter reason.
async fn settle(
    ctx: &Context,
    delivery: Delivery,
    verdict: &Verdict,
    plan: &str,
) -> (Outcome, Option<String>) {
    let (outcome, reason, settled) = match verdict {
        Verdict::Ack(outcome) => (*outcome, None, delivery.ack().await),
        Verdict::Interrupted => (Outcome::Requeued, None, delivery.requeue().await),
        Verdict::DeadLetter { reason, error } => {
            telemetry::dead_lettered(reason);
            (
                Outcome::DeadLettered,
                Some((*reason).to_owned()),
                delivery.dead_letter(reason, error).await,
            )
        }
        Verdict::Retry { error, after } => {
            let delays = &ctx.settings.config().retry_delays;
            match delays.get(usize::try_from(delivery.attempt).unwrap_or(usize::MAX)) {
                Some(base) => {
                    let delay = (*base).max(after.unwrap_or_default());
                    telemetry::retried();
                    (
                        Outcome::Retried,
                        None,
                        delivery.retry(delay, error).await.map(drop),
                    )
                }
                None => {
                    let reason = "retry_budget_exhausted";
                    telemetry::dead_lettered(reason);
                    let text = format!("gave up after {} retries: {error}", delays.len());
                    (
                        Outcome::DeadLettered,
                        Some(reason.to_owned()),
                        delivery.dead_letter(reason, &text).await,
                    )
                }
            }
        }
    };
    if let Err(error) = settled {
        telemetry::settle_error();
        tracing::warn!(%error, outcome = outcome.as_str(), "the queue refused a settlement; the broker will deliver the event again (harmless: markers show what was done)");
    }
    telemetry::event(outcome.as_str(), plan);
    (outcome, reason)
}
