//! The rate-limit rule, injected faults and latency, the request log, and shutdown.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nowpilot_snowsim::{FaultSettings, ForcedStatus, SimConfig, Simulator, run};
use reqwest::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{envelope, json, start, with_users};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn rate_limit_headers_and_429() {
    let mut config = with_users(&[("admin", "admin", "admin"), ("other", "pw", "admin")]);
    config.rate_limit = Some(2);
    let sim = start(config).await;
    for _ in 0..2 {
        let before = unix_now();
        let response = sim
            .admin(Method::GET, "/api/now/table/incident")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let h = response.headers();
        assert_eq!(h["x-ratelimit-limit"], "2");
        let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        // The window's end, rounded up to a whole second.
        assert!(reset > before && reset <= unix_now() + 3601, "{reset}");
        let rule = h["x-ratelimit-rule"].to_str().unwrap();
        assert_eq!(rule.len(), 32);
        assert!(rule.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let response = sim
        .admin(Method::GET, "/api/now/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["x-ratelimit-limit"], "2");
    assert_eq!(
        json(response).await,
        envelope(
            "Rate limit exceeded",
            "Rate limit of 2 requests per hour for Table API exceeded"
        )
    );
    // Limits are per user; the control endpoints are not rate limited.
    let response = sim
        .as_user("other", "pw", Method::GET, "/api/now/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = sim
        .http
        .get(sim.url("/_sim/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn rate_limit_window_reopens() {
    let sim = start(SimConfig {
        rate_limit: Some(1),
        rate_limit_window: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let get = || sim.admin(Method::GET, "/api/now/table/incident").send();
    assert_eq!(get().await.unwrap().status(), 200);
    let limited = get().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get().await.unwrap().status(), 200);
}

#[tokio::test]
async fn random_faults_alternate_500_and_html_503() {
    let sim = start(SimConfig {
        faults: FaultSettings {
            fault_rate: 1.0,
            ..FaultSettings::default()
        },
        ..SimConfig::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = sim
            .admin(Method::POST, "/api/now/table/incident")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.text().await.unwrap();
        match status {
            500 => {
                assert!(content_type.starts_with("application/json"));
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(body["error"]["message"], "Internal Server Error");
                assert_eq!(body["status"], "failure");
            }
            503 => {
                assert!(content_type.starts_with("text/html"), "{content_type}");
                assert!(body.starts_with("<html>"), "{body}");
            }
            other => panic!("unexpected {other}"),
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [500, 503, 500, 503]);
    // The failed requests did nothing.
    assert!(sim.sim.query("incident", "").unwrap().is_empty());
}

async fn status_sequence(seed: u64) -> Vec<u16> {
    let sim = start(SimConfig {
        faults: FaultSettings {
            fault_rate: 0.5,
            seed: Some(seed),
            ..FaultSettings::default()
        },
        ..SimConfig::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let response = sim
            .admin(Method::GET, "/api/now/table/sys_choice?sysparm_limit=1")
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn seeded_fault_sequences_repeat() {
    let first = status_sequence(7).await;
    assert_eq!(first, status_sequence(7).await);
    assert!(
        first.contains(&200) && first.contains(&500) && first.contains(&503),
        "{first:?}"
    );
}

#[tokio::test]
async fn forced_status_at_runtime() {
    let sim = start(SimConfig::default()).await;
    let set = |body: serde_json::Value| sim.http.post(sim.url("/_sim/faults")).json(&body).send();
    let response = set(json!({"status": 503, "status_seconds": 60}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["status"], 503);
    let response = sim
        .admin(Method::GET, "/api/now/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let response = sim
        .http
        .post(sim.url("/oauth_token.do"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    set(json!({"status": 429, "status_seconds": 30}))
        .await
        .unwrap();
    let response = sim
        .admin(Method::GET, "/api/now/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after));

    assert_eq!(set(json!({"fault_rate": 2.0})).await.unwrap().status(), 400);
    assert_eq!(set(json!({"status": 503})).await.unwrap().status(), 400);
    assert_eq!(set(json!({"bogus": 1})).await.unwrap().status(), 400);
    set(json!({})).await.unwrap();
    let response = sim
        .admin(Method::GET, "/api/now/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The handle does the same, and the forced period ends on its own.
    sim.sim.set_faults(FaultSettings {
        forced: Some(ForcedStatus {
            status: 500,
            duration: Duration::from_millis(300),
        }),
        ..FaultSettings::default()
    });
    let response = sim
        .admin(Method::GET, "/api/now/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let response = sim
        .admin(Method::GET, "/api/now/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn latency_is_added() {
    let sim = start(SimConfig::default()).await;
    sim.sim.set_faults(FaultSettings {
        latency: Duration::from_millis(150),
        ..FaultSettings::default()
    });
    let response = sim
        .admin(Method::GET, "/api/now/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let entry = sim.sim.request_log().pop().unwrap();
    // A lower bound only: the sleep guarantees it, the machine may add more.
    assert!(entry.end_us - entry.start_us >= 150_000, "{entry:?}");
    assert_eq!(sim.sim.faults().latency, Duration::from_millis(150));
}

#[tokio::test]
async fn request_log_records_every_request() {
    let sim = start(SimConfig::default()).await;
    let created = sim.create("incident", json!({})).await;
    let sys_id = created["sys_id"].as_str().unwrap().to_owned();
    sim.admin(Method::GET, &format!("/api/now/v2/table/incident/{sys_id}"))
        .send()
        .await
        .unwrap();
    sim.http
        .get(sim.url("/api/now/table/incident"))
        .send()
        .await
        .unwrap();
    sim.http.get(sim.url("/nowhere")).send().await.unwrap();
    let log: Vec<serde_json::Value> = json(
        sim.http
            .get(sim.url("/_sim/requests"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .as_array()
    .unwrap()
    .clone();
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(log[0]["method"], "POST");
    assert_eq!(log[0]["path"], "/api/now/table/incident");
    assert_eq!(log[0]["table"], "incident");
    assert_eq!(log[0]["status"], 201);
    assert_eq!(log[0]["user"], "admin");
    assert_eq!(log[1]["sys_id"], sys_id.as_str());
    assert_eq!(log[1]["status"], 200);
    assert_eq!(log[2]["user"], serde_json::Value::Null);
    assert_eq!(log[2]["status"], 401);
    assert_eq!(log[3]["path"], "/nowhere");
    assert_eq!(log[3]["status"], 404);
    for entry in &log {
        assert!(
            entry["end_us"].as_u64() >= entry["start_us"].as_u64(),
            "{entry}"
        );
    }
    assert!(log[1]["start_us"].as_u64() >= log[0]["end_us"].as_u64());
    let response = sim
        .http
        .delete(sim.url("/_sim/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // Only the DELETE itself is left: it is logged once answered.
    assert_eq!(sim.sim.request_log().len(), 1);
}

#[tokio::test]
async fn run_returns_when_cancelled() {
    let sim = Simulator::new(SimConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run(sim, listener, shutdown.clone()));
    let response = reqwest::get(format!("http://{addr}/_sim/faults"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("run did not return")
        .unwrap()
        .unwrap();
    assert!(
        reqwest::get(format!("http://{addr}/_sim/faults"))
            .await
            .is_err()
    );
}
