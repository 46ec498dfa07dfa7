//! Plan loading: arbitrary text through the path the configuration takes. The config crate
//! parses it (TOML, key provenance, error messages); `[[plans]]` become a `PlanSet` (every CEL
//! condition compiled and checked at load); `[worker]` is validated against the plans (hosts,
//! approvers, findings); `plans check`'s analysis runs; then a few incidents are matched and
//! every action condition is evaluated against findings shaped like the plan's steps.
//!
//! Nothing may panic, and:
//! - every configuration error names the file it is about;
//! - a condition that loaded never fails for an undeclared variable or function: the load-time
//!   checks must refuse what cannot work on any incident.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nowpilot_model::plans::Expr;
use nowpilot_model::plans::{
    ExprError, IncidentVars, Mismatch, PlanConfig, PlanSet, Scope, StepKind, Verdict, analyze,
};
use nowpilot_model::{Incident, Record};
use nowpilot_worker::WorkerConfig;
use serde::Deserialize;
use serde_json::{Value, json};

/// The part of `nowpilot.toml` plan loading reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    plans: Vec<PlanConfig>,
    #[serde(default)]
    worker: WorkerConfig,
}

const FILE: &str = "fuzz.toml";

fn incident(fields: &[(&str, &str)]) -> Incident {
    let mut record = Record::new();
    for (k, v) in fields {
        record.set(*k, *v);
    }
    Incident::from(record)
}

/// Findings as an investigation with `steps` leaves them.
fn findings(steps: &[nowpilot_model::plans::Step]) -> Value {
    let mut f = json!({"probe": {}, "prometheus": {}, "runbook": {}});
    for step in steps {
        let (kind, result) = match &step.kind {
            StepKind::Related { .. } => {
                f["related"] = json!({"ok": true, "changes": [], "open_incidents": [],
                    "children": [], "discussion": [], "ci": {"name": "checkout-api"}});
                continue;
            }
            StepKind::HttpProbe { .. } => (
                "probe",
                json!({"ok": true, "status": 200, "latency_ms": 12}),
            ),
            StepKind::Prometheus { .. } => ("prometheus", json!({"ok": false, "value": 0.5})),
            StepKind::Runbook { .. } => (
                "runbook",
                json!({"ok": true, "status": 200, "verified": true}),
            ),
        };
        f[kind][&step.name] = result;
    }
    f
}

/// A loaded condition may fail on some incidents (a missing field, a type), never because a
/// name it uses does not exist.
fn assert_declared(result: &Result<bool, ExprError>, source: &str) {
    if let Err(ExprError::Evaluation(message)) = result {
        assert!(
            !message.contains("Undeclared reference"),
            "`{source}` loaded, then failed: {message}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // One line is a bare condition, in both places a condition is written; more lines are a
    // configuration file. (Parsing CEL dominates the cost of an input: each text is parsed as
    // what it looks like, not as both.)
    if !text.contains('\n') {
        let sample = incident(&[("priority", "2"), ("short_description", "x")]);
        let vars = IncidentVars::new(&sample);
        let empty = json!({"probe": {}, "prometheus": {}, "runbook": {}, "related": {}});
        for scope in [Scope::Intake, Scope::Action] {
            if let Ok(expr) = Expr::compile_in(text, scope) {
                let result = expr.evaluate(&vars.with(&[("findings", &empty)]));
                assert_declared(&result, expr.source());
                let _ = expr.findings_paths();
            }
        }
        return;
    }

    let file = match nowpilot_config::from_toml_str::<File>(text, FILE) {
        Ok(file) => file,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(FILE),
                "an error that names no file: {message}"
            );
            return;
        }
    };
    let mut worker = file.worker;
    // Input chooses no file to read.
    worker.runbook_secret_file = None;
    // `[worker] quickstart` appends the built-in plan.
    let quickstart = worker.quickstart;
    let set = match PlanSet::new(&file.plans, quickstart) {
        Ok(set) => set,
        Err(e) => {
            assert!(e.config_key().starts_with("plans["), "{e}");
            let _ = e.to_string();
            return;
        }
    };
    let _ = analyze(&set);
    if let Err(e) = worker.validate(&set) {
        assert!(!e.key.is_empty(), "{e}");
    }
    for fields in [
        &[
            ("priority", "2"),
            ("state", "1"),
            ("short_description", "Checkout latency"),
        ][..],
        &[
            ("priority", "4"),
            ("impact", "3"),
            ("urgency", "3"),
            ("category", "software"),
        ][..],
        &[][..],
    ] {
        let incident = incident(fields);
        let selection = set.select(&incident);
        assert!(selection.verdicts.len() == set.plans().len());
        for (plan, verdict) in &selection.verdicts {
            let _ = format!("{} {verdict}", plan.name);
            if let Verdict::NotMatched(reasons) = verdict {
                for Mismatch { explanation, .. } in reasons {
                    assert!(
                        !explanation.contains("Undeclared reference"),
                        "plan {:?}: {explanation}",
                        plan.name
                    );
                }
            }
        }
        let vars = IncidentVars::new(&incident);
        for plan in set.plans() {
            let findings = findings(&plan.steps);
            for action in &plan.actions {
                if let Some(when) = &action.when {
                    let result = when.evaluate(&vars.with(&[("findings", &findings)]));
                    assert_declared(&result, when.source());
                }
            }
        }
    }
});
