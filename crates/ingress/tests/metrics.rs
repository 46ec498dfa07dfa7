//! The metrics the ingress emits, read back through its own `/metrics` endpoint.
//!
//! One test in its own binary: the Prometheus recorder is process-global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use metrics_exporter_prometheus::PrometheusBuilder;

/// The value of the sample whose name-and-labels part is exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

#[tokio::test]
async fn outcomes_failures_and_confirms_are_counted() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let server = start_with(config(), Arc::new(move || handle.render())).await;

    let body = payload(1, "beth.anglin");
    assert_eq!(server.post_signed(&event_id(1), &body).await.0, 202);
    assert_eq!(server.post_signed(&event_id(1), &body).await.0, 200);
    let echo = payload(2, "nowpilot.integration");
    assert_eq!(server.post_signed(&event_id(2), &echo).await.0, 200);
    let wrong_key = signed_request(&event_id(3), now(), &payload(3, "x"), OTHER_SECRET_BYTES);
    assert_eq!(server.send(&wrong_key).await.0, 401);
    let stale = signed_request(&event_id(3), now() - 3600, &payload(3, "x"), SECRET_BYTES);
    assert_eq!(server.send(&stale).await.0, 401);
    let unsigned = signed_request(&event_id(3), now(), &payload(3, "x"), SECRET_BYTES)
        .without("webhook-signature");
    assert_eq!(server.send(&unsigned).await.0, 401);
    let text_plain = signed_request(&event_id(3), now(), &payload(3, "x"), SECRET_BYTES)
        .with("content-type", "text/plain");
    assert_eq!(server.send(&text_plain).await.0, 415);
    server.publisher.set_mode(Mode::Unavailable);
    assert_eq!(
        server.post_signed(&event_id(4), &payload(4, "x")).await.0,
        503
    );
    assert_eq!(server.get("/nope").await.0, 404);
    // A second ingress that limits loopback: its 429s are counted without the address.
    let limited = start(nowpilot_ingress::IngressConfig {
        rate_limit: 1,
        rate_limit_burst: 1,
        rate_limit_exempt: vec![],
        ..config()
    })
    .await;
    let mut refused = 0;
    while refused < 2 {
        if limited.get("/healthz").await.0 == 429 {
            refused += 1;
        }
    }
    limited.stop().await;

    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let expect = [
        ("nowpilot_ingress_requests_total{outcome=\"accepted\"}", 1.0),
        (
            "nowpilot_ingress_requests_total{outcome=\"duplicate\"}",
            1.0,
        ),
        ("nowpilot_ingress_requests_total{outcome=\"echo\"}", 1.0),
        (
            "nowpilot_ingress_requests_total{outcome=\"unauthorized\"}",
            3.0,
        ),
        (
            "nowpilot_ingress_requests_total{outcome=\"unsupported_media_type\"}",
            1.0,
        ),
        (
            "nowpilot_ingress_requests_total{outcome=\"unavailable\"}",
            1.0,
        ),
        (
            "nowpilot_ingress_requests_total{outcome=\"not_found\"}",
            1.0,
        ),
        (
            "nowpilot_ingress_verification_failures_total{reason=\"no_match\"}",
            1.0,
        ),
        (
            "nowpilot_ingress_verification_failures_total{reason=\"stale_timestamp\"}",
            1.0,
        ),
        (
            "nowpilot_ingress_verification_failures_total{reason=\"missing_header\"}",
            1.0,
        ),
        ("nowpilot_ingress_confirms_total{result=\"ack\"}", 1.0),
        (
            "nowpilot_ingress_confirms_total{result=\"unavailable\"}",
            1.0,
        ),
        ("nowpilot_ingress_duplicates_total", 1.0),
        ("nowpilot_ingress_echoes_dropped_total", 1.0),
        ("nowpilot_ingress_publish_duration_seconds_count", 2.0),
        (
            "nowpilot_ingress_request_duration_seconds_count{outcome=\"accepted\"}",
            1.0,
        ),
        ("nowpilot_ingress_in_flight", 0.0),
        ("nowpilot_ingress_rate_limited_total", 2.0),
        (
            "nowpilot_ingress_requests_total{outcome=\"rate_limited\"}",
            2.0,
        ),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(
        !text.contains("127.0.0.1"),
        "no address in any label:\n{text}"
    );
    server.stop().await;
}
