//! nowpilot's shared vocabulary.
//!
//! Everything that crosses a process or crate boundary is defined here, and nothing here does
//! I/O: the ServiceNow record shape ([`record`]), the incident's typed fields ([`incident`]),
//! the payload the ServiceNow business rule sends ([`callback`]), the envelope that travels
//! through the queue ([`event`]) and ServiceNow's date format ([`time`]).
//!
//! ServiceNow sends every value as a string, and reference fields as a plain value, as
//! `{link, value}` or as `{display_value, value}`; the types here accept all of them and keep
//! fields they do not know, so that a record read and written back loses nothing.

pub mod callback;
pub mod duration;
pub mod event;
pub mod incident;
pub mod partition;
pub mod plans;
pub mod record;
pub mod time;

pub use callback::{CallbackError, CallbackPayload, Operation};
pub use event::{EventEnvelope, EventId, EventSource};
pub use incident::{Impact, Incident, Priority, PriorityMatrix, State, Urgency};
pub use record::{FieldValue, Record, is_sys_id};
