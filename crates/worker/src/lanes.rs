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
//! Partitions come and go as [`PartitionOwnership`] says. A partition handed over (`Release`)
//! stops consuming, requeues what waits in its lanes and lets its running passes finish (at
//! most [`SHUTDOWN_GRACE`], then they are abandoned); only once no pass of it runs and its
//! stream has ended is it reported released, so its next owner never overlaps a pass here. A
//! partition whose lock was lost (`Revoked`) does the same at once, abandoning running passes.
//! Whoever owns partition 0 runs the poller.
//!
//! Shutdown: stop taking deliveries, requeue what waits in lanes, let running passes finish
//! (at most [`SHUTDOWN_GRACE`]), then abandon the rest (their deliveries go back unsettled).

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use chrono::Utc;
use futures::Stream;
use nowpilot_model::{EventSource, is_sys_id};
use nowpilot_queue::{Delivery, DeliveryStream, EventQueue, OwnershipEvent, PartitionOwnership};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::WorkerError;
use crate::poller::{self, PollerControl};
use crate::reconcile::{Context, Job, Verdict, reconcile};
use crate::report::{ActivitySink, Outcome, PassReport};
use crate::telemetry;
use crate::versions::SharedVersions;

mod handover;

/// How long running passes may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Incidents whose handled version is remembered.
pub(crate) const HANDLED_CAPACITY: usize = 100_000;
/// How long settlements may take at the very end of shutdown.
const SETTLE_GRACE: Duration = Duration::from_secs(5);

struct PassDone {
    handled: Option<u64>,
}

struct Running {
    sys_id: String,
    partition: u16,
    /// The newest version among the deliveries the pass covers.
    version: u64,
    abort: AbortHandle,
}

struct Lanes {
    ctx: Arc<Context>,
    queue: Arc<dyn EventQueue>,
    activity: Option<ActivitySink>,
    /// Incidents with a running pass → deliveries waiting behind it.
    busy: HashMap<String, Vec<Delivery>>,
    waiting: usize,
    handled: SharedVersions,
    passes: JoinSet<PassDone>,
    running: HashMap<tokio::task::Id, Running>,
    settles: TaskTracker,
    /// One stream per consumed (or draining) partition.
    streams: Vec<(u16, DeliveryStream)>,
    next_stream: usize,
    releasing: HashMap<u16, handover::Releasing>,
    /// When each consumed partition was acquired.
    acquired_at: HashMap<u16, Instant>,
    poller: PollerControl,
}

/// Consumes the partitions `ownership` hands out until `shutdown` (or until the queue stops
/// delivering).
pub(crate) async fn consume(
    ctx: Arc<Context>,
    queue: Arc<dyn EventQueue>,
    ownership: &mut PartitionOwnership,
    activity: Option<ActivitySink>,
    handled: SharedVersions,
    poller: PollerControl,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let mut lanes = Lanes {
        ctx,
        queue,
        activity,
        busy: HashMap::new(),
        waiting: 0,
        handled,
        passes: JoinSet::new(),
        running: HashMap::new(),
        settles: TaskTracker::new(),
        streams: Vec::new(),
        next_stream: 0,
        releasing: HashMap::new(),
        acquired_at: HashMap::new(),
        poller,
    };
    let mut ended = false;
    let mut failure = None;
    let mut ownership_open = true;
    loop {
        let deadline = lanes.next_deadline();
        let start = lanes.next_stream;
        lanes.next_stream = lanes.next_stream.wrapping_add(1);
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(joined) = lanes.passes.join_next_with_id(), if !lanes.passes.is_empty() => {
                if let Some(partition) = lanes.finished(joined, &shutdown) {
                    lanes.check_release(partition, ownership);
                }
            }
            event = ownership.next(), if ownership_open => match event {
                Some(OwnershipEvent::Acquired(partition)) => {
                    if let Err(error) = lanes.acquire(partition, &shutdown).await {
                        failure = Some(error);
                        break;
                    }
                }
                Some(OwnershipEvent::Release(partition)) => lanes.release(partition, false, ownership),
                Some(OwnershipEvent::Revoked(partition)) => lanes.release(partition, true, ownership),
                None => {
                    ownership_open = false;
                    if !shutdown.is_cancelled() {
                        tracing::error!("partition ownership ended: giving every partition up");
                        let all: Vec<u16> = lanes.streams.iter().map(|(p, _)| *p).collect();
                        for partition in all {
                            lanes.release(partition, true, ownership);
                        }
                    }
                }
            },
            (partition, next) = next_delivery(&mut lanes.streams, start), if !lanes.streams.is_empty() => match next {
                Some(delivery) if lanes.releasing.contains_key(&partition) => {
                    // Handed over: the next owner takes it from the queue.
                    lanes.settle_alone(delivery, Verdict::Interrupted);
                }
                Some(delivery) => lanes.accept(delivery),
                None => {
                    lanes.streams.retain(|(p, _)| *p != partition);
                    if let Some(releasing) = lanes.releasing.get_mut(&partition) {
                        releasing.stream_done = true;
                        lanes.check_release(partition, ownership);
                    } else {
                        ended = true;
                        break;
                    }
                }
            },
            () = sleep_until(deadline), if deadline.is_some() => lanes.enforce_deadlines(),
        }
    }
    lanes.poller.stop();
    lanes.drain(&shutdown).await;
    lanes.streams.clear();
    if let Some(error) = failure {
        return Err(error);
    }
    if ended && !shutdown.is_cancelled() {
        return Err(WorkerError::StreamEnded);
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// The next delivery of any partition stream, starting at a rotating index so no partition
/// starves the others.
async fn next_delivery(
    streams: &mut [(u16, DeliveryStream)],
    start: usize,
) -> (u16, Option<Delivery>) {
    poll_fn(|cx| {
        let count = streams.len();
        for offset in 0..count {
            let (partition, stream) = &mut streams[(start + offset) % count];
            if let Poll::Ready(next) = Pin::new(stream).poll_next(cx) {
                return Poll::Ready((*partition, next));
            }
        }
        Poll::Pending
    })
    .await
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
        if envelope.source == EventSource::Poller && self.callback_missed(&delivery) {
            poller::missed_callback();
        }
        if let Some(waiting) = self.busy.get_mut(&sys_id) {
            waiting.push(delivery);
            self.waiting += 1;
            telemetry::lane_depth(self.waiting);
            return;
        }
        self.start(sys_id, vec![delivery]);
    }

    /// Whether a poller event brings a version no callback delivered here. Only this worker can
    /// tell, and only for a partition it has owned for a whole poll window: every callback of
    /// the window then came through it (and was handled, or waits or runs in its lane).
    fn callback_missed(&self, delivery: &Delivery) -> bool {
        let window = self.ctx.settings.config().poll_window;
        let known_long_enough = self
            .acquired_at
            .get(&delivery.partition)
            .is_some_and(|at| at.elapsed() >= window);
        if !known_long_enough {
            return false;
        }
        let version = delivery.envelope.sys_mod_count;
        let sys_id = &delivery.envelope.sys_id;
        let running = self
            .running
            .values()
            .any(|r| &r.sys_id == sys_id && r.version >= version);
        let waiting = self
            .busy
            .get(sys_id)
            .is_some_and(|w| w.iter().any(|d| d.envelope.sys_mod_count >= version));
        !running && !waiting
    }

    fn is_stale(&self, delivery: &Delivery) -> bool {
        self.handled
            .get(&delivery.envelope.sys_id)
            .is_some_and(|v| delivery.envelope.sys_mod_count <= v)
    }

    fn start(&mut self, sys_id: String, deliveries: Vec<Delivery>) {
        let partition = deliveries.first().map_or(0, |d| d.partition);
        let version = deliveries
            .iter()
            .map(|d| d.envelope.sys_mod_count)
            .max()
            .unwrap_or(0);
        self.busy.insert(sys_id.clone(), Vec::new());
        let ctx = self.ctx.clone();
        let activity = self.activity.clone();
        let abort = self.passes.spawn(run_pass(ctx, activity, deliveries));
        self.running.insert(
            abort.id(),
            Running {
                sys_id,
                partition,
                version,
                abort,
            },
        );
        telemetry::passes_in_flight(self.passes.len());
    }

    /// Books a finished pass and starts the next one of its lane; returns its partition.
    fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, PassDone), JoinError>,
        shutdown: &CancellationToken,
    ) -> Option<u16> {
        let (running, handled) = match joined {
            Ok((id, done)) => (self.running.remove(&id)?, done.handled),
            Err(error) => {
                let running = self.running.remove(&error.id())?;
                if error.is_cancelled() {
                    tracing::info!(sys_id = %running.sys_id, "a pass was abandoned; its events go back to the queue");
                } else {
                    tracing::error!(%error, "a reconcile pass failed unexpectedly; its events go back to the queue");
                }
                (running, None)
            }
        };
        let Running {
            sys_id, partition, ..
        } = running;
        let handing_over = self.releasing.contains_key(&partition);
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
            } else if shutdown.is_cancelled() || handing_over {
                self.settle_alone(delivery, Verdict::Interrupted);
            } else {
                next.push(delivery);
            }
        }
        if !next.is_empty() {
            self.start(sys_id, next);
        }
        Some(partition)
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
                Ok(Some(joined)) => {
                    self.finished(joined, shutdown);
                }
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
        return PassDone { handled: None };
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
