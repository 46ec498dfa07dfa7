//! Every refusal class of the configuration loader, as a user meets it: the real `nowpilot`
//! binary run as `plans check`, `worker` or `ingress` on a broken configuration. Each row
//! asserts the configuration exit code (64), one `nowpilot:` line naming the file (or the
//! environment variable), the key and the reason, no panic or backtrace, and no secret value
//! anywhere in the output.
//!
//! `worker` and `ingress` validate everything before they connect to the broker. So that a row
//! whose configuration is (wrongly) accepted cannot touch the shared broker, rows without a
//! `[queue]` section point the queue at a closed port, and every run is bounded: a process
//! still running after its time limit fails its row.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "bad_config/cases.rs"]
mod cases;
#[path = "bad_config/plan_cases.rs"]
mod plan_cases;

use std::{
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cases::Case;

/// Every row of the table.
fn all_cases() -> impl Iterator<Item = &'static Case> {
    cases::CASES.iter().chain(plan_cases::CASES)
}

/// The exit code of an unusable configuration (`EX_USAGE`, documented in troubleshooting.md).
const EXIT_CONFIG: i32 = 64;
/// How long one run may take; a refusal takes milliseconds.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// A port nothing listens on: an accepted configuration fails to connect instead of using the
/// shared broker.
const CLOSED_BROKER: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

/// What one run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `nowpilot <command> --config <dir>/nowpilot.toml` with the case's files and variables,
/// and no other `NOWPILOT_*` variable from the test's environment.
fn run(case: &Case, dir: &Path) -> Run {
    std::fs::write(dir.join("nowpilot.toml"), case.config).unwrap();
    for (name, text) in case.files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_nowpilot"));
    command
        .args(case.command)
        .arg("--config")
        .arg(dir.join("nowpilot.toml"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        // A panic would print its backtrace, which the row then finds.
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("NOWPILOT_") {
            command.env_remove(name);
        }
    }
    if !case.config.contains("[queue]") {
        command.env("NOWPILOT_QUEUE__URL", CLOSED_BROKER);
    }
    for (name, value) in case.env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("nowpilot starts");
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    }
}

/// Everything wrong with one row's run (empty: the row holds).
fn problems(case: &Case, dir: &Path, run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    match run.code {
        Some(EXIT_CONFIG) => {}
        None => out.push(format!(
            "still running after {RUN_LIMIT:?}: the configuration was accepted"
        )),
        Some(code) => out.push(format!("exit code {code}, expected {EXIT_CONFIG}")),
    }
    let all = format!("{}{}", run.stdout, run.stderr);
    for sign in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        if all.contains(sign) {
            out.push(format!("the output contains {sign:?}"));
        }
    }
    if !case.secret.is_empty() && all.contains(case.secret) {
        out.push(format!("the output echoes the secret {:?}", case.secret));
    }
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("nowpilot: "))
        .collect();
    let [line] = lines.as_slice() else {
        out.push(format!(
            "expected one `nowpilot:` error line, found {}",
            lines.len()
        ));
        return out;
    };
    let origin = match case.origin.strip_prefix("env:") {
        Some(variable) => format!("environment variable {variable}: "),
        None => {
            let (file, position) = case.origin.split_once(':').unwrap_or((case.origin, ""));
            format!("{}:{position}", dir.join(file).display())
        }
    };
    if !line.contains(&origin) {
        out.push(format!("the message does not name the origin {origin:?}"));
    }
    if !case.key.is_empty() && !line.contains(&format!("`{}`", case.key)) {
        out.push(format!("the message does not name the key `{}`", case.key));
    }
    if !line.contains(case.reason) {
        out.push(format!(
            "the message does not give the reason {:?}",
            case.reason
        ));
    }
    out
}

#[test]
fn every_broken_configuration_is_refused_with_file_key_and_reason() {
    let mut failures = Vec::new();
    for (i, case) in all_cases().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let run = run(case, dir.path());
        let problems = problems(case, dir.path(), &run);
        if !problems.is_empty() {
            failures.push(format!(
                "row {i} ({}), `nowpilot {}`:\n  - {}\n  stderr: {}\n  stdout: {}",
                case.class,
                case.command.join(" "),
                problems.join("\n  - "),
                run.stderr.trim(),
                run.stdout.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        all_cases().count(),
        failures.join("\n")
    );
}

#[test]
fn the_table_covers_every_command_and_origin() {
    // A guard on the table itself: each command, each kind of origin, and secret rows.
    for command in [cases::PLANS_CHECK, cases::WORKER, cases::INGRESS] {
        assert!(all_cases().any(|c| c.command == command), "{command:?}");
    }
    assert!(all_cases().any(|c| c.origin.starts_with("env:")));
    assert!(all_cases().any(|c| c.origin.contains(".toml:")));
    assert!(all_cases().filter(|c| !c.secret.is_empty()).count() >= 5);
}

#[test]
fn warnings_are_reported_without_refusing() {
    // `continue = true` with nothing after it, and overlapping plans, are warnings: the
    // configuration is usable, `plans check` says what is odd and exits 0.
    let dir = tempfile::tempdir().unwrap();
    let case = Case {
        config: r#"
[[plans]]
name = "storage"
autonomy = "autonomous"
intake = { priorities = [3] }
actions = [{ kind = "acknowledge" }]

[[plans]]
name = "wide"
autonomy = "autonomous"
intake = { priorities = [3, 4] }
actions = [{ kind = "acknowledge" }]

[[plans]]
name = "last"
autonomy = "autonomous"
continue = true
intake = { priorities = [1] }
actions = [{ kind = "acknowledge" }]
"#,
        ..cases::BASE
    };
    let run = run(&case, dir.path());
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    for warning in [
        "warning plan \"wide\" overlaps \"storage\"",
        "warning plan \"last\" has `continue = true`, but no enabled plan comes after it",
    ] {
        assert!(run.stdout.contains(warning), "{warning}: {}", run.stdout);
    }
}
