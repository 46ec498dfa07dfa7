//! The load: a person changing incidents through the simulator's Table API, as an operator
//! would, so every change fires the business rule's signed callback and a worker pass.
//!
//! Each incident lives through the same five changes, `step_gap` apart: created (High), moved
//! to the network category, commented, escalated to Critical, resolved. Three of them owe a
//! work note from the soak plan (acknowledgement, network note, escalation note); the comment
//! and the resolve owe nothing, so passes that find nothing to do are part of the mix too. A
//! change picks the most overdue step of a live incident, or creates a new incident when none
//! is due, so the mix settles at one creation per five changes whatever the rate.
//!
//! `retain` after its resolve an incident is deleted with its journal rows, as an instance's
//! archiving would: the simulator scans whole tables for queries, so without it the
//! simulator's own time per call would grow with the run and blur nowpilot's latency drift.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::observe::Tracker;
use super::stack::PERSON;

/// The changes of one incident's life, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Create,
    Categorize,
    Comment,
    Escalate,
    Resolve,
}

const LIFECYCLE: [Step; 5] = [
    Step::Create,
    Step::Categorize,
    Step::Comment,
    Step::Escalate,
    Step::Resolve,
];

impl Step {
    /// Whether the soak plan owes a work note after this change.
    fn owes_note(self) -> bool {
        matches!(self, Step::Create | Step::Categorize | Step::Escalate)
    }

    fn body(self, n: u64) -> Value {
        match self {
            Step::Create => json!({
                "short_description": format!("Checkout API p95 latency above 2s (soak {n})"),
                "description": "Synthetic incident for the soak benchmark.",
                "impact": "2",
                "urgency": "1",
                "category": "software",
            }),
            Step::Categorize => json!({"category": "network"}),
            Step::Comment => json!({"comments": "Customers in two regions report slow checkouts."}),
            Step::Escalate => json!({"impact": "1"}),
            Step::Resolve => json!({
                "state": "6",
                "close_code": "Solution provided",
                "close_notes": "Load balancer pool resized.",
            }),
        }
    }
}

/// What the load did so far (totals; the sampler takes differences).
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Changes written (each fires one callback).
    pub(super) ok: AtomicU64,
    /// Changes the simulator refused or that failed on the wire.
    pub(super) failed: AtomicU64,
    /// Changes not even started because `max_in_flight` were already running (the simulator
    /// could not keep up with the rate).
    pub(super) skipped: AtomicU64,
    /// Incidents deleted by the retention.
    pub(super) purged: AtomicU64,
    /// Retention deletions that failed.
    pub(super) purge_failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn fail(&self, counter: &AtomicU64, error: &anyhow::Error) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(format!("{error:#}"));
        }
    }

    /// The first failure, if any.
    pub(super) fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A step that becomes due at a time; ordered by time, then by a sequence number.
type Due = Reverse<(Instant, u64, String, usize)>;

/// The load generator. Cheap to share behind an `Arc`.
pub(super) struct Load {
    http: reqwest::Client,
    table: String,
    gap: Duration,
    retain: Option<Duration>,
    due: Mutex<BinaryHeap<Due>>,
    purges: Mutex<BinaryHeap<Reverse<(Instant, String)>>>,
    seq: AtomicU64,
    in_flight: Arc<Semaphore>,
    pub(super) counters: Counters,
    tracker: Arc<Tracker>,
}

impl Load {
    pub(super) fn new(
        sim_base: &str,
        gap: Duration,
        retain: Option<Duration>,
        max_in_flight: usize,
        tracker: Arc<Tracker>,
    ) -> anyhow::Result<Arc<Load>> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(max_in_flight)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Arc::new(Load {
            http,
            table: format!("{sim_base}/api/now/table"),
            gap,
            retain,
            due: Mutex::new(BinaryHeap::new()),
            purges: Mutex::new(BinaryHeap::new()),
            seq: AtomicU64::new(0),
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            counters: Counters::default(),
            tracker,
        }))
    }

    /// Changes at `rate` per second (open loop: the schedule does not wait for answers) until
    /// `until` or `stop`, and the retention's deletions as they fall due.
    pub(super) async fn run_rate(
        self: &Arc<Self>,
        rate: f64,
        until: Instant,
        stop: &CancellationToken,
    ) {
        let started = Instant::now();
        let mut issued: u64 = 0;
        let purging = Arc::new(Semaphore::new(8));
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            let due = (now.duration_since(started).as_secs_f64() * rate) as u64;
            while issued < due {
                issued += 1;
                match self.in_flight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let load = self.clone();
                        tokio::spawn(async move {
                            load.change().await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            while let Some(sys_id) = self.due_purge(now) {
                let Ok(permit) = purging.clone().try_acquire_owned() else {
                    // Busy: put it back for the next tick.
                    self.schedule_purge(sys_id, Duration::ZERO);
                    break;
                };
                let load = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = load.purge(&sys_id).await {
                        load.counters.fail(&load.counters.purge_failed, &e);
                    } else {
                        load.counters.purged.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(permit);
                });
            }
        }
    }

    /// `people` people each making changes back to back (closed loop) until `until`.
    pub(super) async fn run_people(self: &Arc<Self>, people: usize, until: Instant) {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..people.max(1) {
            let load = self.clone();
            tasks.spawn(async move {
                while Instant::now() < until {
                    load.change().await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// One change: the most overdue step of a live incident, or a new incident.
    async fn change(&self) {
        let now = Instant::now();
        let next = {
            let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
            match due.peek() {
                Some(Reverse((at, ..))) if *at <= now => due.pop().map(|Reverse(d)| d),
                _ => None,
            }
        };
        let (sys_id, index) = match next {
            Some((_, _, sys_id, index)) => (Some(sys_id), index),
            None => (None, 0),
        };
        let Some(&step) = LIFECYCLE.get(index) else {
            return;
        };
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        match self.write(sys_id.as_deref(), step.body(n)).await {
            Ok((sys_id, mod_count)) => {
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
                self.tracker.change(&sys_id, mod_count, step.owes_note());
                if index + 1 < LIFECYCLE.len() {
                    let at = Instant::now() + self.gap;
                    self.due
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Reverse((at, n, sys_id, index + 1)));
                } else {
                    self.tracker.finish(&sys_id);
                    if let Some(retain) = self.retain {
                        self.schedule_purge(sys_id, retain);
                    }
                }
            }
            Err(e) => {
                // The incident's life ends here; the tracker accounts its remaining notes.
                self.counters.fail(&self.counters.failed, &e);
                if let Some(sys_id) = sys_id {
                    self.tracker.finish(&sys_id);
                }
            }
        }
    }

    /// Creates (no `sys_id`) or updates an incident as the person; returns its sys_id and
    /// `sys_mod_count` after the write.
    async fn write(&self, sys_id: Option<&str>, body: Value) -> anyhow::Result<(String, u64)> {
        let request = match sys_id {
            None => self.http.post(format!("{}/incident", self.table)),
            Some(id) => self.http.patch(format!("{}/incident/{id}", self.table)),
        };
        let answer = request
            .basic_auth(PERSON.0, Some(PERSON.1))
            .header("accept", "application/json")
            .json(&body)
            .send()
            .await?;
        let status = answer.status();
        let value: Value = answer.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{} answered {status}: {value}",
                if sys_id.is_some() {
                    "PATCH incident"
                } else {
                    "POST incident"
                }
            );
        }
        let field = |name: &str| {
            value["result"][name]
                .as_str()
                .with_context(|| format!("the written incident has no {name}"))
        };
        let mod_count = field("sys_mod_count")?
            .parse()
            .context("sys_mod_count is not a number")?;
        Ok((field("sys_id")?.to_owned(), mod_count))
    }

    fn schedule_purge(&self, sys_id: String, after: Duration) {
        self.purges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Reverse((Instant::now() + after, sys_id)));
    }

    fn due_purge(&self, now: Instant) -> Option<String> {
        let mut purges = self.purges.lock().unwrap_or_else(PoisonError::into_inner);
        match purges.peek() {
            Some(Reverse((at, _))) if *at <= now => purges.pop().map(|Reverse((_, id))| id),
            _ => None,
        }
    }

    /// Deletes an incident and its journal rows.
    async fn purge(&self, sys_id: &str) -> anyhow::Result<()> {
        let journal: Value = self
            .http
            .get(format!("{}/sys_journal_field", self.table))
            .query(&[
                ("sysparm_query", format!("element_id={sys_id}")),
                ("sysparm_fields", "sys_id".to_owned()),
            ])
            .basic_auth(PERSON.0, Some(PERSON.1))
            .header("accept", "application/json")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let rows = journal["result"].as_array().cloned().unwrap_or_default();
        for row in rows {
            if let Some(id) = row["sys_id"].as_str() {
                self.delete("sys_journal_field", id).await?;
            }
        }
        self.delete("incident", sys_id).await
    }

    async fn delete(&self, table: &str, sys_id: &str) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/{table}/{sys_id}", self.table))
            .basic_auth(PERSON.0, Some(PERSON.1))
            .header("accept", "application/json")
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_owes_three_notes() {
        let owed: Vec<bool> = LIFECYCLE.iter().map(|s| s.owes_note()).collect();
        assert_eq!(owed, [true, true, false, true, false]);
        assert_eq!(Step::Create.body(7)["impact"], "2");
        assert_eq!(Step::Resolve.body(0)["state"], "6");
    }
}
