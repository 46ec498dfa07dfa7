//! No text in an incident chooses where nowpilot sends a request.
//!
//! An incident whose every free-text field (short description, description, close notes,
//! correlation fields, work notes, comments, its configuration item's name and a change on
//! that item) carries URLs and host names is investigated by a plan with an HTTP probe, two
//! Prometheus queries and a runbook with a verification probe. The URLs point at:
//!
//! - a recorder on 127.0.0.1 (not on the allow-list), also named as `localhost`;
//! - a recorder on 127.0.0.2, an **allowed** host on another port: the allow-list alone would
//!   not stop a request there, so a request seen by it means an incident chose a URL;
//! - the cloud metadata address 169.254.169.254 (nothing listens; it must never be tried).
//!
//! The configured steps point at a third server on 127.0.0.2. The test asserts that server saw
//! exactly the configured requests (paths and queries as written in the plan, the runbook
//! signed, the incident text only in the runbook's JSON body) and that the recorders saw
//! nothing but the test's own control request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nowpilot_worker::{Outcome, WorkerConfig};
use serde_json::{Value, json};

use crate::common::*;

/// The allowed host. Linux routes all of 127.0.0.0/8 to the loopback interface.
const ALLOWED_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// One request as a server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    target: String,
    body: Vec<u8>,
    signed: bool,
}

/// An HTTP server on `ip` that records every request and answers what a probe, Prometheus
/// and a runbook expect.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(ip: IpAddr) -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .unwrap_or_else(|e| panic!("cannot bind {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(answer).with_state(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn targets(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .map(|s| format!("{} {}", s.method, s.target))
            .collect()
    }
}

async fn answer(State(seen): State<Arc<Mutex<Vec<Seen>>>>, request: Request) -> Response {
    let method = request.method().to_string();
    let target = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1024 * 1024)
        .await
        .unwrap_or_default();
    let signed = runbook_signed(&headers, &body);
    seen.lock().unwrap().push(Seen {
        method,
        target: target.clone(),
        body: body.to_vec(),
        signed,
    });
    if target.contains("/api/v1/query") {
        let sample = json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [1_714_550_000.0, "0.5"]}]}});
        return axum::Json(sample).into_response();
    }
    if target == "/hook" {
        return StatusCode::ACCEPTED.into_response();
    }
    "ok".into_response()
}

/// Text naming every address an attacker might want nowpilot to call.
fn lure(field: &str, denied: &Server, allowed_other_port: &Server) -> String {
    let port = denied.addr.port();
    format!(
        "[urls] {field}: see http://127.0.0.1:{port}/{field} or http://localhost:{port}/{field}?x=1 \
         (https://localhost:{port}/{field}), metadata at http://169.254.169.254/latest/meta-data/{field}, \
         mirror {url} and host 127.0.0.1:{port} / localhost:{port}",
        url = allowed_other_port.url(&format!("/{field}")),
    )
}

#[tokio::test]
async fn urls_in_incident_text_never_become_requests() {
    let denied = Server::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let allowed_other_port = Server::start(IpAddr::V4(ALLOWED_IP)).await;
    let target = Server::start(IpAddr::V4(ALLOWED_IP)).await;
    // Control: the recorders do record (a test whose recorders were deaf could not fail).
    for server in [&denied, &allowed_other_port] {
        let answer = reqwest::get(server.url("/control")).await.unwrap();
        assert!(answer.status().is_success());
        assert_eq!(server.targets(), vec!["GET /control".to_owned()]);
    }

    let plans = format!(
        r#"
[[plans]]
name = "urls"
autonomy = "autonomous"
[plans.intake]
title_contains_any = ["[urls]"]
[[plans.steps]]
kind = "related"
[[plans.steps]]
kind = "http_probe"
name = "health"
url = "{health}"
[[plans.steps]]
kind = "prometheus"
name = "up"
query = "up"
op = ">"
threshold = 0.1
[[plans.steps]]
kind = "prometheus"
name = "errors"
query = 'rate(http_requests_total{{code=~"5.."}}[5m])'
op = "<"
threshold = 1.5
base_url = "{prom}"
[[plans.steps]]
kind = "runbook"
name = "restart"
url = "{hook}"
verify = {{ url = "{verify}" }}
[[plans.actions]]
kind = "investigate"
"#,
        health = target.url("/health"),
        prom = target.url("/prom"),
        hook = target.url("/hook"),
        verify = target.url("/verify"),
    );
    let h = start(Setup {
        worker: WorkerConfig {
            allowed_hosts: vec![ALLOWED_IP.to_string()],
            prometheus_url: Some(target.url("")),
            runbook_secret: Some(RUNBOOK_SECRET.into()),
            ..WorkerConfig::default()
        },
        ..Setup::plans(plans)
    })
    .await;

    // Every free-text field the worker reads, and the records the related step reads.
    let ci = h
        .sim
        .insert(
            "cmdb_ci",
            record(&[
                ("name", &lure("ci", &denied, &allowed_other_port)),
                (
                    "short_description",
                    &lure("ci_text", &denied, &allowed_other_port),
                ),
                ("fqdn", "localhost"),
                ("ip_address", "127.0.0.1"),
            ]),
        )
        .unwrap();
    let ci_id = ci.value_or_empty("sys_id").to_owned();
    h.sim
        .insert(
            "change_request",
            record(&[
                (
                    "short_description",
                    &lure("change", &denied, &allowed_other_port),
                ),
                ("cmdb_ci", &ci_id),
            ]),
        )
        .unwrap();
    let text = |field: &str| lure(field, &denied, &allowed_other_port);
    let inc = h.incident(&[
        ("short_description", &text("short_description")),
        ("description", &text("description")),
        ("close_notes", &text("close_notes")),
        ("correlation_id", &text("correlation_id")),
        ("correlation_display", &text("correlation_display")),
        ("cmdb_ci", &ci_id),
        ("impact", "1"),
        ("urgency", "2"),
    ]);
    h.write_as(
        "maya.patel",
        &inc.sys_id,
        &[("work_notes", &text("work_notes"))],
    );
    let version = h.write_as(
        "priya.raman",
        &inc.sys_id,
        &[("comments", &text("comments"))],
    );
    h.publish(&inc, version).await;
    let report = h.nth_report(&inc.sys_id, 1).await;
    assert_eq!(report.outcome, Outcome::Acted, "{report:#?}");

    // The steps ran (the findings say so) against the configured server, exactly as written.
    let notes = h.our_notes(&inc.sys_id);
    let findings = notes
        .iter()
        .find(|n| n.starts_with("nowpilot investigation"))
        .unwrap_or_else(|| panic!("no findings note: {notes:#?}"));
    for expected in [
        "Probe health: OK, HTTP 200",
        "Prometheus up: 0.5 > 0.1: holds",
        "Prometheus errors: 0.5 < 1.5: holds",
        "Runbook restart: ran, HTTP 202, verified",
    ] {
        assert!(findings.contains(expected), "{expected}: {findings}");
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("query", r#"rate(http_requests_total{code=~"5.."}[5m])"#)
        .finish();
    assert_eq!(
        target.targets(),
        vec![
            "GET /health".to_owned(),
            "GET /api/v1/query?query=up".to_owned(),
            format!("GET /prom/api/v1/query?{query}"),
            "POST /hook".to_owned(),
            "GET /verify".to_owned(),
        ],
        "only the configured requests, with nothing from the incident in a path or query"
    );
    // The incident's text reaches the runbook only inside its signed JSON body.
    let hook = target
        .seen()
        .into_iter()
        .find(|s| s.target == "/hook")
        .unwrap();
    assert!(
        hook.signed,
        "the runbook call is signed with the runbook secret"
    );
    let body: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(
        body["incident"]["short_description"],
        text("short_description").as_str()
    );

    // A later change carrying more URLs: another pass, still nothing sent anywhere else.
    let v = h.write_as(
        "maya.patel",
        &inc.sys_id,
        &[("work_notes", &text("later_work_notes"))],
    );
    h.publish(&inc, v).await;
    h.nth_report(&inc.sys_id, 2).await;

    // Steps' requests complete within their pass, so by now any stray one has landed.
    for server in [&denied, &allowed_other_port] {
        assert_eq!(
            server.targets(),
            vec!["GET /control".to_owned()],
            "a URL from the incident's text was contacted ({})",
            server.addr
        );
    }
    assert_eq!(target.targets().len(), 5, "{:?}", target.targets());
}
