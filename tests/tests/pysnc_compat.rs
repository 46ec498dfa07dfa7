//! The simulator must be indistinguishable from ServiceNow for a client nobody here wrote:
//! ServiceNow's own Python client, PySNC, queries, inserts, updates and writes a work note
//! against it over HTTPS, the way PySNC's documentation shows.
//!
//! The test keeps a virtualenv with a pinned PySNC under the target directory (created on first
//! run from PyPI), so it needs `python3` with `venv` and access to PyPI the first time.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use nowpilot_snowsim::{SimConfig, SimUser, Simulator, TlsIdentity};
use tokio_util::sync::CancellationToken;

const PYSNC: &str = "pysnc==1.2.1";

fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pysnc-venv");
    let python = dir.join("bin").join("python");
    let marker = dir.join(".installed-pysnc-1.2.1");
    if marker.exists() {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .status()
        .expect("python3 is needed for the PySNC compatibility test");
    assert!(status.success(), "python3 -m venv failed");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PYSNC,
        ])
        .status()
        .expect("pip runs");
    assert!(
        status.success(),
        "pip install {PYSNC} failed (is PyPI reachable?)"
    );
    std::fs::write(&marker, PYSNC).expect("marker written");
    python
}

#[tokio::test(flavor = "multi_thread")]
async fn pysnc_queries_inserts_updates_and_writes_journal() {
    let python = tokio::task::spawn_blocking(venv).await.unwrap();

    let sim = Simulator::new(SimConfig {
        seed_demo: true,
        users: vec![SimUser::new("pysnc.user", "pysnc-password")],
        ..SimConfig::default()
    });
    let identity = TlsIdentity::self_signed().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("sim.pem");
    std::fs::write(&ca, identity.cert_pem()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(nowpilot_snowsim::run_tls(
        sim.clone(),
        listener,
        identity,
        shutdown.clone(),
    ));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pysnc_compat.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .args([url.as_str(), "pysnc.user", "pysnc-password"])
        .arg(&ca)
        // requests lets these override the `verify=` PySNC passes; the test must trust
        // exactly the simulator's authority.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .await
        .unwrap();
    shutdown.cancel();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "PySNC failed:\n{stdout}\n{stderr}");

    // What PySNC did is in the simulator's records, not only in its own output.
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let sys_id = seen["inserted"]["sys_id"].as_str().unwrap();
    let record = sim
        .get("incident", sys_id)
        .expect("the incident PySNC inserted exists");
    assert_eq!(record.value("short_description"), Some("Updated by PySNC"));
    assert_eq!(record.value("priority"), Some("1"));
    let journal = sim.journal("incident", sys_id);
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].value, "Note written by PySNC");
    assert_eq!(journal[0].created_by, "pysnc.user");
    // PySNC talked to the unversioned Table API with its usual parameters.
    assert!(
        sim.request_log()
            .iter()
            .any(|r| r.path.starts_with("/api/now/table/incident"))
    );
}
