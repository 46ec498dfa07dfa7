//! Basic auth, the ACL model per role, every OAuth grant, token expiry and the HTML
//! authorization-code flow.

use std::time::Duration;

use nowpilot_snowsim::{OAuthClient, SimConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{envelope, json, start, with_users};

fn unauthenticated() -> Value {
    envelope(
        "User Not Authenticated",
        "Required to provide Auth information",
    )
}

fn opaque_denial() -> Value {
    json!({"error": "server_error", "error_description": "access_denied"})
}

#[tokio::test]
async fn basic_auth_is_required_and_checked() {
    let sim = start(SimConfig::default()).await;
    let url = sim.url("/api/now/table/incident");
    let response = sim.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(json(response).await, unauthenticated());
    for (user, password) in [("admin", "wrong"), ("nobody", "admin"), ("", "")] {
        let response = sim
            .http
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{user}");
        assert_eq!(json(response).await, unauthenticated());
    }
    let response = sim
        .http
        .get(&url)
        .header("Authorization", "Basic %%%")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = sim
        .http
        .get(&url)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(json(response).await, unauthenticated());
    let response = sim
        .admin(Method::GET, "/api/now/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A deactivated user can no longer sign in.
    let admin_id = sim.sim.query("sys_user", "user_name=admin").unwrap()[0]
        .value("sys_id")
        .unwrap()
        .to_owned();
    sim.admin(
        Method::PATCH,
        &format!("/api/now/table/sys_user/{admin_id}"),
    )
    .json(&json!({"active": "false"}))
    .send()
    .await
    .unwrap();
    let response = sim
        .admin(Method::GET, "/api/now/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn acl_per_role() {
    let sim = start(with_users(&[
        ("admin", "admin", "admin"),
        ("svc", "pw", "itil"),
        ("guest", "pw", "snc_external"),
    ]))
    .await;
    let incident = sim
        .create(
            "incident",
            json!({"short_description": "x", "work_notes": "secret-ish"}),
        )
        .await;
    let incident_id = incident["sys_id"].as_str().unwrap().to_owned();
    let change = sim
        .create("change_request", json!({"short_description": "c"}))
        .await;
    let change_id = change["sys_id"].as_str().unwrap().to_owned();
    let journal_id = sim.sim.journal("incident", &incident_id)[0].sys_id.clone();

    let svc = |method: Method, path: &str| sim.as_user("svc", "pw", method, path);
    let guest = |method: Method, path: &str| sim.as_user("guest", "pw", method, path);

    // No role: every table call fails the API-level ACL.
    for path in ["/api/now/table/incident", "/api/now/table/sys_user"] {
        let response = guest(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 403);
        assert_eq!(
            json(response).await,
            envelope("User Not Authorized", "Failed API level ACL Validation")
        );
    }

    // itil: reads the reference tables, reads and writes incidents.
    for table in [
        "incident",
        "change_request",
        "cmdb_ci",
        "task_ci",
        "sys_choice",
        "sys_user",
        "sys_user_group",
        "sys_user_grmember",
        "dl_u_priority",
    ] {
        let response = svc(Method::GET, &format!("/api/now/table/{table}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{table}");
    }
    let response = svc(Method::POST, "/api/now/table/incident")
        .json(&json!({"short_description": "by svc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(json(response).await["result"]["sys_created_by"], "svc");
    let response = svc(
        Method::PATCH,
        &format!("/api/now/table/incident/{incident_id}"),
    )
    .json(&json!({"state": "2", "work_notes": "on it"}))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);

    // ...but the journal table hides its rows: 200 with [] (the real pitfall), 404 by id.
    let path = format!("/api/now/table/sys_journal_field?sysparm_query=element_id={incident_id}");
    let as_svc = svc(Method::GET, &path).send().await.unwrap();
    assert_eq!(as_svc.status(), 200);
    assert_eq!(json(as_svc).await, json!({"result": []}));
    let as_admin = sim.get_json(&path).await;
    assert_eq!(as_admin["result"].as_array().unwrap().len(), 2);
    let response = svc(
        Method::GET,
        &format!("/api/now/table/sys_journal_field/{journal_id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        json(response).await,
        envelope(
            "No Record found",
            "Record doesn't exist or ACL restricts the record retrieval"
        )
    );
    // The journal blob on the incident is readable, as on a real instance.
    let blob = json(
        svc(
            Method::GET,
            &format!("/api/now/table/incident/{incident_id}?sysparm_display_value=true&sysparm_fields=work_notes"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(
        blob["result"]["work_notes"]
            .as_str()
            .unwrap()
            .contains("on it")
    );

    // Writes outside incident are refused with the ACL wording.
    let refused = |op: &str| {
        envelope(
            "Operation Failed",
            &format!("ACL Exception {op} Failed due to security constraints"),
        )
    };
    let response = svc(Method::POST, "/api/now/table/change_request")
        .json(&json!({"short_description": "no"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(json(response).await, refused("Insert"));
    let response = svc(
        Method::PATCH,
        &format!("/api/now/table/change_request/{change_id}"),
    )
    .json(&json!({"short_description": "no"}))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(json(response).await, refused("Update"));
    let response = svc(
        Method::DELETE,
        &format!("/api/now/table/incident/{incident_id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(json(response).await, refused("Delete"));
    assert!(sim.sim.get("incident", &incident_id).is_some());
    assert_eq!(
        sim.sim
            .get("change_request", &change_id)
            .unwrap()
            .value("short_description"),
        Some("c")
    );
}

fn oauth_config() -> SimConfig {
    let mut config = with_users(&[("admin", "admin", "admin"), ("svc", "pw", "itil")]);
    let mut client = OAuthClient::new("client-1", "s3cret");
    client.app_user = Some("svc".into());
    config.oauth_clients = vec![client, OAuthClient::new("client-2", "other")];
    config
}

async fn token(sim: &crate::common::Instance, form: &[(&str, &str)]) -> reqwest::Response {
    sim.http
        .post(sim.url("/oauth_token.do"))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn whoami(sim: &crate::common::Instance, access_token: &str) -> reqwest::Response {
    sim.http
        .get(sim.url(
            "/api/now/table/sys_user?sysparm_query=user_name=javascript:gs.getUserName()&sysparm_fields=user_name",
        ))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn oauth_password_and_refresh_grants() {
    let sim = start(oauth_config()).await;
    // Only form bodies are accepted.
    let response = sim
        .http
        .post(sim.url("/oauth_token.do"))
        .json(&json!({"grant_type": "password", "client_id": "client-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(json(response).await["error"], "invalid_request");

    // Every failure is the same opaque 401.
    for form in [
        vec![
            ("grant_type", "password"),
            ("client_id", "client-1"),
            ("client_secret", "wrong"),
            ("username", "admin"),
            ("password", "admin"),
        ],
        vec![
            ("grant_type", "password"),
            ("client_id", "nope"),
            ("client_secret", "s3cret"),
            ("username", "admin"),
            ("password", "admin"),
        ],
        vec![
            ("grant_type", "password"),
            ("client_id", "client-1"),
            ("client_secret", "s3cret"),
            ("username", "admin"),
            ("password", "bad"),
        ],
        vec![
            ("grant_type", "implicit"),
            ("client_id", "client-1"),
            ("client_secret", "s3cret"),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("client_id", "client-1"),
            ("client_secret", "s3cret"),
            ("refresh_token", "forged"),
        ],
        vec![("client_id", "client-1"), ("client_secret", "s3cret")],
    ] {
        let response = token(&sim, &form).await;
        assert_eq!(response.status(), 401, "{form:?}");
        assert_eq!(json(response).await, opaque_denial());
    }

    let response = token(
        &sim,
        &[
            ("grant_type", "password"),
            ("client_id", "client-1"),
            ("client_secret", "s3cret"),
            ("username", "admin"),
            ("password", "admin"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let granted = json(response).await;
    assert_eq!(granted["scope"], "useraccount");
    assert_eq!(granted["token_type"], "Bearer");
    assert_eq!(granted["expires_in"], 1800);
    let access = granted["access_token"].as_str().unwrap().to_owned();
    let refresh = granted["refresh_token"].as_str().unwrap().to_owned();
    let me = json(whoami(&sim, &access).await).await;
    assert_eq!(me["result"][0]["user_name"], "admin");

    // Refresh: a new access token, the same refresh token; only for the issuing client.
    let response = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "client-2"),
            ("client_secret", "other"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(response.status(), 401);
    let refreshed = json(
        token(
            &sim,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "client-1"),
                ("client_secret", "s3cret"),
                ("refresh_token", &refresh),
            ],
        )
        .await,
    )
    .await;
    let new_access = refreshed["access_token"].as_str().unwrap();
    assert_ne!(new_access, access);
    assert_eq!(refreshed["refresh_token"], refresh.as_str());
    assert_eq!(whoami(&sim, new_access).await.status(), 200);

    // Client credentials may also come as HTTP Basic.
    let response = sim
        .http
        .post(sim.url("/oauth_token.do"))
        .basic_auth("client-1", Some("s3cret"))
        .form(&[
            ("grant_type", "password"),
            ("username", "svc"),
            ("password", "pw"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn oauth_client_credentials_acts_as_the_application_user() {
    let sim = start(oauth_config()).await;
    let granted = json(
        token(
            &sim,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "client-1"),
                ("client_secret", "s3cret"),
            ],
        )
        .await,
    )
    .await;
    assert!(granted.get("refresh_token").is_none(), "{granted}");
    let access = granted["access_token"].as_str().unwrap();
    let me = json(whoami(&sim, access).await).await;
    assert_eq!(me["result"][0]["user_name"], "svc");
    // Without an explicit application user, the first configured user.
    let granted = json(
        token(
            &sim,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "client-2"),
                ("client_secret", "other"),
            ],
        )
        .await,
    )
    .await;
    let me = json(whoami(&sim, granted["access_token"].as_str().unwrap()).await).await;
    assert_eq!(me["result"][0]["user_name"], "admin");
    let log = sim.sim.request_log();
    let entry = log.iter().find(|r| r.path == "/oauth_token.do").unwrap();
    assert_eq!(entry.user.as_deref(), Some("svc"));
}

#[tokio::test]
async fn tokens_expire() {
    let mut config = oauth_config();
    config.token_ttl = Duration::from_secs(1);
    config.refresh_token_ttl = Duration::from_secs(1);
    let sim = start(config).await;
    let granted = json(
        token(
            &sim,
            &[
                ("grant_type", "password"),
                ("client_id", "client-1"),
                ("client_secret", "s3cret"),
                ("username", "admin"),
                ("password", "admin"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(granted["expires_in"], 1);
    let access = granted["access_token"].as_str().unwrap().to_owned();
    let refresh = granted["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(whoami(&sim, &access).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let response = whoami(&sim, &access).await;
    assert_eq!(response.status(), 401);
    assert_eq!(json(response).await, unauthenticated());
    let response = token(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "client-1"),
            ("client_secret", "s3cret"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(response.status(), 401);
    assert_eq!(json(response).await, opaque_denial());
}

#[tokio::test]
async fn authorization_code_flow_through_the_login_form() {
    let sim = start(oauth_config()).await;
    let redirect = "http://127.0.0.1:1/callback?keep=1";
    let authorize = format!(
        "/oauth_auth.do?response_type=code&client_id=client-1&redirect_uri={}&state=xyz%3C",
        url_encode(redirect)
    );
    let response = sim.http.get(sim.url(&authorize)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(
        page.contains("<form method=\"post\" action=\"/oauth_auth.do\">"),
        "{page}"
    );
    assert!(
        page.contains("name=\"client_id\" value=\"client-1\""),
        "{page}"
    );
    assert!(page.contains("name=\"state\" value=\"xyz&lt;\""), "{page}");
    assert!(page.contains("name=\"username\"") && page.contains("name=\"password\""));

    let bad = sim
        .http
        .get(
            sim.url("/oauth_auth.do?response_type=code&client_id=unknown&redirect_uri=http://x/cb"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let login = |password: &'static str| {
        sim.http
            .post(sim.url("/oauth_auth.do"))
            .form(&[
                ("response_type", "code"),
                ("client_id", "client-1"),
                ("redirect_uri", redirect),
                ("state", "xyz<"),
                ("username", "svc"),
                ("password", password),
            ])
            .send()
    };
    let refused = login("wrong").await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("<form"));

    let accepted = login("pw").await.unwrap();
    assert_eq!(accepted.status(), 302);
    let location = url::Url::parse(accepted.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.path(), "/callback");
    let query: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(query["keep"], "1");
    assert_eq!(query["state"], "xyz<");
    let code = query["code"].clone();

    let exchange = |code: String, redirect_uri: &'static str| {
        sim.http
            .post(sim.url("/oauth_token.do"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", "client-1"),
                ("client_secret", "s3cret"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
            ])
            .send()
    };
    let granted = json(exchange(code.clone(), redirect).await.unwrap()).await;
    assert!(granted["refresh_token"].is_string(), "{granted}");
    let me = json(whoami(&sim, granted["access_token"].as_str().unwrap()).await).await;
    assert_eq!(me["result"][0]["user_name"], "svc");
    // Codes are single-use, and bound to their redirect URI.
    let again = exchange(code, redirect).await.unwrap();
    assert_eq!(again.status(), 401);
    let second = login("pw").await.unwrap();
    let location = url::Url::parse(second.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let wrong_uri = exchange(code, "http://127.0.0.1:1/elsewhere")
        .await
        .unwrap();
    assert_eq!(wrong_uri.status(), 401);
    assert_eq!(json(wrong_uri).await, opaque_denial());
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
