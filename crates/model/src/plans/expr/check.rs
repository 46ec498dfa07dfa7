//! Load-time checks of a compiled CEL condition: the mistakes that would otherwise only show up
//! when the first incident is evaluated (every evaluation failing, the plan never matching, the
//! action never owed) are refused with the configuration.
//!
//! The checks are conservative: they refuse only what fails on every incident. A variable that
//! is not one of the documented ones, a function the interpreter does not have, and a result
//! that is certainly not a boolean (a constant, arithmetic, a conversion, a list) are refused;
//! fields of `incident` are not checked (any field name may exist on an instance), nor types
//! that depend on the incident's values.

use std::collections::HashSet;

use cel::common::ast::{EntryExpr, Expr as Node, IdedExpr, LiteralValue};

use super::ExprError;

/// The variables every condition sees (see [`super::IncidentVars`]).
pub const INCIDENT_VARIABLES: [&str; 7] = [
    "incident", "display", "priority", "impact", "urgency", "state", "title",
];

/// Where a condition is written, which decides the variables it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `intake.when`: the incident only.
    Intake,
    /// `actions[].when`: the incident and the investigation's `findings`.
    Action,
}

impl Scope {
    fn allows(self, name: &str) -> bool {
        INCIDENT_VARIABLES.contains(&name) || (self == Scope::Action && name == "findings")
    }

    fn describe(self) -> String {
        let mut names: Vec<&str> = INCIDENT_VARIABLES.to_vec();
        if self == Scope::Action {
            names.push("findings");
        }
        names.join(", ")
    }
}

/// Checks `root` (the AST of a condition) for `scope`.
pub(super) fn check(root: &IdedExpr, scope: Scope) -> Result<(), ExprError> {
    let mut walk = Walk {
        scope,
        bound: Vec::new(),
        checked_functions: HashSet::new(),
    };
    walk.node(root)?;
    if let Some(what) = not_boolean(root) {
        return Err(ExprError::Invalid(format!(
            "the condition must produce true or false, but it produces {what}"
        )));
    }
    Ok(())
}

/// Every `findings.<kind>[.<name>]` the expression reads, as written (`has()` included).
pub(super) fn findings_paths(root: &IdedExpr) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    collect_findings(root, &mut out);
    out
}

struct Walk {
    scope: Scope,
    /// Comprehension variables in scope (`x` in `list.exists(x, x > 1)`).
    bound: Vec<String>,
    checked_functions: HashSet<String>,
}

impl Walk {
    fn node(&mut self, e: &IdedExpr) -> Result<(), ExprError> {
        match &e.expr {
            Node::Unspecified | Node::Literal(_) => Ok(()),
            Node::Ident(name) => self.ident(name),
            Node::Select(select) => self.node(&select.operand),
            Node::Call(call) => {
                if is_named_function(&call.func_name)
                    && self.checked_functions.insert(call.func_name.clone())
                    && !function_exists(&call.func_name, call.target.is_some())
                {
                    return Err(ExprError::Invalid(format!(
                        "unknown function `{}` (see the CEL functions in docs/response-plans.md)",
                        call.func_name
                    )));
                }
                if let Some(target) = &call.target {
                    self.node(target)?;
                }
                call.args.iter().try_for_each(|a| self.node(a))
            }
            Node::List(list) => list.elements.iter().try_for_each(|a| self.node(a)),
            Node::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
                EntryExpr::StructField(field) => self.node(&field.value),
                EntryExpr::MapEntry(pair) => {
                    self.node(&pair.key)?;
                    self.node(&pair.value)
                }
            }),
            Node::Struct(s) => s.entries.iter().try_for_each(|entry| match &entry.expr {
                EntryExpr::StructField(field) => self.node(&field.value),
                EntryExpr::MapEntry(pair) => {
                    self.node(&pair.key)?;
                    self.node(&pair.value)
                }
            }),
            Node::Comprehension(c) => {
                self.node(&c.iter_range)?;
                self.node(&c.accu_init)?;
                let before = self.bound.len();
                self.bound.push(c.iter_var.clone());
                self.bound.extend(c.iter_var2.iter().cloned());
                self.bound.push(c.accu_var.clone());
                let inner = [&c.loop_cond, &c.loop_step, &c.result]
                    .into_iter()
                    .try_for_each(|part| self.node(part));
                self.bound.truncate(before);
                inner
            }
        }
    }

    fn ident(&self, name: &str) -> Result<(), ExprError> {
        if name.starts_with('@') || self.bound.iter().any(|b| b == name) || self.scope.allows(name)
        {
            return Ok(());
        }
        // Type names (`int`, `string`, ...) resolve on their own; anything else is unknown.
        if !undeclared(name, name) {
            return Ok(());
        }
        let hint = if name == "findings" {
            " (`findings` exists only in an action's `when`, after an investigation)".to_owned()
        } else {
            format!("; a condition here can use {}", self.scope.describe())
        };
        Err(ExprError::Invalid(format!(
            "unknown variable `{name}`{hint}"
        )))
    }
}

/// Whether `name` is a function written by the user (`size`, `contains`, `_size`) rather than
/// an operator the parser produced (`_==_`, `!_`, `-_`, `_[_]`, `@in`): every operator has a
/// character no identifier has, or starts with `@`.
fn is_named_function(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('@')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether the interpreter knows the function: calling it with a `null` argument (or on a
/// `null` receiver) fails with "no such overload" when it exists, "undeclared" when not.
fn function_exists(name: &str, member: bool) -> bool {
    let probe = if member {
        format!("null.{name}()")
    } else {
        format!("{name}(null)")
    };
    !undeclared(&probe, name)
}

/// Whether evaluating `source` with no variables fails because `name` is undeclared.
fn undeclared(source: &str, name: &str) -> bool {
    // Contained like every other use of the third-party interpreter (see `Expr::compile`).
    std::panic::catch_unwind(|| {
        let Ok(program) = cel::Program::compile(source) else {
            return false;
        };
        matches!(
            program.execute(&super::context()),
            Err(cel::ExecutionError::UndeclaredReference(n)) if n.as_str() == name
        )
    })
    .unwrap_or(false)
}

/// What the expression produces when that is certainly not a boolean.
fn not_boolean(e: &IdedExpr) -> Option<&'static str> {
    match &e.expr {
        Node::Literal(literal) => match literal {
            LiteralValue::Boolean(_) => None,
            LiteralValue::Bytes(_) => Some("bytes"),
            LiteralValue::Double(_) => Some("a number"),
            LiteralValue::Int(_) | LiteralValue::UInt(_) => Some("a number"),
            LiteralValue::Null => Some("null"),
            LiteralValue::String(_) => Some("a string"),
        },
        Node::List(_) => Some("a list"),
        Node::Map(_) | Node::Struct(_) => Some("a map"),
        // `map()` and `filter()` accumulate a list; `all()`/`exists()` a boolean.
        Node::Comprehension(c) if matches!(c.accu_init.expr, Node::List(_)) => Some("a list"),
        Node::Call(call) => match call.func_name.as_str() {
            "_+_" => Some("a sum or a concatenation"),
            "_-_" | "_*_" | "_/_" | "_%_" | "-_" => Some("a number"),
            "size" | "int" | "uint" | "double" => Some("a number"),
            "string" => Some("a string"),
            "bytes" => Some("bytes"),
            "type" => Some("a type"),
            "_?_:_" => match call.args.as_slice() {
                [_, yes, no] => not_boolean(yes).and(not_boolean(no)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn collect_findings(e: &IdedExpr, out: &mut Vec<Vec<String>>) {
    if let Some(path) = findings_path(e) {
        out.push(path);
        return;
    }
    match &e.expr {
        Node::Unspecified | Node::Literal(_) | Node::Ident(_) => {}
        Node::Select(select) => collect_findings(&select.operand, out),
        Node::Call(call) => {
            if let Some(target) = &call.target {
                collect_findings(target, out);
            }
            call.args.iter().for_each(|a| collect_findings(a, out));
        }
        Node::List(list) => list.elements.iter().for_each(|a| collect_findings(a, out)),
        Node::Map(map) => map
            .entries
            .iter()
            .for_each(|entry| entry_findings(&entry.expr, out)),
        Node::Struct(s) => s
            .entries
            .iter()
            .for_each(|entry| entry_findings(&entry.expr, out)),
        Node::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                collect_findings(part, out);
            }
        }
    }
}

fn entry_findings(entry: &EntryExpr, out: &mut Vec<Vec<String>>) {
    match entry {
        EntryExpr::StructField(field) => collect_findings(&field.value, out),
        EntryExpr::MapEntry(pair) => {
            collect_findings(&pair.key, out);
            collect_findings(&pair.value, out);
        }
    }
}

/// `findings.a.b.c` → `["a", "b"]` (the kind and the step name; deeper fields are the step's
/// own). `None` when `e` is not a select chain rooted at `findings`.
fn findings_path(e: &IdedExpr) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut current = e;
    loop {
        match &current.expr {
            Node::Select(select) => {
                fields.push(select.field.clone());
                current = &select.operand;
            }
            Node::Ident(name) if name == "findings" => break,
            _ => return None,
        }
    }
    fields.reverse();
    fields.truncate(2);
    Some(fields)
}
