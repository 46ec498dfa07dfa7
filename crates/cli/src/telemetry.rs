//! Logging and metrics: only the binary installs a tracing subscriber and the Prometheus
//! recorder; the libraries just emit.

use std::{sync::Arc, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// The `[telemetry]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` (default) or `json` (one JSON object per line, for log shippers).
    pub log_format: LogFormat,
    /// The log filter, in `tracing`'s `EnvFilter` syntax (e.g. `info`, `nowpilot=debug,lapin=warn`).
    /// The `NOWPILOT_LOG` environment variable overrides it.
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            // lapin logs every channel close at ERROR, including the expected NOT_FOUND of the
            // stranded-partition probe; the queue crate reports real session losses itself.
            log_level: "info,lapin=warn,lapin::channel=off,amq_protocol=warn".into(),
        }
    }
}

/// The log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Installs the tracing subscriber. Logs go to stderr so stdout stays the command's output.
pub fn init_logging(config: &TelemetryConfig, default_override: Option<&str>) {
    let filter = std::env::var("NOWPILOT_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(default_override.unwrap_or(&config.log_level))
                .unwrap_or_else(|_| EnvFilter::new("info"))
        });
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colored_stderr())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests calling main twice) is harmless; keep the first subscriber.
    drop(result);
}

/// Colour only for a person at a terminal: a log file or a collector gets plain text
/// (and `NO_COLOR` turns colour off everywhere).
fn colored_stderr() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Renders the Prometheus text exposition on demand.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Installs the Prometheus recorder and starts its upkeep task. Call once per process.
pub fn install_metrics() -> anyhow::Result<MetricsRender> {
    let handle: PrometheusHandle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Suffix("mtta_seconds".into()),
            &[
                1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0,
            ],
        )?
        // Resolving takes minutes to days (a runbook fix, or a person approving a proposal
        // the next morning): 1 minute up to 1 week.
        .set_buckets_for_metric(
            Matcher::Suffix("time_to_resolve_seconds".into()),
            &[
                60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0,
                604800.0,
            ],
        )?
        .install_recorder()?;
    // Descriptions reach only a recorder that is already installed, and every family needs its
    // `# HELP` line (promtool check metrics). The libraries that are not started through a
    // `run` of their own (which describes its metrics) are described here, and so is
    // partition ownership, whose in-process (memory queue) form describes nothing itself.
    nowpilot_queue::telemetry::describe();
    nowpilot_queue::ownership::describe();
    nowpilot_servicenow::telemetry::describe();
    // With install_recorder the upkeep (histogram compaction) is ours to run.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(Arc::new(move || handle.render()))
}
