//! Credentials, the OAuth token endpoint, and the authorization-code helpers.
//!
//! ServiceNow's token endpoint is `POST {instance}/oauth_token.do` with an
//! `application/x-www-form-urlencoded` body (parameters in the body, never the query string).
//! It answers `{"access_token","refresh_token"?,"scope","token_type":"Bearer","expires_in"}` or,
//! for every kind of refusal, an opaque 401 `{"error":"server_error","error_description":"access_denied"}`.
//! The [`manager`] keeps a token fresh for the client.

pub(crate) mod manager;

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use crate::error::{Error, RequestContext};
use crate::instance::InstanceUrl;
use crate::response::{api_message, excerpt};
use crate::transport::map_reqwest;

/// The label used for the token endpoint in errors and metrics.
pub(crate) const TOKEN_ENDPOINT: &str = "oauth_token.do";

/// Access tokens live this long when the instance does not say (ServiceNow's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(1800);

/// How the client proves who it is.
#[derive(Clone)]
pub enum Credentials {
    /// HTTP Basic.
    Basic {
        /// The integration user's name.
        username: String,
        /// Its password.
        password: SecretString,
    },
    /// OAuth 2.0 bearer tokens from the instance's token endpoint.
    OAuth {
        /// The Application Registry client id.
        client_id: String,
        /// The client secret.
        client_secret: SecretString,
        /// The grant used to obtain tokens when no refresh token works.
        grant: GrantCredentials,
    },
}

impl Credentials {
    /// `basic`, `oauth (client_credentials)`, `oauth (password)` or `oauth (refresh_token)`.
    pub fn description(&self) -> String {
        match self {
            Credentials::Basic { .. } => "basic".to_owned(),
            Credentials::OAuth { grant, .. } => format!("oauth ({})", grant.grant_type()),
        }
    }
}

/// The secret material of an OAuth grant.
#[derive(Clone)]
pub enum GrantCredentials {
    /// `grant_type=client_credentials`: client id and secret only.
    ClientCredentials,
    /// `grant_type=password` (resource owner password credentials).
    Password {
        /// The integration user's name.
        username: String,
        /// Its password.
        password: SecretString,
    },
    /// `grant_type=refresh_token` with a token obtained earlier (e.g. by the
    /// authorization-code flow of `nowpilot connect`).
    RefreshToken {
        /// The refresh token.
        refresh_token: SecretString,
    },
}

impl GrantCredentials {
    /// The `grant_type` value.
    pub fn grant_type(&self) -> &'static str {
        match self {
            GrantCredentials::ClientCredentials => "client_credentials",
            GrantCredentials::Password { .. } => "password",
            GrantCredentials::RefreshToken { .. } => "refresh_token",
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"[REDACTED]")
                .finish(),
            Credentials::OAuth {
                client_id, grant, ..
            } => f
                .debug_struct("OAuth")
                .field("client_id", client_id)
                .field("client_secret", &"[REDACTED]")
                .field("grant", grant)
                .finish(),
        }
    }
}

impl fmt::Debug for GrantCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantCredentials::ClientCredentials => f.write_str("ClientCredentials"),
            GrantCredentials::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"[REDACTED]")
                .finish(),
            GrantCredentials::RefreshToken { .. } => f
                .debug_struct("RefreshToken")
                .field("refresh_token", &"[REDACTED]")
                .finish(),
        }
    }
}

/// A token endpoint answer.
#[derive(Clone)]
pub struct TokenSet {
    /// The bearer token.
    pub access_token: SecretString,
    /// A refresh token, when the grant returns one (password, refresh_token,
    /// authorization_code; usually not client_credentials).
    pub refresh_token: Option<SecretString>,
    /// Lifetime of the access token as the instance stated it.
    pub expires_in: Option<Duration>,
    /// `Bearer`.
    pub token_type: String,
    /// `useraccount` on ServiceNow.
    pub scope: Option<String>,
}

impl TokenSet {
    /// The lifetime to plan with: `expires_in`, or ServiceNow's default of 30 minutes.
    pub fn lifetime(&self) -> Duration {
        self.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME)
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The form parameters of one token request.
pub(crate) enum TokenGrant<'a> {
    ClientCredentials,
    Password {
        username: &'a str,
        password: &'a SecretString,
    },
    RefreshToken {
        refresh_token: &'a SecretString,
    },
    AuthorizationCode {
        code: &'a str,
        redirect_uri: &'a str,
    },
}

impl TokenGrant<'_> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            TokenGrant::ClientCredentials => "client_credentials",
            TokenGrant::Password { .. } => "password",
            TokenGrant::RefreshToken { .. } => "refresh_token",
            TokenGrant::AuthorizationCode { .. } => "authorization_code",
        }
    }

    /// The form body, secrets exposed only into the request.
    pub(crate) fn form<'s>(
        &'s self,
        client_id: &'s str,
        client_secret: &'s SecretString,
    ) -> Vec<(&'static str, &'s str)> {
        let mut form = vec![
            ("grant_type", self.name()),
            ("client_id", client_id),
            ("client_secret", client_secret.expose_secret()),
        ];
        match self {
            TokenGrant::ClientCredentials => {}
            TokenGrant::Password { username, password } => {
                form.push(("username", username));
                form.push(("password", password.expose_secret()));
            }
            TokenGrant::RefreshToken { refresh_token } => {
                form.push(("refresh_token", refresh_token.expose_secret()))
            }
            TokenGrant::AuthorizationCode { code, redirect_uri } => {
                form.push(("code", code));
                form.push(("redirect_uri", redirect_uri));
            }
        }
        form
    }
}

/// The token endpoint of an instance.
pub fn token_url(instance: &InstanceUrl) -> Url {
    instance.endpoint([TOKEN_ENDPOINT])
}

/// Parses a token endpoint answer. Total: any status and bytes give a token set or a typed
/// error (`OAuth` for refusals, `Server`/`RateLimited` for outages, `Decode` for nonsense).
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<TokenSet, Error> {
    let context = RequestContext::new("POST", TOKEN_ENDPOINT);
    let json = serde_json::from_slice::<Value>(body).ok();
    let object = json.as_ref().and_then(Value::as_object);
    let text = |key: &str| -> Option<String> {
        match object?.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    if (200..300).contains(&status) {
        if let Some(access) = text("access_token").filter(|a| !a.is_empty()) {
            let expires_in = object
                .and_then(|o| o.get("expires_in"))
                .and_then(|v| match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                });
            return Ok(TokenSet {
                access_token: SecretString::from(access),
                refresh_token: text("refresh_token")
                    .filter(|r| !r.is_empty())
                    .map(SecretString::from),
                expires_in: expires_in
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok()),
                token_type: text("token_type").unwrap_or_else(|| "Bearer".to_owned()),
                scope: text("scope"),
            });
        }
        if object.is_some_and(|o| o.contains_key("error")) {
            let api = api_message(body);
            return Err(Error::OAuth {
                status: Some(status),
                error: api.message,
                description: api.detail,
            });
        }
        return Err(Error::Decode {
            context,
            status,
            reason: format!(
                "the token answer has no access_token: {}",
                redacted_excerpt(body)
            ),
        });
    }
    if status == 429 || status >= 500 {
        return Err(Error::from_status(context, status, None, api_message(body)));
    }
    let api = api_message(body);
    Err(Error::OAuth {
        status: Some(status),
        error: if api.message.is_empty() {
            "no explanation".to_owned()
        } else {
            api.message
        },
        description: api.detail,
    })
}

/// An excerpt of a token answer that could carry a token in an unexpected member: only the
/// member names are shown.
fn redacted_excerpt(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => format!("members {:?}", map.keys().collect::<Vec<_>>()),
        _ => excerpt(body),
    }
}

/// A token request: form-encoded body, parameters never in the query string.
pub(crate) fn token_request(
    http: &reqwest::Client,
    url: &Url,
    client_id: &str,
    client_secret: &SecretString,
    grant: &TokenGrant<'_>,
) -> reqwest::RequestBuilder {
    http.post(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .form(&grant.form(client_id, client_secret))
}

/// Sends one token request through `http` and parses the answer.
async fn request_token(
    http: &reqwest::Client,
    url: &Url,
    client_id: &str,
    client_secret: &SecretString,
    grant: &TokenGrant<'_>,
    timeout: Duration,
) -> Result<TokenSet, Error> {
    let context = RequestContext::new("POST", TOKEN_ENDPOINT);
    let response = token_request(http, url, client_id, client_secret, grant)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| map_reqwest(&context, &e))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| map_reqwest(&context, &e))?;
    parse_token_response(status, &body)
}

/// The browser URL that starts the authorization-code flow:
/// `{instance}/oauth_auth.do?response_type=code&redirect_uri=…&client_id=…&state=…`.
pub fn authorize_url(
    instance: &InstanceUrl,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
) -> Url {
    let mut url = instance.endpoint(["oauth_auth.do"]);
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("client_id", client_id)
        .append_pair("state", state);
    url
}

/// What [`exchange_code`] needs: the code the browser brought back and the client that asked.
pub struct CodeExchange<'a> {
    /// The instance.
    pub instance: &'a InstanceUrl,
    /// The client id.
    pub client_id: &'a str,
    /// The client secret.
    pub client_secret: &'a SecretString,
    /// The `code` from the redirect.
    pub code: &'a str,
    /// The same `redirect_uri` as in [`authorize_url`].
    pub redirect_uri: &'a str,
    /// Time limit for the call.
    pub timeout: Duration,
}

impl fmt::Debug for CodeExchange<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeExchange")
            .field("instance", self.instance)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("code", &"[REDACTED]")
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

/// Exchanges an authorization code for tokens (`grant_type=authorization_code` with `code`,
/// `redirect_uri`, client id and secret). Save the returned refresh token with
/// `grant = "authorization_code"`.
pub async fn exchange_code(exchange: &CodeExchange<'_>) -> Result<TokenSet, Error> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(exchange.timeout)
        .build()
        .map_err(|e| {
            Error::Config(crate::config::ConfigError::HttpClient {
                reason: e.to_string(),
            })
        })?;
    let grant = TokenGrant::AuthorizationCode {
        code: exchange.code,
        redirect_uri: exchange.redirect_uri,
    };
    request_token(
        &http,
        &token_url(exchange.instance),
        exchange.client_id,
        exchange.client_secret,
        &grant,
        exchange.timeout,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_servicenow_token_answer() {
        let set = parse_token_response(200, br#"{"access_token":"AT","refresh_token":"RT","scope":"useraccount","token_type":"Bearer","expires_in":1799}"#).unwrap();
        assert_eq!(set.access_token.expose_secret(), "AT");
        assert_eq!(set.refresh_token.as_ref().unwrap().expose_secret(), "RT");
        assert_eq!(set.expires_in, Some(Duration::from_secs(1799)));
        let set = parse_token_response(200, br#"{"access_token":"AT","expires_in":"60"}"#).unwrap();
        assert_eq!(set.expires_in, Some(Duration::from_secs(60)));
        assert!(set.refresh_token.is_none());
        assert_eq!(set.lifetime(), Duration::from_secs(60));
    }

    #[test]
    fn opaque_refusal_is_a_typed_oauth_error() {
        let e = parse_token_response(
            401,
            br#"{"error":"server_error","error_description":"access_denied"}"#,
        )
        .unwrap_err();
        match &e {
            Error::OAuth {
                status,
                error,
                description,
            } => {
                assert_eq!(*status, Some(401));
                assert_eq!(error, "server_error");
                assert_eq!(description.as_deref(), Some("access_denied"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("OAuth Application User"), "{e}");
    }

    #[test]
    fn outages_and_nonsense_are_not_credential_errors() {
        assert!(matches!(
            parse_token_response(503, b"<html>down</html>"),
            Err(Error::Server { status: 503, .. })
        ));
        assert!(matches!(
            parse_token_response(200, b"<html>login</html>"),
            Err(Error::Decode { .. })
        ));
        let e = parse_token_response(200, br#"{"token":"SECRET-LOOKING"}"#).unwrap_err();
        assert!(!e.to_string().contains("SECRET-LOOKING"), "{e}");
        assert!(matches!(
            parse_token_response(200, br#"{"error":"invalid_grant"}"#),
            Err(Error::OAuth { .. })
        ));
        assert!(matches!(
            parse_token_response(400, b""),
            Err(Error::OAuth { .. })
        ));
    }

    #[test]
    fn authorize_url_shape() {
        let instance = InstanceUrl::parse("https://acme.service-now.com").unwrap();
        let url = authorize_url(&instance, "cid", "http://127.0.0.1:8400/callback", "st&te");
        assert_eq!(
            url.as_str(),
            "https://acme.service-now.com/oauth_auth.do?response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A8400%2Fcallback&client_id=cid&state=st%26te"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let creds = Credentials::OAuth {
            client_id: "cid".into(),
            client_secret: SecretString::from("the-client-secret"),
            grant: GrantCredentials::Password {
                username: "u".into(),
                password: SecretString::from("the-password"),
            },
        };
        let set = parse_token_response(
            200,
            br#"{"access_token":"the-access","refresh_token":"the-refresh"}"#,
        )
        .unwrap();
        let text = format!(
            "{creds:?} {set:?} {:?}",
            GrantCredentials::RefreshToken {
                refresh_token: SecretString::from("rt-value")
            }
        );
        for secret in [
            "the-client-secret",
            "the-password",
            "the-access",
            "the-refresh",
            "rt-value",
        ] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
