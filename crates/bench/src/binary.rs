//! The `nowpilot` binary the benchmarks start, and the simulator's start-up handshake.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// `explicit`, or the `nowpilot` next to this benchmark; an error naming the build command when
/// it is not there.
pub(crate) fn nowpilot(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let binary = match explicit {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark has no directory")?
            .join("nowpilot"),
    };
    if !binary.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release --bin nowpilot --bin nowpilot-bench)",
            binary.display()
        );
    }
    Ok(binary)
}

/// Waits (30 s at most) for a `nowpilot sim` started with piped stdout to print its address,
/// and returns it. Its further output is read and dropped, so it never blocks on a full pipe.
pub(crate) async fn sim_listening(sim: &mut Child) -> anyhow::Result<String> {
    let stdout = sim.stdout.take().context("no stdout from the simulator")?;
    let mut lines = BufReader::new(stdout).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("snowsim listening on ") {
                return Ok(url.trim().to_owned());
            }
        }
        bail!("the simulator exited before listening")
    })
    .await
    .context("the simulator did not start listening within 30 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(base)
}
