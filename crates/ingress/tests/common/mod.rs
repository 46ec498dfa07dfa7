//! Shared test harness: a recording publisher, a server on 127.0.0.1:0, signing helpers and a
//! raw HTTP/1.1 client for requests reqwest will not send (lying lengths, chunked bodies).
#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use nowpilot_ingress::{
    EventPublisher, IngressConfig, IngressState, PublishError, Readiness, RenderMetrics,
};
use nowpilot_model::EventEnvelope;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET_BYTES: &[u8] = b"nowpilot-test-secret-0123456789!";
pub const OTHER_SECRET_BYTES: &[u8] = b"the-rotated-in-secret-abcdefghij";
pub const SYS_ID: &str = "9d385017c611228701d22104cc95c371";

pub fn whsec(bytes: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// What the fake broker does with a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Confirm,
    Unavailable,
    Timeout,
    /// Wait for [`FakePublisher::release`], then confirm.
    Hold,
}

/// Records every confirmed envelope.
pub struct FakePublisher {
    mode: Mutex<Mode>,
    ready: watch::Sender<Readiness>,
    published: Mutex<Vec<EventEnvelope>>,
    attempts: AtomicUsize,
    entered: Notify,
    gate: Semaphore,
}

impl FakePublisher {
    pub fn new() -> Arc<Self> {
        Arc::new(FakePublisher {
            mode: Mutex::new(Mode::Confirm),
            ready: watch::Sender::new(Readiness::ready()),
            published: Mutex::new(Vec::new()),
            attempts: AtomicUsize::new(0),
            entered: Notify::new(),
            gate: Semaphore::new(0),
        })
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn set_ready(&self, readiness: Readiness) {
        self.ready.send_replace(readiness);
    }

    pub fn published(&self) -> Vec<EventEnvelope> {
        self.published.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` publishes have started.
    pub async fn wait_for_attempts(&self, n: usize) {
        loop {
            let entered = self.entered.notified();
            if self.attempts() >= n {
                return;
            }
            entered.await;
        }
    }

    /// Lets `n` held publishes confirm.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

#[async_trait::async_trait]
impl EventPublisher for FakePublisher {
    async fn publish(&self, event: &EventEnvelope) -> Result<(), PublishError> {
        let mode = *self.mode.lock().unwrap();
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.entered.notify_waiters();
        match mode {
            Mode::Confirm => {}
            Mode::Unavailable => {
                return Err(PublishError::Unavailable {
                    reason: "connection refused".into(),
                });
            }
            Mode::Timeout => {
                return Err(PublishError::Timeout {
                    after: Duration::from_secs(5),
                });
            }
            Mode::Hold => self.gate.acquire().await.unwrap().forget(),
        }
        self.published.lock().unwrap().push(event.clone());
        Ok(())
    }

    fn readiness(&self) -> Readiness {
        self.ready.borrow().clone()
    }

    fn readiness_watch(&self) -> watch::Receiver<Readiness> {
        self.ready.subscribe()
    }
}

/// A running ingress.
pub struct TestServer {
    pub addr: SocketAddr,
    pub publisher: Arc<FakePublisher>,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), nowpilot_ingress::IngressError>>,
    pub client: reqwest::Client,
}

pub fn config() -> IngressConfig {
    IngressConfig {
        secrets: vec![whsec(SECRET_BYTES).into()],
        echo_users: vec!["nowpilot.integration".into()],
        ..IngressConfig::default()
    }
}

pub fn no_metrics() -> RenderMetrics {
    Arc::new(String::new)
}

pub async fn start(config: IngressConfig) -> TestServer {
    start_with(config, no_metrics()).await
}

pub async fn start_with(config: IngressConfig, render: RenderMetrics) -> TestServer {
    let publisher = FakePublisher::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(nowpilot_ingress::run(
        config,
        publisher.clone(),
        render,
        listener,
        shutdown.clone(),
    ));
    TestServer {
        addr,
        publisher,
        shutdown,
        handle,
        client: client(),
    }
}

/// Serves an already-built state (to reach `begin_shutdown` directly).
pub async fn start_state(state: IngressState) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(nowpilot_ingress::serve(state, listener, shutdown.clone()));
    (addr, shutdown)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Posts `body` signed for `id` with the default secret, now.
    pub async fn post_signed(&self, id: &str, body: &str) -> (u16, serde_json::Value) {
        let request = signed_request(id, now(), body, SECRET_BYTES);
        self.send(&request).await
    }

    pub async fn send(&self, request: &TestRequest) -> (u16, serde_json::Value) {
        let (status, _, body) = self.send_full(request).await;
        (status, body)
    }

    pub async fn send_full(
        &self,
        request: &TestRequest,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut builder = self
            .client
            .post(self.url(nowpilot_ingress::WEBHOOK_PATH))
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {text}"));
        (status, headers, json)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// A request as headers + body, so tests can tamper with any part.
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl TestRequest {
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub fn with(mut self, name: &str, value: &str) -> Self {
        self = self.without(name);
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn signature(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

pub fn body_signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

pub fn signed_request(id: &str, ts: i64, body: &str, key: &[u8]) -> TestRequest {
    TestRequest {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), ts.to_string()),
            (
                "webhook-signature".into(),
                format!("v1,{}", signature(key, id, ts, body.as_bytes())),
            ),
        ],
        body: body.as_bytes().to_vec(),
    }
}

/// A valid schema-1 payload for version `mod_count` of the test incident.
pub fn payload(mod_count: u64, updated_by: &str) -> String {
    serde_json::json!({
        "schema_version": 1,
        "instance": "dev12345",
        "table": "incident",
        "operation": "update",
        "sys_id": SYS_ID,
        "sys_mod_count": mod_count.to_string(),
        "sys_updated_on": "2026-05-01 10:00:00",
        "sys_updated_by": updated_by,
        "record": {"number": "INC0010001", "state": "2", "priority": "2",
                   "short_description": "Caf\u{e9} printer on fire"},
        "future_field": {"kept": true}
    })
    .to_string()
}

pub fn event_id(mod_count: u64) -> String {
    format!("{SYS_ID}-{mod_count}")
}

/// Sends raw bytes over one HTTP/1.1 connection and reads one response (status, body).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer before it read everything; a failed write is not the test's point.
    let _ = stream.write_all(request).await;
    read_response(&mut stream).await
}

pub async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                return (status, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("no response within 30 s")
            .expect("read failed");
        assert!(
            n > 0,
            "connection closed before a full response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A raw HTTP/1.1 POST head for the webhook with the given extra header lines.
pub fn raw_head(headers: &[(String, String)], framing: &str) -> Vec<u8> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nhost: test\r\n",
        nowpilot_ingress::WEBHOOK_PATH
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(framing);
    head.push_str("\r\n");
    head.into_bytes()
}
