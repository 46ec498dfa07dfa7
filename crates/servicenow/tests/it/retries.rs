//! GET retries on transient failures; writes never retried on 5xx or timeouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nowpilot_servicenow::{ClientOptions, Error, ReadOptions};

use crate::fake::*;

fn html_503() -> Reply {
    Reply::raw(
        503,
        "<html><body><h1>503 Service Unavailable</h1>No server is available to handle this request.</body></html>",
    )
}

#[tokio::test]
async fn get_is_retried_on_503_and_succeeds() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let fake = Fake::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) < 2 {
            html_503()
        } else {
            Reply::result(incident_json())
        }
    })
    .await;
    let record = fake
        .basic()
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(record.sys_id(), Some(SYS_ID));
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn get_gives_up_after_two_retries() {
    let fake = Fake::start(|_| html_503()).await;
    let error = fake
        .basic()
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    match &error {
        Error::Server {
            status: 503, api, ..
        } => assert!(api.message.contains("No server is available"), "{api:?}"),
        other => panic!("{other:?}"),
    }
    assert!(error.is_retryable());
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn writes_are_not_retried_on_server_errors() {
    let fake = Fake::start(|_| html_503()).await;
    let client = fake.basic();
    let mut fields = serde_json::Map::new();
    fields.insert("state".into(), "2".into());
    let error = client.patch("incident", SYS_ID, &fields).await.unwrap_err();
    assert!(matches!(error, Error::Server { status: 503, .. }));
    assert_eq!(fake.requests().len(), 1);

    let error = client.insert("incident", &fields).await.unwrap_err();
    assert!(matches!(error, Error::Server { status: 503, .. }));
    let error = client
        .patch_quiet("incident", SYS_ID, &fields)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Server { status: 503, .. }));
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn other_statuses_are_not_retried() {
    let fake = Fake::start(|_| {
        Reply::envelope(
            404,
            "No Record found",
            Some("Record doesn't exist or ACL restricts the record retrieval"),
        )
    })
    .await;
    let error = fake
        .basic()
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NotFound { .. }));
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn timeouts_are_typed_and_only_gets_are_retried() {
    let fake = Fake::start(|_| Reply::result(incident_json()).after(Duration::from_secs(3))).await;
    let options = ClientOptions {
        get_retries: 1,
        ..fast_options()
    };
    let client = fake.client_with_timeout(basic_credentials(), options, Duration::from_millis(300));
    let error = client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(fake.requests().len(), 2);

    let error = client
        .patch("incident", SYS_ID, &serde_json::Map::new())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert_eq!(
        fake.requests().len(),
        3,
        "a timed-out write may have committed: no retry"
    );
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let config = nowpilot_servicenow::ResolvedConfig::new(
        nowpilot_servicenow::InstanceUrl::parse(&format!("http://{address}")).unwrap(),
        basic_credentials(),
    );
    let client = nowpilot_servicenow::Client::new(config, fast_options()).unwrap();
    let error = client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert!(!error.to_string().contains(PASSWORD));
}
