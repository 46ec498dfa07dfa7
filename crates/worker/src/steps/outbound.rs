//! The HTTP client of investigation steps: separate from the ServiceNow client, with a time
//! limit per call, no redirects to another host, a cap on response bodies, and the
//! allow-list checked on the exact URL right before sending.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;
use tokio::time::Instant;
use url::Url;

use crate::config::RunbookKey;
use crate::hosts::AllowedHosts;

/// Largest response body read from a probe, Prometheus or a runbook.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most redirects followed (same host only).
const MAX_REDIRECTS: usize = 5;

/// An answer to an outbound call.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, at most [`MAX_BODY_BYTES`].
    pub body: Vec<u8>,
    /// From sending to the end of the body.
    pub latency: Duration,
}

/// Why an outbound call produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The URL is refused by the allow-list (nothing was sent).
    #[error("not contacted: the URL {0}")]
    NotAllowed(String),
    /// No complete answer within the step's time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The body is larger than the cap.
    #[error("the response is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// DNS, connection, TLS or protocol failure.
    #[error("request failed: {0}")]
    Failed(String),
}

/// The step client.
#[derive(Debug, Clone)]
pub struct Outbound {
    http: reqwest::Client,
    hosts: AllowedHosts,
}

impl Outbound {
    /// A client that may contact `hosts`.
    pub fn new(hosts: AllowedHosts) -> Result<Self, reqwest::Error> {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let same_host = attempt
                .previous()
                .first()
                .is_some_and(|first| first.host_str() == attempt.url().host_str());
            if attempt.previous().len() > MAX_REDIRECTS || !same_host {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .user_agent(concat!("nowpilot/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .redirect(policy)
            .build()?;
        Ok(Outbound { http, hosts })
    }

    /// Checks a URL against the allow-list (for building URLs before sending).
    pub fn check(&self, raw: &str) -> Result<Url, OutboundError> {
        self.hosts.check_url(raw).map_err(OutboundError::NotAllowed)
    }

    /// Sends one request and reads the answer, all within `limit`.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
        limit: Duration,
    ) -> Result<Answer, OutboundError> {
        // Defence in depth: the URL was checked at load; check the one actually sent.
        let url = self.check(url.as_str())?;
        let started = Instant::now();
        let mut request = self
            .http
            .request(method, url)
            .headers(headers)
            .timeout(limit);
        if let Some(body) = body {
            request = request.body(body);
        }
        let exchange = async {
            let mut response = request.send().await.map_err(describe)?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(describe)? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(OutboundError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer {
                status,
                body,
                latency: started.elapsed(),
            })
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(Err(OutboundError::Failed(reason))) if reason == TIMED_OUT => {
                Err(OutboundError::Timeout(limit))
            }
            Ok(result) => result,
            Err(_) => Err(OutboundError::Timeout(limit)),
        }
    }
}

const TIMED_OUT: &str = "timed out";

fn describe(error: reqwest::Error) -> OutboundError {
    if error.is_timeout() {
        return OutboundError::Failed(TIMED_OUT.to_owned());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    OutboundError::Failed(text)
}

/// The Standard Webhooks headers for `body`: `webhook-id`, `webhook-timestamp` (unix
/// seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{ts}.{body}">`).
pub fn sign(key: &RunbookKey, id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let signature = signature(key.bytes(), id, timestamp, body);
    let pairs = [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", format!("v1,{signature}")),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; this cannot happen, and an empty tag fails closed.
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_test_vector() {
        // The Standard Webhooks reference vector (svix libraries' tests).
        let key = RunbookKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let headers = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            headers["webhook-signature"],
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(headers["webhook-timestamp"], "1614265330");
    }
}
