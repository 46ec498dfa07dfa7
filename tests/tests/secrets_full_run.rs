//! No secret reaches a log, a metric, a status page or an API answer, over a whole run.
//!
//! Three `nowpilot` processes (this build's binary) over real RabbitMQ and the simulator, with
//! every kind of secret configured and logging at `debug`:
//!
//! - `nowpilot ingress`: two webhook secrets (a rotation), the body-signature secret, the
//!   admin token, and a `[servicenow]` section with a **wrong** Basic password (its status page
//!   checks the connection and fails);
//! - `nowpilot worker` as `svc.basic`: Basic auth from a password file, the runbook secret
//!   from a file, the admin token from a file, a plan whose runbook step fires per incident;
//! - `nowpilot worker` as `svc.oauth`: OAuth password grant (client secret and user password
//!   inline), the runbook secret and admin token inline;
//! - `nowpilot status` twice: the refresh-token grant, and Basic with a wrong password;
//! - the broker URL's password written percent-encoded, so its written form is a string no log
//!   has by chance.
//!
//! Every ServiceNow call of every process goes through a wire recorder (credentials as sent,
//! tokens as issued) and a switch that fails the token endpoint. The run: signed callbacks from
//! the business rule (the newer secret) and posted by hand (the older one, the body-signature
//! scheme, bad signatures), a refused connection change with a wrong password, the token
//! endpoint failing after every access token was revoked, runbook calls, and every status
//! page, status JSON, activity JSON, connection report and `/metrics`, with the token, with a
//! wrong one, without one, and through the browser sign-in (`?token=`).
//!
//! Then every log line (stderr; these commands print nothing to stdout but `status`, whose
//! stdout is searched too), every `/metrics` text and every answer is searched for every
//! secret: raw, base64, hex, percent-encoded, as the Basic header's `user:password`, the
//! `whsec_` payloads and their decoded keys, and every token and `Authorization` value the
//! recorder saw. Controls keep the search honest: it finds the secrets in the processes'
//! configuration files and in a planted string, the logs are at debug level and hold the
//! events the run caused, and the recorder saw tokens being issued.
//!
//! Logs are searched as written and with colour codes removed (the processes colour their logs
//! even into a file). The `nowpilot ingress` and `nowpilot worker` harness keeps stderr and
//! discards stdout (`faults_support::process`), where these commands print nothing.

// Test code: failing loudly is right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod faults_support;
mod scale_support;
mod secrets_support;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use faults_support::process::NowpilotProcess;
use faults_support::token_proxy::TokenFaultProxy;
use nowpilot_snowsim::{OAuthClient, SimConfig, SimUser, WebhookConfig, WebhookSecret};
use nowpilot_testkit::{TopologyGuard, unique_prefix};
use nowpilot_tests::{SimHandle, signing};
use reqwest::StatusCode;
use scale_support::CALLER;
use secrets_support::search::{leaks, strip_ansi};
use secrets_support::wire::{RunbookReceiver, WireRecorder};
use secrets_support::*;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_log_metric_or_page_of_a_full_run() {
    tokio::time::timeout(Duration::from_secs(300), full_run())
        .await
        .expect("the run finished within 300 s");
}

/// The deployment, and everything shown so far: (where, text).
struct Run {
    dir: tempfile::TempDir,
    layout: Layout,
    sim: SimHandle,
    token_switch: TokenFaultProxy,
    wire: WireRecorder,
    runbook: RunbookReceiver,
    ingress: NowpilotProcess,
    basic: NowpilotProcess,
    oauth: NowpilotProcess,
    http: reqwest::Client,
    visible: Vec<(String, String)>,
    _guard: TopologyGuard,
}

impl Run {
    fn url(&self, port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    fn keep(&mut self, answer: Fetched) {
        self.visible.push((answer.place, answer.text));
    }
}

async fn full_run() {
    let mut run = start().await;
    both_workers_handle_callbacks(&run).await;
    callbacks_by_hand(&mut run).await;
    servicenow_refuses(&mut run).await;
    let refresh_token = status_commands(&mut run).await;
    let (metrics, cookies) = pages(&mut run).await;
    // Graceful stops, so the shutdown paths log too.
    for process in [&mut run.ingress, &mut run.basic, &mut run.oauth] {
        let _ = process.stop().await;
        // Searched as written and without colour codes.
        let log = process.log_text();
        run.visible
            .push((format!("{} log (plain)", process.name), strip_ansi(&log)));
        run.visible.push((format!("{} log", process.name), log));
    }
    let configs = vec![
        run.layout.ingress_config(),
        run.layout.basic_config(),
        run.layout.oauth_config(),
    ];
    check(&run, &metrics, &refresh_token, &cookies, &configs);
}

/// The simulator behind the token switch and the wire recorder, the runbook receiver, and the
/// three processes, ready.
async fn start() -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = unique_prefix("secrets");
    let guard = TopologyGuard::new(&nowpilot_testkit::amqp_config(&prefix));
    let ingress_port = free_port();
    let mut config = SimConfig {
        users: vec![
            SimUser::new(CALLER, "caller-pw"),
            SimUser::new(BASIC_USER, BASIC_PASSWORD),
            SimUser::new(OAUTH_USER, OAUTH_PASSWORD),
        ],
        oauth_clients: vec![OAuthClient::new(CLIENT_ID, CLIENT_SECRET)],
        ..SimConfig::default()
    };
    for user in [CALLER, BASIC_USER, OAUTH_USER] {
        config
            .user_roles
            .insert(user.to_owned(), vec!["admin".into()]);
    }
    config.webhook = WebhookConfig {
        url: Some(
            format!("http://127.0.0.1:{ingress_port}/webhooks/servicenow")
                .parse()
                .unwrap(),
        ),
        secret: Some(WebhookSecret::parse(&whsec(NEW_WEBHOOK_KEY)).unwrap()),
        skip_user: None,
    };
    let sim = SimHandle::start(config).await;
    let token_switch = TokenFaultProxy::start(&sim.url).await;
    let wire = WireRecorder::start(&format!("http://{}", token_switch.addr)).await;
    let runbook = RunbookReceiver::start(RUNBOOK_KEY.to_vec()).await;
    let mut layout = Layout::new(
        dir.path(),
        format!("http://{}", wire.addr),
        runbook.addr.to_string(),
        prefix,
    );
    layout.ingress_port = ingress_port;

    let mut run = Run {
        ingress: NowpilotProcess::start("ingress", "ingress", &layout.ingress_config()),
        basic: NowpilotProcess::start(BASIC_USER, "worker", &layout.basic_config()),
        oauth: NowpilotProcess::start(OAUTH_USER, "worker", &layout.oauth_config()),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        dir,
        layout,
        sim,
        token_switch,
        wire,
        runbook,
        visible: Vec::new(),
        _guard: guard,
    };
    let ready = format!("{}/readyz", run.url(run.layout.ingress_port));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(run.ingress.running(), "{}", run.ingress.log_tail(30));
        let answer = run.http.get(&ready).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "the ingress never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in [&mut run.basic, &mut run.oauth] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !worker.log_text().contains("consuming partition") {
            assert!(worker.running(), "{}", worker.log_tail(30));
            assert!(
                Instant::now() < deadline,
                "{} takes no partition",
                worker.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    run
}

/// Signed callbacks from the business rule (the newer secret), until both workers have
/// acknowledged incidents (and run their runbook for each).
async fn both_workers_handle_callbacks(run: &Run) {
    let mut handlers = BTreeSet::new();
    for round in 0..8 {
        handlers.extend(create_and_handle(&run.sim, &format!("round {round}"), 4).await);
        if handlers.len() == 2 {
            break;
        }
    }
    assert_eq!(
        handlers,
        BTreeSet::from([BASIC_USER.to_owned(), OAUTH_USER.to_owned()]),
        "both workers acknowledged incidents"
    );
}

/// How a hand-made callback is signed.
enum Signed {
    /// Standard Webhooks headers with this key.
    Webhooks(&'static [u8]),
    /// The body-only scheme's header with this key.
    Body(&'static [u8]),
    /// Not at all.
    Not,
}

/// Callbacks posted by hand: the older secret of the rotation, the body-only scheme, and
/// signatures made with keys the ingress does not know.
async fn callbacks_by_hand(run: &mut Run) {
    let some = run.sim.sim.query("incident", "ORDERBYnumber").unwrap();
    let sys_id = some[0].value_or_empty("sys_id").to_owned();
    let version: u64 = some[0].value_or_empty("sys_mod_count").parse().unwrap();
    let webhook = format!("{}/webhooks/servicenow", run.url(run.layout.ingress_port));
    let cases = [
        ("older secret", Signed::Webhooks(OLD_WEBHOOK_KEY), true),
        (
            "unknown key",
            Signed::Webhooks(b"not-a-configured-key"),
            false,
        ),
        ("body scheme", Signed::Body(BODY_SECRET.as_bytes()), true),
        (
            "body scheme, bad key",
            Signed::Body(b"not-the-body-secret"),
            false,
        ),
        ("no signature", Signed::Not, false),
    ];
    for (i, (what, signed, accepted)) in cases.into_iter().enumerate() {
        let id = format!("{sys_id}-{version}-by-hand-{i}");
        let body = signing::callback(&sys_id, version, CALLER);
        let mut request = run
            .http
            .post(&webhook)
            .header("content-type", "application/json");
        match signed {
            Signed::Webhooks(key) => {
                let (ts, signature) = signing::sign(&whsec(key), &id, &body);
                request = request
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts)
                    .header("webhook-signature", signature);
            }
            Signed::Body(key) => {
                use hmac::{KeyInit, Mac};
                let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
                mac.update(&body);
                let b64 = base64::engine::general_purpose::STANDARD;
                request =
                    request.header("x-hmac-signature", b64.encode(mac.finalize().into_bytes()));
            }
            Signed::Not => {}
        }
        let answer = fetch(request.body(body), format!("ingress answer ({what})")).await;
        if accepted {
            assert!(answer.status.is_success(), "{what}: {}", answer.text);
        } else {
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{what}: {}",
                answer.text
            );
        }
        run.keep(answer);
    }
}

/// ServiceNow refuses: a connection change with a wrong password (nothing saved), then the
/// token endpoint failing after every access token was revoked, while incidents arrive.
async fn servicenow_refuses(run: &mut Run) {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let wrong = serde_json::json!({
        "instance_url": run.layout.instance, "auth": "basic",
        "username": BASIC_USER, "password": WRONG_PASSWORD,
    });
    let answer = fetch(
        run.http
            .put(format!(
                "{}/api/v1/connection",
                run.url(run.layout.basic_port)
            ))
            .header("authorization", &bearer)
            .json(&wrong),
        "PUT /api/v1/connection with a wrong password".into(),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    run.keep(answer);

    run.token_switch.fail_tokens(true);
    run.sim.sim.revoke_access_tokens();
    let answer = fetch(
        run.http
            .get(format!(
                "{}/api/v1/connection",
                run.url(run.layout.oauth_port)
            ))
            .header("authorization", &bearer),
        "connection check while tokens fail".into(),
    )
    .await;
    assert!(
        answer.text.contains("\"connected\":false"),
        "{}",
        answer.text
    );
    run.keep(answer);
    let refused_by_check = run.token_switch.refused();
    assert!(
        refused_by_check > 0,
        "the check met the failing token endpoint"
    );
    // New incidents until one lands on the OAuth worker's partitions: its pass meets the
    // revoked token, and re-authenticating meets the failing endpoint (the pass is retried).
    let refused_token = |run: &Run| run.oauth.log_text().contains("access token refused");
    let mut during = Vec::new();
    for i in 0..30 {
        during.push(create_incident(&run.sim, &format!("tokens failing {i}")));
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !refused_token(run) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if refused_token(run) {
            break;
        }
    }
    wait_until(
        "the OAuth worker's refused token request",
        Duration::from_secs(30),
        || run.token_switch.refused() > refused_by_check && refused_token(run),
    )
    .await;
    run.token_switch.fail_tokens(false);
    wait_until(
        "the incidents of the outage handled",
        Duration::from_secs(120),
        || {
            during
                .iter()
                .all(|id| !acknowledged_by(&run.sim, id).is_empty())
        },
    )
    .await;
    assert!(
        run.runbook.verified() > 0 && run.runbook.refused() == 0,
        "runbook calls: {} signed, {} not",
        run.runbook.verified(),
        run.runbook.refused()
    );
}

/// `nowpilot status` with the refresh-token grant (a token this test obtained), and with
/// Basic and a wrong password. Returns the refresh token.
async fn status_commands(run: &mut Run) -> String {
    let grant: serde_json::Value = run
        .http
        .post(format!("{}/oauth_token.do", run.sim.url))
        .form(&[
            ("grant_type", "password"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("username", OAUTH_USER),
            ("password", OAUTH_PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh_token = grant["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    let instance = &run.layout.instance;
    let refresh = format!(
        "[servicenow]\ninstance_url = \"{instance}\"\nauth = \"oauth\"\n\
         grant = \"refresh_token\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret = \"{CLIENT_SECRET}\"\nrefresh_token = \"{refresh_token}\"\n"
    );
    let (code, text) = status_command(run.dir.path(), "status-refresh", &refresh).await;
    assert_eq!(code, 0, "{text}");
    run.visible
        .push(("nowpilot status (refresh token)".into(), text));
    let wrong = format!(
        "[servicenow]\ninstance_url = \"{instance}\"\nauth = \"basic\"\n\
         username = \"{BASIC_USER}\"\npassword = \"{WRONG_PASSWORD}\"\n"
    );
    let (code, text) = status_command(run.dir.path(), "status-wrong", &wrong).await;
    assert_eq!(code, 12, "a refused password exits 12: {text}");
    run.visible
        .push(("nowpilot status (wrong password)".into(), text));
    refresh_token
}

/// Every page and API answer of every process: with the token, a wrong one, none, and the
/// browser sign-in. Returns the `/metrics` texts (ingress first) and the sign-in cookies.
async fn pages(run: &mut Run) -> (Vec<String>, Vec<String>) {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let mut metrics = Vec::new();
    let mut cookies = Vec::new();
    let processes = [
        ("ingress", run.layout.ingress_port),
        (BASIC_USER, run.layout.basic_port),
        (OAUTH_USER, run.layout.oauth_port),
    ];
    for (name, port) in processes {
        let base = run.url(port);
        let answer = fetch(
            run.http.get(format!("{base}/metrics")),
            format!("{name} /metrics"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        metrics.push(answer.text.clone());
        run.keep(answer);
        let mut paths = vec!["/", "/api/v1/status", "/api/v1/activity"];
        if name != "ingress" {
            paths.push("/api/v1/connection?cached=true");
        }
        for path in paths {
            let url = format!("{base}{path}");
            let answer = fetch(
                run.http.get(&url).header("authorization", &bearer),
                format!("{name} {path}"),
            )
            .await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{name} {path}: {}",
                answer.text
            );
            run.keep(answer);
            let wrong = "Bearer not-the-admin-token";
            for (how, request) in [
                ("no token", run.http.get(&url)),
                (
                    "wrong token",
                    run.http.get(&url).header("authorization", wrong),
                ),
            ] {
                let answer = fetch(request, format!("{name} {path} ({how})")).await;
                assert_eq!(
                    answer.status,
                    StatusCode::UNAUTHORIZED,
                    "{name} {path} ({how})"
                );
                run.keep(answer);
            }
        }
        let sign_in = format!("{base}/?token={ADMIN_TOKEN}");
        let answer = fetch(run.http.get(sign_in), format!("{name} sign-in")).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
        let cookie = answer.set_cookie.clone().expect("a cookie");
        let pair = cookie.split(';').next().unwrap().to_owned();
        run.keep(answer);
        let answer = fetch(
            run.http.get(format!("{base}/")).header("cookie", &pair),
            format!("{name} / (cookie)"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        run.keep(answer);
        cookies.push(pair.split_once('=').unwrap().1.to_owned());
    }
    (metrics, cookies)
}

fn check(
    run: &Run,
    metrics: &[String],
    refresh_token: &str,
    cookies: &[String],
    configs: &[String],
) {
    let captured = run.wire.captured();
    assert!(
        captured.access_tokens.len() >= 2,
        "the recorder saw tokens issued before and after the revocation: {}",
        captured.access_tokens.len()
    );
    for scheme in ["Basic ", "Bearer "] {
        assert!(
            captured
                .authorizations
                .iter()
                .any(|a| a.starts_with(scheme))
        );
    }
    let written = &run.layout.broker.written_password;
    let forbidden = forbidden(&captured, written, refresh_token, cookies);
    let found = leaks(&forbidden, &run.visible);
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));

    // Controls: the search finds each form where it is planted, and finds the secrets in the
    // configuration files that hold them.
    for secret in &forbidden {
        let planted = [(
            "control".to_owned(),
            format!("before {} after", secret.form),
        )];
        let hits = leaks(std::slice::from_ref(secret), &planted);
        assert_eq!(hits.len(), 1, "{}", secret.label);
    }
    let configs: Vec<(String, String)> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("config {i}"), c.clone()))
        .collect();
    let in_configs = leaks(&forbidden, &configs);
    for expected in [
        "webhook secret (older)",
        "webhook secret (newer)",
        "body_signature secret",
        "wrong Basic password",
        "OAuth client secret",
        "OAuth user password",
        "runbook secret",
        "admin token",
        "AMQP password",
    ] {
        assert!(
            in_configs.iter().any(|l| l.starts_with(expected)),
            "the search did not find the {expected} in the configuration"
        );
    }

    // The logs are at debug level and tell of what happened; the broker URL is logged
    // redacted.
    let log = |name: &str| {
        let place = format!("{name} log (plain)");
        run.visible
            .iter()
            .find(|(p, _)| *p == place)
            .map(|(_, text)| text.as_str())
            .unwrap_or_default()
    };
    let redacted = format!("amqp://{}:***@", run.layout.broker.user);
    let expected = [
        ("ingress", "signature verification failed"),
        ("ingress", "connected to the broker"),
        ("ingress", redacted.as_str()),
        (BASIC_USER, "consuming partition"),
        (BASIC_USER, redacted.as_str()),
        (OAUTH_USER, "obtained an OAuth access token"),
        (OAUTH_USER, "OAuth token request failed"),
        (OAUTH_USER, "access token refused"),
    ];
    for (name, event) in expected {
        assert!(
            log(name).contains("DEBUG"),
            "the {name} log is not at debug level"
        );
        assert!(
            log(name).contains(event),
            "the {name} log lacks {event:?}:\n{}",
            log(name)
        );
    }
    assert!(metrics[0].contains("nowpilot_ingress_verification_failures_total"));
    assert!(metrics[1].contains("nowpilot_servicenow_requests_total"));
    eprintln!(
        "searched {} texts ({} bytes) for {} forbidden strings: none found",
        run.visible.len(),
        run.visible.iter().map(|(_, t)| t.len()).sum::<usize>(),
        forbidden.len()
    );
}
