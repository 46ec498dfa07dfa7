//! `nowpilot status`: is the saved connection working right now?

use clap::Args;
use nowpilot_servicenow::check_connection;

use super::{EXIT_CONFIG, EXIT_FAILURE, fail, report};
use crate::{ConfigPath, Exit, config, output::Style, telemetry};

/// Exit code when no connection is configured.
pub const EXIT_NOT_CONNECTED: u8 = 3;

/// `nowpilot status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `nowpilot status`.
pub async fn run(config: &ConfigPath, args: StatusArgs) -> Result<(), Exit> {
    telemetry::init_logging(&telemetry::TelemetryConfig::default(), Some("warn"));
    let loaded = config::load(config).map_err(|e| fail(EXIT_CONFIG, e))?;
    let Some(snow) = &loaded.config.servicenow else {
        if args.json {
            println!("{{\"connected\": false, \"reason\": \"not_configured\"}}");
        } else {
            let style = Style::detect();
            println!("{}", style.red(&style.bold("ServiceNow is not connected")));
            println!(
                "  No [servicenow] section in {} or the files it includes.",
                config.path.display()
            );
            println!(
                "  Connect with: nowpilot connect --instance https://<instance>.service-now.com --auth basic --username <user> --password-file <file>"
            );
        }
        return Err(Exit(EXIT_NOT_CONNECTED));
    };
    let report = check_connection(snow, &loaded.base_dir).await;
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| fail(EXIT_FAILURE, format!("cannot encode the report: {e}")))?;
        println!("{json}");
    } else {
        report::print(&report, snow.auth, Style::detect());
    }
    match report.failure() {
        None => Ok(()),
        Some(failure) => Err(Exit(report::exit_code(failure))),
    }
}
