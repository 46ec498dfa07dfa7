//! Printing a connection report, shared by `connect`, `status` and `demo`.

use nowpilot_servicenow::{AuthKind, CheckStatus, ConnectionReport, FailureKind};

use crate::output::Style;

/// Exit codes of failed connection checks (documented in `docs/troubleshooting.md`).
pub fn exit_code(failure: FailureKind) -> u8 {
    match failure {
        FailureKind::EndpointFormat => 10,
        FailureKind::Unreachable => 11,
        FailureKind::Credentials => 12,
        FailureKind::Permission => 13,
        FailureKind::RateLimited => 14,
        FailureKind::Configuration => 15,
        FailureKind::Unexpected => 16,
    }
}

/// The headline an operator searches the docs for, as the ServiceNow setup guide words it.
pub fn headline(failure: FailureKind, auth: AuthKind) -> &'static str {
    match (failure, auth) {
        (FailureKind::EndpointFormat, _) => "Invalid ServiceNow endpoint URL",
        (FailureKind::Unreachable, _) => "Unable to connect to ServiceNow endpoint",
        (FailureKind::Credentials, AuthKind::OAuth) => "Invalid OAuth credentials",
        (FailureKind::Credentials, AuthKind::Basic) => "Invalid username or password",
        (FailureKind::Permission, _) => "The integration user lacks a permission",
        (FailureKind::RateLimited, _) => "ServiceNow is rate-limiting the integration user",
        (FailureKind::Configuration, _) => "The ServiceNow connection settings are incomplete",
        (FailureKind::Unexpected, _) => "ServiceNow answered unexpectedly",
    }
}

/// Prints every check and the verdict.
pub fn print(report: &ConnectionReport, auth: AuthKind, style: Style) {
    for check in &report.checks {
        let mark = match check.status {
            CheckStatus::Passed => style.green("ok  "),
            CheckStatus::Warning => style.yellow("warn"),
            CheckStatus::Failed => style.red("FAIL"),
            CheckStatus::Skipped => style.dim("skip"),
        };
        println!("  [{mark}] {:<15} {}", check.name.title(), check.detail);
        if check.status != CheckStatus::Passed
            && let Some(advice) = &check.advice
        {
            println!("         {:<15} {}", "", style.dim(&format!("→ {advice}")));
        }
    }
    println!();
    match report.failure() {
        None => {
            println!("{}", style.green(&style.bold("ServiceNow is connected")));
            println!("  instance  {}", report.instance);
            if let Some(user) = &report.user {
                println!("  user      {} ({})", user.user_name, user.name);
            }
            println!("  auth      {}", report.auth_kind);
        }
        Some(failure) => {
            println!("{}", style.red(&style.bold(headline(failure, auth))));
            if let Some(check) = report.failed_check() {
                println!("  {}: {}", check.name.title(), check.detail);
                if let Some(advice) = &check.advice {
                    println!("  {advice}");
                }
            }
        }
    }
}
