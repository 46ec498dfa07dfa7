//! The `[queue]` configuration section.
//!
//! Every field has a default, so an empty section runs against a local RabbitMQ. The broker URL
//! is a secret: it is only ever shown through [`QueueConfig::redacted_url`], which replaces the
//! password.

use std::fmt;
use std::time::Duration;

use nowpilot_model::partition::DEFAULT_PARTITIONS;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::QueueError;

/// The most partitions a deployment may have (each one is a quorum queue).
pub const MAX_PARTITIONS: u16 = 1024;

/// The longest accepted prefix: every broker name must fit in an AMQP short string (255 bytes).
pub const MAX_PREFIX_LEN: usize = 200;

/// Which backend carries the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    /// RabbitMQ over AMQP 0-9-1: durable, shared by every process of a deployment.
    #[default]
    Amqp,
    /// In-process queues for the one-process mode (`nowpilot run`/`demo`) and tests: the same
    /// semantics, but nothing survives the process.
    Memory,
}

/// The `[queue]` section: where events go between ingress and workers.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `amqp` (RabbitMQ, the default) or `memory` (in-process; only for the one-process mode).
    pub kind: QueueKind,
    /// The broker URL, `amqp://user:password@host:port/vhost` (the default vhost `/` is written
    /// `%2f`). Secret: logs and errors show it with the password replaced.
    pub url: SecretString,
    /// The prefix of every exchange and queue name (`[A-Za-z0-9_.-]+`, at most 200 characters).
    /// Deployments sharing a broker use different prefixes.
    pub prefix: String,
    /// The number of partition queues (1..=1024). Every ingress, poller and worker of a
    /// deployment must use the same value: it decides which queue an incident's events go to.
    /// Lowering it strands the messages left in the removed partitions (a warning says so).
    pub partitions: u16,
    /// How long a publish may wait for the broker's confirm before it fails (the ingress then
    /// answers 503). Also bounds every other single broker operation.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long establishing the TCP and AMQP connection may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The AMQP heartbeat interval negotiated with the broker: a dead peer is detected after
    /// about two missed heartbeats.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How many unacknowledged deliveries the broker sends to each partition consumer.
    pub prefetch: u16,
    /// How many confirm channels publishes are spread over (all on one connection).
    pub publisher_channels: u16,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            kind: QueueKind::Amqp,
            url: SecretString::from(DEFAULT_AMQP_URL),
            prefix: "nowpilot".to_owned(),
            partitions: DEFAULT_PARTITIONS,
            publish_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(15),
            prefetch: 32,
            publisher_channels: 4,
        }
    }
}

/// A `[queue]` value that cannot be used: the key and why. Never contains the broker password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct QueueConfigError {
    /// The dotted key, e.g. `queue.partitions`.
    pub key: String,
    /// What is wrong and what is accepted.
    pub reason: String,
}

impl QueueConfigError {
    fn new(key: &str, reason: impl Into<String>) -> Self {
        QueueConfigError {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

impl From<QueueConfigError> for QueueError {
    fn from(e: QueueConfigError) -> Self {
        QueueError::Config(e.to_string())
    }
}

/// The broker URL used when none is configured: a local RabbitMQ with its default user.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl QueueConfig {
    /// The default configuration with another prefix (tests, side-by-side deployments).
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        QueueConfig {
            prefix: prefix.into(),
            ..QueueConfig::default()
        }
    }

    /// Checks every value; the error names the field and says what is accepted.
    pub fn validate(&self) -> Result<(), QueueError> {
        self.check().map_err(QueueError::from)
    }

    /// Like [`QueueConfig::validate`], with the key and the reason apart, so a caller can say
    /// which file or environment variable set the key.
    pub fn check(&self) -> Result<(), QueueConfigError> {
        if self.prefix.is_empty()
            || self.prefix.len() > MAX_PREFIX_LEN
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(QueueConfigError::new(
                "queue.prefix",
                format!(
                    "{:?} must be 1 to {MAX_PREFIX_LEN} characters of [A-Za-z0-9_.-]",
                    self.prefix
                ),
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(QueueConfigError::new(
                "queue.partitions",
                format!(
                    "is {}; it must be between 1 and {MAX_PARTITIONS}",
                    self.partitions
                ),
            ));
        }
        for (key, value) in [
            ("queue.publish_timeout", self.publish_timeout),
            ("queue.connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(QueueConfigError::new(key, "must be above zero"));
            }
        }
        // AMQP negotiates the heartbeat in whole seconds as a u16.
        if self.heartbeat.as_secs() == 0 || self.heartbeat.as_secs() > u64::from(u16::MAX) {
            return Err(QueueConfigError::new(
                "queue.heartbeat",
                "must be between 1s and 65535s",
            ));
        }
        if self.prefetch == 0 {
            return Err(QueueConfigError::new(
                "queue.prefetch",
                "must be at least 1 (0 would mean unlimited)",
            ));
        }
        if !(1..=64).contains(&self.publisher_channels) {
            return Err(QueueConfigError::new(
                "queue.publisher_channels",
                "must be between 1 and 64",
            ));
        }
        if self.kind == QueueKind::Amqp {
            crate::amqp::uri::parse_url(&self.url, self.heartbeat, self.connect_timeout)
                .map_err(|reason| QueueConfigError::new("queue.url", reason))?;
        }
        Ok(())
    }

    /// The broker URL with the password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

/// `url` with its password replaced by `***` (or a placeholder when it does not parse, since
/// an unparsable URL may still hold a password).
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) => {
            if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
                return "<unprintable url>".to_owned();
            }
            parsed.to_string()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("kind", &self.kind)
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("partitions", &self.partitions)
            .field("publish_timeout", &self.publish_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("prefetch", &self.prefetch)
            .field("publisher_channels", &self.publisher_channels)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let c = QueueConfig::default();
        assert_eq!(c.kind, QueueKind::Amqp);
        assert_eq!(c.prefix, "nowpilot");
        assert_eq!(c.partitions, 16);
        assert_eq!(c.publish_timeout, Duration::from_secs(5));
        assert_eq!(c.prefetch, 32);
        assert_eq!(c.publisher_channels, 4);
        c.validate().unwrap();
    }

    #[test]
    fn parses_toml_with_humantime_and_rejects_unknown_fields() {
        let c: QueueConfig = toml::from_str(
            "kind = \"memory\"\nprefix = \"a.b-c_1\"\npartitions = 3\npublish_timeout = \"250ms\"\n",
        )
        .unwrap();
        assert_eq!(c.kind, QueueKind::Memory);
        assert_eq!(c.partitions, 3);
        assert_eq!(c.publish_timeout, Duration::from_millis(250));
        c.validate().unwrap();
        let err = toml::from_str::<QueueConfig>("bogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn rejects_bad_values() {
        for (toml, needle) in [
            ("prefix = \"has space\"", "queue.prefix"),
            ("prefix = \"\"", "queue.prefix"),
            ("partitions = 0", "queue.partitions"),
            ("partitions = 1025", "queue.partitions"),
            ("prefetch = 0", "queue.prefetch"),
            ("publisher_channels = 0", "queue.publisher_channels"),
            ("heartbeat = \"0s\"", "queue.heartbeat"),
            ("publish_timeout = \"0s\"", "queue.publish_timeout"),
        ] {
            let c: QueueConfig = toml::from_str(toml).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{toml}: {err}");
        }
    }

    #[test]
    fn password_never_shows() {
        let c: QueueConfig =
            toml::from_str("url = \"amqp://bob:s3cr3t-pw@broker:5672/%2f\"\n").unwrap();
        assert_eq!(c.redacted_url(), "amqp://bob:***@broker:5672/%2f");
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
        let bad: QueueConfig = toml::from_str("url = \"amqp://bob:s3cr3t-pw@[broken\"\n").unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(!err.contains("s3cr3t-pw"), "{err}");
        assert!(!bad.redacted_url().contains("s3cr3t-pw"));
    }
}
