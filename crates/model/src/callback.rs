//! The JSON body nowpilot's ServiceNow business rule sends (schema version 1).
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "instance": "dev12345",
//!   "table": "incident",
//!   "operation": "update",
//!   "sys_id": "9d385017c611228701d22104cc95c371",
//!   "sys_mod_count": "4",
//!   "sys_updated_on": "2026-05-01 10:00:00",
//!   "sys_updated_by": "beth.anglin",
//!   "record": { "number": "INC0010001", "state": "2", "priority": "2", "...": "..." }
//! }
//! ```
//!
//! Required: `schema_version` (1), `table`, `sys_id` (32 lowercase hex), `sys_mod_count` (a
//! non-negative integer, as a string or a number). Everything else is optional, and fields this
//! version does not know are kept in [`CallbackPayload::extra`] and passed on unchanged.
//! `docs/callback-payload.md` is the user-facing description of this contract.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::record::{Record, is_sys_id};

/// The payload schema versions this build accepts.
pub const SUPPORTED_SCHEMA_VERSIONS: &[u64] = &[1];

/// What the record operation was (`current.operation()` in the business rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// The record was created.
    Insert,
    /// The record was updated.
    Update,
    /// The record was deleted.
    Delete,
    /// Any other value, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// A validated callback payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackPayload {
    /// Payload schema version (1).
    pub schema_version: u64,
    /// `gs.getProperty('instance_name')`; empty when not sent.
    #[serde(default)]
    pub instance: String,
    /// The table of the record (`incident`).
    pub table: String,
    /// The record operation.
    #[serde(default = "default_operation")]
    pub operation: Operation,
    /// The record's sys_id.
    pub sys_id: String,
    /// The record's version.
    pub sys_mod_count: u64,
    /// `sys_updated_on` as sent (UTC, `yyyy-MM-dd HH:mm:ss`).
    #[serde(default)]
    pub sys_updated_on: String,
    /// `sys_updated_by`: the user name whose change fired the rule.
    #[serde(default)]
    pub sys_updated_by: String,
    /// The record's field values as strings.
    #[serde(default)]
    pub record: Record,
    /// Fields this version does not know, kept and passed on.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_operation() -> Operation {
    Operation::Update
}

/// Why a callback body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallbackError {
    /// The body is not JSON (or is too deeply nested to parse).
    #[error("body is not valid JSON: {0}")]
    Malformed(String),
    /// The body is JSON, but not an object.
    #[error("body must be a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// A field has the wrong type or an invalid value.
    #[error("field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The schema version is not one this build understands.
    #[error("unsupported schema_version {0} (supported: 1)")]
    UnsupportedSchema(String),
}

impl CallbackError {
    /// Whether the body was not JSON at all (HTTP 400) rather than JSON with missing or
    /// invalid fields (HTTP 422).
    pub fn is_malformed(&self) -> bool {
        matches!(self, CallbackError::Malformed(_))
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CallbackError::Malformed(_) => "malformed_json",
            CallbackError::NotAnObject => "not_an_object",
            CallbackError::Missing(_) => "missing_field",
            CallbackError::Invalid { .. } => "invalid_field",
            CallbackError::UnsupportedSchema(_) => "unsupported_schema_version",
        }
    }
}

impl CallbackPayload {
    /// Parses and validates a raw body.
    pub fn parse(body: &[u8]) -> Result<Self, CallbackError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| CallbackError::Malformed(e.to_string()))?;
        Self::from_value(value)
    }

    /// Validates an already-parsed JSON value.
    pub fn from_value(value: Value) -> Result<Self, CallbackError> {
        let Value::Object(mut map) = value else {
            return Err(CallbackError::NotAnObject);
        };

        let schema_version = match map.remove("schema_version") {
            None | Some(Value::Null) => return Err(CallbackError::Missing("schema_version")),
            Some(v) => {
                let n = as_u64(&v).ok_or_else(|| CallbackError::Invalid {
                    field: "schema_version",
                    reason: "expected an integer".into(),
                })?;
                if !SUPPORTED_SCHEMA_VERSIONS.contains(&n) {
                    return Err(CallbackError::UnsupportedSchema(n.to_string()));
                }
                n
            }
        };
        let table = required_string(&mut map, "table")?;
        if table.is_empty() {
            return Err(CallbackError::Invalid {
                field: "table",
                reason: "must not be empty".into(),
            });
        }
        let sys_id = required_string(&mut map, "sys_id")?;
        if !is_sys_id(&sys_id) {
            return Err(CallbackError::Invalid {
                field: "sys_id",
                reason: "expected 32 lowercase hexadecimal characters".into(),
            });
        }
        let sys_mod_count = match map.remove("sys_mod_count") {
            None | Some(Value::Null) => return Err(CallbackError::Missing("sys_mod_count")),
            Some(v) => as_u64(&v).ok_or_else(|| CallbackError::Invalid {
                field: "sys_mod_count",
                reason: "expected a non-negative integer".into(),
            })?,
        };
        let instance = optional_string(&mut map, "instance")?;
        let sys_updated_on = optional_string(&mut map, "sys_updated_on")?;
        let sys_updated_by = optional_string(&mut map, "sys_updated_by")?;
        let operation = match optional_string(&mut map, "operation")?.as_str() {
            "" | "update" => Operation::Update,
            "insert" => Operation::Insert,
            "delete" => Operation::Delete,
            other => Operation::Other(other.to_owned()),
        };
        let record = match map.remove("record") {
            None | Some(Value::Null) => Record::new(),
            Some(Value::Object(fields)) => fields
                .into_iter()
                .map(|(k, v)| (k, crate::record::FieldValue::from_json(v)))
                .collect(),
            Some(_) => {
                return Err(CallbackError::Invalid {
                    field: "record",
                    reason: "expected an object of field values".into(),
                });
            }
        };

        Ok(CallbackPayload {
            schema_version,
            instance,
            table,
            operation,
            sys_id,
            sys_mod_count,
            sys_updated_on,
            sys_updated_by,
            record,
            extra: map,
        })
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn required_string(
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<String, CallbackError> {
    match map.remove(field) {
        None | Some(Value::Null) => Err(CallbackError::Missing(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(CallbackError::Invalid {
            field,
            reason: "expected a string".into(),
        }),
    }
}

fn optional_string(
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<String, CallbackError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(CallbackError::Invalid {
            field,
            reason: "expected a string".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_ID: &str = "9d385017c611228701d22104cc95c371";

    fn body(extra: &str) -> String {
        format!(
            r#"{{"schema_version":1,"table":"incident","sys_id":"{SYS_ID}","sys_mod_count":"4"{extra}}}"#
        )
    }

    #[test]
    fn parses_minimal_and_keeps_unknown_fields() {
        let p = CallbackPayload::parse(
            body(r#","record":{"number":"INC1"},"future_field":{"x":1}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(p.sys_mod_count, 4);
        assert_eq!(p.record.value("number"), Some("INC1"));
        assert_eq!(
            p.extra.get("future_field"),
            Some(&serde_json::json!({"x":1}))
        );
        assert_eq!(p.operation, Operation::Update);
        // The serialized form carries the unknown field at top level again.
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["future_field"]["x"], 1);
        let back: CallbackPayload = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn refusals_are_classified() {
        let cases: &[(&str, &str)] = &[
            ("{", "malformed_json"),
            ("[]", "not_an_object"),
            (r#"{"table":"incident"}"#, "missing_field"),
            (
                &body("").replace(r#""schema_version":1"#, r#""schema_version":9"#),
                "unsupported_schema_version",
            ),
            (&body("").replace(SYS_ID, "nope"), "invalid_field"),
            (
                &body("").replace(r#""sys_mod_count":"4""#, r#""sys_mod_count":"-1""#),
                "invalid_field",
            ),
            (&body(r#","record":"x""#), "invalid_field"),
        ];
        for (input, code) in cases {
            let err = CallbackPayload::parse(input.as_bytes()).unwrap_err();
            assert_eq!(err.code(), *code, "{input}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = "[".repeat(100_000);
        let err = CallbackPayload::parse(deep.as_bytes()).unwrap_err();
        assert!(err.is_malformed());
    }
}
