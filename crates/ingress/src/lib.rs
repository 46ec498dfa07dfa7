//! nowpilot's webhook ingress: where ServiceNow's business rule posts every incident change.
//!
//! `POST /webhooks/servicenow` verifies the Standard Webhooks signature over the raw bytes
//! (several secrets for rotation, ±tolerance on the timestamp, constant-time comparison),
//! parses the body into [`nowpilot_model::CallbackPayload`], drops nowpilot's own changes
//! (echoes) and repeated deliveries (per-process dedupe by `webhook-id`), publishes an
//! [`nowpilot_model::EventEnvelope`] and answers `202` only once the broker confirmed it.
//! Every refusal is a JSON `{code, message}` with the matching status (400, 401, 413, 415,
//! 422, 429 and 503 + `Retry-After`). `/healthz`, `/readyz` and `/metrics` serve operators.
//!
//! Layout:
//! - [`config`]: the `[ingress]` section and its validated form;
//! - `verify`: the signature schemes;
//! - `rate_limit` and `client_addr`: the per-address limit (429) and who the client is behind
//!   trusted proxies;
//! - `tls`: HTTPS with rustls when a certificate is configured;
//! - `dedupe`: the bounded, expiring memory of delivered ids;
//! - `webhook`: the request pipeline, check by check;
//! - `server`: router, state, probes and the serve loop with graceful shutdown;
//! - [`publisher`]: the seam to `crates/queue`;
//! - [`telemetry`]: metric names and emission.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn demo(publisher: Arc<dyn nowpilot_ingress::EventPublisher>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use nowpilot_ingress::{IngressConfig, RenderMetrics, run};
//! let config = IngressConfig {
//!     secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
//!     echo_users: vec!["svc.nowpilot".into()],
//!     ..IngressConfig::default()
//! };
//! // The binary passes its Prometheus handle's `render` here.
//! let render: RenderMetrics = Arc::new(String::new);
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! let shutdown = tokio_util::sync::CancellationToken::new(); // cancel on SIGTERM
//! run(config, publisher, render, listener, shutdown).await?;
//! # Ok(())
//! # }
//! ```

mod client_addr;
pub mod config;
mod dedupe;
#[doc(hidden)]
pub mod fuzzing;
pub mod publisher;
mod rate_limit;
mod response;
mod server;
pub mod telemetry;
mod tls;
mod verify;
mod webhook;

pub use config::{
    BodySignatureConfig, ByteSize, IngressConfig, IngressConfigError, IngressSettings,
};
pub use publisher::{EventPublisher, PublishError, Readiness};
pub use server::{
    IngressError, IngressState, RenderMetrics, WEBHOOK_PATH, router, run, serve, serve_router,
};
