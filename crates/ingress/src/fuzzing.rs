//! Entry points for the fuzz targets in `fuzz/` (not a stable API).
//!
//! They reach code that is private to the crate (the signature verifier, the client-address
//! walk) with plain inputs, so the fuzzer explores them directly instead of through HTTP.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::client_addr::{Cidr, client_addr};
use crate::verify::{SigningKey, Verified, Verifier};

/// Verifies `body` with `headers` at `now_unix` against Standard Webhooks `secrets` (raw key
/// bytes) and, optionally, the body-only scheme (`header name`, key bytes). `Ok` carries the
/// dedupe key of an accepted request (the `webhook-id`, or `""` for the body-only scheme),
/// `Err` the failure reason as counted in metrics, or `"config"` when the keys are unusable.
pub fn verify(
    secrets: &[&[u8]],
    body_secret: Option<(&str, &[u8])>,
    tolerance_secs: i64,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<String, &'static str> {
    let mut keys = Vec::with_capacity(secrets.len());
    for secret in secrets {
        keys.push(SigningKey::new(secret).map_err(|_| "config")?);
    }
    let body_key = match body_secret {
        None => None,
        Some((name, key)) => {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "config")?;
            Some((name, SigningKey::new(key).map_err(|_| "config")?))
        }
    };
    let verifier = Verifier::new(keys, tolerance_secs, body_key);
    match verifier.verify(headers, body, now_unix) {
        Ok(Verified::Standard { webhook_id }) => Ok(webhook_id),
        Ok(Verified::BodyOnly) => Ok(String::new()),
        Err(failure) => Err(failure.as_str()),
    }
}

/// The client address rate limiting attributes a request from `peer` to, believing
/// `X-Forwarded-For` only from `trusted_proxies` (CIDR text); `None` if a block is invalid.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted_proxies: &[&str],
) -> Option<IpAddr> {
    let trusted = trusted_proxies
        .iter()
        .map(|t| Cidr::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(client_addr(peer, headers, &trusted))
}
