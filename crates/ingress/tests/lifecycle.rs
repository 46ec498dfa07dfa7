//! Probes and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use nowpilot_ingress::{IngressConfig, IngressState, Readiness};
use serde_json::{Value, json};

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn readiness_follows_the_publisher_and_health_does_not() {
    let server = start(config()).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!((status, parse(&body)), (200, json!({"ready": true})));

    server
        .publisher
        .set_ready(Readiness::not_ready("broker connection lost"));
    let (status, body) = server.get("/readyz").await;
    assert_eq!(
        (status, parse(&body)),
        (
            503,
            json!({"ready": false, "reason": "broker connection lost"})
        )
    );
    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, parse(&body)), (200, json!({"status": "ok"})));

    server.publisher.set_ready(Readiness::ready());
    assert_eq!(server.get("/readyz").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn begin_shutdown_withdraws_readiness_but_keeps_serving() {
    let publisher = FakePublisher::new();
    let settings = config().validate().unwrap();
    let state = IngressState::new(settings, publisher.clone(), no_metrics());
    let (addr, shutdown) = start_state(state.clone()).await;
    let client = client();

    state.begin_shutdown();
    let response = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        parse(&response.text().await.unwrap()),
        json!({"ready": false, "reason": "shutting down"})
    );

    let body = payload(1, "beth.anglin");
    let request = signed_request(&event_id(1), now(), &body, SECRET_BYTES);
    let mut builder = client
        .post(format!("http://{addr}{}", nowpilot_ingress::WEBHOOK_PATH))
        .body(request.body.clone());
    for (n, v) in &request.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    assert_eq!(builder.send().await.unwrap().status().as_u16(), 202);
    assert_eq!(publisher.published().len(), 1);
    shutdown.cancel();
}

#[tokio::test]
async fn readyz_fails_during_the_drain_delay_while_the_listener_still_accepts() {
    let server = start(IngressConfig {
        drain_delay: Duration::from_secs(60),
        ..config()
    })
    .await;
    assert_eq!(server.get("/readyz").await.0, 200);
    server.shutdown.cancel();
    // The flip happens when the serve task sees the cancellation; poll for it.
    let mut status = 200;
    for _ in 0..200 {
        status = server.get("/readyz").await.0;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 503);
    // Still accepting new connections and serving during the drain.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_ok());
    assert_eq!(server.get("/healthz").await.0, 200);
    let (status, _) = server
        .post_signed(&event_id(2), &payload(2, "beth.anglin"))
        .await;
    assert_eq!(status, 202);
    assert!(!server.handle.is_finished());
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_publish_finish() {
    let server = start(config()).await;
    server.publisher.set_mode(Mode::Hold);
    let request = signed_request(
        &event_id(3),
        now(),
        &payload(3, "beth.anglin"),
        SECRET_BYTES,
    );
    let client = server.client.clone();
    let url = server.url(nowpilot_ingress::WEBHOOK_PATH);
    let in_flight = tokio::spawn(async move {
        let mut builder = client.post(url).body(request.body.clone());
        for (n, v) in &request.headers {
            builder = builder.header(n.as_str(), v.as_str());
        }
        let response = builder.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    });
    server.publisher.wait_for_attempts(1).await;

    server.shutdown.cancel();
    // The listener closes: new connections are refused.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(server.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener kept accepting after shutdown");
    // run() cannot return while the publish is held.
    assert!(!server.handle.is_finished());

    server.publisher.release(1);
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 202, "{body}");
    server.handle.await.unwrap().unwrap();
    assert_eq!(server.publisher.published().len(), 1);
}

#[tokio::test]
async fn the_grace_period_bounds_a_stuck_publish() {
    let server = start(IngressConfig {
        shutdown_grace: Duration::from_millis(300),
        ..config()
    })
    .await;
    server.publisher.set_mode(Mode::Hold);
    let request = signed_request(
        &event_id(4),
        now(),
        &payload(4, "beth.anglin"),
        SECRET_BYTES,
    );
    let client = server.client.clone();
    let url = server.url(nowpilot_ingress::WEBHOOK_PATH);
    let _stuck = tokio::spawn(async move {
        let mut builder = client.post(url).body(request.body.clone());
        for (n, v) in &request.headers {
            builder = builder.header(n.as_str(), v.as_str());
        }
        builder.send().await
    });
    server.publisher.wait_for_attempts(1).await;
    server.shutdown.cancel();
    // Returns (Ok) although the publish never confirms.
    tokio::time::timeout(Duration::from_secs(30), server.handle)
        .await
        .expect("run did not return after the grace period")
        .unwrap()
        .unwrap();
    assert!(server.publisher.published().is_empty());
}

#[tokio::test]
async fn a_bad_config_is_an_error_from_run() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = nowpilot_ingress::run(
        IngressConfig {
            secrets: vec!["whsec_***".into()],
            ..IngressConfig::default()
        },
        FakePublisher::new(),
        no_metrics(),
        listener,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("ingress.secrets[0]"), "{err}");
}
