//! What happens on a write: system fields, numbering, journal entries, and the incident,
//! change and user business rules (priority lookup, state side effects, the resolve data
//! policy). One code path serves the HTTP API, the direct handle and the seed data.

use chrono::{DateTime, Utc};
use nowpilot_model::time::format_glide;

use crate::{
    error::SimError,
    schema::{
        self, Kind, SYS_CREATED_BY, SYS_CREATED_ON, SYS_ID, SYS_MOD_COUNT, SYS_UPDATED_BY,
        SYS_UPDATED_ON, TABLES, TableDef, id,
    },
    store::{Row, Store},
};

/// Who writes, and when (seed data writes in the past).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Actor<'a> {
    /// The user name (`sys_created_by`, `sys_updated_by`, journal author).
    pub(crate) user_name: &'a str,
    /// The instant of the write.
    pub(crate) now: DateTime<Utc>,
}

/// Insert a new record, or update an existing one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// Insert.
    Insert,
    /// Update the record with this sys_id.
    Update(&'a str),
}

/// The outcome of a successful write.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    /// The record as stored now.
    pub(crate) row: Row,
    /// Whether it was an insert.
    pub(crate) inserted: bool,
    /// Whether anything was written (an update that changes nothing writes nothing).
    pub(crate) changed: bool,
}

/// A fresh random sys_id: 32 lowercase hex characters.
pub(crate) fn new_sys_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Runs one write through the business logic and commits it, or changes nothing.
pub(crate) fn write(
    store: &mut Store,
    table: usize,
    target: Target<'_>,
    input: &[(String, String)],
    actor: Actor<'_>,
) -> Result<Committed, SimError> {
    let def = *TABLES
        .get(table)
        .ok_or_else(|| SimError::InvalidTable(String::new()))?;
    let now = format_glide(actor.now);
    let caller_id = store
        .user_by_name(actor.user_name)
        .map(|row| row[SYS_ID].clone())
        .unwrap_or_default();
    let old = match target {
        Target::Insert => None,
        Target::Update(sys_id) => {
            Some(
                store
                    .get(table, sys_id)
                    .cloned()
                    .ok_or_else(|| SimError::NotFound {
                        table: def.name.to_owned(),
                        sys_id: sys_id.to_owned(),
                    })?,
            )
        }
    };
    let mut row: Row = match &old {
        Some(old) => old.clone(),
        None => def.fields.iter().map(|f| f.default.to_owned()).collect(),
    };

    let mut written: Vec<&'static str> = Vec::new();
    let mut journal: Vec<(&'static str, String)> = Vec::new();
    let mut requested_sys_id = None;
    for (name, value) in input {
        let Some(pos) = def.position(name) else {
            continue; // Unknown fields in writes are ignored, as ServiceNow does.
        };
        let field = &def.fields[pos];
        match field.kind {
            Kind::Journal => {
                if !value.trim().is_empty() {
                    journal.push((field.name, value.clone()));
                }
            }
            Kind::JournalList => {}
            _ if pos == SYS_ID => requested_sys_id = Some(value),
            // The other system fields are maintained by the platform, not written.
            _ if pos <= SYS_MOD_COUNT => {}
            // "" clears any field except a choice (ServiceNow's REST special data handling).
            Kind::Choice if value.is_empty() => {}
            _ => {
                row[pos] = value.clone();
                written.push(field.name);
            }
        }
    }

    let caller = Caller {
        id: &caller_id,
        now: &now,
    };
    match table {
        id::INCIDENT => incident_rules(store, old.as_ref(), &mut row, &written, caller)?,
        id::CHANGE_REQUEST => change_rules(old.as_ref(), &mut row, caller),
        id::SYS_USER => user_rules(&mut row, &written),
        _ => {}
    }

    let changed = old.as_ref() != Some(&row) || !journal.is_empty();
    let sys_id = match &old {
        Some(old) if !changed => {
            return Ok(Committed {
                row: old.clone(),
                inserted: false,
                changed: false,
            });
        }
        Some(old) => {
            let count: u64 = old[SYS_MOD_COUNT].parse().unwrap_or(0);
            row[SYS_MOD_COUNT] = (count + 1).to_string();
            old[SYS_ID].clone()
        }
        None => {
            let sys_id = requested_sys_id
                .filter(|s| nowpilot_model::is_sys_id(s) && store.get(table, s).is_none())
                .cloned()
                .unwrap_or_else(new_sys_id);
            if let Some(pos) = def.position("number")
                && row[pos].is_empty()
                && let Some(number) = store.next_number(table)
            {
                row[pos] = number;
            }
            row[SYS_ID] = sys_id.clone();
            row[SYS_CREATED_ON] = now.clone();
            row[SYS_CREATED_BY] = actor.user_name.to_owned();
            row[SYS_MOD_COUNT] = "0".to_owned();
            sys_id
        }
    };
    row[SYS_UPDATED_ON] = now.clone();
    row[SYS_UPDATED_BY] = actor.user_name.to_owned();

    let stored = if old.is_some() {
        store.replace(table, row.clone())
    } else {
        store.insert(table, row.clone())
    };
    if !stored {
        // Only reachable if the row lost its shape; refuse rather than write half of it.
        return Err(SimError::NotFound {
            table: def.name.to_owned(),
            sys_id,
        });
    }
    for (element, value) in journal {
        append_journal(store, def, &sys_id, element, &value, actor, &now);
    }
    Ok(Committed {
        row,
        inserted: old.is_none(),
        changed: true,
    })
}

/// Deletes a record. Its journal entries stay, as they do on an instance.
pub(crate) fn delete(store: &mut Store, table: usize, sys_id: &str) -> Result<Row, SimError> {
    store
        .delete(table, sys_id)
        .ok_or_else(|| SimError::NotFound {
            table: TABLES.get(table).map_or("", |t| t.name).to_owned(),
            sys_id: sys_id.to_owned(),
        })
}

fn append_journal(
    store: &mut Store,
    def: &TableDef,
    element_id: &str,
    element: &str,
    value: &str,
    actor: Actor<'_>,
    now: &str,
) {
    let journal_def = &schema::SYS_JOURNAL_FIELD;
    let mut row: Row = journal_def
        .fields
        .iter()
        .map(|f| f.default.to_owned())
        .collect();
    row[SYS_ID] = new_sys_id();
    row[SYS_CREATED_ON] = now.to_owned();
    row[SYS_CREATED_BY] = actor.user_name.to_owned();
    row[SYS_UPDATED_ON] = now.to_owned();
    row[SYS_UPDATED_BY] = actor.user_name.to_owned();
    set(journal_def, &mut row, "name", def.name);
    set(journal_def, &mut row, "element", element);
    set(journal_def, &mut row, "element_id", element_id);
    set(journal_def, &mut row, "value", value);
    store.insert(id::SYS_JOURNAL_FIELD, row);
}

#[derive(Clone, Copy)]
struct Caller<'a> {
    /// The writer's `sys_user` sys_id (`""` when the user has no record).
    id: &'a str,
    /// The write instant, formatted.
    now: &'a str,
}

fn get<'a>(def: &TableDef, row: &'a Row, field: &str) -> &'a str {
    def.position(field).map_or("", |p| row[p].as_str())
}

fn set(def: &TableDef, row: &mut Row, field: &str, value: &str) {
    if let Some(p) = def.position(field) {
        value.clone_into(&mut row[p]);
    }
}

fn incident_rules(
    store: &Store,
    old: Option<&Row>,
    row: &mut Row,
    written: &[&str],
    caller: Caller<'_>,
) -> Result<(), SimError> {
    let def = &schema::INCIDENT;
    if old.is_none() {
        if get(def, row, "opened_at").is_empty() {
            set(def, row, "opened_at", caller.now);
        }
        if get(def, row, "opened_by").is_empty() {
            set(def, row, "opened_by", caller.id);
        }
    }
    // `incident_state` mirrors `state`; a client that writes only the legacy field moves both.
    if written.contains(&"incident_state") && !written.contains(&"state") {
        let legacy = get(def, row, "incident_state").to_owned();
        set(def, row, "state", &legacy);
    }
    let state = get(def, row, "state").to_owned();
    set(def, row, "incident_state", &state);

    // The priority data lookup runs on every write and always replaces the value.
    if let Some(priority) = store.priority_for(get(def, row, "impact"), get(def, row, "urgency")) {
        set(def, row, "priority", &priority);
    }

    let old_state = old.map_or("", |o| get(def, o, "state"));
    if state != old_state {
        if state == "6" || (state == "7" && get(def, row, "resolved_at").is_empty()) {
            set(def, row, "resolved_at", caller.now);
            set(def, row, "resolved_by", caller.id);
        }
        if state == "7" {
            set(def, row, "closed_at", caller.now);
            set(def, row, "closed_by", caller.id);
        }
        if old_state == "3" {
            set(def, row, "hold_reason", "");
        }
        if matches!(old_state, "6" | "7") && matches!(state.as_str(), "1" | "2" | "3") {
            let reopened = get(def, row, "reopen_count").parse::<u64>().unwrap_or(0) + 1;
            set(def, row, "reopen_count", &reopened.to_string());
        }
    }
    let active = if matches!(state.as_str(), "6" | "7" | "8") {
        "false"
    } else {
        "true"
    };
    set(def, row, "active", active);

    if let Some(old) = old {
        let before = get(def, old, "assignment_group");
        if !before.is_empty() && before != get(def, row, "assignment_group") {
            let count = get(def, row, "reassignment_count")
                .parse::<u64>()
                .unwrap_or(0)
                + 1;
            set(def, row, "reassignment_count", &count.to_string());
        }
    }

    // Data policy: a resolved or closed incident needs a resolution code and notes.
    if matches!(state.as_str(), "6" | "7") {
        let mut missing = Vec::new();
        if get(def, row, "close_code").trim().is_empty() {
            missing.push("Resolution code");
        }
        if get(def, row, "close_notes").trim().is_empty() {
            missing.push("Resolution notes");
        }
        if !missing.is_empty() {
            return Err(SimError::DataPolicy { missing });
        }
    }
    Ok(())
}

fn change_rules(old: Option<&Row>, row: &mut Row, caller: Caller<'_>) {
    let def = &schema::CHANGE_REQUEST;
    if old.is_none() {
        if get(def, row, "opened_at").is_empty() {
            set(def, row, "opened_at", caller.now);
        }
        if get(def, row, "opened_by").is_empty() {
            set(def, row, "opened_by", caller.id);
        }
    }
    // 3 Closed and 4 Canceled are the terminal change states.
    let active = if matches!(get(def, row, "state"), "3" | "4") {
        "false"
    } else {
        "true"
    };
    set(def, row, "active", active);
}

fn user_rules(row: &mut Row, written: &[&str]) {
    let def = &schema::SYS_USER;
    // `name` is calculated from the first and last name unless written explicitly.
    if (written.contains(&"first_name") || written.contains(&"last_name"))
        && !written.contains(&"name")
    {
        let name = format!(
            "{} {}",
            get(def, row, "first_name"),
            get(def, row, "last_name")
        );
        set(def, row, "name", name.trim());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed;

    fn store() -> Store {
        let mut store = Store::new();
        seed::reference_data(&mut store);
        seed::users(
            &mut store,
            &[("admin".into(), "System Administrator".into())],
        );
        store
    }

    fn actor() -> Actor<'static> {
        Actor {
            user_name: "admin",
            now: Utc::now(),
        }
    }

    fn input(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn field<'a>(row: &'a Row, name: &str) -> &'a str {
        get(&schema::INCIDENT, row, name)
    }

    #[test]
    fn insert_sets_defaults_number_and_priority() {
        let mut s = store();
        let c = write(
            &mut s,
            id::INCIDENT,
            Target::Insert,
            &input(&[
                ("short_description", "x"),
                ("impact", "1"),
                ("priority", "5"),
            ]),
            actor(),
        )
        .unwrap();
        assert!(c.inserted && c.changed);
        assert_eq!(field(&c.row, "number"), "INC0010001");
        assert_eq!(field(&c.row, "state"), "1");
        assert_eq!(field(&c.row, "incident_state"), "1");
        assert_eq!(field(&c.row, "priority"), "3"); // impact 1 × urgency 3
        assert_eq!(field(&c.row, "active"), "true");
        assert_eq!(field(&c.row, "sys_mod_count"), "0");
        assert!(nowpilot_model::is_sys_id(field(&c.row, "sys_id")));
        assert!(!field(&c.row, "opened_by").is_empty());
        let second = write(&mut s, id::INCIDENT, Target::Insert, &[], actor()).unwrap();
        assert_eq!(field(&second.row, "number"), "INC0010002");
    }

    #[test]
    fn noop_update_changes_nothing() {
        let mut s = store();
        let c = write(&mut s, id::INCIDENT, Target::Insert, &[], actor()).unwrap();
        let sys_id = field(&c.row, "sys_id").to_owned();
        let u = write(
            &mut s,
            id::INCIDENT,
            Target::Update(&sys_id),
            &input(&[("priority", "1"), ("bogus", "x"), ("sys_mod_count", "9")]),
            actor(),
        )
        .unwrap();
        assert!(!u.changed);
        assert_eq!(field(&u.row, "sys_mod_count"), "0");
        assert_eq!(field(&u.row, "priority"), "5");
    }

    #[test]
    fn data_policy_refuses_and_writes_nothing() {
        let mut s = store();
        let c = write(&mut s, id::INCIDENT, Target::Insert, &[], actor()).unwrap();
        let sys_id = field(&c.row, "sys_id").to_owned();
        let err = write(
            &mut s,
            id::INCIDENT,
            Target::Update(&sys_id),
            &input(&[("state", "6"), ("close_notes", "done"), ("work_notes", "x")]),
            actor(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            SimError::DataPolicy {
                missing: vec!["Resolution code"]
            }
        );
        assert_eq!(s.get(id::INCIDENT, &sys_id), Some(&c.row));
        assert!(s.journal_rows(&sys_id).is_empty());
        let ok = write(
            &mut s,
            id::INCIDENT,
            Target::Update(&sys_id),
            &input(&[
                ("state", "6"),
                ("close_code", "Solution provided"),
                ("close_notes", "done"),
            ]),
            actor(),
        )
        .unwrap();
        assert_eq!(field(&ok.row, "active"), "false");
        assert!(!field(&ok.row, "resolved_at").is_empty());
        assert_eq!(field(&ok.row, "sys_mod_count"), "1");
    }

    #[test]
    fn choice_fields_are_not_cleared_by_empty_strings() {
        let mut s = store();
        let c = write(&mut s, id::INCIDENT, Target::Insert, &[], actor()).unwrap();
        let sys_id = field(&c.row, "sys_id").to_owned();
        let u = write(
            &mut s,
            id::INCIDENT,
            Target::Update(&sys_id),
            &input(&[("state", ""), ("short_description", "")]),
            actor(),
        )
        .unwrap();
        assert_eq!(field(&u.row, "state"), "1");
    }

    #[test]
    fn user_name_is_calculated() {
        let mut s = store();
        let c = write(
            &mut s,
            id::SYS_USER,
            Target::Insert,
            &input(&[
                ("user_name", "x.y"),
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
            ]),
            actor(),
        )
        .unwrap();
        assert_eq!(get(&schema::SYS_USER, &c.row, "name"), "Ada Lovelace");
    }
}
