//! Shared helpers for the end-to-end tests: start the simulator (and later the ingress and
//! workers) on port 0, each test with its own queue prefix.

// Test support: failing loudly (panics, unwrap) is the right behaviour here.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod pipeline;

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

/// Standard Webhooks signing as ServiceNow's business rule does it, for tests that post
/// callbacks themselves.
pub mod signing {
    use base64::Engine as _;
    use hmac::{Hmac, KeyInit, Mac};

    /// Signs `body` for `id` now: returns (`webhook-timestamp`, `webhook-signature`).
    pub fn sign(secret: &str, id: &str, body: &[u8]) -> (String, String) {
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = sign_at(secret, id, &ts, body);
        (ts, sig)
    }

    /// Signs with an explicit timestamp.
    pub fn sign_at(secret: &str, id: &str, ts: &str, body: &[u8]) -> String {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .expect("a whsec_ secret");
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).expect("any key");
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    /// A schema-1 callback body for an incident version.
    pub fn callback(sys_id: &str, mod_count: u64, updated_by: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schema_version": 1,
            "instance": "test",
            "table": "incident",
            "operation": "update",
            "sys_id": sys_id,
            "sys_mod_count": mod_count.to_string(),
            "sys_updated_on": "2026-11-28 10:00:00",
            "sys_updated_by": updated_by,
            "record": {"number": "INC0010001", "priority": "2", "state": "1"}
        }))
        .expect("serializable")
    }
}
