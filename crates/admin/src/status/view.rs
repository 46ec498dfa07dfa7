//! What the status page shows, as data: the same structure is rendered as HTML and served as
//! JSON, so the two never disagree.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use nowpilot_model::plans::{IntakeFilter, Plan};
use nowpilot_queue::{ActivityLink, ActivityRecord, QueueDepths, Readiness};
use nowpilot_servicenow::{ConnectionReport, FailureKind, InstanceUrl};
use serde::Serialize;

use super::feed::PlanCount;
use crate::manager::ConnectionState;

/// The whole page.
#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    /// When this snapshot was taken.
    pub generated_at: DateTime<Utc>,
    /// Whether anything needs a person, and what.
    pub summary: Summary,
    /// The ServiceNow connection.
    pub connection: ConnectionView,
    /// The event queue.
    pub queue: QueueView,
    /// The workers of the deployment (at least this process, when it runs one).
    pub workers: WorkersView,
    /// The response plans, in order.
    pub plans: PlansView,
    /// The latest passes.
    pub activity: ActivityView,
    /// This process.
    pub process: ProcessView,
}

/// The state first: all fine, or the list of what needs attention.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `ok` or `attention`.
    pub state: &'static str,
    /// One sentence per problem, most important first.
    pub problems: Vec<String>,
}

/// The connection as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    /// `connected`, `failing`, `checking` or `not_configured`.
    pub state: &'static str,
    /// `ServiceNow is connected`, or what is wrong, in the words of the setup guide.
    pub headline: String,
    /// The instance URL, when configured.
    pub instance: Option<String>,
    /// The integration user's login, when known.
    pub user: Option<String>,
    /// The integration user's display name, when known.
    pub user_name: Option<String>,
    /// `basic`, `oauth (client_credentials)`, …
    pub auth: Option<String>,
    /// The failing check's title, when one failed.
    pub failed_check: Option<String>,
    /// What was found.
    pub detail: Option<String>,
    /// What to do about it.
    pub advice: Option<String>,
    /// When the connection was last checked.
    pub checked_at: Option<DateTime<Utc>>,
}

/// The queue depths (cached a few seconds) and readiness.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    /// `memory` or `amqp`-style prefix, for orientation.
    pub prefix: String,
    /// Whether publishes can succeed.
    pub ready: bool,
    /// Why not.
    pub not_ready_reason: Option<String>,
    /// Events waiting, all partitions together (ready messages).
    pub waiting: Option<u64>,
    /// Per partition.
    pub partitions: Vec<u64>,
    /// Waiting in a retry tier.
    pub retrying: Option<u64>,
    /// In the dead-letter queue.
    pub dead_letters: Option<u64>,
    /// Why the depths are unknown.
    pub error: Option<String>,
    /// When the depths were read.
    pub as_of: Option<DateTime<Utc>>,
}

impl QueueView {
    pub(crate) fn new(
        prefix: &str,
        readiness: &Readiness,
        depths: Option<&(DateTime<Utc>, Result<QueueDepths, String>)>,
    ) -> Self {
        let (depths, error, as_of) = match depths {
            Some((at, Ok(d))) => (Some(d), None, Some(*at)),
            Some((at, Err(e))) => (None, Some(e.clone()), Some(*at)),
            None => (None, Some("not read yet".to_owned()), None),
        };
        QueueView {
            prefix: prefix.to_owned(),
            ready: readiness.ready,
            not_ready_reason: readiness.reason.clone(),
            waiting: depths.map(|d| d.partitions.iter().sum()),
            partitions: depths.map(|d| d.partitions.clone()).unwrap_or_default(),
            retrying: depths.map(|d| d.retry),
            dead_letters: depths.map(|d| d.dead),
            error,
            as_of,
        }
    }
}

/// One worker of the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerMember {
    /// A stable id for the worker process.
    pub id: String,
    /// Where it runs.
    pub host: String,
    /// The partitions it consumes now.
    pub partitions: Vec<u16>,
    /// When it was last heard from (`None` for this process).
    pub last_seen: Option<DateTime<Utc>>,
    /// Whether it is this process.
    pub this_process: bool,
}

/// The workers.
#[derive(Debug, Clone, Serialize)]
pub struct WorkersView {
    /// Whether the list covers the whole deployment (a membership provider is plugged in) or
    /// only this process.
    pub complete: bool,
    /// The workers known.
    pub members: Vec<WorkerMember>,
}

/// One plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanView {
    /// Its name.
    pub name: String,
    /// Whether it can match.
    pub enabled: bool,
    /// Whether it is the built-in Quickstart plan.
    pub builtin: bool,
    /// Whether later plans may match too.
    pub continues: bool,
    /// Which incidents it takes, in words.
    pub takes: String,
    /// Its actions, in order, as `kind (autonomy)`.
    pub actions: Vec<String>,
    /// How often it matched since this process started.
    pub matched: PlanCount,
}

impl PlanView {
    pub(crate) fn new(plan: &Plan, matched: PlanCount) -> Self {
        PlanView {
            name: plan.name.clone(),
            enabled: plan.enabled,
            builtin: plan.builtin,
            continues: plan.continue_matching,
            takes: describe_intake(&plan.intake),
            actions: plan
                .actions
                .iter()
                .map(|a| format!("{} ({})", a.id, a.autonomy.as_str()))
                .collect(),
            matched,
        }
    }
}

/// The plans.
#[derive(Debug, Clone, Serialize)]
pub struct PlansView {
    /// Whether this process knows the plans (an ingress may not).
    pub known: bool,
    /// The plans in matching order.
    pub plans: Vec<PlanView>,
    /// The incident counts reached their cap and are lower bounds.
    pub incidents_capped: bool,
}

/// The latest passes.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityView {
    /// How the activity reaches this page.
    pub link: ActivityLink,
    /// Passes received since this process started.
    pub total: u64,
    /// Passes this page missed because it fell behind.
    pub missed: u64,
    /// This process's passes not sent to other processes (the link was down or behind).
    pub not_shared: u64,
    /// The latest passes, newest first (at most 200).
    #[serde(serialize_with = "records")]
    pub items: Vec<Arc<ActivityRecord>>,
}

fn records<S: serde::Serializer>(
    items: &[Arc<ActivityRecord>],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(items.iter().map(|item| &**item))
}

/// This process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessView {
    /// `run`, `worker` or `ingress`.
    pub role: String,
    /// The build version.
    pub version: String,
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How often the HTML page reloads itself, in seconds.
    pub refresh_seconds: u64,
}

/// The intake filter in words: `priority 1 - Critical · configuration item payments-api`.
pub fn describe_intake(intake: &IntakeFilter) -> String {
    let mut parts = Vec::new();
    let list = |items: &[String]| items.join(" or ");
    if !intake.priorities.is_empty() {
        let p: Vec<String> = intake.priorities.iter().map(ToString::to_string).collect();
        parts.push(format!("priority {}", list(&p)));
    }
    if !intake.states.is_empty() {
        let s: Vec<String> = intake
            .states
            .iter()
            .map(|s| s.label().into_owned())
            .collect();
        parts.push(format!("state {}", list(&s)));
    }
    for (label, items) in [
        ("assignment group", &intake.assignment_groups),
        ("category", &intake.categories),
        ("subcategory", &intake.subcategories),
        ("configuration item", &intake.configuration_items),
    ] {
        if !items.is_empty() {
            parts.push(format!("{label} {}", list(items)));
        }
    }
    let quoted = |items: &[String]| {
        items
            .iter()
            .map(|i| format!("\u{201c}{i}\u{201d}"))
            .collect::<Vec<_>>()
    };
    if !intake.title_contains_any.is_empty() {
        parts.push(format!(
            "title contains {}",
            quoted(&intake.title_contains_any).join(" or ")
        ));
    }
    if !intake.title_contains_all.is_empty() {
        parts.push(format!(
            "title contains {}",
            quoted(&intake.title_contains_all).join(" and ")
        ));
    }
    if !intake.title_contains_none.is_empty() {
        parts.push(format!(
            "title contains none of {}",
            quoted(&intake.title_contains_none).join(", ")
        ));
    }
    if let Some(when) = &intake.when {
        parts.push(format!("when {}", when.source()));
    }
    if parts.is_empty() {
        "every incident".to_owned()
    } else {
        parts.join(" · ")
    }
}

/// The headline an operator searches the docs for (the wording of `nowpilot connect`).
fn headline(failure: Option<FailureKind>, oauth: bool) -> &'static str {
    match failure {
        Some(FailureKind::EndpointFormat) => "Invalid ServiceNow endpoint URL",
        Some(FailureKind::Unreachable) => "Unable to connect to ServiceNow endpoint",
        Some(FailureKind::Credentials) if oauth => "Invalid OAuth credentials",
        Some(FailureKind::Credentials) => "Invalid username or password",
        Some(FailureKind::Permission) => "The integration user lacks a permission",
        Some(FailureKind::RateLimited) => "ServiceNow is rate-limiting the integration user",
        Some(FailureKind::Configuration) => "The ServiceNow connection settings are incomplete",
        Some(FailureKind::Unexpected) | None => "ServiceNow answered unexpectedly",
    }
}

impl ConnectionView {
    pub(crate) fn new(state: &ConnectionState, checked_at: Option<DateTime<Utc>>) -> Self {
        let Some(config) = &state.config else {
            return ConnectionView {
                state: "not_configured",
                headline: "ServiceNow is not connected".to_owned(),
                instance: None,
                user: None,
                user_name: None,
                auth: None,
                failed_check: None,
                detail: Some("No connection is configured.".to_owned()),
                advice: Some(
                    "Connect with: nowpilot connect --instance https://<instance>.service-now.com"
                        .to_owned(),
                ),
                checked_at: None,
            };
        };
        let oauth = config.auth == nowpilot_servicenow::AuthKind::OAuth;
        let mut view = ConnectionView {
            state: "checking",
            headline: "Checking the ServiceNow connection".to_owned(),
            instance: Some(config.instance_url.trim().to_owned()),
            user: config.username.clone(),
            user_name: None,
            auth: Some(config.auth_description()),
            failed_check: None,
            detail: None,
            advice: None,
            checked_at,
        };
        if state.client.is_none() {
            view.state = "failing";
            view.headline = headline(Some(FailureKind::Configuration), oauth).to_owned();
            view.detail = state.problem.clone();
            view.advice = Some(
                "Fix the [servicenow] section (or run nowpilot connect again); a running process picks the change up.".to_owned(),
            );
            return view;
        }
        if let Some(report) = &state.report {
            view.fill_from(report, oauth);
        }
        view
    }

    fn fill_from(&mut self, report: &ConnectionReport, oauth: bool) {
        self.instance = Some(report.instance.clone());
        self.auth = Some(report.auth_kind.clone());
        if let Some(user) = &report.user {
            self.user = Some(user.user_name.clone());
            self.user_name = Some(user.name.clone());
        }
        match report.failed_check() {
            None => {
                self.state = "connected";
                self.headline = "ServiceNow is connected".to_owned();
            }
            Some(check) => {
                self.state = "failing";
                self.headline = headline(check.failure, oauth).to_owned();
                self.failed_check = Some(check.name.title().to_owned());
                self.detail = Some(check.detail.clone());
                self.advice.clone_from(&check.advice);
            }
        }
    }

    /// The link to an incident on the instance, when both the instance URL and the sys_id
    /// are well formed (nothing from a record chooses a URL).
    pub fn incident_link(&self, sys_id: &str) -> Option<String> {
        let instance = InstanceUrl::parse(self.instance.as_deref()?).ok()?;
        nowpilot_model::is_sys_id(sys_id).then(|| {
            format!(
                "{}/nav_to.do?uri=incident.do?sys_id={sys_id}",
                instance.as_str().trim_end_matches('/')
            )
        })
    }
}

impl Summary {
    pub(crate) fn new(
        connection: &ConnectionView,
        queue: &QueueView,
        activity: &ActivityView,
    ) -> Self {
        let mut problems = Vec::new();
        if connection.state != "connected" && connection.state != "checking" {
            let mut line = connection.headline.clone();
            if let Some(detail) = &connection.detail {
                line.push_str(": ");
                line.push_str(detail);
            }
            problems.push(line);
        }
        if !queue.ready {
            problems.push(format!(
                "The queue is not ready: {}",
                queue
                    .not_ready_reason
                    .as_deref()
                    .unwrap_or("unknown reason")
            ));
        }
        if let Some(dead) = queue.dead_letters.filter(|d| *d > 0) {
            problems.push(format!(
                "{dead} event(s) in the dead-letter queue: see nowpilot dlq list"
            ));
        }
        if let Some(error) = &queue.error
            && queue.as_of.is_some()
        {
            problems.push(format!("The queue depths cannot be read: {error}"));
        }
        // "connecting" is the first moments after start, not a problem yet.
        if let ActivityLink::Disconnected { reason } = &activity.link
            && reason != "connecting"
        {
            problems.push(format!(
                "Activity from other processes is not arriving: {reason}"
            ));
        }
        Summary {
            state: if problems.is_empty() {
                "ok"
            } else {
                "attention"
            },
            problems,
        }
    }
}
