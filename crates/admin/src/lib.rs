//! nowpilot's control plane.
//!
//! - [`store`]: the saved ServiceNow connection (`connection.toml`, mode 0600) and the `include`
//!   that ties it to the main config.
pub mod store;
