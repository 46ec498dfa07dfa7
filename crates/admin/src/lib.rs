//! nowpilot's control plane.
//!
//! - [`store`]: the saved ServiceNow connection (`connection.toml`, mode 0600) and the `include`
//!   that ties it to the main config.
//! - [`manager`]: the in-process connection, swappable without a restart, and a watcher that
//!   follows `nowpilot connect`/`disconnect` run from a shell.
//! - [`api`]: the same operations over HTTP (`/api/v1/connection`), behind a bearer token or a
//!   loopback-only listener.
//! - [`status`]: the status page (`/`) and its JSON (`/api/v1/status`, `/api/v1/activity`),
//!   protected the same way.

pub mod api;
pub mod manager;
pub mod status;
pub mod store;

pub use manager::{ConnectionManager, ConnectionState, ManagerError};
