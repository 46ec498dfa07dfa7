//! `nowpilot plans check` and `nowpilot plans test --incident FILE.json`: validate plans and
//! explain matching, without contacting ServiceNow.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use nowpilot_model::{
    Incident, Record, State,
    plans::{ActionKind, Autonomy, IncidentVars, Plan, Severity, Verdict, analyze},
};

use super::{EXIT_CONFIG, fail};
use crate::{ConfigPath, Exit, config, output::Style, telemetry};

/// `nowpilot plans` subcommands.
#[derive(Debug, Subcommand)]
pub enum PlansCommand {
    /// Validate the plans and warn about overlaps and plans that can never match.
    Check,
    /// Show which plan an incident matches and, for every other plan, why not.
    Test(TestArgs),
}

/// `nowpilot plans test` flags.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// An incident as JSON: a Table API record, `{"result": {...}}`, or a callback payload.
    #[arg(long, value_name = "FILE")]
    incident: PathBuf,
}

/// Runs a `plans` subcommand.
pub async fn run(config_path: &ConfigPath, command: PlansCommand) -> Result<(), Exit> {
    telemetry::init_logging(&telemetry::TelemetryConfig::default(), Some("warn"));
    let loaded = config::load(config_path).map_err(|e| fail(EXIT_CONFIG, e))?;
    let (plans, _) = config::worker_settings(&loaded).map_err(|e| fail(EXIT_CONFIG, e))?;
    let style = Style::detect();
    match command {
        PlansCommand::Check => {
            if plans.is_empty() {
                println!("No plans configured: nowpilot will leave every incident alone.");
                println!("Add [[plans]] to the configuration, or set [worker] quickstart = true.");
                return Ok(());
            }
            println!("{} plan(s), matched in this order:", plans.plans().len());
            for (i, plan) in plans.plans().iter().enumerate() {
                describe(i, plan, style);
            }
            let findings = analyze(&plans);
            println!();
            if findings.is_empty() {
                println!("{}", style.green("No overlaps and no unreachable plans."));
            }
            for finding in &findings {
                let label = match finding.severity {
                    Severity::Warning => style.yellow("warning"),
                    Severity::Info => style.dim("info   "),
                };
                println!("{label} plan {:?} {}", finding.plan, finding.message);
            }
            Ok(())
        }
        PlansCommand::Test(args) => {
            let incident = read_incident(&args.incident)?;
            let selection = plans.select(&incident);
            println!(
                "Incident {} {:?}: priority {}, state {}",
                if incident.number().is_empty() {
                    "(no number)"
                } else {
                    incident.number()
                },
                incident.short_description(),
                incident
                    .priority()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                incident.state()
            );
            println!();
            let vars = IncidentVars::new(&incident);
            for (plan, verdict) in &selection.verdicts {
                match verdict {
                    Verdict::Matched => {
                        println!("{} {}", style.green("MATCH "), style.bold(&plan.name));
                        for line in would_do(plan, &incident, &vars) {
                            println!("         {line}");
                        }
                    }
                    Verdict::NotMatched(reasons) => {
                        println!("{} {}", style.dim("no    "), plan.name);
                        for r in reasons {
                            println!("         {}: {}", r.criterion, r.explanation);
                        }
                    }
                    other => println!("{} {} — {other}", style.dim("skip  "), plan.name),
                }
            }
            println!();
            match selection.matched.as_slice() {
                [] => println!("No plan matches: nowpilot leaves this incident alone."),
                [one] => println!("Plan {:?} handles this incident.", one.name),
                many => println!(
                    "Plans {} handle this incident (through continue = true).",
                    many.iter()
                        .map(|p| format!("{:?}", p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            Ok(())
        }
    }
}

fn describe(index: usize, plan: &Plan, style: Style) {
    let mut flags = Vec::new();
    if !plan.enabled {
        flags.push("disabled");
    }
    if plan.continue_matching {
        flags.push("continue");
    }
    if plan.builtin {
        flags.push("built-in");
    }
    println!(
        "  {}. {}{}",
        index + 1,
        style.bold(&plan.name),
        if flags.is_empty() {
            String::new()
        } else {
            format!(" ({})", flags.join(", "))
        }
    );
    let actions: Vec<String> = plan
        .actions
        .iter()
        .map(|a| {
            let mode = match a.autonomy {
                Autonomy::Autonomous => "",
                Autonomy::Review => " [review]",
            };
            let when = a
                .when
                .as_ref()
                .map(|w| format!(" when {}", w.source()))
                .unwrap_or_default();
            format!("{}{mode}{when}", a.id)
        })
        .collect();
    println!("     actions: {}", actions.join(", "));
    if !plan.steps.is_empty() {
        let steps: Vec<_> = plan.steps.iter().map(|s| s.findings_path()).collect();
        println!("     steps:   {}", steps.join(", "));
    }
}

/// What the plan would do for this incident on a first pass (no journal: nothing done yet).
fn would_do(plan: &Plan, incident: &Incident, vars: &IncidentVars) -> Vec<String> {
    if incident.state().is_terminal() {
        return vec!["nothing: the incident is resolved, closed or canceled".into()];
    }
    plan.actions
        .iter()
        .map(|action| {
            let mode = match action.autonomy {
                Autonomy::Autonomous => "do",
                Autonomy::Review => "propose",
            };
            let what = match &action.kind {
                ActionKind::Acknowledge { .. } if incident.state() != State::New => {
                    return format!("skip {}: the incident is no longer New", action.id);
                }
                ActionKind::Acknowledge { .. } => "acknowledge (state → In Progress)".to_owned(),
                ActionKind::Investigate => format!(
                    "investigate ({})",
                    plan.steps
                        .iter()
                        .map(|s| s.findings_path())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                ActionKind::WorkNote { .. } => "post a work note".into(),
                ActionKind::SetPriority { priority, .. } => format!("set priority to {priority}"),
                ActionKind::Resolve { close_code, .. } => format!("resolve with {close_code:?}"),
                ActionKind::Hold { hold_reason, .. } => format!("put on hold ({hold_reason})"),
            };
            match &action.when {
                Some(when) if when.source().contains("findings") => {
                    format!(
                        "{mode} {what}, if `{}` holds after the investigation",
                        when.source()
                    )
                }
                Some(when) => match when.evaluate(&vars.with(&[])) {
                    Ok(true) => format!("{mode} {what} (`{}` is true)", when.source()),
                    Ok(false) => format!("skip {}: `{}` is false", action.id, when.source()),
                    Err(e) => format!("skip {}: {e}", action.id),
                },
                None => format!("{mode} {what}"),
            }
        })
        .collect()
}

/// Reads an incident from a Table API record, a `{"result": ...}` answer or a callback.
fn read_incident(path: &Path) -> Result<Incident, Exit> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(
            EXIT_CONFIG,
            format!("plans test: cannot read {}: {e}", path.display()),
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        fail(
            EXIT_CONFIG,
            format!("plans test: {} is not JSON: {e}", path.display()),
        )
    })?;
    let record = match &json {
        serde_json::Value::Object(map) if map.contains_key("result") => json["result"].clone(),
        serde_json::Value::Object(map)
            if map.contains_key("record") && map.contains_key("sys_id") =>
        {
            let mut record = json["record"].clone();
            if let Some(r) = record.as_object_mut() {
                r.entry("sys_id").or_insert(json["sys_id"].clone());
            }
            record
        }
        _ => json,
    };
    let record: Record = serde_json::from_value(record).map_err(|e| {
        fail(
            EXIT_CONFIG,
            format!(
                "plans test: {} is not an incident record: {e}",
                path.display()
            ),
        )
    })?;
    if record.is_empty() {
        return Err(fail(
            EXIT_CONFIG,
            format!("plans test: {} holds no incident fields", path.display()),
        ));
    }
    Ok(Incident::from(record))
}
