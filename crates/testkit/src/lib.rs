//! Shared helpers for nowpilot's tests (never used by product code).
//!
//! - [`amqp_url`]: the test broker (`NOWPILOT_TEST_AMQP_URL`, default the local RabbitMQ).
//! - [`unique_prefix`] and [`amqp_config`]: each test gets its own topology on the shared
//!   broker, so tests run in parallel without seeing each other's messages.
//! - [`TopologyGuard`]: deletes a prefix's exchanges and queues when it is dropped, also when
//!   the test panicked. Declare it **before** the backend it cleans up after, so that it is
//!   dropped last (locals drop in reverse order) and no live consumer redeclares the topology.
//! - [`TcpProxy`]: a TCP proxy to put between a client and the broker (or any server) to cut
//!   connections, refuse new ones and add latency, in the style of svix-bridge's RabbitMQ test.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use nowpilot_testkit::{TcpProxy, TopologyGuard, amqp_config, broker_addr, unique_prefix};
//!
//! let proxy = TcpProxy::start(broker_addr()).await?;
//! let mut config = amqp_config(&unique_prefix("outage"));
//! config.url = proxy.amqp_url().into();
//! let _cleanup = TopologyGuard::new(&amqp_config(&config.prefix));
//! // … connect a backend with `config`, then:
//! proxy.cut(); // every connection dropped, new ones refused
//! proxy.restore(); // connections accepted again
//! # Ok(()) }
//! ```

mod proxy;

use nowpilot_queue::QueueConfig;
use secrecy::SecretString;

pub use proxy::TcpProxy;

/// The environment variable naming the test broker.
pub const AMQP_URL_ENV: &str = "NOWPILOT_TEST_AMQP_URL";

/// The test broker's URL: `NOWPILOT_TEST_AMQP_URL`, or the local RabbitMQ with guest/guest.
pub fn amqp_url() -> String {
    std::env::var(AMQP_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| nowpilot_queue::config::DEFAULT_AMQP_URL.to_owned())
}

/// `host:port` of the test broker (for [`TcpProxy::start`]).
pub fn broker_addr() -> String {
    url::Url::parse(&amqp_url())
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(5672))))
        .unwrap_or_else(|| "127.0.0.1:5672".to_owned())
}

/// `test-{name}-{random}`: a topology prefix no other test uses. Characters outside
/// `[A-Za-z0-9_.-]` in `name` become `-`.
pub fn unique_prefix(name: &str) -> String {
    let name: String = name
        .chars()
        .take(60)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("test-{name}-{:016x}", rand::random::<u64>())
}

/// A queue configuration for the test broker with `prefix`, short timeouts and few partitions
/// (4) so that tests declare quickly.
pub fn amqp_config(prefix: &str) -> QueueConfig {
    let mut config = QueueConfig::with_prefix(prefix);
    config.url = SecretString::from(amqp_url());
    config.partitions = 4;
    config.publish_timeout = std::time::Duration::from_secs(3);
    config.connect_timeout = std::time::Duration::from_secs(3);
    config.heartbeat = std::time::Duration::from_secs(5);
    config
}

/// Deletes a topology when dropped (at the end of a test, passed or failed).
///
/// The deletion runs on a thread with its own runtime, so it works from `Drop` inside an async
/// test and during a panic. Errors are reported on stderr, never raised.
#[derive(Debug)]
pub struct TopologyGuard {
    config: Option<QueueConfig>,
}

impl TopologyGuard {
    /// Guards the topology of `config` (its URL, prefix and partition count). Use the largest
    /// partition count the test declares.
    pub fn new(config: &QueueConfig) -> Self {
        TopologyGuard {
            config: Some(config.clone()),
        }
    }

    /// Deletes the topology now (the guard then does nothing more).
    pub fn delete_now(&mut self) {
        let Some(config) = self.config.take() else {
            return;
        };
        let prefix = config.prefix.clone();
        let worker = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(nowpilot_queue::amqp::delete_topology(&config)),
                Err(error) => Err(nowpilot_queue::QueueError::Config(error.to_string())),
            }
        });
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("testkit: could not delete topology {prefix}: {error}"),
            Err(_) => eprintln!("testkit: deleting topology {prefix} panicked"),
        }
    }
}

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        self.delete_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_valid() {
        let a = unique_prefix("my test/1");
        let b = unique_prefix("my test/1");
        assert_ne!(a, b);
        assert!(a.starts_with("test-my-test-1-"), "{a}");
        let config = amqp_config(&a);
        config.validate().unwrap();
    }

    #[test]
    fn broker_addr_comes_from_the_url() {
        // The default URL (the variable is normally unset in CI).
        if std::env::var(AMQP_URL_ENV).is_err() {
            assert_eq!(broker_addr(), "127.0.0.1:5672");
        }
    }
}
