//! Plan loading: arbitrary TOML text through the same path the configuration takes
//! (`[[plans]]` → `PlanSet::new`, including every CEL expression), then matching a few
//! incidents with whatever loaded. Nothing may panic; errors are typed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nowpilot_model::plans::{Expr, IncidentVars, PlanConfig, PlanSet};
use nowpilot_model::{Incident, Record};
use serde::Deserialize;

#[derive(Deserialize)]
struct PlansFile {
    #[serde(default)]
    plans: Vec<PlanConfig>,
}

fn incident(fields: &[(&str, &str)]) -> Incident {
    let mut record = Record::new();
    for (k, v) in fields {
        record.set(*k, *v);
    }
    Incident::from(record)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A bare expression: compile and evaluate it on its own too.
    if let Ok(expr) = Expr::compile(text) {
        let vars = IncidentVars::new(&incident(&[("priority", "2"), ("short_description", "x")]));
        let _ = expr.evaluate(&vars.with(&[]));
    }
    let Ok(file) = toml::from_str::<PlansFile>(text) else {
        return;
    };
    for quickstart in [false, true] {
        let Ok(set) = PlanSet::new(&file.plans, quickstart) else {
            continue;
        };
        for fields in [
            &[("priority", "2"), ("state", "1"), ("short_description", "Checkout latency")][..],
            &[("priority", "4"), ("impact", "3"), ("urgency", "3"), ("category", "software")][..],
            &[][..],
        ] {
            let selection = set.select(&incident(fields));
            assert!(selection.verdicts.len() == set.plans().len());
            for (plan, verdict) in &selection.verdicts {
                let _ = format!("{} {verdict}", plan.name);
            }
        }
    }
});
