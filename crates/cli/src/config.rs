//! The whole configuration file, section by section. Each section's type lives with the code
//! it configures; this is where they meet. `docs/configuration.md` documents every key.

use std::path::Path;

use nowpilot_config::{ConfigError, ConfigSource, Loaded};
use nowpilot_ingress::IngressConfig;
use nowpilot_queue::QueueConfig;
use nowpilot_servicenow::ServiceNowConfig;
use serde::Deserialize;

use crate::{ConfigPath, telemetry::TelemetryConfig};

/// `nowpilot.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NowpilotConfig {
    /// `[servicenow]`: the instance and its credentials (written by `nowpilot connect`).
    #[serde(default)]
    pub servicenow: Option<ServiceNowConfig>,
    /// `[queue]`: RabbitMQ (or the in-memory queue) and the partition topology.
    #[serde(default)]
    pub queue: QueueConfig,
    /// `[ingress]`: the webhook endpoint.
    #[serde(default)]
    pub ingress: IngressConfig,
    /// `[telemetry]`: logging.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

impl NowpilotConfig {
    /// The user whose changes are nowpilot's own (echoes): the connection's Basic or password
    /// user, when there is one.
    pub fn integration_user(&self) -> Option<String> {
        self.servicenow.as_ref().and_then(|s| s.username.clone())
    }
}

/// Loads the configuration. The default file may be absent (defaults and environment only);
/// a file the user named must exist.
pub fn load(config: &ConfigPath) -> Result<Loaded<NowpilotConfig>, ConfigError> {
    load_path(&config.path, !config.explicit)
}

/// Loads `path`; when `optional`, a missing file means defaults and environment only.
pub fn load_path(path: &Path, optional: bool) -> Result<Loaded<NowpilotConfig>, ConfigError> {
    let path = if optional && !path.exists() {
        None
    } else {
        Some(path.to_path_buf())
    };
    nowpilot_config::load(&ConfigSource::from_process(path))
}
