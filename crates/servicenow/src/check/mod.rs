//! Connection checks for `nowpilot connect`, `nowpilot status` and the admin API.
//!
//! The checks run in order and stop at the first failure, each with a detail and the advice an
//! operator needs: endpoint format, reachability, credentials (and who the user is), incident
//! read, incident write (an empty `PATCH` that changes nothing), journal readability and the
//! close-code choices. Every failure maps to a distinct [`FailureKind`] so the CLI can give
//! each its own exit code.

use std::path::Path;

use serde::Serialize;

use crate::client::ClientOptions;
use crate::config::ServiceNowConfig;

mod steps;

/// Which check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    /// The instance URL is well formed.
    Endpoint,
    /// The instance answers HTTP at all.
    Reachability,
    /// The credentials are accepted, and who the user is.
    Credentials,
    /// Incidents can be read.
    IncidentRead,
    /// Incidents can be updated.
    IncidentWrite,
    /// Work notes and comments can be read.
    Journal,
    /// Close codes can be read.
    CloseCodes,
}

impl CheckName {
    /// A short human title.
    pub fn title(self) -> &'static str {
        match self {
            CheckName::Endpoint => "endpoint format",
            CheckName::Reachability => "reachability",
            CheckName::Credentials => "credentials",
            CheckName::IncidentRead => "incident read",
            CheckName::IncidentWrite => "incident write",
            CheckName::Journal => "journal read",
            CheckName::CloseCodes => "close codes",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Works.
    Passed,
    /// Works with a limitation the operator should know about.
    Warning,
    /// Does not work; later checks were not run.
    Failed,
    /// Could not be checked.
    Skipped,
}

/// Why the connection failed; each gets its own CLI exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// `instance_url` is malformed.
    EndpointFormat,
    /// The configuration is incomplete (missing key, unreadable secret file).
    Configuration,
    /// DNS, TCP, TLS or timeout: no HTTP answer.
    Unreachable,
    /// The instance refused the credentials.
    Credentials,
    /// The user is known but lacks a permission (ACL, role).
    Permission,
    /// The instance is rate-limiting this user.
    RateLimited,
    /// Anything else (server errors, unreadable answers).
    Unexpected,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Which check.
    pub name: CheckName,
    /// Its outcome.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// What to do about it, when something needs doing.
    pub advice: Option<String>,
    /// Why it failed, for `Failed`.
    pub failure: Option<FailureKind>,
}

/// The integration user as the instance knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserIdentity {
    /// `sys_user.sys_id`.
    pub sys_id: String,
    /// `user_name` (the login).
    pub user_name: String,
    /// `name` (the display name).
    pub name: String,
}

/// The result of [`check_connection`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionReport {
    /// The instance URL (normalised when it was valid).
    pub instance: String,
    /// `basic`, `oauth (client_credentials)`, …
    pub auth_kind: String,
    /// The integration user, when identified.
    pub user: Option<UserIdentity>,
    /// Whether every check passed or warned (none failed).
    pub connected: bool,
    /// The checks that ran, in order.
    pub checks: Vec<CheckResult>,
}

impl ConnectionReport {
    /// Whether no check failed.
    pub fn connected(&self) -> bool {
        !self.checks.iter().any(|c| c.status == CheckStatus::Failed)
    }

    /// The failed check, if any.
    pub fn failed_check(&self) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.status == CheckStatus::Failed)
    }

    /// Why the connection failed, if it did.
    pub fn failure(&self) -> Option<FailureKind> {
        self.failed_check().and_then(|c| c.failure)
    }

    /// `ServiceNow is connected`, or the failed check's detail.
    pub fn summary(&self) -> String {
        match self.failed_check() {
            None => "ServiceNow is connected".to_owned(),
            Some(check) => format!(
                "ServiceNow is not connected: {}: {}",
                check.name.title(),
                check.detail
            ),
        }
    }
}

/// Runs the connection checks with default client options.
pub async fn check_connection(config: &ServiceNowConfig, base_dir: &Path) -> ConnectionReport {
    check_connection_with(config, base_dir, ClientOptions::default()).await
}

/// Runs the connection checks with the given client options (retries are turned off: a
/// check should report what happens, not hide it).
pub async fn check_connection_with(
    config: &ServiceNowConfig,
    base_dir: &Path,
    options: ClientOptions,
) -> ConnectionReport {
    let mut run = steps::Run { checks: Vec::new() };
    let mut report = ConnectionReport {
        instance: config.instance_url.trim().to_owned(),
        auth_kind: config.auth_description(),
        user: None,
        connected: false,
        checks: Vec::new(),
    };
    let options = ClientOptions {
        get_retries: 0,
        max_rate_limit_waits: options.max_rate_limit_waits.min(1),
        ..options
    };
    steps::run_checks(config, base_dir, options, &mut run, &mut report).await;
    report.checks = run.checks;
    report.connected = report.connected();
    report
}
