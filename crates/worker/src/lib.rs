//! nowpilot's worker: takes incident events off the queue and, through response plans, acts
//! on the incidents in ServiceNow.
//!
//! - [`lanes`]: consumption with per-incident lanes (one pass at a time per incident, waiting
//!   deliveries coalesced into the next pass, stale versions acknowledged at once), partitions
//!   acquired and handed over as [`PartitionOwnership`] says, and graceful shutdown.
//! - [`poller`]: the safety net for lost callbacks, run by the owner of partition 0.
//! - `reconcile` (private): one pass reads the incident as it is now,
//!   matches plans, reads the journal once and does what is still owed, one PATCH per action
//!   with its note and marker. Review actions are proposed and carried out after
//!   `/nowpilot approve <id>` by an approver.
//! - [`steps`]: investigation steps (related records, HTTP probes, Prometheus, runbooks) and
//!   their findings.
//! - [`markers`]: the marker grammar every note ends with, and the approve/reject commands.
//! - [`history`]: the journal, interpreted.
//! - [`config`]: the `[worker]` section, validated together with the plans.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`telemetry`]: metric names; [`report`]: the per-pass activity report.
//!
//! Settlement: everything done (or nothing owed) → `ack`; a transient failure (429, 5xx,
//! timeouts, and 401, which an operator can fix without a restart) → `retry` after
//! `max(retry_delays[attempt], Retry-After)`, and after the last delay → dead letter
//! `retry_budget_exhausted`; a permanent failure → dead letter with a short reason
//! (`not_found`, `forbidden`, `data_policy`, `invalid_close_code`, `invalid_hold_reason`,
//! `unknown_group`, `unknown_user`, `priority_unreachable`, `bad_plan`, `bad_request`, ...).
//! While disconnected from ServiceNow, passes wait: nothing is settled, nothing is lost.
//!
//! # Rules of a pass
//!
//! - Nothing at all happens to a resolved, closed or canceled incident (not even an approved
//!   proposal); a write that leaves the incident in such a state ends the pass.
//! - Actions run in config order, each as one PATCH carrying its field changes and its work
//!   note (which ends with a [`markers`] line). An action is done once its marker is in the
//!   journal, whatever version it names.
//! - Conditions (`when`) see the incident as read at the start of the pass, plus `findings`.
//! - **Findings decide actions in the pass that investigated**: an action whose `when` uses
//!   `findings` is decided right after this pass's investigation (even if it comes before
//!   `investigate` in the config); once the plan's investigation was done in an earlier pass,
//!   such an action is no longer owed.
//! - Acknowledge is owed only while the incident is New; if a person moved it on, it is
//!   skipped without a note.
//! - Every parameter that can be wrong (close code, hold reason, group, user, priority target)
//!   is checked against the instance before the plan writes anything.
//! - The versions a pass saw (its read, then each of its own writes without a gap) count as
//!   handled, so the callbacks of nowpilot's own writes are acknowledged as `stale`.
//!
//! ```no_run
//! # async fn demo(
//! #     queue: std::sync::Arc<dyn nowpilot_queue::EventQueue>,
//! #     connection: nowpilot_admin::ConnectionManager,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use nowpilot_model::plans::PlanSet;
//! use nowpilot_worker::{WorkerConfig, WorkerDeps, run};
//! let config = WorkerConfig { quickstart: true, ..WorkerConfig::default() };
//! let plans = PlanSet::new(&[], config.quickstart)?;
//! let settings = config.validate(&plans)?;
//! let deps = WorkerDeps::new(queue, connection, plans, settings);
//! run(deps, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod config;
mod connection;
pub mod history;
pub mod hosts;
pub mod lanes;
mod lookups;
pub mod markers;
pub mod poller;
mod reconcile;
pub mod report;
pub mod steps;
pub mod telemetry;
mod versions;

use std::sync::Arc;

use nowpilot_admin::ConnectionManager;
use nowpilot_model::plans::PlanSet;
use nowpilot_queue::{EventQueue, PartitionOwnership, QueueError};
use tokio_util::sync::CancellationToken;

pub use admin::{AdminState, RenderMetrics, admin_router, serve_admin};
pub use config::{Approvers, RunbookKey, WorkerConfig, WorkerConfigError, WorkerSettings};
pub use report::{ActionReport, ActivitySink, Outcome, PassReport};

use crate::connection::ConnectionGate;
use crate::lookups::Lookups;
use crate::poller::PollerControl;
use crate::reconcile::Context;
use crate::steps::Investigator;
use crate::steps::outbound::Outbound;
use crate::versions::SharedVersions;

/// Why the worker stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Consuming could not start.
    #[error("cannot consume events: {0}")]
    Queue(#[from] QueueError),
    /// The queue stopped delivering without a shutdown (the backend shut down, or every
    /// partition was stopped).
    #[error(
        "the queue stopped delivering events (the backend shut down or every partition was stopped)"
    )]
    StreamEnded,
    /// The HTTP client for investigation steps could not be built.
    #[error("cannot build the HTTP client for investigation steps: {0}")]
    Http(String),
}

/// Everything the worker runs on.
#[derive(Clone)]
pub struct WorkerDeps {
    /// The event queue.
    pub queue: Arc<dyn EventQueue>,
    /// The ServiceNow connection (the current client, or none while disconnected).
    pub connection: ConnectionManager,
    /// The validated plans.
    pub plans: Arc<PlanSet>,
    /// The validated `[worker]` section.
    pub settings: WorkerSettings,
    /// Receives one report per pass (optional).
    pub activity: Option<ActivitySink>,
}

impl WorkerDeps {
    /// Dependencies without an activity sink.
    pub fn new(
        queue: Arc<dyn EventQueue>,
        connection: ConnectionManager,
        plans: PlanSet,
        settings: WorkerSettings,
    ) -> Self {
        WorkerDeps {
            queue,
            connection,
            plans: Arc::new(plans),
            settings,
            activity: None,
        }
    }

    /// Adds an activity sink.
    pub fn with_activity(mut self, sink: ActivitySink) -> Self {
        self.activity = Some(sink);
        self
    }
}

/// Consumes every partition of the queue until `shutdown`, then drains (see [`lanes`]). For
/// one process; several workers on one broker use [`run_owned`].
///
/// Cancel `shutdown` before (or together with) the queue's own token: a queue that closes
/// first ends the delivery stream, which this reports as [`WorkerError::StreamEnded`].
pub async fn run(deps: WorkerDeps, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let ownership = PartitionOwnership::all(deps.queue.topology().partitions());
    run_owned(deps, ownership, shutdown).await
}

/// Consumes the given partitions until `shutdown`, then drains.
pub async fn run_partitions(
    deps: WorkerDeps,
    partitions: &[u16],
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    run_owned(deps, PartitionOwnership::fixed(partitions), shutdown).await
}

/// Consumes the partitions `ownership` hands out (acquiring and handing them over as it says)
/// until `shutdown`, then drains and leaves: `ownership` is closed only once no pass runs any
/// more, so the next owners never overlap one. Get `ownership` from
/// [`PartitionOwnership::start`] with [`WorkerSettings::ownership_settings`].
pub async fn run_owned(
    deps: WorkerDeps,
    mut ownership: PartitionOwnership,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    telemetry::describe();
    telemetry::waiting_for_connection(false);
    let settings = deps.settings;
    let outbound = Outbound::new(settings.allowed_hosts().clone())
        .map_err(|e| WorkerError::Http(e.to_string()))?;
    let investigator = Investigator::new(
        outbound,
        settings.config().prometheus_url.clone(),
        settings.runbook_key().cloned(),
    );
    if settings.config().integration_user.is_none() {
        let state = deps.connection.current();
        let oauth_without_user = state.config.as_ref().is_some_and(|c| {
            c.auth == nowpilot_servicenow::AuthKind::OAuth && c.username.is_none()
        });
        if oauth_without_user {
            tracing::warn!(
                "[worker] integration_user is not set and the OAuth connection names no user: nowpilot recognises its own notes by their markers only, and trusts any proposal marker"
            );
        }
    }
    let poll = settings.config().poller;
    let ctx = Arc::new(Context {
        settings,
        plans: deps.plans,
        connection: deps.connection,
        gate: ConnectionGate::default(),
        lookups: Lookups::default(),
        investigator,
        shutdown: shutdown.clone(),
        warned_identity: std::sync::atomic::AtomicBool::new(false),
    });
    let handled = SharedVersions::new(lanes::HANDLED_CAPACITY);
    let poller = if poll {
        PollerControl::new(ctx.clone(), deps.queue.clone(), handled.clone())
    } else {
        PollerControl::disabled()
    };
    let result = lanes::consume(
        ctx,
        deps.queue,
        &mut ownership,
        deps.activity,
        handled,
        poller,
        shutdown,
    )
    .await;
    ownership.close().await;
    result
}
