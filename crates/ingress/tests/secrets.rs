//! Secrets never reach logs, errors, responses or `Debug` output.
//!
//! One test in its own binary: it installs a process-global tracing subscriber at TRACE.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::*;
use nowpilot_ingress::{BodySignatureConfig, IngressConfig};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const BODY_SECRET: &str = "body-scheme-secret-Zq8";
const BAD_SECRET: &str = "whsec_leakme@@notbase64";

#[tokio::test]
async fn secrets_stay_out_of_logs_errors_and_debug() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let config = IngressConfig {
        secrets: vec![whsec(SECRET_BYTES).into(), whsec(OTHER_SECRET_BYTES).into()],
        body_signature: Some(BodySignatureConfig {
            header: "x-hmac-signature".into(),
            secret: Some(BODY_SECRET.into()),
            secret_file: None,
        }),
        ..config()
    };
    let mut visible = Vec::new();
    visible.push(format!("{config:?}"));
    visible.push(format!("{:?}", config.validate().unwrap()));

    let server = start(config).await;
    let body = payload(1, "beth.anglin");
    let mut requests = vec![
        signed_request(&event_id(1), now(), &body, SECRET_BYTES),
        signed_request(&event_id(2), now(), &body, b"some other key entirely"),
        signed_request(&event_id(3), now() - 9999, &body, OTHER_SECRET_BYTES),
        signed_request(&event_id(4), now(), "{bad json", SECRET_BYTES),
    ];
    requests.push(TestRequest {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                "x-hmac-signature".into(),
                body_signature(b"nope", body.as_bytes()),
            ),
        ],
        body: body.clone().into_bytes(),
    });
    for request in &requests {
        let (_, answer) = server.send(&request.clone()).await;
        visible.push(answer.to_string());
    }
    server.publisher.set_mode(Mode::Unavailable);
    let (_, answer) = server
        .send(&signed_request(&event_id(5), now(), &body, SECRET_BYTES))
        .await;
    visible.push(answer.to_string());
    server.stop().await;

    // A config error about a bad secret names the key, not the value.
    let bad = IngressConfig {
        secrets: vec![BAD_SECRET.into()],
        ..IngressConfig::default()
    };
    let err = bad.validate().unwrap_err();
    visible.push(err.to_string());
    visible.push(format!("{err:?}"));
    visible.push(format!("{bad:?}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = nowpilot_ingress::run(
        bad,
        FakePublisher::new(),
        no_metrics(),
        listener,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    visible.push(format!("{err} {err:?}"));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("signature verification failed"),
        "the capture did not work:\n{logs}"
    );
    visible.push(logs);

    let b64 = base64::engine::general_purpose::STANDARD;
    let forbidden = [
        whsec(SECRET_BYTES),
        whsec(OTHER_SECRET_BYTES),
        b64.encode(SECRET_BYTES),
        b64.encode(OTHER_SECRET_BYTES),
        String::from_utf8(SECRET_BYTES.to_vec()).unwrap(),
        String::from_utf8(OTHER_SECRET_BYTES.to_vec()).unwrap(),
        BODY_SECRET.to_owned(),
        "leakme".to_owned(),
    ];
    for text in &visible {
        for secret in &forbidden {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} leaked in:\n{text}"
            );
        }
    }
}
