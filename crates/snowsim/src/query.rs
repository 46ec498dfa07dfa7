//! ServiceNow encoded queries (`sysparm_query`): a total parser and a pure evaluator.
//!
//! Grammar, as ServiceNow writes it: conditions `field<op>value` joined by `^` (AND) and `^OR`
//! (OR, binding tighter than AND), whole queries OR-ed with `^NQ`, ordering with
//! `ORDERBY<field>` / `ORDERBYDESC<field>` anywhere, `^EQ` as a no-op end marker, and `^^` for a
//! literal caret inside a value. Names, operators and values are case-sensitive, which is what
//! makes the grammar unambiguous: field names are lowercase, operators and markers uppercase.
//!
//! [`parse`] is strict (any invalid part is an error); [`parse_lenient`] drops invalid parts the
//! way ServiceNow does by default, which can widen a query. Neither panics on any input.

use std::{borrow::Cow, cmp::Ordering, fmt};

use chrono::{DateTime, Duration, Utc};
use nowpilot_model::time::parse_glide;

/// A parsed encoded query: an OR of [`Conjunction`]s (`^NQ`), plus ordering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedQuery {
    /// The `^NQ`-separated queries; a record matches when any of them matches. Empty matches all.
    pub disjuncts: Vec<Conjunction>,
    /// `ORDERBY` / `ORDERBYDESC` keys, in the order given.
    pub order_by: Vec<OrderBy>,
}

/// Clauses that must all hold (`^`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conjunction {
    /// The AND-ed clauses; an empty conjunction matches every record.
    pub clauses: Vec<Clause>,
}

/// Conditions of which one must hold (`^OR`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clause {
    /// The OR-ed alternatives (never empty after parsing).
    pub alternatives: Vec<Condition>,
}

/// One `field<op>value` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The field name, possibly dot-walked (`cmdb_ci.name`).
    pub field: String,
    /// The operator.
    pub operator: Operator,
    /// The right-hand side.
    pub operand: Operand,
}

/// The supported operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `IN` (comma-separated list)
    In,
    /// `NOT IN`
    NotIn,
    /// `LIKE` (contains)
    Like,
    /// `NOT LIKE`
    NotLike,
    /// `STARTSWITH`
    StartsWith,
    /// `ENDSWITH`
    EndsWith,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `ISEMPTY`
    IsEmpty,
    /// `ISNOTEMPTY`
    IsNotEmpty,
    /// `ANYTHING`
    Anything,
    /// `RELATIVEGT@unit@ago|ahead@n`: after the relative instant.
    RelativeGt,
    /// `RELATIVELT@unit@ago|ahead@n`: before the relative instant.
    RelativeLt,
}

/// Operators in the order they are tried: an operator that is a prefix of another comes after it.
const OPERATORS: &[(&str, Operator)] = &[
    ("ISNOTEMPTY", Operator::IsNotEmpty),
    ("ISEMPTY", Operator::IsEmpty),
    ("ANYTHING", Operator::Anything),
    ("NOT LIKE", Operator::NotLike),
    ("NOT IN", Operator::NotIn),
    ("STARTSWITH", Operator::StartsWith),
    ("ENDSWITH", Operator::EndsWith),
    ("RELATIVEGT", Operator::RelativeGt),
    ("RELATIVELT", Operator::RelativeLt),
    ("LIKE", Operator::Like),
    ("IN", Operator::In),
    ("!=", Operator::Ne),
    (">=", Operator::Ge),
    ("<=", Operator::Le),
    ("=", Operator::Eq),
    (">", Operator::Gt),
    ("<", Operator::Lt),
];

/// The right-hand side of a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// No value (`ISEMPTY`, `ISNOTEMPTY`, `ANYTHING`).
    None,
    /// A single value.
    Value(ValueExpr),
    /// A comma-separated list (`IN`, `NOT IN`).
    List(Vec<ValueExpr>),
    /// A relative instant (`RELATIVEGT` / `RELATIVELT`).
    Relative(RelativeTime),
}

/// A literal, or one of the `javascript:` expressions clients use to ask "who am I".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueExpr {
    /// A literal value.
    Literal(String),
    /// `javascript:gs.getUserID()`: the caller's `sys_user` sys_id.
    UserId,
    /// `javascript:gs.getUserName()`: the caller's user name.
    UserName,
    /// Any other `javascript:` expression. The simulator cannot run scripts; like a script that
    /// fails on a real instance, it evaluates to the empty value.
    UnsupportedScript(String),
}

impl ValueExpr {
    fn parse(raw: &str) -> Self {
        match raw.strip_prefix("javascript:") {
            None => ValueExpr::Literal(raw.to_owned()),
            Some(script) => match script.trim().trim_end_matches(';').trim() {
                "gs.getUserID()" => ValueExpr::UserId,
                "gs.getUserName()" => ValueExpr::UserName,
                other => ValueExpr::UnsupportedScript(other.to_owned()),
            },
        }
    }

    fn resolve<'a>(&'a self, ctx: &'a EvalContext<'a>) -> &'a str {
        match self {
            ValueExpr::Literal(s) => s,
            ValueExpr::UserId => ctx.user_sys_id,
            ValueExpr::UserName => ctx.user_name,
            ValueExpr::UnsupportedScript(_) => "",
        }
    }
}

/// `@unit@ago|ahead@n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelativeTime {
    /// The unit.
    pub unit: TimeUnit,
    /// Whether the instant is in the past (`ago`) or future (`ahead`).
    pub ago: bool,
    /// How many units.
    pub amount: u32,
}

/// Units of [`RelativeTime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// `minute`
    Minute,
    /// `hour`
    Hour,
    /// `day`
    Day,
}

impl RelativeTime {
    /// The instant this denotes at `now`; `None` if it is out of chrono's range.
    pub fn instant(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let amount = i64::from(self.amount);
        let span = match self.unit {
            TimeUnit::Minute => Duration::try_minutes(amount)?,
            TimeUnit::Hour => Duration::try_hours(amount)?,
            TimeUnit::Day => Duration::try_days(amount)?,
        };
        if self.ago {
            now.checked_sub_signed(span)
        } else {
            now.checked_add_signed(span)
        }
    }
}

/// One ordering key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    /// The field to sort by.
    pub field: String,
    /// `ORDERBYDESC`.
    pub descending: bool,
}

/// Why (part of) a query could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query part {part:?}: {reason}")]
pub struct QueryError {
    /// The offending part, as written.
    pub part: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a query strictly: the first invalid part is an error.
pub fn parse(input: &str) -> Result<EncodedQuery, QueryError> {
    let (query, mut errors) = parse_lenient(input);
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(errors.swap_remove(0))
    }
}

/// Parses a query the way ServiceNow runs it by default: invalid parts are dropped (and
/// reported), the rest is kept.
pub fn parse_lenient(input: &str) -> (EncodedQuery, Vec<QueryError>) {
    let mut query = EncodedQuery::default();
    let mut errors = Vec::new();
    let mut current = Conjunction::default();
    for token in split_tokens(input) {
        if token.is_empty() || token == "EQ" {
            continue;
        }
        let (rest, new_query, or) = if let Some(rest) = token.strip_prefix("NQ") {
            (rest, true, false)
        } else if token.starts_with("ORDERBY") {
            (token.as_str(), false, false)
        } else if let Some(rest) = token.strip_prefix("OR") {
            (rest, false, true)
        } else {
            (token.as_str(), false, false)
        };
        if new_query {
            if !current.clauses.is_empty() {
                query.disjuncts.push(std::mem::take(&mut current));
            }
            if rest.is_empty() {
                continue;
            }
        }
        if let Some(order) = parse_order(rest) {
            match order {
                Ok(order) => query.order_by.push(order),
                Err(reason) => errors.push(QueryError {
                    part: token.clone(),
                    reason,
                }),
            }
            continue;
        }
        match parse_condition(rest) {
            Ok(condition) => match current.clauses.last_mut() {
                Some(clause) if or => clause.alternatives.push(condition),
                _ => current.clauses.push(Clause {
                    alternatives: vec![condition],
                }),
            },
            Err(reason) => errors.push(QueryError {
                part: token.clone(),
                reason,
            }),
        }
    }
    // Empty segments (`a=1^NQ`) add nothing; a query with no condition at all matches everything.
    if !current.clauses.is_empty() || query.disjuncts.is_empty() {
        query.disjuncts.push(current);
    }
    (query, errors)
}

/// Splits at `^`, turning `^^` into a literal caret.
fn split_tokens(input: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '^' {
            if chars.peek() == Some(&'^') {
                chars.next();
                current.push('^');
            } else {
                tokens.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    tokens.push(current);
    tokens
}

fn parse_order(token: &str) -> Option<Result<OrderBy, &'static str>> {
    let (field, descending) = if let Some(f) = token.strip_prefix("ORDERBYDESC") {
        (f, true)
    } else {
        (token.strip_prefix("ORDERBY")?, false)
    };
    Some(if is_field_name(field) {
        Ok(OrderBy {
            field: field.to_owned(),
            descending,
        })
    } else {
        Err("ORDERBY needs a field name")
    })
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
}

fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(is_field_char)
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
}

fn parse_condition(token: &str) -> Result<Condition, &'static str> {
    let field_end = token
        .char_indices()
        .find(|&(_, c)| !is_field_char(c))
        .map_or(token.len(), |(i, _)| i);
    let (field, rest) = token.split_at(field_end);
    if !is_field_name(field) {
        return Err("expected a lowercase field name");
    }
    let Some(&(symbol, operator)) = OPERATORS.iter().find(|(sym, _)| rest.starts_with(sym)) else {
        return Err("expected an operator after the field name");
    };
    let raw = &rest[symbol.len()..];
    let operand = match operator {
        Operator::IsEmpty | Operator::IsNotEmpty | Operator::Anything => {
            if !raw.is_empty() {
                return Err("this operator takes no value");
            }
            Operand::None
        }
        Operator::In | Operator::NotIn => {
            Operand::List(raw.split(',').map(ValueExpr::parse).collect())
        }
        Operator::RelativeGt | Operator::RelativeLt => Operand::Relative(parse_relative(raw)?),
        _ => Operand::Value(ValueExpr::parse(raw)),
    };
    Ok(Condition {
        field: field.to_owned(),
        operator,
        operand,
    })
}

fn parse_relative(raw: &str) -> Result<RelativeTime, &'static str> {
    const SHAPE: &str = "expected @minute|hour|day@ago|ahead@<count>";
    let mut parts = raw.split('@');
    if parts.next() != Some("") {
        return Err(SHAPE);
    }
    let unit = match parts.next() {
        Some("minute") => TimeUnit::Minute,
        Some("hour") => TimeUnit::Hour,
        Some("day") => TimeUnit::Day,
        _ => return Err(SHAPE),
    };
    let ago = match parts.next() {
        Some("ago") => true,
        Some("ahead") => false,
        _ => return Err(SHAPE),
    };
    let amount = parts
        .next()
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or(SHAPE)?;
    if parts.next().is_some() {
        return Err(SHAPE);
    }
    Ok(RelativeTime { unit, ago, amount })
}

/// Who is asking and when: what `javascript:` values and relative dates resolve against.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext<'a> {
    /// The current instant.
    pub now: DateTime<Utc>,
    /// The caller's `sys_user` sys_id (`gs.getUserID()`).
    pub user_sys_id: &'a str,
    /// The caller's user name (`gs.getUserName()`).
    pub user_name: &'a str,
}

/// Read access to a record's stored values, for evaluation.
pub trait FieldSource {
    /// The stored value of `field` (possibly dot-walked); `None` when the field does not exist.
    fn field(&self, field: &str) -> Option<Cow<'_, str>>;
}

impl EncodedQuery {
    /// Drops conditions and ordering keys on fields `known` rejects, as ServiceNow silently
    /// drops invalid query parts; returns the dropped field names.
    pub fn retain_known_fields(&mut self, known: impl Fn(&str) -> bool) -> Vec<String> {
        let mut dropped = Vec::new();
        for conjunction in &mut self.disjuncts {
            for clause in &mut conjunction.clauses {
                clause.alternatives.retain(|c| {
                    let keep = known(&c.field);
                    if !keep {
                        dropped.push(c.field.clone());
                    }
                    keep
                });
            }
            conjunction.clauses.retain(|c| !c.alternatives.is_empty());
        }
        self.order_by.retain(|o| {
            let keep = known(&o.field);
            if !keep {
                dropped.push(o.field.clone());
            }
            keep
        });
        dropped
    }

    /// Whether a record matches.
    pub fn matches(&self, record: &impl FieldSource, ctx: &EvalContext<'_>) -> bool {
        self.disjuncts.is_empty() || self.disjuncts.iter().any(|c| c.matches(record, ctx))
    }

    /// Sorts records by the `ORDERBY` keys. Stable: ties keep their order.
    pub fn sort<T: FieldSource>(&self, records: &mut [T]) {
        if self.order_by.is_empty() {
            return;
        }
        records.sort_by(|a, b| {
            for key in &self.order_by {
                let left = a.field(&key.field).unwrap_or_default();
                let right = b.field(&key.field).unwrap_or_default();
                let ord = sort_compare(&left, &right);
                let ord = if key.descending { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }
}

impl Conjunction {
    fn matches(&self, record: &impl FieldSource, ctx: &EvalContext<'_>) -> bool {
        self.clauses
            .iter()
            .all(|clause| clause.alternatives.iter().any(|c| c.matches(record, ctx)))
    }
}

impl Condition {
    /// Whether the record satisfies this condition. A missing field never matches.
    pub fn matches(&self, record: &impl FieldSource, ctx: &EvalContext<'_>) -> bool {
        let Some(actual) = record.field(&self.field) else {
            return false;
        };
        let actual = actual.as_ref();
        match (&self.operator, &self.operand) {
            (Operator::IsEmpty, _) => actual.is_empty(),
            (Operator::IsNotEmpty, _) => !actual.is_empty(),
            (Operator::Anything, _) => true,
            (Operator::In, Operand::List(items)) => items.iter().any(|v| v.resolve(ctx) == actual),
            (Operator::NotIn, Operand::List(items)) => {
                !items.iter().any(|v| v.resolve(ctx) == actual)
            }
            (Operator::RelativeGt, Operand::Relative(rel)) => {
                relative_compare(actual, rel, ctx) == Some(Ordering::Greater)
            }
            (Operator::RelativeLt, Operand::Relative(rel)) => {
                relative_compare(actual, rel, ctx) == Some(Ordering::Less)
            }
            (op, Operand::Value(v)) => {
                let expected = v.resolve(ctx);
                match op {
                    Operator::Eq => actual == expected,
                    Operator::Ne => actual != expected,
                    Operator::Like => actual.contains(expected),
                    Operator::NotLike => !actual.contains(expected),
                    Operator::StartsWith => actual.starts_with(expected),
                    Operator::EndsWith => actual.ends_with(expected),
                    Operator::Gt => value_compare(actual, expected) == Some(Ordering::Greater),
                    Operator::Ge => matches!(
                        value_compare(actual, expected),
                        Some(Ordering::Greater | Ordering::Equal)
                    ),
                    Operator::Lt => value_compare(actual, expected) == Some(Ordering::Less),
                    Operator::Le => matches!(
                        value_compare(actual, expected),
                        Some(Ordering::Less | Ordering::Equal)
                    ),
                    _ => false,
                }
            }
            // Operator/operand combinations the parser never produces.
            _ => false,
        }
    }
}

fn relative_compare(actual: &str, rel: &RelativeTime, ctx: &EvalContext<'_>) -> Option<Ordering> {
    let actual = parse_glide(actual)?;
    let at = rel.instant(ctx.now)?;
    Some(actual.cmp(&at))
}

/// Compares two stored values the way the database would: integers numerically, date-times
/// chronologically, anything else as strings. Empty values (SQL NULL) compare as nothing.
pub fn value_compare(a: &str, b: &str) -> Option<Ordering> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    if let (Ok(x), Ok(y)) = (a.parse::<i64>(), b.parse::<i64>()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (parse_glide(a), parse_glide(b)) {
        return Some(x.cmp(&y));
    }
    Some(a.cmp(b))
}

/// The ordering for `ORDERBY`: like [`value_compare`], with empty values first.
fn sort_compare(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => value_compare(a, b).unwrap_or(Ordering::Equal),
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let symbol = OPERATORS
            .iter()
            .find(|(_, op)| op == self)
            .map_or("?", |(sym, _)| sym);
        f.write_str(symbol)
    }
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
