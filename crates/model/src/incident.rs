//! The incident table's typed fields: state, priority, impact, urgency and the priority matrix.
//!
//! Values follow ServiceNow's out-of-the-box choices (see `shared/reference/servicenow.md`
//! §2.2–2.3). Instances can carry other values (legacy states 4 and 5 on upgraded instances,
//! custom choices); those are preserved as [`State::Other`], never rejected.

use std::{borrow::Cow, fmt};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::record::Record;

/// The incident's lifecycle state (`state` field).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    /// `1`
    New,
    /// `2`
    InProgress,
    /// `3`
    OnHold,
    /// `6`
    Resolved,
    /// `7`
    Closed,
    /// `8`
    Canceled,
    /// Any other stored value, kept verbatim (legacy `4`/`5`, custom states).
    Other(String),
}

impl State {
    /// Parses the stored value. Never fails: unknown values become [`State::Other`].
    pub fn from_value(value: &str) -> Self {
        match value.trim() {
            "1" => State::New,
            "2" => State::InProgress,
            "3" => State::OnHold,
            "6" => State::Resolved,
            "7" => State::Closed,
            "8" => State::Canceled,
            other => State::Other(other.to_owned()),
        }
    }

    /// The stored value ServiceNow uses for this state.
    pub fn as_value(&self) -> Cow<'_, str> {
        match self {
            State::New => "1".into(),
            State::InProgress => "2".into(),
            State::OnHold => "3".into(),
            State::Resolved => "6".into(),
            State::Closed => "7".into(),
            State::Canceled => "8".into(),
            State::Other(v) => Cow::Borrowed(v),
        }
    }

    /// The out-of-the-box label.
    pub fn label(&self) -> Cow<'_, str> {
        match self {
            State::New => "New".into(),
            State::InProgress => "In Progress".into(),
            State::OnHold => "On Hold".into(),
            State::Resolved => "Resolved".into(),
            State::Closed => "Closed".into(),
            State::Canceled => "Canceled".into(),
            State::Other(v) => format!("state {v}").into(),
        }
    }

    /// Parses a value or a label (case-insensitive, spaces and underscores ignored), as config
    /// files name states: `"in_progress"`, `"In Progress"` or `"2"`.
    pub fn parse_name(name: &str) -> Option<Self> {
        let norm: String = name
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect();
        Some(match norm.as_str() {
            "1" | "new" => State::New,
            "2" | "inprogress" | "active" => State::InProgress,
            "3" | "onhold" => State::OnHold,
            "6" | "resolved" => State::Resolved,
            "7" | "closed" => State::Closed,
            "8" | "canceled" | "cancelled" => State::Canceled,
            other if !other.is_empty() && other.bytes().all(|b| b.is_ascii_digit()) => {
                State::Other(other.to_owned())
            }
            _ => return None,
        })
    }

    /// Whether the incident is finished (Resolved, Closed or Canceled).
    pub fn is_terminal(&self) -> bool {
        matches!(self, State::Resolved | State::Closed | State::Canceled)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_value())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        State::parse_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown incident state {s:?}")))
    }
}

/// Defines a small numeric-choice enum with parse/format/serde helpers.
macro_rules! numeric_choice {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $num:literal, $label:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $num ),+
        }

        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The numeric value.
            pub fn number(self) -> u8 {
                self as u8
            }

            /// Parses a number.
            pub fn from_number(n: u8) -> Option<Self> {
                match n {
                    $( $num => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// Parses the stored string value (`"1"`, ...). `None` for anything else.
            pub fn from_value(value: &str) -> Option<Self> {
                value.trim().parse::<u8>().ok().and_then(Self::from_number)
            }

            /// Parses a stored value or a label, case-insensitively (`"2"`, `"High"`).
            pub fn parse_name(name: &str) -> Option<Self> {
                if let Some(v) = Self::from_value(name) {
                    return Some(v);
                }
                let n = name.trim();
                $( if n.eq_ignore_ascii_case($label) { return Some($name::$variant); } )+
                None
            }

            /// The stored string value.
            pub fn as_value(self) -> &'static str {
                match self { $( $name::$variant => stringify!($num), )+ }
            }

            /// The out-of-the-box label.
            pub fn label(self) -> &'static str {
                match self { $( $name::$variant => $label, )+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} - {}", self.number(), self.label())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_u8(self.number())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // A visitor rather than an untagged enum: a wrong value or type is reported
                // with what was written and what is accepted.
                struct Choice;
                const ACCEPTED: &str = concat!(
                    "use ", $( stringify!($num), " (", $label, ")", ", ", )+ "or the label"
                );
                impl serde::de::Visitor<'_> for Choice {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {} number or label", stringify!($name).to_lowercase())
                    }
                    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<$name, E> {
                        u8::try_from(n).ok().and_then($name::from_number).ok_or_else(|| {
                            E::custom(format!("{n} is not a {}: {ACCEPTED}", stringify!($name).to_lowercase()))
                        })
                    }
                    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<$name, E> {
                        u64::try_from(n).map_or_else(
                            |_| Err(E::custom(format!("{n} is not a {}: {ACCEPTED}", stringify!($name).to_lowercase()))),
                            |n| self.visit_u64(n),
                        )
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::parse_name(s).ok_or_else(|| {
                            E::custom(format!("{s:?} is not a {}: {ACCEPTED}", stringify!($name).to_lowercase()))
                        })
                    }
                }
                d.deserialize_any(Choice)
            }
        }
    };
}

numeric_choice! {
    /// Incident priority (`priority`), computed by ServiceNow from impact × urgency.
    Priority {
        /// `1 - Critical`
        Critical = 1, "Critical",
        /// `2 - High`
        High = 2, "High",
        /// `3 - Moderate`
        Moderate = 3, "Moderate",
        /// `4 - Low`
        Low = 4, "Low",
        /// `5 - Planning`
        Planning = 5, "Planning",
    }
}

numeric_choice! {
    /// Incident impact (`impact`).
    Impact {
        /// `1 - High`
        High = 1, "High",
        /// `2 - Medium`
        Medium = 2, "Medium",
        /// `3 - Low`
        Low = 3, "Low",
    }
}

numeric_choice! {
    /// Incident urgency (`urgency`).
    Urgency {
        /// `1 - High`
        High = 1, "High",
        /// `2 - Medium`
        Medium = 2, "Medium",
        /// `3 - Low`
        Low = 3, "Low",
    }
}

/// The priority lookup: impact × urgency → priority (ServiceNow's `dl_u_priority`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityMatrix {
    /// `cells[impact - 1][urgency - 1]`.
    cells: [[Priority; 3]; 3],
}

impl Default for PriorityMatrix {
    /// The out-of-the-box matrix: (1,1)→1, (1,2)→2, (1,3)→3, (2,1)→2, (2,2)→3, (2,3)→4,
    /// (3,1)→3, (3,2)→4, (3,3)→5.
    fn default() -> Self {
        use Priority::*;
        PriorityMatrix {
            cells: [
                [Critical, High, Moderate],
                [High, Moderate, Low],
                [Moderate, Low, Planning],
            ],
        }
    }
}

impl PriorityMatrix {
    /// A matrix from explicit rows (`rows[impact-1][urgency-1]`), e.g. read from an instance.
    pub fn from_cells(cells: [[Priority; 3]; 3]) -> Self {
        PriorityMatrix { cells }
    }

    /// The priority ServiceNow computes for this impact and urgency.
    pub fn priority(&self, impact: Impact, urgency: Urgency) -> Priority {
        self.cells[usize::from(impact.number() - 1)][usize::from(urgency.number() - 1)]
    }

    /// Every (impact, urgency) pair that yields `target`.
    pub fn pairs_for(&self, target: Priority) -> Vec<(Impact, Urgency)> {
        Impact::ALL
            .iter()
            .flat_map(|&i| Urgency::ALL.iter().map(move |&u| (i, u)))
            .filter(|&(i, u)| self.priority(i, u) == target)
            .collect()
    }

    /// The pair to write to reach `target` while changing as little as possible: keep the
    /// current impact if some urgency reaches the target, else keep the current urgency, else the
    /// pair with the highest impact. `None` when no pair reaches the target.
    pub fn choose(
        &self,
        target: Priority,
        current_impact: Option<Impact>,
        current_urgency: Option<Urgency>,
    ) -> Option<(Impact, Urgency)> {
        let pairs = self.pairs_for(target);
        if let Some(&(i, u)) = pairs
            .iter()
            .find(|(i, u)| Some(*i) == current_impact && Some(*u) == current_urgency)
        {
            return Some((i, u));
        }
        pairs
            .iter()
            .find(|(i, _)| Some(*i) == current_impact)
            .or_else(|| pairs.iter().find(|(_, u)| Some(*u) == current_urgency))
            .or_else(|| pairs.first())
            .copied()
    }
}

/// An incident record with typed accessors. Unknown fields stay in [`Incident::record`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incident {
    /// Every field as ServiceNow sent it.
    pub record: Record,
}

impl From<Record> for Incident {
    fn from(record: Record) -> Self {
        Incident { record }
    }
}

impl Incident {
    /// `sys_id`, or `""` when missing.
    pub fn sys_id(&self) -> &str {
        self.record.value_or_empty("sys_id")
    }

    /// `number` (INC…), or `""` when missing.
    pub fn number(&self) -> &str {
        self.record.value_or_empty("number")
    }

    /// `short_description`.
    pub fn short_description(&self) -> &str {
        self.record.value_or_empty("short_description")
    }

    /// `state`; a missing state reads as `Other("")`.
    pub fn state(&self) -> State {
        State::from_value(self.record.value_or_empty("state"))
    }

    /// `priority`, when it holds a known value.
    pub fn priority(&self) -> Option<Priority> {
        self.record.value("priority").and_then(Priority::from_value)
    }

    /// `impact`, when it holds a known value.
    pub fn impact(&self) -> Option<Impact> {
        self.record.value("impact").and_then(Impact::from_value)
    }

    /// `urgency`, when it holds a known value.
    pub fn urgency(&self) -> Option<Urgency> {
        self.record.value("urgency").and_then(Urgency::from_value)
    }

    /// `sys_mod_count` as a number; 0 when missing or malformed.
    pub fn mod_count(&self) -> u64 {
        self.record
            .value("sys_mod_count")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `sys_updated_by` (a user name).
    pub fn updated_by(&self) -> &str {
        self.record.value_or_empty("sys_updated_by")
    }

    /// `sys_updated_on`, parsed.
    pub fn updated_on(&self) -> Option<DateTime<Utc>> {
        self.record
            .value("sys_updated_on")
            .and_then(crate::time::parse_glide)
    }

    /// `opened_at`, parsed.
    pub fn opened_at(&self) -> Option<DateTime<Utc>> {
        self.record
            .value("opened_at")
            .and_then(crate::time::parse_glide)
    }

    /// The stored value of any field (reference fields give the sys_id).
    pub fn field(&self, name: &str) -> &str {
        self.record.value_or_empty(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_keep_unknown_values() {
        for v in ["1", "2", "3", "6", "7", "8", "4", "-5", "42"] {
            assert_eq!(State::from_value(v).as_value(), v);
        }
        assert_eq!(State::from_value("4"), State::Other("4".into()));
        assert_eq!(State::parse_name("In Progress"), Some(State::InProgress));
        assert_eq!(State::parse_name("on_hold"), Some(State::OnHold));
        assert_eq!(State::parse_name("bogus"), None);
    }

    #[test]
    fn default_matrix_matches_servicenow() {
        let m = PriorityMatrix::default();
        let expect = [
            (1, 1, 1),
            (1, 2, 2),
            (1, 3, 3),
            (2, 1, 2),
            (2, 2, 3),
            (2, 3, 4),
            (3, 1, 3),
            (3, 2, 4),
            (3, 3, 5),
        ];
        for (i, u, p) in expect {
            let got = m.priority(
                Impact::from_number(i).unwrap(),
                Urgency::from_number(u).unwrap(),
            );
            assert_eq!(got.number(), p, "impact {i} urgency {u}");
        }
    }

    #[test]
    fn choose_prefers_keeping_impact() {
        let m = PriorityMatrix::default();
        // Currently impact 2 / urgency 3 (priority 4); raise to 2: keep impact 2, urgency 1.
        let got = m.choose(Priority::High, Some(Impact::Medium), Some(Urgency::Low));
        assert_eq!(got, Some((Impact::Medium, Urgency::High)));
        // Impact 3 can't reach 1; urgency 1 can: keep urgency.
        let got = m.choose(Priority::Critical, Some(Impact::Low), Some(Urgency::High));
        assert_eq!(got, Some((Impact::High, Urgency::High)));
        // Already there.
        let got = m.choose(
            Priority::Moderate,
            Some(Impact::Medium),
            Some(Urgency::Medium),
        );
        assert_eq!(got, Some((Impact::Medium, Urgency::Medium)));
    }

    #[test]
    fn every_priority_is_reachable_with_the_default_matrix() {
        let m = PriorityMatrix::default();
        for &p in Priority::ALL {
            let (i, u) = m.choose(p, None, None).unwrap();
            assert_eq!(m.priority(i, u), p);
        }
    }

    #[test]
    fn priorities_parse_from_config_forms() {
        assert_eq!(Priority::parse_name("2"), Some(Priority::High));
        assert_eq!(Priority::parse_name("high"), Some(Priority::High));
        assert_eq!(Priority::parse_name("6"), None);
        let p: Priority = serde_json::from_str("1").unwrap();
        assert_eq!(p, Priority::Critical);
        let p: Priority = serde_json::from_str("\"Low\"").unwrap();
        assert_eq!(p, Priority::Low);
        assert!(serde_json::from_str::<Priority>("9").is_err());
    }

    #[test]
    fn incident_accessors_tolerate_garbage() {
        let rec: Record = serde_json::from_str(
            r#"{"state":"x","priority":"9","sys_mod_count":"abc","opened_at":"yesterday"}"#,
        )
        .unwrap();
        let inc = Incident::from(rec);
        assert_eq!(inc.state(), State::Other("x".into()));
        assert_eq!(inc.priority(), None);
        assert_eq!(inc.mod_count(), 0);
        assert_eq!(inc.opened_at(), None);
        assert_eq!(inc.sys_id(), "");
    }
}
