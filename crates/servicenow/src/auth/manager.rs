//! Keeps one OAuth access token fresh for a client.
//!
//! - Single flight: one token request at a time; callers that arrive during a refresh wait for
//!   its result instead of sending their own.
//! - Refresh before expiry: when less than max(60 s, 10 % of the lifetime) remains (at most
//!   half the lifetime, so very short tokens are still used).
//! - The newest refresh token returned by the instance is kept and exposed, so the CLI can
//!   save a rotated one.
//! - When a refresh is refused, fall back to the primary grant where one exists
//!   (client_credentials or password); a refresh-token-only setup has nothing to fall back to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;
use url::Url;

use super::{
    GrantCredentials, TOKEN_ENDPOINT, TokenGrant, TokenSet, parse_token_response, token_request,
};
use crate::error::{Error, RequestContext};
use crate::transport::Transport;

const MIN_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A token this close to its expiry is not sent any more: it could expire in flight.
const EXPIRY_SAFETY: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct CachedToken {
    access: SecretString,
    refresh_at: Instant,
    usable_until: Instant,
    generation: u64,
}

/// A bearer token and the generation it belongs to (to invalidate exactly that one on 401).
pub(crate) struct Bearer {
    pub(crate) token: SecretString,
    pub(crate) generation: u64,
}

pub(crate) struct TokenManager {
    token_url: Url,
    client_id: String,
    client_secret: SecretString,
    primary: GrantCredentials,
    cache: Mutex<Option<CachedToken>>,
    refresh_token: Mutex<Option<SecretString>>,
    single_flight: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("grant", &self.primary)
            .finish_non_exhaustive()
    }
}

/// When to refresh a token of this lifetime, counted from when it was obtained.
pub(crate) fn refresh_after(lifetime: Duration) -> Duration {
    let margin = MIN_REFRESH_MARGIN.max(lifetime / 10).min(lifetime / 2);
    lifetime.saturating_sub(margin)
}

impl TokenManager {
    pub(crate) fn new(
        token_url: Url,
        client_id: String,
        client_secret: SecretString,
        primary: GrantCredentials,
    ) -> Self {
        let refresh_token = match &primary {
            GrantCredentials::RefreshToken { refresh_token } => Some(refresh_token.clone()),
            _ => None,
        };
        TokenManager {
            token_url,
            client_id,
            client_secret,
            primary,
            cache: Mutex::new(None),
            refresh_token: Mutex::new(refresh_token),
            single_flight: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
        }
    }

    /// The newest refresh token known (from configuration or from the last token answer).
    pub(crate) fn current_refresh_token(&self) -> Option<SecretString> {
        self.refresh_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn fresh(&self) -> Option<Bearer> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = cache.as_ref()?;
        (Instant::now() < cached.refresh_at).then(|| Bearer {
            token: cached.access.clone(),
            generation: cached.generation,
        })
    }

    /// A usable access token, obtaining or refreshing one when needed.
    pub(crate) async fn bearer(&self, transport: &Transport) -> Result<Bearer, Error> {
        if let Some(bearer) = self.fresh() {
            return Ok(bearer);
        }
        let _flight = self.single_flight.lock().await;
        if let Some(bearer) = self.fresh() {
            return Ok(bearer);
        }
        match self.obtain(transport).await {
            Ok(bearer) => Ok(bearer),
            Err(error) => match self.still_valid() {
                // Refreshing early leaves room for an outage of the token endpoint: keep
                // using the current token until it really expires.
                Some(bearer) => {
                    tracing::warn!(%error, "token refresh failed; using the current token until it expires");
                    Ok(bearer)
                }
                None => Err(error),
            },
        }
    }

    /// The cached token if it has not expired yet (with up to 5 s to spare), even though it
    /// is due for refresh.
    fn still_valid(&self) -> Option<Bearer> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = cache.as_ref()?;
        (Instant::now() < cached.usable_until).then(|| Bearer {
            token: cached.access.clone(),
            generation: cached.generation,
        })
    }

    /// Forgets the token of `generation` after the API refused it (a newer one is kept).
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.as_ref().is_some_and(|c| c.generation == generation) {
            *cache = None;
        }
    }

    async fn obtain(&self, transport: &Transport) -> Result<Bearer, Error> {
        if let Some(refresh_token) = self.current_refresh_token() {
            let grant = TokenGrant::RefreshToken {
                refresh_token: &refresh_token,
            };
            match self.request(transport, &grant).await {
                Ok(set) => return Ok(self.store(set)),
                Err(error @ Error::OAuth { .. }) if self.has_primary_grant() => {
                    tracing::warn!(%error, fallback = self.primary.grant_type(), "refresh token refused; falling back to the primary grant");
                    // The refused token is dead; the primary grant may hand out a new one.
                    *self
                        .refresh_token
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = None;
                }
                Err(error) => return Err(error),
            }
        }
        let set = match &self.primary {
            GrantCredentials::ClientCredentials => {
                self.request(transport, &TokenGrant::ClientCredentials)
                    .await?
            }
            GrantCredentials::Password { username, password } => {
                self.request(transport, &TokenGrant::Password { username, password })
                    .await?
            }
            GrantCredentials::RefreshToken { .. } => {
                // Only reachable when no refresh token is known, which construction prevents;
                // report it as a refusal rather than panic.
                return Err(Error::OAuth {
                    status: None,
                    error: "no refresh token available".to_owned(),
                    description: None,
                });
            }
        };
        Ok(self.store(set))
    }

    fn has_primary_grant(&self) -> bool {
        !matches!(self.primary, GrantCredentials::RefreshToken { .. })
    }

    fn store(&self, set: TokenSet) -> Bearer {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let refresh_at = now
            .checked_add(refresh_after(set.lifetime()))
            .unwrap_or(now);
        let lifetime = set.lifetime();
        let usable = lifetime.saturating_sub(EXPIRY_SAFETY.min(lifetime / 10));
        let usable_until = now.checked_add(usable).unwrap_or(now);
        if let Some(refresh) = set.refresh_token {
            *self
                .refresh_token
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(refresh);
        }
        let cached = CachedToken {
            access: set.access_token,
            refresh_at,
            usable_until,
            generation,
        };
        let bearer = Bearer {
            token: cached.access.clone(),
            generation,
        };
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(cached);
        bearer
    }

    async fn request(
        &self,
        transport: &Transport,
        grant: &TokenGrant<'_>,
    ) -> Result<TokenSet, Error> {
        let context = RequestContext::new("POST", TOKEN_ENDPOINT);
        let outcome = async {
            transport.wait_for_gate(&context).await?;
            let request = token_request(&transport.http, &self.token_url, &self.client_id, &self.client_secret, grant);
            let response = transport.send(&context, request).await?;
            if response.status == 429 {
                let wait = crate::response::retry_after(&response.headers, std::time::SystemTime::now());
                if transport.gate.pause(wait.unwrap_or(Duration::from_secs(1))) {
                    tracing::warn!(?wait, "ServiceNow rate limit on the token endpoint; pausing requests to this instance");
                }
            }
            parse_token_response(response.status, &response.body)
        }
        .await;
        let outcome_label = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        metrics::counter!(crate::telemetry::TOKEN_REFRESHES_TOTAL, "outcome" => outcome_label)
            .increment(1);
        match &outcome {
            Ok(_) => tracing::debug!(grant = grant.name(), "obtained an OAuth access token"),
            Err(error) => {
                tracing::warn!(grant = grant.name(), %error, "OAuth token request failed")
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin() {
        // ServiceNow's default 30 min token: refresh with 3 min left.
        assert_eq!(
            refresh_after(Duration::from_secs(1800)),
            Duration::from_secs(1620)
        );
        // A 5 min token: at least 60 s early.
        assert_eq!(
            refresh_after(Duration::from_secs(300)),
            Duration::from_secs(240)
        );
        // A very short token is still used for half its life.
        assert_eq!(
            refresh_after(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
    }
}
