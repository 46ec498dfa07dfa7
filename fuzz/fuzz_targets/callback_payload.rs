//! `CallbackPayload::parse` on arbitrary bytes: never panics; and whatever it accepts becomes
//! an event envelope that survives the queue's JSON round trip (what the ingress publishes,
//! a worker must be able to read back, unchanged).
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use nowpilot_model::{CallbackPayload, EventEnvelope};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = CallbackPayload::parse(data) else {
        return;
    };
    assert!(nowpilot_model::is_sys_id(&payload.sys_id));
    assert!(!payload.table.is_empty());
    let received = Utc
        .with_ymd_and_hms(2026, 5, 1, 10, 0, 0)
        .single()
        .expect("a valid instant");
    let envelope = EventEnvelope::from_callback(payload, received);
    let wire = serde_json::to_vec(&envelope).expect("an envelope always serializes");
    let back: EventEnvelope = serde_json::from_slice(&wire).expect("a published envelope decodes");
    let again = serde_json::to_vec(&back).expect("serializes again");
    assert_eq!(
        wire, again,
        "the envelope changed on its way through the queue"
    );
});
