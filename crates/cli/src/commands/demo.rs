//! `nowpilot demo`: nowpilot against an embedded ServiceNow simulator, no setup needed.
//!
//! Today it connects to a seeded simulator the way `nowpilot connect` does, then reads what
//! the worker will read for each open incident: the configuration item, recent changes on it,
//! and the discussion. The full scenario (callbacks → queue → worker → write-back) replaces this
//! as the worker lands.

use std::time::Duration;

use chrono::Utc;
use clap::Args;
use nowpilot_model::Incident;
use nowpilot_servicenow::{
    Client, ClientOptions, DisplayValue, EncodedQuery, ListRequest, ServiceNowConfig,
    check_connection,
};
use nowpilot_snowsim::{SimConfig, SimUser, Simulator};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILURE, fail, report, shutdown_signal};
use crate::{Exit, output::Style, telemetry};

/// `nowpilot demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// End after the scenario instead of keeping the simulator up (exit code 0 only if every
    /// step happened).
    #[arg(long)]
    exit: bool,
    /// Where the embedded simulator listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

const INTEGRATION_USER: &str = "nowpilot.integration";

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<(), Exit> {
    telemetry::init_logging(&telemetry::TelemetryConfig::default(), Some("warn"));
    let style = Style::detect();
    let password = format!("demo-{:016x}", rand::random::<u64>());
    let sim = Simulator::new(SimConfig {
        seed_demo: true,
        users: vec![SimUser::new(INTEGRATION_USER, password.clone())],
        ..SimConfig::default()
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            fail(
                EXIT_FAILURE,
                format!("demo: cannot listen on {}: {e}", args.listen),
            )
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| fail(EXIT_FAILURE, format!("demo: {e}")))?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(nowpilot_snowsim::run(
        sim.clone(),
        listener,
        shutdown.clone(),
    ));
    let instance = format!("http://{addr}");
    println!(
        "{} a simulated ServiceNow instance at {instance}",
        style.bold("nowpilot demo:")
    );

    let config = ServiceNowConfig::basic(&instance, INTEGRATION_USER, SecretString::from(password));
    println!("\nConnecting as {INTEGRATION_USER} (Basic auth) ...");
    let connection = check_connection(&config, std::path::Path::new(".")).await;
    report::print(&connection, config.auth, style);
    if let Some(failure) = connection.failure() {
        shutdown.cancel();
        return Err(Exit(report::exit_code(failure)));
    }

    let outcome = tour(&config, style).await;
    if let Err(e) = &outcome {
        println!("{}", style.red(&format!("demo step failed: {e}")));
    }
    if args.exit || outcome.is_err() {
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        return outcome.map_err(|_| Exit(EXIT_FAILURE));
    }
    println!(
        "\nThe simulator stays up at {instance} (try {instance}/api/now/table/incident with user {INTEGRATION_USER}). Ctrl-C ends the demo."
    );
    shutdown_signal().await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

/// Reads, for every open incident, what an investigation reads.
async fn tour(config: &ServiceNowConfig, style: Style) -> Result<(), String> {
    let resolved = config
        .resolve(std::path::Path::new("."))
        .map_err(|e| e.to_string())?;
    let client = Client::new(resolved, ClientOptions::default()).map_err(|e| e.to_string())?;
    let query = EncodedQuery::new()
        .eq("active", "true")
        .order_by("number")
        .build()
        .map_err(|e| e.to_string())?;
    let incidents = client
        .list_all(
            "incident",
            &ListRequest::new()
                .query(query)
                .display_value(DisplayValue::Both),
            100,
        )
        .await
        .map_err(|e| e.to_string())?;
    if incidents.is_empty() {
        return Err("the seeded instance has no open incidents".into());
    }
    println!("\n{} open incidents:", incidents.len());
    let since = Utc::now() - chrono::Duration::hours(24);
    for record in incidents {
        let incident = Incident::from(record);
        println!(
            "\n  {} {}  [{}; {}]",
            style.bold(incident.number()),
            incident.short_description(),
            incident
                .priority()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "no priority".into()),
            incident.state()
        );
        let ci = incident.field("cmdb_ci");
        if !ci.is_empty() {
            let name = incident.record.display("cmdb_ci").unwrap_or(ci).to_owned();
            let changes = client
                .changes_on_ci(ci, since, Utc::now())
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "    configuration item {name}: {} change(s) in the last 24 h",
                changes.len()
            );
            for change in changes {
                println!(
                    "      {} {}",
                    change.value_or_empty("number"),
                    change.value_or_empty("short_description")
                );
            }
        }
        let journal = client
            .journal("incident", incident.sys_id())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(last) = journal.last() {
            println!(
                "    {} journal entr{}; latest by {}: {}",
                journal.len(),
                if journal.len() == 1 { "y" } else { "ies" },
                last.created_by,
                last.value.lines().next().unwrap_or_default()
            );
        }
    }
    Ok(())
}
