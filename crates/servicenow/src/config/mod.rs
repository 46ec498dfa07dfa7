//! The `[servicenow]` configuration section and its resolution into usable credentials.
//!
//! The doc comments of [`ServiceNowConfig`]'s fields are the configuration reference. Secrets
//! are `SecretString`s: they never appear in `Debug` output, are skipped by the derived
//! `Serialize`, and are written out only through [`ServiceNowConfig::with_secrets`], which the
//! CLI uses to save the connection file.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::auth::{Credentials, GrantCredentials};
use crate::instance::{InstanceUrl, InstanceUrlError};

/// Largest secret file read; anything bigger is almost surely the wrong file.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// How nowpilot authenticates to ServiceNow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// HTTP Basic with `username` and `password`. Use a dedicated integration user marked
    /// "Web service access only"; newer instances refuse Basic auth for interactive users.
    #[default]
    Basic,
    /// OAuth 2.0 against the instance's `/oauth_token.do`, with the `grant` below.
    #[serde(rename = "oauth")]
    OAuth,
}

/// The OAuth grant used to obtain access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// Client id and secret only (Washington DC and later; needs
    /// `glide.oauth.inbound.client.credential.grant_type.enabled=true` and an OAuth
    /// Application User on the registry entry).
    ClientCredentials,
    /// Resource-owner password: client id/secret plus `username` and `password`.
    Password,
    /// A refresh token obtained earlier (`refresh_token` or `refresh_token_file`).
    RefreshToken,
    /// The browser flow run by `nowpilot connect`; it stores the resulting refresh token, so
    /// at run time this behaves like `refresh_token`.
    AuthorizationCode,
}

impl Grant {
    /// The name used in configuration and in the token request.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
            Grant::RefreshToken => "refresh_token",
            Grant::AuthorizationCode => "authorization_code",
        }
    }
}

/// The `[servicenow]` section: where the instance is and how to log in.
///
/// Every `*_file` key names a file holding one secret (paths are relative to the directory of
/// the configuration file; one trailing newline is ignored). Give either the inline key or the
/// `_file` key, not both.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowConfig {
    /// The instance root, e.g. `https://acme.service-now.com` (no path, no trailing slash;
    /// `http://` only for localhost).
    pub instance_url: String,
    /// `basic` (default) or `oauth`.
    #[serde(default)]
    pub auth: AuthKind,
    /// The integration user's user name (Basic auth and the OAuth `password` grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The integration user's password. Prefer `password_file`.
    #[serde(default, skip_serializing)]
    pub password: Option<SecretString>,
    /// A file holding the integration user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The OAuth client id from the instance's Application Registry (OAuth only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The OAuth client secret. Prefer `client_secret_file`.
    #[serde(default, skip_serializing)]
    pub client_secret: Option<SecretString>,
    /// A file holding the OAuth client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// The OAuth grant: `client_credentials`, `password`, `refresh_token` or
    /// `authorization_code`. Required with `auth = "oauth"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// An OAuth refresh token (grants `refresh_token` and `authorization_code`). Prefer
    /// `refresh_token_file`.
    #[serde(default, skip_serializing)]
    pub refresh_token: Option<SecretString>,
    /// A file holding the OAuth refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_file: Option<PathBuf>,
    /// Time limit for one HTTP call to the instance, e.g. `30s` (default). ServiceNow itself
    /// cancels Table API transactions after 60 s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl ServiceNowConfig {
    /// A Basic-auth configuration with defaults for everything else (handy for tests and for
    /// building a configuration from `nowpilot connect` answers).
    pub fn basic(
        instance_url: impl Into<String>,
        username: impl Into<String>,
        password: SecretString,
    ) -> Self {
        ServiceNowConfig {
            instance_url: instance_url.into(),
            auth: AuthKind::Basic,
            username: Some(username.into()),
            password: Some(password),
            password_file: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            grant: None,
            refresh_token: None,
            refresh_token_file: None,
            timeout: default_timeout(),
        }
    }

    /// An OAuth configuration with the given grant; fill in the grant's other keys.
    pub fn oauth(
        instance_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
        grant: Grant,
    ) -> Self {
        ServiceNowConfig {
            auth: AuthKind::OAuth,
            username: None,
            password: None,
            client_id: Some(client_id.into()),
            client_secret: Some(client_secret),
            grant: Some(grant),
            ..ServiceNowConfig::basic(instance_url, "", SecretString::from(""))
        }
    }

    /// A short description of the authentication: `basic`, `oauth (client_credentials)`, …
    pub fn auth_description(&self) -> String {
        match (self.auth, self.grant) {
            (AuthKind::Basic, _) => "basic".to_owned(),
            (AuthKind::OAuth, Some(g)) => format!("oauth ({})", g.as_str()),
            (AuthKind::OAuth, None) => "oauth".to_owned(),
        }
    }

    /// A view that serializes the secrets too, for writing the connection file (mode 0600 is
    /// the caller's job). Nothing else serializes secrets.
    pub fn with_secrets(&self) -> WithSecrets<'_> {
        WithSecrets(self)
    }

    /// Checks the section and reads the secret files (relative to `base_dir`), giving the
    /// instance URL and complete credentials. Errors name the key and the reason, never a
    /// secret.
    pub fn resolve(&self, base_dir: &Path) -> Result<ResolvedConfig, ConfigError> {
        let instance = InstanceUrl::parse(&self.instance_url)
            .map_err(|source| ConfigError::InstanceUrl { source })?;
        if self.timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "servicenow.timeout",
                reason: "must be longer than zero, e.g. \"30s\"".to_owned(),
            });
        }
        let password = secret(
            base_dir,
            "password",
            self.password.as_ref(),
            self.password_file.as_deref(),
        )?;
        let credentials = match self.auth {
            AuthKind::Basic => {
                let username = required_text(
                    "servicenow.username",
                    self.username.as_deref(),
                    "auth = \"basic\" needs the integration user's name",
                )?;
                let password = password.ok_or(ConfigError::Missing {
                    key: "servicenow.password_file",
                    reason: "auth = \"basic\" needs the integration user's password (servicenow.password or servicenow.password_file)",
                })?;
                Credentials::Basic { username, password }
            }
            AuthKind::OAuth => {
                let grant = self.grant.ok_or(ConfigError::Missing {
                    key: "servicenow.grant",
                    reason: "auth = \"oauth\" needs a grant: client_credentials, password, refresh_token or authorization_code",
                })?;
                let client_id = required_text(
                    "servicenow.client_id",
                    self.client_id.as_deref(),
                    "auth = \"oauth\" needs the client id from the instance's Application Registry",
                )?;
                let client_secret = secret(base_dir, "client_secret", self.client_secret.as_ref(), self.client_secret_file.as_deref())?.ok_or(ConfigError::Missing {
                    key: "servicenow.client_secret_file",
                    reason: "auth = \"oauth\" needs the client secret (servicenow.client_secret or servicenow.client_secret_file)",
                })?;
                let refresh_token = secret(
                    base_dir,
                    "refresh_token",
                    self.refresh_token.as_ref(),
                    self.refresh_token_file.as_deref(),
                )?;
                let grant = match grant {
                    Grant::ClientCredentials => GrantCredentials::ClientCredentials,
                    Grant::Password => {
                        let username = required_text(
                            "servicenow.username",
                            self.username.as_deref(),
                            "the password grant needs the integration user's name",
                        )?;
                        let password = password.ok_or(ConfigError::Missing {
                            key: "servicenow.password_file",
                            reason: "the password grant needs the integration user's password (servicenow.password or servicenow.password_file)",
                        })?;
                        GrantCredentials::Password { username, password }
                    }
                    Grant::RefreshToken | Grant::AuthorizationCode => {
                        let refresh_token = refresh_token.ok_or(ConfigError::Missing {
                            key: "servicenow.refresh_token_file",
                            reason: "this grant needs a refresh token (servicenow.refresh_token or servicenow.refresh_token_file); run `nowpilot connect` to obtain one",
                        })?;
                        GrantCredentials::RefreshToken { refresh_token }
                    }
                };
                Credentials::OAuth {
                    client_id,
                    client_secret,
                    grant,
                }
            }
        };
        Ok(ResolvedConfig {
            instance,
            credentials,
            timeout: self.timeout,
        })
    }
}

fn required_text(
    key: &'static str,
    value: Option<&str>,
    reason: &'static str,
) -> Result<String, ConfigError> {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(ConfigError::Missing { key, reason }),
    }
}

/// Reads a secret given inline or through a file; `None` when neither is set.
fn secret(
    base_dir: &Path,
    name: &'static str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, ConfigError> {
    let (inline_key, file_key) = secret_keys(name);
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::Conflict {
            keys: format!("{inline_key} and {file_key}"),
            reason: "set only one of them",
        }),
        (Some(value), None) => {
            if value.expose_secret().is_empty() {
                Err(ConfigError::Invalid {
                    key: inline_key,
                    reason: "is empty".to_owned(),
                })
            } else {
                Ok(Some(value.clone()))
            }
        }
        (None, Some(path)) => read_secret_file(file_key, &base_dir.join(path)).map(Some),
        (None, None) => Ok(None),
    }
}

fn secret_keys(name: &'static str) -> (&'static str, &'static str) {
    match name {
        "password" => ("servicenow.password", "servicenow.password_file"),
        "client_secret" => ("servicenow.client_secret", "servicenow.client_secret_file"),
        _ => ("servicenow.refresh_token", "servicenow.refresh_token_file"),
    }
}

fn read_secret_file(key: &'static str, path: &Path) -> Result<SecretString, ConfigError> {
    let fail = |reason: String| ConfigError::SecretFile {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot be opened: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(fail(format!(
            "is larger than {} KiB; is this the right file?",
            MAX_SECRET_FILE_BYTES / 1024
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("is not UTF-8 text".to_owned()))?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if value.trim().is_empty() {
        return Err(fail("is empty".to_owned()));
    }
    Ok(SecretString::from(value.to_owned()))
}

impl fmt::Debug for ServiceNowConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<SecretString>| s.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("ServiceNowConfig")
            .field("instance_url", &self.instance_url)
            .field("auth", &self.auth)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("password_file", &self.password_file)
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("client_secret_file", &self.client_secret_file)
            .field("grant", &self.grant)
            .field("refresh_token", &redacted(&self.refresh_token))
            .field("refresh_token_file", &self.refresh_token_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Serializes a [`ServiceNowConfig`] including its inline secrets; see
/// [`ServiceNowConfig::with_secrets`].
pub struct WithSecrets<'a>(&'a ServiceNowConfig);

impl Serialize for WithSecrets<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut s = serializer.serialize_struct("ServiceNowConfig", 12)?;
        s.serialize_field("instance_url", &c.instance_url)?;
        s.serialize_field("auth", &c.auth)?;
        let expose = |v: &Option<SecretString>| v.as_ref().map(|s| s.expose_secret().to_owned());
        macro_rules! optional {
            ($name:literal, $value:expr) => {
                match $value {
                    Some(v) => s.serialize_field($name, &v)?,
                    None => s.skip_field($name)?,
                }
            };
        }
        optional!("username", &c.username);
        optional!("password", expose(&c.password));
        optional!("password_file", &c.password_file);
        optional!("client_id", &c.client_id);
        optional!("client_secret", expose(&c.client_secret));
        optional!("client_secret_file", &c.client_secret_file);
        optional!("grant", &c.grant);
        optional!("refresh_token", expose(&c.refresh_token));
        optional!("refresh_token_file", &c.refresh_token_file);
        s.serialize_field(
            "timeout",
            &humantime::format_duration(c.timeout).to_string(),
        )?;
        s.end()
    }
}

impl fmt::Debug for WithSecrets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WithSecrets").field(self.0).finish()
    }
}

/// A checked configuration: what [`crate::Client::new`] needs.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    /// The instance base URL.
    pub instance: InstanceUrl,
    /// The credentials, secrets read.
    pub credentials: Credentials,
    /// Time limit for one HTTP call.
    pub timeout: Duration,
}

impl ResolvedConfig {
    /// A configuration from parts, e.g. for tests or the CLI's `connect` flow.
    pub fn new(instance: InstanceUrl, credentials: Credentials) -> Self {
        ResolvedConfig {
            instance,
            credentials,
            timeout: default_timeout(),
        }
    }
}

/// A configuration problem. Messages name the key (`servicenow.password_file`) and the reason,
/// never a secret value.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `servicenow.instance_url` is unusable.
    #[error("servicenow.instance_url: {source}")]
    InstanceUrl {
        /// What is wrong with it.
        #[source]
        source: InstanceUrlError,
    },
    /// A required key is missing.
    #[error("{key} is missing: {reason}")]
    Missing {
        /// The key to set.
        key: &'static str,
        /// Why it is needed.
        reason: &'static str,
    },
    /// Two keys that exclude each other are both set.
    #[error("{keys} are both set: {reason}")]
    Conflict {
        /// The keys.
        keys: String,
        /// What to do.
        reason: &'static str,
    },
    /// A key has an unusable value.
    #[error("{key} {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A `*_file` secret could not be read.
    #[error("{key}: the file {path:?} {reason}")]
    SecretFile {
        /// The key naming the file.
        key: &'static str,
        /// The resolved path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot build the HTTP client: {reason}")]
    HttpClient {
        /// The underlying reason.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
