use super::*;
use crate::record::Record;

fn plans(toml_like: serde_json::Value) -> Result<PlanSet, PlanError> {
    let configs: Vec<PlanConfig> = serde_json::from_value(toml_like).unwrap();
    PlanSet::new(&configs, false)
}

fn incident(fields: serde_json::Value) -> Incident {
    let rec: Record = serde_json::from_value(fields).unwrap();
    Incident::from(rec)
}

#[test]
fn first_match_wins_and_continue_falls_through() {
    let set = plans(serde_json::json!([
        {"name": "a", "continue": true, "intake": {"priorities": [1, 2]}, "actions": [{"kind": "acknowledge"}]},
        {"name": "b", "intake": {"title_contains_any": ["LATENCY"]}, "actions": [{"kind": "investigate"}]},
        {"name": "c", "actions": [{"kind": "investigate"}]},
    ]))
    .unwrap();
    let inc =
        incident(serde_json::json!({"priority": "2", "short_description": "Checkout latency"}));
    let sel = set.select(&inc);
    let names: Vec<_> = sel.matched.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(matches!(&sel.verdicts[2].1, Verdict::Shadowed { by } if by == "b"));

    let inc = incident(serde_json::json!({"priority": "4", "short_description": "printer"}));
    let sel = set.select(&inc);
    let names: Vec<_> = sel.matched.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["c"]);
    match &sel.verdicts[0].1 {
        Verdict::NotMatched(reasons) => {
            assert_eq!(reasons[0].criterion, "priorities");
            assert!(reasons[0].explanation.contains("4 - Low"), "{reasons:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_criterion_filters() {
    let set = plans(serde_json::json!([{
        "name": "narrow",
        "intake": {
            "priorities": ["high"], "states": ["new", "in_progress"],
            "assignment_groups": ["Platform SRE"], "categories": ["software"],
            "subcategories": ["app"], "configuration_items": ["checkout-api"],
            "title_contains_any": ["latency", "slow"], "title_contains_all": ["checkout"],
            "title_contains_none": ["test"], "when": "impact <= 2"
        },
        "actions": [{"kind": "acknowledge"}]
    }]))
    .unwrap();
    let good = serde_json::json!({
        "priority": "2", "state": "1", "impact": "2",
        "assignment_group": {"display_value": "Platform SRE", "value": "g1"},
        "category": "software", "subcategory": "app",
        "cmdb_ci": {"display_value": "checkout-api", "value": "ci1"},
        "short_description": "Checkout is slow"
    });
    assert_eq!(set.select(&incident(good.clone())).matched.len(), 1);
    // Matching a reference by sys_id works too.
    let mut by_id = good.clone();
    by_id["assignment_group"] = serde_json::json!("g1");
    let set_by_id = plans(serde_json::json!([{
        "name": "by-id", "intake": {"assignment_groups": ["g1"]}, "actions": [{"kind": "acknowledge"}]
    }]))
    .unwrap();
    assert_eq!(set_by_id.select(&incident(by_id)).matched.len(), 1);

    let breakers = [
        ("priority", serde_json::json!("3"), "priorities"),
        ("state", serde_json::json!("3"), "states"),
        (
            "assignment_group",
            serde_json::json!({"display_value": "DBA", "value": "g2"}),
            "assignment_groups",
        ),
        ("category", serde_json::json!("hardware"), "categories"),
        ("subcategory", serde_json::json!("disk"), "subcategories"),
        ("cmdb_ci", serde_json::json!(""), "configuration_items"),
        (
            "short_description",
            serde_json::json!("Checkout is down"),
            "title_contains_any",
        ),
        (
            "short_description",
            serde_json::json!("Payments slow"),
            "title_contains_all",
        ),
        (
            "short_description",
            serde_json::json!("TEST checkout slow"),
            "title_contains_none",
        ),
        ("impact", serde_json::json!("3"), "when"),
    ];
    for (field, value, criterion) in breakers {
        let mut f = good.clone();
        f[field] = value;
        let sel = set.select(&incident(f));
        assert!(sel.matched.is_empty(), "{criterion}");
        match &sel.verdicts[0].1 {
            Verdict::NotMatched(r) => assert!(r.iter().any(|m| m.criterion == criterion), "{r:?}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn config_errors_name_plan_key_and_reason() {
    let cases = [
        (
            serde_json::json!([{"name": "bad name!", "actions": [{"kind": "acknowledge"}]}]),
            "name",
        ),
        (serde_json::json!([{"name": "p", "actions": []}]), "actions"),
        (
            serde_json::json!([{"name": "p", "intake": {"states": ["bogus"]}, "actions": [{"kind": "acknowledge"}]}]),
            "intake.states[0]",
        ),
        (
            serde_json::json!([{"name": "p", "intake": {"when": "priority =="}, "actions": [{"kind": "acknowledge"}]}]),
            "intake.when",
        ),
        (
            serde_json::json!([{"name": "p", "actions": [{"kind": "resolve", "close_code": "Solution provided"}]}]),
            "actions[0].close_notes",
        ),
        (
            serde_json::json!([{"name": "p", "actions": [{"kind": "acknowledge", "close_code": "x"}]}]),
            "actions[0].close_code",
        ),
        (
            serde_json::json!([{"name": "p", "actions": [{"kind": "work_note", "text": "a"}, {"kind": "work_note", "text": "b"}]}]),
            "actions[1].id",
        ),
        (
            serde_json::json!([{"name": "p", "steps": [{"kind": "http_probe", "name": "x", "url": "ftp://h"}], "actions": [{"kind": "investigate"}]}]),
            "steps[0].url",
        ),
        (
            serde_json::json!([{"name": "p", "actions": [{"kind": "acknowledge"}]}, {"name": "p", "actions": [{"kind": "acknowledge"}]}]),
            "name",
        ),
    ];
    for (config, key) in cases {
        let err = plans(config.clone()).unwrap_err();
        assert_eq!(err.key, key, "{config} -> {err}");
        assert!(err.to_string().starts_with("plans["), "{err}");
    }
}

#[test]
fn quickstart_is_appended_and_takes_priority_two() {
    let set = PlanSet::new(&[], true).unwrap();
    assert_eq!(set.plans().len(), 1);
    let q = &set.plans()[0];
    assert_eq!(q.name, QUICKSTART_PLAN);
    assert!(q.actions.iter().all(|a| a.autonomy == Autonomy::Autonomous));
    assert_eq!(
        set.select(&incident(serde_json::json!({"priority": "2"})))
            .matched
            .len(),
        1
    );
    assert!(
        set.select(&incident(serde_json::json!({"priority": "1"})))
            .matched
            .is_empty()
    );
    // A configured plan may not take the built-in name while quickstart is on.
    let configs: Vec<PlanConfig> = serde_json::from_value(serde_json::json!([
        {"name": "quickstart", "actions": [{"kind": "acknowledge"}]}
    ]))
    .unwrap();
    assert!(PlanSet::new(&configs, true).is_err());
    assert!(PlanSet::new(&configs, false).is_ok());
}

#[test]
fn analysis_finds_overlaps_shadows_and_contradictions() {
    let set = plans(serde_json::json!([
        {"name": "all-high", "intake": {"priorities": [1, 2]}, "actions": [{"kind": "acknowledge"}]},
        {"name": "p2-db", "intake": {"priorities": [2], "categories": ["database"]}, "actions": [{"kind": "acknowledge"}]},
        {"name": "latency", "intake": {"title_contains_any": ["latency"]}, "actions": [{"kind": "acknowledge"}]},
        {"name": "low", "intake": {"priorities": [4]}, "actions": [{"kind": "acknowledge"}]},
        {"name": "never", "intake": {"title_contains_all": ["db outage"], "title_contains_none": ["outage"]}, "actions": [{"kind": "acknowledge"}]},
        {"name": "off", "enabled": false, "actions": [{"kind": "acknowledge"}]},
        {"name": "idle-steps", "intake": {"priorities": [5]}, "steps": [{"kind": "related"}], "actions": [{"kind": "acknowledge"}]},
    ]))
    .unwrap();
    let findings = analyze(&set);
    let about = |plan: &str| -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.plan == plan)
            .map(|f| f.message.clone())
            .collect()
    };
    assert!(
        about("p2-db")
            .iter()
            .any(|m| m.contains("never match") && m.contains("all-high")),
        "{findings:?}"
    );
    assert!(
        about("latency")
            .iter()
            .any(|m| m.contains("overlaps \"all-high\"")),
        "{findings:?}"
    );
    // Disjoint priorities: no overlap reported between "low" and "all-high".
    assert!(
        !about("low").iter().any(|m| m.contains("all-high")),
        "{findings:?}"
    );
    assert!(
        about("never").iter().any(|m| m.contains("never match")),
        "{findings:?}"
    );
    assert!(about("off").iter().any(|m| m.contains("disabled")));
    assert!(
        about("idle-steps")
            .iter()
            .any(|m| m.contains("steps never run"))
    );
}

#[test]
fn investigate_without_steps_gets_the_related_step() {
    let set =
        plans(serde_json::json!([{"name": "p", "actions": [{"kind": "investigate"}]}])).unwrap();
    assert_eq!(set.plans()[0].steps[0].name, "related");
}

#[test]
fn conditions_that_fail_on_every_incident_are_refused_at_load() {
    let intake = |when: &str| {
        plans(
            serde_json::json!([{"name": "p", "intake": {"when": when}, "actions": [{"kind": "acknowledge"}]}]),
        )
    };
    // (condition, a fragment of the reason)
    for (when, reason) in [
        ("priorty <= 2", "unknown variable `priorty`"),
        ("findings.related.ok", "only in an action"),
        (
            "lowerAscii(title) == \"x\"",
            "unknown function `lowerAscii`",
        ),
        ("title.charAt(0) == \"x\"", "unknown function `charAt`"),
        // Found by the `plans` fuzz target: a name starting with `_` is not an operator.
        ("title._ontains(\"x\")", "unknown function `_ontains`"),
        ("priority + 1", "produces a sum"),
        ("\"high\"", "produces a string"),
        ("size(title)", "produces a number"),
        ("[priority]", "produces a list"),
        ("[1].map(x, x + 1)", "produces a list"),
        ("priority > 2 ? 1 : 2", "produces a number"),
    ] {
        let err = intake(when).unwrap_err();
        assert_eq!(err.key, "intake.when", "{when}: {err}");
        assert!(err.reason.contains(reason), "{when}: {err}");
    }
    // Everything documented still loads: macros with their own variables, member functions,
    // type names, conditionals, fields of any name.
    for when in [
        "priority <= 2 && incident.category == \"software\"",
        "title.contains(\"latency\") || title.startsWith(\"x\") || title.matches(\"^a\")",
        "[1, 2].exists(p, p == priority) && [3].all(x, x > 0)",
        "has(incident.u_custom) && size(incident.u_custom) > 0",
        "type(priority) == int",
        "priority > 2 ? state == \"new\" : true",
        "int(incident.reassignment_count) > 2",
        "display.assignment_group in [\"Platform SRE\"]",
    ] {
        intake(when).unwrap_or_else(|e| panic!("{when}: {e}"));
    }
}

#[test]
fn action_conditions_read_only_findings_the_steps_produce() {
    let plan = |when: &str| {
        plans(serde_json::json!([{
            "name": "p",
            "steps": [
                {"kind": "related"},
                {"kind": "http_probe", "name": "checkout", "url": "https://status.example.com/"},
            ],
            "actions": [{"kind": "investigate"}, {"kind": "acknowledge", "when": when}],
        }]))
    };
    for when in [
        "findings.probe.checkout.ok",
        "size(findings.related.changes) == 0 && has(findings.probe.checkout)",
        "findings.probe.exists(name, name == \"checkout\")",
    ] {
        plan(when).unwrap_or_else(|e| panic!("{when}: {e}"));
    }
    for (when, reason) in [
        (
            "findings.probe.chekout.ok",
            "no http_probe step named \"chekout\" (it has checkout)",
        ),
        (
            "findings.runbook.restart.ok",
            "no runbook step named \"restart\"",
        ),
        (
            "findings.probes.checkout.ok",
            "`findings.probes` does not exist",
        ),
        ("finding.probe.checkout.ok", "unknown variable `finding`"),
    ] {
        let err = plan(when).unwrap_err();
        assert_eq!(err.key, "actions[1].when", "{when}: {err}");
        assert!(err.reason.contains(reason), "{when}: {err}");
    }
    // Without a related step, findings.related is never set.
    let err = plans(serde_json::json!([{
        "name": "p",
        "steps": [{"kind": "http_probe", "name": "checkout", "url": "https://status.example.com/"}],
        "actions": [{"kind": "investigate"}, {"kind": "acknowledge", "when": "findings.related.ok"}],
    }]))
    .unwrap_err();
    assert!(err.reason.contains("no `related` step"), "{err}");
}

#[test]
fn continue_on_the_last_enabled_plan_is_a_warning() {
    let set = plans(serde_json::json!([
        {"name": "a", "continue": true, "intake": {"priorities": [1]}, "actions": [{"kind": "acknowledge"}]},
        {"name": "b", "enabled": false, "actions": [{"kind": "acknowledge"}]},
    ]))
    .unwrap();
    let findings = analyze(&set);
    assert!(
        findings.iter().any(|f| f.plan == "a"
            && f.severity == Severity::Warning
            && f.message.contains("no enabled plan comes after it")),
        "{findings:?}"
    );
    // With the Quickstart plan after it, `continue` has something to fall through to.
    let configs: Vec<PlanConfig> = serde_json::from_value(serde_json::json!([
        {"name": "a", "continue": true, "intake": {"priorities": [1]}, "actions": [{"kind": "acknowledge"}]},
    ]))
    .unwrap();
    let findings = analyze(&PlanSet::new(&configs, true).unwrap());
    assert!(
        !findings
            .iter()
            .any(|f| f.message.contains("comes after it")),
        "{findings:?}"
    );
}
