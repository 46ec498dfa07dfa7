//! The `[worker]` configuration section and its validated form, [`WorkerSettings`].
//!
//! The doc comments of [`WorkerConfig`]'s fields are the configuration reference. Validation
//! happens once, at load, together with the plans: every URL a plan contacts must be on
//! `allowed_hosts`, runbook steps need a signing secret, review actions need approvers. Errors
//! name the key (`worker.allowed_hosts[2]`, `plans[0].steps[1].url`) and never print a secret.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use nowpilot_model::plans::{ActionKind, Autonomy, PlanSet, StepKind};
use nowpilot_queue::OwnershipSettings;
use nowpilot_servicenow::ClientOptions;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Deserializer};

use crate::hosts::AllowedHosts;

/// Largest runbook secret file read; anything bigger is almost surely the wrong file.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
/// The shortest accepted runbook key, in decoded bytes (128 bits), as for webhook secrets.
const MIN_RUNBOOK_KEY_BYTES: usize = 16;
/// Most retry delays accepted; the retry tiers of the queue cap each delay anyway.
const MAX_RETRY_DELAYS: usize = 20;

/// The `[worker]` section: how the worker consumes events and what its plans may contact.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Address of the worker's admin server (`/healthz`, `/readyz`, `/metrics`), default
    /// `127.0.0.1:9091`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Most ServiceNow calls in flight at once from this process (default 16). ServiceNow
    /// serves API calls from a small semaphore pool; this keeps one worker from exhausting it.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Add the built-in Quickstart plan after the configured plans: High (priority 2)
    /// incidents are acknowledged and investigated autonomously.
    #[serde(default)]
    pub quickstart: bool,
    /// Hosts that probes, Prometheus queries and runbooks may contact: exact names
    /// (`status.example.com`, `10.0.0.5`) or `*.suffix` (`*.example.com`, which matches any
    /// subdomain but not `example.com` itself). Checked when the configuration loads and again
    /// before every request.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// The Prometheus server for `prometheus` steps without their own `base_url`, e.g.
    /// `http://prometheus.monitoring:9090`.
    #[serde(default)]
    pub prometheus_url: Option<String>,
    /// Who may approve or reject proposals: ServiceNow user names (`maya.patel`), or
    /// `group:<name>` for every member of a ServiceNow group (`group:Platform SRE`).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How long a proposal waits for an answer before it expires, e.g. `24h` (default).
    #[serde(default = "default_proposal_ttl", with = "humantime_serde")]
    pub proposal_ttl: Duration,
    /// The secret that signs outbound runbook calls (Standard Webhooks), `whsec_<base64>`.
    /// Prefer `runbook_secret_file`.
    #[serde(default)]
    pub runbook_secret: Option<SecretString>,
    /// A file holding the runbook secret (one trailing newline ignored). Relative paths are
    /// used as given: the caller resolves them against the configuration file's directory.
    #[serde(default)]
    pub runbook_secret_file: Option<PathBuf>,
    /// The retry budget: the delay before each retry of an event that failed transiently, e.g.
    /// `["5s", "30s", "5m", "30m"]` (default). After the last one the event is dead-lettered.
    /// A server's `Retry-After` lengthens a delay, never shortens it. The queue waits in fixed
    /// tiers, so each delay is rounded up to 5s, 30s, 5m or 30m (longer ones wait 30m).
    #[serde(default = "default_retry_delays", deserialize_with = "durations")]
    pub retry_delays: Vec<Duration>,
    /// The ServiceNow user name whose updates are nowpilot's own. Default: the connection's
    /// user (Basic auth or the OAuth password grant). Set it with other OAuth grants.
    #[serde(default)]
    pub integration_user: Option<String>,
    /// Run the poller, the safety net for lost callbacks (default `true`). One worker of a
    /// deployment polls at a time (the owner of partition 0).
    #[serde(default = "default_true")]
    pub poller: bool,
    /// How often the poller lists recently updated incidents, e.g. `60s` (default).
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How far back each poll looks, e.g. `10m` (default). Longer than `poll_interval`, so
    /// polls overlap and a failed one loses nothing.
    #[serde(default = "default_poll_window", with = "humantime_serde")]
    pub poll_window: Duration,
    /// This worker's id among the workers sharing a queue (default: host name, process id
    /// and a random suffix). Must be unique per process.
    #[serde(default)]
    pub member_id: Option<String>,
    /// How often this worker tells the others it is alive, e.g. `1s` (default).
    #[serde(default = "default_membership_heartbeat", with = "humantime_serde")]
    pub membership_heartbeat: Duration,
    /// How long a silent worker still counts as alive, e.g. `3s` (default); at least twice
    /// `membership_heartbeat`. Shorter moves partitions of a dead worker sooner.
    #[serde(default = "default_member_timeout", with = "humantime_serde")]
    pub member_timeout: Duration,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9091))
}
fn default_concurrency() -> usize {
    16
}
fn default_true() -> bool {
    true
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_poll_window() -> Duration {
    Duration::from_secs(600)
}
fn default_membership_heartbeat() -> Duration {
    Duration::from_secs(1)
}
fn default_member_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_proposal_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_retry_delays() -> Vec<Duration> {
    [5, 30, 300, 1800]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

fn durations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    let raw: Vec<String> = Vec::deserialize(deserializer)?;
    raw.iter()
        .enumerate()
        .map(|(i, text)| {
            humantime::parse_duration(text.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "retry_delays[{i}]: {e} (write durations like \"5s\", \"30s\", \"5m\")"
                ))
            })
        })
        .collect()
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            admin_listen: default_admin_listen(),
            concurrency: default_concurrency(),
            quickstart: false,
            allowed_hosts: Vec::new(),
            prometheus_url: None,
            approvers: Vec::new(),
            proposal_ttl: default_proposal_ttl(),
            runbook_secret: None,
            runbook_secret_file: None,
            retry_delays: default_retry_delays(),
            integration_user: None,
            poller: true,
            poll_interval: default_poll_interval(),
            poll_window: default_poll_window(),
            member_id: None,
            membership_heartbeat: default_membership_heartbeat(),
            member_timeout: default_member_timeout(),
        }
    }
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("admin_listen", &self.admin_listen)
            .field("concurrency", &self.concurrency)
            .field("quickstart", &self.quickstart)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("prometheus_url", &self.prometheus_url)
            .field("approvers", &self.approvers)
            .field("proposal_ttl", &self.proposal_ttl)
            .field(
                "runbook_secret",
                &self.runbook_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("runbook_secret_file", &self.runbook_secret_file)
            .field("retry_delays", &self.retry_delays)
            .field("integration_user", &self.integration_user)
            .field("poller", &self.poller)
            .field("poll_interval", &self.poll_interval)
            .field("poll_window", &self.poll_window)
            .field("member_id", &self.member_id)
            .field("membership_heartbeat", &self.membership_heartbeat)
            .field("member_timeout", &self.member_timeout)
            .finish()
    }
}

/// A configuration problem, located by its key. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct WorkerConfigError {
    /// The full key: `worker.allowed_hosts[2]`, `plans[0].steps[1].url`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> WorkerConfigError {
    WorkerConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Who may answer proposals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approvers {
    /// User names, lowercased.
    pub users: Vec<String>,
    /// Group names, as written (ServiceNow compares names exactly).
    pub groups: Vec<String>,
}

impl Approvers {
    /// Whether nobody may approve.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    /// "maya.patel, members of Platform SRE" for proposal notes.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.users.clone();
        parts.extend(self.groups.iter().map(|g| format!("members of {g}")));
        parts.join(", ")
    }
}

/// The HMAC key that signs runbook calls. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct RunbookKey(Arc<SecretSlice<u8>>);

impl RunbookKey {
    /// Parses `whsec_<base64>`; the error never repeats the value.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let encoded = secret
            .trim()
            .strip_prefix("whsec_")
            .ok_or_else(|| "must start with whsec_ followed by base64".to_owned())?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the part after whsec_ is not valid base64".to_owned())?;
        if key.is_empty() {
            return Err("the key after whsec_ is empty".to_owned());
        }
        if key.len() < MIN_RUNBOOK_KEY_BYTES {
            return Err(format!(
                "the key after whsec_ has only {} bytes, too short to sign with: use at least \
                 {MIN_RUNBOOK_KEY_BYTES} random bytes, e.g. `echo \"whsec_$(openssl rand -base64 32)\"`",
                key.len()
            ));
        }
        Ok(RunbookKey(Arc::new(SecretSlice::from(key))))
    }

    /// The key bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for RunbookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RunbookKey([REDACTED])")
    }
}

/// A validated `[worker]` section, checked against the plans it will run.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    config: WorkerConfig,
    ownership: OwnershipSettings,
    allowed_hosts: AllowedHosts,
    approvers: Approvers,
    runbook_key: Option<RunbookKey>,
}

impl WorkerConfig {
    /// The ServiceNow client options the worker needs (`concurrency` as the in-flight cap);
    /// give them to the `ConnectionManager` that builds the client.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            max_in_flight: Some(self.concurrency.max(1)),
            ..ClientOptions::default()
        }
    }

    /// Checks every key, reads the runbook secret, and checks the plans' URLs and needs
    /// against this section.
    pub fn validate(&self, plans: &PlanSet) -> Result<WorkerSettings, WorkerConfigError> {
        if !(1..=1024).contains(&self.concurrency) {
            return Err(invalid("worker.concurrency", "must be between 1 and 1024"));
        }
        let allowed_hosts = AllowedHosts::parse(&self.allowed_hosts)
            .map_err(|(i, reason)| invalid(format!("worker.allowed_hosts[{i}]"), reason))?;
        if let Some(url) = &self.prometheus_url {
            allowed_hosts
                .check_url(url)
                .map_err(|reason| invalid("worker.prometheus_url", reason))?;
        }
        let approvers = parse_approvers(&self.approvers)?;
        if self.proposal_ttl.is_zero() {
            return Err(invalid(
                "worker.proposal_ttl",
                "must be longer than zero, e.g. \"24h\"",
            ));
        }
        if self.retry_delays.len() > MAX_RETRY_DELAYS {
            return Err(invalid(
                "worker.retry_delays",
                format!("at most {MAX_RETRY_DELAYS} delays"),
            ));
        }
        if let Some(user) = &self.integration_user
            && user.trim().is_empty()
        {
            return Err(invalid(
                "worker.integration_user",
                "must not be empty (leave it out to use the connection's user)",
            ));
        }
        self.check_poller()?;
        self.ownership_settings()
            .validate()
            .map_err(|e| invalid("worker.member_timeout", e.to_string()))?;
        let runbook_key = self.runbook_key()?;
        check_plans(
            plans,
            &allowed_hosts,
            self,
            &approvers,
            runbook_key.is_some(),
        )?;
        Ok(WorkerSettings {
            config: self.clone(),
            ownership: self.ownership_settings(),
            allowed_hosts,
            approvers,
            runbook_key,
        })
    }

    fn check_poller(&self) -> Result<(), WorkerConfigError> {
        if self.poll_interval < Duration::from_secs(1) {
            return Err(invalid("worker.poll_interval", "must be at least 1s"));
        }
        if self.poll_window <= self.poll_interval {
            return Err(invalid(
                "worker.poll_window",
                "must be longer than poll_interval, so that polls overlap (e.g. 10m with 60s)",
            ));
        }
        if self.poll_window > Duration::from_secs(7 * 24 * 3600) {
            return Err(invalid("worker.poll_window", "must be at most 7 days"));
        }
        if let Some(id) = &self.member_id
            && (id.trim().is_empty()
                || id.len() > nowpilot_queue::ownership::membership::MAX_MEMBER_ID
                || id.chars().any(char::is_control))
        {
            return Err(invalid(
                "worker.member_id",
                "must be 1 to 200 printable characters (leave it out for a generated one)",
            ));
        }
        if self.membership_heartbeat < Duration::from_millis(100) {
            return Err(invalid(
                "worker.membership_heartbeat",
                "must be at least 100ms",
            ));
        }
        if self.member_timeout < self.membership_heartbeat * 2 {
            return Err(invalid(
                "worker.member_timeout",
                "must be at least twice membership_heartbeat, or workers flap in and out",
            ));
        }
        Ok(())
    }

    /// The partition-ownership timings of this section (member id generated when not set).
    pub fn ownership_settings(&self) -> OwnershipSettings {
        let defaults = OwnershipSettings::default();
        OwnershipSettings {
            member_id: self
                .member_id
                .as_ref()
                .map_or(defaults.member_id.clone(), |id| id.trim().to_owned()),
            heartbeat_interval: self.membership_heartbeat,
            member_timeout: self.member_timeout,
            // A previous owner's consumers get two member timeouts to go.
            takeover_grace: self.member_timeout * 2,
            ..defaults
        }
    }

    fn runbook_key(&self) -> Result<Option<RunbookKey>, WorkerConfigError> {
        let text = match (&self.runbook_secret, &self.runbook_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "worker.runbook_secret_file",
                    "give either runbook_secret or runbook_secret_file, not both",
                ));
            }
            (Some(secret), None) => SecretString::from(secret.expose_secret().to_owned()),
            (None, Some(path)) => read_secret_file(path)?,
            (None, None) => return Ok(None),
        };
        let key = if self.runbook_secret.is_some() {
            "worker.runbook_secret"
        } else {
            "worker.runbook_secret_file"
        };
        RunbookKey::parse(text.expose_secret())
            .map(Some)
            .map_err(|reason| invalid(key, reason))
    }
}

fn read_secret_file(path: &Path) -> Result<SecretString, WorkerConfigError> {
    use std::io::Read as _;
    let key = "worker.runbook_secret_file";
    let cannot_read =
        |e: std::io::Error| invalid(key, format!("cannot read {}: {e}", path.display()));
    // Bounded while reading, not by the file's size beforehand: a device or a pipe reports
    // size 0 and may never end (`/dev/zero` would fill memory).
    let mut text = String::new();
    let read = std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_SECRET_FILE_BYTES + 1)
                .read_to_string(&mut text)
        })
        .map_err(cannot_read)?;
    if read as u64 > MAX_SECRET_FILE_BYTES {
        return Err(invalid(
            key,
            format!(
                "{} is larger than {MAX_SECRET_FILE_BYTES} bytes; is it the right file?",
                path.display()
            ),
        ));
    }
    let trimmed = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(SecretString::from(trimmed.to_owned()))
}

fn parse_approvers(entries: &[String]) -> Result<Approvers, WorkerConfigError> {
    let mut approvers = Approvers::default();
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("worker.approvers[{i}]");
        let entry = entry.trim();
        if let Some(group) = entry.strip_prefix("group:") {
            let group = group.trim();
            if group.is_empty() {
                return Err(invalid(
                    key,
                    "`group:` needs a group name, e.g. group:Platform SRE",
                ));
            }
            approvers.groups.push(group.to_owned());
        } else if entry.is_empty() || entry.chars().any(char::is_whitespace) {
            return Err(invalid(
                key,
                "must be a ServiceNow user name (no spaces) or group:<name>",
            ));
        } else {
            approvers.users.push(entry.to_ascii_lowercase());
        }
    }
    Ok(approvers)
}

fn references_findings(source: &str) -> bool {
    crate::reconcile::owed::mentions_findings(source)
}

fn check_plans(
    plans: &PlanSet,
    hosts: &AllowedHosts,
    config: &WorkerConfig,
    approvers: &Approvers,
    has_runbook_key: bool,
) -> Result<(), WorkerConfigError> {
    for (i, plan) in plans.plans().iter().enumerate() {
        for (j, step) in plan.steps.iter().enumerate() {
            for (field, url) in step.urls() {
                hosts
                    .check_url(url)
                    .map_err(|reason| invalid(format!("plans[{i}].steps[{j}].{field}"), reason))?;
            }
            match &step.kind {
                StepKind::Prometheus { base_url: None, .. } if config.prometheus_url.is_none() => {
                    return Err(invalid(
                        format!("plans[{i}].steps[{j}].base_url"),
                        "a prometheus step needs base_url or [worker] prometheus_url",
                    ));
                }
                StepKind::Runbook { .. } if !has_runbook_key => {
                    return Err(invalid(
                        format!("plans[{i}].steps[{j}]"),
                        "a runbook step needs [worker] runbook_secret or runbook_secret_file to sign its calls",
                    ));
                }
                _ => {}
            }
        }
        let investigates = plan
            .actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::Investigate));
        for (j, action) in plan.actions.iter().enumerate() {
            if let Some(when) = &action.when
                && !investigates
                && references_findings(when.source())
            {
                return Err(invalid(
                    format!("plans[{i}].actions[{j}].when"),
                    "uses `findings`, but the plan has no investigate action to produce them",
                ));
            }
            if action.autonomy == Autonomy::Review && approvers.is_empty() {
                return Err(invalid(
                    "worker.approvers",
                    format!(
                        "plan {:?} proposes actions for review (action {:?}), but nobody may approve them: add user names or group:<name>",
                        plan.name, action.id
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl WorkerSettings {
    /// The section as written.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// The parsed allow-list.
    pub fn allowed_hosts(&self) -> &AllowedHosts {
        &self.allowed_hosts
    }

    /// Who may answer proposals.
    pub fn approvers(&self) -> &Approvers {
        &self.approvers
    }

    /// The runbook signing key, when configured.
    pub fn runbook_key(&self) -> Option<&RunbookKey> {
        self.runbook_key.as_ref()
    }

    /// See [`WorkerConfig::client_options`].
    pub fn client_options(&self) -> ClientOptions {
        self.config.client_options()
    }

    /// See [`WorkerConfig::ownership_settings`]: the same member id every time it is asked.
    pub fn ownership_settings(&self) -> OwnershipSettings {
        self.ownership.clone()
    }
}

#[cfg(test)]
mod tests;
