//! One broker connection and what lives on it, and the supervisor that replaces it.
//!
//! A [`Session`] is one connection generation: the connection, the topology declared on it and
//! the confirm channels. Anything that notices it is broken (a publisher finding a closed
//! channel, a consumer whose stream ended, the connection's error event, the periodic health
//! check) calls [`Session::fail`]; the supervisor then drops it, marks the backend not ready,
//! and builds a new session from scratch after a jittered backoff. lapin's own auto-recovery is
//! deliberately not enabled: rebuilding everything is the one recovery path, and it is the one
//! the tests exercise (reference §C.1).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::declare::{StrandedQueue, declare};
use super::{Shared, bounded, lapin_error, reply_code, timed};
use crate::api::Readiness;
use crate::backoff::Backoff;
use crate::error::QueueError;
use crate::telemetry;

/// How often the supervisor checks the connection and the publisher channels, in case no event
/// announced their end.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How old a session must be before an unroutable publish may fail it: if redeclaring does
/// not heal the topology, reconnecting in a tight loop would not either.
const UNROUTABLE_REBUILD_AGE: Duration = Duration::from_secs(5);

/// One connection generation.
pub(crate) struct Session {
    pub(crate) connection: Connection,
    created: tokio::time::Instant,
    publishers: Vec<Channel>,
    next_publisher: AtomicUsize,
    lost: CancellationToken,
    lost_reason: Mutex<Option<String>>,
    blocked: Mutex<Option<String>>,
}

impl Session {
    /// Marks the session broken; the supervisor replaces it. The first reason wins.
    pub(crate) fn fail(&self, reason: impl Into<String>) {
        let mut slot = self
            .lost_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(reason.into());
        }
        drop(slot);
        self.lost.cancel();
    }

    /// A publish was unroutable: part of the topology is missing (a queue or binding was
    /// deleted). Rebuilding the session declares it again. Declaring it again in place would
    /// be quicker but is unsafe: RabbitMQ 3.10 sends no `basic.cancel` to the consumers of a
    /// quorum queue that is deleted and at once declared again, and keeps handing them messages
    /// that never reach the client. A rebuild closes every old channel first.
    pub(crate) fn topology_damaged(&self) {
        if self.created.elapsed() >= UNROUTABLE_REBUILD_AGE {
            self.fail("a publish was unroutable: part of the topology is missing");
        }
    }

    /// Whether [`Session::fail`] was called.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Resolves when the session is marked broken.
    pub(crate) async fn lost(&self) {
        self.lost.cancelled().await;
    }

    fn lost_reason(&self) -> String {
        self.lost_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "connection lost".to_owned())
    }

    /// Why publishing is blocked by the broker (memory or disk alarm), if it is.
    pub(crate) fn blocked(&self) -> Option<String> {
        self.blocked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_blocked(&self, reason: Option<String>) {
        *self.blocked.lock().unwrap_or_else(PoisonError::into_inner) = reason;
    }

    /// A connected confirm channel, round robin; `None` when none is usable.
    pub(crate) fn publisher(&self) -> Option<Channel> {
        let count = self.publishers.len();
        let start = self.next_publisher.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| &self.publishers[(start + offset) % count])
            .find(|channel| channel.status().connected())
            .cloned()
    }

    fn healthy(&self) -> Result<(), String> {
        if !self.connection.status().connected() {
            return Err("the connection closed".to_owned());
        }
        if let Some(index) = self.publishers.iter().position(|c| !c.status().connected()) {
            return Err(format!("publisher channel {index} closed"));
        }
        Ok(())
    }

    /// Closes the channels and the connection, each step bounded.
    pub(crate) async fn close(&self, bound: Duration) {
        for channel in &self.publishers {
            if channel.status().connected() {
                let _ = timed(
                    bound,
                    "channel.close",
                    channel.close(200, "shutdown".into()),
                )
                .await;
            }
        }
        if self.connection.status().connected() {
            let _ = timed(
                bound,
                "connection.close",
                self.connection.close(200, "shutdown".into()),
            )
            .await;
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// Connects, declares the topology and opens the confirm channels.
pub(crate) async fn establish(shared: &Shared) -> Result<(Arc<Session>, EventStream), QueueError> {
    let config = &shared.config;
    let url = config.redacted_url();
    let properties =
        ConnectionProperties::default().with_connection_name(shared.connection_name.clone().into());
    let connecting = Connection::connect_uri(shared.uri.clone(), properties);
    let connection = match timed(config.connect_timeout, "connect", connecting).await {
        Err(_) => {
            return Err(QueueError::Connect {
                url,
                reason: format!("timed out after {:?}", config.connect_timeout),
            });
        }
        Ok(Err(error)) if reply_code(&error) == Some(403) => {
            return Err(QueueError::AccessRefused {
                url,
                reason: error.to_string(),
            });
        }
        Ok(Err(error)) => {
            return Err(QueueError::Connect {
                url,
                reason: error.to_string(),
            });
        }
        Ok(Ok(connection)) => connection,
    };
    // Subscribe before anything else so that no event (a block, an error) is missed.
    let events: EventStream = Box::pin(connection.events_listener());
    match prepare(shared, &connection).await {
        Ok((publishers, stranded)) => {
            *shared
                .stranded
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = stranded;
            let session = Session {
                connection,
                created: tokio::time::Instant::now(),
                publishers,
                next_publisher: AtomicUsize::new(0),
                lost: CancellationToken::new(),
                lost_reason: Mutex::new(None),
                blocked: Mutex::new(None),
            };
            Ok((Arc::new(session), events))
        }
        Err(error) => {
            let _ = timed(
                config.publish_timeout,
                "connection.close",
                connection.close(200, "setup failed".into()),
            )
            .await;
            Err(error)
        }
    }
}

async fn prepare(
    shared: &Shared,
    connection: &Connection,
) -> Result<(Vec<Channel>, Vec<StrandedQueue>), QueueError> {
    let bound = shared.config.publish_timeout;
    let stranded = declare(connection, &shared.topology, bound).await?;
    let mut publishers = Vec::with_capacity(usize::from(shared.config.publisher_channels));
    for _ in 0..shared.config.publisher_channels {
        let channel = bounded(bound, "channel.open", connection.create_channel()).await?;
        // Publisher confirms: without them a publish "succeeds" when the frame is written, not
        // when the broker stored it.
        bounded(
            bound,
            "confirm.select",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        publishers.push(channel);
    }
    Ok((publishers, stranded))
}

/// The supervisor: keeps a session installed until shutdown, then closes everything.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    mut current: Option<(Arc<Session>, EventStream)>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut connected_before = false;
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        let attempt = match current.take() {
            Some(ready) => Ok(ready),
            None => {
                tokio::select! {
                    attempt = establish(&shared) => attempt,
                    () = shared.shutdown.cancelled() => break,
                }
            }
        };
        match attempt {
            Ok((session, events)) => {
                backoff.reset();
                if connected_before {
                    telemetry::reconnected();
                    info!(url = %shared.config.redacted_url(), "reconnected to the broker");
                } else {
                    info!(url = %shared.config.redacted_url(), "connected to the broker");
                }
                connected_before = true;
                shared.session.send_replace(Some(session.clone()));
                shared.set_readiness(Readiness::ready());
                telemetry::connected(true);

                let reason = watch_session(&shared, &session, events).await;
                if shared.shutdown.is_cancelled() {
                    shared.set_readiness(Readiness::not_ready("shutting down"));
                    // The session stays installed while draining: deliveries being settled
                    // still need it for their retry and dead-letter copies (new events are
                    // refused by the shutdown check).
                    shared.drain_and_close(&session).await;
                    shared.session.send_replace(None);
                    telemetry::connected(false);
                    break;
                }
                shared.session.send_replace(None);
                telemetry::connected(false);
                warn!(%reason, "broker session lost; reconnecting");
                shared.set_readiness(Readiness::not_ready(reason));
                // The connection is most likely dead already; don't let closing it delay the
                // reconnect.
                let old = session.clone();
                let bound = shared.config.publish_timeout;
                tokio::spawn(async move { old.close(bound).await });
            }
            Err(error) => {
                warn!(%error, "cannot establish the broker session");
                shared.set_readiness(Readiness::not_ready(error.to_string()));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shared.shutdown.cancelled() => break,
        }
    }
    shared.set_readiness(Readiness::not_ready("shut down"));
    shared.finish_shutdown().await;
}

/// Waits until the session breaks or shutdown begins; returns why.
async fn watch_session(shared: &Shared, session: &Session, mut events: EventStream) -> String {
    let mut health = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return "shutting down".to_owned(),
            () = session.lost() => return session.lost_reason(),
            event = events.next() => match event {
                Some(Event::Error(error)) => {
                    // Channel-level errors (a passive declare of a missing queue, a consumer's
                    // channel closed by the broker) arrive here too; only a dead connection
                    // ends the session. Publisher channels are checked below.
                    if !session.connection.status().connected() {
                        session.fail(format!("connection error: {}", lapin_error("connection", &error)));
                    } else {
                        debug!(%error, "channel error on a live connection");
                    }
                }
                Some(Event::ConnectionBlocked(reason)) => {
                    warn!(%reason, "the broker blocked publishing (resource alarm)");
                    session.set_blocked(Some(reason.clone()));
                    shared.set_readiness(Readiness::not_ready(format!("the broker blocked publishing: {reason}")));
                }
                Some(Event::ConnectionUnblocked) => {
                    info!("the broker unblocked publishing");
                    session.set_blocked(None);
                    shared.set_readiness(Readiness::ready());
                }
                Some(_) => {}
                None => session.fail("the connection's event stream ended"),
            },
            _ = health.tick() => {
                if let Err(reason) = session.healthy() {
                    session.fail(reason);
                }
            }
        }
    }
}
