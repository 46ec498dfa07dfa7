//! 429 handling: waits as asked, pauses every client of the instance, gives up when told to
//! wait too long.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nowpilot_servicenow::{Classification, ClientOptions, Error, ReadOptions};

use crate::fake::*;

fn rate_limited() -> Reply {
    Reply::envelope(
        429,
        "Rate limit exceeded",
        Some("Rate limit of 100 requests per hour for Table API exceeded"),
    )
}

#[tokio::test]
async fn waits_retry_after_and_a_second_client_of_the_instance_waits_too() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let fake = Fake::start(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            rate_limited()
                .header("Retry-After", "2")
                .header("X-RateLimit-Limit", "100")
        } else {
            Reply::result(incident_json())
        }
    })
    .await;
    let first = fake.basic();
    let second = fake.basic();

    let mut fields = serde_json::Map::new();
    fields.insert("impact".into(), "2".into());
    let writer = tokio::spawn(async move { first.patch("incident", SYS_ID, &fields).await });
    while fake.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the first client take in the 429 before the second one starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    second
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    writer.await.unwrap().unwrap();

    let requests = fake.requests();
    assert_eq!(
        requests.len(),
        3,
        "the 429, the retried PATCH and the second client's GET"
    );
    let limited_at = requests[0].at;
    for later in &requests[1..] {
        let waited = later.at.duration_since(limited_at);
        assert!(
            waited >= Duration::from_millis(1900),
            "{} {} arrived {waited:?} after the 429",
            later.method,
            later.path
        );
    }
    assert_eq!(
        requests[1].method, "PATCH",
        "a 429 is refused before any work, so the write is retried"
    );
}

#[tokio::test]
async fn x_ratelimit_reset_is_used_without_retry_after() {
    let reset = Arc::new(AtomicUsize::new(0));
    let r = reset.clone();
    let fake = Fake::start(move |_| {
        if r.load(Ordering::SeqCst) == 0 {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 2;
            r.store(at as usize, Ordering::SeqCst);
            rate_limited().header("X-RateLimit-Reset", at.to_string())
        } else {
            Reply::result(incident_json())
        }
    })
    .await;
    fake.basic()
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let reset_at = UNIX_EPOCH + Duration::from_secs(reset.load(Ordering::SeqCst) as u64);
    let retried = requests[1].at_system;
    assert!(
        retried + Duration::from_millis(100) >= reset_at,
        "retried at {retried:?}, before the reset {reset_at:?}"
    );
}

#[tokio::test]
async fn a_wait_longer_than_allowed_is_returned_at_once_and_pauses_the_instance() {
    let fake = Fake::start(|_| rate_limited().header("Retry-After", "3600")).await;
    // The pause lives as long as some client of the instance does.
    let first = fake.basic();
    let error = first
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    match &error {
        Error::RateLimited { retry_after, .. } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(3600)))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error.classification(),
        Classification::Retryable {
            after: Some(Duration::from_secs(3600))
        }
    );
    assert!(
        error
            .to_string()
            .contains("Rate limit of 100 requests per hour"),
        "{error}"
    );
    // Another client of the same instance does not even send while the pause lasts.
    let error = fake
        .basic()
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    match error {
        Error::RateLimited {
            retry_after: Some(left),
            ..
        } => assert!(left > Duration::from_secs(3500)),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn gives_up_after_the_configured_number_of_waits() {
    let fake = Fake::start(|_| rate_limited().header("Retry-After", "0")).await;
    let options = ClientOptions {
        max_rate_limit_waits: 2,
        ..fast_options()
    };
    let error = fake
        .client(basic_credentials(), options)
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    assert_eq!(fake.requests().len(), 3);
}
