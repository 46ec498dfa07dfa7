//! The ServiceNow client of nowpilot.
//!
//! - [`config`]: the `[servicenow]` section, resolved into an [`InstanceUrl`] and
//!   [`Credentials`] (secrets from files, never printed).
//! - [`auth`]: Basic and OAuth 2.0 (client credentials, password, refresh token,
//!   authorization code), with tokens refreshed before they expire.
//! - [`client`]: the Table API v2 client with typed errors, one re-authentication on 401,
//!   429 pauses shared by every client of an instance, and GET-only retries.
//! - [`query`]: an encoded-query builder that refuses values which would widen a query.
//! - [`journal`], [`related`], [`choices`]: typed reads nowpilot's worker needs.
//! - [`check`]: the connection checks behind `nowpilot connect` and `nowpilot status`.
//! - [`telemetry`]: metric names and their `# HELP` descriptions.
//!
//! The facts this crate follows (URL shapes, envelopes, status meanings, OAuth behaviour) are
//! in `shared/reference/servicenow.md` §1–§4.

pub mod auth;
pub mod check;
pub mod choices;
pub mod client;
pub mod config;
pub mod error;
pub mod instance;
pub mod journal;
pub mod query;
pub mod related;
pub mod response;
pub mod telemetry;
mod transport;

pub use auth::{
    CodeExchange, Credentials, GrantCredentials, TokenSet, authorize_url, exchange_code,
};

pub use check::{
    CheckName, CheckResult, CheckStatus, ConnectionReport, FailureKind, UserIdentity,
    check_connection, check_connection_with,
};
pub use choices::{Choice, MatrixSource, PriorityMatrixReport};
pub use client::{Client, ClientOptions, DisplayValue, ListRequest, Page, ReadOptions};
pub use config::{AuthKind, ConfigError, Grant, ResolvedConfig, ServiceNowConfig};
pub use error::{ApiMessage, Classification, Error, RequestContext};
pub use instance::{InstanceUrl, InstanceUrlError, UrlAdjustment};

pub use journal::{JournalEntry, JournalKind, parse_journal_blob};
pub use query::{EncodedQuery, QueryError};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
