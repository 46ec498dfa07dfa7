//! What the simulator saw, turned into latencies.
//!
//! - **Callback latency**: from the simulator's callback log (`/_sim/callbacks`), the time
//!   from the commit that fired the business rule to the ingress's answer.
//! - **End-to-end latency**: from that commit to the end of the worker's PATCH that wrote the
//!   note the change owes, both on the simulator's clock. The worker's PATCHes come from the
//!   request log (`/_sim/requests`), read and cleared every sample.
//!
//! Matching is by order: the plan writes one note (one PATCH) per owed change, so the change
//! owing the n-th note of an incident is measured to the first PATCH after its commit only if
//! exactly n PATCHes of that incident ended before the commit. Otherwise the change overlapped
//! the previous pass and is counted, not measured. Reading then clearing the request log loses
//! the requests that end in between (a few milliseconds per sample); a change whose note may
//! have been among them is counted as "log gap", not measured.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use super::stack::INTEGRATION_USER;

/// How long after its commit a change may wait for its note before it counts as missing.
const NOTE_TIMEOUT_US: u64 = 60_000_000;
/// How long an incident whose lifecycle ended stays tracked, so its last notes can arrive.
const SETTLE: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pending,
    Measured,
    Overlapped,
    LogGap,
    Missing,
}

#[derive(Debug)]
struct Change {
    mod_count: u64,
    /// Which note of the incident this change owes (0 = the first), if it owes one.
    note: Option<usize>,
    committed_us: Option<u64>,
    verdict: Verdict,
}

#[derive(Debug, Default)]
struct Track {
    changes: Vec<Change>,
    notes_owed: usize,
    /// End times of the worker's PATCHes of this incident.
    patches: Vec<u64>,
    finished: Option<Instant>,
}

/// How the owed notes were accounted, in total.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct NoteTotals {
    /// Measured end to end.
    pub(super) measured: u64,
    /// The change came before the previous note was written (the passes overlapped).
    pub(super) overlapped: u64,
    /// The note may have been written while the request log was being read and cleared.
    pub(super) log_gap: u64,
    /// No note within 60 s of the change.
    pub(super) missing: u64,
    /// The change's callback never showed in the callback log.
    pub(super) no_callback: u64,
}

#[derive(Debug, Default)]
struct Inner {
    incidents: HashMap<String, Track>,
    /// Commits seen in the callback log before the load recorded the change, by
    /// `(sys_id, sys_mod_count)`.
    early: HashMap<(String, u64), u64>,
    totals: NoteTotals,
}

/// The changes made and the notes written, per incident.
#[derive(Debug, Default)]
pub(super) struct Tracker(Mutex<Inner>);

impl Tracker {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The load wrote a change; `owes_note` when the plan will write a note for it.
    pub(super) fn change(&self, sys_id: &str, mod_count: u64, owes_note: bool) {
        let mut inner = self.inner();
        let committed_us = inner.early.remove(&(sys_id.to_owned(), mod_count));
        let track = inner.incidents.entry(sys_id.to_owned()).or_default();
        let note = owes_note.then_some(track.notes_owed);
        track.notes_owed += usize::from(owes_note);
        track.changes.push(Change {
            mod_count,
            note,
            committed_us,
            verdict: Verdict::Pending,
        });
    }

    /// The incident's lifecycle ended (resolved, or a write failed).
    pub(super) fn finish(&self, sys_id: &str) {
        if let Some(track) = self.inner().incidents.get_mut(sys_id) {
            track.finished = Some(Instant::now());
        }
    }

    fn committed(&self, sys_id: &str, mod_count: u64, at_us: u64) {
        let mut inner = self.inner();
        let change = inner
            .incidents
            .get_mut(sys_id)
            .and_then(|t| t.changes.iter_mut().find(|c| c.mod_count == mod_count));
        match change {
            Some(change) => change.committed_us = Some(at_us),
            None => {
                inner.early.insert((sys_id.to_owned(), mod_count), at_us);
            }
        }
    }

    fn patched(&self, sys_id: &str, end_us: u64) {
        self.inner()
            .incidents
            .entry(sys_id.to_owned())
            .or_default()
            .patches
            .push(end_us);
    }

    /// Decides every change that can be decided; returns the new end-to-end latencies (µs).
    /// `now_us` is the simulator's clock as of the last log read, `gaps` the intervals whose
    /// requests were lost.
    fn settle(&self, now_us: u64, gaps: &[(u64, u64)]) -> Vec<u64> {
        let mut inner = self.inner();
        let Inner {
            incidents,
            totals,
            early,
        } = &mut *inner;
        // Commits of changes the load never recorded (a write that failed on the wire).
        early.retain(|_, at| now_us.saturating_sub(*at) < NOTE_TIMEOUT_US);
        let mut measured = Vec::new();
        let lost = |from: u64, to: u64| gaps.iter().any(|&(a, b)| a < to && b > from);
        for track in incidents.values_mut() {
            track.patches.sort_unstable();
            for change in &mut track.changes {
                let (Some(note), Some(at), Verdict::Pending) =
                    (change.note, change.committed_us, change.verdict)
                else {
                    continue;
                };
                let before = track.patches.partition_point(|&end| end <= at);
                change.verdict = match track.patches.get(before) {
                    Some(_) if before != note => Verdict::Overlapped,
                    Some(&end) if lost(at, end) => Verdict::LogGap,
                    Some(&end) => {
                        measured.push(end - at);
                        Verdict::Measured
                    }
                    None if now_us.saturating_sub(at) < NOTE_TIMEOUT_US => Verdict::Pending,
                    None if lost(at, now_us) => Verdict::LogGap,
                    None => Verdict::Missing,
                };
                match change.verdict {
                    Verdict::Measured => totals.measured += 1,
                    Verdict::Overlapped => totals.overlapped += 1,
                    Verdict::LogGap => totals.log_gap += 1,
                    Verdict::Missing => totals.missing += 1,
                    Verdict::Pending => {}
                }
            }
        }
        // Forget incidents that are done; a change whose callback never showed is counted.
        incidents.retain(|_, track| {
            let settled = track.finished.is_some_and(|at| at.elapsed() > SETTLE);
            if settled {
                totals.no_callback += track
                    .changes
                    .iter()
                    .filter(|c| c.note.is_some() && c.committed_us.is_none())
                    .count() as u64;
                totals.missing += track
                    .changes
                    .iter()
                    .filter(|c| {
                        c.note.is_some()
                            && c.committed_us.is_some()
                            && c.verdict == Verdict::Pending
                    })
                    .count() as u64;
            }
            !settled
        });
        measured
    }

    /// Owed notes not decided yet (waiting for their note or callback).
    pub(super) fn pending(&self) -> usize {
        self.inner()
            .incidents
            .values()
            .flat_map(|t| &t.changes)
            .filter(|c| c.note.is_some() && c.verdict == Verdict::Pending)
            .count()
    }

    /// The totals so far.
    pub(super) fn totals(&self) -> NoteTotals {
        self.inner().totals
    }
}

/// What one read of the simulator's logs produced.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// Callback latencies (commit → ingress answered 2xx), µs.
    pub(super) callback_us: Vec<u64>,
    /// Callbacks that failed (non-2xx or no answer).
    pub(super) callback_failed: u64,
    /// End-to-end latencies decided in this read, µs.
    pub(super) e2e_us: Vec<u64>,
    /// Table API calls the simulator answered.
    pub(super) sim_calls: u64,
    /// Their total time in the simulator (injected latency included), µs.
    pub(super) sim_busy_us: u64,
    /// The slowest of them: its time in µs and what it was (`GET incident` for a list).
    pub(super) sim_slowest: (u64, String),
    /// The callback log had no entry in common with the previous read: some may be lost.
    pub(super) callback_overflow: bool,
}

/// Reads the simulator's logs every sample.
pub(super) struct Observer {
    http: reqwest::Client,
    base: String,
    seen_callbacks: HashSet<String>,
    /// The end of the last read, on the simulator's clock: the start of a gap that ends with
    /// the clearing request.
    gap_start: Option<u64>,
    gaps: Vec<(u64, u64)>,
    now_us: u64,
}

impl Observer {
    pub(super) fn new(sim_base: &str) -> Observer {
        Observer {
            http: reqwest::Client::new(),
            base: sim_base.to_owned(),
            seen_callbacks: HashSet::new(),
            gap_start: None,
            gaps: Vec::new(),
            now_us: 0,
        }
    }

    /// Reads both logs (clearing the request log) and settles what it can.
    pub(super) async fn read(&mut self, tracker: &Tracker) -> anyhow::Result<Observed> {
        let mut observed = Observed::default();
        let callbacks = self.get("/_sim/callbacks").await?;
        let mut ids = HashSet::with_capacity(callbacks.len());
        for record in &callbacks {
            let Some(id) = record["webhook_id"].as_str() else {
                continue;
            };
            ids.insert(id.to_owned());
            if self.seen_callbacks.contains(id) {
                continue;
            }
            let (Some(sys_id), Some(mod_count), Some(queued), Some(finished)) = (
                record["sys_id"].as_str(),
                record["sys_mod_count"].as_u64(),
                record["queued_us"].as_u64(),
                record["finished_us"].as_u64(),
            ) else {
                continue;
            };
            match record["status"].as_u64() {
                Some(status) if (200..300).contains(&status) => {
                    observed.callback_us.push(finished.saturating_sub(queued));
                }
                _ => observed.callback_failed += 1,
            }
            tracker.committed(sys_id, mod_count, queued);
        }
        observed.callback_overflow = !self.seen_callbacks.is_empty()
            && !callbacks.is_empty()
            && ids.is_disjoint(&self.seen_callbacks);
        self.seen_callbacks = ids;

        let requests = self.get("/_sim/requests").await?;
        self.http
            .delete(format!("{}/_sim/requests", self.base))
            .send()
            .await?
            .error_for_status()?;
        let mut last_end = self.now_us;
        for entry in &requests {
            let (Some(path), Some(start), Some(end)) = (
                entry["path"].as_str(),
                entry["start_us"].as_u64(),
                entry["end_us"].as_u64(),
            ) else {
                continue;
            };
            last_end = last_end.max(end);
            if path == "/_sim/requests" && entry["method"] == "DELETE" {
                // The previous read's clearing: what ended since that read is lost.
                if let Some(from) = self.gap_start.take() {
                    self.gaps.push((from, end));
                }
                continue;
            }
            if !path.starts_with("/api/now/") {
                continue;
            }
            observed.sim_calls += 1;
            let took = end.saturating_sub(start);
            observed.sim_busy_us += took;
            if took > observed.sim_slowest.0 {
                let one = if entry["sys_id"].is_string() {
                    "/{id}"
                } else {
                    ""
                };
                observed.sim_slowest = (
                    took,
                    format!(
                        "{} {}{one} by {}",
                        entry["method"].as_str().unwrap_or("?"),
                        entry["table"].as_str().unwrap_or("?"),
                        entry["user"].as_str().unwrap_or("?"),
                    ),
                );
            }
            let ok = entry["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s));
            if ok
                && entry["method"] == "PATCH"
                && entry["table"] == "incident"
                && entry["user"] == INTEGRATION_USER
                && let Some(sys_id) = entry["sys_id"].as_str()
            {
                tracker.patched(sys_id, end);
            }
        }
        self.now_us = last_end;
        self.gap_start = Some(last_end);
        // Gaps older than any change still waiting no longer matter.
        let horizon = last_end.saturating_sub(2 * NOTE_TIMEOUT_US);
        self.gaps.retain(|&(_, to)| to > horizon);
        // While a read is in progress the open gap counts as lost too.
        let mut gaps = self.gaps.clone();
        gaps.push((last_end, u64::MAX));
        observed.e2e_us = tracker.settle(last_end, &gaps);
        Ok(observed)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let value: Value = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .with_context(|| format!("{path} is not JSON"))?;
        match value {
            Value::Array(entries) => Ok(entries),
            _ => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker_with(changes: &[(u64, bool, u64)], patches: &[u64]) -> Tracker {
        let tracker = Tracker::default();
        for &(mod_count, owes, at) in changes {
            tracker.change("a", mod_count, owes);
            tracker.committed("a", mod_count, at);
        }
        for &end in patches {
            tracker.patched("a", end);
        }
        tracker
    }

    #[test]
    fn each_owed_note_is_matched_to_the_next_patch() {
        // Create at 100 (note at 150), comment at 1000 (no note), escalate at 2000 (note 2100).
        let t = tracker_with(
            &[(0, true, 100), (1, false, 1000), (2, true, 2000)],
            &[150, 2100],
        );
        let mut e2e = t.settle(3000, &[]);
        e2e.sort_unstable();
        assert_eq!(e2e, [50, 100]);
        assert_eq!(t.totals().measured, 2);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_change_before_the_previous_note_is_overlapped_not_measured() {
        // The second change comes at 120, before the first note (150).
        let t = tracker_with(&[(0, true, 100), (1, true, 120)], &[150, 400]);
        assert_eq!(t.settle(1000, &[]), [50]);
        assert_eq!(t.totals().overlapped, 1);
    }

    #[test]
    fn notes_that_may_be_lost_are_not_measured_and_late_ones_wait() {
        let t = tracker_with(&[(0, true, 100), (1, true, 500)], &[300]);
        // The first note ended at 300; a gap covered 200..250 between commit and note.
        assert!(t.settle(600, &[(200, 250)]).is_empty());
        assert_eq!(t.totals().log_gap, 1);
        // The second note has not come yet and is young: still pending.
        assert_eq!(t.pending(), 1);
        assert!(t.settle(500 + NOTE_TIMEOUT_US + 1, &[]).is_empty());
        assert_eq!(t.totals().missing, 1);
    }

    #[test]
    fn commits_seen_before_the_change_is_recorded_are_kept() {
        let t = Tracker::default();
        t.committed("b", 0, 10);
        t.change("b", 0, true);
        t.patched("b", 40);
        assert_eq!(t.settle(100, &[]), [30]);
    }
}
