//! `nowpilot`: the one binary. Subcommands run the simulator, manage the ServiceNow connection,
//! and run the ingress, the worker, or both in one process (`run`, and `demo` around it).
//!
//! Exit codes are part of the interface (documented in `docs/troubleshooting.md`): 0 success,
//! 1 a runtime failure, 2 bad command-line usage, 64 an unusable configuration, and 10-16 a
//! failed connection check (see [`commands::connect::exit_code`]).

// Printing is this binary's job; and in a binary nothing is reachable from outside, so `pub`
// inside modules only documents what a module offers to its siblings.
#![allow(clippy::print_stdout, unreachable_pub)]

mod commands;
mod config;
mod output;
mod telemetry;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// mimalloc: the ingress and worker allocate and free many small objects per request across
/// threads, where glibc's allocator spent a fifth of the ingress's CPU (measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// nowpilot: an incident autopilot for ServiceNow.
#[derive(Debug, Parser)]
#[command(name = "nowpilot", version, about, long_about = None)]
struct Cli {
    /// The configuration file (TOML; default nowpilot.toml). Every key can be overridden with
    /// NOWPILOT_<SECTION>__<KEY> environment variables. A file named here must exist; the
    /// default may be absent (defaults and environment only).
    #[arg(long, global = true, env = "NOWPILOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the ServiceNow simulator (for tests, demos and benchmarks).
    Sim(Box<nowpilot_snowsim::SimArgs>),
    /// Connect nowpilot to a ServiceNow instance, verify it, and save the connection.
    Connect(Box<commands::connect::ConnectArgs>),
    /// Show whether the saved ServiceNow connection works right now.
    Status(commands::status::StatusArgs),
    /// Remove the saved ServiceNow connection: nowpilot stops writing to ServiceNow.
    Disconnect,
    /// Show nowpilot working end to end against an embedded simulator.
    Demo(commands::demo::DemoArgs),
    /// Run the ingress: take ServiceNow's signed callbacks and queue them.
    Ingress,
    /// Run a worker: take events off the queue and act on ServiceNow through the plans.
    Worker,
    /// Run the ingress, a worker and the status page in one process (one queue, one
    /// connection; `[queue] kind = "memory"` needs no broker).
    Run,
    /// Check the response plans, or test which plan an incident matches.
    #[command(subcommand)]
    Plans(commands::plans::PlansCommand),
    /// Look at dead letters and replay them.
    #[command(subcommand)]
    Dlq(commands::dlq::DlqCommand),
}

/// Where the configuration is, and whether the user named it (then it must exist).
#[derive(Debug, Clone)]
pub struct ConfigPath {
    /// The main config file.
    pub path: PathBuf,
    /// Named with --config or NOWPILOT_CONFIG.
    pub explicit: bool,
}

/// A command's failure, carrying its exit code; the message is already printed.
#[derive(Debug)]
pub struct Exit(pub u8);

fn main() -> ExitCode {
    // mimalloc asks for transparent huge pages on its arenas; where THP is `madvise`, a process
    // that touches a few KiB here and there then holds whole 2 MiB pages (the idle ingress held
    // 32 MiB of them). nowpilot's heap is small and churns: plain pages keep its footprint honest.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nowpilot: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let config = ConfigPath {
        explicit: cli.config.is_some(),
        path: cli.config.unwrap_or_else(|| PathBuf::from("nowpilot.toml")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Sim(args) => commands::sim::run(*args).await,
            Command::Connect(args) => commands::connect::run(&config.path, *args).await,
            Command::Status(args) => commands::status::run(&config, args).await,
            Command::Disconnect => commands::disconnect::run(&config).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Ingress => commands::ingress::run(&config).await,
            Command::Worker => commands::worker::run(&config).await,
            Command::Run => commands::run::run(&config).await,
            Command::Plans(command) => commands::plans::run(&config, command).await,
            Command::Dlq(command) => commands::dlq::run(&config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code)) => ExitCode::from(code),
    }
}
