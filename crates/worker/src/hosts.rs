//! The outbound allow-list: which hosts investigation steps may contact.
//!
//! Every URL a step uses comes from the configuration, never from an incident; the allow-list
//! is the second line of defence, checked when the configuration loads and again right before
//! each request, on the very [`Url`] that is sent.

use std::net::IpAddr;

use url::Url;

/// Allowed host names: exact, or `*.suffix` for any subdomain of `suffix`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    exact: Vec<String>,
    /// Stored with the leading dot: `.example.com`.
    suffixes: Vec<String>,
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl AllowedHosts {
    /// Parses config entries; an error is `(index, reason)`.
    pub fn parse(entries: &[String]) -> Result<Self, (usize, String)> {
        let mut hosts = AllowedHosts::default();
        for (i, entry) in entries.iter().enumerate() {
            let entry = entry.trim().to_ascii_lowercase();
            if let Some(suffix) = entry.strip_prefix("*.") {
                if !valid_dns_name(suffix) || !suffix.contains('.') {
                    return Err((
                        i,
                        "a wildcard must look like *.example.com (a domain with at least two labels)"
                            .into(),
                    ));
                }
                hosts.suffixes.push(format!(".{suffix}"));
                continue;
            }
            let bare = entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .unwrap_or(&entry);
            if bare.parse::<IpAddr>().is_ok() || valid_dns_name(bare) {
                hosts.exact.push(bare.to_owned());
            } else {
                return Err((
                    i,
                    "must be a host name (status.example.com), an IP address, or *.example.com; no scheme, port or path"
                        .into(),
                ));
            }
        }
        Ok(hosts)
    }

    /// Whether `host` (lowercase, IPv6 without brackets) may be contacted.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        self.exact.iter().any(|h| h == host)
            || self
                .suffixes
                .iter()
                .any(|s| host.ends_with(s.as_str()) && host.len() > s.len())
    }

    /// Parses `raw` and checks it: `http(s)`, no credentials, an allowed host. Returns the URL
    /// to send, or why it is refused.
    pub fn check_url(&self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("is not a valid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must use http:// or https://".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials (user@host)".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("has no host".into()),
        };
        if self.allows(&host) {
            Ok(url)
        } else {
            Err(format!(
                "host {host:?} is not in [worker] allowed_hosts; add it there if nowpilot may contact it"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_and_wildcard_matching() {
        let h = hosts(&["status.example.com", "*.corp.example", "127.0.0.1", "[::1]"]);
        assert!(h.allows("status.example.com"));
        assert!(h.allows("STATUS.example.com"));
        assert!(!h.allows("example.com"));
        assert!(!h.allows("evil-status.example.com"));
        assert!(h.allows("a.corp.example"));
        assert!(h.allows("b.a.corp.example"));
        assert!(!h.allows("corp.example"));
        assert!(!h.allows("xcorp.example"));
        assert!(h.allows("127.0.0.1"));
        assert!(h.allows("::1"));
        assert!(!h.allows("127.0.0.2"));
    }

    #[test]
    fn urls_are_checked_on_the_parsed_host() {
        let h = hosts(&["status.example.com"]);
        assert!(h.check_url("https://status.example.com/health").is_ok());
        assert!(h.check_url("https://status.example.com:8443/x?y=1").is_ok());
        for bad in [
            "https://evil.com/",
            "https://status.example.com.evil.com/",
            "https://evil.com\\@status.example.com/",
            "https://user:pw@status.example.com/",
            "ftp://status.example.com/",
            "status.example.com/health",
            "",
        ] {
            assert!(h.check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_entries_name_their_index() {
        for (entries, index) in [
            (vec!["ok.example.com", "https://x.com"], 1),
            (vec!["*"], 0),
            (vec!["*.com"], 0),
            (vec!["a.com", "b.com", "host:8080"], 2),
            (vec![""], 0),
            (vec!["a b.com"], 0),
        ] {
            let entries: Vec<String> = entries.into_iter().map(str::to_owned).collect();
            assert_eq!(AllowedHosts::parse(&entries).unwrap_err().0, index);
        }
    }
}
