//! Ingress → RabbitMQ, end to end over real HTTP and a real broker: a signed callback lands in
//! its partition with the right properties; refused input publishes nothing; a broker cut gives
//! 503s and the same ingress recovers; the simulator's business rule drives callbacks in.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use lapin::{BasicProperties, options::BasicGetOptions};
use nowpilot_ingress::{IngressConfig, IngressState};
use nowpilot_model::{EventEnvelope, Record, partition::partition_of};
use nowpilot_queue::{AmqpBackend, EventPublisher, EventQueue, QueueConfig};
use nowpilot_snowsim::{SimConfig, SimUser, WebhookConfig, WebhookSecret};
use nowpilot_testkit::{TcpProxy, TopologyGuard, amqp_config, amqp_url, unique_prefix};
use nowpilot_tests::{SimHandle, signing};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Stack {
    url: String,
    queue: Arc<AmqpBackend>,
    config: QueueConfig,
    shutdown: CancellationToken,
    _guard: TopologyGuard,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An ingress on port 0 publishing to a fresh topology, through `broker_url`.
async fn stack(name: &str, broker_url: Option<String>) -> Stack {
    let prefix = unique_prefix(name);
    let mut config = amqp_config(&prefix);
    if let Some(url) = broker_url {
        config.url = SecretString::from(url);
    }
    config.partitions = 4;
    config.publish_timeout = Duration::from_secs(2);
    let guard = TopologyGuard::new(&amqp_config(&prefix));
    let shutdown = CancellationToken::new();
    let queue = Arc::new(
        AmqpBackend::connect(&config, shutdown.clone())
            .await
            .unwrap(),
    );
    wait_ready(queue.as_ref(), true).await;

    let ingress = IngressConfig {
        secrets: vec![SecretString::from(SECRET.to_owned())],
        echo_users: vec!["nowpilot.integration".into()],
        ..IngressConfig::default()
    };
    let settings = ingress.validate().unwrap();
    let publisher: Arc<dyn EventPublisher> = queue.clone();
    let state = IngressState::new(settings, publisher, Arc::new(String::new));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(nowpilot_ingress::serve(state, listener, shutdown.clone()));
    Stack {
        url,
        queue,
        config,
        shutdown,
        _guard: guard,
    }
}

async fn wait_ready(queue: &dyn EventQueue, want: bool) {
    let mut watch = queue.readiness_watch();
    tokio::time::timeout(Duration::from_secs(30), async {
        while watch.borrow_and_update().ready != want {
            watch.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("readiness never became {want}"));
}

async fn post(url: &str, id: &str, body: &[u8]) -> reqwest::Response {
    let (ts, sig) = signing::sign(SECRET, id, body);
    reqwest::Client::new()
        .post(format!("{url}/webhooks/servicenow"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts)
        .header("webhook-signature", sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Every message waiting in a queue, with its properties (removed as they are read).
async fn drain(config: &QueueConfig, queue: &str) -> Vec<(BasicProperties, Vec<u8>)> {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push((
            message.delivery.properties.clone(),
            message.delivery.data.clone(),
        ));
    }
    let _ = config;
    let _ = conn.close(200, "done".into()).await;
    out
}

#[tokio::test]
async fn a_signed_callback_lands_in_its_partition_with_the_right_properties() {
    let s = stack("e2e-ingress-ok", None).await;
    let sys_id = "9d385017c611228701d22104cc95c371";
    let body = signing::callback(sys_id, 4, "beth.anglin");
    let answer = post(&s.url, &format!("{sys_id}-4"), &body).await;
    assert_eq!(answer.status(), 202);
    let json: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(json["event_id"], format!("{sys_id}-4"));

    let topology = s.queue.topology().clone();
    let partition = partition_of(sys_id, s.config.partitions);
    for p in 0..s.config.partitions {
        let messages = drain(&s.config, &topology.partition_queue(p)).await;
        if p != partition {
            assert!(messages.is_empty(), "partition {p} should be empty");
            continue;
        }
        assert_eq!(messages.len(), 1, "exactly one message in partition {p}");
        let (props, data) = &messages[0];
        assert_eq!(
            props.message_id().as_ref().map(|s| s.as_str()),
            Some(format!("{sys_id}-4").as_str())
        );
        assert_eq!(
            props.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*props.delivery_mode(), Some(2), "persistent");
        let envelope: EventEnvelope = serde_json::from_slice(data).unwrap();
        assert_eq!(envelope.sys_id, sys_id);
        assert_eq!(envelope.sys_mod_count, 4);
        assert_eq!(envelope.number, "INC0010001");
        assert_eq!(
            envelope.callback.unwrap().sys_updated_by,
            "beth.anglin",
            "the callback travels with the event"
        );
    }
}

#[tokio::test]
async fn refused_callbacks_publish_nothing() {
    let s = stack("e2e-ingress-refused", None).await;
    let sys_id = "0123456789abcdef0123456789abcdef";
    let good = signing::callback(sys_id, 1, "beth.anglin");
    let http = reqwest::Client::new();
    let url = format!("{}/webhooks/servicenow", s.url);
    let (ts, sig) = signing::sign(SECRET, "id-1", &good);
    let stale = (chrono::Utc::now().timestamp() - 3600).to_string();
    let (_, other_sig) = signing::sign("whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==", "id-1", &good);

    struct Case {
        name: &'static str,
        content_type: &'static str,
        ts: String,
        sig: String,
        body: Vec<u8>,
        status: u16,
    }
    let mut cases = vec![
        Case {
            name: "wrong secret",
            content_type: "application/json",
            ts: ts.clone(),
            sig: other_sig,
            body: good.clone(),
            status: 401,
        },
        Case {
            name: "stale timestamp",
            content_type: "application/json",
            ts: stale,
            sig: sig.clone(),
            body: good.clone(),
            status: 401,
        },
        Case {
            name: "wrong content type",
            content_type: "text/plain",
            ts: ts.clone(),
            sig: sig.clone(),
            body: good.clone(),
            status: 415,
        },
        Case {
            name: "too large",
            content_type: "application/json",
            ts: ts.clone(),
            sig: sig.clone(),
            body: vec![b' '; 300 * 1024],
            status: 413,
        },
    ];
    // Well signed but malformed or incomplete bodies.
    for (name, body, status) in [
        ("malformed JSON", b"{\"schema_version\": 1,".to_vec(), 400),
        (
            "missing sys_id",
            br#"{"schema_version":1,"table":"incident","sys_mod_count":"1"}"#.to_vec(),
            422,
        ),
    ] {
        let (ts, sig) = signing::sign(SECRET, "id-1", &body);
        cases.push(Case {
            name,
            content_type: "application/json",
            ts,
            sig,
            body,
            status,
        });
    }
    for case in cases {
        let answer = http
            .post(&url)
            .header("content-type", case.content_type)
            .header("webhook-id", "id-1")
            .header("webhook-timestamp", &case.ts)
            .header("webhook-signature", &case.sig)
            .body(case.body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), case.status, "{}", case.name);
        let json: serde_json::Value = answer.json().await.unwrap();
        assert!(
            json["code"].is_string() && json["message"].is_string(),
            "{}: {json}",
            case.name
        );
    }
    // An echo of nowpilot's own change: 200 and not queued.
    let echo = signing::callback(sys_id, 2, "nowpilot.integration");
    assert_eq!(post(&s.url, "id-echo", &echo).await.status(), 200);

    let depths = s.queue.depths().await.unwrap();
    assert_eq!(
        depths.partitions.iter().sum::<u64>(),
        0,
        "nothing was published: {depths:?}"
    );
}

#[tokio::test]
async fn a_broker_cut_gives_503_then_the_same_ingress_recovers() {
    let proxy = TcpProxy::start(nowpilot_testkit::broker_addr())
        .await
        .unwrap();
    let s = stack("e2e-ingress-cut", Some(proxy.amqp_url())).await;
    let sys_id = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let body = signing::callback(sys_id, 1, "beth.anglin");
    assert_eq!(post(&s.url, "cut-1", &body).await.status(), 202);

    proxy.cut();
    wait_ready(s.queue.as_ref(), false).await;
    let body2 = signing::callback(sys_id, 2, "beth.anglin");
    let answer = post(&s.url, "cut-2", &body2).await;
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    let ready = reqwest::get(format!("{}/readyz", s.url)).await.unwrap();
    assert_eq!(ready.status(), 503, "/readyz follows the broker");

    proxy.restore();
    // ServiceNow (or an operator) resends; the same ingress accepts once the broker is back.
    let accepted = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if post(&s.url, "cut-2", &body2).await.status() == 202 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(accepted.is_ok(), "the ingress recovered without a restart");
    let partition = partition_of(sys_id, s.config.partitions);
    let messages = drain(&s.config, &s.queue.topology().partition_queue(partition)).await;
    let ids: Vec<_> = messages
        .iter()
        .filter_map(|(p, _)| p.message_id().as_ref().map(|s| s.to_string()))
        .collect();
    assert_eq!(
        ids,
        vec![format!("{sys_id}-1"), format!("{sys_id}-2")],
        "nothing lost, nothing doubled"
    );
}

#[tokio::test]
async fn the_simulator_business_rule_drives_callbacks_into_rabbitmq() {
    let s = stack("e2e-ingress-sim", None).await;
    let sim = SimHandle::start(SimConfig {
        users: vec![
            SimUser::new("beth.anglin", "pw"),
            SimUser::new("nowpilot.integration", "pw"),
        ],
        webhook: WebhookConfig {
            url: Some(format!("{}/webhooks/servicenow", s.url).parse().unwrap()),
            secret: Some(WebhookSecret::parse(SECRET).unwrap()),
            skip_user: None,
        },
        ..SimConfig::default()
    })
    .await;
    let mut fields = Record::new();
    fields.set("short_description", "Checkout latency above 2s");
    fields.set("impact", "1");
    fields.set("urgency", "2");
    let created = sim
        .sim
        .insert_as("beth.anglin", "incident", fields)
        .unwrap();
    let sys_id = created.sys_id().unwrap().to_owned();
    let mut note = Record::new();
    note.set("work_notes", "looking");
    sim.sim
        .update_as("beth.anglin", "incident", &sys_id, note.clone())
        .unwrap();
    // nowpilot's own update reaches the ingress too and is dropped there as an echo.
    sim.sim
        .update_as("nowpilot.integration", "incident", &sys_id, note)
        .unwrap();

    let partition = partition_of(&sys_id, s.config.partitions);
    let queue_name = s.queue.topology().partition_queue(partition);
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ids.len() < 2 && tokio::time::Instant::now() < deadline {
        for (props, data) in drain(&s.config, &queue_name).await {
            let envelope: EventEnvelope = serde_json::from_slice(&data).unwrap();
            assert_eq!(envelope.sys_id, sys_id);
            ids.push(props.message_id().as_ref().map(|s| s.to_string()).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ids, vec![format!("{sys_id}-0"), format!("{sys_id}-1")]);
    // The echo was answered (200) but not queued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(drain(&s.config, &queue_name).await.is_empty());
    let log = sim.sim.callback_log();
    assert_eq!(log.len(), 3, "{log:?}");
}
