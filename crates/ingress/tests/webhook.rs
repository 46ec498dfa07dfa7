//! The webhook over real HTTP: acceptance, every refusal, rotation, dedupe, echo, broker
//! failures and the body-only scheme.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nowpilot_ingress::{BodySignatureConfig, ByteSize, IngressConfig};
use nowpilot_model::EventSource;
use serde_json::json;

#[tokio::test]
async fn a_valid_callback_is_published_once_with_the_right_envelope() {
    let server = start(config()).await;
    let body = payload(4, "beth.anglin");
    let (status, answer) = server.post_signed(&event_id(4), &body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer,
        json!({"status": "accepted", "event_id": event_id(4)})
    );

    let published = server.publisher.published();
    assert_eq!(published.len(), 1);
    let event = &published[0];
    assert_eq!(event.event_id.as_str(), event_id(4));
    assert_eq!(event.sys_id, SYS_ID);
    assert_eq!(event.sys_mod_count, 4);
    assert_eq!(event.table, "incident");
    assert_eq!(event.number, "INC0010001");
    assert_eq!(event.source, EventSource::Callback);
    let callback = event.callback.as_ref().unwrap();
    assert_eq!(callback.sys_updated_by, "beth.anglin");
    assert_eq!(callback.instance, "dev12345");
    assert_eq!(
        callback.record.value("short_description"),
        Some("Caf\u{e9} printer on fire")
    );
    assert_eq!(
        callback.extra.get("future_field"),
        Some(&json!({"kept": true}))
    );
    server.stop().await;
}

/// One row of the refusal table.
struct Refused {
    name: &'static str,
    request: TestRequest,
    status: u16,
    code: &'static str,
}

fn refusals() -> Vec<Refused> {
    let ts = now();
    let id = event_id(1);
    let good_body = payload(1, "beth.anglin");
    let good = || signed_request(&id, ts, &good_body, SECRET_BYTES);
    // A body that passes the signature check but not the parser.
    let signed = |body: &str| signed_request(&id, ts, body, SECRET_BYTES);
    let without_field = |field: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&good_body).unwrap();
        v.as_object_mut().unwrap().remove(field);
        signed(&v.to_string())
    };
    let with_field = |field: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&good_body).unwrap();
        v[field] = value;
        signed(&v.to_string())
    };
    let sig = signature(SECRET_BYTES, &id, ts, good_body.as_bytes());

    let mut rows = vec![
        Refused {
            name: "missing webhook-id",
            request: good().without("webhook-id"),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "missing webhook-timestamp",
            request: good().without("webhook-timestamp"),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "missing webhook-signature",
            request: good().without("webhook-signature"),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "garbage signature",
            request: good().with("webhook-signature", "v1,garbage!!"),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "signature without version",
            request: good().with("webhook-signature", &sig),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "wrong secret",
            request: signed_request(&id, ts, &good_body, OTHER_SECRET_BYTES),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "v2 only",
            request: good().with("webhook-signature", &format!("v2,{sig}")),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "stale timestamp",
            request: signed_request(&id, ts - 600, &good_body, SECRET_BYTES),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "future timestamp",
            request: signed_request(&id, ts + 600, &good_body, SECRET_BYTES),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "non-numeric timestamp",
            request: good().with("webhook-timestamp", "yesterday"),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "signed for another id",
            request: good().with("webhook-id", &event_id(2)),
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "wrong content type",
            request: good().with("content-type", "text/plain"),
            status: 415,
            code: "unsupported_media_type",
        },
        Refused {
            name: "no content type",
            request: good().without("content-type"),
            status: 415,
            code: "unsupported_media_type",
        },
        Refused {
            name: "content type checked before the signature",
            request: good()
                .with("content-type", "application/xml")
                .with("webhook-signature", "v1,nope"),
            status: 415,
            code: "unsupported_media_type",
        },
        Refused {
            name: "unauthenticated garbage is not parsed",
            request: TestRequest {
                body: b"{not json".to_vec(),
                ..good()
            },
            status: 401,
            code: "invalid_signature",
        },
        Refused {
            name: "malformed JSON",
            request: signed("{\"schema_version\": 1,"),
            status: 400,
            code: "malformed_json",
        },
        Refused {
            name: "JSON bomb (deep nesting)",
            request: signed(&"[".repeat(200_000)),
            status: 400,
            code: "malformed_json",
        },
        Refused {
            name: "JSON that is not an object",
            request: signed("[1,2,3]"),
            status: 422,
            code: "not_an_object",
        },
        Refused {
            name: "sys_mod_count of the wrong type",
            request: with_field("sys_mod_count", json!(true)),
            status: 422,
            code: "invalid_field",
        },
        Refused {
            name: "table of the wrong type",
            request: with_field("table", json!(5)),
            status: 422,
            code: "invalid_field",
        },
        Refused {
            name: "record of the wrong type",
            request: with_field("record", json!("x")),
            status: 422,
            code: "invalid_field",
        },
        Refused {
            name: "sys_id that is not one",
            request: with_field("sys_id", json!("INC0010001")),
            status: 422,
            code: "invalid_field",
        },
        Refused {
            name: "sys_updated_by of the wrong type",
            request: with_field("sys_updated_by", json!(["x"])),
            status: 422,
            code: "invalid_field",
        },
        Refused {
            name: "unknown schema version",
            request: with_field("schema_version", json!(2)),
            status: 422,
            code: "unsupported_schema_version",
        },
    ];
    for field in ["schema_version", "table", "sys_id", "sys_mod_count"] {
        rows.push(Refused {
            name: Box::leak(format!("missing {field}").into_boxed_str()),
            request: without_field(field),
            status: 422,
            code: "missing_field",
        });
    }
    rows
}

#[tokio::test]
async fn every_refusal_has_its_status_and_code_and_publishes_nothing() {
    let server = start(config()).await;
    for row in refusals() {
        let (status, body) = server.send(&row.request).await;
        assert_eq!(status, row.status, "{}: {body}", row.name);
        assert_eq!(body["code"], row.code, "{}: {body}", row.name);
        assert!(body["message"].is_string(), "{}: {body}", row.name);
        if status == 401 {
            // Never tell the caller which part failed.
            assert_eq!(
                body["message"], "signature verification failed",
                "{}",
                row.name
            );
        }
    }
    assert_eq!(server.publisher.attempts(), 0);
    // The refusals left nothing behind in dedupe: the same id is accepted now.
    let (status, _) = server
        .post_signed(&event_id(1), &payload(1, "beth.anglin"))
        .await;
    assert_eq!(status, 202);
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_however_they_are_framed() {
    let server = start(IngressConfig {
        max_body: ByteSize(256 * 1024),
        ..config()
    })
    .await;
    let limit = 256 * 1024;
    let id = event_id(7);
    let ts = now();
    let big = format!("{{\"pad\":\"{}\"}}", "a".repeat(limit + 1 - 10));
    assert_eq!(big.len(), limit + 1);
    let request = signed_request(&id, ts, &big, SECRET_BYTES);

    // Declared too large: refused from the header, before any body byte is sent.
    let head = raw_head(
        &request.headers,
        &format!("content-length: {}\r\n", limit + 1),
    );
    let (status, body) = raw_exchange(server.addr, &head).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");

    // Chunked, no length declared: refused while streaming, once byte limit+1 arrives (the
    // terminating chunk is never sent, so the server cannot have waited for the whole body).
    let mut chunked = raw_head(&request.headers, "transfer-encoding: chunked\r\n");
    for piece in big.as_bytes().chunks(16 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    let (status, body) = raw_exchange(server.addr, &chunked).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");

    // Declared shorter than what follows: only the declared bytes are the body, so the
    // signature (made over the whole body) fails; the extra bytes never become part of it.
    let small = payload(7, "beth.anglin");
    let request = signed_request(&id, ts, &small, SECRET_BYTES);
    let mut lying = raw_head(
        &request.headers,
        &format!("content-length: {}\r\n", small.len() - 10),
    );
    lying.extend_from_slice(small.as_bytes());
    let (status, body) = raw_exchange(server.addr, &lying).await;
    assert_eq!(status, 401, "{body}");

    // A chunked body under the limit is fine.
    let mut ok = raw_head(&request.headers, "transfer-encoding: chunked\r\n");
    for piece in small.as_bytes().chunks(100) {
        ok.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        ok.extend_from_slice(piece);
        ok.extend_from_slice(b"\r\n");
    }
    ok.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_exchange(server.addr, &ok).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(server.publisher.published().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn rotation_accepts_either_secret_and_any_listed_signature() {
    let server = start(IngressConfig {
        secrets: vec![whsec(SECRET_BYTES).into(), whsec(OTHER_SECRET_BYTES).into()],
        ..config()
    })
    .await;
    let ts = now();
    let first = payload(1, "beth.anglin");
    let (status, _) = server
        .send(&signed_request(&event_id(1), ts, &first, SECRET_BYTES))
        .await;
    assert_eq!(status, 202);
    let second = payload(2, "beth.anglin");
    let (status, _) = server
        .send(&signed_request(
            &event_id(2),
            ts,
            &second,
            OTHER_SECRET_BYTES,
        ))
        .await;
    assert_eq!(status, 202);

    // Several signatures: only the second one matches a configured secret.
    let third = payload(3, "beth.anglin");
    let stranger = signature(
        b"a key nobody configured",
        &event_id(3),
        ts,
        third.as_bytes(),
    );
    let good = signature(OTHER_SECRET_BYTES, &event_id(3), ts, third.as_bytes());
    let request = signed_request(&event_id(3), ts, &third, SECRET_BYTES)
        .with("webhook-signature", &format!("v1,{stranger} v1,{good}"));
    let (status, _) = server.send(&request).await;
    assert_eq!(status, 202);
    assert_eq!(server.publisher.published().len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn a_resent_callback_is_a_duplicate_and_published_once() {
    let server = start(config()).await;
    let body = payload(5, "beth.anglin");
    let (status, _) = server.post_signed(&event_id(5), &body).await;
    assert_eq!(status, 202);
    // Resent with a fresh timestamp and signature (as a retrying sender would).
    let (status, answer) = server.post_signed(&event_id(5), &body).await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"status": "duplicate"}));
    assert_eq!(server.publisher.published().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_duplicates_publish_once() {
    let server = start(config()).await;
    server.publisher.set_mode(Mode::Hold);
    let body = payload(6, "beth.anglin");
    let request = signed_request(&event_id(6), now(), &body, SECRET_BYTES);

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = server.client.clone();
        let url = server.url(nowpilot_ingress::WEBHOOK_PATH);
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut builder = client.post(url).body(request.body.clone());
            for (n, v) in &request.headers {
                builder = builder.header(n.as_str(), v.as_str());
            }
            builder.send().await.unwrap().status().as_u16()
        }));
    }
    // One request owns the id and is stuck in publish; the others wait for its outcome.
    server.publisher.wait_for_attempts(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(server.publisher.attempts(), 1);
    server.publisher.release(8);

    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 202]);
    assert_eq!(server.publisher.attempts(), 1);
    assert_eq!(server.publisher.published().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn nowpilots_own_changes_are_ignored() {
    let server = start(config()).await;
    let (status, answer) = server
        .post_signed(&event_id(8), &payload(8, "NowPilot.Integration"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"status": "ignored", "reason": "echo"}));
    assert_eq!(server.publisher.attempts(), 0);
    server.stop().await;
}

#[tokio::test]
async fn broker_failures_answer_503_and_a_later_retry_is_accepted() {
    let server = start(IngressConfig {
        retry_after: std::time::Duration::from_secs(7),
        ..config()
    })
    .await;
    let body = payload(9, "beth.anglin");
    for (mode, code) in [
        (Mode::Unavailable, "broker_unavailable"),
        (Mode::Timeout, "publish_timeout"),
    ] {
        server.publisher.set_mode(mode);
        let request = signed_request(&event_id(9), now(), &body, SECRET_BYTES);
        let (status, headers, answer) = server.send_full(&request).await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["code"], code);
        assert_eq!(headers.get("retry-after").unwrap(), "7");
    }
    assert!(server.publisher.published().is_empty());

    // Nothing was remembered: after recovery the same delivery is accepted.
    server.publisher.set_mode(Mode::Confirm);
    let (status, _) = server.post_signed(&event_id(9), &body).await;
    assert_eq!(status, 202);
    assert_eq!(server.publisher.published().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn body_only_scheme_when_configured() {
    let server = start(IngressConfig {
        body_signature: Some(BodySignatureConfig {
            header: "X-HMAC-Signature".into(),
            secret: Some("a plain shared secret".into()),
            secret_file: None,
        }),
        ..config()
    })
    .await;
    let body = payload(10, "beth.anglin");
    let request = |sig: String| TestRequest {
        headers: vec![
            (
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            ),
            ("x-hmac-signature".into(), sig),
        ],
        body: body.as_bytes().to_vec(),
    };
    let good = body_signature(b"a plain shared secret", body.as_bytes());
    let (status, answer) = server.send(&request(good.clone())).await;
    assert_eq!(status, 202, "{answer}");
    // No replay window: only dedupe (by event id) stops a replay.
    let (status, answer) = server.send(&request(good)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], "duplicate");
    let (status, answer) = server
        .send(&request(body_signature(b"wrong", body.as_bytes())))
        .await;
    assert_eq!(status, 401);
    assert_eq!(answer["code"], "invalid_signature");
    // A request carrying webhook-signature is held to the Standard Webhooks scheme.
    let downgrade = request(body_signature(b"a plain shared secret", body.as_bytes()))
        .with("webhook-signature", "v1,bogus");
    assert_eq!(server.send(&downgrade).await.0, 401);
    assert_eq!(server.publisher.published().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn body_only_scheme_is_refused_when_not_configured() {
    let server = start(config()).await;
    let body = payload(11, "beth.anglin");
    let request = TestRequest {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                "x-hmac-signature".into(),
                body_signature(SECRET_BYTES, body.as_bytes()),
            ),
        ],
        body: body.into_bytes(),
    };
    let (status, answer) = server.send(&request).await;
    assert_eq!(status, 401);
    assert_eq!(answer["code"], "invalid_signature");
    assert_eq!(server.publisher.attempts(), 0);
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json() {
    let server = start(config()).await;
    let (status, body) = server.get("/nope").await;
    assert_eq!(status, 404);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "not_found");

    let response = server
        .client
        .get(server.url(nowpilot_ingress::WEBHOOK_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers().get("allow").unwrap(), "POST");
    let body = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "method_not_allowed");

    let response = server
        .client
        .post(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    server.stop().await;
}

#[tokio::test]
async fn the_request_timeout_answers_503_but_the_publish_still_lands() {
    let server = start(IngressConfig {
        request_timeout: std::time::Duration::from_millis(300),
        ..config()
    })
    .await;
    server.publisher.set_mode(Mode::Hold);
    let body = payload(14, "beth.anglin");
    let request = signed_request(&event_id(14), now(), &body, SECRET_BYTES);
    let (status, headers, answer) = server.send_full(&request).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "request_timeout");
    assert!(headers.contains_key("retry-after"));

    // The publish was not abandoned with the request: once the broker confirms, the delivery
    // is remembered, and a resend is a duplicate rather than a second event.
    server.publisher.release(1);
    for _ in 0..500 {
        if !server.publisher.published().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(server.publisher.published().len(), 1);
    let resend = signed_request(&event_id(14), now(), &body, SECRET_BYTES);
    let (status, answer) = server.send(&resend).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "duplicate");

    // A client that never finishes its body is cut off by the same timeout.
    let mut slow = raw_head(&resend.headers, "content-length: 100\r\n");
    slow.extend_from_slice(b"{\"schema");
    let (status, body) = raw_exchange(server.addr, &slow).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("request_timeout"), "{body}");
    server.stop().await;
}
