//! The status page: is nowpilot connected, is anything stuck, and what did it do.
//!
//! - `GET /`: server-rendered HTML that works without JavaScript and reloads itself
//!   (`<meta http-equiv="refresh">`). The state comes first (all good, or what needs
//!   attention), then the ServiceNow connection, the queue and dead-letter depths, the
//!   workers, the plans in matching order with how often each matched, and the last 200
//!   passes.
//! - `GET /api/v1/status`: the same data as JSON ([`StatusSnapshot`]).
//! - `GET /api/v1/activity`: just the activity part.
//!
//! Nothing here calls ServiceNow per page view: the connection is checked in the background
//! every 15 minutes by default (and at once when it changes), and queue depths are cached for
//! a few seconds. Activity arrives through the [`ActivityFanout`], so every page of a
//! deployment shows the passes of every worker.
//!
//! Access follows the connection API ([`crate::api`]): with `[admin] token`, a bearer token
//! (or, for browsers, the cookie set by `?token=` once; see `auth`); without one, the page is
//! served only on a loopback address ([`mount`] leaves it out elsewhere and says so in the
//! log).

mod auth;
mod feed;
mod html;
#[cfg(test)]
mod tests;
mod view;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex as SyncMutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use chrono::{DateTime, Utc};
use nowpilot_model::plans::PlanSet;
use nowpilot_queue::{ActivityFanout, ActivityRecord, EventQueue, QueueDepths};
use secrecy::SecretString;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

use crate::manager::ConnectionManager;

pub use auth::COOKIE;
pub use feed::{PlanCount, RECENT};
pub use html::escape;
pub use view::{
    ActivityView, ConnectionView, PlanView, PlansView, ProcessView, QueueView, StatusSnapshot,
    Summary, WorkerMember, WorkersView, describe_intake,
};

/// Lists the workers of the deployment (the partition-ownership membership plugs in here).
pub type MembersProvider = Arc<dyn Fn() -> Vec<WorkerMember> + Send + Sync>;

/// How often things are refreshed.
#[derive(Debug, Clone, Copy)]
pub struct StatusTimings {
    /// How often the connection is re-checked in the background. Each check is a handful of
    /// ServiceNow calls that count against the instance's rate limit, in every process that
    /// shows a page. Default 15 minutes.
    pub connection_check: Duration,
    /// How long queue depths are reused. Default 5 seconds.
    pub depths_ttl: Duration,
    /// How often the HTML page reloads itself. Default 15 seconds.
    pub page_refresh: Duration,
}

impl Default for StatusTimings {
    fn default() -> Self {
        StatusTimings {
            connection_check: Duration::from_secs(15 * 60),
            depths_ttl: Duration::from_secs(5),
            page_refresh: Duration::from_secs(15),
        }
    }
}

/// What the page looks at.
#[derive(Clone)]
pub struct StatusSources {
    /// `run`, `worker` or `ingress`.
    pub role: String,
    /// The build version.
    pub version: String,
    /// The ServiceNow connection.
    pub connection: ConnectionManager,
    /// The event queue (depths, readiness, topology).
    pub queue: Arc<dyn EventQueue>,
    /// The plans, when this process loads them.
    pub plans: Option<Arc<PlanSet>>,
    /// Where activity comes from.
    pub activity: ActivityFanout,
    /// Whether this process runs a worker (then it is listed among the workers).
    pub runs_worker: bool,
    /// The deployment's workers, when membership is known.
    pub members: Option<MembersProvider>,
}

type CachedDepths = (
    DateTime<Utc>,
    tokio::time::Instant,
    Result<QueueDepths, String>,
);

struct Inner {
    sources: StatusSources,
    timings: StatusTimings,
    started_at: DateTime<Utc>,
    host: String,
    feed: SyncMutex<feed::Feed>,
    receiver: SyncMutex<Option<broadcast::Receiver<Arc<ActivityRecord>>>>,
    depths: Mutex<Option<CachedDepths>>,
    checked_at: SyncMutex<Option<DateTime<Utc>>>,
}

/// A status page. Cheap to clone.
#[derive(Clone)]
pub struct StatusPage {
    inner: Arc<Inner>,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".to_owned())
}

impl StatusPage {
    /// A page over `sources`. It subscribes to the activity at once; call
    /// [`StatusPage::spawn`] to start receiving it and checking the connection.
    pub fn new(sources: StatusSources, timings: StatusTimings) -> Self {
        let receiver = sources.activity.subscribe();
        StatusPage {
            inner: Arc::new(Inner {
                sources,
                timings,
                started_at: Utc::now(),
                host: host_name(),
                feed: SyncMutex::new(feed::Feed::default()),
                receiver: SyncMutex::new(Some(receiver)),
                depths: Mutex::new(None),
                checked_at: SyncMutex::new(None),
            }),
        }
    }

    /// Starts the background work until `shutdown`: collecting activity, and checking the
    /// connection now, every `connection_check`, and whenever it changes.
    pub fn spawn(&self, shutdown: CancellationToken) {
        let receiver = self
            .inner
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(receiver) = receiver {
            tokio::spawn(collect(self.inner.clone(), receiver, shutdown.clone()));
        }
        tokio::spawn(check_connection(self.inner.clone(), shutdown));
    }

    /// The routes, behind the access rule (`token`, when given, is required).
    pub fn router(&self, token: Option<SecretString>) -> Router {
        let access = auth::Access::new(token);
        Router::new()
            .route("/", get(page))
            .route("/api/v1/status", get(status_json))
            .route("/api/v1/activity", get(activity_json))
            .route_layer(middleware::from_fn_with_state(access, auth::require_access))
            .with_state(self.clone())
    }

    /// Everything the page shows, now.
    pub async fn snapshot(&self) -> StatusSnapshot {
        let inner = &self.inner;
        let sources = &inner.sources;
        let checked_at = *inner
            .checked_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let connection = ConnectionView::new(&sources.connection.current(), checked_at);
        let depths = self.depths().await;
        let queue = QueueView::new(
            sources.queue.topology().prefix(),
            &sources.queue.readiness(),
            depths
                .as_ref()
                .map(|(at, _, result)| (*at, result.clone()))
                .as_ref(),
        );
        let (activity, plans) = {
            let feed = inner.feed.lock().unwrap_or_else(PoisonError::into_inner);
            let activity = ActivityView {
                link: sources.activity.link(),
                total: feed.total,
                missed: feed.missed,
                not_shared: sources.activity.dropped(),
                items: feed.recent(),
            };
            let plans = PlansView {
                known: sources.plans.is_some(),
                plans: sources
                    .plans
                    .iter()
                    .flat_map(|set| set.plans())
                    .map(|plan| PlanView::new(plan, feed.count(&plan.name)))
                    .collect(),
                incidents_capped: feed.incidents_capped,
            };
            (activity, plans)
        };
        let summary = Summary::new(&connection, &queue, &activity);
        StatusSnapshot {
            generated_at: Utc::now(),
            summary,
            connection,
            queue,
            workers: self.workers(),
            plans,
            activity,
            process: ProcessView {
                role: sources.role.clone(),
                version: sources.version.clone(),
                host: inner.host.clone(),
                pid: std::process::id(),
                started_at: inner.started_at,
                refresh_seconds: inner.timings.page_refresh.as_secs().max(1),
            },
        }
    }

    /// The depths, read at most once per `depths_ttl` (one reader at a time; the others wait
    /// for its answer rather than asking the broker again).
    async fn depths(&self) -> Option<CachedDepths> {
        let mut cached = self.inner.depths.lock().await;
        let fresh = cached
            .as_ref()
            .is_some_and(|(_, read, _)| read.elapsed() < self.inner.timings.depths_ttl);
        if !fresh {
            let read =
                tokio::time::timeout(Duration::from_secs(5), self.inner.sources.queue.depths())
                    .await
                    .map_err(|_| "the queue did not answer within 5 s".to_owned())
                    .and_then(|r| r.map_err(|e| e.to_string()));
            *cached = Some((Utc::now(), tokio::time::Instant::now(), read));
        }
        cached.clone()
    }

    fn workers(&self) -> WorkersView {
        let sources = &self.inner.sources;
        if let Some(provider) = &sources.members {
            return WorkersView {
                complete: true,
                members: provider(),
            };
        }
        let members = if sources.runs_worker {
            vec![WorkerMember {
                id: format!("{}/{}", self.inner.host, std::process::id()),
                host: self.inner.host.clone(),
                partitions: (0..sources.queue.topology().partitions()).collect(),
                last_seen: None,
                this_process: true,
            }]
        } else {
            Vec::new()
        };
        WorkersView {
            complete: false,
            members,
        }
    }
}

/// Adds the status page to `router` on an admin address: always with a token; on a loopback
/// address without one; and not at all on another address without a token (logged).
pub fn mount(
    router: Router,
    listen: SocketAddr,
    page: &StatusPage,
    token: Option<SecretString>,
) -> Router {
    if token.is_none() && !listen.ip().is_loopback() {
        tracing::info!(
            %listen,
            "the status page (/) is off: set [admin] token to serve it on a non-loopback address"
        );
        return router;
    }
    router.merge(page.router(token))
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn page(State(page): State<StatusPage>) -> Response {
    let snapshot = page.snapshot().await;
    let mut response = Html(html::render(&snapshot)).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    no_store(response)
}

async fn status_json(State(page): State<StatusPage>) -> Response {
    no_store(Json(page.snapshot().await).into_response())
}

async fn activity_json(State(page): State<StatusPage>) -> Response {
    no_store(Json(page.snapshot().await.activity).into_response())
}

/// Moves activity from the fanout into the feed until shutdown.
async fn collect(
    inner: Arc<Inner>,
    mut receiver: broadcast::Receiver<Arc<ActivityRecord>>,
    shutdown: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            received = receiver.recv() => received,
        };
        let mut feed = inner.feed.lock().unwrap_or_else(PoisonError::into_inner);
        match received {
            Ok(record) => feed.push(record),
            Err(broadcast::error::RecvError::Lagged(missed)) => feed.missed += missed,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Checks the connection at start, every `connection_check`, and after every change of it.
async fn check_connection(inner: Arc<Inner>, shutdown: CancellationToken) {
    let manager = inner.sources.connection.clone();
    let mut changes = manager.subscribe();
    let mut generation = changes.borrow_and_update().generation;
    loop {
        if manager.current().config.is_some() {
            let checking = manager.check();
            tokio::select! {
                () = shutdown.cancelled() => return,
                report = checking => {
                    if report.is_some() {
                        *inner.checked_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Utc::now());
                    }
                }
            }
        }
        // Wait for the interval, or for a different connection (connect, disconnect, a file
        // change); a check storing its own report is not a new connection.
        let deadline = tokio::time::sleep(inner.timings.connection_check);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = &mut deadline => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = changes.borrow_and_update().generation;
                    if now != generation {
                        generation = now;
                        break;
                    }
                }
            }
        }
    }
}
