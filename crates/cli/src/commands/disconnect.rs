//! `nowpilot disconnect`: remove the saved connection, so nowpilot stops writing to ServiceNow.

use nowpilot_admin::store::ConnectionStore;

use super::{EXIT_FAILURE, fail};
use crate::{ConfigPath, Exit, config, telemetry};

/// Runs `nowpilot disconnect`.
pub async fn run(config: &ConfigPath) -> Result<(), Exit> {
    telemetry::init_logging(&telemetry::TelemetryConfig::default(), Some("warn"));
    // Name the instance in the message when the config still reads; removal works either way.
    let instance = config::load(config)
        .ok()
        .and_then(|l| l.config.servicenow.map(|s| s.instance_url));
    let store = ConnectionStore::new(&config.path);
    let outcome = store
        .remove()
        .map_err(|e| fail(EXIT_FAILURE, format!("disconnect: {e}")))?;
    if !outcome.had_connection_file && !outcome.removed_inline_section {
        println!("No ServiceNow connection was saved; nothing to do.");
        return Ok(());
    }
    println!(
        "Disconnected{}.",
        instance.map(|i| format!(" from {i}")).unwrap_or_default()
    );
    println!(
        "nowpilot no longer writes to ServiceNow; incoming events wait until you run `nowpilot connect` again."
    );
    if outcome.had_connection_file {
        println!("Removed {}.", store.connection_file().display());
    }
    if outcome.removed_inline_section {
        println!(
            "Removed the [servicenow] section from {}.",
            store.main_config().display()
        );
    }
    Ok(())
}
