//! The admin API against the simulator over HTTP.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use nowpilot_admin::{ConnectionManager, api};
use nowpilot_servicenow::ClientOptions;
use nowpilot_snowsim::{SimConfig, SimUser, Simulator};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Harness {
    sim_url: String,
    api_url: String,
    dir: tempfile::TempDir,
    manager: ConnectionManager,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(token: Option<&str>) -> Harness {
    let shutdown = CancellationToken::new();
    let sim = Simulator::new(SimConfig {
        seed_demo: true,
        users: vec![SimUser::new("integration", "s3cret-pw")],
        ..SimConfig::default()
    });
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", sim_listener.local_addr().unwrap());
    tokio::spawn(nowpilot_snowsim::run(sim, sim_listener, shutdown.clone()));

    let dir = tempfile::tempdir().unwrap();
    let manager = ConnectionManager::new(
        dir.path().join("nowpilot.toml"),
        dir.path(),
        None,
        ClientOptions::default(),
    );
    let state = api::ApiState::new(
        manager.clone(),
        token.map(|t| SecretString::from(t.to_owned())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    let app = api::router(state);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    Harness {
        sim_url,
        api_url,
        dir,
        manager,
        shutdown,
    }
}

fn body(sim_url: &str, password: &str) -> Value {
    json!({"instance_url": sim_url, "auth": "basic", "username": "integration", "password": password})
}

#[tokio::test]
async fn connect_status_disconnect_over_http() {
    let h = start(None).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/connection", h.api_url);

    let v: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["connected"], false);
    assert_eq!(v["configured"], false);

    // A wrong password: 422 with the failed check, nothing saved, still disconnected.
    let resp = http
        .put(&url)
        .json(&body(&h.sim_url, "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["connected"], false);
    let failed: Vec<_> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["failure"], "credentials");
    assert!(!h.dir.path().join("connection.toml").exists());
    assert!(h.manager.client().is_none());
    // The password is never echoed back.
    assert!(!v.to_string().contains("wrong"));

    // Malformed body: 400 JSON.
    let resp = http.put(&url).body("{").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "invalid_connection");

    // The right password: connected, saved with mode 0600, the client is live.
    let resp = http
        .put(&url)
        .json(&body(&h.sim_url, "s3cret-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["connected"], true);
    assert_eq!(v["message"], "ServiceNow is connected");
    assert_eq!(v["user"]["user_name"], "integration");
    assert!(!v.to_string().contains("s3cret-pw"));
    let saved = h.dir.path().join("connection.toml");
    assert!(saved.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(h.manager.client().is_some());

    // Live status.
    let v: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["connected"], true);

    // Disconnect.
    let v: Value = http
        .delete(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["connected"], false);
    assert!(!saved.exists());
    assert!(h.manager.client().is_none());
}

#[tokio::test]
async fn token_protects_every_route() {
    let h = start(Some("admin-token-123")).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/connection", h.api_url);
    for req in [
        http.get(&url),
        http.delete(&url),
        http.put(&url).json(&body(&h.sim_url, "x")),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = http
        .get(&url)
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(&url)
        .bearer_auth("admin-token-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn watcher_follows_changes_made_from_a_shell() {
    let h = start(None).await;
    let shutdown = CancellationToken::new();
    h.manager
        .spawn_file_watcher(Duration::from_millis(50), shutdown.clone());
    let mut rx = h.manager.subscribe();

    // Another process saves a connection (what `nowpilot connect` does).
    let store = nowpilot_admin::store::ConnectionStore::new(h.dir.path().join("nowpilot.toml"));
    let mut section = toml::Table::new();
    section.insert("instance_url".into(), h.sim_url.clone().into());
    section.insert("username".into(), "integration".into());
    section.insert("password".into(), "s3cret-pw".into());
    store.save(section).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if rx.borrow_and_update().is_connected() {
                break;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the manager picked up the new connection");

    // And removes it (what `nowpilot disconnect` does).
    store.remove().unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if !rx.borrow_and_update().is_connected() {
                break;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the manager dropped the removed connection");
    shutdown.cancel();
}
