//! `nowpilot connect | status | disconnect` as a user runs them: the real binary against the
//! simulator over HTTP, checking messages, exit codes and the saved files.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use nowpilot_snowsim::{OAuthClient, SimConfig, SimUser, Simulator};
use tokio_util::sync::CancellationToken;

const USER: &str = "nowpilot.integration";
const PASSWORD: &str = "correct horse battery staple";
const CLIENT_ID: &str = "nowpilot-client";
const CLIENT_SECRET: &str = "client-s3cret";

struct Sim {
    url: String,
    shutdown: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn sim() -> Sim {
    let mut config = SimConfig {
        seed_demo: true,
        users: vec![SimUser::new(USER, PASSWORD)],
        oauth_clients: vec![OAuthClient::new(CLIENT_ID, CLIENT_SECRET)],
        ..SimConfig::default()
    };
    config
        .user_roles
        .insert(USER.into(), vec!["itil".into(), "admin".into()]);
    let sim = Simulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(nowpilot_snowsim::run(sim, listener, shutdown.clone()));
    Sim { url, shutdown }
}

fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path
}

async fn nowpilot(dir: &Path, args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nowpilot"))
        .args(args)
        .env("NOWPILOT_CONFIG", dir.join("nowpilot.toml"))
        .env("NO_COLOR", "1")
        .env_remove("NOWPILOT_LOG")
        .current_dir(dir)
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("nowpilot finished")
        .expect("nowpilot ran")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

#[tokio::test]
async fn basic_connect_status_disconnect() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = secret_file(dir.path(), "pw", PASSWORD);
    let pw = pw.to_str().unwrap();

    // A trailing slash is removed and said so; the connection works.
    let instance = format!("{}/", sim.url);
    let out = nowpilot(
        dir.path(),
        &[
            "connect",
            "--instance",
            &instance,
            "--auth",
            "basic",
            "--username",
            USER,
            "--password-file",
            pw,
        ],
    )
    .await;
    let all = text(&out);
    assert_eq!(code(&out), 0, "{all}");
    assert!(all.contains("ServiceNow is connected"), "{all}");
    assert!(
        all.contains("trailing"),
        "the removed trailing slash is mentioned: {all}"
    );
    assert!(all.contains(&format!("user      {USER}")), "{all}");
    assert!(all.contains("auth      basic"), "{all}");
    assert!(!all.contains(PASSWORD), "the password is never printed");

    let saved = dir.path().join("connection.toml");
    let saved_text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        saved_text.contains(&format!("instance_url = \"{}\"", sim.url)),
        "{saved_text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let main = std::fs::read_to_string(dir.path().join("nowpilot.toml")).unwrap();
    assert!(main.contains("connection.toml"), "{main}");

    let out = nowpilot(dir.path(), &["status"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("ServiceNow is connected"));

    let out = nowpilot(dir.path(), &["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["connected"], true);

    let out = nowpilot(dir.path(), &["disconnect"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("Disconnected from"));
    assert!(!saved.exists());

    let out = nowpilot(dir.path(), &["status"]).await;
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("ServiceNow is not connected"));
}

#[tokio::test]
async fn each_failure_has_its_own_message_and_exit_code() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let good = secret_file(dir.path(), "good", PASSWORD);
    let bad = secret_file(dir.path(), "bad", "wrong password");
    let bad_secret = secret_file(dir.path(), "bad-secret", "not-the-secret");
    let (good, bad, bad_secret) = (
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        bad_secret.to_str().unwrap(),
    );

    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    };
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "connect",
                "--instance",
                &sim.url,
                "--username",
                USER,
                "--password-file",
                bad,
            ],
            12,
            "Invalid username or password",
        ),
        (
            vec![
                "connect",
                "--instance",
                &sim.url,
                "--auth",
                "oauth",
                "--grant",
                "client-credentials",
                "--client-id",
                CLIENT_ID,
                "--client-secret-file",
                bad_secret,
            ],
            12,
            "Invalid OAuth credentials",
        ),
        (
            vec![
                "connect",
                "--instance",
                &closed,
                "--username",
                USER,
                "--password-file",
                good,
            ],
            11,
            "Unable to connect to ServiceNow endpoint",
        ),
        (
            vec![
                "connect",
                "--instance",
                "http://acme.service-now.com",
                "--username",
                USER,
                "--password-file",
                good,
            ],
            10,
            "Invalid ServiceNow endpoint URL",
        ),
        (
            vec!["connect", "--instance", &sim.url, "--username", USER],
            64,
            "--password-file",
        ),
    ];
    for (args, want_code, want_text) in cases {
        let out = nowpilot(dir.path(), &args).await;
        let all = text(&out);
        assert_eq!(code(&out), want_code, "{args:?}: {all}");
        assert!(all.contains(want_text), "{args:?}: {all}");
        assert!(
            !all.contains(PASSWORD) && !all.contains("not-the-secret"),
            "{all}"
        );
        // Nothing is saved by a failed connect.
        assert!(!dir.path().join("connection.toml").exists(), "{args:?}");
    }
}

#[tokio::test]
async fn a_failed_connect_keeps_the_previous_connection() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let good = secret_file(dir.path(), "good", PASSWORD);
    let bad = secret_file(dir.path(), "bad", "nope");
    let out = nowpilot(
        dir.path(),
        &[
            "connect",
            "--instance",
            &sim.url,
            "--username",
            USER,
            "--password-file",
            good.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let before = std::fs::read_to_string(dir.path().join("connection.toml")).unwrap();
    let out = nowpilot(
        dir.path(),
        &[
            "connect",
            "--instance",
            &sim.url,
            "--username",
            USER,
            "--password-file",
            bad.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code(&out), 12);
    assert!(text(&out).contains("previous connection"), "{}", text(&out));
    let after = std::fs::read_to_string(dir.path().join("connection.toml")).unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn oauth_grants_connect() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "secret", CLIENT_SECRET);
    let pw = secret_file(dir.path(), "pw", PASSWORD);
    let secret = secret.to_str().unwrap();
    let pw = pw.to_str().unwrap();

    let out = nowpilot(
        dir.path(),
        &[
            "connect",
            "--instance",
            &sim.url,
            "--auth",
            "oauth",
            "--grant",
            "client-credentials",
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            secret,
        ],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("auth      oauth (client_credentials)"),
        "{}",
        text(&out)
    );

    // Changing credentials: password grant replaces the connection.
    let out = nowpilot(
        dir.path(),
        &[
            "connect",
            "--instance",
            &sim.url,
            "--auth",
            "oauth",
            "--grant",
            "password",
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            secret,
            "--username",
            USER,
            "--password-file",
            pw,
        ],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("replacing the previous connection"),
        "{}",
        text(&out)
    );
    let saved = std::fs::read_to_string(dir.path().join("connection.toml")).unwrap();
    assert!(saved.contains("grant = \"password\""), "{saved}");

    let out = nowpilot(dir.path(), &["status"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[tokio::test]
async fn authorization_code_flow_through_the_browser_form() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "secret", CLIENT_SECRET);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let redirect = format!("http://127.0.0.1:{port}/oauth/callback");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nowpilot"))
        .args([
            "connect",
            "--instance",
            &sim.url,
            "--auth",
            "oauth",
            "--grant",
            "authorization-code",
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            secret.to_str().unwrap(),
            "--redirect-uri",
            &redirect,
            "--authorize-timeout",
            "60s",
        ])
        .env("NOWPILOT_CONFIG", dir.path().join("nowpilot.toml"))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Read stdout until the authorize URL appears, as a person would.
    use tokio::io::{AsyncBufReadExt, BufReader};
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let authorize = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line = line.trim();
            if line.starts_with("http") && line.contains("oauth_auth.do") {
                return line.to_owned();
            }
        }
        panic!("no authorize URL printed");
    })
    .await
    .unwrap();
    let rest = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });

    // The "browser": load the login form, then submit the integration user's credentials. The
    // simulator answers with a redirect to nowpilot's loopback listener, which we follow.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = browser.get(&authorize).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let url = reqwest::Url::parse(&authorize).unwrap();
    let mut params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    params.push(("username".into(), USER.into()));
    params.push(("password".into(), PASSWORD.into()));
    let post_url = format!("{}/oauth_auth.do", sim.url);
    let answer = browser.post(&post_url).form(&params).send().await.unwrap();
    assert_eq!(answer.status(), 302, "{:?}", answer.text().await);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&redirect), "{location}");
    let landing = browser.get(&location).send().await.unwrap();
    assert!(
        landing
            .text()
            .await
            .unwrap()
            .contains("nowpilot is authorized")
    );

    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    let printed = rest.await.unwrap();
    assert!(status.success(), "{printed}");
    assert!(printed.contains("ServiceNow is connected"), "{printed}");
    assert!(
        printed.contains("oauth (authorization_code)") || printed.contains("oauth (refresh_token)"),
        "{printed}"
    );
    let saved = std::fs::read_to_string(dir.path().join("connection.toml")).unwrap();
    assert!(
        saved.contains("refresh_token = "),
        "the refresh token is kept"
    );
    assert!(!printed.contains(CLIENT_SECRET));
}
