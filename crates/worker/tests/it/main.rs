//! The worker against an in-process simulator and the memory queue: one binary (faster to
//! build), one module per area. Assertions are on the simulator's records (fields, journal
//! rows, the request log) and the queue's dead letters, not on logs.

// Helpers outside #[test] functions panic on purpose: a failed expectation fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod actions;
mod admin;
mod common;
mod faults;
mod flow;
mod incident_urls;
mod review;
mod steps;
