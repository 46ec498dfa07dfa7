//! Investigation steps against small local HTTP servers: probes (ok, failing, slow, redirected
//! away), Prometheus, a runbook whose signature the server verifies, findings deciding actions,
//! and the allow-list.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use nowpilot_worker::hosts::AllowedHosts;
use nowpilot_worker::steps::outbound::{Outbound, OutboundError};
use nowpilot_worker::{Outcome, WorkerConfig};
use serde_json::{Value, json};

use crate::common::*;

#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<String>>>,
    hooks: Arc<Mutex<Vec<Value>>>,
}

struct Server {
    port: u16,
    seen: Seen,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.seen.requests.lock().unwrap().clone()
    }

    fn hooks(&self) -> Vec<Value> {
        self.seen.hooks.lock().unwrap().clone()
    }
}

async fn start_server() -> Server {
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/redirect-away",
            get(move || async move { Redirect::temporary(&format!("http://localhost:{port}/health")) }),
        )
        .route("/verify", get(|| async { "fine" }))
        .route(
            "/api/v1/query",
            get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let value = match q.get("query").map(String::as_str) {
                    Some("error_rate") => "0.12",
                    Some("up") => "1",
                    _ => return axum::Json(json!({"status": "error", "errorType": "bad_data", "error": "unknown metric"})).into_response(),
                };
                axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1714550000.0, value]}]}})).into_response()
            }),
        )
        .route(
            "/hook",
            post(|State(seen): State<Seen>, headers: HeaderMap, body: Bytes| async move {
                if !runbook_signed(&headers, &body) {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let value: Value = serde_json::from_slice(&body).unwrap();
                seen.hooks.lock().unwrap().push(value);
                StatusCode::ACCEPTED.into_response()
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            seen.clone(),
            |State(seen): State<Seen>, request: axum::extract::Request, next: axum::middleware::Next| async move {
                seen.requests.lock().unwrap().push(request.uri().path().to_owned());
                let response: Response = next.run(request).await;
                response
            },
        ))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { port, seen }
}

fn worker_config(server: &Server) -> WorkerConfig {
    WorkerConfig {
        allowed_hosts: vec!["127.0.0.1".into()],
        prometheus_url: Some(server.url("")),
        runbook_secret: Some(RUNBOOK_SECRET.into()),
        ..WorkerConfig::default()
    }
}

fn diagnose_plans(server: &Server) -> String {
    format!(
        r#"
[[plans]]
name = "diagnose"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[diagnose]"]
[[plans.steps]]
kind = "related"
[[plans.steps]]
kind = "http_probe"
name = "health"
url = "{health}"
[[plans.steps]]
kind = "http_probe"
name = "down"
url = "{down}"
[[plans.steps]]
kind = "http_probe"
name = "slow"
url = "{slow}"
timeout = "300ms"
[[plans.steps]]
kind = "http_probe"
name = "away"
url = "{away}"
[[plans.steps]]
kind = "prometheus"
name = "errors"
query = "error_rate"
op = ">"
threshold = 0.05
[[plans.steps]]
kind = "prometheus"
name = "broken"
query = "nonsense"
op = "<"
threshold = 1
[[plans.steps]]
kind = "runbook"
name = "restart"
url = "{hook}"
verify = {{ url = "{verify}", delay = "10ms" }}
[[plans.actions]]
kind = "investigate"
[[plans.actions]]
kind = "work_note"
id = "all-clear"
text = "Health OK, error rate above threshold, restart verified."
when = "findings.probe.health.ok && !findings.probe.down.ok && findings.prometheus.errors.ok && findings.runbook.restart.verified"
[[plans.actions]]
kind = "work_note"
id = "never"
text = "The slow probe answered in time."
when = "findings.probe.slow.ok"
"#,
        health = server.url("/health"),
        down = server.url("/down"),
        slow = server.url("/slow"),
        away = server.url("/redirect-away"),
        hook = server.url("/hook"),
        verify = server.url("/verify"),
    )
}

#[tokio::test]
async fn steps_produce_findings_and_findings_decide_actions() {
    let server = start_server().await;
    let h = start(Setup {
        worker: worker_config(&server),
        ..Setup::plans(diagnose_plans(&server))
    })
    .await;
    let inc = h.incident(&[("short_description", "[diagnose] checkout errors")]);
    h.publish(&inc, 0).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::Acted, "{report:#?}");

    let notes = h.our_notes(&inc.sys_id);
    assert_eq!(
        notes.len(),
        2,
        "findings and the all-clear note, not the `never` one: {notes:#?}"
    );
    let findings = &notes[0];
    let look_first = findings.lines().nth(1).unwrap();
    assert!(look_first.starts_with("Look first: "), "{findings}");
    for failing in [
        "probe down is failing",
        "probe slow is failing",
        "probe away is failing",
        "Prometheus query broken failed",
    ] {
        assert!(look_first.contains(failing), "{failing}: {look_first}");
    }
    assert!(
        findings.contains("Probe health: OK, HTTP 200 in "),
        "{findings}"
    );
    assert!(
        findings.contains("Probe down: FAILING, expected HTTP 200, got 503"),
        "{findings}"
    );
    assert!(
        findings.contains("Probe slow: FAILING, no answer within 300ms"),
        "{findings}"
    );
    assert!(
        findings.contains("Probe away: FAILING, expected HTTP 200, got 307"),
        "no redirect to another host: {findings}"
    );
    assert!(
        findings.contains("Prometheus errors: 0.12 > 0.05: holds"),
        "{findings}"
    );
    assert!(
        findings
            .contains("Prometheus broken: no value, Prometheus refused the query: unknown metric"),
        "{findings}"
    );
    assert!(
        findings.contains("Runbook restart: ran, HTTP 202, verified"),
        "{findings}"
    );
    assert!(notes[1].contains("Health OK, error rate above threshold, restart verified."));
    assert!(has_marker(&notes[1], "diagnose", "all-clear"));

    // The runbook saw a verified signature and the incident's context, not its URL.
    let hooks = server.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["incident"]["number"], inc.number.as_str());
    assert_eq!(hooks[0]["incident"]["sys_id"], inc.sys_id.as_str());
    assert_eq!(hooks[0]["plan"], "diagnose");
    assert_eq!(hooks[0]["event_id"], format!("{}-0", inc.sys_id));

    // A later event reruns nothing: the runbook ran once for this incident and plan.
    let v = h.write_as("maya.patel", &inc.sys_id, &[("work_notes", "thanks")]);
    h.publish(&inc, v).await;
    let again = h.nth_report(&inc.sys_id, 2).await;
    assert_eq!(again.outcome, Outcome::NothingOwed);
    assert_eq!(server.hooks().len(), 1);
    assert_eq!(
        server.requests().iter().filter(|p| *p == "/hook").count(),
        1
    );
}

fn self_heal_plans(server: &Server) -> String {
    let plan = |name: &str, path: &str| {
        format!(
            r#"
[[plans]]
name = "{name}"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[{name}]"]
[[plans.steps]]
kind = "http_probe"
name = "health"
url = "{url}"
[[plans.actions]]
kind = "resolve"
close_code = "Resolved by caller"
close_notes = "The health check passes again."
when = "findings.probe.health.ok"
[[plans.actions]]
kind = "investigate"
"#,
            url = server.url(path)
        )
    };
    format!(
        "{}{}",
        plan("heal-ok", "/health"),
        plan("heal-down", "/down")
    )
}

#[tokio::test]
async fn findings_decide_resolve_in_the_pass_that_investigated() {
    let server = start_server().await;
    let h = start(Setup {
        worker: worker_config(&server),
        ..Setup::plans(self_heal_plans(&server))
    })
    .await;
    let healthy = h.incident(&[("short_description", "[heal-ok] checkout blip")]);
    let broken = h.incident(&[("short_description", "[heal-down] checkout down")]);
    h.publish(&healthy, 0).await;
    h.publish(&broken, 0).await;
    h.nth_report(&healthy.sys_id, 1).await;
    h.nth_report(&broken.sys_id, 1).await;

    // The resolve comes before investigate in the config, and is decided right after it.
    let stored = h.get(&healthy.sys_id);
    assert_eq!(stored.value("state"), Some("6"));
    assert_eq!(stored.value("close_code"), Some("Resolved by caller"));
    let notes = h.our_notes(&healthy.sys_id);
    assert_eq!(notes.len(), 2);
    assert!(notes[0].starts_with("nowpilot investigation"));
    assert!(notes[1].starts_with("nowpilot resolved this incident"));

    assert_eq!(h.get(&broken.sys_id).value("state"), Some("1"));
    assert_eq!(h.our_notes(&broken.sys_id).len(), 1, "findings only");

    // The investigation is done: a later pass does not decide the resolve again, even when
    // the service recovered meanwhile.
    let v = h.write_as("maya.patel", &broken.sys_id, &[("work_notes", "any news?")]);
    h.publish(&broken, v).await;
    let again = h.nth_report(&broken.sys_id, 2).await;
    assert_eq!(again.outcome, Outcome::NothingOwed);
    assert_eq!(h.get(&broken.sys_id).value("state"), Some("1"));
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_refused_at_load_and_never_contacted() {
    let server = start_server().await;
    let plans = plan_set(
        &format!(
            r#"
[[plans]]
name = "sneaky"
autonomy = "autonomous"
[[plans.steps]]
kind = "http_probe"
name = "health"
url = "{}"
[[plans.steps]]
kind = "http_probe"
name = "other"
url = "http://localhost:{}/health"
[[plans.actions]]
kind = "investigate"
"#,
            server.url("/health"),
            server.port
        ),
        false,
    );
    let error = worker_config(&server).validate(&plans).unwrap_err();
    assert_eq!(error.key, "plans[0].steps[1].url");
    assert!(
        error
            .reason
            .contains("\"localhost\" is not in [worker] allowed_hosts"),
        "{error}"
    );

    // And right before sending (defence in depth): a client whose list lacks the host.
    let hosts = AllowedHosts::parse(&["status.example.com".to_owned()]).unwrap();
    let outbound = Outbound::new(hosts).unwrap();
    let url = url::Url::parse(&server.url("/health")).unwrap();
    let refused = outbound
        .send(
            reqwest::Method::GET,
            url,
            HeaderMap::new(),
            None,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, OutboundError::NotAllowed(_)),
        "{refused:?}"
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[tokio::test]
async fn response_bodies_are_capped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/big", get(|| async { vec![b'x'; 2 * 1024 * 1024] }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let outbound = Outbound::new(AllowedHosts::parse(&["127.0.0.1".to_owned()]).unwrap()).unwrap();
    let url = url::Url::parse(&format!("http://{addr}/big")).unwrap();
    let error = outbound
        .send(
            reqwest::Method::GET,
            url,
            HeaderMap::new(),
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(error, OutboundError::TooLarge);
}
