//! The activity fanout: in process, and over the local RabbitMQ (with a proxy to cut the link).

use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::broadcast::Receiver;

use super::*;

fn record(number: &str) -> ActivityRecord {
    ActivityRecord {
        at: Utc::now(),
        origin: String::new(),
        sys_id: "0123456789abcdef0123456789abcdef".into(),
        number: number.into(),
        short_description: Some("Checkout latency".into()),
        event_ids: vec!["0123456789abcdef0123456789abcdef-1".into()],
        plans: vec!["quickstart".into()],
        outcome: "acted".into(),
        reason: None,
        actions: vec![ActivityAction {
            plan: "quickstart".into(),
            action: "acknowledge".into(),
            kind: "acknowledge".into(),
            result: "done".into(),
            detail: "state → In Progress".into(),
        }],
        error: None,
        duration_ms: 12,
    }
}

async fn next(rx: &mut Receiver<Arc<ActivityRecord>>) -> Arc<ActivityRecord> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a record within 30 s")
        .expect("the channel is open")
}

async fn wait_link(fanout: &ActivityFanout, want: fn(&ActivityLink) -> bool) {
    let mut watch = fanout.link_watch();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !want(&watch.borrow_and_update()) {
            watch.changed().await.expect("link watch");
        }
    })
    .await
    .expect("the link reached the expected state within 30 s");
}

fn connected(link: &ActivityLink) -> bool {
    *link == ActivityLink::Connected
}

fn disconnected(link: &ActivityLink) -> bool {
    matches!(link, ActivityLink::Disconnected { .. })
}

fn amqp(prefix: &str, url: String) -> QueueConfig {
    let mut config = QueueConfig::with_prefix(prefix);
    config.url = SecretString::from(url);
    config.publish_timeout = Duration::from_secs(3);
    config.connect_timeout = Duration::from_secs(3);
    config.heartbeat = Duration::from_secs(5);
    config
}

#[test]
fn records_are_cut_to_size_on_char_boundaries() {
    let mut r = record("INC0010001");
    r.short_description = Some("é".repeat(1000));
    r.error = Some("x".repeat(5000));
    r.actions = (0..100).map(|_| r.actions[0].clone()).collect();
    r.actions[0].detail = "y".repeat(5000);
    r.event_ids = (0..100).map(|i| format!("e{i}")).collect();
    let r = r.bounded();
    let short = r.short_description.as_deref().unwrap();
    assert!(short.len() <= MAX_TEXT_BYTES && short.chars().all(|c| c == 'é'));
    assert_eq!(r.error.as_deref().unwrap().len(), MAX_TEXT_BYTES);
    assert_eq!(r.actions.len(), MAX_ACTIONS);
    assert_eq!(r.actions[0].detail.len(), MAX_TEXT_BYTES);
    assert_eq!(r.event_ids.len(), MAX_LIST);
    let json = serde_json::to_vec(&r).unwrap();
    assert!(json.len() < MAX_MESSAGE_BYTES);
    let back: ActivityRecord = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, r);
}

#[tokio::test]
async fn in_process_fanout_delivers_to_every_subscriber_with_its_origin() {
    let fanout = ActivityFanout::in_process();
    assert_eq!(fanout.link(), ActivityLink::InProcess);
    let mut a = fanout.subscribe();
    let mut b = fanout.clone().subscribe();
    fanout.publish(record("INC0010001"));
    for rx in [&mut a, &mut b] {
        let got = next(rx).await;
        assert_eq!(got.number, "INC0010001");
        assert_eq!(got.origin, fanout.origin());
    }
    assert_eq!(fanout.dropped(), 0);
    let memory = QueueConfig {
        kind: QueueKind::Memory,
        ..QueueConfig::default()
    };
    let from_config = ActivityFanout::connect(&memory, CancellationToken::new()).unwrap();
    assert_eq!(from_config.link(), ActivityLink::InProcess);
    assert_ne!(from_config.origin(), fanout.origin());
}

#[tokio::test]
async fn an_unreachable_broker_never_blocks_or_fails_a_publish() {
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = amqp(
        "test-activity-down",
        format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
    );
    let shutdown = CancellationToken::new();
    let fanout = ActivityFanout::connect(&config, shutdown.clone()).unwrap();
    let mut rx = fanout.subscribe();
    // Far more than the outbound buffer holds: publish never waits for the link.
    for i in 0..(OUTBOUND_CAPACITY * 4) {
        fanout.publish(record(&format!("INC{i:07}")));
        // Keep the local subscriber from lagging; this process still sees its own records.
        assert_eq!(next(&mut rx).await.number, format!("INC{i:07}"));
    }
    assert!(
        fanout.dropped() > 0,
        "records beyond the buffer are dropped"
    );
    assert!(disconnected(&fanout.link()), "{:?}", fanout.link());
    shutdown.cancel();
}

#[tokio::test]
async fn records_cross_processes_over_rabbitmq_once_each() {
    let prefix = nowpilot_testkit::unique_prefix("activity");
    let url = nowpilot_testkit::amqp_url();
    let shutdown = CancellationToken::new();
    let a = ActivityFanout::connect(&amqp(&prefix, url.clone()), shutdown.clone()).unwrap();
    let b = ActivityFanout::connect(&amqp(&prefix, url), shutdown.clone()).unwrap();
    wait_link(&a, connected).await;
    wait_link(&b, connected).await;
    let mut at_a = a.subscribe();
    let mut at_b = b.subscribe();

    a.publish(record("INC0000001"));
    a.publish(record("INC0000002"));
    for number in ["INC0000001", "INC0000002"] {
        let got = next(&mut at_b).await;
        assert_eq!(got.number, number);
        assert_eq!(got.origin, a.origin());
        assert_eq!(
            next(&mut at_a).await.number,
            number,
            "A sees its own at once"
        );
    }
    // B's marker reaches A's queue after A's own two copies (one queue is FIFO): if A
    // delivered its own copies again, they would arrive before the marker.
    b.publish(record("INC0000003"));
    assert_eq!(next(&mut at_b).await.number, "INC0000003");
    let marker = next(&mut at_a).await;
    assert_eq!(
        marker.number, "INC0000003",
        "no duplicate of A's own records"
    );
    assert_eq!(marker.origin, b.origin());
    assert!(at_a.try_recv().is_err());
    shutdown.cancel();
}

#[tokio::test]
async fn the_link_survives_a_broker_connection_cut() {
    let prefix = nowpilot_testkit::unique_prefix("activity-cut");
    let proxy = nowpilot_testkit::TcpProxy::start(nowpilot_testkit::broker_addr())
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let behind_proxy =
        ActivityFanout::connect(&amqp(&prefix, proxy.amqp_url()), shutdown.clone()).unwrap();
    let direct = ActivityFanout::connect(
        &amqp(&prefix, nowpilot_testkit::amqp_url()),
        shutdown.clone(),
    )
    .unwrap();
    wait_link(&behind_proxy, connected).await;
    wait_link(&direct, connected).await;
    let mut rx = behind_proxy.subscribe();

    proxy.cut();
    wait_link(&behind_proxy, disconnected).await;
    // Published while the link is down: this process still sees it.
    behind_proxy.publish(record("INC0000010"));
    assert_eq!(next(&mut rx).await.number, "INC0000010");

    proxy.restore();
    wait_link(&behind_proxy, connected).await;
    direct.publish(record("INC0000011"));
    let got = next(&mut rx).await;
    assert_eq!(got.number, "INC0000011");
    assert_eq!(got.origin, direct.origin());
    shutdown.cancel();
}
