//! An in-memory ServiceNow instance for tests, demos and benchmarks.
//!
//! It answers the calls nowpilot makes the way a real instance does, so that a client nobody
//! here wrote cannot tell the difference: the Table API (`/api/now[/v1|/v2]/table/...`) with
//! its envelopes, string-typed values, reference `{link, value}` objects, display values,
//! encoded queries, `Link` / `X-Total-Count` paging and error bodies; journal fields that read
//! back empty and live in `sys_journal_field`; the incident business logic (numbers, the
//! priority lookup from impact × urgency, state side effects, the data policy that refuses a
//! resolve without resolution code and notes); Basic auth and OAuth at `/oauth_token.do` and
//! `/oauth_auth.do`; a small ACL model (`admin`, `itil`, no role); a rate-limit rule; injected
//! latency and faults; and the business rule that sends signed callbacks for every incident
//! insert and update.
//!
//! The encoded-query parser and evaluator are public ([`query`]) so other crates can check
//! the queries they build against the same grammar.
//!
//! It is for tests and demos only: the control endpoints under `/_sim/` (request log, callback
//! log, faults, webhook target) need no authentication, and everything lives in memory.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use nowpilot_snowsim::{SimConfig, Simulator, run};
//! let sim = Simulator::new(SimConfig { seed_demo: true, ..SimConfig::default() });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! run(sim, listener, shutdown).await
//! # }
//! ```

mod auth;
mod config;
mod control;
mod error;
mod http;
mod limits;
mod locks;
mod logic;
mod oauth;
pub mod query;
mod render;
mod reqlog;
mod schema;
mod seed;
mod sim;
mod store;
mod table_api;
mod tls;
mod webhook;

use std::time::Duration;

pub use config::{
    FaultSettings, ForcedStatus, OAuthClient, SimArgs, SimConfig, SimUser, WebhookConfig,
    WebhookSecret,
};
pub use error::{SimConfigError, SimError};
pub use reqlog::LoggedRequest;
pub use sim::{JournalEntry, Simulator};
pub use tls::{TlsIdentity, run_tls};
pub use webhook::CallbackRecord;

/// How long [`run`] waits for in-flight requests after the shutdown token fires.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the simulator on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets in-flight requests finish (for at most a few seconds) and returns.
pub async fn run(
    sim: Simulator,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let serve = axum::serve(listener, sim.router())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        result = serve => result,
        // Idle keep-alive connections can hold a graceful shutdown open; bound the wait.
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    }
}
