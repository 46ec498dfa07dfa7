//! One HTTP exchange with the instance: concurrency cap, shared rate-limit pause, metrics,
//! bounded body reading and error mapping. Retry policy lives in the client; this layer sends
//! exactly once.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::{ApiMessage, Error, RequestContext};

/// Most bytes read from an error body; enough for any envelope, and the rest is noise.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Longest pause a gate records; a server asking for more is treated as asking for this.
const MAX_PAUSE: Duration = Duration::from_secs(24 * 60 * 60);

/// A raw answer: status, headers, body bytes (bounded).
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// A pause shared by every client of one instance in this process: after a 429, nobody sends
/// to that instance until the time the server named.
#[derive(Debug, Default)]
pub(crate) struct RateGate {
    paused_until: Mutex<Option<Instant>>,
}

static GATES: LazyLock<Mutex<HashMap<String, Weak<RateGate>>>> = LazyLock::new(Default::default);

/// The gate for an instance base URL, shared with every other live client of that instance.
pub(crate) fn gate_for(base_url: &str) -> Arc<RateGate> {
    let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(gate) = gates.get(base_url).and_then(Weak::upgrade) {
        return gate;
    }
    gates.retain(|_, weak| weak.strong_count() > 0);
    let gate = Arc::new(RateGate::default());
    gates.insert(base_url.to_owned(), Arc::downgrade(&gate));
    gate
}

impl RateGate {
    /// How long the instance is still paused, if it is.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let until = (*self
            .paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner))?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Pauses the instance for `wait` from now (never shortening a longer pause). Returns
    /// whether this started a new pause, so callers log once per pause rather than once per
    /// request.
    pub(crate) fn pause(&self, wait: Duration) -> bool {
        let now = Instant::now();
        let until = now.checked_add(wait.min(MAX_PAUSE)).unwrap_or(now);
        let mut guard = self
            .paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let was_paused = guard.is_some_and(|u| u > now);
        if guard.is_none_or(|u| u < until) {
            *guard = Some(until);
        }
        !was_paused && until > now
    }
}

/// Shared sending machinery of a client.
#[derive(Debug)]
pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
    pub(crate) limiter: Option<Arc<Semaphore>>,
    pub(crate) gate: Arc<RateGate>,
    pub(crate) timeout: Duration,
    pub(crate) max_rate_limit_wait: Duration,
    pub(crate) max_response_bytes: usize,
}

/// Keeps the in-flight gauge right even when a future is dropped mid-request.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!(crate::telemetry::IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::IN_FLIGHT).decrement(1.0);
    }
}

impl Transport {
    /// Waits out a shared rate-limit pause; refuses at once when the pause is longer than
    /// the client is willing to wait, so the caller can delay through its own queue.
    pub(crate) async fn wait_for_gate(&self, context: &RequestContext) -> Result<(), Error> {
        while let Some(left) = self.gate.remaining() {
            if left > self.max_rate_limit_wait {
                return Err(Error::RateLimited {
                    context: context.clone(),
                    retry_after: Some(left),
                    api: ApiMessage {
                        message: "requests to this instance are paused after a 429".to_owned(),
                        detail: None,
                    },
                });
            }
            tokio::time::sleep(left).await;
        }
        Ok(())
    }

    /// Sends one request and reads its body (bounded), recording metrics.
    pub(crate) async fn send(
        &self,
        context: &RequestContext,
        request: reqwest::RequestBuilder,
    ) -> Result<RawResponse, Error> {
        let _permit = match &self.limiter {
            Some(semaphore) => semaphore.clone().acquire_owned().await.ok(),
            None => None,
        };
        let _in_flight = InFlight::start();
        let started = Instant::now();
        let outcome = self.exchange(context, request.timeout(self.timeout)).await;
        let status_label = match &outcome {
            Ok(response) => response.status.to_string(),
            Err(_) => "error".to_owned(),
        };
        metrics::counter!(
            crate::telemetry::REQUESTS_TOTAL,
            "method" => context.method.clone(),
            "table" => context.table.clone(),
            "status" => status_label,
        )
        .increment(1);
        metrics::histogram!(
            crate::telemetry::REQUEST_DURATION_SECONDS,
            "method" => context.method.clone(),
            "table" => context.table.clone(),
        )
        .record(started.elapsed().as_secs_f64());
        outcome
    }

    async fn exchange(
        &self,
        context: &RequestContext,
        request: reqwest::RequestBuilder,
    ) -> Result<RawResponse, Error> {
        let mut response = request.send().await.map_err(|e| map_reqwest(context, &e))?;
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let success = (200..300).contains(&status);
        let limit = if success {
            self.max_response_bytes
        } else {
            ERROR_BODY_LIMIT
        };
        let mut body = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| map_reqwest(context, &e))?;
            let Some(chunk) = chunk else { break };
            if body.len().saturating_add(chunk.len()) > limit {
                if success {
                    return Err(Error::Decode {
                        context: context.clone(),
                        status,
                        reason: format!(
                            "the response body is larger than {limit} bytes; ask for fewer rows or fields"
                        ),
                    });
                }
                let room = limit.saturating_sub(body.len());
                body.extend_from_slice(chunk.get(..room).unwrap_or_default());
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }
}

/// Maps a reqwest failure to a typed error without the URL (which never carries secrets here,
/// but keeps messages short) and without any header.
pub(crate) fn map_reqwest(context: &RequestContext, error: &reqwest::Error) -> Error {
    let reason = describe(error);
    if error.is_timeout() {
        Error::Timeout {
            context: context.clone(),
        }
    } else if error.is_connect() {
        Error::Connect {
            context: context.clone(),
            reason,
        }
    } else {
        Error::Transport {
            context: context.clone(),
            reason,
        }
    }
}

/// The error and its causes on one line, so a TLS or DNS reason is not lost.
fn describe(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut current: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        current = e.source();
    }
    // reqwest prefixes the URL; it carries no secret, but the operator knows it already.
    text.replace(" for url (", " (")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_are_shared_per_instance_and_dropped_with_their_clients() {
        let a = gate_for("https://gate-test-a.example");
        let b = gate_for("https://gate-test-a.example");
        let c = gate_for("https://gate-test-c.example");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b));
        let again = gate_for("https://gate-test-a.example");
        assert!(again.remaining().is_none());
    }

    #[tokio::test]
    async fn pause_reports_only_new_pauses_and_never_shortens() {
        let gate = RateGate::default();
        assert!(gate.pause(Duration::from_secs(30)));
        assert!(!gate.pause(Duration::from_secs(1)));
        assert!(gate.remaining().unwrap() > Duration::from_secs(20));
        assert!(!gate.pause(Duration::ZERO) || gate.remaining().is_some());
        let fresh = RateGate::default();
        assert!(!fresh.pause(Duration::ZERO));
        assert!(fresh.remaining().is_none());
        // Absurd waits are capped instead of overflowing.
        assert!(fresh.pause(Duration::MAX));
    }
}
