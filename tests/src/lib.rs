//! Shared helpers for the end-to-end tests: start the simulator (and later the ingress and
//! workers) on port 0, each test with its own queue prefix.

// Test support: failing loudly (panics, unwrap) is the right behaviour here.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use nowpilot_snowsim::{SimConfig, Simulator};
use tokio_util::sync::CancellationToken;

/// A simulator serving on 127.0.0.1:0 for the duration of a test; stops when dropped.
pub struct SimHandle {
    /// The in-process handle (request log, direct inserts, journal).
    pub sim: Simulator,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shutdown: CancellationToken,
}

impl SimHandle {
    /// Starts a simulator with `config`.
    pub async fn start(config: SimConfig) -> SimHandle {
        let sim = Simulator::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the simulator: {e}"));
        let url = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(e) => panic!("no local address: {e}"),
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(nowpilot_snowsim::run(
            sim.clone(),
            listener,
            shutdown.clone(),
        ));
        SimHandle { sim, url, shutdown }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
