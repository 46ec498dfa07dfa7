//! The activity a status page shows: the last [`RECENT`] passes, and how often each plan
//! matched since the process started.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use nowpilot_queue::ActivityRecord;
use serde::Serialize;

/// How many passes the page lists.
pub const RECENT: usize = 200;

/// Distinct (plan, incident) pairs remembered for the incident counts; beyond it the counts
/// stop growing and are shown as a lower bound.
const MAX_DISTINCT: usize = 100_000;

/// How often one plan matched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanCount {
    /// Passes in which the plan matched.
    pub passes: u64,
    /// Distinct incidents it matched.
    pub incidents: u64,
}

/// Received activity, newest last.
#[derive(Debug, Default)]
pub(super) struct Feed {
    recent: VecDeque<Arc<ActivityRecord>>,
    counts: HashMap<String, PlanCount>,
    seen: HashSet<(String, String)>,
    /// Every record received.
    pub(super) total: u64,
    /// Records the receiver skipped because it fell behind.
    pub(super) missed: u64,
    /// The incident counts stopped growing at [`MAX_DISTINCT`].
    pub(super) incidents_capped: bool,
}

impl Feed {
    /// Adds a record.
    pub(super) fn push(&mut self, record: Arc<ActivityRecord>) {
        self.total += 1;
        for plan in &record.plans {
            let count = self.counts.entry(plan.clone()).or_default();
            count.passes += 1;
            let key = (plan.clone(), record.sys_id.clone());
            if self.seen.contains(&key) {
                continue;
            }
            if self.seen.len() < MAX_DISTINCT {
                self.seen.insert(key);
                count.incidents += 1;
            } else {
                self.incidents_capped = true;
            }
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(record);
    }

    /// The last passes, newest first.
    pub(super) fn recent(&self) -> Vec<Arc<ActivityRecord>> {
        self.recent.iter().rev().cloned().collect()
    }

    /// How often `plan` matched.
    pub(super) fn count(&self, plan: &str) -> PlanCount {
        self.counts.get(plan).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sys_id: &str, plans: &[&str]) -> Arc<ActivityRecord> {
        Arc::new(ActivityRecord {
            at: chrono::Utc::now(),
            origin: "o".into(),
            sys_id: sys_id.into(),
            number: "INC0010001".into(),
            short_description: None,
            event_ids: Vec::new(),
            plans: plans.iter().map(|p| (*p).to_owned()).collect(),
            outcome: "acted".into(),
            reason: None,
            actions: Vec::new(),
            error: None,
            duration_ms: 1,
        })
    }

    #[test]
    fn keeps_the_last_200_newest_first_and_counts_every_match() {
        let mut feed = Feed::default();
        for i in 0..250 {
            feed.push(record(&format!("s{}", i % 3), &["a"]));
        }
        feed.push(record("s9", &["a", "b"]));
        let recent = feed.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].sys_id, "s9");
        assert_eq!(feed.total, 251);
        assert_eq!(
            feed.count("a"),
            PlanCount {
                passes: 251,
                incidents: 4
            }
        );
        assert_eq!(
            feed.count("b"),
            PlanCount {
                passes: 1,
                incidents: 1
            }
        );
        assert_eq!(feed.count("never"), PlanCount::default());
    }
}
