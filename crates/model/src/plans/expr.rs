//! CEL expressions in plans (`intake.when`, `actions[].when`).
//!
//! Expressions are compiled once when the configuration loads and evaluated against a small,
//! documented set of variables (see [`IncidentVars`]). An expression that does not produce a
//! boolean is an evaluation error, never a silent `false`.

mod check;

use std::{
    fmt,
    sync::{Arc, LazyLock},
};

use serde_json::Value as Json;

pub use check::{INCIDENT_VARIABLES, Scope};

use crate::incident::Incident;

/// CEL's standard library, built once: building it for every evaluation (what
/// `cel::Context::default()` does) took about 60 µs, fifty times the evaluation itself.
static STDLIB: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));

/// An evaluation context over the shared standard library.
fn context() -> cel::Context<'static, 'static> {
    cel::Context::with_env(Arc::clone(&STDLIB))
}

/// A compiled CEL expression with its source text.
#[derive(Clone)]
pub struct Expr {
    source: String,
    program: Arc<cel::Program>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why an expression could not be compiled or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// The expression does not parse.
    #[error("invalid CEL expression: {0}")]
    Syntax(String),
    /// The expression parses but would fail on every incident (unknown variable or function,
    /// a result that is not a boolean); found by [`Expr::compile_in`].
    #[error("invalid CEL expression: {0}")]
    Invalid(String),
    /// Evaluation failed (unknown variable, type mismatch, ...).
    #[error("CEL evaluation failed: {0}")]
    Evaluation(String),
    /// The expression produced something other than a boolean.
    #[error("CEL expression must produce true or false, it produced {0}")]
    NotBoolean(String),
}

impl Expr {
    /// Compiles `source`. Never panics, whatever the input.
    pub fn compile(source: &str) -> Result<Self, ExprError> {
        let trimmed = source.trim();
        if trimmed.is_empty() {
            return Err(ExprError::Syntax("empty expression".into()));
        }
        // The parser is third-party code; a panic on some odd input must not take the process
        // down with it, so it is contained here and reported as a syntax error.
        let compiled = std::panic::catch_unwind(|| cel::Program::compile(trimmed));
        match compiled {
            Ok(Ok(program)) => Ok(Expr {
                source: trimmed.to_owned(),
                program: Arc::new(program),
            }),
            Ok(Err(e)) => Err(ExprError::Syntax(first_line(&e.to_string()))),
            Err(_) => Err(ExprError::Syntax(
                "the expression could not be parsed".into(),
            )),
        }
    }

    /// Compiles `source` as a condition written in `scope`, and refuses what would fail on
    /// every incident: unknown variables and functions, and results that are not booleans.
    pub fn compile_in(source: &str, scope: Scope) -> Result<Self, ExprError> {
        let expr = Expr::compile(source)?;
        check::check(expr.program.expression(), scope)?;
        Ok(expr)
    }

    /// Every `findings.<kind>.<name>` the expression reads, as `[kind, name]` (shorter when
    /// the expression stops earlier), for checking against the plan's steps.
    pub fn findings_paths(&self) -> Vec<Vec<String>> {
        check::findings_paths(self.program.expression())
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression is literally `false` (a plan that can never match).
    pub fn is_constant_false(&self) -> bool {
        self.source == "false"
    }

    /// Evaluates to a boolean with the given variables.
    pub fn evaluate(&self, vars: &[(&str, &Json)]) -> Result<bool, ExprError> {
        let mut context = context();
        for (name, value) in vars {
            context.add_variable_from_value(*name, to_cel(value));
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.program.execute(&context)
        }));
        match result {
            Ok(Ok(cel::Value::Bool(b))) => Ok(b),
            Ok(Ok(other)) => Err(ExprError::NotBoolean(format!("{:?}", other.type_of()))),
            Ok(Err(e)) => Err(ExprError::Evaluation(first_line(&e.to_string()))),
            Err(_) => Err(ExprError::Evaluation("the expression failed".into())),
        }
    }
}

/// JSON → CEL, with every integer as CEL `int` (serde's path would make non-negative numbers
/// `uint`, and `priority + 1` would then be a type error).
fn to_cel(value: &Json) -> cel::Value {
    match value {
        Json::Null => cel::Value::Null,
        Json::Bool(b) => cel::Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => cel::Value::from(s.clone()),
        Json::Array(items) => cel::Value::from(items.iter().map(to_cel).collect::<Vec<_>>()),
        Json::Object(map) => cel::Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), to_cel(v)))
                .collect::<std::collections::HashMap<String, cel::Value>>(),
        ),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_owned()
}

/// The variables an `intake.when` (and an action's `when`) sees:
///
/// - `incident`: every field's stored value as a string (`incident.category == "software"`);
/// - `display`: every field's display value where ServiceNow sent one, else its value
///   (`display.assignment_group == "Platform SRE"`);
/// - `priority`, `impact`, `urgency`: integers (0 when unknown);
/// - `state`: the state label in snake case (`"new"`, `"in_progress"`, `"on_hold"`, ...);
/// - `title`: the short description.
///
/// Actions additionally see `findings` (see the worker's investigation steps).
#[derive(Debug, Clone)]
pub struct IncidentVars {
    incident: Json,
    display: Json,
    priority: Json,
    impact: Json,
    urgency: Json,
    state: Json,
    title: Json,
}

impl IncidentVars {
    /// Builds the variables of `incident`.
    pub fn new(incident: &Incident) -> Self {
        let mut values = serde_json::Map::new();
        let mut display = serde_json::Map::new();
        for (name, field) in incident.record.iter() {
            if let Some(v) = field.value() {
                values.insert(name.clone(), Json::String(v.to_owned()));
            }
            if let Some(d) = field.display() {
                display.insert(name.clone(), Json::String(d.to_owned()));
            }
        }
        let number = |n: Option<u8>| Json::from(n.map(i64::from).unwrap_or(0));
        IncidentVars {
            incident: Json::Object(values),
            display: Json::Object(display),
            priority: number(incident.priority().map(|p| p.number())),
            impact: number(incident.impact().map(|p| p.number())),
            urgency: number(incident.urgency().map(|p| p.number())),
            state: Json::String(snake(&incident.state().label())),
            title: Json::String(incident.short_description().to_owned()),
        }
    }

    /// Variables for an incident no expression will look at: nothing is copied. Building the
    /// real variables copies every field twice, so callers skip it when no `when` applies.
    pub fn empty() -> Self {
        IncidentVars {
            incident: Json::Null,
            display: Json::Null,
            priority: Json::Null,
            impact: Json::Null,
            urgency: Json::Null,
            state: Json::Null,
            title: Json::Null,
        }
    }

    /// Real variables when `needed`, else [`IncidentVars::empty`].
    pub fn when_needed(incident: &Incident, needed: bool) -> Self {
        if needed {
            IncidentVars::new(incident)
        } else {
            IncidentVars::empty()
        }
    }

    /// The variables as name/value pairs, plus `extra` ones (e.g. `findings`).
    pub fn with<'a>(&'a self, extra: &[(&'a str, &'a Json)]) -> Vec<(&'a str, &'a Json)> {
        let mut vars = vec![
            ("incident", &self.incident),
            ("display", &self.display),
            ("priority", &self.priority),
            ("impact", &self.impact),
            ("urgency", &self.urgency),
            ("state", &self.state),
            ("title", &self.title),
        ];
        vars.extend_from_slice(extra);
        vars
    }
}

fn snake(label: &str) -> String {
    label.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    fn incident() -> Incident {
        let rec: Record = serde_json::from_value(serde_json::json!({
            "priority": "2", "state": "2", "category": "software",
            "short_description": "Checkout latency high",
            "assignment_group": {"display_value": "Platform SRE", "value": "abc"}
        }))
        .unwrap();
        Incident::from(rec)
    }

    #[test]
    fn evaluates_against_incident_variables() {
        let vars = IncidentVars::new(&incident());
        let cases = [
            ("priority <= 2", true),
            ("incident.category == \"software\"", true),
            ("display.assignment_group == \"Platform SRE\"", true),
            ("incident.assignment_group == \"abc\"", true),
            ("state == \"in_progress\"", true),
            ("title.contains(\"latency\")", true),
            ("priority == 1 || impact == 1", false),
        ];
        for (src, want) in cases {
            let e = Expr::compile(src).unwrap();
            assert_eq!(e.evaluate(&vars.with(&[])).unwrap(), want, "{src}");
        }
    }

    #[test]
    fn errors_are_typed_not_panics() {
        assert!(matches!(Expr::compile(""), Err(ExprError::Syntax(_))));
        assert!(matches!(
            Expr::compile("priority ==="),
            Err(ExprError::Syntax(_))
        ));
        for garbage in [
            "((((",
            "\"unterminated",
            "1 +",
            "a.b.c(",
            "[1,2",
            "}{",
            "\u{0}",
        ] {
            assert!(Expr::compile(garbage).is_err(), "{garbage}");
        }
        let vars = IncidentVars::new(&incident());
        let e = Expr::compile("priority + 1").unwrap();
        assert!(matches!(
            e.evaluate(&vars.with(&[])),
            Err(ExprError::NotBoolean(_))
        ));
        let e = Expr::compile("priority + 1 == 3").unwrap();
        assert!(e.evaluate(&vars.with(&[])).unwrap());
        let e = Expr::compile("nonexistent == 1").unwrap();
        assert!(matches!(
            e.evaluate(&vars.with(&[])),
            Err(ExprError::Evaluation(_))
        ));
        let e = Expr::compile("incident.missing_field == \"x\"").unwrap();
        assert!(e.evaluate(&vars.with(&[])).is_err());
    }

    #[test]
    fn findings_are_visible_to_action_conditions() {
        let vars = IncidentVars::new(&incident());
        let findings =
            serde_json::json!({"probe": {"checkout": {"ok": true}}, "related": {"changes": []}});
        let e = Expr::compile("findings.probe.checkout.ok && size(findings.related.changes) == 0")
            .unwrap();
        assert!(e.evaluate(&vars.with(&[("findings", &findings)])).unwrap());
    }
}
