//! Shared by the `run`, `demo` and `browser` tests: an in-process simulator seeded with the
//! demo estate, and the real `nowpilot run` binary started on port 0 with its addresses read
//! from its output.

// Each test binary uses a different part of this module.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nowpilot_snowsim::{JournalEntry, SimConfig, SimUser, Simulator};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// nowpilot's integration user (role admin: the structured journal is readable).
pub const INTEGRATION: (&str, &str) = ("nowpilot.integration", "integration-pw");
/// The people of the demo estate who sign in.
pub const PEOPLE: [(&str, &str); 2] = [("maya.patel", "maya-pw"), ("carlos.mendes", "carlos-pw")];
/// The webhook secret of the tests.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A simulator serving on 127.0.0.1:0; stops when dropped.
pub struct Sim {
    /// The in-process handle (records, journal, callback log).
    pub sim: Simulator,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shutdown: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Sim {
    /// The demo estate, the integration user (admin) and two people with passwords.
    pub async fn start() -> Sim {
        let mut users = vec![SimUser::new(INTEGRATION.0, INTEGRATION.1)];
        users.extend(PEOPLE.iter().map(|(n, p)| SimUser::new(*n, *p)));
        let mut config = SimConfig {
            seed_demo: true,
            users,
            ..SimConfig::default()
        };
        config
            .user_roles
            .insert(INTEGRATION.0.into(), vec!["admin".into()]);
        let sim = Simulator::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(nowpilot_snowsim::run(
            sim.clone(),
            listener,
            shutdown.clone(),
        ));
        Sim { sim, url, shutdown }
    }

    /// A person creates an incident (the business rule fires); returns its sys_id.
    pub fn create(&self, user: &str, fields: &[(&str, &str)]) -> String {
        let mut record = nowpilot_model::Record::new();
        for (k, v) in fields {
            record.set(*k, *v);
        }
        let created = self.sim.insert_as(user, "incident", record).unwrap();
        created.value_or_empty("sys_id").to_owned()
    }

    /// A configuration item's sys_id.
    pub fn ci(&self, name: &str) -> String {
        self.sim.query("cmdb_ci", &format!("name={name}")).unwrap()[0]
            .value_or_empty("sys_id")
            .to_owned()
    }

    /// A stored field of an incident.
    pub fn field(&self, sys_id: &str, field: &str) -> String {
        self.sim
            .get("incident", sys_id)
            .map(|r| r.value_or_empty(field).to_owned())
            .unwrap_or_default()
    }

    /// Journal entries written by nowpilot.
    pub fn our_notes(&self, sys_id: &str) -> Vec<JournalEntry> {
        self.sim
            .journal("incident", sys_id)
            .into_iter()
            .filter(|e| e.created_by == INTEGRATION.0)
            .collect()
    }
}

/// Whether a note carries nowpilot's marker for `plan`/`action`.
pub fn has_marker(note: &str, plan: &str, action: &str) -> bool {
    note.lines()
        .any(|l| l.starts_with("[nowpilot") && l.contains(&format!("plan={plan} action={action}")))
}

/// Polls `check` every 100 ms for at most `limit`; panics with `what` when it never holds.
pub async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running `nowpilot run`.
pub struct Running {
    child: Child,
    /// `http://127.0.0.1:<port>` of the ingress.
    pub ingress: String,
    /// The status page URL (`http://127.0.0.1:<port>/`).
    pub status: String,
    /// Everything printed after the addresses.
    rest: tokio::task::JoinHandle<String>,
    stderr: tokio::task::JoinHandle<String>,
}

/// Writes `nowpilot.toml` in `dir`: the simulator connection (password in a file), the given
/// `[queue]` lines, the ingress and admin on port 0, the Quickstart plan, plus `extra` TOML.
pub fn write_config(dir: &Path, sim_url: &str, queue: &str, extra: &str) {
    std::fs::write(dir.join("pw"), format!("{}\n", INTEGRATION.1)).unwrap();
    let config = format!(
        r#"
[servicenow]
instance_url = "{sim_url}"
auth = "basic"
username = "{user}"
password_file = "pw"
timeout = "10s"

[queue]
partitions = 4
{queue}

[ingress]
listen = "127.0.0.1:0"
secrets = ["{WEBHOOK_SECRET}"]

[worker]
admin_listen = "127.0.0.1:0"
quickstart = true
{extra}
"#,
        user = INTEGRATION.0
    );
    std::fs::write(dir.join("nowpilot.toml"), config).unwrap();
}

impl Running {
    /// Starts `nowpilot run` in `dir` with extra environment variables, and waits (at most
    /// 60 s) until it printed its ingress and status page addresses.
    pub async fn start(dir: &Path, env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nowpilot"));
        command
            .arg("run")
            .env("NOWPILOT_CONFIG", dir.join("nowpilot.toml"))
            .env("NO_COLOR", "1")
            .env("NOWPILOT_LOG", "info,lapin=warn,amq_protocol=warn")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("nowpilot runs");
        let stderr = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut all = String::new();
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut ingress, mut status) = (None, None);
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while ingress.is_none() || status.is_none() {
                let Some(line) = lines.next_line().await.unwrap() else {
                    return false;
                };
                let url = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .map(str::to_owned);
                if line.starts_with("nowpilot run: ingress on") {
                    ingress = url.map(|u| u.trim_end_matches("/webhooks/servicenow").to_owned());
                } else if line.starts_with("nowpilot run: status page on") {
                    status = url;
                }
            }
            true
        })
        .await;
        if found != Ok(true) {
            let _ = child.start_kill();
            let errors = stderr.await.unwrap_or_default();
            panic!("nowpilot run did not print its addresses: {errors}");
        }
        let rest = tokio::spawn(async move {
            let mut all = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        Running {
            child,
            ingress: ingress.unwrap(),
            status: status.unwrap(),
            rest,
            stderr,
        }
    }

    /// The business rule's target.
    pub fn webhook(&self) -> String {
        format!("{}/webhooks/servicenow", self.ingress)
    }

    /// Sends SIGTERM and waits (at most 60 s) for the exit; returns its code and stderr.
    pub async fn stop(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().expect("still running").to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("nowpilot run stopped within 60 s after SIGTERM")
            .unwrap();
        let _ = self.rest.await;
        (status.code(), self.stderr.await.unwrap_or_default())
    }
}
