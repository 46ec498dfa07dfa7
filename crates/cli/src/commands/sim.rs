//! `nowpilot sim`: the ServiceNow simulator as a process.

use nowpilot_snowsim::{SimArgs, Simulator};
use tokio_util::sync::CancellationToken;

use super::{EXIT_CONFIG, EXIT_FAILURE, fail, shutdown_signal};
use crate::{
    Exit,
    telemetry::{TelemetryConfig, init_logging},
};

/// Runs the simulator until Ctrl-C or SIGTERM.
pub async fn run(args: SimArgs) -> Result<(), Exit> {
    init_logging(&TelemetryConfig::default(), None);
    let listen = args.listen;
    let tls = if args.tls {
        let identity = nowpilot_snowsim::TlsIdentity::self_signed()
            .map_err(|e| fail(EXIT_FAILURE, format!("sim: {e}")))?;
        if let Some(path) = &args.tls_cert_out {
            std::fs::write(path, identity.cert_pem()).map_err(|e| {
                fail(
                    EXIT_FAILURE,
                    format!("sim: cannot write {}: {e}", path.display()),
                )
            })?;
        }
        Some(identity)
    } else {
        None
    };
    let config = args
        .into_config()
        .map_err(|e| fail(EXIT_CONFIG, format!("sim: {e}")))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| fail(EXIT_FAILURE, format!("sim: cannot listen on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| fail(EXIT_FAILURE, format!("sim: {e}")))?;
    let sim = Simulator::new(config);
    // One line on stdout that scripts and tests can wait for.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("snowsim listening on {scheme}://{local}");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    let served = match tls {
        Some(identity) => nowpilot_snowsim::run_tls(sim, listener, identity, shutdown).await,
        None => nowpilot_snowsim::run(sim, listener, shutdown).await,
    };
    served.map_err(|e| fail(EXIT_FAILURE, format!("sim: {e}")))
}
