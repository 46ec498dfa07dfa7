//! Integration tests of the ServiceNow client against small axum fakes on 127.0.0.1:0.

// Test helpers may fail loudly: a panic is a test failure here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth;
mod check;
mod errors;
mod fake;
mod journal;
mod paging;
mod rate_limit;
mod related;
mod retries;
mod secrets;
