//! nowpilot's benchmarks. Each measures nowpilot and its baseline side by side in one run on
//! this machine and prints both with their ratio; nothing here asserts a number (see
//! `docs/benchmarks.md` for how to read them).

// A benchmark's job is to print; failing loudly on a broken setup is right here.
#![allow(clippy::print_stdout, unreachable_pub)]

mod binary;
mod ingress;
mod scaling;
mod soak;
mod stats;
mod worker;

use clap::{Parser, Subcommand};

/// The load generator should spend its CPU on load, not on glibc's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "nowpilot-bench", about = "nowpilot's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Signed HTTP callbacks through `nowpilot ingress` vs raw confirmed publishes to the same
    /// quorum queues, at the same concurrency.
    Ingress(ingress::Args),
    /// Incident passes per second and CPU per pass against the simulator, per injected latency.
    Worker(worker::Args),
    /// Passes per second with 1, 2 and 4 `nowpilot worker` processes sharing the partitions.
    Scaling(scaling::Args),
    /// The whole path (sim, ingress, worker on RabbitMQ) at a constant fraction of its
    /// capacity for a bounded time: memory growth and latency drift.
    Soak(soak::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ingress(args) => ingress::run(args).await,
        Command::Worker(args) => worker::run(args).await,
        Command::Scaling(args) => scaling::run(args).await,
        Command::Soak(args) => soak::run(args).await,
    }
}
