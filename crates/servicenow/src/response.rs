//! Turning a raw HTTP answer (status, headers, body bytes) into records or a typed [`Error`].
//!
//! These functions are total: any status, any header values and any bytes (HTML, empty,
//! truncated JSON, `{"result":42}`, megabytes of garbage, invalid UTF-8) give a value or an
//! error, never a panic. They are public so that fuzz targets and tests can drive them
//! without a network.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use nowpilot_model::Record;
use serde_json::Value;

use crate::error::{ApiMessage, Error, RequestContext};

/// The most of a body kept for an error message.
pub const EXCERPT_LIMIT: usize = 1024;

/// At most [`EXCERPT_LIMIT`] bytes of `body` as text: invalid UTF-8 replaced, whitespace runs
/// collapsed, cut on a character boundary (with `…` when cut).
pub fn excerpt(body: &[u8]) -> String {
    let head = body
        .get(..EXCERPT_LIMIT.min(body.len()))
        .unwrap_or_default();
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if body.len() > EXCERPT_LIMIT {
        out.push('…');
    }
    out
}

/// Cuts a server-provided string to about [`EXCERPT_LIMIT`] bytes.
fn bounded(mut s: String) -> String {
    if s.len() > EXCERPT_LIMIT {
        let mut cut = EXCERPT_LIMIT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn json_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(bounded(s.clone())),
        other => Some(bounded(other.to_string())),
    }
}

/// The explanation in an error body: the Table API envelope
/// `{"error":{"message","detail"},"status":"failure"}`, the OAuth shape
/// `{"error":"…","error_description":"…"}`, or else an excerpt of the body.
pub fn api_message(body: &[u8]) -> ApiMessage {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        match map.get("error") {
            Some(Value::Object(err)) => {
                return ApiMessage {
                    message: err.get("message").and_then(json_text).unwrap_or_default(),
                    detail: err.get("detail").and_then(json_text),
                };
            }
            Some(Value::String(code)) => {
                return ApiMessage {
                    message: bounded(code.clone()),
                    detail: map.get("error_description").and_then(json_text),
                };
            }
            _ => {}
        }
    }
    ApiMessage {
        message: excerpt(body),
        detail: None,
    }
}

/// How long a 429 asks the client to wait: `Retry-After` (seconds or an HTTP date), else
/// `X-RateLimit-Reset` (Unix seconds; milliseconds are recognised by their size). `now` is
/// passed in so that tests are deterministic. A time in the past gives zero.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(value) = header("retry-after") {
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(secs) = value.parse::<f64>()
            && secs.is_finite()
            && secs >= 0.0
        {
            return Duration::try_from_secs_f64(secs).ok();
        }
        if let Ok(date) = chrono::DateTime::parse_from_rfc2822(value) {
            let at = u64::try_from(date.timestamp()).unwrap_or(0);
            return Some(until_unix(now, Duration::from_secs(at)));
        }
    }
    if let Some(value) = header("x-ratelimit-reset")
        && let Ok(n) = value.parse::<u64>()
    {
        // Some gateways send milliseconds; ServiceNow documents seconds.
        let at = if n > 100_000_000_000 {
            Duration::from_millis(n)
        } else {
            Duration::from_secs(n)
        };
        return Some(until_unix(now, at));
    }
    None
}

fn until_unix(now: SystemTime, at: Duration) -> Duration {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    at.saturating_sub(now)
}

/// `X-Total-Count`, when present and numeric.
pub fn total_count(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("x-total-count")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The `sysparm_offset` of the `rel="next"` entry of a `Link` header, when there is one.
pub fn next_offset(headers: &HeaderMap) -> Option<u64> {
    for value in headers.get_all("link") {
        let Ok(text) = value.to_str() else { continue };
        for entry in text.split(',') {
            let mut parts = entry.split(';');
            let Some(target) = parts.next() else { continue };
            let is_next = parts.any(|p| {
                let p = p.trim();
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            if !is_next {
                continue;
            }
            let target = target.trim().trim_start_matches('<').trim_end_matches('>');
            let Ok(url) = url::Url::parse(target) else {
                continue;
            };
            if let Some((_, v)) = url.query_pairs().find(|(k, _)| k == "sysparm_offset") {
                return v.parse().ok();
            }
        }
    }
    None
}

/// Checks the status: `Ok` for 2xx, otherwise the typed error built from the body.
pub fn check_status(
    context: &RequestContext,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Error> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let wait = if status == 429 {
        retry_after(headers, SystemTime::now())
    } else {
        None
    };
    Err(Error::from_status(
        context.clone(),
        status,
        wait,
        api_message(body),
    ))
}

/// The `result` member of a successful answer. A 2xx body that carries an `error` envelope
/// instead (some proxies and quota cancellations do this) is an error too.
fn result_value(
    context: &RequestContext,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Error> {
    check_status(context, status, headers, body)?;
    let decode = |reason: String| Error::Decode {
        context: context.clone(),
        status,
        reason,
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        if body.iter().all(u8::is_ascii_whitespace) {
            decode("the body is empty".to_owned())
        } else {
            decode(format!("not JSON ({e}): {}", excerpt(body)))
        }
    })?;
    let Value::Object(mut map) = value else {
        return Err(decode(format!(
            "expected a JSON object with \"result\", got {}",
            excerpt(body)
        )));
    };
    if let Some(result) = map.remove("result") {
        return Ok(result);
    }
    if map.get("error").is_some() {
        return Err(Error::Status {
            context: context.clone(),
            status,
            api: api_message(body),
        });
    }
    Err(decode(format!("no \"result\" member: {}", excerpt(body))))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn to_record(value: Value) -> Option<Record> {
    match value {
        Value::Object(_) => serde_json::from_value(value).ok(),
        _ => None,
    }
}

/// The well-formed answers, decoded straight into records (no intermediate `Value` tree: this
/// is the hot path of every call). Anything else takes the slow path for a precise error.
#[derive(serde::Deserialize)]
struct OneRecord {
    result: Record,
}

#[derive(serde::Deserialize)]
struct ManyRecords {
    result: Vec<Record>,
}

/// Decodes a single-record answer (`{"result": {...}}`).
pub fn decode_record(
    context: &RequestContext,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Record, Error> {
    if (200..300).contains(&status)
        && let Ok(one) = serde_json::from_slice::<OneRecord>(body)
    {
        return Ok(one.result);
    }
    let result = result_value(context, status, headers, body)?;
    let what = kind(&result);
    to_record(result).ok_or_else(|| Error::Decode {
        context: context.clone(),
        status,
        reason: format!("\"result\" is {what}, expected an object"),
    })
}

/// Decodes a list answer (`{"result": [{...}, ...]}`).
pub fn decode_records(
    context: &RequestContext,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<Record>, Error> {
    if (200..300).contains(&status)
        && let Ok(many) = serde_json::from_slice::<ManyRecords>(body)
    {
        return Ok(many.result);
    }
    let result = result_value(context, status, headers, body)?;
    let Value::Array(items) = result else {
        return Err(Error::Decode {
            context: context.clone(),
            status,
            reason: format!("\"result\" is {}, expected an array", kind(&result)),
        });
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let what = kind(&item);
            to_record(item).ok_or_else(|| Error::Decode {
                context: context.clone(),
                status,
                reason: format!("\"result\"[{i}] is {what}, expected an object"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ctx() -> RequestContext {
        RequestContext::new("GET", "incident")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn envelope_message_and_null_detail() {
        let m = api_message(
            br#"{"error":{"message":"No Record found","detail":null},"status":"failure"}"#,
        );
        assert_eq!(m.message, "No Record found");
        assert_eq!(m.detail, None);
        let m = api_message(br#"{"error":"server_error","error_description":"access_denied"}"#);
        assert_eq!(
            (m.message.as_str(), m.detail.as_deref()),
            ("server_error", Some("access_denied"))
        );
        let m = api_message(b"<html><body>\n  <h1>503 Service Unavailable</h1></body></html>");
        assert_eq!(
            m.message,
            "<html><body> <h1>503 Service Unavailable</h1></body></html>"
        );
    }

    #[test]
    fn huge_messages_are_bounded() {
        let long = "x".repeat(10_000);
        let body = format!(r#"{{"error":{{"message":"{long}","detail":"{long}"}}}}"#);
        let m = api_message(body.as_bytes());
        assert!(
            m.message.len() <= EXCERPT_LIMIT + 4 && m.detail.unwrap().len() <= EXCERPT_LIMIT + 4
        );
        let e = excerpt("é".repeat(2000).as_bytes());
        assert!(e.len() <= EXCERPT_LIMIT + 4);
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "0.5")]), now),
            Some(Duration::from_millis(500))
        );
        let date = chrono::DateTime::from_timestamp(1_700_000_030, 0)
            .unwrap()
            .to_rfc2822();
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(30))
        );
        let gmt = date.replace("+0000", "GMT");
        assert_eq!(
            retry_after(&headers(&[("retry-after", &gmt)]), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "1700000012")]), now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "1700000012000")]), now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "5")]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1e400")]), now),
            None
        );
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn link_header_next_offset() {
        let h = headers(&[(
            "link",
            "<https://x/api/now/v2/table/incident?sysparm_limit=1000&sysparm_offset=0>;rel=\"first\",<https://x/api/now/v2/table/incident?sysparm_limit=1000&sysparm_offset=1000>;rel=\"next\",<https://x/api/now/v2/table/incident?sysparm_limit=1000&sysparm_offset=2000>;rel=\"last\"",
        )]);
        assert_eq!(next_offset(&h), Some(1000));
        assert_eq!(
            next_offset(&headers(&[("link", "garbage;;,<>;rel=\"next\"")])),
            None
        );
        assert_eq!(
            total_count(&headers(&[("x-total-count", " 2500 ")])),
            Some(2500)
        );
        assert_eq!(total_count(&headers(&[("x-total-count", "many")])), None);
    }

    #[test]
    fn decodes_and_refuses_shapes() {
        let h = HeaderMap::new();
        let recs = decode_records(
            &ctx(),
            200,
            &h,
            br#"{"result":[{"number":"INC1"},{"number":"INC2"}]}"#,
        )
        .unwrap();
        assert_eq!(recs.len(), 2);
        let rec = decode_record(&ctx(), 201, &h, br#"{"result":{"sys_id":"a"}}"#).unwrap();
        assert_eq!(rec.sys_id(), Some("a"));
        for body in [
            &b"{\"result\":42}"[..],
            b"{\"result\":[1]}",
            b"[]",
            b"",
            b"{\"result\":[{\"a\":\"b\"}",
            b"\xff\xfe",
        ] {
            let e = decode_records(&ctx(), 200, &h, body).unwrap_err();
            assert!(matches!(e, Error::Decode { .. }), "{e:?}");
        }
        let e = decode_record(&ctx(), 200, &h, br#"{"result":[]}"#).unwrap_err();
        assert!(matches!(e, Error::Decode { .. }));
        let e = decode_records(&ctx(), 200, &h, br#"{"error":{"message":"Transaction cancelled: maximum execution time exceeded"},"status":"failure"}"#).unwrap_err();
        assert!(
            matches!(e, Error::Status { status: 200, .. }) && e.is_retryable(),
            "{e:?}"
        );
    }
}
