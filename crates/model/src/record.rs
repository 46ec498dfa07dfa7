//! A ServiceNow record as the Table API returns it.
//!
//! Every value is a string on the wire. Reference fields come back in one of three shapes
//! depending on `sysparm_display_value` and `sysparm_exclude_reference_link`:
//! `"<sys_id>"`, `{"link": "...", "value": "<sys_id>"}` or
//! `{"display_value": "...", "value": "...", "link": "..."}`. [`FieldValue`] accepts all of
//! them, and anything else (numbers, booleans, null from a non-conforming peer) is kept as it
//! came rather than refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One field of a ServiceNow record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// A plain string value (the common case, and every non-reference field).
    Text(String),
    /// A reference or display-value object: `{value, link?, display_value?}`, or, with
    /// `sysparm_display_value=true`, `{display_value, link}` without the stored value.
    Reference {
        /// The stored value (a sys_id for references); `None` when only the display value was
        /// sent.
        value: Option<String>,
        /// The REST link to the referenced record, when the instance sent one.
        link: Option<String>,
        /// The human-readable value, with `sysparm_display_value=true|all`.
        display_value: Option<String>,
    },
    /// Any other JSON value, preserved untouched.
    Other(Value),
}

impl FieldValue {
    /// The stored value: the string itself, or the `value` member of an object.
    /// `None` for values that are neither (e.g. a JSON number from a non-conforming peer).
    pub fn value(&self) -> Option<&str> {
        match self {
            FieldValue::Text(s) => Some(s),
            FieldValue::Reference { value, .. } => value.as_deref(),
            FieldValue::Other(_) => None,
        }
    }

    /// The display value when the instance sent one, else the stored value.
    pub fn display(&self) -> Option<&str> {
        match self {
            FieldValue::Reference {
                display_value: Some(d),
                ..
            } => Some(d),
            other => other.value(),
        }
    }

    /// Converts any JSON value into a field value, never failing.
    pub fn from_json(value: Value) -> Self {
        match value {
            Value::String(s) => FieldValue::Text(s),
            Value::Object(mut map)
                if map.contains_key("value") || map.contains_key("display_value") =>
            {
                let take = |map: &mut serde_json::Map<String, Value>, key: &str| {
                    map.remove(key).and_then(|v| match v {
                        Value::String(s) => Some(s),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    })
                };
                let value = take(&mut map, "value");
                let link = take(&mut map, "link");
                let display_value = take(&mut map, "display_value");
                FieldValue::Reference {
                    value,
                    link,
                    display_value,
                }
            }
            other => FieldValue::Other(other),
        }
    }

    /// The JSON form, in the same shape it was read in.
    pub fn to_json(&self) -> Value {
        match self {
            FieldValue::Text(s) => Value::String(s.clone()),
            FieldValue::Reference {
                value,
                link,
                display_value,
            } => {
                let mut map = serde_json::Map::new();
                if let Some(d) = display_value {
                    map.insert("display_value".into(), Value::String(d.clone()));
                }
                if let Some(l) = link {
                    map.insert("link".into(), Value::String(l.clone()));
                }
                if let Some(v) = value {
                    map.insert("value".into(), Value::String(v.clone()));
                }
                Value::Object(map)
            }
            FieldValue::Other(v) => v.clone(),
        }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        FieldValue::Text(s.to_owned())
    }
}

impl From<String> for FieldValue {
    fn from(s: String) -> Self {
        FieldValue::Text(s)
    }
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Text(s) => serializer.serialize_str(s),
            other => other.to_json().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    /// Reads strings and `{value, link, display_value}` objects directly (no intermediate
    /// `Value`: this is the hot path of every Table API answer); anything else goes through
    /// [`FieldValue::from_json`], with the same result.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> serde::de::Visitor<'de> for FieldVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a ServiceNow field value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::Text(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<FieldValue, E> {
        Ok(FieldValue::Text(v))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Other(Value::Bool(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FieldValue, E> {
        Ok(FieldValue::Other(Value::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FieldValue, E> {
        Ok(FieldValue::Other(Value::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<FieldValue, E> {
        Ok(FieldValue::Other(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Other(Value::Null))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Other(Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<FieldValue, A::Error> {
        let items = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(FieldValue::Other(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FieldValue, A::Error> {
        // Collect the members; the common shapes have only string members.
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            members.insert(key, value);
        }
        Ok(FieldValue::from_json(Value::Object(members)))
    }
}

/// A record of any table: field name → value, unknown fields included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Record(BTreeMap<String, FieldValue>);

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// The raw field, in whatever shape it came.
    pub fn get(&self, field: &str) -> Option<&FieldValue> {
        self.0.get(field)
    }

    /// The stored value of a field (`""` and missing are different: missing is `None`).
    pub fn value(&self, field: &str) -> Option<&str> {
        self.0.get(field).and_then(FieldValue::value)
    }

    /// The stored value, or `""` when the field is missing.
    pub fn value_or_empty(&self, field: &str) -> &str {
        self.value(field).unwrap_or("")
    }

    /// The display value when present, else the stored value.
    pub fn display(&self, field: &str) -> Option<&str> {
        self.0.get(field).and_then(FieldValue::display)
    }

    /// Sets a field to a plain string value.
    pub fn set(&mut self, field: impl Into<String>, value: impl Into<FieldValue>) {
        self.0.insert(field.into(), value.into());
    }

    /// Removes a field, returning it.
    pub fn remove(&mut self, field: &str) -> Option<FieldValue> {
        self.0.remove(field)
    }

    /// Whether the record has the field at all.
    pub fn contains(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    /// Iterates over fields in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &FieldValue)> {
        self.0.iter()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the record has no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The record's `sys_id`, if present.
    pub fn sys_id(&self) -> Option<&str> {
        self.value("sys_id")
    }

    /// The record as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }
}

impl FromIterator<(String, FieldValue)> for Record {
    fn from_iter<T: IntoIterator<Item = (String, FieldValue)>>(iter: T) -> Self {
        Record(iter.into_iter().collect())
    }
}

impl<K: Into<String>, V: Into<FieldValue>> Extend<(K, V)> for Record {
    fn extend<T: IntoIterator<Item = (K, V)>>(&mut self, iter: T) {
        for (k, v) in iter {
            self.0.insert(k.into(), v.into());
        }
    }
}

impl IntoIterator for Record {
    type Item = (String, FieldValue);
    type IntoIter = std::collections::btree_map::IntoIter<String, FieldValue>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Whether `s` has the shape of a ServiceNow `sys_id`: 32 lowercase hexadecimal characters.
pub fn is_sys_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_reference_shape() {
        let json = r#"{
            "number": "INC0010001",
            "cmdb_ci": {"link": "https://x/api/now/table/cmdb_ci/abc", "value": "abc"},
            "assigned_to": {"display_value": "Beth Anglin", "value": "46d4"},
            "caller_id": "",
            "odd": 7
        }"#;
        let record: Record = serde_json::from_str(json).unwrap();
        assert_eq!(record.value("number"), Some("INC0010001"));
        assert_eq!(record.value("cmdb_ci"), Some("abc"));
        assert_eq!(record.display("assigned_to"), Some("Beth Anglin"));
        assert_eq!(record.value("assigned_to"), Some("46d4"));
        assert_eq!(record.value("caller_id"), Some(""));
        assert_eq!(record.value("odd"), None);
        assert_eq!(record.get("odd"), Some(&FieldValue::Other(Value::from(7))));
        assert_eq!(record.value("missing"), None);
    }

    #[test]
    fn display_only_references_have_a_display_but_no_value() {
        // sysparm_display_value=true on a real instance: `{display_value, link}`.
        let record: Record = serde_json::from_str(
            r#"{"assigned_to": {"display_value": "Beth Anglin", "link": "https://x/api/now/v1/table/sys_user/46d4"}}"#,
        )
        .unwrap();
        assert_eq!(record.display("assigned_to"), Some("Beth Anglin"));
        assert_eq!(record.value("assigned_to"), None);
    }

    #[test]
    fn round_trips_without_loss() {
        let json = r#"{"a":"1","b":{"link":"l","value":"v"},"c":{"display_value":"D","value":"v"},"e":{"display_value":"D","link":"l"},"d":[1,2]}"#;
        let record: Record = serde_json::from_str(json).unwrap();
        let back = serde_json::to_value(&record).unwrap();
        let original: Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn direct_decoding_matches_the_value_path() {
        let cases = [
            r#""plain""#,
            r#""""#,
            r#"{"link":"l","value":"v"}"#,
            r#"{"display_value":"D","value":"v"}"#,
            r#"{"display_value":"D","link":"l"}"#,
            r#"{"display_value":null,"value":"v"}"#,
            r#"{"value":7}"#,
            r#"{"other":"x"}"#,
            r#"{}"#,
            "7",
            "-3",
            "1.5",
            "true",
            "null",
            r#"[1,"a",{"b":2}]"#,
        ];
        for case in cases {
            let direct: FieldValue = serde_json::from_str(case).unwrap();
            let via_value = FieldValue::from_json(serde_json::from_str(case).unwrap());
            assert_eq!(direct, via_value, "{case}");
        }
    }

    #[test]
    fn sys_id_shape() {
        assert!(is_sys_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_sys_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_sys_id("0123"));
    }
}
