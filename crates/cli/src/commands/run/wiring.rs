//! The pieces `run`, `worker`, `ingress` and `demo` share to show a status page: pass reports
//! turned into activity records, the publisher that tells who is watching what arrived, and
//! the page itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use nowpilot_admin::ConnectionManager;
use nowpilot_admin::status::{
    MembersProvider, StatusPage, StatusSources, StatusTimings, WorkerMember,
};
use nowpilot_model::EventEnvelope;
use nowpilot_model::plans::PlanSet;
use nowpilot_queue::{
    ActivityAction, ActivityFanout, ActivityRecord, EventPublisher, EventQueue, PublishError,
    Readiness,
};
use nowpilot_worker::{ActivitySink, PassReport};
use tokio::sync::watch;

/// How many incidents' short descriptions are remembered for the activity feed.
const DESCRIPTIONS: usize = 1024;

/// Short descriptions of recently received incidents, so that activity records (which the
/// worker's pass reports do not give one) can show what an incident is about. Filled by the
/// ingress in the same process; empty in a worker-only process.
#[derive(Clone, Default)]
pub struct Descriptions {
    inner: Arc<Mutex<Remembered>>,
}

#[derive(Default)]
struct Remembered {
    by_sys_id: HashMap<String, String>,
    /// Oldest first, for forgetting.
    order: VecDeque<String>,
}

impl Descriptions {
    fn remember(&self, sys_id: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Remembered { by_sys_id, order } = &mut *guard;
        if by_sys_id
            .insert(sys_id.to_owned(), text.to_owned())
            .is_none()
        {
            order.push_back(sys_id.to_owned());
            while order.len() > DESCRIPTIONS {
                if let Some(old) = order.pop_front() {
                    by_sys_id.remove(&old);
                }
            }
        }
    }

    fn get(&self, sys_id: &str) -> Option<String> {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.by_sys_id.get(sys_id).cloned()
    }
}

/// A pass report as an activity record.
pub fn to_record(report: PassReport, descriptions: &Descriptions) -> ActivityRecord {
    ActivityRecord {
        at: report.at,
        origin: String::new(),
        short_description: descriptions.get(&report.sys_id),
        sys_id: report.sys_id,
        number: report.number,
        event_ids: report.event_ids,
        plans: report.plans,
        outcome: report.outcome.as_str().to_owned(),
        reason: report.reason,
        actions: report
            .actions
            .into_iter()
            .map(|a| ActivityAction {
                plan: a.plan,
                action: a.action,
                kind: a.kind.to_owned(),
                result: a.result.to_owned(),
                detail: a.detail,
            })
            .collect(),
        error: report.error,
        duration_ms: report.duration_ms,
    }
    .bounded()
}

/// The worker's activity sink: every pass report goes to the fanout (never blocking the pass).
pub fn activity_sink(fanout: ActivityFanout, descriptions: Descriptions) -> ActivitySink {
    Arc::new(move |report: PassReport| fanout.publish(to_record(report, &descriptions)))
}

/// Called with every event the ingress queued.
pub type EventObserver = Arc<dyn Fn(&EventEnvelope) + Send + Sync>;

/// The ingress's publisher, noting short descriptions and telling an observer (the demo's
/// timeline) about every event once it is queued.
pub struct ObservedPublisher {
    inner: Arc<dyn EventPublisher>,
    descriptions: Descriptions,
    observer: Option<EventObserver>,
}

impl ObservedPublisher {
    /// Wraps `inner`.
    pub fn new(
        inner: Arc<dyn EventPublisher>,
        descriptions: Descriptions,
        observer: Option<EventObserver>,
    ) -> Self {
        ObservedPublisher {
            inner,
            descriptions,
            observer,
        }
    }
}

#[async_trait]
impl EventPublisher for ObservedPublisher {
    async fn publish(&self, event: &EventEnvelope) -> Result<(), PublishError> {
        if let Some(callback) = &event.callback {
            self.descriptions.remember(
                &event.sys_id,
                callback.record.value_or_empty("short_description"),
            );
        }
        self.inner.publish(event).await?;
        if let Some(observer) = &self.observer {
            observer(event);
        }
        Ok(())
    }

    fn readiness(&self) -> Readiness {
        self.inner.readiness()
    }

    fn readiness_watch(&self) -> watch::Receiver<Readiness> {
        self.inner.readiness_watch()
    }
}

/// The status page of a process.
pub fn status_page(
    role: &str,
    connection: ConnectionManager,
    queue: Arc<dyn EventQueue>,
    plans: Option<Arc<PlanSet>>,
    activity: ActivityFanout,
    runs_worker: bool,
    members: Option<MembersProvider>,
) -> StatusPage {
    StatusPage::new(
        StatusSources {
            role: role.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            connection,
            queue,
            plans,
            activity,
            runs_worker,
            members,
        },
        StatusTimings {
            // An ingress makes no other ServiceNow calls: check less often there, the workers'
            // pages carry the news sooner.
            connection_check: if runs_worker {
                StatusTimings::default().connection_check
            } else {
                Duration::from_secs(30 * 60)
            },
            ..StatusTimings::default()
        },
    )
}

/// The status page's worker list from partition ownership's membership (RabbitMQ only: with the
/// memory queue this process is the only worker, which the page shows without a provider).
pub fn members_provider(
    queue: &nowpilot_queue::QueueConfig,
    ownership: &nowpilot_queue::PartitionOwnership,
) -> Option<MembersProvider> {
    if queue.kind != nowpilot_queue::QueueKind::Amqp {
        return None;
    }
    let members = ownership.members();
    Some(Arc::new(move || {
        let now = chrono::Utc::now();
        members
            .borrow()
            .iter()
            .map(|m| WorkerMember {
                id: m.id.clone(),
                // Member ids are `{host}-{pid}-{random}`.
                host: m.id.rsplitn(3, '-').nth(2).unwrap_or(&m.id).to_owned(),
                partitions: m.owned.clone(),
                last_seen: Some(
                    now - chrono::Duration::milliseconds(
                        i64::try_from(m.last_seen_ms).unwrap_or(i64::MAX),
                    ),
                ),
                this_process: m.this_process,
            })
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    use nowpilot_worker::{ActionReport, Outcome};

    use super::*;

    #[test]
    fn reports_become_bounded_records_with_known_descriptions() {
        let descriptions = Descriptions::default();
        descriptions.remember("s1", "Checkout latency");
        for i in 0..(DESCRIPTIONS + 10) {
            descriptions.remember(&format!("x{i}"), "filler");
        }
        assert_eq!(descriptions.get("s1"), None, "the oldest is forgotten");
        descriptions.remember("s1", "Checkout latency");
        let report = PassReport {
            at: chrono::Utc::now(),
            sys_id: "s1".into(),
            number: "INC0010001".into(),
            event_ids: vec!["s1-0".into()],
            plans: vec!["quickstart".into()],
            outcome: Outcome::Acted,
            reason: None,
            actions: vec![ActionReport {
                plan: "quickstart".into(),
                action: "acknowledge".into(),
                kind: "acknowledge",
                result: "done",
                detail: "x".repeat(10_000),
            }],
            error: None,
            duration_ms: 7,
        };
        let record = to_record(report, &descriptions);
        assert_eq!(record.outcome, "acted");
        assert_eq!(
            record.short_description.as_deref(),
            Some("Checkout latency")
        );
        assert_eq!(record.actions[0].kind, "acknowledge");
        assert!(record.actions[0].detail.len() <= nowpilot_queue::activity::MAX_TEXT_BYTES);
    }
}
