//! One plan within a pass: which actions are open, what is owed, in which order.

use std::collections::HashMap;

use nowpilot_model::plans::{Action, ActionKind, Autonomy, IncidentVars, Plan};
use serde_json::Value as Json;

use super::act::Prepared;
use super::owed::{depends_on_findings, is_owed};
use super::{Pass, PassError};
use crate::history::Proposal;

/// An action that is not done yet.
enum Slot<'p> {
    /// Never proposed: owed or not, by its condition.
    Fresh(&'p Action),
    /// Proposed earlier: look for answers.
    Proposed(&'p Action, Proposal),
}

impl Pass<'_> {
    /// Does what `plan` still owes the incident.
    pub(super) async fn run_plan(&mut self, plan: &Plan) -> Result<(), PassError> {
        let needs_vars = plan.actions.iter().any(|a| a.when.is_some());
        let vars = IncidentVars::when_needed(&self.incident, needs_vars);
        let state = self.incident.state();
        let investigated_before = plan.actions.iter().any(|a| {
            matches!(a.kind, ActionKind::Investigate) && self.history.is_done(&plan.name, &a.id)
        });
        let mut slots = Vec::new();
        for action in &plan.actions {
            if self.history.is_done(&plan.name, &action.id) {
                continue;
            }
            match self.history.proposal_for(&plan.name, &action.id) {
                Some(p) => slots.push(Slot::Proposed(action, p.clone())),
                None => slots.push(Slot::Fresh(action)),
            }
        }

        // Check every parameter that can be wrong before writing anything.
        let mut prepared: HashMap<String, Prepared> = HashMap::new();
        for slot in &slots {
            let Slot::Fresh(action) = slot else { continue };
            let candidate = if depends_on_findings(action) {
                !investigated_before
            } else {
                is_owed(&plan.name, action, &state, &vars, None)?
            };
            if candidate {
                let p = self.prepare(plan, action).await?;
                prepared.insert(action.id.clone(), p);
            }
        }

        let mut findings: Option<Json> = None;
        let mut deferred: Vec<&Action> = Vec::new();
        for slot in slots {
            if self.stopped {
                return Ok(());
            }
            match slot {
                Slot::Proposed(action, proposal) => {
                    let had_findings = findings.is_some();
                    self.answer(plan, action, &proposal, &mut findings).await?;
                    if !had_findings && findings.is_some() {
                        self.decide_deferred(plan, &mut deferred, &vars, &mut prepared, &findings)
                            .await?;
                    }
                }
                Slot::Fresh(action) => {
                    if depends_on_findings(action) && findings.is_none() {
                        if !investigated_before {
                            deferred.push(action);
                        }
                        continue;
                    }
                    if !is_owed(&plan.name, action, &state, &vars, findings.as_ref())? {
                        continue;
                    }
                    let had_findings = findings.is_some();
                    self.act(plan, action, &mut prepared, &mut findings).await?;
                    if !had_findings && findings.is_some() {
                        self.decide_deferred(plan, &mut deferred, &vars, &mut prepared, &findings)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Actions whose condition waited for this pass's findings.
    async fn decide_deferred(
        &mut self,
        plan: &Plan,
        deferred: &mut Vec<&Action>,
        vars: &IncidentVars,
        prepared: &mut HashMap<String, Prepared>,
        findings: &Option<Json>,
    ) -> Result<(), PassError> {
        let state = self.incident.state();
        let mut local = findings.clone();
        for action in std::mem::take(deferred) {
            if self.stopped {
                break;
            }
            if is_owed(&plan.name, action, &state, vars, findings.as_ref())? {
                self.act(plan, action, prepared, &mut local).await?;
            }
        }
        Ok(())
    }

    /// Carries out an owed action, or proposes it for review.
    async fn act(
        &mut self,
        plan: &Plan,
        action: &Action,
        prepared: &mut HashMap<String, Prepared>,
        findings: &mut Option<Json>,
    ) -> Result<(), PassError> {
        let ready = match prepared.remove(&action.id) {
            Some(p) => p,
            None => self.prepare(plan, action).await?,
        };
        match action.autonomy {
            Autonomy::Autonomous => self.perform(plan, action, ready, findings).await,
            Autonomy::Review => self.propose(plan, action, ready).await,
        }
    }
}
