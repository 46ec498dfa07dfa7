//! The OAuth authorization-code flow for `nowpilot connect --grant authorization-code`:
//! print the authorize URL, receive the browser's redirect on a loopback listener, check the
//! `state`, and exchange the code for tokens. Only the refresh token is kept.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::{Query, State},
    response::Html,
    routing::get,
};
use nowpilot_servicenow::{
    CodeExchange, InstanceUrl, ServiceNowConfig, authorize_url, exchange_code,
};
use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    Exit,
    commands::{EXIT_CONFIG, EXIT_FAILURE, fail},
};

#[derive(Debug, Deserialize)]
struct Redirect {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Clone)]
struct Shared {
    state: String,
    tx: mpsc::Sender<Result<String, String>>,
}

/// Runs the browser flow and returns the refresh token.
pub async fn run(
    config: &ServiceNowConfig,
    redirect_uri: &str,
    timeout: Duration,
) -> Result<SecretString, Exit> {
    let instance = InstanceUrl::parse(&config.instance_url)
        .map_err(|e| fail(EXIT_CONFIG, format!("connect: {e}")))?;
    let client_id = config.client_id.clone().unwrap_or_default();
    let Some(client_secret) = config.client_secret.clone() else {
        return Err(fail(
            EXIT_CONFIG,
            "connect: --client-secret-file is required",
        ));
    };
    let (addr, path) = loopback(redirect_uri)?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        fail(
            EXIT_FAILURE,
            format!("connect: cannot listen on {addr} for the OAuth redirect: {e}"),
        )
    })?;

    let state = random_hex();
    let (tx, mut rx) = mpsc::channel(1);
    let shared = Shared {
        state: state.clone(),
        tx,
    };
    let app = Router::new()
        .route(&path, get(redirected))
        .with_state(shared);
    let stop = CancellationToken::new();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );

    let url = authorize_url(&instance, &client_id, redirect_uri, &state);
    println!("Open this address in a browser, sign in as the integration user and allow access:");
    println!("  {url}");
    println!("Waiting for ServiceNow to redirect to {redirect_uri} ...");

    let outcome = tokio::time::timeout(timeout, rx.recv()).await;
    stop.cancel();
    // The redirect page has been served; the listener may close now.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    let code = match outcome {
        Err(_) => {
            return Err(fail(
                EXIT_FAILURE,
                format!(
                    "connect: no authorization arrived within {}; run connect again",
                    humantime::format_duration(timeout)
                ),
            ));
        }
        Ok(None) => return Err(fail(EXIT_FAILURE, "connect: the redirect listener stopped")),
        Ok(Some(Err(reason))) => {
            return Err(fail(
                crate::commands::report::exit_code(nowpilot_servicenow::FailureKind::Credentials),
                format!(
                    "connect: Invalid OAuth credentials: the authorization was refused: {reason}"
                ),
            ));
        }
        Ok(Some(Ok(code))) => code,
    };

    let tokens = exchange_code(&CodeExchange {
        instance: &instance,
        client_id: &client_id,
        client_secret: &client_secret,
        code: &code,
        redirect_uri,
        timeout: config.timeout,
    })
    .await
    .map_err(|e| {
        fail(
            crate::commands::report::exit_code(nowpilot_servicenow::FailureKind::Credentials),
            format!(
                "connect: Invalid OAuth credentials: exchanging the authorization code failed: {e}"
            ),
        )
    })?;
    tokens.refresh_token.ok_or_else(|| {
        fail(
            EXIT_FAILURE,
            "connect: the instance returned no refresh token; check the OAuth client's refresh token lifespan",
        )
    })
}

async fn redirected(State(shared): State<Shared>, Query(r): Query<Redirect>) -> Html<&'static str> {
    let result = match (r.code, r.state, r.error) {
        (_, _, Some(error)) => Err(match r.error_description {
            Some(d) => format!("{error}: {d}"),
            None => error,
        }),
        (Some(code), Some(state), None) if state == shared.state => Ok(code),
        (Some(_), _, None) => {
            // A redirect that does not carry our state is not ours (or is forged): ignore it.
            return Html(
                "<h1>nowpilot</h1><p>This authorization does not belong to the running <code>nowpilot connect</code>; it was ignored.</p>",
            );
        }
        (None, _, None) => Err("the redirect carried no code".to_owned()),
    };
    let page = if result.is_ok() {
        "<h1>nowpilot is authorized</h1><p>You can close this tab and return to the terminal.</p>"
    } else {
        "<h1>nowpilot was not authorized</h1><p>See the terminal for the reason.</p>"
    };
    let _ = shared.tx.try_send(result);
    Html(page)
}

/// The listen address and path of a loopback redirect URI.
fn loopback(redirect_uri: &str) -> Result<(SocketAddr, String), Exit> {
    let url = url::Url::parse(redirect_uri).map_err(|e| {
        fail(
            EXIT_CONFIG,
            format!("connect: --redirect-uri {redirect_uri:?}: {e}"),
        )
    })?;
    if url.scheme() != "http" {
        return Err(fail(
            EXIT_CONFIG,
            "connect: --redirect-uri must be an http:// loopback address (nowpilot listens on it)",
        ));
    }
    let host = url.host_str().unwrap_or_default();
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::IpAddr::from([127, 0, 0, 1]),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                fail(
                    EXIT_CONFIG,
                    "connect: --redirect-uri must use a loopback host",
                )
            })?,
    };
    if !ip.is_loopback() {
        return Err(fail(
            EXIT_CONFIG,
            "connect: --redirect-uri must use a loopback host (127.0.0.1, ::1 or localhost)",
        ));
    }
    let port = url.port().unwrap_or(80);
    let path = if url.path().is_empty() {
        "/".to_owned()
    } else {
        url.path().to_owned()
    };
    Ok((SocketAddr::new(ip, port), path))
}

fn random_hex() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
