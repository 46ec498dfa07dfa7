//! Who may see the status page: the connection API's rule, plus a way in for browsers.
//!
//! With an `[admin] token`, every request needs it, as the connection API does: an
//! `Authorization: Bearer <token>` header (compared by [`crate::api`]). A browser cannot send
//! that header on a plain page load, so the page also accepts the token **once** as
//! `?token=<token>`: it answers with a redirect to the same path without the query and sets
//! an `HttpOnly`, `SameSite=Strict` cookie holding an HMAC of the token (never the token
//! itself), which later loads and the page's own refreshes carry. Rendered links never
//! contain the token. Without a token the page is only mounted on a loopback address (see
//! [`super::mount`]), and then it is open.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

/// The cookie that carries a browser's access.
pub const COOKIE: &str = "nowpilot_status";

/// What separates the cookie value from the token.
const COOKIE_LABEL: &[u8] = b"nowpilot-status-cookie-v1";

/// The page's access rule.
#[derive(Clone)]
pub(crate) struct Access {
    token: Option<Arc<SecretString>>,
}

impl Access {
    pub(crate) fn new(token: Option<SecretString>) -> Self {
        Access {
            token: token.map(Arc::new),
        }
    }
}

fn cookie_mac(token: &SecretString) -> Option<Hmac<sha2::Sha256>> {
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(token.expose_secret().as_bytes()).ok()?;
    mac.update(COOKIE_LABEL);
    Some(mac)
}

/// The cookie value for `token`: hex of HMAC-SHA256(token, label). It proves knowledge of the
/// token without revealing it, and changes when the token changes.
pub(crate) fn cookie_value(token: &SecretString) -> String {
    cookie_mac(token)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

fn cookie_matches(headers: &HeaderMap, token: &SecretString) -> bool {
    let presented = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| hex::decode(value.trim()).ok());
    match (presented, cookie_mac(token)) {
        // verify_slice compares in constant time.
        (Some(bytes), Some(mac)) => mac.verify_slice(&bytes).is_ok(),
        _ => false,
    }
}

/// The query token, compared exactly as a bearer header would be.
fn query_token_matches(presented: &str, token: &SecretString) -> bool {
    let mut headers = HeaderMap::new();
    match HeaderValue::from_str(&format!("Bearer {presented}")) {
        Ok(value) => {
            headers.insert(header::AUTHORIZATION, value);
            crate::api::bearer_matches(&headers, token)
        }
        Err(_) => false,
    }
}

/// The middleware in front of every status route.
pub(crate) async fn require_access(
    State(access): State<Access>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = access.token.as_deref() else {
        return next.run(request).await;
    };
    let headers = request.headers();
    if crate::api::bearer_matches(headers, token) || cookie_matches(headers, token) {
        return next.run(request).await;
    }
    let query: Option<Query<HashMap<String, String>>> = Query::try_from_uri(request.uri()).ok();
    let presented = query.and_then(|Query(q)| q.get("token").cloned());
    if let Some(presented) = presented
        && query_token_matches(&presented, token)
    {
        return sign_in(&request, token);
    }
    refuse(request.uri().path())
}

/// The redirect that swaps the query token for the cookie.
fn sign_in(request: &Request, token: &SecretString) -> Response {
    // Behind a TLS-terminating proxy the cookie must only travel over HTTPS.
    let https = request
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{}",
        cookie_value(token),
        if https { "; Secure" } else { "" }
    );
    let location = request.uri().path().to_owned();
    let mut response = (StatusCode::SEE_OTHER, "signed in").into_response();
    let headers = response.headers_mut();
    if let (Ok(cookie), Ok(location)) = (
        HeaderValue::from_str(&cookie),
        HeaderValue::from_str(&location),
    ) {
        headers.insert(header::SET_COOKIE, cookie);
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn refuse(path: &str) -> Response {
    if path.starts_with("/api/") {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({
                "code": "unauthorized",
                "message": "a valid bearer token is required",
            })),
        )
            .into_response();
    }
    let page = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
        <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
        <title>nowpilot status: sign in</title></head><body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem\">\
        <h1>nowpilot status</h1><p>This page needs the admin token (<code>[admin] token</code>).</p>\
        <p>Open this address once with <code>?token=</code> followed by the token; the page then \
        remembers you with a cookie and drops the token from the address. Scripts can send \
        <code>Authorization: Bearer</code> instead.</p></body></html>";
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Html(page),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_proves_the_token_without_containing_it() {
        let token = SecretString::from("s3cret-admin-token".to_owned());
        let value = cookie_value(&token);
        assert_eq!(value.len(), 64);
        assert!(!value.contains("s3cret"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).unwrap(),
        );
        assert!(cookie_matches(&headers, &token));
        let other = SecretString::from("another-token".to_owned());
        assert!(!cookie_matches(&headers, &other));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("nowpilot_status=zz-not-hex"),
        );
        assert!(!cookie_matches(&headers, &token));
        assert!(query_token_matches("s3cret-admin-token", &token));
        assert!(!query_token_matches("s3cret-admin-toke", &token));
        assert!(!query_token_matches("bad\nvalue", &token));
    }
}
