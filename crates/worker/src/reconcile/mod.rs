//! One pass: reconcile an incident with its plans.
//!
//! The event only says "look at this one". A pass reads the incident as it is now
//! (`sysparm_display_value=all`, so filters can match names), matches plans, reads the journal
//! once, works out what each matched plan still owes, and does it, each action as **one**
//! PATCH carrying the field changes and the work note with its marker, so change and note
//! commit together. Terminal incidents (resolved, closed, canceled) get nothing at all.
//!
//! Conditions (`when`) see the incident as read at the start of the pass, plus `findings`.
//! **Findings decide actions in the pass that investigated**: an action whose `when` uses
//! `findings` is decided right after this pass's investigation; when the plan's investigate
//! action was done in an earlier pass, such an action is no longer owed.
//!
//! Every parameter that can be wrong (close codes, hold reasons, groups, users, the priority
//! target) is checked before anything is written, so a bad plan fails with nothing written.

mod act;
mod notes;
pub(crate) mod owed;
mod plan;
mod review;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nowpilot_admin::ConnectionManager;
use nowpilot_model::plans::PlanSet;
use nowpilot_model::{Incident, Record, State};
use nowpilot_servicenow::{Classification, Client, DisplayValue, Error, ReadOptions};
use serde_json::{Map, Value as Json};
use tokio_util::sync::CancellationToken;

use crate::config::WorkerSettings;
use crate::connection::ConnectionGate;
use crate::history::{History, Identity};
use crate::lookups::{Lookups, Scoped};
use crate::report::{ActionReport, Outcome};
use crate::steps::Investigator;

/// Everything passes share.
pub(crate) struct Context {
    pub(crate) settings: WorkerSettings,
    pub(crate) plans: Arc<PlanSet>,
    pub(crate) connection: ConnectionManager,
    pub(crate) gate: ConnectionGate,
    pub(crate) lookups: Lookups,
    pub(crate) investigator: Investigator,
    pub(crate) shutdown: CancellationToken,
    /// Set once the "integration user not found" warning was logged.
    pub(crate) warned_identity: AtomicBool,
}

/// What a pass is about: the incident and the newest event that asked for it.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) sys_id: String,
    pub(crate) number: String,
    pub(crate) event_id: String,
}

/// How the pass wants its deliveries settled.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    /// Acknowledge with this outcome.
    Ack(Outcome),
    /// Transient failure: retry after at least `after`.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Permanent failure.
    DeadLetter { reason: &'static str, error: String },
    /// Shutting down before the pass could run: requeue.
    Interrupted,
}

/// The result of one pass.
#[derive(Debug, Clone)]
pub(crate) struct PassResult {
    pub(crate) verdict: Verdict,
    pub(crate) number: String,
    pub(crate) plans: Vec<String>,
    pub(crate) actions: Vec<ActionReport>,
    /// The newest version nowpilot has seen without a gap (read, then its own writes); set
    /// only when the pass succeeded.
    pub(crate) handled_version: Option<u64>,
    /// Whether the pass waited for a connection.
    pub(crate) waited: bool,
    /// How long the pass worked, from having a client to its verdict.
    pub(crate) busy: Duration,
}

/// A failed pass, classified.
#[derive(Debug, Clone)]
pub(crate) struct PassError {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) retry: Option<Option<Duration>>,
}

impl PassError {
    /// A permanent failure with a reason code.
    pub(crate) fn permanent(reason: &'static str, message: impl Into<String>) -> Self {
        PassError {
            reason,
            message: message.into(),
            retry: None,
        }
    }
}

impl From<Error> for PassError {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        if let Classification::Retryable { after } = error.classification() {
            return PassError {
                reason: "transient",
                message,
                retry: Some(after),
            };
        }
        let reason = match &error {
            // Credentials can be fixed without a restart (nowpilot connect); an event must
            // not be dead-lettered for that, so a 401 spends the retry budget instead.
            Error::Unauthorized { .. } | Error::OAuth { .. } => {
                return PassError {
                    reason: "unauthorized",
                    message,
                    retry: Some(None),
                };
            }
            Error::NotFound { .. } => "not_found",
            Error::Forbidden { .. } if error.is_data_policy() => {
                let detail = error
                    .api_message()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                return PassError::permanent(
                    "data_policy",
                    format!("ServiceNow refused the write because of a data policy: {detail}"),
                );
            }
            Error::Forbidden { .. } => "forbidden",
            Error::BadRequest { .. } | Error::InvalidRequest { .. } | Error::Query(_) => {
                "bad_request"
            }
            Error::Decode { .. } => "bad_response",
            Error::Status { .. } => "unexpected_status",
            Error::Config(_) => "config",
            _ => "servicenow_error",
        };
        PassError::permanent(reason, message)
    }
}

/// Versions nowpilot has seen: what it read, then each of its own writes. A write whose
/// answer skips a version means someone else wrote in between; from there on the pass no
/// longer claims to have seen everything.
#[derive(Debug, Clone, Copy)]
struct Versions {
    contiguous: u64,
    latest: u64,
    gap: bool,
}

impl Versions {
    fn read(version: u64) -> Self {
        Versions {
            contiguous: version,
            latest: version,
            gap: false,
        }
    }

    fn wrote(&mut self, version: u64) {
        if !self.gap && version == self.contiguous + 1 {
            self.contiguous = version;
        } else if version > self.contiguous {
            self.gap = true;
        }
        self.latest = self.latest.max(version);
    }
}

/// The state of one pass.
pub(crate) struct Pass<'a> {
    ctx: &'a Context,
    job: &'a Job,
    client: Client,
    generation: u64,
    incident: Incident,
    history: History,
    versions: Versions,
    wrote: bool,
    /// The incident became terminal through a write: stop.
    stopped: bool,
    actions: Vec<ActionReport>,
}

impl<'a> Pass<'a> {
    fn lookups(&self) -> Scoped<'_> {
        self.ctx.lookups.scoped(&self.client, self.generation)
    }

    fn sys_id(&self) -> &str {
        &self.job.sys_id
    }

    /// One PATCH: the field changes and the note (which ends with its marker) together.
    async fn write(
        &mut self,
        mut fields: Map<String, Json>,
        note: String,
    ) -> Result<Record, PassError> {
        fields.insert("work_notes".into(), Json::String(note));
        // Only what the pass reads back: the new version, whether the incident ended, and the
        // priority ServiceNow computed.
        let record = self
            .client
            .patch_returning(
                "incident",
                &self.job.sys_id,
                &fields,
                &["sys_mod_count", "state", "priority"],
            )
            .await?;
        self.wrote = true;
        if let Some(version) = record
            .value("sys_mod_count")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            self.versions.wrote(version);
        }
        if State::from_value(record.value_or_empty("state")).is_terminal() {
            self.stopped = true;
        }
        Ok(record)
    }

    /// The version to put in markers: the newest one known.
    fn version(&self) -> u64 {
        self.versions.latest
    }

    fn report(
        &mut self,
        plan: &str,
        action: &str,
        kind: &'static str,
        result: &'static str,
        detail: impl Into<String>,
    ) {
        crate::telemetry::action(kind, result);
        self.actions.push(ActionReport {
            plan: plan.to_owned(),
            action: action.to_owned(),
            kind,
            result,
            detail: detail.into(),
        });
    }
}

async fn identity(
    ctx: &Context,
    scoped: &Scoped<'_>,
    connection_user: Option<&str>,
) -> Result<Identity, Error> {
    let configured = ctx.settings.config().integration_user.as_deref();
    let Some(user) = configured.or(connection_user) else {
        return Ok(Identity::default());
    };
    let display_name = scoped
        .user_by_name(user)
        .await?
        .map(|u| u.name)
        .filter(|n| !n.is_empty());
    if display_name.is_none() && !ctx.warned_identity.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            user,
            "the integration user has no sys_user record nowpilot can read; with the display-value journal its notes are recognised by their markers only"
        );
    }
    Ok(Identity {
        user_name: Some(user.to_ascii_lowercase()),
        display_name,
    })
}

/// Runs one pass for `job`.
pub(crate) async fn reconcile(ctx: &Context, job: &Job) -> PassResult {
    let mut result = PassResult {
        verdict: Verdict::Interrupted,
        number: job.number.clone(),
        plans: Vec::new(),
        actions: Vec::new(),
        handled_version: None,
        waited: false,
        busy: Duration::ZERO,
    };
    let (connected, waited) = ctx.gate.acquire(&ctx.connection, &ctx.shutdown).await;
    result.waited = waited;
    let Some(connected) = connected else {
        return result;
    };
    let started = tokio::time::Instant::now();
    reconcile_connected(ctx, job, &connected, &mut result).await;
    result.busy = started.elapsed();
    result
}

async fn reconcile_connected(
    ctx: &Context,
    job: &Job,
    connected: &crate::connection::Connected,
    result: &mut PassResult,
) {
    let read = ReadOptions::default().display_value(DisplayValue::Both);
    let record = match connected.client.get("incident", &job.sys_id, &read).await {
        Ok(record) => record,
        Err(Error::NotFound { .. }) => {
            result.verdict = Verdict::DeadLetter {
                reason: "not_found",
                error: format!(
                    "incident {} ({}) cannot be read: the record was deleted, or an ACL hides it from the integration user",
                    job.sys_id, job.number
                ),
            };
            return;
        }
        Err(e) => {
            result.verdict = failure(PassError::from(e));
            return;
        }
    };
    let incident = Incident::from(record);
    if !incident.number().is_empty() {
        result.number = incident.number().to_owned();
    }
    let selection = ctx.plans.select(&incident);
    result.plans = selection.matched.iter().map(|p| p.name.clone()).collect();
    let version = incident.mod_count();
    if selection.matched.is_empty() {
        result.verdict = Verdict::Ack(Outcome::NoPlan);
        result.handled_version = Some(version);
        return;
    }
    if incident.state().is_terminal() {
        result.verdict = Verdict::Ack(Outcome::Terminal);
        result.handled_version = Some(version);
        return;
    }
    let matched: Vec<_> = selection.matched.clone();
    let prepared = async {
        let scoped = ctx.lookups.scoped(&connected.client, connected.generation);
        let identity = identity(ctx, &scoped, connected.user_name.as_deref()).await?;
        // The incident was read with display values, which carry the journal: the fallback
        // (when sys_journal_field shows nothing) needs no second read.
        let journal = connected
            .client
            .journal_of("incident", &incident.record)
            .await?;
        Ok::<_, Error>(History::new(journal, &identity))
    }
    .await;
    let history = match prepared {
        Ok(history) => history,
        Err(e) => {
            result.verdict = failure(PassError::from(e));
            return;
        }
    };
    let mut pass = Pass {
        ctx,
        job,
        client: connected.client.clone(),
        generation: connected.generation,
        incident,
        history,
        versions: Versions::read(version),
        wrote: false,
        stopped: false,
        actions: Vec::new(),
    };
    let mut outcome = Ok(());
    for plan in matched {
        if pass.stopped {
            break;
        }
        outcome = pass.run_plan(plan).await;
        if outcome.is_err() {
            break;
        }
    }
    result.actions = std::mem::take(&mut pass.actions);
    match outcome {
        Ok(()) => {
            result.verdict = Verdict::Ack(if pass.wrote {
                Outcome::Acted
            } else {
                Outcome::NothingOwed
            });
            result.handled_version = Some(pass.versions.contiguous);
        }
        Err(e) => result.verdict = failure(e),
    }
}

fn failure(error: PassError) -> Verdict {
    match error.retry {
        Some(after) => Verdict::Retry {
            error: error.message,
            after,
        },
        None => Verdict::DeadLetter {
            reason: error.reason,
            error: error.message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_stop_at_a_gap() {
        let mut v = Versions::read(4);
        v.wrote(5);
        v.wrote(6);
        assert_eq!((v.contiguous, v.latest), (6, 6));
        v.wrote(8);
        assert_eq!((v.contiguous, v.latest), (6, 8));
        v.wrote(9);
        assert_eq!((v.contiguous, v.latest), (6, 9));
    }

    #[test]
    fn errors_are_classified() {
        use nowpilot_servicenow::{ApiMessage, RequestContext};
        let ctx = RequestContext::new("PATCH", "incident");
        let policy = Error::Forbidden {
            context: ctx.clone(),
            api: ApiMessage {
                message: "Operation Failed".into(),
                detail: Some("Data Policy Exception: mandatory: Resolution code".into()),
            },
        };
        let e = PassError::from(policy);
        assert_eq!(e.reason, "data_policy");
        assert!(e.message.contains("Resolution code"));
        assert!(e.retry.is_none());
        let acl = PassError::from(Error::Forbidden {
            context: ctx.clone(),
            api: ApiMessage::default(),
        });
        assert_eq!(acl.reason, "forbidden");
        let limited = PassError::from(Error::RateLimited {
            context: ctx.clone(),
            retry_after: Some(Duration::from_secs(7)),
            api: ApiMessage::default(),
        });
        assert_eq!(limited.retry, Some(Some(Duration::from_secs(7))));
        let unauthorized = PassError::from(Error::Unauthorized {
            context: ctx,
            api: ApiMessage::default(),
        });
        assert_eq!(unauthorized.retry, Some(None));
    }
}
