//! The whole configuration file, section by section. Each section's type lives with the code
//! it configures; this is where they meet. `docs/configuration.md` documents every key.

use std::path::Path;

use nowpilot_config::{ConfigError, ConfigSource, Loaded};
use nowpilot_ingress::{IngressConfig, IngressSettings};
use nowpilot_model::plans::{PlanConfig, PlanSet};
use nowpilot_queue::QueueConfig;
use nowpilot_servicenow::ServiceNowConfig;
use nowpilot_worker::{WorkerConfig, WorkerSettings};
use secrecy::SecretString;
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
    /// `[worker]`: the worker.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// `[[plans]]`: the response plans, in order.
    #[serde(default)]
    pub plans: Vec<PlanConfig>,
    /// `[admin]`: the admin API (connection management).
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[telemetry]`: logging.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// `[admin]`: who may use the admin API (`/api/v1/...`) served next to `/healthz`, `/readyz`
/// and `/metrics` on each process's admin address.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A bearer token the admin API requires (`Authorization: Bearer <token>`). Without one,
    /// the API answers only when the admin address is loopback; on any other address it is not
    /// served at all. Prefer `token_file`.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// A file holding the token (one trailing newline ignored; relative to the config file).
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
}

/// The plans and worker settings of a loaded configuration, validated together (URLs in plans
/// must be on the worker's allow-list), with errors attributed to where they were written.
pub fn worker_settings(
    loaded: &Loaded<NowpilotConfig>,
) -> Result<(PlanSet, WorkerSettings), ConfigError> {
    let config = &loaded.config;
    let plans = PlanSet::new(&config.plans, config.worker.quickstart)
        .map_err(|e| loaded.error(e.config_key(), format!("plan {:?}: {}", e.name, e.reason)))?;
    let mut worker = config.worker.clone();
    if worker.integration_user.is_none() {
        worker.integration_user = config.integration_user();
    }
    if let Some(path) = &worker.runbook_secret_file {
        worker.runbook_secret_file = Some(loaded.resolve_path(path));
    }
    let settings = worker
        .validate(&plans)
        .map_err(|e| loaded.error(e.key.clone(), e.reason.clone()))?;
    Ok((plans, settings))
}

/// Validates `ingress` (the loaded `[ingress]` section, possibly completed by the caller), with
/// errors attributed to where the key was written.
pub fn ingress_settings(
    loaded: &Loaded<NowpilotConfig>,
    ingress: &IngressConfig,
) -> Result<IngressSettings, ConfigError> {
    ingress
        .validate_in(&loaded.base_dir)
        .map_err(|e| loaded.error(e.key(), e.reason()))
}

/// Checks the `[queue]` section, with errors attributed to where the key was written.
pub fn check_queue(loaded: &Loaded<NowpilotConfig>) -> Result<(), ConfigError> {
    loaded
        .config
        .queue
        .check()
        .map_err(|e| loaded.error(e.key, e.reason))
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
    let loaded = load_path(&config.path, !config.explicit)?;
    check_telemetry(&loaded)?;
    Ok(loaded)
}

/// Refuses a log filter that does not parse: logging would otherwise fall back to `info`
/// silently, and the operator would never see the `debug` lines they asked for.
fn check_telemetry(loaded: &Loaded<NowpilotConfig>) -> Result<(), ConfigError> {
    let level = &loaded.config.telemetry.log_level;
    tracing_subscriber::EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| {
            loaded.error(
                "telemetry.log_level",
                format!(
                    "{level:?} is not a log filter ({e}); write e.g. \"info\" or \"info,nowpilot=debug\""
                ),
            )
        })
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
