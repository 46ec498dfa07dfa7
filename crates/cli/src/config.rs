//! The whole configuration file, section by section. Each section's type lives with the code
//! it configures; this is where they meet. `docs/configuration.md` documents every key.

use std::path::Path;

use nowpilot_config::{ConfigError, ConfigSource, Loaded};
use nowpilot_servicenow::ServiceNowConfig;
use serde::Deserialize;

use crate::telemetry::TelemetryConfig;

/// `nowpilot.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NowpilotConfig {
    /// `[servicenow]`: the instance and its credentials (written by `nowpilot connect`).
    #[serde(default)]
    pub servicenow: Option<ServiceNowConfig>,
    /// `[telemetry]`: logging.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Loads the configuration. A missing file is fine when `optional` (defaults and environment
/// only), an error naming the file otherwise.
pub fn load(path: &Path, optional: bool) -> Result<Loaded<NowpilotConfig>, ConfigError> {
    let path = if optional && !path.exists() {
        None
    } else {
        Some(path.to_path_buf())
    };
    nowpilot_config::load(&ConfigSource::from_process(path))
}
