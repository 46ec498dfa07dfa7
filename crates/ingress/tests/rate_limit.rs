//! Rate limiting per client address over real sockets: 429 with `Retry-After` before the
//! signature is looked at, loopback exempt by default, and `X-Forwarded-For` believed only
//! from trusted proxies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Instant;

use common::*;
use nowpilot_ingress::IngressConfig;

/// Limiting from 127.0.0.1: one request per second, `burst` at once.
fn limited(burst: u32) -> IngressConfig {
    IngressConfig {
        rate_limit: 1,
        rate_limit_burst: burst,
        rate_limit_exempt: vec![],
        ..config()
    }
}

async fn get_status(
    server: &TestServer,
    forwarded_for: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = server.client.get(server.url("/healthz"));
    if let Some(value) = forwarded_for {
        request = request.header("x-forwarded-for", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Sends `n` requests in a row; returns how many were refused with 429 and how long it took.
async fn burst_of(server: &TestServer, n: usize, forwarded_for: Option<&str>) -> (usize, f64) {
    let started = Instant::now();
    let mut refused = 0;
    for _ in 0..n {
        let (status, _, _) = get_status(server, forwarded_for).await;
        assert!(status == 200 || status == 429, "{status}");
        if status == 429 {
            refused += 1;
        }
    }
    (refused, started.elapsed().as_secs_f64())
}

#[tokio::test]
async fn over_the_rate_a_client_gets_429_with_retry_after_and_nothing_is_verified() {
    let server = start(limited(3)).await;
    let (refused, secs) = burst_of(&server, 20, None).await;
    // At most the burst plus what refilled while the loop ran got through; however slow the
    // machine, 20 requests in a row at 1/s cannot all pass.
    let allowed = 20 - refused;
    assert!(allowed >= 3, "the burst is allowed: {allowed}");
    assert!(
        allowed as f64 <= 3.0 + secs.ceil() + 1.0,
        "{allowed} allowed in {secs:.1}s"
    );

    let mut refusal = None;
    for _ in 0..20 {
        let (status, headers, body) = get_status(&server, None).await;
        if status == 429 {
            refusal = Some((headers, body));
            break;
        }
    }
    let (headers, body) = refusal.expect("a 429");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("retry after"));

    // Correctly signed callbacks from the same address are refused too, before verification
    // and publishing: only those not refused reached the publisher.
    let mut accepted = 0;
    let mut limited_count = 0;
    for n in 1..=10 {
        let body = payload(n, "beth.anglin");
        let request = signed_request(&event_id(n), now(), &body, SECRET_BYTES);
        match server.send(&request).await {
            (202, _) => accepted += 1,
            (429, answer) => {
                assert_eq!(answer["code"], "rate_limited");
                limited_count += 1;
            }
            (status, answer) => panic!("{status} {answer}"),
        }
    }
    assert!(limited_count > 0);
    assert_eq!(server.publisher.attempts(), accepted);
    server.stop().await;
}

#[tokio::test]
async fn loopback_is_exempt_by_default_and_zero_turns_limiting_off() {
    for config in [
        IngressConfig {
            rate_limit: 1,
            rate_limit_burst: 1,
            ..config()
        },
        IngressConfig {
            rate_limit: 0,
            rate_limit_exempt: vec![],
            ..config()
        },
    ] {
        let server = start(config).await;
        let (refused, _) = burst_of(&server, 30, None).await;
        assert_eq!(refused, 0);
        server.stop().await;
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let server = start(IngressConfig {
        trusted_proxies: vec!["127.0.0.0/8".into()],
        ..limited(5)
    })
    .await;
    let (refused, _) = burst_of(&server, 20, Some("203.0.113.1")).await;
    assert!(refused > 0, "client .1 is limited");
    // Another client behind the same proxy has a fresh bucket.
    let (status, _, _) = get_status(&server, Some("203.0.113.2")).await;
    assert_eq!(status, 200);
    // Prepending a made-up address does not escape: the rightmost untrusted entry (what the
    // proxy saw) is the client. Were the made-up one believed, its fresh burst of 5 would
    // let all five through.
    let (refused, _) = burst_of(&server, 5, Some("198.51.100.77, 203.0.113.1")).await;
    assert!(refused > 0);
    // Trusted hops right of the client are skipped.
    let (refused, _) = burst_of(&server, 5, Some("203.0.113.1, 127.0.0.9")).await;
    assert!(refused > 0);
    server.stop().await;
}

#[tokio::test]
async fn from_an_untrusted_peer_x_forwarded_for_is_ignored() {
    let server = start(limited(2)).await;
    // Each request claims another client; they all come from 127.0.0.1, which is what counts.
    let mut refused = 0;
    for i in 0..10 {
        let (status, _, _) = get_status(&server, Some(&format!("203.0.113.{i}"))).await;
        if status == 429 {
            refused += 1;
        }
    }
    assert!(refused > 0);
    server.stop().await;
}

#[test]
fn invalid_rate_limit_settings_name_their_key() {
    let base = || IngressConfig {
        secrets: vec![whsec(SECRET_BYTES).into()],
        ..IngressConfig::default()
    };
    let cases = [
        (
            IngressConfig {
                rate_limit_burst: 0,
                ..base()
            },
            "ingress.rate_limit_burst",
        ),
        (
            IngressConfig {
                trusted_proxies: vec!["10.0.0.0/8".into(), "lb.example".into()],
                ..base()
            },
            "ingress.trusted_proxies[1]",
        ),
        (
            IngressConfig {
                rate_limit_exempt: vec!["::1/129".into()],
                ..base()
            },
            "ingress.rate_limit_exempt[0]",
        ),
    ];
    for (config, key) in cases {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with(key), "{err}");
    }
    let defaults = base();
    assert_eq!((defaults.rate_limit, defaults.rate_limit_burst), (200, 400));
    assert!(base().validate().is_ok());
}
