//! Signature verification over the raw request bytes.
//!
//! Two schemes:
//! - **Standard Webhooks** (`webhook-id`, `webhook-timestamp`, `webhook-signature`): HMAC-SHA256
//!   over `"{id}.{timestamp}.{body}"`, base64, `v1,` prefixed, several space-separated
//!   signatures allowed (rotation), timestamps outside ±tolerance refused.
//! - **Body only** (optional): base64 HMAC-SHA256 of the body in a configured header. No
//!   timestamp, so a captured request can be replayed; only dedupe stands in the way.
//!
//! Keys are decoded and keyed once at start-up; each request clones the keyed HMAC state, so
//! the key schedule is not recomputed per request. Tags are compared with
//! [`Mac::verify_slice`], which is constant time.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The Standard Webhooks id header.
pub(crate) const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// The Standard Webhooks timestamp header (unix seconds).
pub(crate) const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// The Standard Webhooks signature header.
pub(crate) const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// Longest accepted `webhook-id`; ours are 32 hex + `-` + a counter.
const MAX_ID_LEN: usize = 256;
/// How many signatures of one header are looked at; bounds the work an attacker can cause.
const MAX_SIGNATURES: usize = 16;
/// Base64 of a 32-byte tag is 44 characters; anything much longer cannot be one.
const MAX_SIGNATURE_CHARS: usize = 64;

/// Whether `name` is one of the Standard Webhooks headers.
pub(crate) fn is_standard_header(name: &HeaderName) -> bool {
    name == WEBHOOK_ID || name == WEBHOOK_TIMESTAMP || name == WEBHOOK_SIGNATURE
}

/// One decoded secret, as a keyed HMAC state ready to be cloned.
#[derive(Clone)]
pub(crate) struct SigningKey(HmacSha256);

impl SigningKey {
    /// Keys HMAC-SHA256 with `key` (any length).
    pub(crate) fn new(key: &[u8]) -> Result<Self, &'static str> {
        HmacSha256::new_from_slice(key)
            .map(SigningKey)
            .map_err(|_| "cannot be used as an HMAC-SHA256 key")
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

/// Which scheme authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verified {
    /// Standard Webhooks, with the sender's `webhook-id` (the dedupe key).
    Standard {
        /// The `webhook-id` header.
        webhook_id: String,
    },
    /// The body-only scheme: no id header, dedupe uses the payload's event id.
    BodyOnly,
}

/// Why verification failed. Only ever logged at debug and counted; the caller learns nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerifyFailure {
    /// A required header is absent (or not a string).
    MissingHeader,
    /// `webhook-timestamp` is not an integer number of seconds.
    BadTimestamp,
    /// `webhook-timestamp` is outside the tolerance window (too old or in the future).
    StaleTimestamp,
    /// The signature header (or id) is malformed, or holds no `v1` signature.
    BadSignatureHeader,
    /// Well-formed, but no signature matches any configured secret.
    NoMatch,
}

impl VerifyFailure {
    /// The `reason` label of `nowpilot_ingress_verification_failures_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VerifyFailure::MissingHeader => "missing_header",
            VerifyFailure::BadTimestamp => "bad_timestamp",
            VerifyFailure::StaleTimestamp => "stale_timestamp",
            VerifyFailure::BadSignatureHeader => "bad_signature_header",
            VerifyFailure::NoMatch => "no_match",
        }
    }
}

/// Verifies requests against every configured secret.
pub(crate) struct Verifier {
    keys: Vec<SigningKey>,
    tolerance_secs: i64,
    body: Option<(HeaderName, SigningKey)>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.keys.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .field(
                "body_signature_header",
                &self.body.as_ref().map(|(h, _)| h.as_str()),
            )
            .finish()
    }
}

impl Verifier {
    pub(crate) fn new(
        keys: Vec<SigningKey>,
        tolerance_secs: i64,
        body: Option<(HeaderName, SigningKey)>,
    ) -> Self {
        Verifier {
            keys,
            tolerance_secs,
            body,
        }
    }

    /// Verifies `body` with its `headers` at time `now_unix` (seconds).
    ///
    /// A request carrying `webhook-signature` is always held to the Standard Webhooks scheme
    /// (no downgrade to the body-only scheme); the body-only scheme applies only when it is
    /// configured and its header is present.
    pub(crate) fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verified, VerifyFailure> {
        if !self.keys.is_empty() && headers.contains_key(WEBHOOK_SIGNATURE) {
            return self.verify_standard(headers, body, now_unix);
        }
        if let Some((header, key)) = &self.body
            && let Some(value) = headers.get(header)
        {
            return verify_body_only(key, value, body);
        }
        if self.keys.is_empty() {
            return Err(VerifyFailure::MissingHeader);
        }
        self.verify_standard(headers, body, now_unix)
    }

    fn verify_standard(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verified, VerifyFailure> {
        let header = |name: &HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or(VerifyFailure::MissingHeader)
        };
        let id = header(&WEBHOOK_ID)?;
        let timestamp = header(&WEBHOOK_TIMESTAMP)?;
        let signature = header(&WEBHOOK_SIGNATURE)?;

        // The spec forbids `.` in the id: it is the separator of the signed content.
        if id.len() > MAX_ID_LEN || id.contains('.') {
            return Err(VerifyFailure::BadSignatureHeader);
        }
        let ts = parse_timestamp(timestamp)?;
        if now_unix.abs_diff(ts) > self.tolerance_secs.unsigned_abs() {
            return Err(VerifyFailure::StaleTimestamp);
        }

        let mut tags: Vec<[u8; 32]> = Vec::new();
        for entry in signature.split_ascii_whitespace().take(MAX_SIGNATURES) {
            let Some(("v1", encoded)) = entry.split_once(',') else {
                continue; // other versions (v1a, v2, ...) are not ours to check
            };
            if let Some(tag) = decode_tag(encoded) {
                tags.push(tag);
            }
        }
        if tags.is_empty() {
            return Err(VerifyFailure::BadSignatureHeader);
        }

        for key in &self.keys {
            let mut mac = key.0.clone();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            if tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok()) {
                return Ok(Verified::Standard {
                    webhook_id: id.to_owned(),
                });
            }
        }
        Err(VerifyFailure::NoMatch)
    }
}

fn verify_body_only(
    key: &SigningKey,
    value: &http::HeaderValue,
    body: &[u8],
) -> Result<Verified, VerifyFailure> {
    let tag = value
        .to_str()
        .ok()
        .and_then(|v| decode_tag(v.trim()))
        .ok_or(VerifyFailure::BadSignatureHeader)?;
    let mut mac = key.0.clone();
    mac.update(body);
    mac.verify_slice(&tag)
        .map(|()| Verified::BodyOnly)
        .map_err(|_| VerifyFailure::NoMatch)
}

/// Unix seconds, digits only: no sign, no fraction, no exponent.
fn parse_timestamp(text: &str) -> Result<i64, VerifyFailure> {
    if text.is_empty() || text.len() > 15 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyFailure::BadTimestamp);
    }
    text.parse().map_err(|_| VerifyFailure::BadTimestamp)
}

/// Decodes a base64 tag of exactly 32 bytes. ServiceNow's `generateMac` returns standard
/// base64; whether it pads is unconfirmed, so padding is optional, and the URL-safe alphabet
/// is accepted too (the comparison after decoding is what matters).
fn decode_tag(encoded: &str) -> Option<[u8; 32]> {
    use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
    if encoded.is_empty() || encoded.len() > MAX_SIGNATURE_CHARS {
        return None;
    }
    let mut tag = [0u8; 32];
    let decoded = STANDARD_PAD_INDIFFERENT
        .decode_slice(encoded, &mut tag)
        .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode_slice(encoded, &mut tag))
        .ok()?;
    (decoded == tag.len()).then_some(tag)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use http::HeaderValue;

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER: &[u8] = b"another key, also fine for hmac";
    const NOW: i64 = 1_780_000_000;

    fn sign(key: &[u8], content: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(content);
        STANDARD.encode(mac.finalize().into_bytes())
    }

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(WEBHOOK_ID, HeaderValue::from_str(id).unwrap());
        h.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_str(ts).unwrap());
        h.insert(WEBHOOK_SIGNATURE, HeaderValue::from_str(sig).unwrap());
        h
    }

    fn verifier(keys: &[&[u8]]) -> Verifier {
        Verifier::new(
            keys.iter().map(|k| SigningKey::new(k).unwrap()).collect(),
            300,
            None,
        )
    }

    #[test]
    fn rfc4231_case_2_matches() {
        // Key "Jefe", data "what do ya want for nothing?".
        let tag = sign(b"Jefe", b"what do ya want for nothing?");
        let bytes = STANDARD.decode(tag).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn standard_scheme_accepts_good_and_refuses_each_defect() {
        let body = br#"{"a":1}"#;
        let ts = NOW.to_string();
        let good = sign(KEY, format!("msg_1.{ts}.{}", "{\"a\":1}").as_bytes());
        let v = verifier(&[KEY]);
        assert_eq!(
            v.verify(&headers("msg_1", &ts, &format!("v1,{good}")), body, NOW),
            Ok(Verified::Standard {
                webhook_id: "msg_1".into()
            })
        );
        let unpadded = good.trim_end_matches('=');
        assert!(
            v.verify(&headers("msg_1", &ts, &format!("v1,{unpadded}")), body, NOW)
                .is_ok()
        );

        let cases: Vec<(HeaderMap, VerifyFailure)> = vec![
            (HeaderMap::new(), VerifyFailure::MissingHeader),
            (
                headers("msg_1", "12.5", &format!("v1,{good}")),
                VerifyFailure::BadTimestamp,
            ),
            (
                headers("msg_1", "-5", &format!("v1,{good}")),
                VerifyFailure::BadTimestamp,
            ),
            (
                headers("msg_1", &(NOW - 301).to_string(), &format!("v1,{good}")),
                VerifyFailure::StaleTimestamp,
            ),
            (
                headers("msg_1", &(NOW + 301).to_string(), &format!("v1,{good}")),
                VerifyFailure::StaleTimestamp,
            ),
            (
                headers("msg_1", &ts, &format!("v2,{good}")),
                VerifyFailure::BadSignatureHeader,
            ),
            (
                headers("msg_1", &ts, "v1,not-base64!"),
                VerifyFailure::BadSignatureHeader,
            ),
            (
                headers("msg_1", &ts, &format!("v1,{}", &good[..20])),
                VerifyFailure::BadSignatureHeader,
            ),
            (
                headers("a.b", &ts, &format!("v1,{good}")),
                VerifyFailure::BadSignatureHeader,
            ),
            (
                headers("msg_2", &ts, &format!("v1,{good}")),
                VerifyFailure::NoMatch,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(v.verify(&h, body, NOW), Err(want), "{h:?}");
        }
        // The body is part of the signed content.
        assert_eq!(
            v.verify(
                &headers("msg_1", &ts, &format!("v1,{good}")),
                b"{\"a\":2}",
                NOW
            ),
            Err(VerifyFailure::NoMatch)
        );
    }

    #[test]
    fn rotation_any_key_and_any_signature() {
        let ts = NOW.to_string();
        let content = format!("id.{ts}.body");
        let by_other = sign(OTHER, content.as_bytes());
        let by_key = sign(KEY, content.as_bytes());
        let v = verifier(&[KEY, OTHER]);
        for header in [
            format!("v1,{by_other}"),
            format!("v1,{by_key}"),
            format!(
                "v1a,xyz v1,{} v1,{by_key}",
                sign(b"stranger", content.as_bytes())
            ),
        ] {
            assert!(
                v.verify(&headers("id", &ts, &header), b"body", NOW).is_ok(),
                "{header}"
            );
        }
    }

    #[test]
    fn body_only_scheme() {
        let name = HeaderName::from_static("x-hmac-signature");
        let v = Verifier::new(
            vec![],
            300,
            Some((name.clone(), SigningKey::new(KEY).unwrap())),
        );
        let mut h = HeaderMap::new();
        h.insert(
            name.clone(),
            HeaderValue::from_str(&sign(KEY, b"body")).unwrap(),
        );
        assert_eq!(v.verify(&h, b"body", NOW), Ok(Verified::BodyOnly));
        assert_eq!(v.verify(&h, b"bodx", NOW), Err(VerifyFailure::NoMatch));
        assert_eq!(
            v.verify(&HeaderMap::new(), b"body", NOW),
            Err(VerifyFailure::MissingHeader)
        );
        // Not configured: the body header alone is not enough.
        assert_eq!(
            verifier(&[KEY]).verify(&h, b"body", NOW),
            Err(VerifyFailure::MissingHeader)
        );
    }

    /// The example in docs/callback-payload.md, so the documentation cannot drift from the code.
    #[test]
    fn the_documented_example_verifies() {
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = concat!(
            r#"{"schema_version":1,"instance":"dev12345","table":"incident","operation":"update","#,
            r#""sys_id":"9d385017c611228701d22104cc95c371","sys_mod_count":"4","#,
            r#""sys_updated_on":"2026-05-01 10:00:00","sys_updated_by":"beth.anglin","#,
            r#""record":{"number":"INC0010001","state":"2","priority":"2","#,
            r#""short_description":"Caf\u00e9 printer on fire"}}"#
        );
        let h = headers(
            "9d385017c611228701d22104cc95c371-4",
            "1777629600",
            "v1,GLgL71rRkRvrFGLspMTSNGUrIapchRbYmvU4jsEzCdA=",
        );
        let v = verifier(&[&key]);
        assert!(v.verify(&h, body.as_bytes(), 1_777_629_600).is_ok());
        let docs = include_str!("../../../docs/callback-payload.md");
        assert!(docs.contains(body), "the documented body changed");
    }

    #[test]
    fn debug_never_shows_key_material() {
        let v = verifier(&[KEY]);
        let text = format!("{v:?} {:?}", SigningKey::new(KEY).unwrap());
        assert!(!text.contains("0123456789abcdef"), "{text}");
    }
}
