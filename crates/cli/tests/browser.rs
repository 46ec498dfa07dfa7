//! The status page in a real browser: headless Chromium (Debian's `chromium` package; `.ci/run`
//! installs it) loads the page of a running `nowpilot run`, signing in the way a person does
//! (`?token=` once, then the cookie), finds the connection state and an activity row, and saves
//! a screenshot under the test's output directory.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nowpilot_snowsim::{WebhookConfig, WebhookSecret};
use serde_json::Value;
use support::{Running, Sim, WEBHOOK_SECRET, wait_until, write_config};

const TOKEN: &str = "browser-test-admin-token";

/// The Chromium binary: `$CHROMIUM`, else `chromium` on the PATH. Missing is a failure with
/// the package to install, never a silent pass.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the browser test needs headless Chromium: install Debian's `chromium` package \
             (apt-get install chromium; .ci/run does this) or set CHROMIUM to the binary"
        )
    })
}

/// Runs headless Chromium (as root it needs --no-sandbox) with a fresh profile.
async fn browse(profile: &Path, args: &[&str]) -> std::process::Output {
    let output = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium ran")
}

#[tokio::test]
async fn the_status_page_shows_the_connection_and_the_activity_in_a_browser() {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &sim.url,
        "kind = \"memory\"",
        &format!("\n[admin]\ntoken = \"{TOKEN}\""),
    );
    let run = Running::start(dir.path(), &[]).await;
    sim.sim.set_webhook(WebhookConfig {
        url: Some(run.webhook().parse().unwrap()),
        secret: Some(WebhookSecret::parse(WEBHOOK_SECRET).unwrap()),
        skip_user: None,
    });
    let ci = sim.ci("checkout-api");
    let sys_id = sim.create(
        "maya.patel",
        &[
            (
                "short_description",
                "Checkout latency seen in the browser test",
            ),
            ("impact", "1"),
            ("urgency", "2"),
            ("cmdb_ci", &ci),
        ],
    );
    let number = sim.field(&sys_id, "number");

    // Wait, through the JSON API (bearer token), for the connection check and the pass.
    let http = reqwest::Client::new();
    let status_url = format!("{}api/v1/status", run.status);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = http
            .get(&status_url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let handled = v["activity"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["number"] == number.as_str() && p["outcome"] == "acted");
        if v["connection"]["state"] == "connected" && handled {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until("the incident acknowledged", Duration::from_secs(30), || {
        sim.field(&sys_id, "state") == "2"
    })
    .await;

    // The token goes in once; the page answers with a cookie and a redirect to itself.
    let sign_in = format!("{}?token={TOKEN}", run.status);
    let profile = tempfile::tempdir().unwrap();
    let out = browse(profile.path(), &["--dump-dom", &sign_in]).await;
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("ServiceNow is connected"),
        "the connection state: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains("class=\"activity-row\""),
        "an activity row: {dom}"
    );
    assert!(dom.contains(&number), "the incident's row: {dom}");
    assert!(dom.contains("quickstart"), "the plan: {dom}");
    assert!(!dom.contains(TOKEN), "the token is not in the page");

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let out = browse(
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
            &sign_in,
        ],
    )
    .await;
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {} ({e}): {}",
            shot.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG file");
    assert!(png.len() > 10_000, "a real picture, not an empty one");
    println!("screenshot: {}", shot.display());

    let (code, stderr) = run.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}
