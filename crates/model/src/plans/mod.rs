//! Response plans: which incidents nowpilot handles, what it does to them, and how far it may
//! act on its own.
//!
//! Plans are ordered; the first matching plan wins, and a plan with `continue = true` lets later
//! plans match too (Alertmanager's routing model). Each plan has an intake filter
//! ([`filter::IntakeFilter`]), investigation steps ([`steps::Step`]) and actions
//! ([`actions::Action`]) with a per-action autonomy (`autonomous` acts, `review` proposes and
//! waits for a person's `/nowpilot approve <id>`). Everything here is pure: the worker does
//! the I/O.

pub mod actions;
pub mod analysis;
pub mod expr;
pub mod filter;
pub mod steps;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use actions::{Action, ActionConfig, ActionKind};
pub use analysis::{Finding, Severity, analyze};
pub use expr::{Expr, ExprError, IncidentVars, Scope};
pub use filter::{IntakeConfig, IntakeFilter, Mismatch};
pub use steps::{Step, StepConfig, StepKind, StepKindName};

use crate::incident::{Incident, Priority};

/// The name of the built-in Quickstart plan.
pub const QUICKSTART_PLAN: &str = "quickstart";

/// Whether an action is carried out directly or proposed for a person to approve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Autonomy {
    /// nowpilot acts, then reports what it did in a work note.
    Autonomous,
    /// nowpilot posts a proposal and acts only after `/nowpilot approve <id>` by an approver.
    #[default]
    Review,
}

impl Autonomy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Autonomy::Autonomous => "autonomous",
            Autonomy::Review => "review",
        }
    }
}

/// One `[[plans]]` entry as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Unique name (letters, digits, `-`, `_`, `.`); it appears in work-note markers, metrics and
    /// the status page, so renaming a plan makes nowpilot treat its incidents as new.
    pub name: String,
    /// `false` keeps the plan in the file but never matches it.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// After this plan matches, keep trying later plans too.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// The default autonomy of this plan's actions (`review` unless set).
    #[serde(default)]
    pub autonomy: Autonomy,
    /// Which incidents the plan takes.
    #[serde(default)]
    pub intake: IntakeConfig,
    /// Investigation steps, run in order by an `investigate` action.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    /// What the plan does, in order.
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
}

fn default_true() -> bool {
    true
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The plan's name.
    pub name: String,
    /// Whether it can match at all.
    pub enabled: bool,
    /// Whether later plans may match too.
    pub continue_matching: bool,
    /// The plan's default autonomy (actions may override it).
    pub autonomy: Autonomy,
    /// The intake filter.
    pub intake: IntakeFilter,
    /// Investigation steps.
    pub steps: Vec<Step>,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// Where it came from: a config file or the built-in Quickstart plan.
    pub builtin: bool,
}

/// A plan that cannot be used, located precisely: `plans[2] ("checkout"): actions[1].close_code: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plans[{index}] ({name:?}): {key}: {reason}")]
pub struct PlanError {
    /// The plan's position in the config (0-based).
    pub index: usize,
    /// The plan's name as written.
    pub name: String,
    /// The key inside the plan (`intake.when`, `actions[1].close_code`).
    pub key: String,
    /// Why.
    pub reason: String,
}

impl PlanError {
    /// The full dotted key from the config root (`plans[2].actions[1].close_code`).
    pub fn config_key(&self) -> String {
        format!("plans[{}].{}", self.index, self.key)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Plan {
    /// Validates one plan config.
    pub fn from_config(index: usize, config: &PlanConfig) -> Result<Plan, PlanError> {
        let err = |key: String, reason: String| PlanError {
            index,
            name: config.name.clone(),
            key,
            reason,
        };
        if !valid_name(&config.name) {
            return Err(err(
                "name".into(),
                "must be 1-64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let intake = IntakeFilter::from_config(&config.intake)
            .map_err(|(k, r)| err(format!("intake.{k}"), r))?;
        let mut steps: Vec<Step> = Vec::with_capacity(config.steps.len());
        for (i, step) in config.steps.iter().enumerate() {
            let step =
                Step::from_config(step).map_err(|(k, r)| err(format!("steps[{i}]{k}"), r))?;
            if steps.iter().any(|s| s.name == step.name) {
                return Err(err(
                    format!("steps[{i}].name"),
                    format!(
                        "two steps are named {:?}; step names must be unique",
                        step.name
                    ),
                ));
            }
            steps.push(step);
        }
        let mut actions: Vec<Action> = Vec::with_capacity(config.actions.len());
        for (i, action) in config.actions.iter().enumerate() {
            let action = Action::from_config(action, config.autonomy)
                .map_err(|(k, r)| err(format!("actions[{i}]{k}"), r))?;
            if actions.iter().any(|a| a.id == action.id) {
                return Err(err(
                    format!("actions[{i}].id"),
                    format!(
                        "two actions have the id {:?}; give repeated kinds an explicit `id`",
                        action.id
                    ),
                ));
            }
            actions.push(action);
        }
        if actions.is_empty() {
            return Err(err(
                "actions".into(),
                "a plan needs at least one action (acknowledge, investigate, work_note, set_priority, resolve, hold)"
                    .into(),
            ));
        }
        let investigates = actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::Investigate));
        if investigates && steps.is_empty() {
            // Investigating with nothing configured still gathers the related records.
            steps.push(Step::default_related());
        }
        if investigates {
            for (i, action) in actions.iter().enumerate() {
                if let Some(when) = &action.when {
                    check_findings(when, &steps)
                        .map_err(|r| err(format!("actions[{i}].when"), r))?;
                }
            }
        }
        Ok(Plan {
            name: config.name.clone(),
            enabled: config.enabled,
            continue_matching: config.continue_matching,
            autonomy: config.autonomy,
            intake,
            steps,
            actions,
            builtin: false,
        })
    }

    /// The Quickstart plan: High (priority 2) incidents, acknowledged and investigated
    /// autonomously. It is placed after the configured plans.
    pub fn quickstart() -> Plan {
        Plan {
            name: QUICKSTART_PLAN.into(),
            enabled: true,
            continue_matching: false,
            autonomy: Autonomy::Autonomous,
            intake: IntakeFilter {
                priorities: vec![Priority::High],
                ..IntakeFilter::default()
            },
            steps: vec![Step::default_related()],
            actions: vec![
                Action::simple(ActionKind::acknowledge(), Autonomy::Autonomous),
                Action::simple(ActionKind::Investigate, Autonomy::Autonomous),
            ],
            builtin: true,
        }
    }

    /// Every reason the incident does not pass the intake filter (empty: it passes).
    pub fn mismatches(&self, incident: &Incident, vars: &IncidentVars) -> Vec<Mismatch> {
        self.intake.mismatches(incident, vars)
    }
}

/// Checks that every `findings.<kind>.<name>` a condition reads is produced by one of `steps`.
/// A typo there would make the condition fail on every incident, so it is refused at load.
fn check_findings(when: &Expr, steps: &[Step]) -> Result<(), String> {
    for path in when.findings_paths() {
        let Some(kind) = path.first() else { continue };
        let produced: Vec<String> = steps.iter().map(Step::findings_path).collect();
        match (kind.as_str(), path.get(1)) {
            ("related", _) => {
                if !produced.iter().any(|p| p == "related") {
                    return Err(
                        "`findings.related` is never set: the plan has no `related` step".into(),
                    );
                }
            }
            ("probe" | "prometheus" | "runbook", Some(name)) => {
                let wanted = format!("{kind}.{name}");
                if !produced.contains(&wanted) {
                    let same_kind: Vec<&str> = produced
                        .iter()
                        .filter_map(|p| p.strip_prefix(&format!("{kind}.")))
                        .collect();
                    return Err(format!(
                        "`findings.{wanted}` is never set: the plan has no {} step named {name:?}{}",
                        match kind.as_str() {
                            "probe" => "http_probe",
                            other => other,
                        },
                        if same_kind.is_empty() {
                            String::new()
                        } else {
                            format!(" (it has {})", same_kind.join(", "))
                        }
                    ));
                }
            }
            ("probe" | "prometheus" | "runbook", None) => {}
            (other, _) => {
                return Err(format!(
                    "`findings.{other}` does not exist: findings has related, probe.<name>, \
                     prometheus.<name> and runbook.<name>"
                ));
            }
        }
    }
    Ok(())
}

/// The ordered, validated plans of a deployment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanSet {
    plans: Vec<Plan>,
}

/// How one plan fared against one incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The plan takes the incident.
    Matched,
    /// The plan is disabled.
    Disabled,
    /// The intake filter refused it, for these reasons.
    NotMatched(Vec<Mismatch>),
    /// An earlier plan matched without `continue`, so this one was not consulted.
    Shadowed {
        /// The plan that took the incident.
        by: String,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Matched => f.write_str("matches"),
            Verdict::Disabled => f.write_str("disabled"),
            Verdict::NotMatched(reasons) => {
                let text: Vec<_> = reasons.iter().map(|m| m.explanation.as_str()).collect();
                write!(f, "does not match: {}", text.join("; "))
            }
            Verdict::Shadowed { by } => write!(f, "not consulted: {by:?} matched first"),
        }
    }
}

/// The outcome of matching one incident against every plan.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    /// Matched plans, in order (more than one only through `continue`).
    pub matched: Vec<&'a Plan>,
    /// Every plan with its verdict, in config order.
    pub verdicts: Vec<(&'a Plan, Verdict)>,
}

impl PlanSet {
    /// Validates configured plans and appends the Quickstart plan when asked.
    pub fn new(configs: &[PlanConfig], quickstart: bool) -> Result<PlanSet, PlanError> {
        let mut plans: Vec<Plan> = Vec::with_capacity(configs.len() + 1);
        for (index, config) in configs.iter().enumerate() {
            let plan = Plan::from_config(index, config)?;
            if plans.iter().any(|p| p.name == plan.name)
                || (quickstart && plan.name == QUICKSTART_PLAN)
            {
                return Err(PlanError {
                    index,
                    name: config.name.clone(),
                    key: "name".into(),
                    reason: if plan.name == QUICKSTART_PLAN {
                        "\"quickstart\" is the built-in Quickstart plan's name while [worker] quickstart = true".into()
                    } else {
                        "another plan has the same name; names must be unique".into()
                    },
                });
            }
            plans.push(plan);
        }
        if quickstart {
            plans.push(Plan::quickstart());
        }
        Ok(PlanSet { plans })
    }

    /// A set from already-validated plans (tests, tools).
    pub fn from_plans(plans: Vec<Plan>) -> PlanSet {
        PlanSet { plans }
    }

    /// The plans in order.
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// A plan by name.
    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// Whether there are no plans at all.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// Matches an incident: first match wins unless the matching plan says `continue`.
    pub fn select(&self, incident: &Incident) -> Selection<'_> {
        let needs_vars = self.plans.iter().any(|p| p.intake.when.is_some());
        let vars = IncidentVars::when_needed(incident, needs_vars);
        let mut matched = Vec::new();
        let mut verdicts = Vec::with_capacity(self.plans.len());
        let mut stopped_by: Option<&str> = None;
        for plan in &self.plans {
            let verdict = if let Some(by) = stopped_by {
                Verdict::Shadowed { by: by.to_owned() }
            } else if !plan.enabled {
                Verdict::Disabled
            } else {
                let reasons = plan.mismatches(incident, &vars);
                if reasons.is_empty() {
                    matched.push(plan);
                    if !plan.continue_matching {
                        stopped_by = Some(&plan.name);
                    }
                    Verdict::Matched
                } else {
                    Verdict::NotMatched(reasons)
                }
            };
            verdicts.push((plan, verdict));
        }
        Selection { matched, verdicts }
    }
}

#[cfg(test)]
mod tests;
