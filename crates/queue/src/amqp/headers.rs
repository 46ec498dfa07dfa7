//! Message headers nowpilot reads and writes (the names are part of the wire contract), and the
//! properties of what it publishes.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// How many retry tiers the message went through.
pub const ATTEMPT: &str = "x-nowpilot-attempt";
/// The dead-letter reason code.
pub const REASON: &str = "x-nowpilot-reason";
/// The dead-letter error text (at most 1 KiB).
pub const ERROR: &str = "x-nowpilot-error";
/// When the message was dead-lettered (RFC 3339).
pub const DEAD_AT: &str = "x-nowpilot-dead-at";
/// Why the message was sent to a retry tier.
pub const RETRY_REASON: &str = "x-nowpilot-retry-reason";
/// The retry tier the headers exchange routes on.
pub const TIER: &str = "tier";
/// The quorum queue's delivery counter (set by the broker on redelivery).
pub const DELIVERY_COUNT: &str = "x-delivery-count";
/// The broker's dead-lettering history.
pub const X_DEATH: &str = "x-death";

/// The `app_id` of everything nowpilot publishes.
pub const APP_ID: &str = "nowpilot";
/// The content type of an event envelope.
pub const CONTENT_TYPE: &str = "application/json";

/// An integer header of any AMQP integer type, as u32 (negative or too large: `None`).
pub(crate) fn int_value(value: &AMQPValue) -> Option<u32> {
    let wide: i64 = match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok()?,
        _ => return None,
    };
    u32::try_from(wide).ok()
}

/// A string header (long or short string), lossily decoded.
pub(crate) fn string_value(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(v) => Some(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        AMQPValue::ShortString(v) => Some(v.as_str().to_owned()),
        _ => None,
    }
}

/// The header `name` of `properties`.
pub(crate) fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(name)
}

/// The integer header `name`.
pub(crate) fn int_header(properties: &BasicProperties, name: &str) -> Option<u32> {
    header(properties, name).and_then(int_value)
}

/// The string header `name`.
pub(crate) fn string_header(properties: &BasicProperties, name: &str) -> Option<String> {
    header(properties, name).and_then(string_value)
}

/// The first `x-death` entry (the most recent dead-lettering): its reason and time.
pub(crate) fn first_death(
    properties: &BasicProperties,
) -> Option<(Option<String>, Option<DateTime<Utc>>)> {
    let AMQPValue::FieldArray(deaths) = header(properties, X_DEATH)? else {
        return None;
    };
    let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else {
        return None;
    };
    let reason = death.inner().get("reason").and_then(string_value);
    let time = match death.inner().get("time") {
        Some(AMQPValue::Timestamp(secs)) => i64::try_from(*secs)
            .ok()
            .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0)),
        _ => None,
    };
    Some((reason, time))
}

/// A long-string header value.
pub(crate) fn long(value: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.into()))
}

/// The properties of a fresh event publish: persistent, JSON, id = event id, attempt 0.
pub(crate) fn event_properties(message_id: ShortString) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ATTEMPT.into(), AMQPValue::LongLongInt(0));
    BasicProperties::default()
        // 2 = persistent: written to disk (quorum queues always are, but say it).
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(message_id)
        .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or(0))
        .with_app_id(APP_ID.into())
        .with_headers(headers)
}

/// A copy of a delivered message's properties for re-publishing, with `changes` applied to its
/// headers. The broker's own delivery counter is dropped: the copy is a new message.
pub(crate) fn copied_properties(
    original: &BasicProperties,
    changes: impl IntoIterator<Item = (&'static str, AMQPValue)>,
) -> BasicProperties {
    let mut headers: FieldTable = original
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter(|(k, _)| k.as_str() != DELIVERY_COUNT)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into()
        })
        .unwrap_or_default();
    for (key, value) in changes {
        headers.insert(key.into(), value);
    }
    original
        .clone()
        .with_delivery_mode(2)
        .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or(0))
        .with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_headers_of_every_width() {
        assert_eq!(int_value(&AMQPValue::LongLongInt(3)), Some(3));
        assert_eq!(int_value(&AMQPValue::ShortShortUInt(7)), Some(7));
        assert_eq!(int_value(&AMQPValue::LongInt(-1)), None);
        assert_eq!(int_value(&long("3")), None);
    }

    #[test]
    fn copies_replace_headers_and_drop_the_delivery_count() {
        let mut headers = FieldTable::default();
        headers.insert(DELIVERY_COUNT.into(), AMQPValue::LongInt(4));
        headers.insert(ATTEMPT.into(), AMQPValue::LongLongInt(1));
        headers.insert("keep".into(), long("me"));
        let original = event_properties("id-1".into()).with_headers(headers);
        let copy = copied_properties(&original, [(ATTEMPT, AMQPValue::LongLongInt(2))]);
        assert_eq!(int_header(&copy, ATTEMPT), Some(2));
        assert_eq!(int_header(&copy, DELIVERY_COUNT), None);
        assert_eq!(string_header(&copy, "keep").as_deref(), Some("me"));
        assert_eq!(copy.message_id().as_ref().map(|m| m.as_str()), Some("id-1"));
        assert_eq!(*copy.delivery_mode(), Some(2));
    }
}
