//! `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use nowpilot_worker::{AdminState, admin_router, serve_admin};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test]
async fn readiness_follows_the_connection() {
    let h = start(Setup {
        connected: false,
        ..Setup::quickstart()
    })
    .await;
    let state = AdminState::new(
        h.queue.clone(),
        h.manager.clone(),
        Arc::new(|| "nowpilot_worker_events_total 0\n".to_owned()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(serve_admin(admin_router(state), listener, stop.clone()));
    let http = reqwest::Client::new();

    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert!(
        body["reason"].as_str().unwrap().starts_with("servicenow: "),
        "{body}"
    );

    h.manager.connect(connection(&h.base, ADMIN)).await.unwrap();
    let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        metrics.text().await.unwrap(),
        "nowpilot_worker_events_total 0\n"
    );
    stop.cancel();
}
