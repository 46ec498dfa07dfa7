//! An HTTP relay on 127.0.0.1:0 that forwards every request to an upstream unchanged, and lets
//! a test watch each exchange, or answer a request itself. The token-endpoint fault proxy and
//! the secrets test's wire recorder are both a relay with their own [`Tap`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// Largest request body forwarded (the upstream's answers are read whole too).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What a test sees of the traffic through a relay.
pub(crate) trait Tap: Send + Sync + 'static {
    /// A request before it is forwarded; `Some` answers it instead of the upstream.
    fn request(&self, _parts: &Parts, _body: &Bytes) -> Option<Response> {
        None
    }

    /// The upstream's answer to a forwarded request.
    fn response(&self, _parts: &Parts, _status: StatusCode, _body: &Bytes) {}
}

struct RelayState<T> {
    upstream: String,
    client: reqwest::Client,
    tap: Arc<T>,
}

/// A running relay; stops when dropped.
pub(crate) struct HttpRelay<T> {
    /// `127.0.0.1:<port>`.
    pub(crate) addr: SocketAddr,
    tap: Arc<T>,
    shutdown: CancellationToken,
}

impl<T: Tap> HttpRelay<T> {
    /// Starts a relay forwarding to `upstream` (`http://host:port`), watched by `tap`.
    pub(crate) async fn start(upstream: &str, tap: T) -> HttpRelay<T> {
        let tap = Arc::new(tap);
        let state = Arc::new(RelayState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client"),
            tap: Arc::clone(&tap),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the HTTP relay");
        let addr = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        let app = axum::Router::new().fallback(forward::<T>).with_state(state);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        HttpRelay {
            addr,
            tap,
            shutdown,
        }
    }

    /// The relay's tap.
    pub(crate) fn tap(&self) -> &T {
        &self.tap
    }
}

impl<T> Drop for HttpRelay<T> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn forward<T: Tap>(State(state): State<Arc<RelayState<T>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if let Some(answer) = state.tap.request(&parts, &bytes) {
        return answer;
    }
    let target = format!(
        "{}{}",
        state.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut outbound = state.client.request(parts.method.clone(), target);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            outbound = outbound.header(name.clone(), value.clone());
        }
    }
    let Ok(answer) = outbound.body(bytes).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let Ok(body) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    state.tap.response(&parts, status, &body);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
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
