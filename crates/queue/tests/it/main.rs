//! The queue's integration tests: one binary (faster to build), one module per area. Tests
//! marked amqp need the RabbitMQ at `NOWPILOT_TEST_AMQP_URL` (default 127.0.0.1:5672); each
//! uses its own topology prefix and deletes it at the end.

// Helpers outside #[test] functions panic on purpose: a failed expectation fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod amqp_faults;
mod amqp_publish;
mod amqp_topology;
mod common;
mod memory;
mod suite;
