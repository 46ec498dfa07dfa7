//! Every error envelope and malformed body gives a typed error, never a panic.

use http::HeaderMap;
use nowpilot_servicenow::auth::parse_token_response;
use nowpilot_servicenow::response::{EXCERPT_LIMIT, api_message, decode_record, decode_records};
use nowpilot_servicenow::{Error, ListRequest, ReadOptions, RequestContext};

use crate::fake::*;

async fn get_with(reply: Reply) -> Error {
    let fake = Fake::start(move |_| reply.clone()).await;
    let options = nowpilot_servicenow::ClientOptions {
        get_retries: 0,
        ..fast_options()
    };
    fake.client(basic_credentials(), options)
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err()
}

async fn list_with(reply: Reply) -> Error {
    let fake = Fake::start(move |_| reply.clone()).await;
    let options = nowpilot_servicenow::ClientOptions {
        get_retries: 0,
        ..fast_options()
    };
    fake.client(basic_credentials(), options)
        .list("incident", &ListRequest::new())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn envelopes_map_to_variants() {
    let e = get_with(Reply::envelope(
        401,
        "User Not Authenticated",
        Some("Required to provide Auth information"),
    ))
    .await;
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("Required to provide Auth information")
    );

    let e = get_with(Reply::envelope(
        403,
        "Operation Failed",
        Some("Data Policy Exception: mandatory: Resolution code"),
    ))
    .await;
    assert!(e.is_data_policy() && !e.is_acl(), "{e:?}");
    let e = get_with(Reply::envelope(
        403,
        "Operation Failed",
        Some("ACL Exception Update Failed due to security constraints"),
    ))
    .await;
    assert!(e.is_acl() && !e.is_data_policy(), "{e:?}");
    let e = get_with(Reply::envelope(
        403,
        "User Not Authorized",
        Some("Failed API level ACL Validation"),
    ))
    .await;
    assert!(e.is_acl());

    let e = get_with(Reply::envelope(404, "No Record found", None)).await;
    match &e {
        Error::NotFound { api, .. } => assert_eq!(
            (api.message.as_str(), api.detail.as_deref()),
            ("No Record found", None)
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().contains("ACL"),
        "404 wording must mention ACLs: {e}"
    );

    let e = list_with(Reply::envelope(
        400,
        "Invalid table sys_nonexistent",
        Some("Table sys_nonexistent does not exist"),
    ))
    .await;
    assert!(matches!(e, Error::BadRequest { .. }) && !e.is_retryable());

    let e = get_with(Reply::envelope(
        500,
        "Transaction cancelled: maximum execution time exceeded",
        None,
    ))
    .await;
    assert!(matches!(e, Error::Server { status: 500, .. }) && e.is_retryable());
    let e = list_with(Reply::envelope(
        400,
        "Transaction cancelled: maximum execution time exceeded",
        None,
    ))
    .await;
    assert!(matches!(e, Error::BadRequest { .. }) && e.is_retryable());

    let e = get_with(Reply::envelope(405, "Method not Supported", None)).await;
    assert!(matches!(e, Error::Status { status: 405, .. }) && !e.is_retryable());

    let e = get_with(Reply::raw(302, "").header("Location", "https://login.example/")).await;
    assert!(matches!(e, Error::Status { status: 302, .. }), "{e:?}");
}

#[tokio::test]
async fn malformed_success_bodies_are_decode_errors() {
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"<html><body>Log in</body></html>".to_vec(),
        br#"{"result":[{"number":"INC1"},"#.to_vec(),
        br#"{"result":42}"#.to_vec(),
        b"\xff\xfe\xfd not utf-8".to_vec(),
        br#"{"records":[]}"#.to_vec(),
    ];
    for body in bodies {
        let e = list_with(Reply::raw(200, body.clone())).await;
        assert!(
            matches!(e, Error::Decode { status: 200, .. }),
            "{body:?}: {e:?}"
        );
        assert!(e.to_string().len() < 2 * EXCERPT_LIMIT, "{e}");
    }
    // A 200 whose body is the quota cancellation text is retryable.
    let e = list_with(Reply::raw(
        200,
        "Transaction cancelled: maximum execution time exceeded",
    ))
    .await;
    assert!(e.is_retryable(), "{e:?}");
}

#[tokio::test]
async fn huge_bodies_are_bounded() {
    let big = vec![b'x'; 5 * 1024 * 1024];
    let e = list_with(Reply::raw(200, big.clone())).await;
    assert!(matches!(e, Error::Decode { .. }));
    assert!(e.to_string().len() < 2 * EXCERPT_LIMIT);
    let e = get_with(Reply::raw(500, big)).await;
    assert!(matches!(e, Error::Server { status: 500, .. }));
    assert!(e.to_string().len() < 2 * EXCERPT_LIMIT);

    // A success body over the client's limit is refused without reading it all.
    let fake = Fake::start(|_| {
        Reply::json(
            200,
            serde_json::json!({"result": [{"a": "x".repeat(4096)}]}),
        )
    })
    .await;
    let options = nowpilot_servicenow::ClientOptions {
        max_response_bytes: 1024,
        ..fast_options()
    };
    let e = fake
        .client(basic_credentials(), options)
        .list("incident", &ListRequest::new())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("larger than 1024 bytes"), "{e}");
}

/// A deterministic generator so the corpus is the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut body = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 => body.truncate(rng.below(body.len() + 1)),
            1 if !body.is_empty() => {
                let i = rng.below(body.len());
                body[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(body.len() + 1);
                let alphabet = b"{}[]\":,\\ \xff\xc3nulltrue0";
                let junk: Vec<u8> = (0..rng.below(8))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect();
                body.splice(i..i, junk);
            }
            3 if !body.is_empty() => {
                let a = rng.below(body.len());
                let b = a + rng.below(body.len() - a);
                let slice = body[a..b].to_vec();
                body.extend_from_slice(&slice);
            }
            4 if !body.is_empty() => {
                let i = rng.below(body.len());
                body.remove(i);
            }
            _ => body.reverse(),
        }
    }
    body
}

#[test]
fn a_corpus_of_mutated_bodies_never_panics() {
    let seeds: Vec<&[u8]> = vec![
        br#"{"result":[{"sys_id":"a","cmdb_ci":{"link":"l","value":"v"},"n":"1"}]}"#,
        br#"{"result":{"sys_id":"a","assigned_to":{"display_value":"Beth","value":"b"}}}"#,
        br#"{"error":{"message":"No Record found","detail":null},"status":"failure"}"#,
        br#"{"error":{"message":"Operation Failed","detail":"Data Policy Exception: mandatory: Resolution code"},"status":"failure"}"#,
        br#"{"error":"server_error","error_description":"access_denied"}"#,
        br#"{"access_token":"x","refresh_token":"y","expires_in":1799,"token_type":"Bearer"}"#,
        b"<html><head><title>502</title></head><body>Bad Gateway</body></html>",
        b"Transaction cancelled: maximum execution time exceeded",
        b"",
    ];
    let statuses = [
        200u16, 201, 204, 302, 400, 401, 403, 404, 405, 429, 500, 502, 503, 504, 599, 0, 999,
    ];
    let context = RequestContext::new("GET", "incident");
    let headers = HeaderMap::new();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0usize;
    let mut failed = 0usize;
    for round in 0..4000 {
        let seed = seeds[round % seeds.len()];
        let body = mutate(seed, &mut rng);
        let status = statuses[rng.below(statuses.len())];
        let message = api_message(&body);
        assert!(message.message.len() <= EXCERPT_LIMIT + 4);
        for outcome in [
            decode_records(&context, status, &headers, &body).map(|_| ()),
            decode_record(&context, status, &headers, &body).map(|_| ()),
        ] {
            match outcome {
                Ok(()) => {
                    decoded += 1;
                    assert!((200..300).contains(&status));
                }
                Err(e) => {
                    failed += 1;
                    let text = e.to_string();
                    assert!(text.len() < 3 * EXCERPT_LIMIT, "{text}");
                    let _ = e.classification();
                }
            }
        }
        if let Err(e) = parse_token_response(status, &body) {
            assert!(e.to_string().len() < 4 * EXCERPT_LIMIT);
        }
    }
    // The corpus exercises both paths.
    assert!(
        decoded > 0 && failed > 0,
        "decoded {decoded}, failed {failed}"
    );
}
