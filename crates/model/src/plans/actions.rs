//! What a plan does to an incident.

use serde::Deserialize;

use super::{
    Autonomy,
    expr::{Expr, Scope},
};
use crate::incident::Priority;

/// The action kinds, as spelled in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKindName {
    /// State → In Progress, optionally assign.
    Acknowledge,
    /// Run the plan's steps and post the findings as one work note.
    Investigate,
    /// Post a fixed work note.
    WorkNote,
    /// Change priority through impact and urgency.
    SetPriority,
    /// Resolve with a close code and close notes.
    Resolve,
    /// Put on hold with a reason.
    Hold,
}

impl ActionKindName {
    /// The config spelling (also the default action id and the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKindName::Acknowledge => "acknowledge",
            ActionKindName::Investigate => "investigate",
            ActionKindName::WorkNote => "work_note",
            ActionKindName::SetPriority => "set_priority",
            ActionKindName::Resolve => "resolve",
            ActionKindName::Hold => "hold",
        }
    }
}

/// One `[[plans.actions]]` entry as written in the config. Which keys apply depends on `kind`;
/// a key that does not apply is an error rather than silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// `acknowledge`, `investigate`, `work_note`, `set_priority`, `resolve` or `hold`.
    pub kind: ActionKindName,
    /// A name unique within the plan (default: the kind). Markers and proposals use it.
    #[serde(default)]
    pub id: Option<String>,
    /// Overrides the plan's autonomy for this action.
    #[serde(default)]
    pub autonomy: Option<Autonomy>,
    /// A CEL condition over the incident and the investigation `findings`; the action is owed
    /// only while it is true.
    #[serde(default)]
    pub when: Option<String>,
    /// acknowledge: the group to assign (name or sys_id).
    #[serde(default)]
    pub assignment_group: Option<String>,
    /// acknowledge: the user to assign (user name or sys_id).
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// acknowledge, set_priority, hold: a sentence added to the work note.
    #[serde(default)]
    pub note: Option<String>,
    /// work_note: the text to post.
    #[serde(default)]
    pub text: Option<String>,
    /// set_priority: the target priority (1-5 or a label).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// resolve: the resolution code, checked against the instance's choices.
    #[serde(default)]
    pub close_code: Option<String>,
    /// resolve: the resolution notes.
    #[serde(default)]
    pub close_notes: Option<String>,
    /// hold: the on-hold reason (label like `Awaiting Change`, or its value).
    #[serde(default)]
    pub hold_reason: Option<String>,
}

/// What an action does, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind {
    /// State → In Progress (2); optionally assign.
    Acknowledge {
        /// Group to assign.
        assignment_group: Option<String>,
        /// User to assign.
        assigned_to: Option<String>,
        /// Extra text for the acknowledgement note.
        note: Option<String>,
    },
    /// Run the plan's steps; post the findings as one work note.
    Investigate,
    /// Post this work note.
    WorkNote {
        /// The note.
        text: String,
    },
    /// Write impact and urgency that yield this priority, then read back what ServiceNow
    /// computed.
    SetPriority {
        /// The target.
        priority: Priority,
        /// Extra text for the note.
        note: Option<String>,
    },
    /// State → Resolved (6) with a validated close code.
    Resolve {
        /// The resolution code.
        close_code: String,
        /// The resolution notes.
        close_notes: String,
    },
    /// State → On Hold (3) with a reason.
    Hold {
        /// Label or value of `hold_reason`.
        hold_reason: String,
        /// Extra text for the note.
        note: Option<String>,
    },
}

impl ActionKind {
    /// A plain acknowledge.
    pub fn acknowledge() -> Self {
        ActionKind::Acknowledge {
            assignment_group: None,
            assigned_to: None,
            note: None,
        }
    }

    /// The kind's config name.
    pub fn name(&self) -> ActionKindName {
        match self {
            ActionKind::Acknowledge { .. } => ActionKindName::Acknowledge,
            ActionKind::Investigate => ActionKindName::Investigate,
            ActionKind::WorkNote { .. } => ActionKindName::WorkNote,
            ActionKind::SetPriority { .. } => ActionKindName::SetPriority,
            ActionKind::Resolve { .. } => ActionKindName::Resolve,
            ActionKind::Hold { .. } => ActionKindName::Hold,
        }
    }
}

/// A validated action.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Unique within the plan.
    pub id: String,
    /// What it does.
    pub kind: ActionKind,
    /// Act or propose.
    pub autonomy: Autonomy,
    /// Owed only while this holds.
    pub when: Option<Expr>,
}

impl Action {
    /// An action with no condition whose id is its kind.
    pub fn simple(kind: ActionKind, autonomy: Autonomy) -> Self {
        Action {
            id: kind.name().as_str().to_owned(),
            kind,
            autonomy,
            when: None,
        }
    }

    /// Validates a config entry; errors are `(".key", reason)`.
    pub fn from_config(
        c: &ActionConfig,
        plan_autonomy: Autonomy,
    ) -> Result<Action, (String, String)> {
        use ActionKindName as K;
        let allowed: &[&str] = match c.kind {
            K::Acknowledge => &["assignment_group", "assigned_to", "note"],
            K::Investigate => &[],
            K::WorkNote => &["text"],
            K::SetPriority => &["priority", "note"],
            K::Resolve => &["close_code", "close_notes"],
            K::Hold => &["hold_reason", "note"],
        };
        let present = [
            ("assignment_group", c.assignment_group.is_some()),
            ("assigned_to", c.assigned_to.is_some()),
            ("note", c.note.is_some()),
            ("text", c.text.is_some()),
            ("priority", c.priority.is_some()),
            ("close_code", c.close_code.is_some()),
            ("close_notes", c.close_notes.is_some()),
            ("hold_reason", c.hold_reason.is_some()),
        ];
        for (key, set) in present {
            if set && !allowed.contains(&key) {
                return Err((
                    format!(".{key}"),
                    format!("does not apply to a `{}` action", c.kind.as_str()),
                ));
            }
        }
        let required = |key: &str, v: &Option<String>| -> Result<String, (String, String)> {
            match v.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => Ok(s.to_owned()),
                _ => Err((
                    format!(".{key}"),
                    format!("a `{}` action needs `{key}`", c.kind.as_str()),
                )),
            }
        };
        let kind = match c.kind {
            K::Acknowledge => ActionKind::Acknowledge {
                assignment_group: non_empty(&c.assignment_group),
                assigned_to: non_empty(&c.assigned_to),
                note: non_empty(&c.note),
            },
            K::Investigate => ActionKind::Investigate,
            K::WorkNote => ActionKind::WorkNote {
                text: required("text", &c.text)?,
            },
            K::SetPriority => ActionKind::SetPriority {
                priority: c.priority.ok_or_else(|| {
                    (
                        ".priority".to_owned(),
                        "a `set_priority` action needs `priority` (1-5)".to_owned(),
                    )
                })?,
                note: non_empty(&c.note),
            },
            K::Resolve => ActionKind::Resolve {
                close_code: required("close_code", &c.close_code)?,
                close_notes: required("close_notes", &c.close_notes)?,
            },
            K::Hold => ActionKind::Hold {
                hold_reason: required("hold_reason", &c.hold_reason)?,
                note: non_empty(&c.note),
            },
        };
        let id = match &c.id {
            Some(id) if super::valid_name(id) => id.clone(),
            Some(_) => {
                return Err((
                    ".id".into(),
                    "must be 1-64 letters, digits, '-', '_' or '.'".into(),
                ));
            }
            None => c.kind.as_str().to_owned(),
        };
        let when = match &c.when {
            None => None,
            Some(src) => Some(
                Expr::compile_in(src, Scope::Action)
                    .map_err(|e| (".when".to_owned(), e.to_string()))?,
            ),
        };
        Ok(Action {
            id,
            kind,
            autonomy: c.autonomy.unwrap_or(plan_autonomy),
            when,
        })
    }
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}
