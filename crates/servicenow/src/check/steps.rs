//! The checks themselves, in the order they run.

use std::path::Path;

use serde_json::Map;

use super::{CheckName, CheckResult, CheckStatus, ConnectionReport, FailureKind, UserIdentity};
use crate::client::{Client, ClientOptions, DisplayValue, ListRequest, ReadOptions};
use crate::config::{AuthKind, ServiceNowConfig};
use crate::error::Error;
use crate::instance::InstanceUrl;
use crate::journal::parse_journal_blob;
use crate::query::EncodedQuery;

const ADVICE_ENDPOINT: &str =
    "set servicenow.instance_url to the instance root, e.g. https://acme.service-now.com";
const ADVICE_UNREACHABLE: &str = "check the URL has no trailing slash and the instance is reachable from this host (DNS, proxy, firewall, TLS inspection)";
const ADVICE_BASIC: &str = "use a dedicated integration user marked Web service access only; interactive users may be refused Basic auth";
const ADVICE_OAUTH: &str = "check client id/secret; for client_credentials set glide.oauth.inbound.client.credential.grant_type.enabled=true and the OAuth Application User";
const ADVICE_CONFIG: &str = "fix the [servicenow] section of the configuration";
const ADVICE_API_ROLE: &str =
    "give the integration user a role that may use the REST API and read incidents (itil)";
const ADVICE_INCIDENT_READ: &str =
    "give the integration user the itil role, or a role that passes the incident read ACLs";
const ADVICE_INCIDENT_WRITE: &str = "give the integration user the itil role (or sn_incident_write), or a role that passes the incident write ACLs";
const ADVICE_JOURNAL: &str =
    "add the integration user's role to the sys_journal_field read ACL for structured history";
const ADVICE_CHOICES: &str = "check that the integration user can read sys_choice and that incident close_code choices exist";
const ADVICE_SERVER: &str = "the instance answered with a server error (down, upgrading, or overloaded): check its status page and try again; permissions are not the problem";
const ADVICE_RATE_LIMIT: &str = "the instance rate-limits this user (System Web Services > REST > Rate Limit Rules); wait or raise the limit";

pub(super) struct Run {
    pub(super) checks: Vec<CheckResult>,
}

impl Run {
    fn pass(&mut self, name: CheckName, detail: impl Into<String>) {
        self.push(name, CheckStatus::Passed, detail.into(), None, None);
    }

    fn warn(&mut self, name: CheckName, detail: impl Into<String>, advice: &str) {
        self.push(
            name,
            CheckStatus::Warning,
            detail.into(),
            Some(advice),
            None,
        );
    }

    fn skip(&mut self, name: CheckName, detail: impl Into<String>, advice: &str) {
        self.push(
            name,
            CheckStatus::Skipped,
            detail.into(),
            Some(advice),
            None,
        );
    }

    fn fail(
        &mut self,
        name: CheckName,
        kind: FailureKind,
        detail: impl Into<String>,
        advice: &str,
    ) {
        self.push(
            name,
            CheckStatus::Failed,
            detail.into(),
            Some(advice),
            Some(kind),
        );
    }

    /// Fails with the kind and advice that fit the error, `own` giving the advice for a
    /// permission problem specific to this check.
    fn fail_with(&mut self, name: CheckName, error: &Error, auth: AuthKind, own: &str) {
        let (kind, advice) = match error {
            Error::Timeout { .. } | Error::Connect { .. } | Error::Transport { .. } => {
                (FailureKind::Unreachable, ADVICE_UNREACHABLE)
            }
            Error::Unauthorized { .. } | Error::OAuth { .. } => {
                (FailureKind::Credentials, credentials_advice(auth))
            }
            Error::Forbidden { .. } | Error::NotFound { .. } => (FailureKind::Permission, own),
            Error::RateLimited { .. } => (FailureKind::RateLimited, ADVICE_RATE_LIMIT),
            Error::Config(_) => (FailureKind::Configuration, ADVICE_CONFIG),
            Error::Server { .. } => (FailureKind::Unexpected, ADVICE_SERVER),
            _ => (FailureKind::Unexpected, own),
        };
        self.fail(name, kind, error.to_string(), advice);
    }

    fn push(
        &mut self,
        name: CheckName,
        status: CheckStatus,
        detail: String,
        advice: Option<&str>,
        failure: Option<FailureKind>,
    ) {
        self.checks.push(CheckResult {
            name,
            status,
            detail,
            advice: advice.map(str::to_owned),
            failure,
        });
    }

    fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == CheckStatus::Failed)
    }
}

fn credentials_advice(auth: AuthKind) -> &'static str {
    match auth {
        AuthKind::Basic => ADVICE_BASIC,
        AuthKind::OAuth => ADVICE_OAUTH,
    }
}

pub(super) async fn run_checks(
    config: &ServiceNowConfig,
    base_dir: &Path,
    options: ClientOptions,
    run: &mut Run,
    report: &mut ConnectionReport,
) {
    // (1) Endpoint format.
    let instance = match InstanceUrl::parse(&config.instance_url) {
        Ok(instance) => instance,
        Err(e) => {
            return run.fail(
                CheckName::Endpoint,
                FailureKind::EndpointFormat,
                e.to_string(),
                ADVICE_ENDPOINT,
            );
        }
    };
    report.instance = instance.to_string();
    let notes: Vec<String> = instance
        .adjustments()
        .iter()
        .map(ToString::to_string)
        .collect();
    if notes.is_empty() {
        run.pass(CheckName::Endpoint, instance.to_string());
    } else {
        run.pass(
            CheckName::Endpoint,
            format!("{instance} ({})", notes.join("; ")),
        );
    }

    // (2) Reachability: any HTTP answer will do.
    reachability(&instance, config, &options, run).await;
    if run.failed() {
        return;
    }

    // (3) Credentials.
    let resolved = match config.resolve(base_dir) {
        Ok(resolved) => resolved,
        Err(e) => {
            return run.fail(
                CheckName::Credentials,
                FailureKind::Configuration,
                e.to_string(),
                ADVICE_CONFIG,
            );
        }
    };
    let client = match Client::new(resolved, options) {
        Ok(client) => client,
        Err(e) => {
            return run.fail(
                CheckName::Credentials,
                FailureKind::Configuration,
                e.to_string(),
                ADVICE_CONFIG,
            );
        }
    };
    if !credentials(&client, config.auth, run, report).await {
        return;
    }

    // (4) Incident read.
    let request = ListRequest::new()
        .fields(["sys_id", "number"])
        .limit(1)
        .no_count(true);
    let incident = match client.list("incident", &request).await {
        Ok(page) => page.records.into_iter().next(),
        Err(e) => {
            return run.fail_with(
                CheckName::IncidentRead,
                &e,
                config.auth,
                ADVICE_INCIDENT_READ,
            );
        }
    };
    let incident = incident.and_then(|r| {
        let sys_id = r.sys_id().filter(|s| !s.is_empty())?.to_owned();
        Some((sys_id, r.value_or_empty("number").to_owned()))
    });
    match &incident {
        Some((_, number)) => run.pass(CheckName::IncidentRead, format!("incidents are readable (e.g. {number})")),
        None => run.pass(
            CheckName::IncidentRead,
            "the incident table is readable but no incident is visible (the table is empty or ACLs hide every row)",
        ),
    }

    // (5) Incident write, without changing anything: an empty PATCH.
    match &incident {
        Some((sys_id, number)) => match client.patch_quiet("incident", sys_id, &Map::new()).await {
            Ok(()) => run.pass(CheckName::IncidentWrite, format!("incidents are writable (an empty update of {number} was accepted; nothing changed)")),
            Err(e) => return run.fail_with(CheckName::IncidentWrite, &e, config.auth, ADVICE_INCIDENT_WRITE),
        },
        None => run.skip(
            CheckName::IncidentWrite,
            "no incident to test against: write permission was not verified",
            "create a test incident visible to the integration user and run the check again",
        ),
    }

    // (6) Journal.
    journal(
        &client,
        incident.as_ref().map(|(id, _)| id.as_str()),
        config.auth,
        run,
    )
    .await;
    if run.failed() {
        return;
    }

    // (7) Close codes.
    match client.close_codes().await {
        Ok(codes) if codes.is_empty() => run.warn(
            CheckName::CloseCodes,
            "no close-code choices are readable: resolve actions cannot validate their codes",
            ADVICE_CHOICES,
        ),
        Ok(codes) => {
            let shown: Vec<&str> = codes.iter().take(5).map(|c| c.value.as_str()).collect();
            let more = if codes.len() > shown.len() {
                ", …"
            } else {
                ""
            };
            run.pass(
                CheckName::CloseCodes,
                format!("{} close codes: {}{more}", codes.len(), shown.join(", ")),
            );
        }
        Err(e) => run.fail_with(CheckName::CloseCodes, &e, config.auth, ADVICE_CHOICES),
    }
}

async fn reachability(
    instance: &InstanceUrl,
    config: &ServiceNowConfig,
    options: &ClientOptions,
    run: &mut Run,
) {
    let http = match reqwest::Client::builder()
        .user_agent(options.user_agent.clone())
        .connect_timeout(options.connect_timeout.min(config.timeout))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            return run.fail(
                CheckName::Reachability,
                FailureKind::Configuration,
                format!("cannot build the HTTP client: {e}"),
                ADVICE_CONFIG,
            );
        }
    };
    let mut url = instance.endpoint(["api", "now", "v2", "table", "incident"]);
    url.query_pairs_mut().append_pair("sysparm_limit", "1");
    let answer = http
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .timeout(config.timeout)
        .send()
        .await;
    match answer {
        Ok(response) => run.pass(
            CheckName::Reachability,
            format!(
                "the instance answers (HTTP {} without credentials)",
                response.status().as_u16()
            ),
        ),
        Err(e) => {
            let error = crate::transport::map_reqwest(
                &crate::error::RequestContext::new("GET", "incident"),
                &e,
            );
            let reason = match &error {
                Error::Timeout { .. } => "no answer within the timeout".to_owned(),
                Error::Connect { reason, .. } | Error::Transport { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            run.fail(
                CheckName::Reachability,
                FailureKind::Unreachable,
                format!("Unable to connect to ServiceNow endpoint {instance}: {reason}"),
                ADVICE_UNREACHABLE,
            );
        }
    }
}

/// Returns whether the later checks may run.
async fn credentials(
    client: &Client,
    auth: AuthKind,
    run: &mut Run,
    report: &mut ConnectionReport,
) -> bool {
    let invalid = match auth {
        AuthKind::Basic => "Invalid username or password",
        AuthKind::OAuth => "Invalid OAuth credentials",
    };
    let credentials_failure = |run: &mut Run, e: &Error| {
        run.fail(
            CheckName::Credentials,
            FailureKind::Credentials,
            format!("{invalid}: {e}"),
            credentials_advice(auth),
        );
    };
    if let Err(e) = client.authenticate().await {
        match e {
            Error::OAuth { .. } => credentials_failure(run, &e),
            other => run.fail_with(CheckName::Credentials, &other, auth, ADVICE_API_ROLE),
        }
        return false;
    }
    let who = EncodedQuery::new().raw("sys_id=javascript:gs.getUserID()");
    let request = match ListRequest::from_query(&who) {
        Ok(r) => r.fields(["sys_id", "user_name", "name"]).limit(1),
        Err(e) => {
            run.fail_with(
                CheckName::Credentials,
                &Error::Query(e),
                auth,
                ADVICE_API_ROLE,
            );
            return false;
        }
    };
    match client.list("sys_user", &request).await {
        Ok(page) => match page.records.first() {
            Some(user) => {
                let identity = UserIdentity {
                    sys_id: user.value_or_empty("sys_id").to_owned(),
                    user_name: user.value_or_empty("user_name").to_owned(),
                    name: user.value_or_empty("name").to_owned(),
                };
                run.pass(
                    CheckName::Credentials,
                    format!(
                        "authenticated ({}) as {} ({})",
                        client.auth_description(),
                        identity.user_name,
                        identity.name
                    ),
                );
                report.user = Some(identity);
                true
            }
            None => {
                run.warn(
                    CheckName::Credentials,
                    format!("authenticated ({}), but the user's own sys_user record is not readable, so the user is unknown", client.auth_description()),
                    "let the integration user read its own sys_user record to see who nowpilot acts as",
                );
                true
            }
        },
        Err(e @ Error::Unauthorized { .. }) => {
            credentials_failure(run, &e);
            false
        }
        Err(e @ Error::Forbidden { .. }) => {
            run.fail(
                CheckName::Credentials,
                FailureKind::Permission,
                format!("the credentials are valid, but the user may not use the Table API: {e}"),
                ADVICE_API_ROLE,
            );
            false
        }
        Err(e) => {
            run.fail_with(CheckName::Credentials, &e, auth, ADVICE_API_ROLE);
            false
        }
    }
}

async fn journal(client: &Client, incident: Option<&str>, auth: AuthKind, run: &mut Run) {
    let request = ListRequest::new()
        .fields(["sys_id", "element"])
        .limit(1)
        .no_count(true);
    let structured = client.list("sys_journal_field", &request).await;
    let structured_error = match structured {
        Ok(page) if !page.records.is_empty() => {
            return run.pass(
                CheckName::Journal,
                "work notes and comments are readable from sys_journal_field",
            );
        }
        Ok(_) => None,
        Err(e @ (Error::Forbidden { .. } | Error::NotFound { .. })) => Some(e),
        Err(e) => return run.fail_with(CheckName::Journal, &e, auth, ADVICE_JOURNAL),
    };
    let Some(sys_id) = incident else {
        return match structured_error {
            Some(e) => run.fail_with(CheckName::Journal, &e, auth, ADVICE_JOURNAL),
            None => run.warn(
                CheckName::Journal,
                "sys_journal_field returned no rows and there is no incident to compare with: cannot tell whether history is readable",
                ADVICE_JOURNAL,
            ),
        };
    };
    let options = ReadOptions::default()
        .fields(["work_notes", "comments"])
        .display_value(DisplayValue::Display);
    match client.get("incident", sys_id, &options).await {
        Ok(record) => {
            let entries: usize = ["work_notes", "comments"]
                .iter()
                .map(|f| parse_journal_blob(record.display(f).unwrap_or_default()).len())
                .sum();
            let seen = match entries {
                0 => String::new(),
                1 => " (1 entry on the sample incident)".to_owned(),
                n => format!(" ({n} entries on the sample incident)"),
            };
            run.warn(
                CheckName::Journal,
                format!("readable only through display values{seen}: {ADVICE_JOURNAL}"),
                ADVICE_JOURNAL,
            );
        }
        Err(e) => run.fail_with(CheckName::Journal, &e, auth, ADVICE_JOURNAL),
    }
}
