//! What a new instance holds: the reference data every instance has (choices, the priority
//! lookup, the configured users) and, with `--seed-demo`, a small realistic estate
//! ([`demo`]).

mod demo;

use chrono::{DateTime, Duration, Utc};
use nowpilot_model::{Impact, PriorityMatrix, Urgency};

pub(crate) use demo::{DEMO_USERS, demo};

use crate::{
    logic::{self, Actor, Target},
    schema::{SYS_ID, id, table_id},
    store::Store,
};

type ChoiceList = &'static [(&'static str, &'static str)];

/// `(table, element, choices)` of the out-of-the-box choice lists.
const CHOICES: &[(&str, &str, ChoiceList)] = &[
    ("incident", "state", INCIDENT_STATES),
    ("incident", "incident_state", INCIDENT_STATES),
    ("incident", "impact", THREE_LEVELS),
    ("incident", "urgency", THREE_LEVELS),
    ("incident", "severity", THREE_LEVELS),
    (
        "incident",
        "priority",
        &[
            ("1", "1 - Critical"),
            ("2", "2 - High"),
            ("3", "3 - Moderate"),
            ("4", "4 - Low"),
            ("5", "5 - Planning"),
        ],
    ),
    (
        "incident",
        "close_code",
        &[
            ("Duplicate", "Duplicate"),
            ("Known error", "Known error"),
            ("No resolution provided", "No resolution provided"),
            ("Resolved by caller", "Resolved by caller"),
            ("Resolved by change", "Resolved by change"),
            ("Resolved by problem", "Resolved by problem"),
            ("Resolved by request", "Resolved by request"),
            ("Solution provided", "Solution provided"),
            ("Workaround provided", "Workaround provided"),
        ],
    ),
    (
        "incident",
        "hold_reason",
        &[
            ("1", "Awaiting Caller"),
            ("3", "Awaiting Problem"),
            ("4", "Awaiting Vendor"),
            ("5", "Awaiting Change"),
        ],
    ),
    (
        "incident",
        "category",
        &[
            ("inquiry", "Inquiry / Help"),
            ("software", "Software"),
            ("hardware", "Hardware"),
            ("network", "Network"),
            ("database", "Database"),
        ],
    ),
    (
        "incident",
        "contact_type",
        &[
            ("email", "Email"),
            ("phone", "Phone"),
            ("self-service", "Self-service"),
            ("walk-in", "Walk-in"),
        ],
    ),
    (
        "change_request",
        "state",
        &[
            ("-5", "New"),
            ("-4", "Assess"),
            ("-3", "Authorize"),
            ("-2", "Scheduled"),
            ("-1", "Implement"),
            ("0", "Review"),
            ("3", "Closed"),
            ("4", "Canceled"),
        ],
    ),
    (
        "change_request",
        "type",
        &[
            ("standard", "Standard"),
            ("normal", "Normal"),
            ("emergency", "Emergency"),
        ],
    ),
    (
        "change_request",
        "risk",
        &[("2", "High"), ("3", "Moderate"), ("4", "Low")],
    ),
    ("change_request", "impact", THREE_LEVELS),
    (
        "change_request",
        "priority",
        &[
            ("1", "1 - Critical"),
            ("2", "2 - High"),
            ("3", "3 - Moderate"),
            ("4", "4 - Low"),
        ],
    ),
    (
        "change_request",
        "close_code",
        &[
            ("successful", "Successful"),
            ("successful_issues", "Successful with issues"),
            ("unsuccessful", "Unsuccessful"),
        ],
    ),
    (
        "cmdb_ci",
        "operational_status",
        &[
            ("1", "Operational"),
            ("2", "Non-Operational"),
            ("3", "Repair in Progress"),
            ("6", "Retired"),
        ],
    ),
    (
        "cmdb_ci",
        "install_status",
        &[
            ("1", "Installed"),
            ("3", "In Maintenance"),
            ("7", "Retired"),
        ],
    ),
];

const INCIDENT_STATES: &[(&str, &str)] = &[
    ("1", "New"),
    ("2", "In Progress"),
    ("3", "On Hold"),
    ("6", "Resolved"),
    ("7", "Closed"),
    ("8", "Canceled"),
];

const THREE_LEVELS: &[(&str, &str)] = &[("1", "1 - High"), ("2", "2 - Medium"), ("3", "3 - Low")];

/// The rows every instance has: choice lists and the priority lookup.
pub(crate) fn reference_data(store: &mut Store) {
    let mut seeder = Seeder {
        store,
        now: Utc::now(),
    };
    for (table, element, values) in CHOICES {
        for (i, (value, label)) in values.iter().enumerate() {
            let sequence = (i + 1).to_string();
            seeder.add(
                id::SYS_CHOICE,
                "admin",
                0,
                &[
                    ("name", table),
                    ("element", element),
                    ("value", value),
                    ("label", label),
                    ("sequence", &sequence),
                ],
            );
        }
    }
    let matrix = PriorityMatrix::default();
    for &impact in Impact::ALL {
        for &urgency in Urgency::ALL {
            seeder.add(
                id::DL_U_PRIORITY,
                "admin",
                0,
                &[
                    ("impact", impact.as_value()),
                    ("urgency", urgency.as_value()),
                    ("priority", matrix.priority(impact, urgency).as_value()),
                ],
            );
        }
    }
}

/// Adds a `sys_user` row for each configured `(user_name, display name)` not already present.
pub(crate) fn users(store: &mut Store, users: &[(String, String)]) {
    let mut seeder = Seeder {
        store,
        now: Utc::now(),
    };
    for (user_name, name) in users {
        if seeder.store.user_by_name(user_name).is_none() {
            seeder.add(
                id::SYS_USER,
                "admin",
                0,
                &[("user_name", user_name), ("name", name)],
            );
        }
    }
}

fn id_of(table: &str) -> usize {
    // The names are the schema's own; an unknown one would only make the seeder skip rows.
    table_id(table).unwrap_or(usize::MAX)
}

struct Seeder<'a> {
    store: &'a mut Store,
    now: DateTime<Utc>,
}

impl Seeder<'_> {
    /// Inserts a row `minutes_ago` minutes in the past; returns its sys_id (`""` if refused).
    fn add(
        &mut self,
        table: usize,
        who: &str,
        minutes_ago: i64,
        fields: &[(&str, &str)],
    ) -> String {
        let input: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let actor = Actor {
            user_name: who,
            now: self.now - Duration::minutes(minutes_ago),
        };
        logic::write(self.store, table, Target::Insert, &input, actor)
            .map(|c| c.row[SYS_ID].clone())
            .unwrap_or_default()
    }

    fn update(
        &mut self,
        table: usize,
        sys_id: &str,
        who: &str,
        minutes_ago: i64,
        fields: &[(&str, &str)],
    ) {
        let input: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let actor = Actor {
            user_name: who,
            now: self.now - Duration::minutes(minutes_ago),
        };
        // Seed writes carry every mandatory field, so the data policy never refuses them.
        let _ = logic::write(self.store, table, Target::Update(sys_id), &input, actor);
    }
}
