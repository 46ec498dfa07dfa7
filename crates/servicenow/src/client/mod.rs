//! The Table API client.
//!
//! [`Client`] is cheap to clone (an `Arc` inside) and safe to share. Every call goes to
//! `/api/now/v2/table/{table}` (v2 answers an empty list with `200 []`, not 404), carries
//! `Accept: application/json` (and `Content-Type: application/json` on writes), and follows
//! one retry policy:
//!
//! - **401 with OAuth**: drop the token, obtain a new one, retry once (a 401 means nothing was
//!   done, so this is safe for writes). A second 401 is returned. Basic auth never retries.
//! - **429**: wait as the server asks (`Retry-After`, else `X-RateLimit-Reset`, else a short
//!   backoff), pausing every client of the same instance in this process, then retry the same
//!   request (a 429 is refused before any work). At most `max_rate_limit_waits` times, and only
//!   while the wait is at most `max_rate_limit_wait`; beyond that [`Error::RateLimited`] goes
//!   back to the caller so it can delay through its queue.
//! - **GET only**: connect errors, timeouts and 500/502/503/504 are retried `get_retries` times
//!   with a short jittered backoff. Writes are never retried on those: they may have committed.

mod table;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tracing::Instrument;
use url::Url;

pub use table::{DisplayValue, ListRequest, Page, ReadOptions};

use crate::auth::manager::TokenManager;
use crate::auth::{Credentials, token_url};
use crate::config::{ConfigError, ResolvedConfig};
use crate::error::{Error, RequestContext};
use crate::instance::InstanceUrl;
use crate::response::{check_status, retry_after};
use crate::transport::{RawResponse, Transport, gate_for};

/// Tuning of a [`Client`]. `Default` gives production settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Most HTTP calls in flight at once from this client, token requests included (`None`:
    /// no cap). ServiceNow serves API calls from a small semaphore pool; a cap keeps one
    /// process from exhausting it.
    pub max_in_flight: Option<usize>,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Time limit for establishing a connection (the per-call limit is the configured
    /// `timeout`).
    pub connect_timeout: Duration,
    /// Extra attempts for a GET after a connect error, timeout or 500/502/503/504.
    pub get_retries: u32,
    /// Base delay between those attempts (doubled each time, jittered).
    pub retry_backoff: Duration,
    /// How many times one call waits out a 429 before giving up.
    pub max_rate_limit_waits: u32,
    /// The longest 429 wait the client sits through; longer waits are returned as
    /// [`Error::RateLimited`] at once.
    pub max_rate_limit_wait: Duration,
    /// Largest success body accepted (a list page of many wide records can be large).
    pub max_response_bytes: usize,
    /// `sysparm_limit` used by [`Client::list_all`] when the request sets none.
    pub page_size: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_in_flight: None,
            user_agent: concat!("nowpilot/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(10),
            get_retries: 2,
            retry_backoff: Duration::from_millis(250),
            max_rate_limit_waits: 3,
            max_rate_limit_wait: Duration::from_secs(60),
            max_response_bytes: 64 * 1024 * 1024,
            page_size: 1000,
        }
    }
}

enum Auth {
    /// The `Authorization: Basic ...` value, encoded once and marked sensitive (hyper and
    /// `Debug` never show it).
    Basic {
        header: http::HeaderValue,
    },
    OAuth(Box<TokenManager>),
}

struct Inner {
    instance: InstanceUrl,
    transport: Transport,
    auth: Auth,
    auth_description: String,
    options: ClientOptions,
}

/// A ServiceNow Table API client. Clone freely: clones share connections, tokens, the
/// concurrency cap and the rate-limit pause.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("instance", &self.inner.instance)
            .field("auth", &self.inner.auth_description)
            .finish_non_exhaustive()
    }
}

/// One logical call: what to send and how to label it.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) table: &'a str,
    pub(crate) url: Url,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) quiet: bool,
}

impl Client {
    /// Builds a client. Fails only when the HTTP stack cannot be initialised.
    pub fn new(config: ResolvedConfig, options: ClientOptions) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .connect_timeout(options.connect_timeout.min(config.timeout))
            // A redirect from the Table API is a login page or a wrong URL, never data.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::HttpClient {
                reason: e.to_string(),
            })?;
        let auth_description = config.credentials.description();
        let auth = match config.credentials {
            Credentials::Basic { username, password } => Auth::Basic {
                header: basic_header(&username, &password)?,
            },
            Credentials::OAuth {
                client_id,
                client_secret,
                grant,
            } => Auth::OAuth(Box::new(TokenManager::new(
                token_url(&config.instance),
                client_id,
                client_secret,
                grant,
            ))),
        };
        let transport = Transport {
            http,
            limiter: options
                .max_in_flight
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            gate: gate_for(config.instance.as_str()),
            timeout: config.timeout,
            max_rate_limit_wait: options.max_rate_limit_wait,
            max_response_bytes: options.max_response_bytes,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                instance: config.instance,
                transport,
                auth,
                auth_description,
                options,
            }),
        })
    }

    /// The instance this client talks to.
    pub fn instance(&self) -> &InstanceUrl {
        &self.inner.instance
    }

    /// `basic`, `oauth (client_credentials)`, `oauth (password)` or `oauth (refresh_token)`.
    pub fn auth_description(&self) -> &str {
        &self.inner.auth_description
    }

    /// With OAuth, obtains an access token now (a credentials check); with Basic, does
    /// nothing (Basic credentials are only checked by a real call).
    pub async fn authenticate(&self) -> Result<(), Error> {
        match &self.inner.auth {
            Auth::Basic { .. } => Ok(()),
            Auth::OAuth(tokens) => tokens.bearer(&self.inner.transport).await.map(|_| ()),
        }
    }

    /// The newest OAuth refresh token (the instance may hand out a new one), so the CLI can
    /// save it. `None` with Basic auth or when the grant never returned one.
    pub fn current_refresh_token(&self) -> Option<SecretString> {
        match &self.inner.auth {
            Auth::Basic { .. } => None,
            Auth::OAuth(tokens) => tokens.current_refresh_token(),
        }
    }

    /// Sends a call under the retry policy described in the module docs and returns the
    /// successful raw answer.
    pub(crate) async fn execute(&self, call: Call<'_>) -> Result<RawResponse, Error> {
        let span = tracing::info_span!(
            "servicenow_call",
            method = %call.method,
            table = %call.table,
            status = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        self.execute_inner(call).instrument(span).await
    }

    async fn execute_inner(&self, call: Call<'_>) -> Result<RawResponse, Error> {
        let inner = &*self.inner;
        let options = &inner.options;
        let context = RequestContext::new(call.method.as_str(), call.table);
        let idempotent = call.method == Method::GET;
        let mut transient_retries = 0u32;
        let mut rate_limit_waits = 0u32;
        let mut reauthenticated = false;
        let mut attempts = 0u32;
        let span = tracing::Span::current();
        loop {
            attempts += 1;
            span.record("attempts", attempts);
            inner.transport.wait_for_gate(&context).await?;
            let mut request = inner
                .transport
                .http
                .request(call.method.clone(), call.url.clone())
                .header(http::header::ACCEPT, "application/json");
            if let Some(body) = &call.body {
                request = request
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            if call.quiet {
                request = request.header("X-no-response-body", "true");
            }
            let generation = match &inner.auth {
                Auth::Basic { header } => {
                    request = request.header(http::header::AUTHORIZATION, header.clone());
                    None
                }
                Auth::OAuth(tokens) => {
                    let bearer = tokens.bearer(&inner.transport).await?;
                    request = request.bearer_auth(bearer.token.expose_secret());
                    Some(bearer.generation)
                }
            };
            let response = match inner.transport.send(&context, request).await {
                Ok(response) => response,
                Err(error) => {
                    let transient = matches!(
                        error,
                        Error::Timeout { .. } | Error::Connect { .. } | Error::Transport { .. }
                    );
                    if idempotent && transient && transient_retries < options.get_retries {
                        tracing::debug!(%error, "retrying GET after a transport failure");
                        backoff(options.retry_backoff, transient_retries).await;
                        transient_retries += 1;
                        continue;
                    }
                    span.record("status", "error");
                    return Err(error);
                }
            };
            span.record("status", response.status);
            match response.status {
                200..=299 => return Ok(response),
                401 => {
                    if let (Some(generation), Auth::OAuth(tokens), false) =
                        (generation, &inner.auth, reauthenticated)
                    {
                        tracing::info!("access token refused; re-authenticating once");
                        tokens.invalidate(generation);
                        reauthenticated = true;
                        continue;
                    }
                }
                429 => {
                    metrics::counter!(crate::telemetry::RATE_LIMITED_TOTAL).increment(1);
                    let asked = retry_after(&response.headers, std::time::SystemTime::now());
                    let wait = asked.unwrap_or_else(|| fallback_rate_limit_wait(rate_limit_waits));
                    if inner.transport.gate.pause(wait) {
                        tracing::warn!(
                            instance = %inner.instance,
                            wait_seconds = wait.as_secs_f64(),
                            "ServiceNow rate limit (429); pausing every request to this instance"
                        );
                    }
                    if rate_limit_waits < options.max_rate_limit_waits
                        && wait <= options.max_rate_limit_wait
                    {
                        rate_limit_waits += 1;
                        continue;
                    }
                    return Err(Error::RateLimited {
                        context,
                        retry_after: Some(wait),
                        api: crate::response::api_message(&response.body),
                    });
                }
                500 | 502 | 503 | 504 if idempotent && transient_retries < options.get_retries => {
                    tracing::debug!(
                        status = response.status,
                        "retrying GET after a server error"
                    );
                    backoff(options.retry_backoff, transient_retries).await;
                    transient_retries += 1;
                    continue;
                }
                _ => {}
            }
            check_status(&context, response.status, &response.headers, &response.body)?;
            // check_status only accepts 2xx, handled above; keep the answer rather than panic.
            return Ok(response);
        }
    }
}

/// `Basic base64(user:password)`, sensitive.
fn basic_header(username: &str, password: &SecretString) -> Result<http::HeaderValue, Error> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose_secret()));
    let mut value = http::HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
        Error::Config(ConfigError::HttpClient {
            reason: "the Basic credentials cannot form an Authorization header".to_owned(),
        })
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Exponential backoff with jitter: `base × 2^attempt`, scaled by a random factor in
/// [0.5, 1.0] so that many clients do not retry in lockstep.
async fn backoff(base: Duration, attempt: u32) {
    let factor = 2u32.saturating_pow(attempt.min(16));
    let delay = base.saturating_mul(factor).min(MAX_BACKOFF);
    tokio::time::sleep(jittered(delay, 0.5)).await;
}

/// The longest single backoff between GET retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `delay` scaled by a random factor in [`low`, 1.0].
fn jittered(delay: Duration, low: f64) -> Duration {
    let factor: f64 = rand::random_range(low..=1.0);
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(delay)
}

/// Wait after a 429 without `Retry-After` or `X-RateLimit-Reset` (semaphore exhaustion):
/// 1 s, 2 s, 4 s, … jittered.
fn fallback_rate_limit_wait(waits_so_far: u32) -> Duration {
    let factor = 2u32.saturating_pow(waits_so_far.min(6));
    jittered(Duration::from_secs(u64::from(factor)), 0.75)
}
