//! The simulated tables: their fields, field kinds, defaults and display fields.
//!
//! Each table has a fixed field list, so a row is a plain `Vec<String>` indexed by field
//! position; the six system fields come first in every table.

/// What kind of value a field holds; decides rendering and write handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Free text (also numbers and booleans that are not choices: all values are strings).
    Text,
    /// A date-time, stored as UTC `yyyy-MM-dd HH:mm:ss`.
    DateTime,
    /// A choice: stored value, label from `sys_choice`.
    Choice,
    /// A reference to a record of the named table, stored as its sys_id.
    Reference(&'static str),
    /// A journal input (`work_notes`, `comments`): writes append, reads are empty.
    Journal,
    /// The merged journal (`comments_and_work_notes`): read-only.
    JournalList,
}

/// One field of a table.
#[derive(Debug)]
pub(crate) struct FieldDef {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// The value a new record gets when the write does not set one.
    pub(crate) default: &'static str,
}

impl FieldDef {
    const fn new(name: &'static str, kind: Kind) -> Self {
        FieldDef {
            name,
            kind,
            default: "",
        }
    }

    const fn with_default(name: &'static str, kind: Kind, default: &'static str) -> Self {
        FieldDef {
            name,
            kind,
            default,
        }
    }
}

/// One table.
#[derive(Debug)]
pub(crate) struct TableDef {
    pub(crate) name: &'static str,
    pub(crate) fields: &'static [FieldDef],
    /// The field shown when another record references this one.
    pub(crate) display_field: &'static str,
    /// `number` prefix and first value, for task tables.
    pub(crate) numbering: Option<(&'static str, u64)>,
}

/// Position of `sys_id` in every row.
pub(crate) const SYS_ID: usize = 0;
/// Position of `sys_created_on`.
pub(crate) const SYS_CREATED_ON: usize = 1;
/// Position of `sys_created_by`.
pub(crate) const SYS_CREATED_BY: usize = 2;
/// Position of `sys_updated_on`.
pub(crate) const SYS_UPDATED_ON: usize = 3;
/// Position of `sys_updated_by`.
pub(crate) const SYS_UPDATED_BY: usize = 4;
/// Position of `sys_mod_count`.
pub(crate) const SYS_MOD_COUNT: usize = 5;

use Kind::{Choice, DateTime, Journal, JournalList, Reference, Text};

/// Builds a field list with the system fields first.
macro_rules! fields {
    ($($field:expr),* $(,)?) => {
        &[
            FieldDef::new("sys_id", Text),
            FieldDef::new("sys_created_on", DateTime),
            FieldDef::new("sys_created_by", Text),
            FieldDef::new("sys_updated_on", DateTime),
            FieldDef::new("sys_updated_by", Text),
            FieldDef::with_default("sys_mod_count", Text, "0"),
            $($field),*
        ]
    };
}

const fn f(name: &'static str, kind: Kind) -> FieldDef {
    FieldDef::new(name, kind)
}

const fn d(name: &'static str, kind: Kind, default: &'static str) -> FieldDef {
    FieldDef::with_default(name, kind, default)
}

pub(crate) static INCIDENT: TableDef = TableDef {
    name: "incident",
    display_field: "number",
    numbering: Some(("INC", 10_001)),
    fields: fields![
        f("number", Text),
        f("short_description", Text),
        f("description", Text),
        d("state", Choice, "1"),
        d("incident_state", Choice, "1"),
        d("impact", Choice, "3"),
        d("urgency", Choice, "3"),
        d("priority", Choice, "5"),
        d("severity", Choice, "3"),
        d("category", Choice, "inquiry"),
        f("subcategory", Choice),
        f("caller_id", Reference("sys_user")),
        f("assignment_group", Reference("sys_user_group")),
        f("assigned_to", Reference("sys_user")),
        f("cmdb_ci", Reference("cmdb_ci")),
        f("business_service", Reference("cmdb_ci")),
        f("opened_at", DateTime),
        f("opened_by", Reference("sys_user")),
        f("work_notes", Journal),
        f("comments", Journal),
        f("comments_and_work_notes", JournalList),
        f("close_code", Choice),
        f("close_notes", Text),
        f("resolved_by", Reference("sys_user")),
        f("resolved_at", DateTime),
        f("closed_at", DateTime),
        f("closed_by", Reference("sys_user")),
        f("problem_id", Reference("problem")),
        f("rfc", Reference("change_request")),
        f("caused_by", Reference("change_request")),
        f("parent_incident", Reference("incident")),
        d("child_incidents", Text, "0"),
        d("reassignment_count", Text, "0"),
        d("reopen_count", Text, "0"),
        f("correlation_id", Text),
        f("correlation_display", Text),
        f("contact_type", Choice),
        d("active", Text, "true"),
        f("hold_reason", Choice),
    ],
};

pub(crate) static CHANGE_REQUEST: TableDef = TableDef {
    name: "change_request",
    display_field: "number",
    numbering: Some(("CHG", 30_001)),
    fields: fields![
        f("number", Text),
        f("short_description", Text),
        f("description", Text),
        d("state", Choice, "-5"),
        d("type", Choice, "normal"),
        f("category", Choice),
        d("risk", Choice, "3"),
        d("impact", Choice, "3"),
        d("priority", Choice, "4"),
        f("cmdb_ci", Reference("cmdb_ci")),
        f("assignment_group", Reference("sys_user_group")),
        f("assigned_to", Reference("sys_user")),
        f("requested_by", Reference("sys_user")),
        f("start_date", DateTime),
        f("end_date", DateTime),
        f("work_start", DateTime),
        f("work_end", DateTime),
        f("opened_at", DateTime),
        f("opened_by", Reference("sys_user")),
        f("work_notes", Journal),
        f("comments", Journal),
        f("comments_and_work_notes", JournalList),
        f("close_code", Choice),
        f("close_notes", Text),
        d("active", Text, "true"),
    ],
};

pub(crate) static CMDB_CI: TableDef = TableDef {
    name: "cmdb_ci",
    display_field: "name",
    numbering: None,
    fields: fields![
        f("name", Text),
        d("sys_class_name", Text, "cmdb_ci"),
        f("short_description", Text),
        d("operational_status", Choice, "1"),
        d("install_status", Choice, "1"),
        f("environment", Choice),
        f("ip_address", Text),
        f("fqdn", Text),
        f("support_group", Reference("sys_user_group")),
        f("managed_by", Reference("sys_user")),
    ],
};

pub(crate) static TASK_CI: TableDef = TableDef {
    name: "task_ci",
    display_field: "task",
    numbering: None,
    fields: fields![
        f("task", Reference("task")),
        f("ci_item", Reference("cmdb_ci"))
    ],
};

pub(crate) static SYS_CHOICE: TableDef = TableDef {
    name: "sys_choice",
    display_field: "label",
    numbering: None,
    fields: fields![
        f("name", Text),
        f("element", Text),
        f("value", Text),
        f("label", Text),
        d("sequence", Text, "0"),
        d("inactive", Text, "false"),
        d("language", Text, "en"),
        f("dependent_value", Text),
    ],
};

pub(crate) static SYS_USER: TableDef = TableDef {
    name: "sys_user",
    display_field: "name",
    numbering: None,
    fields: fields![
        f("user_name", Text),
        f("first_name", Text),
        f("last_name", Text),
        f("name", Text),
        f("email", Text),
        f("title", Text),
        d("active", Text, "true"),
        d("locked_out", Text, "false"),
        d("web_service_access_only", Text, "false"),
    ],
};

pub(crate) static SYS_USER_GROUP: TableDef = TableDef {
    name: "sys_user_group",
    display_field: "name",
    numbering: None,
    fields: fields![
        f("name", Text),
        f("description", Text),
        f("manager", Reference("sys_user")),
        f("email", Text),
        d("active", Text, "true"),
    ],
};

pub(crate) static SYS_USER_GRMEMBER: TableDef = TableDef {
    name: "sys_user_grmember",
    display_field: "user",
    numbering: None,
    fields: fields![
        f("user", Reference("sys_user")),
        f("group", Reference("sys_user_group")),
    ],
};

pub(crate) static DL_U_PRIORITY: TableDef = TableDef {
    name: "dl_u_priority",
    display_field: "priority",
    numbering: None,
    fields: fields![
        f("impact", Choice),
        f("urgency", Choice),
        f("priority", Choice),
        d("active", Text, "true"),
        d("order", Text, "100"),
    ],
};

pub(crate) static SYS_JOURNAL_FIELD: TableDef = TableDef {
    name: "sys_journal_field",
    display_field: "value",
    numbering: None,
    fields: fields![
        f("name", Text),
        f("element", Text),
        f("element_id", Text),
        f("value", Text),
    ],
};

/// Every table, in a fixed order: a table's index here is its id in the store.
pub(crate) static TABLES: [&TableDef; 10] = [
    &INCIDENT,
    &CHANGE_REQUEST,
    &CMDB_CI,
    &TASK_CI,
    &SYS_CHOICE,
    &SYS_USER,
    &SYS_USER_GROUP,
    &SYS_USER_GRMEMBER,
    &DL_U_PRIORITY,
    &SYS_JOURNAL_FIELD,
];

/// The table ids the rest of the crate refers to by name.
pub(crate) mod id {
    pub(crate) const INCIDENT: usize = 0;
    pub(crate) const CHANGE_REQUEST: usize = 1;
    pub(crate) const SYS_CHOICE: usize = 4;
    pub(crate) const SYS_USER: usize = 5;
    pub(crate) const DL_U_PRIORITY: usize = 8;
    pub(crate) const SYS_JOURNAL_FIELD: usize = 9;
}

/// The tables a `task` reference can point into.
pub(crate) const TASK_TABLES: [usize; 2] = [id::INCIDENT, id::CHANGE_REQUEST];

/// The id of a table by name.
pub(crate) fn table_id(name: &str) -> Option<usize> {
    TABLES.iter().position(|t| t.name == name)
}

impl TableDef {
    /// The position of a field in this table's rows.
    pub(crate) fn position(&self, field: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == field)
    }

    /// A field's definition.
    pub(crate) fn field(&self, field: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(|f| f.name == field)
    }

    /// Whether `path` (possibly dot-walked through references) names a field reachable from
    /// this table.
    pub(crate) fn knows_path(&self, path: &str) -> bool {
        let mut tables: Vec<&TableDef> = vec![self];
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            let kinds: Vec<Kind> = tables
                .iter()
                .filter_map(|t| t.field(segment))
                .map(|f| f.kind)
                .collect();
            let Some(&kind) = kinds.first() else {
                return false;
            };
            if segments.peek().is_none() {
                return true;
            }
            tables = match kind {
                Reference("task") => TASK_TABLES.iter().map(|&i| TABLES[i]).collect(),
                Reference(target) => match table_id(target) {
                    Some(i) => vec![TABLES[i]],
                    None => return false,
                },
                _ => return false,
            };
        }
        false
    }
}

/// The label a journal element has in the display blob.
pub(crate) fn journal_label(element: &str) -> &'static str {
    match element {
        "work_notes" => "Work notes",
        "comments" => "Additional comments",
        _ => "Journal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_fields_come_first_everywhere() {
        for table in TABLES {
            let names: Vec<&str> = table.fields.iter().take(6).map(|f| f.name).collect();
            assert_eq!(
                names,
                [
                    "sys_id",
                    "sys_created_on",
                    "sys_created_by",
                    "sys_updated_on",
                    "sys_updated_by",
                    "sys_mod_count"
                ],
                "{}",
                table.name
            );
            assert!(table.field(table.display_field).is_some(), "{}", table.name);
            let mut seen = std::collections::HashSet::new();
            for f in table.fields {
                assert!(seen.insert(f.name), "{}.{} twice", table.name, f.name);
            }
        }
        assert_eq!(table_id("incident"), Some(id::INCIDENT));
        assert_eq!(table_id("change_request"), Some(id::CHANGE_REQUEST));
        assert_eq!(table_id("sys_choice"), Some(id::SYS_CHOICE));
        assert_eq!(table_id("sys_user"), Some(id::SYS_USER));
        assert_eq!(table_id("dl_u_priority"), Some(id::DL_U_PRIORITY));
        assert_eq!(table_id("sys_journal_field"), Some(id::SYS_JOURNAL_FIELD));
    }

    #[test]
    fn dot_walking() {
        assert!(INCIDENT.knows_path("cmdb_ci"));
        assert!(INCIDENT.knows_path("cmdb_ci.name"));
        assert!(INCIDENT.knows_path("assignment_group.manager.name"));
        assert!(!INCIDENT.knows_path("cmdb_ci.bogus"));
        assert!(!INCIDENT.knows_path("number.name"));
        assert!(!INCIDENT.knows_path("problem_id.number"));
        assert!(TASK_CI.knows_path("task.number"));
        assert!(!INCIDENT.knows_path(""));
    }
}
