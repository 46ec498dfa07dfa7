//! The live timeline: what reached the ingress, which plan took it and why, and what each
//! action did, one line each, as it happens.

use std::sync::Arc;

use nowpilot_admin::status::describe_intake;
use nowpilot_model::plans::PlanSet;
use nowpilot_model::{EventEnvelope, Operation};
use nowpilot_queue::ActivityRecord;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::output::Style;

/// Prints the timeline until `shutdown` (then what is still buffered): events from `arrived`
/// (the ingress) and passes from `passes` (the worker's activity).
pub async fn print(
    style: Style,
    plans: Arc<PlanSet>,
    mut arrived: mpsc::UnboundedReceiver<EventEnvelope>,
    mut passes: broadcast::Receiver<Arc<ActivityRecord>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                // Whatever already happened is still worth a line.
                while let Ok(event) = arrived.try_recv() {
                    println!("{}", arrival(style, &event));
                }
                while let Ok(pass) = passes.try_recv() {
                    println!("{}", pass_lines(style, &plans, &pass).join("\n"));
                }
                return;
            }
            event = arrived.recv() => match event {
                Some(event) => println!("{}", arrival(style, &event)),
                None => return,
            },
            pass = passes.recv() => match pass {
                // One print per pass, so that other output never splits it.
                Ok(pass) => println!("{}", pass_lines(style, &plans, &pass).join("\n")),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

fn clock(style: Style) -> String {
    style.dim(&chrono::Local::now().format("%H:%M:%S").to_string())
}

/// `12:00:01 → INC0010005 created by maya.patel: "…" (priority 2): signed callback verified, queued`
fn arrival(style: Style, event: &EventEnvelope) -> String {
    let Some(callback) = &event.callback else {
        return format!(
            "{} {} {} queued ({})",
            clock(style),
            style.bold("→"),
            event.number,
            event.source.as_str()
        );
    };
    let what = match &callback.operation {
        Operation::Insert => "created",
        Operation::Update => "updated",
        Operation::Delete => "deleted",
        Operation::Other(_) => "changed",
    };
    let record = &callback.record;
    let mut detail = Vec::new();
    let priority = record.value_or_empty("priority");
    if !priority.is_empty() {
        detail.push(format!("priority {priority}"));
    }
    let state = record.value_or_empty("state");
    if !state.is_empty() {
        detail.push(format!(
            "state {}",
            nowpilot_model::State::from_value(state).label()
        ));
    }
    let short = record.value_or_empty("short_description");
    format!(
        "{} {} {} {what} by {}: \u{201c}{}\u{201d} ({}) {}",
        clock(style),
        style.bold("→"),
        style.bold(&event.number),
        callback.sys_updated_by,
        short,
        detail.join(", "),
        style.dim("signed callback verified, queued")
    )
}

/// The pass, then one indented line per action.
fn pass_lines(style: Style, plans: &PlanSet, pass: &ActivityRecord) -> Vec<String> {
    let number = if pass.number.is_empty() {
        pass.sys_id.as_str()
    } else {
        pass.number.as_str()
    };
    let outcome = match pass.outcome.as_str() {
        "acted" => style.green("acted"),
        "no_plan" => style.dim("left alone"),
        "nothing_owed" => style.dim("nothing left to do"),
        "stale" => style.dim("already handled"),
        "terminal" => style.dim("closed: nothing to do"),
        "dead_lettered" => style.red("dead-lettered"),
        "retried" => style.yellow("will retry"),
        other => style.dim(&other.replace('_', " ")),
    };
    let plan = match pass.plans.first() {
        None => "no plan takes it".to_owned(),
        Some(name) => {
            let why = plans
                .get(name)
                .map(|p| describe_intake(&p.intake))
                .unwrap_or_default();
            format!("plan {} matched ({why})", style.bold(name))
        }
    };
    let mut lines = vec![format!(
        "{} {} {number}: {plan} {} {outcome} ({} ms)",
        clock(style),
        style.bold("⚙"),
        style.dim("→"),
        pass.duration_ms
    )];
    for action in &pass.actions {
        let result = match action.result.as_str() {
            "done" | "approved" => style.green(&action.result),
            "failed" | "refused" => style.red(&action.result),
            other => style.yellow(other),
        };
        lines.push(format!(
            "           {} {} {result}: {}",
            style.dim("·"),
            action.action,
            first_line(&action.detail)
        ));
    }
    if let Some(error) = &pass.error {
        lines.push(format!(
            "           {} {}",
            style.dim("·"),
            style.red(error)
        ));
    }
    lines
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}
