//! The instance base URL, checked once so that every request URL built from it is sound.
//!
//! Operators paste instance URLs from a browser: with a trailing slash, with a path to a UI
//! page, with `http://`. A trailing slash doubles the `/` in every API path, and a path or a
//! query would send every call somewhere else, so the rules are strict and each refusal says
//! how to fix the value.

use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};
use url::Url;

/// A validated ServiceNow instance base URL, e.g. `https://acme.service-now.com`.
///
/// Always `https://`, except for loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) where plain
/// `http://` is allowed for the simulator and local tests. No path, query, fragment or user info.
#[derive(Clone)]
pub struct InstanceUrl {
    url: Url,
    base: String,
    adjustments: Vec<UrlAdjustment>,
}

/// A harmless change [`InstanceUrl::parse`] made to the text it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UrlAdjustment {
    /// Leading or trailing whitespace was removed.
    TrimmedWhitespace,
    /// One or more trailing `/` were removed.
    RemovedTrailingSlash,
}

impl fmt::Display for UrlAdjustment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlAdjustment::TrimmedWhitespace => "surrounding whitespace was removed",
            UrlAdjustment::RemovedTrailingSlash => "the trailing slash was removed",
        })
    }
}

/// Why a text is not a usable instance URL. Each message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceUrlError {
    /// Nothing was given.
    #[error(
        "the instance URL is empty: set it to the instance root, e.g. https://acme.service-now.com"
    )]
    Empty,
    /// The text has no `scheme://`.
    #[error("the instance URL {given:?} has no scheme: write it as https://{given}")]
    MissingScheme {
        /// The text as given (trimmed).
        given: String,
    },
    /// The text is not a URL at all.
    #[error(
        "the instance URL {given:?} is not a valid URL ({reason}): use the instance root, e.g. https://acme.service-now.com"
    )]
    Invalid {
        /// The text as given (trimmed).
        given: String,
        /// What the URL parser objected to.
        reason: String,
    },
    /// A scheme other than https (or http on a loopback host).
    #[error(
        "the instance URL must use https:// (got {scheme}://); plain http is only allowed for localhost, 127.0.0.0/8 and ::1, because credentials would otherwise cross the network unencrypted"
    )]
    InsecureScheme {
        /// The scheme that was given.
        scheme: String,
    },
    /// `user:password@` in the URL.
    #[error(
        "the instance URL must not contain user info (user:password@): remove it and put the credentials in username/password or the *_file keys"
    )]
    UserInfo,
    /// A `?query`.
    #[error(
        "the instance URL must not contain a query string (?...): use only the instance root, e.g. https://acme.service-now.com"
    )]
    Query,
    /// A `#fragment`.
    #[error(
        "the instance URL must not contain a fragment (#...): use only the instance root, e.g. https://acme.service-now.com"
    )]
    Fragment,
    /// A path such as `/now/nav/ui/home` copied from the browser.
    #[error(
        "the instance URL must be the instance root without a path (got path {path:?}): remove everything after the host, e.g. https://acme.service-now.com"
    )]
    Path {
        /// The path that was given.
        path: String,
    },
    /// No host name.
    #[error(
        "the instance URL has no host: use the instance root, e.g. https://acme.service-now.com"
    )]
    MissingHost,
}

impl InstanceUrl {
    /// Parses and checks an instance URL. Surrounding whitespace and trailing slashes are
    /// removed (see [`InstanceUrl::adjustments`] for what was changed, so callers can tell the
    /// operator); everything else that would make API paths wrong is refused.
    pub fn parse(text: &str) -> Result<InstanceUrl, InstanceUrlError> {
        let mut adjustments = Vec::new();
        let trimmed = text.trim();
        if trimmed.len() != text.len() {
            adjustments.push(UrlAdjustment::TrimmedWhitespace);
        }
        if trimmed.is_empty() {
            return Err(InstanceUrlError::Empty);
        }
        let without_slash = trimmed.trim_end_matches('/');
        if without_slash.len() != trimmed.len() {
            adjustments.push(UrlAdjustment::RemovedTrailingSlash);
        }
        if !trimmed.contains("://") {
            return Err(InstanceUrlError::MissingScheme {
                given: without_slash.to_owned(),
            });
        }
        let url = Url::parse(without_slash).map_err(|e| InstanceUrlError::Invalid {
            given: without_slash.to_owned(),
            reason: e.to_string(),
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InstanceUrlError::UserInfo);
        }
        if url.query().is_some() {
            return Err(InstanceUrlError::Query);
        }
        if url.fragment().is_some() {
            return Err(InstanceUrlError::Fragment);
        }
        let host = url.host_str().ok_or(InstanceUrlError::MissingHost)?;
        if host.is_empty() {
            return Err(InstanceUrlError::MissingHost);
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(host) => {}
            other => {
                return Err(InstanceUrlError::InsecureScheme {
                    scheme: other.to_owned(),
                });
            }
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(InstanceUrlError::Path {
                path: url.path().to_owned(),
            });
        }
        let base = url.as_str().trim_end_matches('/').to_owned();
        Ok(InstanceUrl {
            url,
            base,
            adjustments,
        })
    }

    /// The base URL without a trailing slash, e.g. `https://acme.service-now.com`.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// The base URL as a [`Url`] (its path is `/`).
    pub fn as_url(&self) -> &Url {
        &self.url
    }

    /// The host name.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// What [`InstanceUrl::parse`] changed in the text it was given (empty when nothing).
    pub fn adjustments(&self) -> &[UrlAdjustment] {
        &self.adjustments
    }

    /// The URL of `path_segments` below the base; each segment is percent-encoded, so a
    /// segment can never escape into another path or add a query.
    pub fn endpoint<'a>(&self, path_segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.clear();
            segments.extend(path_segments);
        }
        url
    }
}

/// `localhost`, any `127.x.y.z` and `::1`.
fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl PartialEq for InstanceUrl {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base
    }
}

impl Eq for InstanceUrl {}

impl std::hash::Hash for InstanceUrl {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.base.hash(state);
    }
}

impl fmt::Debug for InstanceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InstanceUrl").field(&self.base).finish()
    }
}

impl fmt::Display for InstanceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

impl Serialize for InstanceUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.base)
    }
}

impl std::str::FromStr for InstanceUrl {
    type Err = InstanceUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstanceUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_instance_root() {
        let u = InstanceUrl::parse("https://acme.service-now.com").unwrap();
        assert_eq!(u.as_str(), "https://acme.service-now.com");
        assert_eq!(u.host(), "acme.service-now.com");
        assert!(u.adjustments().is_empty());
    }

    #[test]
    fn trims_and_reports() {
        let u = InstanceUrl::parse("  https://acme.service-now.com//\n").unwrap();
        assert_eq!(u.as_str(), "https://acme.service-now.com");
        assert_eq!(
            u.adjustments(),
            &[
                UrlAdjustment::TrimmedWhitespace,
                UrlAdjustment::RemovedTrailingSlash
            ]
        );
    }

    #[test]
    fn http_only_on_loopback() {
        for ok in [
            "http://localhost:8080",
            "http://127.0.0.1:1234",
            "http://127.1.2.3",
            "http://[::1]:9000",
            "http://LOCALHOST",
        ] {
            InstanceUrl::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://acme.service-now.com",
            "http://10.0.0.1",
            "ftp://localhost",
        ] {
            assert!(
                matches!(
                    InstanceUrl::parse(bad),
                    Err(InstanceUrlError::InsecureScheme { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_what_would_misroute_requests() {
        assert_eq!(InstanceUrl::parse("  "), Err(InstanceUrlError::Empty));
        assert!(matches!(
            InstanceUrl::parse("acme.service-now.com"),
            Err(InstanceUrlError::MissingScheme { .. })
        ));
        assert_eq!(
            InstanceUrl::parse("https://u:p@acme.service-now.com"),
            Err(InstanceUrlError::UserInfo)
        );
        assert_eq!(
            InstanceUrl::parse("https://acme.service-now.com?x=1"),
            Err(InstanceUrlError::Query)
        );
        assert_eq!(
            InstanceUrl::parse("https://acme.service-now.com#top"),
            Err(InstanceUrlError::Fragment)
        );
        assert!(matches!(
            InstanceUrl::parse("https://acme.service-now.com/now/nav/ui/home"),
            Err(InstanceUrlError::Path { .. })
        ));
        assert!(matches!(
            InstanceUrl::parse("https://"),
            Err(InstanceUrlError::Invalid { .. } | InstanceUrlError::MissingHost)
        ));
    }

    #[test]
    fn error_messages_explain_the_fix() {
        let e = InstanceUrl::parse("acme.service-now.com").unwrap_err();
        assert!(
            e.to_string().contains("https://acme.service-now.com"),
            "{e}"
        );
        let e = InstanceUrl::parse("http://acme.service-now.com").unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
    }

    #[test]
    fn endpoints_encode_segments() {
        let u = InstanceUrl::parse("https://acme.service-now.com").unwrap();
        let url = u.endpoint(["api", "now", "v2", "table", "incident", "a/b?c"]);
        assert_eq!(
            url.as_str(),
            "https://acme.service-now.com/api/now/v2/table/incident/a%2Fb%3Fc"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "://",
            "https://:0",
            "https://[",
            "\u{0}",
            "h://x/y?z#w",
            "https://a b",
        ] {
            let _ = InstanceUrl::parse(s);
        }
    }
}
