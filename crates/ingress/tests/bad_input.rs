//! The bad-input table, continued from `webhook.rs` (which has the signature, timestamp,
//! content-type, missing-field and basic wrong-type rows): encodings, escape sequences,
//! header abuse, wrong types for every field, and size bombs, each over a real socket with
//! the status and `code` it must get. Nothing refused may reach the publisher, and nothing
//! may crash the server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

struct Row {
    name: String,
    request: TestRequest,
    status: u16,
    code: &'static str,
}

fn row(name: impl Into<String>, request: TestRequest, status: u16, code: &'static str) -> Row {
    Row {
        name: name.into(),
        request,
        status,
        code,
    }
}

/// A correctly signed request for raw body bytes.
fn signed_bytes(id: &str, body: Vec<u8>) -> TestRequest {
    let ts = now();
    let signature = signature(SECRET_BYTES, id, ts, &body);
    TestRequest {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), ts.to_string()),
            ("webhook-signature".into(), format!("v1,{signature}")),
        ],
        body,
    }
}

fn good_value() -> Value {
    serde_json::from_str(&payload(1, "beth.anglin")).unwrap()
}

fn with_field(field: &str, value: Value) -> TestRequest {
    let mut v = good_value();
    v[field] = value;
    signed_bytes(&event_id(1), v.to_string().into_bytes())
}

fn encoding_rows() -> Vec<Row> {
    let good = payload(1, "beth.anglin");
    let id = event_id(1);
    let utf16: Vec<u8> = good.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut utf16_bom = vec![0xFF, 0xFE];
    utf16_bom.extend_from_slice(&utf16);
    let mut utf8_bom = vec![0xEF, 0xBB, 0xBF];
    utf8_bom.extend_from_slice(good.as_bytes());
    let latin1 = good.replace('\u{e9}', "\u{0}").into_bytes();
    let latin1: Vec<u8> = latin1
        .iter()
        .map(|&b| if b == 0 { 0xE9 } else { b })
        .collect();
    let escaped = |raw: &str| {
        // The short description carries `raw` verbatim inside its JSON string.
        let body = good.replace("Caf\u{e9} printer on fire", raw);
        assert_ne!(body, good);
        signed_bytes(&id, body.into_bytes())
    };
    vec![
        row(
            "Latin-1 (not UTF-8) body",
            signed_bytes(&id, latin1),
            400,
            "malformed_json",
        ),
        row(
            "UTF-16LE body",
            signed_bytes(&id, utf16.clone()),
            400,
            "malformed_json",
        ),
        row(
            "UTF-16 body with BOM",
            signed_bytes(&id, utf16_bom),
            400,
            "malformed_json",
        ),
        row(
            "UTF-16 body declared as UTF-16",
            signed_bytes(&id, utf16).with("content-type", "application/json; charset=utf-16"),
            400,
            "malformed_json",
        ),
        row(
            "UTF-8 byte order mark",
            signed_bytes(&id, utf8_bom),
            400,
            "malformed_json",
        ),
        row(
            "invalid escape \\x41",
            escaped("\\x41"),
            400,
            "malformed_json",
        ),
        row(
            "truncated \\u escape",
            escaped("\\u12"),
            400,
            "malformed_json",
        ),
        row(
            "non-hex \\u escape",
            escaped("\\uZZZZ"),
            400,
            "malformed_json",
        ),
        row(
            "lone surrogate escape",
            escaped("\\ud800"),
            400,
            "malformed_json",
        ),
        row(
            "raw control character in a string",
            escaped("a\u{1}b"),
            400,
            "malformed_json",
        ),
        row(
            "raw newline in a string",
            escaped("a\nb"),
            400,
            "malformed_json",
        ),
        row(
            "percent-encoded JSON",
            signed_bytes(&id, b"%7B%22schema_version%22%3A1%7D".to_vec()),
            400,
            "malformed_json",
        ),
        row(
            "form-encoded body",
            signed_bytes(&id, b"schema_version=1&table=incident".to_vec())
                .with("content-type", "application/x-www-form-urlencoded"),
            415,
            "unsupported_media_type",
        ),
        row(
            "empty body",
            signed_bytes(&id, Vec::new()),
            400,
            "malformed_json",
        ),
        row(
            "NUL bytes",
            signed_bytes(&id, vec![0; 64]),
            400,
            "malformed_json",
        ),
        row(
            "trailing garbage after the object",
            signed_bytes(&id, format!("{good} x").into_bytes()),
            400,
            "malformed_json",
        ),
        row(
            "two objects",
            signed_bytes(&id, format!("{good}{good}").into_bytes()),
            400,
            "malformed_json",
        ),
        row(
            "number out of range for any type",
            signed_bytes(
                &id,
                good.replacen("\"sys_mod_count\":\"1\"", "\"sys_mod_count\":1e400", 1)
                    .into_bytes(),
            ),
            400,
            "malformed_json",
        ),
    ]
}

fn header_rows() -> Vec<Row> {
    let good = payload(1, "beth.anglin");
    let id = event_id(1);
    let ts = now();
    let request = || signed_request(&id, ts, &good, SECRET_BYTES);
    let sig = signature(SECRET_BYTES, &id, ts, good.as_bytes());
    let many: Vec<String> = (0..16)
        .map(|i| format!("v1,{}", "A".repeat(40 + i % 3)))
        .collect();
    vec![
        row(
            "the valid signature is the 17th of the header",
            request().with("webhook-signature", &format!("{} v1,{sig}", many.join(" "))),
            401,
            "invalid_signature",
        ),
        row(
            "a 300-character webhook-id",
            signed_request(&"a".repeat(300), ts, &good, SECRET_BYTES),
            401,
            "invalid_signature",
        ),
        row(
            "timestamp with a plus sign",
            request().with("webhook-timestamp", &format!("+{ts}")),
            401,
            "invalid_signature",
        ),
        row(
            "timestamp in milliseconds",
            signed_request(&id, ts * 1000, &good, SECRET_BYTES),
            401,
            "invalid_signature",
        ),
        row(
            "timestamp of twenty digits",
            request().with("webhook-timestamp", "99999999999999999999"),
            401,
            "invalid_signature",
        ),
        row(
            "timestamp in exponent notation",
            request().with("webhook-timestamp", &format!("{ts}e0")),
            401,
            "invalid_signature",
        ),
        row(
            "signature as hex instead of base64",
            request().with("webhook-signature", &format!("v1,{}", "ab".repeat(32))),
            401,
            "invalid_signature",
        ),
        row(
            "signature of the body alone",
            request().with(
                "webhook-signature",
                &format!("v1,{}", body_signature(SECRET_BYTES, good.as_bytes())),
            ),
            401,
            "invalid_signature",
        ),
        row(
            "empty signature header",
            request().with("webhook-signature", ""),
            401,
            "invalid_signature",
        ),
        row(
            "signature with a comma but no version",
            request().with("webhook-signature", &format!(",{sig}")),
            401,
            "invalid_signature",
        ),
        row(
            "content-type application/json-seq",
            request().with("content-type", "application/json-seq"),
            415,
            "unsupported_media_type",
        ),
    ]
}

fn wrong_type_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("schema_version", json!("one"), 422, "invalid_field"),
        ("schema_version", json!(1.5), 422, "invalid_field"),
        ("schema_version", json!(-1), 422, "invalid_field"),
        ("schema_version", json!([1]), 422, "invalid_field"),
        (
            "schema_version",
            json!(0),
            422,
            "unsupported_schema_version",
        ),
        (
            "schema_version",
            json!("99"),
            422,
            "unsupported_schema_version",
        ),
        ("schema_version", Value::Null, 422, "missing_field"),
        ("instance", json!(12345), 422, "invalid_field"),
        ("operation", json!(true), 422, "invalid_field"),
        (
            "sys_updated_on",
            json!({"date": "today"}),
            422,
            "invalid_field",
        ),
        ("sys_updated_by", json!(7), 422, "invalid_field"),
        ("table", json!(""), 422, "invalid_field"),
        ("table", json!(null), 422, "missing_field"),
        ("table", json!(["incident"]), 422, "invalid_field"),
        ("sys_id", json!(12), 422, "invalid_field"),
        ("sys_id", json!(SYS_ID.to_uppercase()), 422, "invalid_field"),
        ("sys_id", json!(format!("{SYS_ID}0")), 422, "invalid_field"),
        (
            "sys_id",
            json!("9d385017c611228701d22104cc95c37g"),
            422,
            "invalid_field",
        ),
        ("sys_mod_count", json!(4.5), 422, "invalid_field"),
        ("sys_mod_count", json!(-4), 422, "invalid_field"),
        ("sys_mod_count", json!("four"), 422, "invalid_field"),
        (
            "sys_mod_count",
            json!("99999999999999999999999"),
            422,
            "invalid_field",
        ),
        ("sys_mod_count", json!({"value": 4}), 422, "invalid_field"),
        ("record", json!([1, 2]), 422, "invalid_field"),
        ("record", json!(42), 422, "invalid_field"),
    ];
    for (field, value, status, code) in cases {
        rows.push(row(
            format!("{field} = {value}"),
            with_field(field, value),
            status,
            code,
        ));
    }
    rows
}

#[tokio::test]
async fn every_bad_input_class_has_its_status_and_code() {
    let server = start(config()).await;
    let rows: Vec<Row> = encoding_rows()
        .into_iter()
        .chain(header_rows())
        .chain(wrong_type_rows())
        .collect();
    assert!(rows.len() > 50);
    for row in rows {
        let (status, body) = server.send(&row.request).await;
        assert_eq!(status, row.status, "{}: {body}", row.name);
        assert_eq!(body["code"], row.code, "{}: {body}", row.name);
        assert!(body["message"].is_string(), "{}: {body}", row.name);
    }
    assert_eq!(server.publisher.attempts(), 0);
    // Still serving: a good callback goes through.
    let (status, _) = server
        .post_signed(&event_id(1), &payload(1, "beth.anglin"))
        .await;
    assert_eq!(status, 202);
    server.stop().await;
}

/// Bodies that are large or wide but within `max_body`: handled (accepted or refused as the
/// table says), never a crash or a hang; and over the limit, 413 whatever the shape.
#[tokio::test]
async fn size_bombs_within_and_over_the_limit() {
    let server = start(config()).await;
    let limit = 256 * 1024;
    let mut n = 100;
    let mut next = || {
        n += 1;
        n
    };

    // A 250 KiB string in one field: valid, queued.
    let m = next();
    let mut v: Value = serde_json::from_str(&payload(m, "beth.anglin")).unwrap();
    v["record"]["description"] = json!("x".repeat(250 * 1024));
    let body = v.to_string();
    assert!(body.len() < limit);
    assert_eq!(server.post_signed(&event_id(m), &body).await.0, 202);

    // 15 000 keys in the record, and 10 000 unknown top-level keys: valid, queued.
    let m = next();
    let mut v: Value = serde_json::from_str(&payload(m, "beth.anglin")).unwrap();
    for i in 0..15_000 {
        v["record"][format!("u_{i}")] = json!("1");
    }
    let body = v.to_string();
    assert!(body.len() < limit, "{}", body.len());
    assert_eq!(server.post_signed(&event_id(m), &body).await.0, 202);
    let m = next();
    let mut v: Value = serde_json::from_str(&payload(m, "beth.anglin")).unwrap();
    for i in 0..10_000 {
        v[format!("x{i}")] = json!(i);
    }
    assert_eq!(
        server.post_signed(&event_id(m), &v.to_string()).await.0,
        202
    );

    // Nesting: a little inside a field is kept; past serde_json's depth limit is refused.
    let m = next();
    let mut v: Value = serde_json::from_str(&payload(m, "beth.anglin")).unwrap();
    v["future_field"] =
        serde_json::from_str(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap();
    assert_eq!(
        server.post_signed(&event_id(m), &v.to_string()).await.0,
        202
    );
    let m = next();
    let deep = payload(m, "beth.anglin").replacen(
        "{\"kept\":true}",
        &format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
        1,
    );
    let (status, answer) = server.post_signed(&event_id(m), &deep).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("malformed_json"))
    );
    let m = next();
    let objects = payload(m, "beth.anglin").replacen(
        "{\"kept\":true}",
        &format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)),
        1,
    );
    let (status, answer) = server.post_signed(&event_id(m), &objects).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("malformed_json"))
    );

    // An array of 100 000 numbers where a string belongs: refused as the wrong type.
    let m = next();
    let mut v: Value = serde_json::from_str(&payload(m, "beth.anglin")).unwrap();
    v["sys_updated_by"] = json!(vec![0; 100_000]);
    let (status, answer) = server.post_signed(&event_id(m), &v.to_string()).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("invalid_field"))
    );

    // One byte over the limit, however it is built: 413.
    let m = next();
    let mut v: Value = serde_json::from_str(&payload(m, "beth.anglin")).unwrap();
    v["record"]["description"] = json!("");
    let base = v.to_string().len();
    v["record"]["description"] = json!("y".repeat(limit + 1 - base));
    let body = v.to_string();
    assert_eq!(body.len(), limit + 1);
    let (status, answer) = server.post_signed(&event_id(m), &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    assert_eq!(server.publisher.published().len(), 3 + 1);
    server.stop().await;
}

/// Request lines and framing hyper itself refuses, or that match no route.
#[tokio::test]
async fn malformed_requests_and_paths() {
    let server = start(config()).await;
    let body = payload(1, "beth.anglin");
    let request = signed_request(&event_id(1), now(), &body, SECRET_BYTES);

    // Percent-encoded and altered paths are not the webhook.
    for path in [
        "/webhooks/%73ervicenow",
        "/webhooks/servicenow%2",
        "/webhooks/servicenow/",
        "/webhooks//servicenow",
        "/WEBHOOKS/SERVICENOW",
        "/webhooks/servicenow/../servicenow2",
    ] {
        let mut raw = raw_head(
            &request.headers,
            &format!("content-length: {}\r\n", body.len()),
        );
        let head = String::from_utf8(raw.clone()).unwrap();
        raw = head
            .replacen(nowpilot_ingress::WEBHOOK_PATH, path, 1)
            .into_bytes();
        raw.extend_from_slice(body.as_bytes());
        let (status, answer) = raw_exchange(server.addr, &raw).await;
        assert!(status == 404 || status == 400, "{path}: {status} {answer}");
    }

    // Both Content-Length and chunked framing, or a length that is not a number.
    let mut both = raw_head(
        &request.headers,
        &format!(
            "content-length: {}\r\ntransfer-encoding: chunked\r\n",
            body.len()
        ),
    );
    both.extend_from_slice(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes());
    let (status, _) = raw_exchange(server.addr, &both).await;
    assert!(status == 400 || status == 202, "{status}");
    let mut bad_length = raw_head(&request.headers, "content-length: ten\r\n");
    bad_length.extend_from_slice(body.as_bytes());
    let (status, _) = raw_exchange(server.addr, &bad_length).await;
    assert_eq!(status, 400);

    // A header value that is not visible ASCII in webhook-id.
    let raw = raw_head(
        &request.headers,
        &format!("content-length: {}\r\n", body.len()),
    );
    let head = String::from_utf8(raw).unwrap();
    let mut bytes = head.replacen(&event_id(1), "\u{7f}", 1).into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    let (status, answer) = raw_exchange(server.addr, &bytes).await;
    assert!(status == 400 || status == 401, "{status} {answer}");

    // Nothing above was queued, except possibly the doubly framed request (hyper prefers
    // chunked, which carries the whole, correctly signed body).
    assert!(server.publisher.attempts() <= 1);
    server.stop().await;
}
