//! The `[ingress]` configuration section and its validated form.
//!
//! The doc comments of [`IngressConfig`]'s fields are the configuration reference. Validation
//! ([`IngressConfig::validate`]) decodes every secret once, so a bad secret stops the process at
//! start with an error that names the key (`ingress.secrets[1]`) and never the value.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use byte_size::ByteSize;

use crate::client_addr::Cidr;
use crate::tls::TlsSetup;
use crate::verify::{SigningKey, Verifier};

/// Largest secrets file read; anything bigger is almost surely the wrong file.
const MAX_SECRETS_FILE_BYTES: u64 = 64 * 1024;
/// The shortest accepted `whsec_` key, in decoded bytes (128 bits). Standard Webhooks asks for
/// 24 to 64 random bytes; the documented `openssl rand -base64 32` gives 32.
pub const MIN_KEY_BYTES: usize = 16;
/// Bounds for `max_body`: a callback needs a few KiB; more than this is a misconfiguration.
const MIN_BODY: u64 = 1024;
const MAX_BODY: u64 = 32 * 1024 * 1024;

/// The `[ingress]` section: where the webhook listens and how callbacks are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// Address the webhook server binds, e.g. `0.0.0.0:8080` (default).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Standard Webhooks secrets, each `whsec_<base64>`. Several at once during a rotation: a
    /// callback signed with any of them is accepted. Prefer `secrets_file`.
    #[serde(default)]
    pub secrets: Vec<SecretString>,
    /// A file with more `whsec_` secrets, one per line (blank lines and `#` comments ignored).
    /// Relative paths are resolved by the caller (the CLI resolves them against the directory
    /// of the configuration file).
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// How far `webhook-timestamp` may be from this machine's clock, in either direction, e.g.
    /// `5m` (default). It is also how long a delivered `webhook-id` is remembered.
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub tolerance: Duration,
    /// Largest accepted body, in bytes or as `"256KiB"` (default), `"1MiB"`, `"64kB"`. Enforced
    /// while the body streams in, not after buffering it.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// The `Retry-After` sent with a 503 when the broker did not confirm, e.g. `5s` (default).
    #[serde(default = "default_retry_after", with = "humantime_serde")]
    pub retry_after: Duration,
    /// User names whose updates are nowpilot's own (the integration user). Callbacks whose
    /// `sys_updated_by` is one of them are answered 200 and not queued (compared ignoring
    /// ASCII case).
    #[serde(default)]
    pub echo_users: Vec<String>,
    /// Optional weaker scheme: a base64 HMAC-SHA256 of the body alone in a header, as many
    /// existing ServiceNow scripts send. It has no replay window; only dedupe protects.
    #[serde(default)]
    pub body_signature: Option<BodySignatureConfig>,
    /// Time limit for one webhook request, from the first byte to the answer, e.g. `10s`
    /// (default). Keep it above the queue's `publish_timeout`.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// On shutdown, how long in-flight requests and their publishes may take to finish,
    /// e.g. `10s` (default).
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// On shutdown, how long `/readyz` answers 503 while the listener still accepts, so a
    /// load balancer polling it stops routing here first, e.g. `5s`. Default `0s`.
    #[serde(default, with = "humantime_serde")]
    pub drain_delay: Duration,
    /// How many delivered `webhook-id`s are remembered for dedupe (oldest forgotten first),
    /// default 100000.
    #[serde(default = "default_dedupe_capacity")]
    pub dedupe_capacity: usize,
    /// Requests per second one client address may send, sustained (default 200); `0` turns
    /// rate limiting off. Over it, requests are answered `429` with `Retry-After` before the
    /// body is read or the signature checked. Applies to everything on the ingress listener.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// Requests one client address may send at once before the sustained rate applies
    /// (default 400).
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
    /// Client addresses never rate limited, as IP addresses or CIDR blocks. Default
    /// `["127.0.0.0/8", "::1/128"]`: a peer on the same host is a local tool or a sidecar
    /// proxy, whose clients all share its address (list a sidecar in `trusted_proxies`
    /// instead, so its clients are limited one by one). `[]` limits loopback too.
    #[serde(default = "default_rate_limit_exempt")]
    pub rate_limit_exempt: Vec<String>,
    /// Load balancers and proxies (IP addresses or CIDR blocks) whose `X-Forwarded-For` is
    /// believed when rate limiting: the client is the rightmost address in it that is not
    /// itself a trusted proxy. From any other peer the header is ignored. Default: none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// A PEM certificate chain (leaf first). With `tls_key_file`, the ingress serves HTTPS
    /// (TLS 1.2 and 1.3, rustls) instead of plain HTTP; `SIGHUP` re-reads both files.
    /// Relative paths are resolved like `secrets_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

/// The `[ingress.body_signature]` section: the body-only HMAC scheme.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodySignatureConfig {
    /// The request header carrying the base64 signature, e.g. `x-hmac-signature`.
    pub header: String,
    /// The shared secret. `whsec_<base64>` is decoded like the Standard Webhooks secrets; any
    /// other value is used as its UTF-8 bytes (what a script doing
    /// `generateMac(GlideStringUtil.base64Encode(secret), ...)` signs with). Prefer `secret_file`.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// A file holding the secret (one trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080))
}
fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}
fn default_max_body() -> ByteSize {
    ByteSize(256 * 1024)
}
fn default_retry_after() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_dedupe_capacity() -> usize {
    100_000
}
fn default_rate_limit() -> u32 {
    200
}
fn default_rate_limit_burst() -> u32 {
    400
}
fn default_rate_limit_exempt() -> Vec<String> {
    vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()]
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            listen: default_listen(),
            secrets: Vec::new(),
            secrets_file: None,
            tolerance: default_tolerance(),
            max_body: default_max_body(),
            retry_after: default_retry_after(),
            echo_users: Vec::new(),
            body_signature: None,
            request_timeout: default_request_timeout(),
            shutdown_grace: default_shutdown_grace(),
            drain_delay: Duration::ZERO,
            dedupe_capacity: default_dedupe_capacity(),
            rate_limit: default_rate_limit(),
            rate_limit_burst: default_rate_limit_burst(),
            rate_limit_exempt: default_rate_limit_exempt(),
            trusted_proxies: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// Why an `[ingress]` section cannot be used. Messages name the key, never a secret's value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngressConfigError {
    /// A key has a value the ingress cannot use.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `ingress.secrets[1]`.
        key: String,
        /// What is wrong (never the secret itself).
        reason: String,
    },
    /// A secrets file could not be read.
    #[error("{key}: cannot read {path}: {reason}")]
    File {
        /// The key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// No way to verify a callback is configured, so every callback would be refused.
    #[error(
        "ingress: no secret configured: set ingress.secrets, ingress.secrets_file or \
         ingress.body_signature"
    )]
    NoSecrets,
}

impl IngressConfigError {
    /// The dotted key the problem is about (`ingress.secrets[1]`; `ingress.secrets` when no
    /// secret is configured at all), so a caller can say which file set it.
    pub fn key(&self) -> &str {
        match self {
            IngressConfigError::Invalid { key, .. } | IngressConfigError::File { key, .. } => key,
            IngressConfigError::NoSecrets => "ingress.secrets",
        }
    }

    /// What is wrong, without the key (never a secret's value).
    pub fn reason(&self) -> String {
        match self {
            IngressConfigError::Invalid { reason, .. } => reason.clone(),
            IngressConfigError::File { path, reason, .. } => {
                format!("cannot read {}: {reason}", path.display())
            }
            IngressConfigError::NoSecrets => "no secret configured: set ingress.secrets, \
                 ingress.secrets_file or ingress.body_signature"
                .to_owned(),
        }
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> IngressConfigError {
    IngressConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A validated `[ingress]` section: secrets decoded, limits checked.
pub struct IngressSettings {
    pub(crate) listen: SocketAddr,
    pub(crate) verifier: Verifier,
    pub(crate) max_body: usize,
    pub(crate) retry_after: Duration,
    pub(crate) echo_users: Vec<String>,
    pub(crate) request_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) drain_delay: Duration,
    pub(crate) dedupe_capacity: usize,
    pub(crate) dedupe_ttl: Duration,
    /// `(per second, burst)`, or `None` when rate limiting is off.
    pub(crate) rate_limit: Option<(u32, u32)>,
    pub(crate) rate_limit_exempt: Vec<Cidr>,
    pub(crate) trusted_proxies: Vec<Cidr>,
    pub(crate) tls: Option<TlsSetup>,
}

impl fmt::Debug for IngressSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngressSettings")
            .field("listen", &self.listen)
            .field("verifier", &self.verifier)
            .field("max_body", &self.max_body)
            .field("retry_after", &self.retry_after)
            .field("echo_users", &self.echo_users)
            .field("request_timeout", &self.request_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("drain_delay", &self.drain_delay)
            .field("dedupe_capacity", &self.dedupe_capacity)
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_exempt", &self.rate_limit_exempt)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("tls", &self.tls)
            .finish()
    }
}

impl IngressSettings {
    /// The address to bind.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The largest accepted body, in bytes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// How long in-flight work may take to finish on shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }

    /// Whether the ingress serves HTTPS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl IngressConfig {
    /// Checks every value and decodes the secrets. `secrets_file` paths are used as given.
    pub fn validate(&self) -> Result<IngressSettings, IngressConfigError> {
        self.validate_in(Path::new("."))
    }

    /// Like [`IngressConfig::validate`], resolving relative `*_file` paths against `base_dir`.
    pub fn validate_in(&self, base_dir: &Path) -> Result<IngressSettings, IngressConfigError> {
        let mut keys = Vec::new();
        for (i, secret) in self.secrets.iter().enumerate() {
            keys.push(parse_whsec(
                secret.expose_secret(),
                &format!("ingress.secrets[{i}]"),
            )?);
        }
        if let Some(path) = &self.secrets_file {
            let path = base_dir.join(path);
            let text = read_secret_file(&path, "ingress.secrets_file")?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let key = format!("ingress.secrets_file (line {})", n + 1);
                keys.push(parse_whsec(line, &key)?);
            }
        }

        let body_key = match &self.body_signature {
            None => None,
            Some(body) => Some(body.validate(base_dir)?),
        };
        if keys.is_empty() && body_key.is_none() {
            return Err(IngressConfigError::NoSecrets);
        }

        if self.tolerance < Duration::from_secs(1) {
            return Err(invalid("ingress.tolerance", "must be at least 1s"));
        }
        if self.tolerance > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                "ingress.tolerance",
                "must be at most 24h (it is also the replay window)",
            ));
        }
        if !(MIN_BODY..=MAX_BODY).contains(&self.max_body.0) {
            return Err(invalid(
                "ingress.max_body",
                format!(
                    "{} is out of range (between {} and {})",
                    self.max_body,
                    ByteSize(MIN_BODY),
                    ByteSize(MAX_BODY)
                ),
            ));
        }
        let max_body = usize::try_from(self.max_body.0)
            .map_err(|_| invalid("ingress.max_body", "too large for this platform"))?;
        if self.retry_after.is_zero() {
            return Err(invalid("ingress.retry_after", "must be at least 1s"));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid(
                "ingress.request_timeout",
                "must be greater than 0s",
            ));
        }
        if self.dedupe_capacity == 0 {
            return Err(invalid("ingress.dedupe_capacity", "must be at least 1"));
        }
        let mut echo_users = Vec::with_capacity(self.echo_users.len());
        for (i, user) in self.echo_users.iter().enumerate() {
            let user = user.trim();
            if user.is_empty() {
                return Err(invalid(
                    format!("ingress.echo_users[{i}]"),
                    "must not be empty",
                ));
            }
            echo_users.push(user.to_owned());
        }

        let rate_limit = match (self.rate_limit, self.rate_limit_burst) {
            (0, _) => None,
            (_, 0) => {
                return Err(invalid(
                    "ingress.rate_limit_burst",
                    "must be at least 1 (or set rate_limit = 0 to turn rate limiting off)",
                ));
            }
            (rate, burst) => Some((rate, burst)),
        };
        let rate_limit_exempt = cidrs(&self.rate_limit_exempt, "ingress.rate_limit_exempt")?;
        let trusted_proxies = cidrs(&self.trusted_proxies, "ingress.trusted_proxies")?;
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(
                TlsSetup::load(&base_dir.join(cert), &base_dir.join(key))
                    .map_err(|e| invalid(e.key, e.reason))?,
            ),
            (Some(_), None) => {
                return Err(invalid(
                    "ingress.tls_key_file",
                    "is required with tls_cert_file",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "ingress.tls_cert_file",
                    "is required with tls_key_file",
                ));
            }
        };

        let tolerance_secs = i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX);
        Ok(IngressSettings {
            listen: self.listen,
            verifier: Verifier::new(keys, tolerance_secs, body_key),
            max_body,
            retry_after: self.retry_after,
            echo_users,
            request_timeout: self.request_timeout,
            shutdown_grace: self.shutdown_grace,
            drain_delay: self.drain_delay,
            dedupe_capacity: self.dedupe_capacity,
            dedupe_ttl: self.tolerance,
            rate_limit,
            rate_limit_exempt,
            trusted_proxies,
            tls,
        })
    }
}

impl BodySignatureConfig {
    fn validate(
        &self,
        base_dir: &Path,
    ) -> Result<(http::HeaderName, SigningKey), IngressConfigError> {
        let header = http::HeaderName::from_bytes(self.header.trim().as_bytes()).map_err(|_| {
            invalid(
                "ingress.body_signature.header",
                format!("`{}` is not a valid header name", self.header),
            )
        })?;
        if crate::verify::is_standard_header(&header) {
            return Err(invalid(
                "ingress.body_signature.header",
                "must not be one of the Standard Webhooks headers",
            ));
        }
        let (secret, key) = match (&self.secret, &self.secret_file) {
            (Some(s), None) => (
                s.expose_secret().to_owned(),
                "ingress.body_signature.secret",
            ),
            (None, Some(path)) => {
                let key = "ingress.body_signature.secret_file";
                let text = read_secret_file(&base_dir.join(path), key)?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                (text.to_owned(), key)
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "ingress.body_signature",
                    "give either secret or secret_file, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "ingress.body_signature",
                    "secret or secret_file is required",
                ));
            }
        };
        let signing_key = if secret.starts_with("whsec_") {
            parse_whsec(&secret, key)?
        } else if secret.is_empty() {
            return Err(invalid(key, "must not be empty"));
        } else {
            SigningKey::new(secret.as_bytes()).map_err(|reason| invalid(key, reason))?
        };
        Ok((header, signing_key))
    }
}

fn cidrs(entries: &[String], key: &str) -> Result<Vec<Cidr>, IngressConfigError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            Cidr::parse(entry).map_err(|reason| invalid(format!("{key}[{i}]"), reason))
        })
        .collect()
}

/// Decodes `whsec_<base64>` into a signing key. Errors never include the value.
fn parse_whsec(secret: &str, key: &str) -> Result<SigningKey, IngressConfigError> {
    use base64::Engine as _;
    let Some(encoded) = secret.trim().strip_prefix("whsec_") else {
        return Err(invalid(key, "must start with `whsec_` followed by base64"));
    };
    let bytes = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
        .decode(encoded)
        .map_err(|_| invalid(key, "the part after `whsec_` is not valid base64"))?;
    if bytes.is_empty() {
        return Err(invalid(key, "the key after `whsec_` is empty"));
    }
    if bytes.len() < MIN_KEY_BYTES {
        return Err(invalid(
            key,
            format!(
                "the key after `whsec_` has only {} bytes, too short to sign with: use at least \
                 {MIN_KEY_BYTES} random bytes, e.g. `echo \"whsec_$(openssl rand -base64 32)\"`",
                bytes.len()
            ),
        ));
    }
    SigningKey::new(&bytes).map_err(|reason| invalid(key, reason))
}

fn read_secret_file(path: &Path, key: &str) -> Result<String, IngressConfigError> {
    use std::io::Read as _;
    let file_error = |reason: String| IngressConfigError::File {
        key: key.to_owned(),
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
    let mut text = String::new();
    let read = file
        .take(MAX_SECRETS_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| file_error(e.to_string()))?;
    if read as u64 > MAX_SECRETS_FILE_BYTES {
        return Err(file_error(format!(
            "larger than {MAX_SECRETS_FILE_BYTES} bytes; is this the right file?"
        )));
    }
    Ok(text)
}

mod byte_size;
#[cfg(test)]
mod tests;
