//! The connection check sequence: success, and each failure kind.

use std::path::Path;

use nowpilot_servicenow::{
    AuthKind, CheckName, CheckStatus, ConnectionReport, FailureKind, Grant, ServiceNowConfig,
    check_connection,
};
use secrecy::SecretString;

use crate::fake::*;

/// How the fake instance behaves.
#[derive(Clone)]
struct Instance {
    token_ok: bool,
    user_visible: bool,
    incident_status: u16,
    incidents: bool,
    write_status: u16,
    journal_rows: bool,
    close_codes: bool,
    /// The token endpoint answers 503 (the instance is down or upgrading).
    token_unavailable: bool,
}

impl Default for Instance {
    fn default() -> Self {
        Instance {
            token_ok: true,
            user_visible: true,
            incident_status: 200,
            incidents: true,
            write_status: 200,
            journal_rows: true,
            close_codes: true,
            token_unavailable: false,
        }
    }
}

// base64("nowpilot.integration:pa55-word-value")
const GOOD_BASIC: &str = "Basic bm93cGlsb3QuaW50ZWdyYXRpb246cGE1NS13b3JkLXZhbHVl";

fn unauthenticated() -> Reply {
    Reply::envelope(
        401,
        "User Not Authenticated",
        Some("Required to provide Auth information"),
    )
}

fn acl_denied() -> Reply {
    Reply::envelope(
        403,
        "Operation Failed",
        Some("ACL Exception Update Failed due to security constraints"),
    )
}

async fn start(instance: Instance) -> Fake {
    Fake::start(move |r| {
        let i = &instance;
        if r.is_token_call() && i.token_unavailable {
            return Reply::raw(503, "<html><body>Service Unavailable</body></html>");
        }
        if r.is_token_call() {
            return if i.token_ok { Reply::token("AT", None, 1800) } else { Reply::oauth_denied() };
        }
        let authorized = r.header("authorization") == Some(GOOD_BASIC) || r.bearer() == Some("AT");
        if !authorized {
            return unauthenticated();
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/api/now/v2/table/sys_user") => {
                assert_eq!(r.param("sysparm_query"), Some("sys_id=javascript:gs.getUserID()"));
                if i.user_visible {
                    Reply::result(serde_json::json!([{"sys_id": "u1", "user_name": "nowpilot.integration", "name": "nowpilot integration"}]))
                } else {
                    Reply::result(serde_json::json!([]))
                }
            }
            ("GET", "/api/now/v2/table/incident") => match (i.incident_status, i.incidents) {
                (403, _) => Reply::envelope(403, "User Not Authorized", Some("Failed API level ACL Validation")),
                (_, true) => Reply::result(serde_json::json!([{"sys_id": SYS_ID, "number": "INC0010001"}])),
                (_, false) => Reply::result(serde_json::json!([])),
            },
            ("PATCH", path) if path == format!("/api/now/v2/table/incident/{SYS_ID}") => {
                assert_eq!(r.body, b"{}");
                assert_eq!(r.header("x-no-response-body"), Some("true"));
                if i.write_status == 200 { Reply::raw(200, "") } else { acl_denied() }
            }
            ("GET", path) if path == format!("/api/now/v2/table/incident/{SYS_ID}") => Reply::result(serde_json::json!({
                "work_notes": "2026-05-01 10:00:00 - Beth Anglin (Work notes)\nchecked\n\n",
                "comments": ""
            })),
            ("GET", "/api/now/v2/table/sys_journal_field") => {
                if i.journal_rows {
                    Reply::result(serde_json::json!([{"sys_id": "j1", "element": "work_notes"}]))
                } else {
                    Reply::result(serde_json::json!([]))
                }
            }
            ("GET", "/api/now/v2/table/sys_choice") => {
                if i.close_codes {
                    Reply::result(serde_json::json!([{"value": "Solution provided", "label": "Solution provided", "sequence": "1"}]))
                } else {
                    Reply::result(serde_json::json!([]))
                }
            }
            (m, p) => panic!("unexpected {m} {p}"),
        }
    })
    .await
}

fn basic_config(fake: &Fake) -> ServiceNowConfig {
    ServiceNowConfig::basic(
        fake.base.clone(),
        "nowpilot.integration",
        SecretString::from(PASSWORD),
    )
}

fn statuses(report: &ConnectionReport) -> Vec<(CheckName, CheckStatus)> {
    report.checks.iter().map(|c| (c.name, c.status)).collect()
}

async fn check(config: &ServiceNowConfig) -> ConnectionReport {
    check_connection(config, Path::new(".")).await
}

#[tokio::test]
async fn a_healthy_connection_passes_every_check() {
    let fake = start(Instance::default()).await;
    let report = check(&basic_config(&fake)).await;
    use CheckName::*;
    use CheckStatus::*;
    assert_eq!(
        statuses(&report),
        [
            (Endpoint, Passed),
            (Reachability, Passed),
            (Credentials, Passed),
            (IncidentRead, Passed),
            (IncidentWrite, Passed),
            (Journal, Passed),
            (CloseCodes, Passed)
        ]
    );
    assert!(report.connected());
    assert!(report.connected);
    assert_eq!(report.failure(), None);
    assert_eq!(report.summary(), "ServiceNow is connected");
    assert_eq!(report.auth_kind, "basic");
    let user = report.user.as_ref().unwrap();
    assert_eq!(
        (user.user_name.as_str(), user.name.as_str()),
        ("nowpilot.integration", "nowpilot integration")
    );
    assert!(
        report.checks[1].detail.contains("401"),
        "the unauthenticated probe got an HTTP answer"
    );

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["connected"], true);
    assert_eq!(json["checks"][4]["name"], "incident_write");
    assert_eq!(json["checks"][4]["status"], "passed");
    let text = format!("{json} {report:?}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[tokio::test]
async fn oauth_success_reports_the_grant() {
    let fake = start(Instance::default()).await;
    let config = ServiceNowConfig::oauth(
        fake.base.clone(),
        "client-id",
        SecretString::from(CLIENT_SECRET),
        Grant::ClientCredentials,
    );
    let report = check(&config).await;
    assert!(report.connected(), "{report:#?}");
    assert_eq!(report.auth_kind, "oauth (client_credentials)");
    assert!(!format!("{report:?}").contains(CLIENT_SECRET));
}

#[tokio::test]
async fn a_malformed_endpoint_stops_at_once() {
    let mut config =
        ServiceNowConfig::basic("http://acme.service-now.com", "u", SecretString::from("p"));
    let report = check(&config).await;
    assert_eq!(
        statuses(&report),
        [(CheckName::Endpoint, CheckStatus::Failed)]
    );
    assert_eq!(report.failure(), Some(FailureKind::EndpointFormat));
    assert!(
        report.checks[0]
            .advice
            .as_deref()
            .unwrap()
            .contains("https://acme.service-now.com")
    );

    config.instance_url = "https://acme.service-now.com/now/nav/ui/home".into();
    assert_eq!(
        check(&config).await.failure(),
        Some(FailureKind::EndpointFormat)
    );
}

#[tokio::test]
async fn a_trailing_slash_is_removed_and_noted() {
    let fake = start(Instance::default()).await;
    let mut config = basic_config(&fake);
    config.instance_url = format!("{}/", fake.base);
    let report = check(&config).await;
    assert!(report.connected());
    assert_eq!(report.instance, fake.base);
    assert!(
        report.checks[0]
            .detail
            .contains("trailing slash was removed"),
        "{}",
        report.checks[0].detail
    );
}

#[tokio::test]
async fn an_unreachable_instance() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let config = ServiceNowConfig::basic(format!("http://{address}"), "u", SecretString::from("p"));
    let report = check(&config).await;
    assert_eq!(report.failure(), Some(FailureKind::Unreachable));
    let failed = report.failed_check().unwrap();
    assert_eq!(failed.name, CheckName::Reachability);
    assert!(
        failed
            .detail
            .starts_with("Unable to connect to ServiceNow endpoint"),
        "{}",
        failed.detail
    );
    assert!(
        failed
            .advice
            .as_deref()
            .unwrap()
            .contains("no trailing slash")
    );
    assert!(report.summary().contains("Unable to connect"));
}

#[tokio::test]
async fn incomplete_configuration() {
    let fake = start(Instance::default()).await;
    let mut config = basic_config(&fake);
    config.password = None;
    config.password_file = Some("does-not-exist".into());
    let report = check(&config).await;
    assert_eq!(report.failure(), Some(FailureKind::Configuration));
    assert!(
        report
            .failed_check()
            .unwrap()
            .detail
            .contains("servicenow.password_file")
    );
}

#[tokio::test]
async fn wrong_basic_credentials() {
    let fake = start(Instance::default()).await;
    let config = ServiceNowConfig::basic(
        fake.base.clone(),
        "nowpilot.integration",
        SecretString::from("wrong-password"),
    );
    let report = check(&config).await;
    assert_eq!(report.failure(), Some(FailureKind::Credentials));
    let failed = report.failed_check().unwrap();
    assert_eq!(failed.name, CheckName::Credentials);
    assert!(
        failed.detail.starts_with("Invalid username or password"),
        "{}",
        failed.detail
    );
    assert!(
        failed
            .advice
            .as_deref()
            .unwrap()
            .contains("Web service access only")
    );
    assert!(!format!("{report:?}").contains("wrong-password"));
}

#[tokio::test]
async fn wrong_oauth_credentials() {
    let fake = start(Instance {
        token_ok: false,
        ..Instance::default()
    })
    .await;
    let config = ServiceNowConfig::oauth(
        fake.base.clone(),
        "client-id",
        SecretString::from("bad-secret"),
        Grant::ClientCredentials,
    );
    assert_eq!(config.auth, AuthKind::OAuth);
    let report = check(&config).await;
    assert_eq!(report.failure(), Some(FailureKind::Credentials));
    let failed = report.failed_check().unwrap();
    assert!(
        failed.detail.starts_with("Invalid OAuth credentials"),
        "{}",
        failed.detail
    );
    assert!(
        failed
            .advice
            .as_deref()
            .unwrap()
            .contains("glide.oauth.inbound.client.credential.grant_type.enabled=true")
    );
    assert!(!format!("{report:?}").contains("bad-secret"));
}

#[tokio::test]
async fn a_token_endpoint_outage_is_not_blamed_on_permissions() {
    let fake = start(Instance {
        token_unavailable: true,
        ..Instance::default()
    })
    .await;
    let config = ServiceNowConfig::oauth(
        fake.base.clone(),
        "client-id",
        SecretString::from("good-secret"),
        Grant::ClientCredentials,
    );
    let report = check(&config).await;
    let failed = report.failed_check().unwrap();
    assert_eq!(failed.name, CheckName::Credentials);
    let advice = failed.advice.as_deref().unwrap();
    assert!(!advice.contains("role"), "{advice}");
    assert!(advice.contains("server error"), "{advice}");
    assert!(failed.detail.contains("503"), "{}", failed.detail);
}

#[tokio::test]
async fn an_unknown_user_is_a_warning_not_a_failure() {
    let fake = start(Instance {
        user_visible: false,
        ..Instance::default()
    })
    .await;
    let report = check(&basic_config(&fake)).await;
    assert!(report.connected());
    assert_eq!(report.checks[2].status, CheckStatus::Warning);
    assert_eq!(report.user, None);
}

#[tokio::test]
async fn incident_read_denied() {
    let fake = start(Instance {
        incident_status: 403,
        ..Instance::default()
    })
    .await;
    let report = check(&basic_config(&fake)).await;
    assert_eq!(report.failure(), Some(FailureKind::Permission));
    assert_eq!(report.failed_check().unwrap().name, CheckName::IncidentRead);
    assert_eq!(report.checks.len(), 4, "stops at the first failure");
}

#[tokio::test]
async fn incident_write_denied() {
    let fake = start(Instance {
        write_status: 403,
        ..Instance::default()
    })
    .await;
    let report = check(&basic_config(&fake)).await;
    assert_eq!(report.failure(), Some(FailureKind::Permission));
    let failed = report.failed_check().unwrap();
    assert_eq!(failed.name, CheckName::IncidentWrite);
    assert!(failed.detail.contains("ACL Exception"), "{}", failed.detail);
}

#[tokio::test]
async fn no_incident_skips_the_write_check() {
    let fake = start(Instance {
        incidents: false,
        journal_rows: false,
        ..Instance::default()
    })
    .await;
    let report = check(&basic_config(&fake)).await;
    assert!(report.connected());
    assert_eq!(report.checks[4].status, CheckStatus::Skipped);
    assert_eq!(report.checks[5].status, CheckStatus::Warning);
    assert!(!fake.requests().iter().any(|r| r.method == "PATCH"));
}

#[tokio::test]
async fn journal_readable_only_through_display_values() {
    let fake = start(Instance {
        journal_rows: false,
        ..Instance::default()
    })
    .await;
    let report = check(&basic_config(&fake)).await;
    assert!(report.connected());
    let journal = &report.checks[5];
    assert_eq!(
        (journal.name, journal.status),
        (CheckName::Journal, CheckStatus::Warning)
    );
    assert!(
        journal
            .detail
            .contains("readable only through display values"),
        "{}",
        journal.detail
    );
    assert!(journal.detail.contains("sys_journal_field read ACL"));
}

#[tokio::test]
async fn no_close_codes_is_a_warning() {
    let fake = start(Instance {
        close_codes: false,
        ..Instance::default()
    })
    .await;
    let report = check(&basic_config(&fake)).await;
    assert!(report.connected());
    assert_eq!(report.checks[6].status, CheckStatus::Warning);
}
