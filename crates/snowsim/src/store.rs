//! The in-memory tables and the indexes derived from them.
//!
//! Rows keep insertion order (a per-table sequence number), which is the order a list call
//! returns them in without `ORDERBY` and the tie-break of every sort. Two derived indexes stay
//! in step with their tables on every write: choice labels (`sys_choice`) and journal entries
//! per record (`sys_journal_field`), so rendering a record never scans a whole table.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
};

use crate::{
    query::FieldSource,
    schema::{self, Kind, SYS_ID, TABLES, TableDef, id},
};

/// One record: values by field position (see [`TableDef::fields`]).
pub(crate) type Row = Vec<String>;

/// One table's rows.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) def: &'static TableDef,
    rows: BTreeMap<u64, Row>,
    by_id: HashMap<String, u64>,
    next_seq: u64,
    next_number: u64,
}

impl Table {
    fn new(def: &'static TableDef) -> Self {
        Table {
            def,
            rows: BTreeMap::new(),
            by_id: HashMap::new(),
            next_seq: 0,
            next_number: def.numbering.map_or(0, |(_, first)| first),
        }
    }

    /// A row by sys_id.
    pub(crate) fn get(&self, sys_id: &str) -> Option<&Row> {
        self.by_id.get(sys_id).and_then(|seq| self.rows.get(seq))
    }

    /// Every row, in insertion order.
    pub(crate) fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    /// The number of rows.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }
}

/// Every table plus the derived indexes.
#[derive(Debug)]
pub(crate) struct Store {
    tables: Vec<Table>,
    /// table → element → value → label, from active `sys_choice` rows.
    choices: HashMap<String, HashMap<String, HashMap<String, String>>>,
    /// record sys_id → sequence numbers of its `sys_journal_field` rows.
    journal: HashMap<String, BTreeSet<u64>>,
}

impl Store {
    /// An empty instance.
    pub(crate) fn new() -> Self {
        Store {
            tables: TABLES.iter().map(|def| Table::new(def)).collect(),
            choices: HashMap::new(),
            journal: HashMap::new(),
        }
    }

    /// A table by id (ids come from [`schema::table_id`], so they are always in range).
    pub(crate) fn table(&self, table: usize) -> Option<&Table> {
        self.tables.get(table)
    }

    /// A row by table id and sys_id.
    pub(crate) fn get(&self, table: usize, sys_id: &str) -> Option<&Row> {
        self.tables.get(table)?.get(sys_id)
    }

    /// Hands out the next `number` of a task table (`INC0010001`, ...).
    pub(crate) fn next_number(&mut self, table: usize) -> Option<String> {
        let t = self.tables.get_mut(table)?;
        let (prefix, _) = t.def.numbering?;
        let n = t.next_number;
        t.next_number += 1;
        Some(format!("{prefix}{n:07}"))
    }

    /// Adds a row (its sys_id must be new). Returns `false`, changing nothing, if it is not.
    pub(crate) fn insert(&mut self, table: usize, row: Row) -> bool {
        let Some(t) = self.tables.get_mut(table) else {
            return false;
        };
        let Some(sys_id) = row.get(SYS_ID).cloned() else {
            return false;
        };
        // Every row has exactly one value per field: rendering indexes rows by position.
        if row.len() != t.def.fields.len() || t.by_id.contains_key(&sys_id) {
            return false;
        }
        let seq = t.next_seq;
        t.next_seq += 1;
        t.by_id.insert(sys_id, seq);
        t.rows.insert(seq, row);
        self.after_write(table, None, seq, true);
        true
    }

    /// Replaces a row with the same sys_id. Returns `false` if there is none.
    pub(crate) fn replace(&mut self, table: usize, row: Row) -> bool {
        let Some(t) = self.tables.get_mut(table) else {
            return false;
        };
        let Some(seq) = row.get(SYS_ID).and_then(|id| t.by_id.get(id)).copied() else {
            return false;
        };
        if row.len() != t.def.fields.len() {
            return false;
        }
        let old = t.rows.insert(seq, row);
        self.after_write(table, old.as_ref(), seq, true);
        true
    }

    /// Removes a row, returning it.
    pub(crate) fn delete(&mut self, table: usize, sys_id: &str) -> Option<Row> {
        let t = self.tables.get_mut(table)?;
        let seq = t.by_id.remove(sys_id)?;
        let old = t.rows.remove(&seq)?;
        self.after_write(table, Some(&old), seq, false);
        Some(old)
    }

    fn after_write(&mut self, table: usize, old: Option<&Row>, seq: u64, present: bool) {
        match table {
            id::SYS_CHOICE => self.rebuild_choices(),
            id::SYS_JOURNAL_FIELD => {
                let Some(pos) = schema::SYS_JOURNAL_FIELD.position("element_id") else {
                    return;
                };
                if let Some(old_element) = old.map(|row| &row[pos])
                    && let Some(set) = self.journal.get_mut(old_element)
                {
                    set.remove(&seq);
                    if set.is_empty() {
                        self.journal.remove(old_element);
                    }
                }
                if present && let Some(element) = self.tables[table].rows.get(&seq).map(|r| &r[pos])
                {
                    self.journal.entry(element.clone()).or_default().insert(seq);
                }
            }
            _ => {}
        }
    }

    fn rebuild_choices(&mut self) {
        let def = &schema::SYS_CHOICE;
        let (Some(name), Some(element), Some(value), Some(label), Some(inactive)) = (
            def.position("name"),
            def.position("element"),
            def.position("value"),
            def.position("label"),
            def.position("inactive"),
        ) else {
            return;
        };
        let mut choices: HashMap<String, HashMap<String, HashMap<String, String>>> = HashMap::new();
        for row in self.tables[id::SYS_CHOICE].rows() {
            if row[inactive] == "true" {
                continue;
            }
            choices
                .entry(row[name].clone())
                .or_default()
                .entry(row[element].clone())
                .or_default()
                .entry(row[value].clone())
                .or_insert_with(|| row[label].clone());
        }
        self.choices = choices;
    }

    /// The label of a choice value, from `sys_choice`.
    pub(crate) fn choice_label(&self, table: &str, element: &str, value: &str) -> Option<&str> {
        self.choices
            .get(table)?
            .get(element)?
            .get(value)
            .map(String::as_str)
    }

    /// The `sys_user` row with this user name.
    pub(crate) fn user_by_name(&self, user_name: &str) -> Option<&Row> {
        let pos = schema::SYS_USER.position("user_name")?;
        self.tables[id::SYS_USER]
            .rows()
            .find(|row| row[pos] == user_name)
    }

    /// A user's display name (`sys_user.name`), or the user name when unknown.
    pub(crate) fn user_display_name<'a>(&'a self, user_name: &'a str) -> &'a str {
        schema::SYS_USER
            .position("name")
            .and_then(|pos| self.user_by_name(user_name).map(|row| row[pos].as_str()))
            .filter(|name| !name.is_empty())
            .unwrap_or(user_name)
    }

    /// The referenced record: for `task`, whichever task table holds the sys_id.
    pub(crate) fn resolve_reference(&self, target: &str, sys_id: &str) -> Option<(usize, &Row)> {
        if sys_id.is_empty() {
            return None;
        }
        if target == "task" {
            return schema::TASK_TABLES
                .iter()
                .find_map(|&t| self.get(t, sys_id).map(|row| (t, row)));
        }
        let t = schema::table_id(target)?;
        self.get(t, sys_id).map(|row| (t, row))
    }

    /// The display value of a referenced record (`""` when it does not exist).
    pub(crate) fn reference_display(&self, target: &str, sys_id: &str) -> &str {
        self.resolve_reference(target, sys_id)
            .and_then(|(t, row)| {
                let def = TABLES[t];
                def.position(def.display_field).map(|p| row[p].as_str())
            })
            .unwrap_or("")
    }

    /// The priority `dl_u_priority` gives for an impact and urgency (first active match).
    pub(crate) fn priority_for(&self, impact: &str, urgency: &str) -> Option<String> {
        let def = &schema::DL_U_PRIORITY;
        let (i, u, p, a) = (
            def.position("impact")?,
            def.position("urgency")?,
            def.position("priority")?,
            def.position("active")?,
        );
        self.tables[id::DL_U_PRIORITY]
            .rows()
            .find(|row| row[a] != "false" && row[i] == impact && row[u] == urgency)
            .map(|row| row[p].clone())
    }

    /// A record's journal rows (`sys_journal_field`), oldest first.
    pub(crate) fn journal_rows(&self, element_id: &str) -> Vec<&Row> {
        let rows = &self.tables[id::SYS_JOURNAL_FIELD].rows;
        let mut found: Vec<&Row> = self
            .journal
            .get(element_id)
            .map(|seqs| seqs.iter().filter_map(|s| rows.get(s)).collect())
            .unwrap_or_default();
        // Seeded history can be inserted out of time order; the sort is stable for ties.
        found.sort_by(|a, b| a[schema::SYS_CREATED_ON].cmp(&b[schema::SYS_CREATED_ON]));
        found
    }

    /// A view of a row for query evaluation, with dot-walking.
    pub(crate) fn view<'a>(&'a self, def: &'static TableDef, row: &'a Row) -> RowView<'a> {
        RowView {
            store: self,
            def,
            row,
        }
    }

    /// Follows a dot-walked path from a row: the table and row holding the last segment, and
    /// that field's definition. `None` when the path is unknown; an empty or dangling reference
    /// on the way yields `Some` with no row.
    pub(crate) fn walk<'a>(
        &'a self,
        def: &'static TableDef,
        row: &'a Row,
        path: &str,
    ) -> Option<Walked<'a>> {
        let mut def = def;
        let mut row = Some(row);
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            if segments.peek().is_none() {
                let pos = def.position(segment)?;
                return Some(Walked { def, row, pos });
            }
            let field = def.field(segment)?;
            let Kind::Reference(target) = field.kind else {
                return None;
            };
            let value = row.and_then(|r| def.position(segment).map(|p| r[p].as_str()));
            let next = value.and_then(|v| self.resolve_reference(target, v));
            match next {
                Some((t, r)) => {
                    def = TABLES[t];
                    row = Some(r);
                }
                None => {
                    // Keep walking the schema so unknown paths are still rejected.
                    def = match target {
                        "task" => &schema::INCIDENT,
                        other => TABLES[schema::table_id(other)?],
                    };
                    row = None;
                }
            }
        }
        None
    }
}

/// Where a dot-walked path ended.
pub(crate) struct Walked<'a> {
    /// The table of the last segment.
    pub(crate) def: &'static TableDef,
    /// The row holding it (`None` when a reference on the way was empty or dangling).
    pub(crate) row: Option<&'a Row>,
    /// The last segment's position in `def`.
    pub(crate) pos: usize,
}

impl Walked<'_> {
    /// The stored value at the end of the path (`""` past an empty reference).
    pub(crate) fn value(&self) -> &str {
        self.row.map_or("", |r| r[self.pos].as_str())
    }
}

/// A row plus what it takes to evaluate dot-walked conditions on it.
#[derive(Clone, Copy)]
pub(crate) struct RowView<'a> {
    store: &'a Store,
    def: &'static TableDef,
    pub(crate) row: &'a Row,
}

impl FieldSource for RowView<'_> {
    fn field(&self, field: &str) -> Option<Cow<'_, str>> {
        if !field.contains('.') {
            return self
                .def
                .position(field)
                .map(|p| Cow::Borrowed(self.row[p].as_str()));
        }
        self.store
            .walk(self.def, self.row, field)
            .map(|w| Cow::Owned(w.value().to_owned()))
    }
}
