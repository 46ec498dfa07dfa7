//! A builder for ServiceNow encoded queries (`sysparm_query`) that cannot widen by accident.
//!
//! ServiceNow silently drops a query part it cannot parse and runs the rest, so a stray `^` in
//! a value, or a misspelt operator, can turn "this incident" into "every incident". The builder
//! therefore refuses, with a typed [`QueryError`], any field name outside `[A-Za-z0-9_.]` and
//! any value containing `^`, `\n` or `\r` (and `,` inside `IN` lists). Every method is total:
//! no input panics.
//!
//! `^OR` binds to the condition before it (`a^b^ORc` is `a AND (b OR c)`), `^NQ` starts a new
//! OR-ed query, and `ORDERBY` parts are emitted at the end in the order they were added.

use chrono::{DateTime, Utc};
use nowpilot_model::time::format_glide;

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A field name outside `[A-Za-z0-9_.]+`, with a leading, trailing or doubled dot, or
    /// starting with a token ServiceNow would read as an operator (`OR`, `NQ`, `EQ`, …).
    #[error(
        "invalid field name {field:?}: use a column name like `assignment_group` or a dot-walk like `cmdb_ci.name`"
    )]
    InvalidField {
        /// The name as given.
        field: String,
    },
    /// A value contains `^`, a newline or a carriage return, which would split the query.
    #[error(
        "the value for {field} contains {found}, which would split the encoded query and widen it; refusing rather than query more rows than intended"
    )]
    UnsafeValue {
        /// The field.
        field: String,
        /// What was found (`'^'`, `a newline`, …).
        found: &'static str,
    },
    /// An `IN` / `NOT IN` element contains `,`.
    #[error(
        "an element of the list for {field} contains ',', which ServiceNow reads as a separator"
    )]
    CommaInList {
        /// The field.
        field: String,
    },
    /// An empty `IN` / `NOT IN` list.
    #[error("the list for {field} is empty: an empty IN list is not a valid condition")]
    EmptyList {
        /// The field.
        field: String,
    },
    /// An empty value for `=`-style operators, which ServiceNow may drop as invalid.
    #[error(
        "the value for {field} is empty: use is_empty()/is_not_empty() to test for an empty field"
    )]
    EmptyValue {
        /// The field.
        field: String,
    },
    /// An `or_*` condition with nothing before it to attach to.
    #[error("an OR condition on {field} has no condition before it to combine with")]
    DanglingOr {
        /// The field.
        field: String,
    },
    /// `new_query()` with no condition before or after it.
    #[error("new_query() needs conditions both before and after it")]
    EmptySegment,
    /// A raw part that is empty or contains a newline.
    #[error("raw query part is empty or contains a newline")]
    InvalidRaw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    And,
    Or,
}

#[derive(Debug, Clone)]
enum Part {
    Condition { join: Join, text: String },
    NewQuery,
}

/// An encoded-query builder. Methods chain; the first problem is kept and reported by
/// [`EncodedQuery::build`].
#[derive(Debug, Clone, Default)]
pub struct EncodedQuery {
    parts: Vec<Part>,
    order: Vec<String>,
    error: Option<QueryError>,
}

/// Tokens that make ServiceNow read `^<token>...` as syntax rather than a field name.
const RESERVED_PREFIXES: &[&str] = &["OR", "NQ", "EQ", "GROUPBY", "RLQUERY", "ENDRLQUERY"];

fn check_field(field: &str) -> Result<(), QueryError> {
    let ok = !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        && !field.starts_with('.')
        && !field.ends_with('.')
        && !field.contains("..")
        && !RESERVED_PREFIXES.iter().any(|p| field.starts_with(p));
    if ok {
        Ok(())
    } else {
        Err(QueryError::InvalidField {
            field: field.chars().take(100).collect(),
        })
    }
}

fn check_value(field: &str, value: &str) -> Result<(), QueryError> {
    let found = if value.contains('^') {
        Some("'^'")
    } else if value.contains('\n') {
        Some("a newline")
    } else if value.contains('\r') {
        Some("a carriage return")
    } else {
        None
    };
    match found {
        Some(found) => Err(QueryError::UnsafeValue {
            field: field.to_owned(),
            found,
        }),
        None => Ok(()),
    }
}

macro_rules! operators {
    ($( $(#[$doc:meta])* $name:ident, $or_name:ident => $op:literal; )+) => {
        $(
            $(#[$doc])*
            pub fn $name(self, field: &str, value: impl AsRef<str>) -> Self {
                self.condition(Join::And, field, $op, value.as_ref())
            }

            /// The same condition OR-ed with the previous one (`^OR`).
            pub fn $or_name(self, field: &str, value: impl AsRef<str>) -> Self {
                self.condition(Join::Or, field, $op, value.as_ref())
            }
        )+
    };
}

macro_rules! time_operators {
    ($( $(#[$doc:meta])* $name:ident, $or_name:ident => $op:literal; )+) => {
        $(
            $(#[$doc])*
            pub fn $name(self, field: &str, at: DateTime<Utc>) -> Self {
                self.condition(Join::And, field, $op, &format_glide(at))
            }

            /// The same condition OR-ed with the previous one (`^OR`).
            pub fn $or_name(self, field: &str, at: DateTime<Utc>) -> Self {
                self.condition(Join::Or, field, $op, &format_glide(at))
            }
        )+
    };
}

impl EncodedQuery {
    /// An empty query.
    pub fn new() -> Self {
        Self::default()
    }

    fn fail(mut self, error: QueryError) -> Self {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self
    }

    fn push(mut self, join: Join, field: &str, text: String) -> Self {
        if join == Join::Or && !matches!(self.parts.last(), Some(Part::Condition { .. })) {
            return self.fail(QueryError::DanglingOr {
                field: field.to_owned(),
            });
        }
        self.parts.push(Part::Condition { join, text });
        self
    }

    fn condition(self, join: Join, field: &str, op: &str, value: &str) -> Self {
        if let Err(e) = check_field(field).and_then(|()| check_value(field, value)) {
            return self.fail(e);
        }
        if value.is_empty() {
            return self.fail(QueryError::EmptyValue {
                field: field.to_owned(),
            });
        }
        self.push(join, field, format!("{field}{op}{value}"))
    }

    fn unary(self, join: Join, field: &str, op: &str) -> Self {
        if let Err(e) = check_field(field) {
            return self.fail(e);
        }
        self.push(join, field, format!("{field}{op}"))
    }

    fn list<I, S>(self, join: Join, field: &str, op: &str, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if let Err(e) = check_field(field) {
            return self.fail(e);
        }
        let mut joined = String::new();
        for value in values {
            let value = value.as_ref();
            if let Err(e) = check_value(field, value) {
                return self.fail(e);
            }
            if value.contains(',') {
                return self.fail(QueryError::CommaInList {
                    field: field.to_owned(),
                });
            }
            if value.is_empty() {
                return self.fail(QueryError::EmptyValue {
                    field: field.to_owned(),
                });
            }
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(value);
        }
        if joined.is_empty() {
            return self.fail(QueryError::EmptyList {
                field: field.to_owned(),
            });
        }
        self.push(join, field, format!("{field}{op}{joined}"))
    }

    operators! {
        /// `field=value`.
        eq, or_eq => "=";
        /// `field!=value`.
        ne, or_ne => "!=";
        /// `fieldLIKEvalue` (contains).
        like, or_like => "LIKE";
        /// `fieldNOT LIKEvalue` (does not contain).
        not_like, or_not_like => "NOT LIKE";
        /// `fieldSTARTSWITHvalue`.
        starts_with, or_starts_with => "STARTSWITH";
        /// `fieldENDSWITHvalue`.
        ends_with, or_ends_with => "ENDSWITH";
        /// `field>=value` (string or number comparison as ServiceNow does it).
        gte, or_gte => ">=";
        /// `field<=value`.
        lte, or_lte => "<=";
        /// `field>value`.
        gt, or_gt => ">";
        /// `field<value`.
        lt, or_lt => "<";
    }

    time_operators! {
        /// `field>=yyyy-MM-dd HH:mm:ss` (UTC).
        gte_time, or_gte_time => ">=";
        /// `field<=yyyy-MM-dd HH:mm:ss` (UTC).
        lte_time, or_lte_time => "<=";
        /// `field>yyyy-MM-dd HH:mm:ss` (UTC).
        gt_time, or_gt_time => ">";
        /// `field<yyyy-MM-dd HH:mm:ss` (UTC).
        lt_time, or_lt_time => "<";
    }

    /// `fieldINa,b,c`.
    pub fn in_list<I: IntoIterator<Item = S>, S: AsRef<str>>(self, field: &str, values: I) -> Self {
        self.list(Join::And, field, "IN", values)
    }

    /// `^ORfieldINa,b,c`.
    pub fn or_in_list<I: IntoIterator<Item = S>, S: AsRef<str>>(
        self,
        field: &str,
        values: I,
    ) -> Self {
        self.list(Join::Or, field, "IN", values)
    }

    /// `fieldNOT INa,b,c`.
    pub fn not_in<I: IntoIterator<Item = S>, S: AsRef<str>>(self, field: &str, values: I) -> Self {
        self.list(Join::And, field, "NOT IN", values)
    }

    /// `^ORfieldNOT INa,b,c`.
    pub fn or_not_in<I: IntoIterator<Item = S>, S: AsRef<str>>(
        self,
        field: &str,
        values: I,
    ) -> Self {
        self.list(Join::Or, field, "NOT IN", values)
    }

    /// `fieldISEMPTY`.
    pub fn is_empty(self, field: &str) -> Self {
        self.unary(Join::And, field, "ISEMPTY")
    }

    /// `^ORfieldISEMPTY`.
    pub fn or_is_empty(self, field: &str) -> Self {
        self.unary(Join::Or, field, "ISEMPTY")
    }

    /// `fieldISNOTEMPTY`.
    pub fn is_not_empty(self, field: &str) -> Self {
        self.unary(Join::And, field, "ISNOTEMPTY")
    }

    /// `^ORfieldISNOTEMPTY`.
    pub fn or_is_not_empty(self, field: &str) -> Self {
        self.unary(Join::Or, field, "ISNOTEMPTY")
    }

    /// `^NQ`: what follows is a separate query whose rows are added (OR-ed) to the rows of
    /// what came before.
    pub fn new_query(mut self) -> Self {
        match self.parts.last() {
            Some(Part::Condition { .. }) => {
                self.parts.push(Part::NewQuery);
                self
            }
            _ => self.fail(QueryError::EmptySegment),
        }
    }

    /// `ORDERBYfield` (ascending).
    pub fn order_by(mut self, field: &str) -> Self {
        if let Err(e) = check_field(field) {
            return self.fail(e);
        }
        self.order.push(format!("ORDERBY{field}"));
        self
    }

    /// `ORDERBYDESCfield`.
    pub fn order_by_desc(mut self, field: &str) -> Self {
        if let Err(e) = check_field(field) {
            return self.fail(e);
        }
        self.order.push(format!("ORDERBYDESC{field}"));
        self
    }

    /// Appends a hand-written part as an AND condition, unchecked except that it must be
    /// non-empty and single-line: the escape hatch for operators the builder lacks
    /// (`RELATIVEGT@hour@ago@1`, `javascript:gs.getUserID()`, …). Prefer the typed methods.
    pub fn raw(mut self, part: &str) -> Self {
        if part.is_empty() || part.contains('\n') || part.contains('\r') {
            return self.fail(QueryError::InvalidRaw);
        }
        self.parts.push(Part::Condition {
            join: Join::And,
            text: part.to_owned(),
        });
        self
    }

    /// Whether nothing has been added.
    pub fn is_blank(&self) -> bool {
        self.parts.is_empty() && self.order.is_empty() && self.error.is_none()
    }

    /// The encoded query, or the first problem found while building it.
    pub fn build(&self) -> Result<String, QueryError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if matches!(self.parts.last(), Some(Part::NewQuery)) {
            return Err(QueryError::EmptySegment);
        }
        let mut out = String::new();
        let mut segment_start = true;
        for part in &self.parts {
            match part {
                Part::NewQuery => {
                    out.push_str("^NQ");
                    segment_start = true;
                }
                Part::Condition { join, text } => {
                    if !segment_start {
                        out.push_str(match join {
                            Join::And => "^",
                            Join::Or => "^OR",
                        });
                    }
                    out.push_str(text);
                    segment_start = false;
                }
            }
        }
        for order in &self.order {
            if !out.is_empty() {
                out.push('^');
            }
            out.push_str(order);
        }
        Ok(out)
    }
}

/// Whether an encoded query already orders its rows.
pub(crate) fn has_order_by(query: &str) -> bool {
    query.split('^').any(|part| part.starts_with("ORDERBY"))
}

#[cfg(test)]
mod tests;
