//! A wire recorder in front of the simulator (every credential the processes really sent or
//! received) and a runbook receiver that checks signatures.
//!
//! The recorder sees credentials in the form they travel in — `Authorization` header values,
//! the token endpoint's form fields and its answers (access and refresh tokens the simulator
//! issued) — so the search also looks for forms the test did not compute itself.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use tokio_util::sync::CancellationToken;

use crate::faults_support::http_relay::{HttpRelay, Tap};

const TOKEN_PATH: &str = "/oauth_token.do";

/// Credentials seen on the wire.
#[derive(Debug, Clone, Default)]
pub(crate) struct Captured {
    /// Every `Authorization` header value sent (`Basic …`, `Bearer …`), and its credential
    /// part alone.
    pub(crate) authorizations: BTreeSet<String>,
    /// Access tokens the token endpoint issued.
    pub(crate) access_tokens: BTreeSet<String>,
    /// Refresh tokens the token endpoint issued or was sent.
    pub(crate) refresh_tokens: BTreeSet<String>,
    /// `client_secret` and `password` values sent to the token endpoint.
    pub(crate) form_secrets: BTreeSet<String>,
}

/// Records what passes through the relay.
#[derive(Default)]
struct WireTap {
    captured: Mutex<Captured>,
}

impl Tap for WireTap {
    fn request(&self, parts: &Parts, body: &Bytes) -> Option<Response> {
        let mut captured = self.captured.lock().expect("lock");
        if let Some(value) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            captured.authorizations.insert(value.to_owned());
            if let Some((_, credential)) = value.split_once(' ') {
                captured.authorizations.insert(credential.trim().to_owned());
            }
        }
        if parts.uri.path() == TOKEN_PATH {
            for (name, value) in url::form_urlencoded::parse(body) {
                match name.as_ref() {
                    "client_secret" | "password" => {
                        captured.form_secrets.insert(value.into_owned());
                    }
                    "refresh_token" => {
                        captured.refresh_tokens.insert(value.into_owned());
                    }
                    _ => {}
                }
            }
        }
        None
    }

    fn response(&self, parts: &Parts, status: StatusCode, body: &Bytes) {
        if parts.uri.path() != TOKEN_PATH || !status.is_success() {
            return;
        }
        let Ok(grant) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let mut captured = self.captured.lock().expect("lock");
        if let Some(token) = grant["access_token"].as_str() {
            captured.access_tokens.insert(token.to_owned());
        }
        if let Some(token) = grant["refresh_token"].as_str() {
            captured.refresh_tokens.insert(token.to_owned());
        }
    }
}

/// An HTTP proxy that forwards everything to `upstream` and records the credentials.
pub(crate) struct WireRecorder {
    /// `127.0.0.1:<port>`.
    pub(crate) addr: SocketAddr,
    relay: HttpRelay<WireTap>,
}

impl WireRecorder {
    /// Starts a recorder forwarding to `upstream` (`http://host:port`).
    pub(crate) async fn start(upstream: &str) -> WireRecorder {
        let relay = HttpRelay::start(upstream, WireTap::default()).await;
        WireRecorder {
            addr: relay.addr,
            relay,
        }
    }

    /// What it has seen so far.
    pub(crate) fn captured(&self) -> Captured {
        self.relay.tap().captured.lock().expect("lock").clone()
    }
}

/// A runbook endpoint: answers 202 to calls signed with `key` (Standard Webhooks), 401 to
/// others, and counts both.
pub(crate) struct RunbookReceiver {
    /// `127.0.0.1:<port>`.
    pub(crate) addr: SocketAddr,
    counts: Arc<(AtomicU64, AtomicU64)>,
    shutdown: CancellationToken,
}

impl RunbookReceiver {
    /// Starts a receiver verifying with `key`.
    pub(crate) async fn start(key: Vec<u8>) -> RunbookReceiver {
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the runbook receiver");
        let addr = listener.local_addr().expect("address");
        let seen = counts.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            let key = key.clone();
            async move {
                if signed(&key, &headers, &body) {
                    seen.0.fetch_add(1, Ordering::SeqCst);
                    StatusCode::ACCEPTED
                } else {
                    seen.1.fetch_add(1, Ordering::SeqCst);
                    StatusCode::UNAUTHORIZED
                }
            }
        });
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        RunbookReceiver {
            addr,
            counts,
            shutdown,
        }
    }

    /// Calls whose signature verified.
    pub(crate) fn verified(&self) -> u64 {
        self.counts.0.load(Ordering::SeqCst)
    }

    /// Calls without a valid signature.
    pub(crate) fn refused(&self) -> u64 {
        self.counts.1.load(Ordering::SeqCst)
    }
}

impl Drop for RunbookReceiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn signed(key: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(signature)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    signature
        .strip_prefix("v1,")
        .and_then(|tag| base64::engine::general_purpose::STANDARD.decode(tag).ok())
        .is_some_and(|tag| mac.verify_slice(&tag).is_ok())
}
