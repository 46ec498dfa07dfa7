//! Errors of the simulator's direct handle and of its configuration.

/// Why a direct-handle call on [`crate::Simulator`] failed. The HTTP API reports the same
/// conditions with ServiceNow's envelopes and status codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The table is not one the simulator has (HTTP 400 `Invalid table <name>`).
    #[error("Invalid table {0}")]
    InvalidTable(String),
    /// No record with that sys_id (HTTP 404 `No Record found`).
    #[error("No Record found: {table}/{sys_id}")]
    NotFound {
        /// The table.
        table: String,
        /// The sys_id asked for.
        sys_id: String,
    },
    /// The data policy refused the write; nothing was written (HTTP 403).
    #[error("Data Policy Exception: mandatory: {}", .missing.join(", "))]
    DataPolicy {
        /// The labels of the missing mandatory fields (`Resolution code`, `Resolution notes`).
        missing: Vec<&'static str>,
    },
}

/// Why [`crate::SimArgs::into_config`] refused the command line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimConfigError {
    /// The TLS identity could not be made.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// `--user` is not `NAME:PASSWORD` with a non-empty name. The value is not repeated: it
    /// may hold a password.
    #[error("--user expects NAME:PASSWORD with a non-empty name")]
    BadUser,
    /// The same user name was given twice.
    #[error("user {0:?} is configured twice")]
    DuplicateUser(String),
    /// `--user-roles` is not `NAME=ROLE[,ROLE...]`.
    #[error("--user-roles expects NAME=ROLE[,ROLE...], got {0:?}")]
    BadUserRoles(String),
    /// `--oauth-client` is not `ID:SECRET` with a non-empty id.
    #[error("--oauth-client expects ID:SECRET, got a value without ':' or with an empty id")]
    BadOAuthClient,
    /// The same OAuth client id was given twice.
    #[error("OAuth client {0:?} is configured twice")]
    DuplicateOAuthClient(String),
    /// `--oauth-client-user` is not `ID=USER`, or names an unknown client.
    #[error("--oauth-client-user expects ID=USER for a configured --oauth-client, got {0:?}")]
    BadOAuthClientUser(String),
    /// `--fault-rate` is outside 0..=1.
    #[error("--fault-rate must be between 0 and 1, got {0}")]
    BadFaultRate(f64),
    /// A duration flag is zero where that makes no sense.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// `--webhook-secret` is not `whsec_<base64>`.
    #[error("--webhook-secret must be whsec_ followed by base64 key bytes")]
    BadWebhookSecret,
    /// `--webhook-url` is not an absolute http(s) URL.
    #[error("--webhook-url must be an absolute http(s) URL, got {0:?}")]
    BadWebhookUrl(String),
}
