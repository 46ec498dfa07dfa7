//! An HTTP proxy in front of the simulator that can make the OAuth token endpoint fail while
//! the Table API keeps working.
//!
//! The simulator's own fault controls cannot stage this: a forced status (`set_faults`) answers
//! the Table API and `/oauth_token.do` alike, and cutting the TCP link takes both down too.
//! A real instance's token endpoint can fail on its own (a node restarting, the OAuth plugin
//! erroring, a load balancer rule); this proxy answers `/oauth_token.do` with the load
//! balancer's 503 page while [`TokenFaultProxy::fail_tokens`] is on, and forwards everything
//! else unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio_util::sync::CancellationToken;

/// The token endpoint's path.
const TOKEN_PATH: &str = "/oauth_token.do";
/// Largest request body forwarded (the simulator's answers are read whole too).
const MAX_BODY: usize = 16 * 1024 * 1024;

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    failing: AtomicBool,
    refused: AtomicU64,
    granted: AtomicU64,
}

/// The proxy; stops when dropped.
pub(crate) struct TokenFaultProxy {
    /// `127.0.0.1:<port>`.
    pub(crate) addr: std::net::SocketAddr,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
}

impl TokenFaultProxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `upstream` (`http://host:port`).
    pub(crate) async fn start(upstream: &str) -> TokenFaultProxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client"),
            failing: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            granted: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the token proxy");
        let addr = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        TokenFaultProxy {
            addr,
            state,
            shutdown,
        }
    }

    /// Makes the token endpoint answer 503 (`true`) or work again (`false`).
    pub(crate) fn fail_tokens(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Token requests the proxy refused.
    pub(crate) fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Token requests the simulator answered with a token (2xx).
    pub(crate) fn granted(&self) -> u64 {
        self.state.granted.load(Ordering::SeqCst)
    }
}

impl Drop for TokenFaultProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let token = request.uri().path() == TOKEN_PATH;
    if token && state.failing.load(Ordering::SeqCst) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return unavailable();
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let target = format!(
        "{}{}",
        state.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut outbound = state.client.request(parts.method, target);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            outbound = outbound.header(name.clone(), value.clone());
        }
    }
    let Ok(answer) = outbound.body(bytes).send().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let code = answer.status();
    let headers = answer.headers().clone();
    let Ok(body) = answer.bytes().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    if token && code.is_success() {
        state.granted.fetch_add(1, Ordering::SeqCst);
    }
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = code;
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

/// Headers that belong to one connection, or that the server sets again for the new body.
fn hop_by_hop(name: &header::HeaderName) -> bool {
    [
        header::HOST,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
    ]
    .contains(name)
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
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
