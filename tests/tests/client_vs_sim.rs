//! The ServiceNow client against the simulator over HTTP: every grant, token refresh, re-auth
//! on 401, 429 pauses, data policy and ACL errors, paging, and journal read-back.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, time::Duration};

use nowpilot_model::Record;
use nowpilot_servicenow::{
    Client, ClientOptions, DisplayValue, Error, Grant, ListRequest, ReadOptions, ServiceNowConfig,
};
use nowpilot_snowsim::{OAuthClient, SimConfig, SimUser};
use nowpilot_tests::SimHandle;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

const USER: &str = "integration";
const PASSWORD: &str = "pw-123";
const CLIENT: &str = "client-1";
const SECRET: &str = "secret-1";

fn config() -> SimConfig {
    let mut c = SimConfig {
        seed_demo: true,
        users: vec![
            SimUser::new(USER, PASSWORD),
            SimUser::new("nobody", "pw"),
            SimUser::new("admin", "admin"),
        ],
        oauth_clients: vec![OAuthClient::new(CLIENT, SECRET)],
        ..SimConfig::default()
    };
    c.user_roles.insert(USER.into(), vec!["itil".into()]);
    c.user_roles.insert("nobody".into(), vec![]);
    c
}

fn client(config: ServiceNowConfig) -> Client {
    Client::new(
        config.resolve(Path::new(".")).unwrap(),
        ClientOptions::default(),
    )
    .unwrap()
}

fn basic(sim: &SimHandle, user: &str, password: &str) -> Client {
    client(ServiceNowConfig::basic(
        &sim.url,
        user,
        SecretString::from(password.to_owned()),
    ))
}

fn oauth(sim: &SimHandle, grant: Grant) -> ServiceNowConfig {
    ServiceNowConfig::oauth(
        &sim.url,
        CLIENT,
        SecretString::from(SECRET.to_owned()),
        grant,
    )
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

async fn first_incident(c: &Client) -> Record {
    let page = c
        .list("incident", &ListRequest::new().limit(1))
        .await
        .unwrap();
    page.records.into_iter().next().unwrap()
}

#[tokio::test]
async fn every_grant_reads_incidents() {
    let sim = SimHandle::start(config()).await;

    let cc = client(oauth(&sim, Grant::ClientCredentials));
    first_incident(&cc).await;

    let mut pw = oauth(&sim, Grant::Password);
    pw.username = Some(USER.into());
    pw.password = Some(SecretString::from(PASSWORD.to_owned()));
    let pw_client = client(pw);
    first_incident(&pw_client).await;
    let refresh = pw_client
        .current_refresh_token()
        .expect("the password grant returns a refresh token");

    let mut rt = oauth(&sim, Grant::RefreshToken);
    rt.refresh_token = Some(refresh);
    first_incident(&client(rt)).await;

    first_incident(&basic(&sim, USER, PASSWORD)).await;

    // The token endpoint saw each grant, form-encoded, and the Table API saw bearer tokens.
    let log = sim.sim.request_log();
    let tokens = log.iter().filter(|r| r.path == "/oauth_token.do").count();
    assert!(tokens >= 3, "{tokens} token requests");
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    let mut c = config();
    c.token_ttl = Duration::from_secs(4);
    let sim = SimHandle::start(c).await;
    let cc = client(oauth(&sim, Grant::ClientCredentials));
    first_incident(&cc).await;
    // Keep calling for longer than one token lifetime.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        first_incident(&cc).await;
    }
    let log = sim.sim.request_log();
    assert!(
        log.iter().all(|r| r.status != 401),
        "a token was refreshed only after it had expired: {:?}",
        log.iter().filter(|r| r.status == 401).collect::<Vec<_>>()
    );
    let tokens = log.iter().filter(|r| r.path == "/oauth_token.do").count();
    assert!(
        tokens >= 2,
        "the token was renewed ({tokens} token requests)"
    );
}

#[tokio::test]
async fn a_401_triggers_one_reauthentication_and_one_retry() {
    let sim = SimHandle::start(config()).await;
    let cc = client(oauth(&sim, Grant::ClientCredentials));
    first_incident(&cc).await;
    sim.sim.revoke_access_tokens();
    sim.sim.clear_request_log();
    first_incident(&cc).await;
    let log = sim.sim.request_log();
    let statuses: Vec<_> = log.iter().map(|r| (r.path.as_str(), r.status)).collect();
    assert_eq!(
        statuses.iter().filter(|(_, s)| *s == 401).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|(p, _)| *p == "/oauth_token.do")
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.last().map(|(_, s)| *s), Some(200), "{statuses:?}");

    // Wrong Basic credentials: a 401 surfaces at once, without retries.
    sim.sim.clear_request_log();
    let bad = basic(&sim, USER, "wrong");
    let err = bad
        .list("incident", &ListRequest::new().limit(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert_eq!(sim.sim.request_log().len(), 1);
}

#[tokio::test]
async fn a_429_pauses_for_retry_after_then_succeeds() {
    let mut c = config();
    c.rate_limit = Some(3);
    c.rate_limit_window = Duration::from_secs(2);
    let sim = SimHandle::start(c).await;
    let b = basic(&sim, USER, PASSWORD);
    for _ in 0..7 {
        first_incident(&b).await;
    }
    let log = sim.sim.request_log();
    let limited: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "the rule fired");
    // After each 429, the next request came only once the window had reset: nothing was sent
    // into a closed window (a lower bound, so a slow machine cannot break it).
    for r in &limited {
        let next = log.iter().find(|n| n.start_us > r.end_us).unwrap();
        assert_eq!(next.status, 200, "the retry after the pause succeeded");
    }
    assert_eq!(log.iter().filter(|r| r.status == 200).count(), 7);
}

#[tokio::test]
async fn data_policy_and_acl_errors_carry_servicenow_detail() {
    let sim = SimHandle::start(config()).await;
    let b = basic(&sim, USER, PASSWORD);
    let inc = first_incident(&b).await;
    let sys_id = inc.sys_id().unwrap().to_owned();
    let before = sim.sim.get("incident", &sys_id).unwrap();

    let err = b
        .patch("incident", &sys_id, &fields(json!({"state": "6"})))
        .await
        .unwrap_err();
    assert!(err.is_data_policy(), "{err}");
    assert!(err.to_string().contains("Resolution code"), "{err}");
    assert_eq!(
        sim.sim.get("incident", &sys_id).unwrap(),
        before,
        "nothing written"
    );

    // With the fields the policy wants, the resolve goes through.
    let done = b
        .patch(
            "incident",
            &sys_id,
            &fields(
                json!({"state": "6", "close_code": "Solution provided", "close_notes": "fixed"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(done.value("state"), Some("6"));

    // 404: a missing record and a record hidden by an ACL read the same, and the message says so.
    let err = b
        .get(
            "incident",
            "00000000000000000000000000000000",
            &ReadOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("ACL"), "{err}");

    // A user without a role: 403 from the API-level ACL.
    let nobody = basic(&sim, "nobody", "pw");
    let err = nobody
        .list("incident", &ListRequest::new().limit(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err}");
    assert!(err.is_acl(), "{err}");
}

#[tokio::test]
async fn paging_over_2600_rows() {
    let sim = SimHandle::start(config()).await;
    for i in 0..2600 {
        let mut r = Record::new();
        r.set("short_description", format!("bulk {i}"));
        r.set("category", "bulk");
        sim.sim.insert("incident", r).unwrap();
    }
    let b = basic(&sim, USER, PASSWORD);
    let req = ListRequest::new()
        .query("category=bulk")
        .fields(["sys_id", "number"])
        .limit(1000);
    let page = b.list("incident", &req).await.unwrap();
    assert_eq!(page.total, Some(2600));
    assert_eq!(page.records.len(), 1000);
    let all = b.list_all("incident", &req, 10_000).await.unwrap();
    assert_eq!(all.len(), 2600);
    let unique: std::collections::BTreeSet<_> =
        all.iter().map(|r| r.sys_id().unwrap().to_owned()).collect();
    assert_eq!(unique.len(), 2600);
}

#[tokio::test]
async fn journal_entries_read_back() {
    let sim = SimHandle::start(config()).await;
    let admin = basic(&sim, "admin", "admin");
    let itil = basic(&sim, USER, PASSWORD);
    let inc = first_incident(&admin).await;
    let sys_id = inc.sys_id().unwrap().to_owned();
    let written = itil
        .patch(
            "incident",
            &sys_id,
            &fields(json!({"work_notes": "checked the dashboards"})),
        )
        .await
        .unwrap();
    // A journal field reads back empty, as on a real instance.
    assert_eq!(written.value("work_notes"), Some(""));

    // Structured read (admin passes the sys_journal_field ACL).
    let entries = admin.journal("incident", &sys_id).await.unwrap();
    let last = entries.last().unwrap();
    assert_eq!(last.value, "checked the dashboards");
    assert_eq!(last.created_by, USER);

    // The itil user gets [] from sys_journal_field and falls back to display values.
    let entries = itil.journal("incident", &sys_id).await.unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.value.contains("checked the dashboards")),
        "{entries:?}"
    );

    let with_display = admin
        .get(
            "incident",
            &sys_id,
            &ReadOptions::default().display_value(DisplayValue::Display),
        )
        .await
        .unwrap();
    assert!(
        with_display
            .value("work_notes")
            .unwrap()
            .contains("checked the dashboards")
    );
}

#[tokio::test]
async fn the_journal_of_a_record_read_with_display_values_needs_no_second_read() {
    let sim = SimHandle::start(config()).await;
    let admin = basic(&sim, "admin", "admin");
    let itil = basic(&sim, USER, PASSWORD);
    let inc = first_incident(&admin).await;
    let sys_id = inc.sys_id().unwrap().to_owned();
    itil.patch(
        "incident",
        &sys_id,
        &fields(json!({"work_notes": "first note"})),
    )
    .await
    .unwrap();
    let record = itil
        .get(
            "incident",
            &sys_id,
            &ReadOptions::default().display_value(DisplayValue::Both),
        )
        .await
        .unwrap();
    sim.sim.clear_request_log();
    // The itil user cannot read sys_journal_field: the entries come from the record at hand.
    let entries = itil.journal_of("incident", &record).await.unwrap();
    assert!(
        entries.iter().any(|e| e.value == "first note"),
        "{entries:?}"
    );
    let log = sim.sim.request_log();
    assert_eq!(log.len(), 1, "only the sys_journal_field query: {log:?}");
    assert_eq!(log[0].table.as_deref(), Some("sys_journal_field"));
}
