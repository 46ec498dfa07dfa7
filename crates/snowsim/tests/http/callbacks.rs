//! The incident business rule: signed Standard-Webhooks callbacks, in order per record, once.

use std::{
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use nowpilot_model::{CallbackPayload, Record};
use nowpilot_snowsim::{SimConfig, Simulator, WebhookConfig, WebhookSecret};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::common::{eventually, json, start, with_users};

type Deliveries = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A webhook receiver on port 0 that answers `status` and keeps what it got.
async fn receiver(status: StatusCode) -> (url::Url, Deliveries) {
    let deliveries: Deliveries = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                move |State(d): State<Deliveries>, headers: HeaderMap, body: String| async move {
                    d.lock().unwrap().push((headers, body));
                    status
                },
            ),
        )
        .with_state(deliveries.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/hook", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, deliveries)
}

async fn wait_for(deliveries: &Deliveries, count: usize) -> Vec<(HeaderMap, String)> {
    eventually(|| {
        let got = deliveries.lock().unwrap().clone();
        async move { (got.len() >= count).then_some(got) }
    })
    .await
}

const KEY: &[u8] = b"a 32-byte key for signing tests!";

fn whsec() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn signed_callbacks_in_order() {
    let (url, deliveries) = receiver(StatusCode::ACCEPTED).await;
    let sim = start(SimConfig::default()).await;
    // The target is set at runtime; the secret is never echoed.
    let response = sim
        .http
        .post(sim.url("/_sim/webhook"))
        .json(&json!({"url": url.as_str(), "secret": whsec()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let shown = response.text().await.unwrap();
    assert!(
        shown.contains("\"secret_set\":true") && !shown.contains(&whsec()),
        "{shown}"
    );

    let created = sim
        .create(
            "incident",
            json!({"short_description": "Café ☕ down", "work_notes": "opened"}),
        )
        .await;
    let sys_id = created["sys_id"].as_str().unwrap().to_owned();
    let path = format!("/api/now/table/incident/{sys_id}");
    for body in [json!({"impact": "1"}), json!({"work_notes": "looking"})] {
        let response = sim
            .admin(Method::PATCH, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // The direct handle runs the same business rule.
    let mut fields = Record::new();
    fields.set("urgency", "1");
    sim.sim.update("incident", &sys_id, fields).unwrap();

    let got = wait_for(&deliveries, 4).await;
    assert_eq!(got.len(), 4);
    let admin_id = sim.sim.query("sys_user", "user_name=admin").unwrap()[0]
        .value("sys_id")
        .unwrap()
        .to_owned();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (i, (headers, body)) in got.iter().enumerate() {
        assert_eq!(header(headers, "content-type"), "application/json");
        assert_eq!(header(headers, "user-agent"), "ServiceNow/1.0");
        let id = header(headers, "webhook-id");
        assert_eq!(id, format!("{sys_id}-{i}"));
        let timestamp: u64 = header(headers, "webhook-timestamp").parse().unwrap();
        assert!(timestamp.abs_diff(now) < 300, "{timestamp}");
        // Verify the signature the way a receiver would.
        let signature = header(headers, "webhook-signature");
        let encoded = signature.strip_prefix("v1,").unwrap();
        let tag = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        mac.verify_slice(&tag).expect("signature verifies");

        assert!(body.is_ascii(), "{body}");
        assert!(body.contains("Caf\\u00e9 \\u2615 down"), "{body}");
        let value: Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["schema_version"], 1);
        assert_eq!(value["instance"], "snowsim");
        assert_eq!(value["table"], "incident");
        assert_eq!(value["operation"], if i == 0 { "insert" } else { "update" });
        assert_eq!(value["sys_id"], sys_id.as_str());
        assert_eq!(value["sys_mod_count"], i.to_string());
        assert_eq!(value["sys_updated_by"], "admin");
        assert!(value["sys_updated_on"].as_str().unwrap().len() == 19);
        let record = &value["record"];
        assert_eq!(record["short_description"], "Café ☕ down");
        assert_eq!(
            record["opened_by"],
            admin_id.as_str(),
            "references are sys_ids"
        );
        assert_eq!(record["sys_mod_count"], i.to_string());
        assert!(record.get("work_notes").is_none() && record.get("comments").is_none());
        assert!(record.as_object().unwrap().values().all(Value::is_string));
        // And the shared model reads it.
        let payload = CallbackPayload::parse(body.as_bytes()).unwrap();
        assert_eq!(payload.sys_mod_count, i as u64);
    }
    let priorities: Vec<String> = got
        .iter()
        .map(|(_, body)| {
            let value: Value = serde_json::from_str(body).unwrap();
            value["record"]["priority"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(priorities, ["5", "3", "3", "1"]);

    let log = json(
        sim.http
            .get(sim.url("/_sim/callbacks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 4);
    for (i, entry) in log.iter().enumerate() {
        assert_eq!(entry["webhook_id"], format!("{sys_id}-{i}"));
        assert_eq!(entry["status"], 202);
        assert_eq!(entry["error"], Value::Null);
    }
}

#[tokio::test]
async fn skip_user_and_noop_writes_fire_nothing() {
    let (url, deliveries) = receiver(StatusCode::OK).await;
    let mut config = with_users(&[
        ("admin", "admin", "admin"),
        ("nowpilot.integration", "pw", "itil"),
    ]);
    config.webhook = WebhookConfig {
        url: Some(url),
        secret: Some(WebhookSecret::parse(&whsec()).unwrap()),
        skip_user: Some("nowpilot.integration".into()),
    };
    let sim = start(config).await;
    let created = sim
        .create("incident", json!({"short_description": "x"}))
        .await;
    let path = format!(
        "/api/now/table/incident/{}",
        created["sys_id"].as_str().unwrap()
    );
    // Version 1, by the skipped user: no callback.
    let response = sim
        .as_user("nowpilot.integration", "pw", Method::PATCH, &path)
        .json(&json!({"state": "2", "work_notes": "ack"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A write that changes nothing: no version, no callback.
    sim.admin(Method::PATCH, &path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    // Version 2, by admin.
    sim.admin(Method::PATCH, &path)
        .json(&json!({"short_description": "y"}))
        .send()
        .await
        .unwrap();
    // Callbacks of one record are sent in order, so once version 2 has arrived anything
    // for version 1 would have arrived before it.
    let got = wait_for(&deliveries, 2).await;
    let ids: Vec<String> = got
        .iter()
        .map(|(h, _)| {
            header(h, "webhook-id")
                .rsplit('-')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["0", "2"]);
    // The log entry is written once the receiver's answer is in.
    let log = eventually(|| {
        let log = sim.sim.callback_log();
        async move { (log.len() >= 2).then_some(log) }
    })
    .await;
    assert_eq!(log.len(), 2);
}

#[tokio::test]
async fn failures_are_logged_and_never_retried() {
    let (url, deliveries) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let sim = start(SimConfig::default()).await;
    // Unsigned when no secret is set.
    sim.sim.set_webhook(WebhookConfig {
        url: Some(url),
        ..WebhookConfig::default()
    });
    let record = sim.sim.insert("incident", Record::new()).unwrap();
    let sys_id = record.value("sys_id").unwrap().to_owned();
    let mut fields = Record::new();
    fields.set("impact", "2");
    sim.sim.update("incident", &sys_id, fields.clone()).unwrap();
    let got = wait_for(&deliveries, 2).await;
    let ids: Vec<&str> = got.iter().map(|(h, _)| header(h, "webhook-id")).collect();
    assert_eq!(ids, [format!("{sys_id}-0"), format!("{sys_id}-1")]);
    assert!(got[0].0.get("webhook-signature").is_none());
    let log = eventually(|| {
        let log = sim.sim.callback_log();
        async move { (log.len() >= 2).then_some(log) }
    })
    .await;
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(500), Some(500)]
    );

    // A receiver that is down: the error is logged, once per version.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = url::Url::parse(&format!("http://{}/hook", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    sim.sim.set_webhook(WebhookConfig {
        url: Some(dead.clone()),
        ..WebhookConfig::default()
    });
    fields.set("impact", "1");
    sim.sim.update("incident", &sys_id, fields.clone()).unwrap();
    fields.set("impact", "3");
    sim.sim.update("incident", &sys_id, fields).unwrap();
    let log = eventually(|| {
        let log = sim.sim.callback_log();
        async move { (log.len() >= 4).then_some(log) }
    })
    .await;
    assert_eq!(log.len(), 4);
    for (entry, version) in log[2..].iter().zip([2u64, 3]) {
        assert_eq!(entry.url, dead.as_str());
        assert_eq!(entry.status, None);
        assert!(entry.error.is_some());
        assert_eq!(entry.sys_mod_count, version);
    }
}

#[test]
fn without_a_runtime_the_failure_is_recorded() {
    let sim = Simulator::new(SimConfig {
        webhook: WebhookConfig {
            url: Some(url::Url::parse("http://127.0.0.1:9/hook").unwrap()),
            ..WebhookConfig::default()
        },
        ..SimConfig::default()
    });
    sim.insert("incident", Record::new()).unwrap();
    let log = sim.callback_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].error.as_deref(), Some("no tokio runtime"));
}
