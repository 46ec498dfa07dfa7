//! The status page over HTTP, against the simulator and the memory queue.

use std::time::Duration;

use nowpilot_model::plans::{PlanConfig, PlanSet};
use nowpilot_model::{EventEnvelope, EventSource};
use nowpilot_queue::{ActivityAction, EventPublisher, MemoryBackend, QueueConfig, QueueKind};
use nowpilot_servicenow::{ClientOptions, ServiceNowConfig};
use nowpilot_snowsim::{SimConfig, SimUser, Simulator};
use serde_json::Value;

use super::*;

const SYS_ID: &str = "0123456789abcdef0123456789abcdef";

struct Harness {
    url: String,
    fanout: ActivityFanout,
    queue: Arc<MemoryBackend>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

const PLANS: &str = r#"
[[plans]]
name = "payments"
autonomy = "autonomous"
[plans.intake]
priorities = [1]
configuration_items = ["payments-api"]
[[plans.actions]]
kind = "acknowledge"

[[plans]]
name = "noise"
enabled = false
[plans.intake]
title_contains_any = ["<b>test</b>"]
[[plans.actions]]
kind = "work_note"
text = "hi"
autonomy = "autonomous"
"#;

#[derive(serde::Deserialize)]
struct PlansFile {
    plans: Vec<PlanConfig>,
}

async fn start(password: &str, token: Option<&str>, listen: Option<&str>) -> Harness {
    let shutdown = CancellationToken::new();
    let sim = Simulator::new(SimConfig {
        seed_demo: true,
        users: vec![SimUser::new("integration", "s3cret-pw")],
        ..SimConfig::default()
    });
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", sim_listener.local_addr().unwrap());
    tokio::spawn(nowpilot_snowsim::run(sim, sim_listener, shutdown.clone()));

    let dir = tempfile::tempdir().unwrap();
    let manager = ConnectionManager::new(
        dir.path().join("nowpilot.toml"),
        dir.path(),
        Some(ServiceNowConfig::basic(
            &sim_url,
            "integration",
            SecretString::from(password.to_owned()),
        )),
        ClientOptions::default(),
    );
    let queue_config = QueueConfig {
        kind: QueueKind::Memory,
        partitions: 2,
        ..QueueConfig::default()
    };
    let queue = Arc::new(MemoryBackend::new(&queue_config, shutdown.clone()).unwrap());
    let file: PlansFile = toml::from_str(PLANS).unwrap();
    let plans = PlanSet::new(&file.plans, true).unwrap();
    let fanout = ActivityFanout::in_process();
    let page = StatusPage::new(
        StatusSources {
            role: "run".into(),
            version: "9.9.9".into(),
            connection: manager,
            queue: queue.clone(),
            plans: Some(Arc::new(plans)),
            activity: fanout.clone(),
            runs_worker: true,
            members: None,
        },
        StatusTimings {
            // Depths are read on every view, so a test sees its own publishes at once.
            depths_ttl: Duration::ZERO,
            ..StatusTimings::default()
        },
    );
    page.spawn(shutdown.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let declared: SocketAddr = listen.unwrap_or("127.0.0.1:9091").parse().unwrap();
    let app = mount(
        Router::new().route("/healthz", get(|| async { "ok" })),
        declared,
        &page,
        token.map(|t| SecretString::from(t.to_owned())),
    );
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    Harness {
        url,
        fanout,
        queue,
        shutdown,
        _dir: dir,
    }
}

fn activity(number: &str, plans: &[&str], outcome: &str) -> ActivityRecord {
    ActivityRecord {
        at: Utc::now(),
        origin: String::new(),
        sys_id: SYS_ID.into(),
        number: number.into(),
        short_description: Some("Payments <b>down</b> & out".into()),
        event_ids: vec![format!("{SYS_ID}-1")],
        plans: plans.iter().map(|p| (*p).to_owned()).collect(),
        outcome: outcome.into(),
        reason: None,
        actions: vec![ActivityAction {
            plan: "payments".into(),
            action: "acknowledge".into(),
            kind: "acknowledge".into(),
            result: "done".into(),
            detail: "state → In Progress \"quoted\"".into(),
        }],
        error: None,
        duration_ms: 42,
    }
}

async fn status(h: &Harness) -> Value {
    reqwest::get(format!("{}/api/v1/status", h.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the JSON until `check` holds (at most 30 s).
async fn wait_for(h: &Harness, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = status(h).await;
        if check(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_page_shows_the_connection_plans_queue_and_activity_escaped() {
    let h = start("s3cret-pw", None, None).await;
    wait_for(&h, "the connection check", |v| {
        v["connection"]["state"] == "connected"
    })
    .await;
    h.fanout.publish(activity(
        "INC<script>alert(1)</script>",
        &["payments"],
        "acted",
    ));
    h.fanout.publish(activity("INC0010002", &[], "no_plan"));
    let event = EventEnvelope::observed(
        "incident",
        SYS_ID,
        3,
        "INC0010001",
        EventSource::Replay,
        Utc::now(),
    );
    h.queue.publish(&event).await.unwrap();
    let v = wait_for(&h, "the activity", |v| v["activity"]["total"] == 2).await;

    assert_eq!(v["summary"]["state"], "ok", "{v:#}");
    assert_eq!(v["connection"]["headline"], "ServiceNow is connected");
    assert_eq!(v["connection"]["user"], "integration");
    assert_eq!(v["connection"]["auth"], "basic");
    assert_eq!(v["queue"]["waiting"], 1);
    assert_eq!(v["queue"]["dead_letters"], 0);
    let plans: Vec<&str> = v["plans"]["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(plans, ["payments", "noise", "quickstart"]);
    assert_eq!(v["plans"]["plans"][0]["matched"]["passes"], 1);
    assert_eq!(v["plans"]["plans"][2]["matched"]["passes"], 0);
    assert_eq!(
        v["plans"]["plans"][0]["takes"],
        "priority 1 - Critical · configuration item payments-api"
    );
    // Newest first.
    assert_eq!(v["activity"]["items"][0]["number"], "INC0010002");
    assert_eq!(v["workers"]["members"][0]["this_process"], true);
    assert_eq!(
        v["workers"]["members"][0]["partitions"],
        serde_json::json!([0, 1])
    );
    assert_eq!(v["process"]["version"], "9.9.9");

    let activity_only: Value = reqwest::get(format!("{}/api/v1/activity", h.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(activity_only["items"], v["activity"]["items"]);

    let response = reqwest::get(format!("{}/", h.url)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"15\">"));
    assert!(html.contains("ServiceNow is connected"));
    assert!(html.contains("All good"));
    // The state comes before the details.
    let summary = html.find("id=\"summary\"").unwrap();
    assert!(summary < html.find("id=\"connection\"").unwrap());
    assert!(summary < html.find("id=\"activity\"").unwrap());
    // Every value is escaped; nothing from a record becomes markup.
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("INC&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("Payments &lt;b&gt;down&lt;/b&gt; &amp; out"));
    assert!(
        html.contains("&lt;b&gt;test&lt;/b&gt;"),
        "the plan filter is escaped"
    );
    assert!(html.contains("&quot;quoted&quot;"));
    assert_eq!(html.matches("class=\"activity-row\"").count(), 2);
    assert!(html.contains(&format!(
        "/nav_to.do?uri=incident.do?sys_id={SYS_ID}\" rel=\"noreferrer\">INC0010002</a>"
    )));
    assert!(html.contains("version 9.9.9"));
}

#[tokio::test]
async fn a_failing_connection_is_the_first_thing_said_with_its_advice() {
    let h = start("wrong-password", None, None).await;
    let v = wait_for(&h, "the failed check", |v| {
        v["connection"]["state"] == "failing"
    })
    .await;
    assert_eq!(v["connection"]["headline"], "Invalid username or password");
    assert_eq!(v["connection"]["failed_check"], "credentials");
    assert!(v["connection"]["advice"].is_string(), "{v:#}");
    assert_eq!(v["summary"]["state"], "attention");
    assert!(
        v["summary"]["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("Invalid username or password")
    );
    let html = reqwest::get(format!("{}/", h.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Needs attention"));
    assert!(
        !html.contains("wrong-password"),
        "the password is never shown"
    );
}

#[tokio::test]
async fn dead_letters_need_attention() {
    let h = start("s3cret-pw", None, None).await;
    let event = EventEnvelope::observed(
        "incident",
        SYS_ID,
        1,
        "INC0010001",
        EventSource::Replay,
        Utc::now(),
    );
    h.queue.publish(&event).await.unwrap();
    let mut stream = h.queue.consume(&[0, 1]).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), stream.recv())
        .await
        .unwrap()
        .unwrap();
    delivery.dead_letter("bad_plan", "test").await.unwrap();
    let v = wait_for(&h, "the dead letter", |v| v["queue"]["dead_letters"] == 1).await;
    let problems = v["summary"]["problems"].to_string();
    assert!(problems.contains("dead-letter queue"), "{problems}");
}

#[tokio::test]
async fn with_a_token_the_page_needs_it_and_a_browser_gets_a_cookie_instead() {
    const TOKEN: &str = "admin-t0ken-for-tests";
    let h = start("s3cret-pw", Some(TOKEN), Some("0.0.0.0:9091")).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let page = http.get(format!("{}/", h.url)).send().await.unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.text().await.unwrap().contains("?token="));
    let api = http
        .get(format!("{}/api/v1/status", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    assert_eq!(api.json::<Value>().await.unwrap()["code"], "unauthorized");
    // Other routes of the admin router are untouched by the page's access rule.
    let health = http.get(format!("{}/healthz", h.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let bearer = http
        .get(format!("{}/api/v1/status", h.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);

    let wrong = http
        .get(format!("{}/?token=nope", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let signed_in = http
        .get(format!("{}/?token={TOKEN}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "/");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(TOKEN), "the cookie never holds the token");
    let pair = cookie.split(';').next().unwrap().to_owned();

    let page = http
        .get(format!("{}/", h.url))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("nowpilot status"));
    assert!(!html.contains(TOKEN), "no rendered link carries the token");
    let forged = http
        .get(format!("{}/", h.url))
        .header("cookie", format!("{COOKIE}={}", "00".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
}

#[tokio::test]
async fn without_a_token_the_page_is_not_served_on_a_public_address() {
    let h = start("s3cret-pw", None, Some("0.0.0.0:9091")).await;
    let page = reqwest::get(format!("{}/", h.url)).await.unwrap();
    assert_eq!(page.status(), 404);
    let api = reqwest::get(format!("{}/api/v1/status", h.url))
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    let health = reqwest::get(format!("{}/healthz", h.url)).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[test]
fn escaping_covers_text_and_attributes() {
    assert_eq!(
        escape("<a href=\"x\" onclick='y'>&</a>"),
        "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
    );
}

#[test]
fn incident_links_need_a_valid_instance_and_sys_id() {
    let state = crate::manager::ConnectionState {
        config: Some(Arc::new(ServiceNowConfig::basic(
            "https://acme.service-now.com/",
            "u",
            SecretString::from("p".to_owned()),
        ))),
        ..crate::manager::ConnectionState::default()
    };
    let view = ConnectionView::new(&state, None);
    assert_eq!(
        view.incident_link(SYS_ID).as_deref(),
        Some(
            "https://acme.service-now.com/nav_to.do?uri=incident.do?sys_id=0123456789abcdef0123456789abcdef"
        )
    );
    assert_eq!(view.incident_link("javascript:alert(1)"), None);
    let bad = crate::manager::ConnectionState {
        config: Some(Arc::new(ServiceNowConfig::basic(
            "javascript:alert(1)",
            "u",
            SecretString::from("p".to_owned()),
        ))),
        ..crate::manager::ConnectionState::default()
    };
    assert_eq!(ConnectionView::new(&bad, None).incident_link(SYS_ID), None);
}
