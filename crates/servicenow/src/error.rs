//! Typed errors for every way a call to ServiceNow can fail, and their retry classification.
//!
//! The Table API wraps failures in `{"error":{"message","detail"},"status":"failure"}`, but
//! load balancers answer HTML, proxies answer nothing, and quota cancellations can arrive with
//! any status. [`Error`] keeps the status, the method and table of the call, and at most about
//! 1 KiB of whatever explanation the server gave; it never holds credentials, tokens or headers.

use std::fmt;
use std::time::Duration;

use crate::config::ConfigError;
use crate::query::QueryError;

/// The message ServiceNow's quota manager uses when it cancels a long transaction.
pub(crate) const QUOTA_CANCELLED: &str = "maximum execution time exceeded";

/// Which call failed: method and table (or endpoint), for messages and logs. Never a sys_id
/// in metric labels, but the table name is bounded and safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// Table name, e.g. `incident`, or `oauth_token.do` for the token endpoint.
    pub table: String,
}

impl RequestContext {
    /// A context for `method` on `table`.
    pub fn new(method: impl Into<String>, table: impl Into<String>) -> Self {
        RequestContext {
            method: method.into(),
            table: table.into(),
        }
    }
}

impl fmt::Display for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.table)
    }
}

/// The server's explanation: `error.message` and `error.detail` from the envelope, or a short
/// excerpt of a body that was not an envelope (HTML, plain text, nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiMessage {
    /// `error.message`, or the body excerpt.
    pub message: String,
    /// `error.detail` (ServiceNow may send `null`).
    pub detail: Option<String>,
}

impl ApiMessage {
    /// Whether message or detail contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.message.contains(needle) || self.detail.as_deref().is_some_and(|d| d.contains(needle))
    }
}

impl fmt::Display for ApiMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.message.is_empty(), self.detail.as_deref()) {
            (true, None | Some("")) => f.write_str("(no explanation in the response)"),
            (true, Some(d)) => f.write_str(d),
            (false, None | Some("")) => f.write_str(&self.message),
            (false, Some(d)) => write!(f, "{} ({d})", self.message),
        }
    }
}

/// How a caller should treat a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// Transient: trying again later may succeed. `after` is the server's requested delay
    /// when it gave one. Retry writes only when they are idempotent: a timeout or a 5xx after
    /// a write may mean the write committed.
    Retryable {
        /// How long the server asked to wait.
        after: Option<Duration>,
    },
    /// Trying again will fail the same way: fix the request, the data or the permissions.
    Permanent,
}

/// A failed ServiceNow call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 401: credentials missing, wrong, or (Basic) refused for an interactive user; for OAuth
    /// this is returned only after one re-authentication and retry also failed.
    #[error("{context}: 401 Unauthorized: {api}")]
    Unauthorized {
        /// The call.
        context: RequestContext,
        /// The server's explanation.
        api: ApiMessage,
    },
    /// 403: an ACL, a business rule or a data policy refused the operation (see
    /// [`Error::is_data_policy`] and [`Error::is_acl`]).
    #[error("{context}: 403 Forbidden: {api}")]
    Forbidden {
        /// The call.
        context: RequestContext,
        /// The server's explanation.
        api: ApiMessage,
    },
    /// 404: the record does not exist **or an ACL hides it** from the integration user.
    #[error(
        "{context}: 404 Not Found (the record does not exist, or an ACL hides it from this user): {api}"
    )]
    NotFound {
        /// The call.
        context: RequestContext,
        /// The server's explanation.
        api: ApiMessage,
    },
    /// 400: malformed request, unknown table, bad parameter (or a quota cancellation, which
    /// [`Error::classification`] recognises).
    #[error("{context}: 400 Bad Request: {api}")]
    BadRequest {
        /// The call.
        context: RequestContext,
        /// The server's explanation.
        api: ApiMessage,
    },
    /// 429: a rate-limit rule or semaphore exhaustion, after the client's own waits ran out.
    #[error("{context}: 429 rate limited{}: {api}", RetryHint(*.retry_after))]
    RateLimited {
        /// The call.
        context: RequestContext,
        /// How long the server asked to wait (`Retry-After` or `X-RateLimit-Reset`).
        retry_after: Option<Duration>,
        /// The server's explanation.
        api: ApiMessage,
    },
    /// 5xx.
    #[error("{context}: server error {status}: {api}")]
    Server {
        /// The call.
        context: RequestContext,
        /// The HTTP status.
        status: u16,
        /// The server's explanation.
        api: ApiMessage,
    },
    /// Any other unexpected status (3xx redirects to a login page, 405, 406, 415, …).
    #[error("{context}: unexpected HTTP status {status}: {api}")]
    Status {
        /// The call.
        context: RequestContext,
        /// The HTTP status.
        status: u16,
        /// The server's explanation.
        api: ApiMessage,
    },
    /// No complete answer within the configured timeout.
    #[error("{context}: no answer from the instance within the timeout")]
    Timeout {
        /// The call.
        context: RequestContext,
    },
    /// DNS, TCP or TLS failure before the request could be sent.
    #[error("{context}: cannot connect to the instance: {reason}")]
    Connect {
        /// The call.
        context: RequestContext,
        /// The underlying failure.
        reason: String,
    },
    /// The connection broke during the exchange (after sending, or while reading the body).
    #[error("{context}: the connection failed during the exchange: {reason}")]
    Transport {
        /// The call.
        context: RequestContext,
        /// The underlying failure.
        reason: String,
    },
    /// A success status with a body that is not the expected `{"result": ...}`.
    #[error("{context}: unreadable response (HTTP {status}): {reason}")]
    Decode {
        /// The call.
        context: RequestContext,
        /// The HTTP status.
        status: u16,
        /// What was wrong, with a short excerpt of the body.
        reason: String,
    },
    /// The OAuth token endpoint refused the grant. ServiceNow hides the real reason (bad
    /// secret, grant disabled, missing OAuth Application User, expired refresh token, locked
    /// user) behind `server_error` / `access_denied`; the instance's system log has it.
    #[error("OAuth token request refused{}: {error}{}; check the client id/secret and the grant (for client_credentials: glide.oauth.inbound.client.credential.grant_type.enabled=true and an OAuth Application User), and the instance's system log for the reason", StatusHint(*.status), DescriptionHint(.description.as_deref()))]
    OAuth {
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// The OAuth `error` code.
        error: String,
        /// The OAuth `error_description`.
        description: Option<String>,
    },
    /// The configuration is incomplete or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An encoded query was refused before sending.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The call was refused before sending (e.g. an invalid table name or an empty sys_id).
    #[error("{context}: invalid request: {reason}")]
    InvalidRequest {
        /// The call.
        context: RequestContext,
        /// What is wrong.
        reason: String,
    },
}

struct RetryHint(Option<Duration>);

impl fmt::Display for RetryHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, " (retry after {}s)", d.as_secs_f64().ceil()),
            None => Ok(()),
        }
    }
}

struct StatusHint(Option<u16>);

impl fmt::Display for StatusHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " (HTTP {s})"),
            None => Ok(()),
        }
    }
}

struct DescriptionHint<'a>(Option<&'a str>);

impl fmt::Display for DescriptionHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) if !d.is_empty() => write!(f, " ({d})"),
            _ => Ok(()),
        }
    }
}

impl Error {
    /// Whether the failure is transient, per the reference's status table: 429, 500, 502,
    /// 503, 504, timeouts, connection failures and quota cancellations ("maximum execution
    /// time exceeded", whatever the status) are retryable; 400, 401, 403, 404 and everything
    /// else are permanent.
    pub fn classification(&self) -> Classification {
        let retry = Classification::Retryable { after: None };
        if self.mentions_quota_cancellation() {
            return retry;
        }
        match self {
            Error::RateLimited { retry_after, .. } => Classification::Retryable {
                after: *retry_after,
            },
            Error::Server {
                status: 500 | 502 | 503 | 504,
                ..
            } => retry,
            Error::Timeout { .. } | Error::Connect { .. } | Error::Transport { .. } => retry,
            _ => Classification::Permanent,
        }
    }

    /// Whether [`Error::classification`] says retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self.classification(), Classification::Retryable { .. })
    }

    /// A 403 caused by a data policy (e.g. "Data Policy Exception: mandatory: Resolution
    /// code"): the write lacks mandatory fields.
    pub fn is_data_policy(&self) -> bool {
        match self {
            Error::Forbidden { api, .. } => api.contains("Data Policy"),
            _ => false,
        }
    }

    /// A 403 caused by an ACL ("ACL Exception ...", "Failed API level ACL Validation",
    /// "security constraints"): the integration user lacks a role.
    pub fn is_acl(&self) -> bool {
        match self {
            Error::Forbidden { api, .. } => {
                api.contains("ACL")
                    || api.contains("security constraints")
                    || api.contains("User Not Authorized")
            }
            _ => false,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::NotFound { .. } => Some(404),
            Error::BadRequest { .. } => Some(400),
            Error::RateLimited { .. } => Some(429),
            Error::Server { status, .. }
            | Error::Status { status, .. }
            | Error::Decode { status, .. } => Some(*status),
            Error::OAuth { status, .. } => *status,
            _ => None,
        }
    }

    /// The server's explanation, when it gave one.
    pub fn api_message(&self) -> Option<&ApiMessage> {
        match self {
            Error::Unauthorized { api, .. }
            | Error::Forbidden { api, .. }
            | Error::NotFound { api, .. }
            | Error::BadRequest { api, .. }
            | Error::RateLimited { api, .. }
            | Error::Server { api, .. }
            | Error::Status { api, .. } => Some(api),
            _ => None,
        }
    }

    /// The call that failed, when there was one.
    pub fn context(&self) -> Option<&RequestContext> {
        match self {
            Error::Unauthorized { context, .. }
            | Error::Forbidden { context, .. }
            | Error::NotFound { context, .. }
            | Error::BadRequest { context, .. }
            | Error::RateLimited { context, .. }
            | Error::Server { context, .. }
            | Error::Status { context, .. }
            | Error::Timeout { context }
            | Error::Connect { context, .. }
            | Error::Transport { context, .. }
            | Error::Decode { context, .. }
            | Error::InvalidRequest { context, .. } => Some(context),
            _ => None,
        }
    }

    fn mentions_quota_cancellation(&self) -> bool {
        match self {
            Error::Decode { reason, .. } => reason.contains(QUOTA_CANCELLED),
            other => other
                .api_message()
                .is_some_and(|api| api.contains(QUOTA_CANCELLED)),
        }
    }

    /// Builds the error for a non-success status. `retry_after` matters only for 429.
    pub(crate) fn from_status(
        context: RequestContext,
        status: u16,
        retry_after: Option<Duration>,
        api: ApiMessage,
    ) -> Error {
        match status {
            400 => Error::BadRequest { context, api },
            401 => Error::Unauthorized { context, api },
            403 => Error::Forbidden { context, api },
            404 => Error::NotFound { context, api },
            429 => Error::RateLimited {
                context,
                retry_after,
                api,
            },
            500..=599 => Error::Server {
                context,
                status,
                api,
            },
            _ => Error::Status {
                context,
                status,
                api,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RequestContext {
        RequestContext::new("PATCH", "incident")
    }

    fn api(message: &str, detail: Option<&str>) -> ApiMessage {
        ApiMessage {
            message: message.into(),
            detail: detail.map(Into::into),
        }
    }

    #[test]
    fn classification_follows_the_status_table() {
        let retryable = [429, 500, 502, 503, 504];
        let permanent = [400, 401, 403, 404, 405, 409, 501];
        for s in retryable {
            assert!(
                Error::from_status(ctx(), s, None, ApiMessage::default()).is_retryable(),
                "{s}"
            );
        }
        for s in permanent {
            assert_eq!(
                Error::from_status(ctx(), s, None, ApiMessage::default()).classification(),
                Classification::Permanent,
                "{s}"
            );
        }
        assert!(Error::Timeout { context: ctx() }.is_retryable());
        assert!(
            Error::Connect {
                context: ctx(),
                reason: "refused".into()
            }
            .is_retryable()
        );
        let limited = Error::from_status(
            ctx(),
            429,
            Some(Duration::from_secs(7)),
            ApiMessage::default(),
        );
        assert_eq!(
            limited.classification(),
            Classification::Retryable {
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn quota_cancellation_is_retryable_whatever_the_status() {
        let quota = api(
            "Transaction cancelled: maximum execution time exceeded",
            None,
        );
        assert!(Error::from_status(ctx(), 400, None, quota.clone()).is_retryable());
        assert!(Error::from_status(ctx(), 500, None, quota).is_retryable());
        let decode = Error::Decode {
            context: ctx(),
            status: 200,
            reason: "not JSON: Transaction cancelled: maximum execution time exceeded".into(),
        };
        assert!(decode.is_retryable());
    }

    #[test]
    fn forbidden_kinds() {
        let dp = Error::from_status(
            ctx(),
            403,
            None,
            api(
                "Operation Failed",
                Some("Data Policy Exception: mandatory: Resolution code"),
            ),
        );
        assert!(dp.is_data_policy() && !dp.is_acl());
        let acl = Error::from_status(
            ctx(),
            403,
            None,
            api(
                "Operation Failed",
                Some("ACL Exception Update Failed due to security constraints"),
            ),
        );
        assert!(acl.is_acl() && !acl.is_data_policy());
        let api_acl = Error::from_status(
            ctx(),
            403,
            None,
            api(
                "User Not Authorized",
                Some("Failed API level ACL Validation"),
            ),
        );
        assert!(api_acl.is_acl());
        let not_found = Error::from_status(ctx(), 404, None, api("No Record found", None));
        assert!(!not_found.is_acl());
        assert!(not_found.to_string().contains("ACL"), "{not_found}");
    }

    #[test]
    fn messages_name_method_and_table() {
        let e = Error::from_status(
            ctx(),
            403,
            None,
            api(
                "Operation Failed",
                Some("Data Policy Exception: mandatory: Resolution code"),
            ),
        );
        let text = e.to_string();
        assert!(text.starts_with("PATCH incident: 403"), "{text}");
        assert!(text.contains("Resolution code"), "{text}");
        let e = Error::from_status(
            ctx(),
            429,
            Some(Duration::from_millis(1500)),
            api("Rate limit exceeded", None),
        );
        assert!(e.to_string().contains("retry after 2s"), "{e}");
    }
}
