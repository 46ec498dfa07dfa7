//! The scenario, step by step, and the verdict read from the instance's records.
//!
//! Every step is a person's change made through the Table API, so it reaches nowpilot through
//! the business rule, the signed callback, the ingress, the queue and the worker, the
//! production path. Each step then waits for its effect (woken by the worker's activity,
//! re-checking the records at least twice a second) for at most the step timeout. The verdict
//! at the end reads the records again: states, journal notes and their markers, close codes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nowpilot_queue::ActivityRecord;
use tokio::sync::broadcast;

use super::instance::{Fields, Instance, Note, text};
use super::services::ServicesHandle;
use super::{APPROVER, CALLER, CHECKOUT_PLAN, INTEGRATION, PAYMENTS_PLAN, RESOLVE_CLOSE_CODE};
use crate::output::Style;

/// What the scenario created.
#[derive(Debug, Default, Clone)]
pub struct Played {
    /// The priority-2 checkout incident.
    pub checkout: Option<Created>,
    /// The priority-4 incident nobody handles.
    pub routine: Option<Created>,
    /// The priority-1 payments incident.
    pub payments: Option<Created>,
    /// The proposal id the approver approved.
    pub proposal: Option<String>,
}

/// An incident the scenario created.
#[derive(Debug, Clone)]
pub struct Created {
    /// Its sys_id.
    pub sys_id: String,
    /// Its number.
    pub number: String,
}

/// One verified fact.
#[derive(Debug, Clone)]
pub struct Check {
    /// What should be true.
    pub what: String,
    /// Whether it is.
    pub ok: bool,
}

/// The scenario's context.
pub struct Scenario {
    pub(super) instance: Instance,
    pub(super) services: ServicesHandle,
    pub(super) passes: broadcast::Receiver<Arc<ActivityRecord>>,
    pub(super) seen: HashMap<String, Vec<Arc<ActivityRecord>>>,
    pub(super) step_timeout: Duration,
    pub(super) style: Style,
    pub(super) checkout_ci: String,
    pub(super) payments_ci: String,
}

/// Whether `note` ends with nowpilot's marker for `plan`/`action`.
fn marked(note: &Note, plan: &str, action: &str) -> bool {
    note.value.lines().any(|line| {
        let line = line.trim();
        line.starts_with("[nowpilot") && line.contains(&format!("plan={plan} action={action}"))
    })
}

fn ours(notes: &[Note]) -> impl Iterator<Item = &Note> {
    notes.iter().filter(|n| n.created_by == INTEGRATION)
}

/// The proposal id in a proposal note (`/nowpilot approve <id>`).
fn proposal_id(notes: &[Note], plan: &str) -> Option<String> {
    ours(notes)
        .filter(|n| n.value.contains(&format!("plan={plan} action=resolve")))
        .find_map(|n| {
            let at = n.value.find("/nowpilot approve ")?;
            let id: String = n
                .value
                .get(at + "/nowpilot approve ".len()..)?
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .collect();
            (!id.is_empty()).then_some(id)
        })
}

impl Scenario {
    fn say(&self, text: &str) {
        println!("\n{}", self.style.bold(text));
    }

    async fn done(&self, text: &str) {
        // Let the timeline print the pass that did it first.
        tokio::task::yield_now().await;
        println!("  {} {text}", self.style.green("✓"));
    }

    /// Waits until `check` yields a value: woken by the worker's activity, and re-checking at
    /// least twice a second, for at most the step timeout.
    async fn wait_for<T, F, Fut>(&mut self, what: &str, mut check: F) -> Result<T, String>
    where
        F: FnMut(&HashMap<String, Vec<Arc<ActivityRecord>>>) -> Fut,
        Fut: Future<Output = Result<Option<T>, String>>,
    {
        let deadline = tokio::time::Instant::now() + self.step_timeout;
        let mut last_error = None;
        loop {
            match check(&self.seen).await {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(e) => last_error = Some(e),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(format!(
                    "timed out after {} waiting for {what}{}",
                    humantime::format_duration(self.step_timeout),
                    last_error
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                ));
            }
            let pause = (deadline - now).min(Duration::from_millis(500));
            tokio::select! {
                pass = self.passes.recv() => {
                    if let Ok(pass) = pass {
                        self.seen.entry(pass.sys_id.clone()).or_default().push(pass);
                    }
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn create(&self, user: &str, fields: &[(&str, &str)]) -> Result<Created, String> {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == name)
                .map_or("", |(_, v)| *v)
        };
        println!(
            "  {user} opens \u{201c}{}\u{201d} (impact {}, urgency {}).",
            field("short_description"),
            field("impact"),
            field("urgency")
        );
        let record = self.instance.create_incident(user, fields).await?;
        Ok(Created {
            sys_id: text(&record, "sys_id").to_owned(),
            number: text(&record, "number").to_owned(),
        })
    }

    /// Plays every step; stops at the first that does not happen.
    pub async fn play(&mut self, played: &mut Played) -> Result<(), String> {
        self.say("1/4  A priority-2 incident on checkout-api, right after a deploy");
        let checkout_ci = self.checkout_ci.clone();
        let created = self
            .create(
                APPROVER,
                &[
                    (
                        "short_description",
                        "Checkout API slow: p95 latency above 2s after the deploy",
                    ),
                    (
                        "description",
                        "p95 latency alert firing since the last deploy.",
                    ),
                    ("impact", "1"),
                    ("urgency", "2"),
                    ("category", "software"),
                    ("cmdb_ci", &checkout_ci),
                ],
            )
            .await?;
        played.checkout = Some(created.clone());
        let instance = self.instance.clone();
        let sys_id = created.sys_id.clone();
        self.wait_for("the acknowledgement and the findings", |_| {
            let (instance, sys_id) = (instance.clone(), sys_id.clone());
            async move {
                let incident = instance.incident(&sys_id).await?;
                let notes = instance.journal(&sys_id).await?;
                let investigated = ours(&notes).any(|n| marked(n, CHECKOUT_PLAN, "investigate"));
                Ok((text(&incident, "state") == "2" && investigated).then_some(()))
            }
        })
        .await?;
        self.done("acknowledged (In Progress) and investigated: the findings name the recent change and the probe result").await;

        self.say("2/4  A priority-4 incident: no plan takes it");
        let routine = self
            .create(
                CALLER,
                &[
                    ("short_description", "Printer on floor 3 is out of toner"),
                    ("impact", "3"),
                    ("urgency", "2"),
                    ("category", "hardware"),
                ],
            )
            .await?;
        played.routine = Some(routine.clone());
        let sys_id = routine.sys_id.clone();
        self.wait_for("the worker to look at it", |seen| {
            let looked = seen.contains_key(&sys_id);
            async move { Ok(looked.then_some(())) }
        })
        .await?;
        self.done("left alone: no plan matched, nothing written")
            .await;

        self.say("3/4  A priority-1 payments outage: runbook, verification, a proposal to resolve");
        let payments_ci = self.payments_ci.clone();
        let payments = self
            .create(
                APPROVER,
                &[
                    (
                        "short_description",
                        "Payments API returns 503 for every request",
                    ),
                    ("impact", "1"),
                    ("urgency", "1"),
                    ("category", "software"),
                    ("cmdb_ci", &payments_ci),
                ],
            )
            .await?;
        played.payments = Some(payments.clone());
        let sys_id = payments.sys_id.clone();
        let instance = self.instance.clone();
        let proposal = self
            .wait_for(
                "the runbook, its verification and the resolve proposal",
                |_| {
                    let (instance, sys_id) = (instance.clone(), sys_id.clone());
                    async move {
                        let notes = instance.journal(&sys_id).await?;
                        Ok(proposal_id(&notes, PAYMENTS_PLAN))
                    }
                },
            )
            .await?;
        self.done(&format!(
            "runbook called (signed), payments verified healthy, resolve proposed as {proposal}"
        ))
        .await;

        self.say(&format!(
            "4/4  {APPROVER} approves in the work notes: /nowpilot approve {proposal}"
        ));
        self.instance
            .update_incident(
                APPROVER,
                &payments.sys_id,
                &[("work_notes", &format!("/nowpilot approve {proposal}"))],
            )
            .await?;
        played.proposal = Some(proposal);
        let sys_id = payments.sys_id.clone();
        self.wait_for("the approved resolution", |_| {
            let (instance, sys_id) = (instance.clone(), sys_id.clone());
            async move {
                let incident = instance.incident(&sys_id).await?;
                Ok((text(&incident, "state") == "6").then_some(()))
            }
        })
        .await?;
        self.done(&format!(
            "carried out: {} resolved with close code \u{201c}{RESOLVE_CLOSE_CODE}\u{201d}",
            payments.number
        ))
        .await;
        Ok(())
    }

    /// Reads the records and checks every step's effect.
    pub async fn verify(&self, played: &Played) -> Vec<Check> {
        let mut checks = Vec::new();
        let mut check = |what: String, ok: bool| checks.push(Check { what, ok });
        let read = |created: &Option<Created>| {
            let instance = self.instance.clone();
            let sys_id = created.as_ref().map(|c| c.sys_id.clone());
            async move {
                let sys_id = sys_id?;
                let incident = instance.incident(&sys_id).await.ok()?;
                let notes = instance.journal(&sys_id).await.ok()?;
                Some((incident, notes))
            }
        };
        let empty = (Fields::new(), Vec::new());

        let (incident, notes) = read(&played.checkout)
            .await
            .unwrap_or_else(|| empty.clone());
        let count = |plan: &str, action: &str, notes: &[Note]| {
            ours(notes).filter(|n| marked(n, plan, action)).count()
        };
        check(
            "P2 checkout incident: priority 2, In Progress".into(),
            text(&incident, "priority") == "2" && text(&incident, "state") == "2",
        );
        check(
            "P2 checkout incident: one acknowledgement note".into(),
            count(CHECKOUT_PLAN, "acknowledge", &notes) == 1,
        );
        let findings: Vec<&Note> = ours(&notes)
            .filter(|n| marked(n, CHECKOUT_PLAN, "investigate"))
            .collect();
        check(
            "P2 checkout incident: one findings note naming the change and the probe result".into(),
            findings.len() == 1
                && findings[0].value.contains("CHG")
                && findings[0].value.contains("Probe checkout_health: OK"),
        );

        let (incident, notes) = read(&played.routine).await.unwrap_or_else(|| empty.clone());
        check(
            "P4 incident: priority 4, still New, no note from nowpilot".into(),
            text(&incident, "priority") == "4"
                && text(&incident, "state") == "1"
                && ours(&notes).next().is_none(),
        );

        let (incident, notes) = read(&played.payments)
            .await
            .unwrap_or_else(|| empty.clone());
        check(
            "P1 payments incident: one acknowledgement note".into(),
            count(PAYMENTS_PLAN, "acknowledge", &notes) == 1,
        );
        let findings: Vec<&Note> = ours(&notes)
            .filter(|n| marked(n, PAYMENTS_PLAN, "investigate"))
            .collect();
        check(
            "P1 payments incident: findings show the runbook ran and the probe verified it".into(),
            findings.len() == 1
                && findings[0]
                    .value
                    .contains("Runbook restart_payments: ran, HTTP 200, verified"),
        );
        let number = played
            .payments
            .as_ref()
            .map(|c| c.number.clone())
            .unwrap_or_default();
        let calls = self.services.runbook_calls();
        check(
            "P1 payments incident: the runbook endpoint accepted one signed call for it".into(),
            !number.is_empty()
                && calls.iter().filter(|c| c.incident == number).count() == 1
                && calls.iter().all(|c| c.signed),
        );
        let proposal = played.proposal.clone().unwrap_or_default();
        check(
            "P1 payments incident: nowpilot proposed resolving it".into(),
            !proposal.is_empty()
                && proposal_id(&notes, PAYMENTS_PLAN).as_deref() == Some(&proposal),
        );
        let approval = format!("/nowpilot approve {proposal}");
        check(
            format!("P1 payments incident: {APPROVER} approved it in the work notes"),
            notes.iter().any(|n| {
                n.created_by == APPROVER && n.element == "work_notes" && n.value.contains(&approval)
            }),
        );
        check(
            format!(
                "P1 payments incident: Resolved with close code \u{201c}{RESOLVE_CLOSE_CODE}\u{201d} and close notes"
            ),
            text(&incident, "state") == "6"
                && text(&incident, "close_code") == RESOLVE_CLOSE_CODE
                && !text(&incident, "close_notes").is_empty(),
        );
        check(
            "P1 payments incident: the approval is recorded in a note".into(),
            ours(&notes).any(|n| {
                n.value.contains(&format!("proposal={proposal}"))
                    && n.value.contains("outcome=approved")
            }),
        );
        checks
    }
}
