//! nowpilot's benchmarks. Each measures nowpilot and its baseline side by side in one run on
//! this machine and prints both with their ratio; nothing here asserts a number (see
//! `docs/benchmarks.md` for how to read them).

// A benchmark's job is to print; failing loudly on a broken setup is right here.
#![allow(clippy::print_stdout, unreachable_pub)]

mod ingress;
mod stats;

use clap::{Parser, Subcommand};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ingress(args) => ingress::run(args).await,
    }
}
