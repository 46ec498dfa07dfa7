//! Static checks over a plan set, for `nowpilot plans check`: overlapping plans, plans that can
//! never match, steps that never run, `continue = true` with nothing after it.
//!
//! The analysis is conservative: a CEL `when` is opaque to it, so two plans that differ only in
//! their `when` are reported as possibly overlapping, never as disjoint.

use std::fmt;

use super::{ActionKind, PlanSet, filter::IntakeFilter};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Probably not what the author meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
        })
    }
}

/// One finding about the plan set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// The plan it is about.
    pub plan: String,
    /// What and why, with advice.
    pub message: String,
}

/// Analyzes the set, in plan order.
pub fn analyze(set: &PlanSet) -> Vec<Finding> {
    let mut out = Vec::new();
    let plans = set.plans();
    for (i, plan) in plans.iter().enumerate() {
        let mut push = |severity, message: String| {
            out.push(Finding {
                severity,
                plan: plan.name.clone(),
                message,
            });
        };
        if !plan.enabled {
            push(
                Severity::Info,
                "is disabled (enabled = false): it never matches".into(),
            );
            continue;
        }
        if let Some(reason) = contradiction(&plan.intake) {
            push(Severity::Warning, format!("can never match: {reason}"));
            continue;
        }
        if let Some(earlier) = plans[..i]
            .iter()
            .find(|e| e.enabled && !e.continue_matching && covers(&e.intake, &plan.intake))
        {
            push(
                Severity::Warning,
                format!(
                    "can never match: every incident it takes is taken first by {:?}, which comes earlier and has no `continue = true`",
                    earlier.name
                ),
            );
            continue;
        }
        for earlier in plans[..i]
            .iter()
            .filter(|e| e.enabled && contradiction(&e.intake).is_none())
        {
            if disjoint(&earlier.intake, &plan.intake) {
                continue;
            }
            if earlier.continue_matching {
                push(
                    Severity::Info,
                    format!(
                        "overlaps {:?}, which has `continue = true`: incidents matching both are handled by both plans",
                        earlier.name
                    ),
                );
            } else {
                push(
                    Severity::Warning,
                    format!(
                        "overlaps {:?}: incidents matching both go to {:?} only (first match wins); narrow one of them, reorder them, or set `continue = true` on {:?}",
                        earlier.name, earlier.name, earlier.name
                    ),
                );
            }
        }
        let investigates = plan
            .actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::Investigate));
        if !investigates && !plan.steps.is_empty() {
            push(
                Severity::Warning,
                "has steps but no `investigate` action, so the steps never run".into(),
            );
        }
        if !investigates
            && plan.actions.iter().any(|a| {
                a.when
                    .as_ref()
                    .is_some_and(|w| w.source().contains("findings"))
            })
        {
            push(
                Severity::Warning,
                "has an action condition that reads `findings` but no `investigate` action: findings will be empty".into(),
            );
        }
        if plan.continue_matching && plans[i + 1..].iter().all(|later| !later.enabled) {
            push(
                Severity::Warning,
                "has `continue = true`, but no enabled plan comes after it: nothing else can match"
                    .into(),
            );
        }
        if plan.intake.is_catch_all() && !plan.builtin {
            push(
                Severity::Info,
                "has no intake criteria: it takes every incident that reaches it".into(),
            );
        }
    }
    out
}

/// A reason the filter can never pass, if any.
fn contradiction(f: &IntakeFilter) -> Option<String> {
    if f.when.as_ref().is_some_and(|w| w.is_constant_false()) {
        return Some("its `when` is `false`".into());
    }
    for none in &f.title_contains_none {
        if let Some(all) = f
            .title_contains_all
            .iter()
            .find(|a| a.contains(none.as_str()))
        {
            return Some(format!(
                "the title must contain {all:?} but must not contain {none:?}"
            ));
        }
    }
    if !f.title_contains_any.is_empty()
        && f.title_contains_any.iter().all(|any| {
            f.title_contains_none
                .iter()
                .any(|n| any.contains(n.as_str()))
        })
    {
        return Some("every `title_contains_any` term is excluded by `title_contains_none`".into());
    }
    None
}

/// The filter with its names case-folded, as matching compares them.
fn folded(f: &IntakeFilter) -> IntakeFilter {
    let fold = |v: &[String]| v.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>();
    IntakeFilter {
        assignment_groups: fold(&f.assignment_groups),
        categories: fold(&f.categories),
        subcategories: fold(&f.subcategories),
        configuration_items: fold(&f.configuration_items),
        ..f.clone()
    }
}

/// Whether every incident `b` takes is also taken by `a` (as far as static analysis can tell).
fn covers(a: &IntakeFilter, b: &IntakeFilter) -> bool {
    fn list<T: PartialEq>(a: &[T], b: &[T]) -> bool {
        a.is_empty() || (!b.is_empty() && b.iter().all(|x| a.contains(x)))
    }
    let (a, b) = (&folded(a), &folded(b));
    a.when.is_none()
        && list(&a.priorities, &b.priorities)
        && list(&a.states, &b.states)
        && list(&a.assignment_groups, &b.assignment_groups)
        && list(&a.categories, &b.categories)
        && list(&a.subcategories, &b.subcategories)
        && list(&a.configuration_items, &b.configuration_items)
        && list(&a.title_contains_any, &b.title_contains_any)
        && a.title_contains_all
            .iter()
            .all(|t| b.title_contains_all.contains(t))
        && a.title_contains_none
            .iter()
            .all(|t| b.title_contains_none.contains(t))
}

/// Whether no incident can pass both filters (as far as static analysis can tell).
fn disjoint(a: &IntakeFilter, b: &IntakeFilter) -> bool {
    fn lists<T: PartialEq>(a: &[T], b: &[T]) -> bool {
        !a.is_empty() && !b.is_empty() && !a.iter().any(|x| b.contains(x))
    }
    let (a, b) = (&folded(a), &folded(b));
    let excluded = |x: &IntakeFilter, y: &IntakeFilter| {
        x.title_contains_none
            .iter()
            .any(|n| y.title_contains_all.iter().any(|t| t.contains(n.as_str())))
    };
    lists(&a.priorities, &b.priorities)
        || lists(&a.states, &b.states)
        || lists(&a.assignment_groups, &b.assignment_groups)
        || lists(&a.categories, &b.categories)
        || lists(&a.subcategories, &b.subcategories)
        || lists(&a.configuration_items, &b.configuration_items)
        || excluded(a, b)
        || excluded(b, a)
}
