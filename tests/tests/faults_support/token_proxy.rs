//! An HTTP proxy in front of the simulator that can make the OAuth token endpoint fail while
//! the Table API keeps working.
//!
//! The simulator's own fault controls cannot stage this: a forced status (`set_faults`) answers
//! the Table API and `/oauth_token.do` alike, and cutting the TCP link takes both down too.
//! A real instance's token endpoint can fail on its own (a node restarting, the OAuth plugin
//! erroring, a load balancer rule); this proxy answers `/oauth_token.do` with the load
//! balancer's 503 page while [`TokenFaultProxy::fail_tokens`] is on, and forwards everything
//! else unchanged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::http_relay::{HttpRelay, Tap};

/// The token endpoint's path.
const TOKEN_PATH: &str = "/oauth_token.do";

#[derive(Default)]
struct TokenFaults {
    failing: AtomicBool,
    refused: AtomicU64,
    granted: AtomicU64,
}

impl Tap for TokenFaults {
    fn request(&self, parts: &Parts, _body: &Bytes) -> Option<Response> {
        if parts.uri.path() == TOKEN_PATH && self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Some(unavailable());
        }
        None
    }

    fn response(&self, parts: &Parts, status: StatusCode, _body: &Bytes) {
        if parts.uri.path() == TOKEN_PATH && status.is_success() {
            self.granted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The proxy; stops when dropped.
pub(crate) struct TokenFaultProxy {
    /// `127.0.0.1:<port>`.
    pub(crate) addr: std::net::SocketAddr,
    relay: HttpRelay<TokenFaults>,
}

impl TokenFaultProxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `upstream` (`http://host:port`).
    pub(crate) async fn start(upstream: &str) -> TokenFaultProxy {
        let relay = HttpRelay::start(upstream, TokenFaults::default()).await;
        TokenFaultProxy {
            addr: relay.addr,
            relay,
        }
    }

    /// Makes the token endpoint answer 503 (`true`) or work again (`false`).
    pub(crate) fn fail_tokens(&self, failing: bool) {
        self.relay.tap().failing.store(failing, Ordering::SeqCst);
    }

    /// Token requests the proxy refused.
    pub(crate) fn refused(&self) -> u64 {
        self.relay.tap().refused.load(Ordering::SeqCst)
    }

    /// Token requests the simulator answered with a token (2xx).
    pub(crate) fn granted(&self) -> u64 {
        self.relay.tap().granted.load(Ordering::SeqCst)
    }
}

/// What a load balancer answers when no instance node takes the request (the same page the
/// simulator sends for a forced 503).
fn unavailable() -> Response {
    let mut response = Response::new(Body::from(
        "<html><head><title>503 Service Unavailable</title></head><body>\
         <h1>Service Unavailable</h1><p>No server is available to handle this request.</p>\
         </body></html>",
    ));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}
