//! One `nowpilot` process (`ingress` or `worker`) that a scenario can SIGKILL, SIGTERM and
//! start again with the same configuration, its log kept across restarts.
//!
//! Unlike `scale_support::WorkerProcess` (a worker with a fixed plan and Basic auth), the
//! configuration is whatever TOML the harness writes, so the same wrapper runs ingresses and
//! workers with Basic or OAuth credentials.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::scale_support::nowpilot_binary;

/// How long a graceful stop may take before the harness SIGKILLs (the product's own bounds:
/// an ingress drains in `shutdown_grace`, a worker's running passes get 20 s).
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// A `nowpilot <command>` process with its own configuration file and log.
pub(crate) struct NowpilotProcess {
    /// A short name for messages: `ingress`, `worker.0`.
    pub(crate) name: String,
    command: &'static str,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
    _dir: tempfile::TempDir,
}

impl NowpilotProcess {
    /// Writes `config` (TOML) and starts `nowpilot --config <it> <command>`.
    pub(crate) fn start(name: &str, command: &'static str, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("nowpilot.toml");
        std::fs::write(&config_path, config).expect("write the configuration");
        let mut process = NowpilotProcess {
            name: name.to_owned(),
            command,
            config: config_path,
            log: dir.path().join(format!("{command}.log")),
            child: None,
            starts: 0,
            _dir: dir,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // Restarts append to one log; the separator says where each run begins.
        writeln!(log, "===== {} start #{} =====", self.name, self.starts).expect("log");
        let child = Command::new(nowpilot_binary())
            .arg("--config")
            .arg(&self.config)
            .arg(self.command)
            .env(
                "RUST_LOG",
                "info,lapin=warn,lapin::channel=off,amq_protocol=warn",
            )
            // The process's configuration is the file: no inherited override may change it.
            .env_remove("NOWPILOT_LOG")
            .env_remove("NOWPILOT_QUEUE__PREFIX")
            .env_remove("NOWPILOT_QUEUE__URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nowpilot {}: {e}", self.command));
        self.child = Some(child);
    }

    /// Starts it again with the same configuration (after [`Self::kill`] or [`Self::stop`]).
    pub(crate) fn restart(&mut self) {
        self.spawn();
    }

    /// SIGKILL: no shutdown, its connections just drop. Waits until it is gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, then waits (bounded) for the graceful exit; SIGKILL after [`STOP_LIMIT`].
    /// Returns the exit status of a graceful exit.
    pub(crate) async fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id()?;
        let signalled = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        if !signalled {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return None;
        }
        match tokio::time::timeout(STOP_LIMIT, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                None
            }
        }
    }

    /// Whether it is running (started and not exited).
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How many times it was started.
    pub(crate) fn starts(&self) -> u32 {
        self.starts
    }

    /// Its log so far, every run.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log of its latest run only.
    pub(crate) fn current_log(&self) -> String {
        let text = self.log_text();
        let separator = format!("===== {} start #{} =====", self.name, self.starts);
        match text.rfind(&separator) {
            Some(at) => text[at..].to_owned(),
            None => text,
        }
    }

    /// The last `lines` lines of its log, for failure messages.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for NowpilotProcess {
    fn drop(&mut self) {
        // Killed and reaped before the topology guard deletes the queues, so that no dying
        // process redeclares them. `kill_on_drop` alone would not wait.
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
            for _ in 0..200 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
