//! Getting a ServiceNow client for a pass, or waiting for one.
//!
//! While nowpilot is disconnected, passes wait here: their events are neither settled nor
//! dead-lettered, so nothing is lost. The gauge `nowpilot_worker_waiting_for_connection` is 1
//! meanwhile, and one log line (not one per event) says why.

use std::sync::{Mutex, MutexGuard, PoisonError};

use nowpilot_admin::{ConnectionManager, ConnectionState};
use nowpilot_servicenow::{AuthKind, Client, Grant};
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// A client and what it belongs to.
#[derive(Clone)]
pub(crate) struct Connected {
    /// The client.
    pub(crate) client: Client,
    /// The connection generation (caches are per generation).
    pub(crate) generation: u64,
    /// The connection's own user name (Basic auth or the OAuth password grant).
    pub(crate) user_name: Option<String>,
}

/// Counts passes waiting for a connection.
#[derive(Default)]
pub(crate) struct ConnectionGate {
    waiting: Mutex<usize>,
}

fn connected(state: &ConnectionState) -> Option<Connected> {
    let client = state.client.clone()?;
    let user_name = state.config.as_ref().and_then(|c| {
        let uses_user = match c.auth {
            AuthKind::Basic => true,
            AuthKind::OAuth => c.grant == Some(Grant::Password),
        };
        c.username
            .clone()
            .filter(|u| uses_user && !u.trim().is_empty())
    });
    Some(Connected {
        client,
        generation: state.generation,
        user_name,
    })
}

impl ConnectionGate {
    fn count(&self) -> MutexGuard<'_, usize> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current client, waiting for one while disconnected. `None` only on shutdown. The
    /// flag says whether the pass had to wait.
    pub(crate) async fn acquire(
        &self,
        manager: &ConnectionManager,
        shutdown: &CancellationToken,
    ) -> (Option<Connected>, bool) {
        let state = manager.current();
        if let Some(c) = connected(&state) {
            return (Some(c), false);
        }
        {
            let mut waiting = self.count();
            *waiting += 1;
            if *waiting == 1 {
                telemetry::waiting_for_connection(true);
                tracing::warn!(
                    reason = state.problem.as_deref().unwrap_or("no client"),
                    "ServiceNow is not connected: events wait (not settled, not dead-lettered) until a connection is made"
                );
            }
        }
        let mut updates = manager.subscribe();
        let found = loop {
            if let Some(c) = connected(&updates.borrow_and_update()) {
                break Some(c);
            }
            tokio::select! {
                () = shutdown.cancelled() => break None,
                changed = updates.changed() => if changed.is_err() { break None },
            }
        };
        let mut waiting = self.count();
        *waiting = waiting.saturating_sub(1);
        if *waiting == 0 {
            telemetry::waiting_for_connection(false);
            if found.is_some() {
                tracing::info!("ServiceNow is connected again: waiting events proceed");
            }
        }
        (found, true)
    }
}
