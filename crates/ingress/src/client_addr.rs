//! Who is asking: the client address a request is attributed to, for rate limiting.
//!
//! The TCP peer is the client unless it is one of the configured `trusted_proxies`. Only then
//! is `X-Forwarded-For` read, right to left, skipping further trusted proxies: the first
//! address that is not a trusted proxy is the client. Entries left of it were written by the
//! client itself (or by anyone before it) and are never believed. A malformed entry stops the
//! walk at the last trusted hop, so garbage cannot make a request look like it came from
//! somewhere else.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use http::HeaderMap;

/// `X-Forwarded-For` entries looked at, at most; a longer chain is cut (the walk stops at the
/// last trusted hop), which bounds the work one request can cause.
const MAX_FORWARDED_HOPS: usize = 32;

/// The TCP peer of a connection, as the router's connect info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a block of one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address. Host bits are cleared (`10.1.2.3/8` is
    /// `10.0.0.0/8`), as most tools do.
    pub(crate) fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or block (e.g. 10.0.0.0/8)"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr {
            network: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `addr` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub(crate) fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix) == self.network
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`: a dual-stack listener reports IPv4 peers that way.
pub(crate) fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & kept))
        }
    }
}

/// Whether any block contains `addr`.
pub(crate) fn any_contains(blocks: &[Cidr], addr: IpAddr) -> bool {
    blocks.iter().any(|b| b.contains(addr))
}

/// The client address of a request from `peer` with `headers`.
pub(crate) fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let mut client = canonical(peer);
    if !any_contains(trusted, client) {
        return client;
    }
    // Every X-Forwarded-For header, in order, is one comma-separated list; the rightmost entry
    // was added by the nearest proxy.
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return client;
        };
        hops.extend(value.split(','));
    }
    for hop in hops.iter().rev().take(MAX_FORWARDED_HOPS) {
        let Some(addr) = parse_hop(hop) else {
            return client;
        };
        client = addr;
        if !any_contains(trusted, addr) {
            return addr;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(canonical(addr));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn blocks_parse_and_match() {
        let b = Cidr::parse("10.1.2.3/8").unwrap();
        assert_eq!(format!("{b:?}"), "10.0.0.0/8");
        assert!(b.contains(ip("10.255.0.1")));
        assert!(!b.contains(ip("11.0.0.1")));
        assert!(b.contains(ip("::ffff:10.0.0.9")));
        assert!(!b.contains(ip("::1")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "host.example",
            "10.0.0/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            client_addr(ip("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_addr(ip("198.51.100.1"), &headers, &[]),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn trusted_proxies_are_skipped_right_to_left() {
        let trusted = cidrs(&["10.0.0.0/8", "2001:db8::/32"]);
        let lb = ip("10.0.0.2");
        // spoofed, client, inner proxy
        let headers = forwarded(&["1.1.1.1, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(client_addr(lb, &headers, &trusted), ip("203.0.113.9"));
        // With a port, and IPv6 proxies.
        let headers = forwarded(&["[2001:db8::1]:443, 203.0.113.10:5555"]);
        assert_eq!(client_addr(lb, &headers, &trusted), ip("203.0.113.10"));
        // No header: the proxy itself.
        assert_eq!(client_addr(lb, &HeaderMap::new(), &trusted), lb);
        // Every hop trusted: the leftmost one.
        let headers = forwarded(&["10.9.9.9, 10.0.0.7"]);
        assert_eq!(client_addr(lb, &headers, &trusted), ip("10.9.9.9"));
        // Garbage stops the walk at the last trusted hop.
        let headers = forwarded(&["203.0.113.9, not-an-ip, 10.0.0.7"]);
        assert_eq!(client_addr(lb, &headers, &trusted), ip("10.0.0.7"));
        let headers = forwarded(&["unknown"]);
        assert_eq!(client_addr(lb, &headers, &trusted), lb);
        // Mapped addresses are IPv4.
        assert_eq!(
            client_addr(
                ip("::ffff:10.0.0.2"),
                &forwarded(&["203.0.113.9"]),
                &trusted
            ),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_long_chain_is_cut() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let mut chain = vec!["203.0.113.9".to_owned()];
        chain.extend((0..100).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)));
        let headers = forwarded(&[chain.join(", ").as_str()]);
        let client = client_addr(ip("10.0.0.1"), &headers, &trusted);
        assert!(trusted[0].contains(client), "{client}");
    }
}
