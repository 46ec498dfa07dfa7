//! The secrets test's deployment: the secrets, each process's configuration, and helpers to
//! drive the run and keep every answer for the search.

#![allow(dead_code)]

pub(crate) mod search;
pub(crate) mod wire;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use nowpilot_tests::SimHandle;
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::scale_support::{CALLER, nowpilot_binary, p2_incident};
use search::{Forbidden, basic_forms, encodings, whsec_forms};
use wire::Captured;

/// The older webhook key of a rotation (its `whsec_` form is configured).
pub(crate) const OLD_WEBHOOK_KEY: &[u8] = b"old-webhook-key:4c1e9a77d2b05f38";
/// The newer webhook key, the one the simulator's business rule signs with.
pub(crate) const NEW_WEBHOOK_KEY: &[u8] = b"new-webhook-key:91f0c3aa6e7d2b54";
/// The body-only signature scheme's secret (used as its UTF-8 bytes).
pub(crate) const BODY_SECRET: &str = "body-sig-secret-Vq3Lr8Tn2Xw";
/// The Basic-auth worker's user.
pub(crate) const BASIC_USER: &str = "svc.basic";
/// Its password (read from a file).
pub(crate) const BASIC_PASSWORD: &str = "basic-pw-H7sK2mQ9vB4z";
/// A password the instance refuses.
pub(crate) const WRONG_PASSWORD: &str = "wrong-pw-Z5nC8xR1tY6u";
/// The OAuth worker's user (password grant).
pub(crate) const OAUTH_USER: &str = "svc.oauth";
/// Its password.
pub(crate) const OAUTH_PASSWORD: &str = "oauth-user-pw-M3gF6hN8qA1c";
/// The OAuth client.
pub(crate) const CLIENT_ID: &str = "nowpilot-client";
/// Its secret.
pub(crate) const CLIENT_SECRET: &str = "client-secret-J4dW9pL2kS7e";
/// The key signing runbook calls.
pub(crate) const RUNBOOK_KEY: &[u8] = b"runbook-key:8e2d4b6f1a3c5e7f9012";
/// The admin token of every process.
pub(crate) const ADMIN_TOKEN: &str = "admin-token-R2vX7bK5nP9w";

/// `whsec_<base64 of key>`.
pub(crate) fn whsec(key: &[u8]) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The test broker, with its password written percent-encoded byte by byte: the broker gets
/// the same password, and the written form is a string no log holds by chance.
#[derive(Debug, Clone)]
pub(crate) struct Broker {
    /// The URL to configure.
    pub(crate) url: String,
    /// The password as written in it (`%67%75%65%73%74` for `guest`).
    pub(crate) written_password: String,
    /// The user name.
    pub(crate) user: String,
}

impl Broker {
    /// From `NOWPILOT_TEST_AMQP_URL` or the local default.
    pub(crate) fn new() -> Broker {
        let mut url = url::Url::parse(&nowpilot_testkit::amqp_url()).expect("the broker URL");
        let password = url.password().unwrap_or("guest").replace('+', "%2B");
        let decoded: String = url::form_urlencoded::parse(format!("p={password}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let written: String = decoded.bytes().map(|b| format!("%{b:02X}")).collect();
        let user = url.username().to_owned();
        url.set_password(None).expect("a password can be removed");
        let bare = url.as_str().replacen(&format!("{user}@"), "", 1);
        Broker {
            url: bare.replacen("://", &format!("://{user}:{written}@"), 1),
            written_password: written,
            user,
        }
    }
}

/// Where everything listens, and the files holding secrets.
pub(crate) struct Layout {
    /// The simulator as the processes reach it (the wire recorder).
    pub(crate) instance: String,
    /// The runbook receiver, `host:port`.
    pub(crate) runbook: String,
    pub(crate) broker: Broker,
    pub(crate) prefix: String,
    pub(crate) ingress_port: u16,
    pub(crate) basic_port: u16,
    pub(crate) oauth_port: u16,
    pub(crate) password_file: String,
    pub(crate) token_file: String,
    pub(crate) runbook_file: String,
}

impl Layout {
    /// Free ports, and the secret files written into `dir`.
    pub(crate) fn new(dir: &Path, instance: String, runbook: String, prefix: String) -> Layout {
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("{text}\n")).expect("write a secret file");
            path.display().to_string()
        };
        Layout {
            instance,
            runbook,
            broker: Broker::new(),
            prefix,
            ingress_port: free_port(),
            basic_port: free_port(),
            oauth_port: free_port(),
            password_file: file("basic-password", BASIC_PASSWORD),
            token_file: file("admin-token", ADMIN_TOKEN),
            runbook_file: file("runbook-secret", &whsec(RUNBOOK_KEY)),
        }
    }

    /// `[queue]` and `[telemetry]` (debug), shared by every process.
    fn common(&self) -> String {
        format!(
            r#"
[queue]
url = "{url}"
prefix = "{prefix}"
partitions = 4
heartbeat = "5s"
publish_timeout = "3s"
connect_timeout = "3s"

[telemetry]
log_level = "debug"
"#,
            url = self.broker.url,
            prefix = self.prefix,
        )
    }

    /// The workers' `[worker]` section and plan: acknowledge priority-2 incidents and run a
    /// signed runbook for each.
    fn worker(&self, user: &str, port: u16, runbook_secret: &str) -> String {
        format!(
            r#"
[worker]
admin_listen = "127.0.0.1:{port}"
member_id = "{user}"
membership_heartbeat = "500ms"
member_timeout = "2s"
poller = false
allowed_hosts = ["127.0.0.1"]
{runbook_secret}
{common}
[[plans]]
name = "ack"
autonomy = "autonomous"
[plans.intake]
priorities = [2]
[[plans.steps]]
kind = "runbook"
name = "restart"
url = "http://{runbook}/hook"
[[plans.actions]]
kind = "acknowledge"
[[plans.actions]]
kind = "investigate"
"#,
            common = self.common(),
            runbook = self.runbook,
        )
    }

    /// The ingress: both webhook secrets, the body scheme, the admin token, and a connection
    /// with a wrong password (its status page's check fails).
    pub(crate) fn ingress_config(&self) -> String {
        format!(
            r#"
[ingress]
listen = "127.0.0.1:{port}"
secrets = ["{old}", "{new}"]
echo_users = ["{BASIC_USER}", "{OAUTH_USER}"]
shutdown_grace = "5s"

[ingress.body_signature]
header = "x-hmac-signature"
secret = "{BODY_SECRET}"

[servicenow]
instance_url = "{instance}"
auth = "basic"
username = "{BASIC_USER}"
password = "{WRONG_PASSWORD}"
timeout = "10s"

[admin]
token = "{ADMIN_TOKEN}"
{common}"#,
            port = self.ingress_port,
            old = whsec(OLD_WEBHOOK_KEY),
            new = whsec(NEW_WEBHOOK_KEY),
            instance = self.instance,
            common = self.common(),
        )
    }

    /// The Basic worker: password, admin token and runbook secret from files.
    pub(crate) fn basic_config(&self) -> String {
        format!(
            r#"
[servicenow]
instance_url = "{instance}"
auth = "basic"
username = "{BASIC_USER}"
password_file = "{password_file}"
timeout = "10s"

[admin]
token_file = "{token_file}"
{worker}"#,
            instance = self.instance,
            password_file = self.password_file,
            token_file = self.token_file,
            worker = self.worker(
                BASIC_USER,
                self.basic_port,
                &format!("runbook_secret_file = \"{}\"", self.runbook_file)
            ),
        )
    }

    /// The OAuth worker (password grant): every secret inline.
    pub(crate) fn oauth_config(&self) -> String {
        format!(
            r#"
[servicenow]
instance_url = "{instance}"
auth = "oauth"
grant = "password"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
username = "{OAUTH_USER}"
password = "{OAUTH_PASSWORD}"
timeout = "10s"

[admin]
token = "{ADMIN_TOKEN}"
{worker}"#,
            instance = self.instance,
            worker = self.worker(
                OAUTH_USER,
                self.oauth_port,
                &format!("runbook_secret = \"{}\"", whsec(RUNBOOK_KEY))
            ),
        )
    }
}

/// Waits (at most `limit`) until `check` holds, checking every 200 ms.
pub(crate) async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Who acknowledged `sys_id` (the users whose notes carry the acknowledgement marker).
pub(crate) fn acknowledged_by(sim: &SimHandle, sys_id: &str) -> BTreeSet<String> {
    sim.sim
        .journal("incident", sys_id)
        .into_iter()
        .filter(|e| {
            nowpilot_worker::markers::parse(&e.value)
                .iter()
                .any(|m| m.done_action() == Some(("ack", "acknowledge")))
        })
        .map(|e| e.created_by)
        .collect()
}

/// Creates a priority-2 incident as a person: the business rule sends one signed callback.
pub(crate) fn create_incident(sim: &SimHandle, title: &str) -> String {
    sim.sim
        .insert_as(CALLER, "incident", p2_incident(title))
        .expect("insert")
        .value_or_empty("sys_id")
        .to_owned()
}

/// Creates `count` incidents and waits until every one is acknowledged; returns who
/// acknowledged them.
pub(crate) async fn create_and_handle(
    sim: &SimHandle,
    tag: &str,
    count: usize,
) -> BTreeSet<String> {
    let ids: Vec<String> = (0..count)
        .map(|i| create_incident(sim, &format!("{tag} {i}")))
        .collect();
    wait_until(
        &format!("{tag}: {count} incidents acknowledged"),
        Duration::from_secs(90),
        || ids.iter().all(|id| !acknowledged_by(sim, id).is_empty()),
    )
    .await;
    ids.iter().flat_map(|id| acknowledged_by(sim, id)).collect()
}

/// Runs `nowpilot --config <config> status` at debug level; returns (exit code, stdout and
/// stderr).
pub(crate) async fn status_command(dir: &Path, name: &str, config: &str) -> (i32, String) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).expect("write the configuration");
    let run = tokio::process::Command::new(nowpilot_binary())
        .arg("--config")
        .arg(&path)
        .arg("status")
        .env("NOWPILOT_LOG", "debug")
        .env_remove("NOWPILOT_QUEUE__URL")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("nowpilot status finished")
        .expect("nowpilot status ran");
    let text = format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// An HTTP answer, kept for the search.
pub(crate) struct Fetched {
    /// What was asked, for messages.
    pub(crate) place: String,
    pub(crate) status: StatusCode,
    /// Headers (but `Set-Cookie`) and body.
    pub(crate) text: String,
    /// The `Set-Cookie` header: a sign-in sets the cookie there on purpose.
    pub(crate) set_cookie: Option<String>,
}

/// Sends `request` and keeps its answer.
pub(crate) async fn fetch(request: reqwest::RequestBuilder, place: String) -> Fetched {
    let answer = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{place}: {e}"));
    let status = answer.status();
    let set_cookie = answer
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut text: String = answer
        .headers()
        .iter()
        .filter(|(name, _)| *name != reqwest::header::SET_COOKIE)
        .map(|(name, value)| format!("{name}: {}\n", value.to_str().unwrap_or("<binary>")))
        .collect();
    text.push_str(&answer.text().await.unwrap_or_default());
    Fetched {
        place,
        status,
        text,
        set_cookie,
    }
}

/// Every secret in every form: the configured ones, what only the run knows (the broker
/// password as written, a refresh token, the status page cookies) and what the wire recorder
/// saw.
pub(crate) fn forbidden(
    captured: &Captured,
    amqp_written_password: &str,
    refresh_token: &str,
    cookies: &[String],
) -> Vec<Forbidden> {
    let mut forbidden: Vec<Forbidden> = Vec::new();
    forbidden.extend(whsec_forms("webhook secret (older)", OLD_WEBHOOK_KEY));
    forbidden.extend(whsec_forms("webhook secret (newer)", NEW_WEBHOOK_KEY));
    forbidden.extend(whsec_forms("runbook secret", RUNBOOK_KEY));
    forbidden.extend(encodings("body_signature secret", BODY_SECRET.as_bytes()));
    forbidden.extend(basic_forms("Basic password", BASIC_USER, BASIC_PASSWORD));
    forbidden.extend(basic_forms(
        "wrong Basic password",
        BASIC_USER,
        WRONG_PASSWORD,
    ));
    forbidden.extend(basic_forms("OAuth client secret", CLIENT_ID, CLIENT_SECRET));
    forbidden.extend(encodings("OAuth user password", OAUTH_PASSWORD.as_bytes()));
    forbidden.extend(encodings("admin token", ADMIN_TOKEN.as_bytes()));
    forbidden.extend(encodings("refresh token", refresh_token.as_bytes()));
    for cookie in cookies {
        forbidden.extend(encodings("status page cookie", cookie.as_bytes()));
    }
    let seen = [
        ("Authorization value sent", &captured.authorizations),
        ("access token issued", &captured.access_tokens),
        ("refresh token seen", &captured.refresh_tokens),
        ("token endpoint form secret", &captured.form_secrets),
    ];
    for (label, values) in seen {
        forbidden.extend(values.iter().map(|value| Forbidden {
            label: label.to_owned(),
            form: value.clone(),
        }));
    }
    forbidden.push(Forbidden {
        label: "AMQP password as written in queue.url".into(),
        form: amqp_written_password.to_owned(),
    });
    forbidden
}
