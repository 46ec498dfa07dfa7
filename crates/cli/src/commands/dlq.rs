//! `nowpilot dlq list | replay`: look at dead letters and re-drive them.

use clap::{Args, Subcommand};
use nowpilot_model::EventId;
use nowpilot_queue::ReplaySelector;
use tokio_util::sync::CancellationToken;

use super::{EXIT_CONFIG, EXIT_FAILURE, fail};
use crate::{ConfigPath, Exit, config, telemetry};

/// `nowpilot dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (oldest first) without removing them.
    List(ListArgs),
    /// Put dead letters back on their partitions, to be handled again.
    Replay(ReplayArgs),
}

/// `nowpilot dlq list` flags.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `nowpilot dlq replay` flags.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ReplayArgs {
    /// Replay these events (repeatable): `<sys_id>-<sys_mod_count>` as `dlq list` shows.
    #[arg(long = "id", value_name = "EVENT_ID")]
    ids: Vec<String>,
    /// Replay every readable dead letter.
    #[arg(long)]
    all: bool,
}

/// Runs a `dlq` subcommand.
pub async fn run(config_path: &ConfigPath, command: DlqCommand) -> Result<(), Exit> {
    telemetry::init_logging(&telemetry::TelemetryConfig::default(), Some("warn"));
    let loaded = config::load(config_path).map_err(|e| fail(EXIT_CONFIG, e))?;
    let shutdown = CancellationToken::new();
    let queue = nowpilot_queue::connect(&loaded.config.queue, shutdown.clone())
        .await
        .map_err(|e| fail(EXIT_FAILURE, format!("queue: {e}")))?;
    let result = match command {
        DlqCommand::List(args) => list(queue.as_ref(), args).await,
        DlqCommand::Replay(args) => replay(queue.as_ref(), args).await,
    };
    shutdown.cancel();
    queue.closed().await;
    result
}

async fn list(queue: &dyn nowpilot_queue::EventQueue, args: ListArgs) -> Result<(), Exit> {
    let letters = queue
        .dead_letters(args.limit)
        .await
        .map_err(|e| fail(EXIT_FAILURE, format!("dlq: {e}")))?;
    if args.json {
        let json = serde_json::to_string_pretty(&letters)
            .map_err(|e| fail(EXIT_FAILURE, format!("dlq: {e}")))?;
        println!("{json}");
        return Ok(());
    }
    if letters.is_empty() {
        println!("The dead-letter queue is empty.");
        return Ok(());
    }
    println!(
        "{:<44} {:<11} {:<24} {:<20} {:>7}  error",
        "event", "incident", "reason", "dead at", "attempt"
    );
    for letter in &letters {
        let (event, number) = match &letter.event {
            Some(e) => (e.event_id.to_string(), e.number.clone()),
            None => (
                letter
                    .message_id
                    .clone()
                    .unwrap_or_else(|| "(unreadable)".into()),
                String::new(),
            ),
        };
        println!(
            "{:<44} {:<11} {:<24} {:<20} {:>7}  {}",
            event,
            number,
            letter.reason,
            letter
                .dead_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            letter.attempt,
            letter
                .error
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    println!(
        "\n{} dead letter(s). Replay with: nowpilot dlq replay --id <event> | --all",
        letters.len()
    );
    Ok(())
}

async fn replay(queue: &dyn nowpilot_queue::EventQueue, args: ReplayArgs) -> Result<(), Exit> {
    let selector = if args.all {
        ReplaySelector::All
    } else {
        let mut ids = Vec::with_capacity(args.ids.len());
        for id in &args.ids {
            ids.push(EventId::parse(id).ok_or_else(|| {
                fail(
                    EXIT_CONFIG,
                    format!(
                        "dlq replay: --id {id:?} is not an event id (<sys_id>-<sys_mod_count>)"
                    ),
                )
            })?);
        }
        ReplaySelector::Ids(ids)
    };
    let report = queue
        .replay(selector)
        .await
        .map_err(|e| fail(EXIT_FAILURE, format!("dlq: {e}")))?;
    for id in &report.replayed {
        println!("replayed {id}");
    }
    for id in &report.not_found {
        println!("not in the dead-letter queue: {id}");
    }
    if report.unreadable > 0 {
        println!(
            "{} unreadable dead letter(s) left in place (their body is not an event)",
            report.unreadable
        );
    }
    println!(
        "{} event(s) back on their partitions.",
        report.replayed.len()
    );
    if report.replayed.is_empty() && !report.not_found.is_empty() {
        return Err(Exit(EXIT_FAILURE));
    }
    Ok(())
}
