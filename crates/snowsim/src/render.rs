//! Stored rows as the Table API shows them: the three `sysparm_display_value` modes, reference
//! `{link, value}` objects, choice labels, journal blobs, `sysparm_fields` with dot-walking.

use nowpilot_model::{FieldValue, Record};
use serde_json::{Map, Value};

use crate::{
    schema::{self, Kind, SYS_CREATED_BY, SYS_CREATED_ON, SYS_ID, TABLES, TableDef},
    store::{Row, Store},
};

/// `sysparm_display_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DisplayMode {
    /// `false` (default): stored values.
    Value,
    /// `true`: display values.
    Display,
    /// `all`: `{display_value, value}` objects.
    All,
}

impl DisplayMode {
    /// Parses the parameter; anything unrecognised means the default.
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        match raw {
            Some(v) if v.eq_ignore_ascii_case("true") => DisplayMode::Display,
            Some(v) if v.eq_ignore_ascii_case("all") => DisplayMode::All,
            _ => DisplayMode::Value,
        }
    }
}

/// How to render records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RenderOptions<'a> {
    pub(crate) mode: DisplayMode,
    /// `sysparm_exclude_reference_link=true`.
    pub(crate) exclude_links: bool,
    /// `sysparm_fields`, when given.
    pub(crate) fields: Option<&'a [String]>,
    /// Where reference links point, e.g. `http://host/api/now/v2/table`.
    pub(crate) link_base: &'a str,
}

/// A row as a Table API JSON object.
pub(crate) fn record(
    store: &Store,
    def: &'static TableDef,
    row: &Row,
    opts: &RenderOptions<'_>,
) -> Value {
    let mut map = Map::new();
    match opts.fields {
        None => {
            for (pos, field) in def.fields.iter().enumerate() {
                map.insert(
                    field.name.to_owned(),
                    leaf(store, def, Some(row), pos, opts),
                );
            }
        }
        Some(fields) => {
            for name in fields {
                // Unknown fields in `sysparm_fields` are ignored.
                if let Some(walked) = store.walk(def, row, name) {
                    let value = leaf(store, walked.def, walked.row, walked.pos, opts);
                    map.insert(name.clone(), value);
                }
            }
        }
    }
    Value::Object(map)
}

fn leaf(
    store: &Store,
    def: &'static TableDef,
    row: Option<&Row>,
    pos: usize,
    opts: &RenderOptions<'_>,
) -> Value {
    let Some(field) = def.fields.get(pos) else {
        return Value::String(String::new());
    };
    let value = row.and_then(|r| r.get(pos)).map_or("", String::as_str);
    match field.kind {
        Kind::Journal | Kind::JournalList => {
            let blob = match (opts.mode, row) {
                (DisplayMode::Value, _) | (_, None) => String::new(),
                (_, Some(r)) => journal_blob(store, def, &r[SYS_ID], field.name),
            };
            match opts.mode {
                DisplayMode::Value => Value::String(String::new()),
                DisplayMode::Display => Value::String(blob),
                DisplayMode::All => pair(&blob, ""),
            }
        }
        Kind::Reference(target) => {
            if value.is_empty() {
                return match opts.mode {
                    DisplayMode::All => pair("", ""),
                    _ => Value::String(String::new()),
                };
            }
            let link = format!(
                "{}/{}/{}",
                opts.link_base,
                link_table(store, target, value),
                value
            );
            let display = store.reference_display(target, value);
            let mut object = Map::new();
            match (opts.mode, opts.exclude_links) {
                (DisplayMode::Value, true) => return Value::String(value.to_owned()),
                (DisplayMode::Display, true) => return Value::String(display.to_owned()),
                (DisplayMode::Value, false) => {
                    object.insert("link".into(), link.into());
                    object.insert("value".into(), value.into());
                }
                (DisplayMode::Display, false) => {
                    object.insert("display_value".into(), display.into());
                    object.insert("link".into(), link.into());
                }
                (DisplayMode::All, exclude) => {
                    object.insert("display_value".into(), display.into());
                    if !exclude {
                        object.insert("link".into(), link.into());
                    }
                    object.insert("value".into(), value.into());
                }
            }
            Value::Object(object)
        }
        Kind::Choice => {
            let label = store
                .choice_label(def.name, field.name, value)
                .unwrap_or(value);
            match opts.mode {
                DisplayMode::Value => Value::String(value.to_owned()),
                DisplayMode::Display => Value::String(label.to_owned()),
                DisplayMode::All => pair(label, value),
            }
        }
        Kind::Text | Kind::DateTime => match opts.mode {
            DisplayMode::All => pair(value, value),
            _ => Value::String(value.to_owned()),
        },
    }
}

fn pair(display: &str, value: &str) -> Value {
    let mut object = Map::new();
    object.insert("display_value".into(), display.into());
    object.insert("value".into(), value.into());
    Value::Object(object)
}

/// The table a reference link points into (`task` references link to the concrete table).
fn link_table<'a>(store: &Store, target: &'a str, sys_id: &str) -> &'a str {
    if target == "task"
        && let Some((t, _)) = store.resolve_reference(target, sys_id)
    {
        return TABLES[t].name;
    }
    target
}

/// The journal as a display value: newest first, one header line per entry.
pub(crate) fn journal_blob(store: &Store, def: &TableDef, sys_id: &str, field: &str) -> String {
    let journal = &schema::SYS_JOURNAL_FIELD;
    let (Some(name), Some(element), Some(value)) = (
        journal.position("name"),
        journal.position("element"),
        journal.position("value"),
    ) else {
        return String::new();
    };
    let mut blob = String::new();
    for row in store.journal_rows(sys_id).iter().rev() {
        let wanted = match field {
            "comments_and_work_notes" => row[element] == "work_notes" || row[element] == "comments",
            other => row[element] == other,
        };
        if row[name] != def.name || !wanted {
            continue;
        }
        blob.push_str(&format!(
            "{} - {} ({})\n{}\n\n",
            row[SYS_CREATED_ON],
            store.user_display_name(&row[SYS_CREATED_BY]),
            schema::journal_label(&row[element]),
            row[value]
        ));
    }
    blob
}

/// A row as the direct handle returns it: stored values, references as plain sys_ids,
/// journal fields empty (as on the wire).
pub(crate) fn plain_record(def: &TableDef, row: &Row) -> Record {
    def.fields
        .iter()
        .zip(row)
        .map(|(field, value)| {
            let value = match field.kind {
                Kind::Journal | Kind::JournalList => String::new(),
                _ => value.clone(),
            };
            (field.name.to_owned(), FieldValue::Text(value))
        })
        .collect()
}
