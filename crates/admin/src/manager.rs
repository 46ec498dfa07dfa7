//! The in-process ServiceNow connection: one at a time, swappable without a restart.
//!
//! Everything that talks to ServiceNow asks the [`ConnectionManager`] for the current
//! [`Client`] (or waits on [`ConnectionManager::subscribe`]). Connecting verifies first and only
//! then saves and swaps; disconnecting removes the saved connection and drops the client, so
//! write-back stops at once. A file watcher picks up `nowpilot connect`/`disconnect` run from a
//! shell against the same config, so credentials change without restarting the process.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use nowpilot_servicenow::{
    Client, ClientOptions, ConnectionReport, ServiceNowConfig, check_connection,
};
use serde::Deserialize;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use crate::store::{ConnectionStore, StoreError, StoreOutcome};

/// What the process currently knows about its connection.
#[derive(Clone, Default)]
pub struct ConnectionState {
    /// The connection settings, when connected.
    pub config: Option<Arc<ServiceNowConfig>>,
    /// A client for them; `None` while disconnected or when the settings do not resolve.
    pub client: Option<Client>,
    /// The last check, if one ran.
    pub report: Option<ConnectionReport>,
    /// Why there is no client (not configured, unreadable secret, ...), for logs and the status
    /// page.
    pub problem: Option<String>,
    /// Increments on every change, so watchers can tell a swap from a no-op.
    pub generation: u64,
}

impl std::fmt::Debug for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionState")
            .field(
                "instance",
                &self.config.as_ref().map(|c| c.instance_url.as_str()),
            )
            .field("has_client", &self.client.is_some())
            .field("problem", &self.problem)
            .field("generation", &self.generation)
            .finish()
    }
}

impl ConnectionState {
    /// Whether a client is available.
    pub fn is_connected(&self) -> bool {
        self.client.is_some()
    }
}

/// A failure of a connection operation.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The checks failed; nothing was saved.
    #[error("{}", .0.summary())]
    CheckFailed(Box<ConnectionReport>),
    /// Saving or removing the connection file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The settings were verified but cannot be written out.
    #[error("cannot encode the connection: {0}")]
    Encode(String),
}

/// Holds the current connection and changes it.
#[derive(Clone)]
pub struct ConnectionManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: ConnectionStore,
    base_dir: PathBuf,
    options: ClientOptions,
    state: watch::Sender<ConnectionState>,
    /// Serializes connect/disconnect/reload so two operators cannot interleave.
    op: Mutex<()>,
}

impl ConnectionManager {
    /// A manager for the config at `main_config`, starting from `initial` (the `[servicenow]`
    /// section as loaded, if any). Secret files resolve against `base_dir`.
    pub fn new(
        main_config: impl Into<PathBuf>,
        base_dir: impl Into<PathBuf>,
        initial: Option<ServiceNowConfig>,
        options: ClientOptions,
    ) -> Self {
        let base_dir = base_dir.into();
        let state = build_state(initial, &base_dir, &options, None, 0);
        let (tx, _) = watch::channel(state);
        ConnectionManager {
            inner: Arc::new(Inner {
                store: ConnectionStore::new(main_config),
                base_dir,
                options,
                state: tx,
                op: Mutex::new(()),
            }),
        }
    }

    /// The current state.
    pub fn current(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// The current client, if connected.
    pub fn client(&self) -> Option<Client> {
        self.inner.state.borrow().client.clone()
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    /// Waits until a client is available (or `shutdown`), returning it.
    pub async fn wait_for_client(&self, shutdown: &CancellationToken) -> Option<Client> {
        let mut rx = self.subscribe();
        loop {
            if let Some(client) = rx.borrow_and_update().client.clone() {
                return Some(client);
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                changed = rx.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// Re-checks the current connection live. `None` when not configured.
    pub async fn check(&self) -> Option<ConnectionReport> {
        let config = self.inner.state.borrow().config.clone()?;
        let report = check_connection(&config, &self.inner.base_dir).await;
        self.inner
            .state
            .send_modify(|s| s.report = Some(report.clone()));
        Some(report)
    }

    /// Verifies `config`; when every check passes, saves it and switches to it.
    pub async fn connect(
        &self,
        config: ServiceNowConfig,
    ) -> Result<ConnectionReport, ManagerError> {
        let _guard = self.inner.op.lock().await;
        let report = check_connection(&config, &self.inner.base_dir).await;
        if !report.connected() {
            return Err(ManagerError::CheckFailed(Box::new(report)));
        }
        let mut config = config;
        config.instance_url = report.instance.clone();
        let section = toml::Table::try_from(config.with_secrets())
            .map_err(|e| ManagerError::Encode(e.to_string()))?;
        self.inner.store.save(section)?;
        self.swap(Some(config), Some(report.clone()));
        tracing::info!(instance = %report.instance, auth = %report.auth_kind, "ServiceNow connection changed");
        Ok(report)
    }

    /// Removes the saved connection and stops using it.
    pub async fn disconnect(&self) -> Result<StoreOutcome, ManagerError> {
        let _guard = self.inner.op.lock().await;
        let outcome = self.inner.store.remove()?;
        self.swap(None, None);
        tracing::warn!("ServiceNow disconnected: write-back stops until a new connection is made");
        Ok(outcome)
    }

    fn swap(&self, config: Option<ServiceNowConfig>, report: Option<ConnectionReport>) {
        self.inner.state.send_modify(|s| {
            *s = build_state(
                config,
                &self.inner.base_dir,
                &self.inner.options,
                report,
                s.generation + 1,
            );
        });
    }

    /// Watches the config files and reloads the `[servicenow]` section when they change, so a
    /// `nowpilot connect` or `disconnect` from a shell takes effect in a running process.
    pub fn spawn_file_watcher(&self, interval: Duration, shutdown: CancellationToken) {
        let manager = self.clone();
        // Taken now, not in the task: a change made before the task first runs must count.
        let mut last = manager.fingerprint();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = manager.fingerprint();
                if now == last {
                    continue;
                }
                last = now;
                manager.reload().await;
            }
        });
    }

    async fn reload(&self) {
        let _guard = self.inner.op.lock().await;
        match load_servicenow_section(self.inner.store.main_config()) {
            Ok(config) => {
                let changed = {
                    let state = self.inner.state.borrow();
                    !same_connection(state.config.as_deref(), config.as_ref())
                };
                if changed {
                    tracing::info!(
                        connected = config.is_some(),
                        "the ServiceNow connection changed on disk; switching to it"
                    );
                    self.swap(config, None);
                }
            }
            Err(e) => {
                // A half-edited file: keep the current connection and say why.
                tracing::warn!(error = %e, "cannot reload the configuration; keeping the current ServiceNow connection");
            }
        }
    }

    fn fingerprint(&self) -> Vec<Option<(SystemTime, u64)>> {
        [
            self.inner.store.main_config(),
            self.inner.store.connection_file(),
        ]
        .into_iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
    }
}

fn build_state(
    config: Option<ServiceNowConfig>,
    base_dir: &Path,
    options: &ClientOptions,
    report: Option<ConnectionReport>,
    generation: u64,
) -> ConnectionState {
    let Some(config) = config else {
        return ConnectionState {
            problem: Some("no ServiceNow connection is configured".into()),
            generation,
            ..ConnectionState::default()
        };
    };
    let client = config
        .resolve(base_dir)
        .map_err(|e| e.to_string())
        .and_then(|resolved| Client::new(resolved, options.clone()).map_err(|e| e.to_string()));
    let (client, problem) = match client {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(e)),
    };
    ConnectionState {
        config: Some(Arc::new(config)),
        client,
        report,
        problem,
        generation,
    }
}

/// Two configs describe the same connection (including secrets).
fn same_connection(a: Option<&ServiceNowConfig>, b: Option<&ServiceNowConfig>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            toml::Table::try_from(a.with_secrets()).ok()
                == toml::Table::try_from(b.with_secrets()).ok()
        }
        _ => false,
    }
}

#[derive(Deserialize)]
struct OnlyServiceNow {
    #[serde(default)]
    servicenow: Option<ServiceNowConfig>,
}

/// Reads just the `[servicenow]` section of a config (with includes and env overrides).
pub fn load_servicenow_section(
    main_config: &Path,
) -> Result<Option<ServiceNowConfig>, nowpilot_config::ConfigError> {
    let path = main_config.exists().then(|| main_config.to_path_buf());
    let loaded: nowpilot_config::Loaded<OnlyServiceNow> =
        nowpilot_config::load(&nowpilot_config::ConfigSource::from_process(path))?;
    Ok(loaded.config.servicenow)
}
