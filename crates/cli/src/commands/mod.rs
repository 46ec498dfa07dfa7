//! One module per subcommand.

pub mod connect;
pub mod demo;
pub mod disconnect;
pub mod dlq;
pub mod ingress;
pub mod plans;
pub mod report;
pub mod run;
pub mod sim;
pub mod status;
pub mod worker;

use crate::Exit;

/// Exit code of a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of an unusable configuration (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// Prints `message` to stderr and fails with `code`.
pub fn fail(code: u8, message: impl std::fmt::Display) -> Exit {
    eprintln!("nowpilot: {message}");
    Exit(code)
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("received Ctrl-C, shutting down"),
                    _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
