//! The intake filter: which incidents a plan takes.
//!
//! Every criterion that is set must hold (AND); within one list any value may match (OR). An
//! empty list means "any". Text comparisons are case-insensitive. Reference criteria
//! (assignment groups, configuration items) match either the stored sys_id or the display name,
//! so a plan may say `assignment_groups = ["Platform SRE"]`.

use serde::Deserialize;

use super::expr::{Expr, IncidentVars, Scope};
use crate::incident::{Incident, Priority, State};

/// The `[plans.intake]` table as written in the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Priorities taken, as numbers or labels (`[1, 2]`, `["critical", "high"]`).
    #[serde(default)]
    pub priorities: Vec<Priority>,
    /// States taken, by label or value (`["new", "in_progress"]`).
    #[serde(default)]
    pub states: Vec<String>,
    /// Assignment groups taken, by name or sys_id.
    #[serde(default)]
    pub assignment_groups: Vec<String>,
    /// Categories taken (stored values, e.g. `software`).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Subcategories taken.
    #[serde(default)]
    pub subcategories: Vec<String>,
    /// Configuration items taken, by name or sys_id.
    #[serde(default)]
    pub configuration_items: Vec<String>,
    /// The short description contains at least one of these.
    #[serde(default)]
    pub title_contains_any: Vec<String>,
    /// The short description contains all of these.
    #[serde(default)]
    pub title_contains_all: Vec<String>,
    /// The short description contains none of these.
    #[serde(default)]
    pub title_contains_none: Vec<String>,
    /// A CEL expression over the incident that must be true (see `docs/response-plans.md`).
    #[serde(default)]
    pub when: Option<String>,
}

/// A validated intake filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntakeFilter {
    /// See [`IntakeConfig::priorities`].
    pub priorities: Vec<Priority>,
    /// See [`IntakeConfig::states`].
    pub states: Vec<State>,
    /// Names or sys_ids, as written (compared ignoring case; the poller sends them to
    /// ServiceNow as written, since encoded queries may compare case-sensitively).
    pub assignment_groups: Vec<String>,
    /// As written (compared ignoring case).
    pub categories: Vec<String>,
    /// As written (compared ignoring case).
    pub subcategories: Vec<String>,
    /// Names or sys_ids, as written (compared ignoring case).
    pub configuration_items: Vec<String>,
    /// Lowercased.
    pub title_contains_any: Vec<String>,
    /// Lowercased.
    pub title_contains_all: Vec<String>,
    /// Lowercased.
    pub title_contains_none: Vec<String>,
    /// Compiled `when`.
    pub when: Option<Expr>,
}

/// One reason an incident did not pass a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The criterion (`priorities`, `title_contains_any`, `when`, ...).
    pub criterion: &'static str,
    /// A sentence explaining it.
    pub explanation: String,
}

impl IntakeFilter {
    /// Validates a config table; errors are `(key, reason)` relative to `intake`.
    pub fn from_config(config: &IntakeConfig) -> Result<Self, (String, String)> {
        let states = config
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                State::parse_name(s).ok_or_else(|| {
                    (
                        format!("states[{i}]"),
                        format!(
                            "unknown state {s:?}: use new, in_progress, on_hold, resolved, closed, canceled or a number"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let trimmed = |key: &str, items: &[String]| -> Result<Vec<String>, (String, String)> {
            items
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let t = s.trim().to_owned();
                    if t.is_empty() {
                        Err((format!("{key}[{i}]"), "must not be empty".to_owned()))
                    } else {
                        Ok(t)
                    }
                })
                .collect()
        };
        let lower = |key: &str, items: &[String]| -> Result<Vec<String>, (String, String)> {
            Ok(trimmed(key, items)?
                .into_iter()
                .map(|t| t.to_lowercase())
                .collect())
        };
        let when = match &config.when {
            None => None,
            Some(src) => Some(
                Expr::compile_in(src, Scope::Intake)
                    .map_err(|e| ("when".to_owned(), e.to_string()))?,
            ),
        };
        Ok(IntakeFilter {
            priorities: config.priorities.clone(),
            states,
            assignment_groups: trimmed("assignment_groups", &config.assignment_groups)?,
            categories: trimmed("categories", &config.categories)?,
            subcategories: trimmed("subcategories", &config.subcategories)?,
            configuration_items: trimmed("configuration_items", &config.configuration_items)?,
            title_contains_any: lower("title_contains_any", &config.title_contains_any)?,
            title_contains_all: lower("title_contains_all", &config.title_contains_all)?,
            title_contains_none: lower("title_contains_none", &config.title_contains_none)?,
            when,
        })
    }

    /// Whether no criterion is set: the filter takes every incident.
    pub fn is_catch_all(&self) -> bool {
        *self == IntakeFilter::default()
    }

    /// Every criterion the incident fails (empty: it passes). Evaluates all criteria, so
    /// `nowpilot plans test` can show every reason at once.
    pub fn mismatches(&self, incident: &Incident, vars: &IncidentVars) -> Vec<Mismatch> {
        let mut out = Vec::new();
        if !self.priorities.is_empty() {
            let p = incident.priority();
            if !p.is_some_and(|p| self.priorities.contains(&p)) {
                out.push(Mismatch {
                    criterion: "priorities",
                    explanation: format!(
                        "priority is {}; the plan takes {}",
                        p.map(|p| p.to_string())
                            .unwrap_or_else(|| "unknown".to_owned()),
                        join(self.priorities.iter().map(|p| p.to_string()))
                    ),
                });
            }
        }
        if !self.states.is_empty() {
            let s = incident.state();
            if !self.states.contains(&s) {
                out.push(Mismatch {
                    criterion: "states",
                    explanation: format!(
                        "state is {s}; the plan takes {}",
                        join(self.states.iter().map(|s| s.to_string()))
                    ),
                });
            }
        }
        reference_criterion(
            &mut out,
            incident,
            "assignment_group",
            "assignment_groups",
            &self.assignment_groups,
        );
        reference_criterion(
            &mut out,
            incident,
            "cmdb_ci",
            "configuration_items",
            &self.configuration_items,
        );
        value_criterion(
            &mut out,
            incident,
            "category",
            "categories",
            &self.categories,
        );
        value_criterion(
            &mut out,
            incident,
            "subcategory",
            "subcategories",
            &self.subcategories,
        );

        let title = incident.short_description().to_lowercase();
        if !self.title_contains_any.is_empty()
            && !self.title_contains_any.iter().any(|t| title.contains(t))
        {
            out.push(Mismatch {
                criterion: "title_contains_any",
                explanation: format!(
                    "the title contains none of {}",
                    join(self.title_contains_any.iter().map(|t| format!("{t:?}")))
                ),
            });
        }
        let missing: Vec<_> = self
            .title_contains_all
            .iter()
            .filter(|t| !title.contains(t.as_str()))
            .collect();
        if !missing.is_empty() {
            out.push(Mismatch {
                criterion: "title_contains_all",
                explanation: format!(
                    "the title lacks {}",
                    join(missing.iter().map(|t| format!("{t:?}")))
                ),
            });
        }
        let present: Vec<_> = self
            .title_contains_none
            .iter()
            .filter(|t| title.contains(t.as_str()))
            .collect();
        if !present.is_empty() {
            out.push(Mismatch {
                criterion: "title_contains_none",
                explanation: format!(
                    "the title contains excluded {}",
                    join(present.iter().map(|t| format!("{t:?}")))
                ),
            });
        }
        if let Some(when) = &self.when {
            match when.evaluate(&vars.with(&[])) {
                Ok(true) => {}
                Ok(false) => out.push(Mismatch {
                    criterion: "when",
                    explanation: format!("`{}` is false", when.source()),
                }),
                Err(e) => out.push(Mismatch {
                    criterion: "when",
                    explanation: format!("`{}` could not be evaluated: {e}", when.source()),
                }),
            }
        }
        out
    }
}

fn reference_criterion(
    out: &mut Vec<Mismatch>,
    incident: &Incident,
    field: &str,
    criterion: &'static str,
    wanted: &[String],
) {
    if wanted.is_empty() {
        return;
    }
    let value = incident.record.value(field).unwrap_or("").to_lowercase();
    let display = incident.record.display(field).unwrap_or("").to_lowercase();
    if !wanted.iter().any(|w| {
        let w = w.to_lowercase();
        w == value || w == display
    }) {
        let shown = if display.is_empty() && value.is_empty() {
            "empty".to_owned()
        } else if display != value && !display.is_empty() {
            format!("{display:?} ({value})")
        } else {
            format!("{value:?}")
        };
        out.push(Mismatch {
            criterion,
            explanation: format!(
                "{field} is {shown}; the plan takes {}",
                join(wanted.iter().map(|w| format!("{w:?}")))
            ),
        });
    }
}

fn value_criterion(
    out: &mut Vec<Mismatch>,
    incident: &Incident,
    field: &str,
    criterion: &'static str,
    wanted: &[String],
) {
    if wanted.is_empty() {
        return;
    }
    let value = incident.record.value(field).unwrap_or("").to_lowercase();
    if !wanted.iter().any(|w| w.to_lowercase() == value) {
        out.push(Mismatch {
            criterion,
            explanation: format!(
                "{field} is {value:?}; the plan takes {}",
                join(wanted.iter().map(|w| format!("{w:?}")))
            ),
        });
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}
