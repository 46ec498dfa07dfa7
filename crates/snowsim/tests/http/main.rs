//! The simulator over real HTTP, driven with reqwest as any client would drive it.

// Test helpers outside `#[test]` functions may unwrap and panic too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth;
mod callbacks;
mod common;
mod display;
mod limits;
mod records;
mod table_api;
