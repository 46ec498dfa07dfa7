//! Turning the configured URL into lapin's `AMQPUri` without ever printing the password.
//!
//! amq-protocol-uri's own parse errors can quote the whole URL (password included), so its
//! messages are never passed on. It also maps an IP-address host to `localhost` (it only reads
//! `Url::domain()`), which would send `127.0.0.1` to `::1` on some resolvers; the host is set
//! from `Url::host_str()` instead.

use std::time::Duration;

use lapin::uri::AMQPUri;
use secrecy::{ExposeSecret, SecretString};

use crate::config::redact_url;
use crate::error::QueueError;

/// The largest AMQP frame nowpilot proposes, unless the URL sets `frame_max`. lapin keeps
/// two buffers of 32 frames per connection, zero-filled up front: at RabbitMQ's default of
/// 128 KiB that is 8 MiB of resident memory per connection; at 32 KiB, 2 MiB. Events are a
/// few KiB, and a larger body simply travels in several frames.
const DEFAULT_FRAME_MAX: u32 = 32 * 1024;

/// Parses `url` and applies the heartbeat, the connection timeout and the frame size.
pub(crate) fn parse(
    url: &SecretString,
    heartbeat: Duration,
    connect_timeout: Duration,
) -> Result<AMQPUri, QueueError> {
    parse_url(url, heartbeat, connect_timeout)
        .map_err(|reason| QueueError::Config(format!("queue.url: {reason}")))
}

/// [`parse`], failing with the reason alone (the redacted URL and what is wrong with it).
pub(crate) fn parse_url(
    url: &SecretString,
    heartbeat: Duration,
    connect_timeout: Duration,
) -> Result<AMQPUri, String> {
    let raw = url.expose_secret();
    let invalid = |what: &str| format!("{} is invalid: {what}", redact_url(raw));
    let parsed = url::Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "amqp" | "amqps") {
        return Err(invalid("the scheme must be amqp or amqps"));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("it has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let mut uri: AMQPUri = raw
        .parse()
        .map_err(|_| invalid("it is not an AMQP URL (check the port, vhost and query)"))?;
    uri.authority.host = host;
    uri.query.heartbeat = Some(
        u16::try_from(heartbeat.as_secs())
            .unwrap_or(u16::MAX)
            .max(1),
    );
    uri.query.connection_timeout =
        Some(u64::try_from(connect_timeout.as_millis()).unwrap_or(u64::MAX));
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(DEFAULT_FRAME_MAX);
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ip_hosts_and_sets_parameters() {
        let uri = parse(
            &SecretString::from("amqp://u:p%40ss@127.0.0.1:5673/%2f"),
            Duration::from_secs(15),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(uri.authority.host, "127.0.0.1");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.authority.userinfo.password, "p@ss");
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.query.heartbeat, Some(15));
        assert_eq!(uri.query.connection_timeout, Some(5000));
        assert_eq!(uri.query.frame_max, Some(DEFAULT_FRAME_MAX));
    }

    #[test]
    fn a_frame_max_in_the_url_wins() {
        let uri = parse(
            &SecretString::from("amqp://u:p@127.0.0.1:5672/%2f?frame_max=131072"),
            Duration::from_secs(15),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(uri.query.frame_max, Some(131_072));
    }

    #[test]
    fn errors_never_quote_the_password() {
        for bad in [
            "amqp://u:hunter2@",
            "http://u:hunter2@host/",
            "amqp://u:hunter2@host:5672/%2f?heartbeat=abc",
            "not a url hunter2",
        ] {
            let err = parse(
                &SecretString::from(bad),
                Duration::from_secs(1),
                Duration::from_secs(1),
            )
            .unwrap_err()
            .to_string();
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
    }
}
