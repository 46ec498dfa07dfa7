//! The ingress's signature verifier over arbitrary headers and bodies: never panics, never
//! accepts what the configured key did not sign, and always accepts what it did.
//!
//! Half the inputs are signed here with the configured key (after the fuzzer chose id,
//! timestamp and body), so the accepting path is explored as deeply as the refusing one.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const KEY: &[u8] = b"nowpilot-fuzz-key-0123456789abcd";
const OTHER_KEY: &[u8] = b"a rotated-in second key, also ok";
const BODY_KEY: &[u8] = b"body-only scheme key";
const NOW: i64 = 1_780_000_000;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Extra headers, as raw bytes (invalid names and values are skipped).
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    id: String,
    /// Offset of the timestamp from now, in seconds.
    skew: i32,
    timestamp_text: Option<String>,
    body: Vec<u8>,
    /// Sign with the configured key (true) or leave the fuzzer's signature header alone.
    sign: bool,
    /// Extra `v1,` entries around the real signature.
    decoys: Vec<String>,
    body_scheme: bool,
    tamper_body: bool,
}

fn tag(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fuzz_target!(|input: Input| {
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let ts = NOW.saturating_add(i64::from(input.skew));
    let ts_text = input
        .timestamp_text
        .clone()
        .unwrap_or_else(|| ts.to_string());
    let mut signed_ok = false;
    if input.sign {
        if input.body_scheme {
            if let Ok(v) = HeaderValue::from_str(&tag(BODY_KEY, &[&input.body])) {
                headers.remove("webhook-signature");
                headers.insert("x-hmac-signature", v);
                signed_ok = true;
            }
        } else {
            let sig = tag(
                KEY,
                &[
                    input.id.as_bytes(),
                    b".",
                    ts_text.as_bytes(),
                    b".",
                    &input.body,
                ],
            );
            let mut entries: Vec<String> = input.decoys.iter().take(4).cloned().collect();
            entries.push(format!("v1,{sig}"));
            let values = (
                HeaderValue::from_str(&input.id),
                HeaderValue::from_str(&ts_text),
                HeaderValue::from_str(&entries.join(" ")),
            );
            if let (Ok(id), Ok(t), Ok(s)) = values {
                headers.insert("webhook-id", id);
                headers.insert("webhook-timestamp", t);
                headers.insert("webhook-signature", s);
                signed_ok = true;
            }
        }
    }
    let mut body = input.body.clone();
    if input.tamper_body {
        body.push(b' ');
    }
    let result = nowpilot_ingress::fuzzing::verify(
        &[KEY, OTHER_KEY],
        Some(("x-hmac-signature", BODY_KEY)),
        300,
        &headers,
        &body,
        NOW,
    );
    if let Ok(id) = &result {
        // Accepted: either this harness signed it, or the fuzzer forged an HMAC (impossible).
        assert!(signed_ok, "accepted a request nobody signed: {headers:?}");
        assert!(!input.tamper_body, "accepted a tampered body");
        if !input.body_scheme {
            assert_eq!(id.as_str(), input.id.trim());
        }
    }
    if signed_ok && !input.tamper_body && input.body_scheme {
        // The body-only scheme has no timestamp or id to get wrong; a Standard Webhooks
        // header the fuzzer added takes precedence (no downgrade), so only then it may fail.
        assert!(
            result.is_ok() || headers.contains_key("webhook-signature"),
            "{result:?}"
        );
    }
    if signed_ok && !input.tamper_body && !input.body_scheme {
        let id = input.id.trim();
        let id_ok = !id.is_empty()
            && id.len() <= 256
            && !id.contains('.')
            && id == input.id
            && id.bytes().all(|b| (0x20..=0x7e).contains(&b));
        let ts_ok = input.timestamp_text.is_none() && input.skew.unsigned_abs() <= 300;
        // Decoys of visible ASCII only: anything else makes the header unreadable as text,
        // which is rightly a refusal.
        let decoys_ok = input
            .decoys
            .iter()
            .take(4)
            .all(|d| d.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        if id_ok && ts_ok && decoys_ok {
            assert!(
                result.is_ok(),
                "refused a correctly signed request: {result:?} {headers:?}"
            );
        }
    }
});
