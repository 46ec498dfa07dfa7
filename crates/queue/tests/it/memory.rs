//! Behaviour only the in-memory backend shows directly (the rest is in `suite`).

use nowpilot_model::partition::partition_of;
use nowpilot_queue::{PublishError, QueueConfig, QueueKind, connect, reasons};
use tokio_util::sync::CancellationToken;

use crate::common::{Backend, Kind, event, recv, sys_id};

#[tokio::test]
async fn connect_picks_the_memory_backend_by_kind() {
    let config: QueueConfig = toml::from_str("kind = \"memory\"\npartitions = 2\n").unwrap();
    assert_eq!(config.kind, QueueKind::Memory);
    let shutdown = CancellationToken::new();
    let queue = connect(&config, shutdown.clone()).await.expect("connect");
    assert_eq!(queue.topology().partitions(), 2);
    assert!(queue.readiness().ready);
    queue.publish(&event(&sys_id(1), 1)).await.expect("publish");
    shutdown.cancel();
    queue.closed().await;
    assert!(!queue.readiness().ready);
    assert!(matches!(
        queue.publish(&event(&sys_id(1), 2)).await,
        Err(PublishError::ShuttingDown)
    ));
}

#[tokio::test]
async fn requeued_past_the_delivery_limit_goes_to_the_dead_letters() {
    let backend = Backend::start(Kind::Memory, "memory-limit", |_| {}).await;
    let queue = backend.queue.clone();
    let incident = sys_id(5);
    let partition = partition_of(&incident, queue.topology().partitions());
    let poison = event(&incident, 1);
    queue.publish(&poison).await.expect("publish");
    let mut stream = queue.consume(&[partition]).await.expect("consume");
    let mut deliveries = 0;
    while queue.depths().await.expect("depths").dead == 0 {
        let delivery = recv(&mut stream).await;
        deliveries += 1;
        assert!(deliveries <= 25, "never dead-lettered");
        delivery.requeue().await.expect("requeue");
    }
    assert_eq!(deliveries, 21, "the first delivery plus 20 redeliveries");
    let letters = queue.dead_letters(1).await.expect("dead letters");
    assert_eq!(letters[0].reason, reasons::DELIVERY_LIMIT);
    assert_eq!(letters[0].event.as_ref(), Some(&poison));
    backend.finish().await;
}

/// The metric names and labels the dashboards rely on (recorded through the facade).
#[test]
fn publishes_and_settlements_are_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let backend = Backend::start(Kind::Memory, "metrics", |_| {}).await;
            let queue = backend.queue.clone();
            let incident = sys_id(3);
            let partition = partition_of(&incident, queue.topology().partitions());
            queue.publish(&event(&incident, 1)).await.expect("publish");
            let mut stream = queue.consume(&[partition]).await.expect("consume");
            recv(&mut stream).await.ack().await.expect("ack");
            backend.finish().await;
        });
    });
    // (name, labels, value) of every counter.
    type Counter = (String, Vec<(String, String)>, u64);
    let counters: Vec<Counter> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => Some((
                key.key().name().to_owned(),
                key.key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                n,
            )),
            _ => None,
        })
        .collect();
    let find = |name: &str, label: (&str, &str)| {
        counters
            .iter()
            .find(|(n, labels, _)| {
                n == name && labels.contains(&(label.0.to_owned(), label.1.to_owned()))
            })
            .map(|(_, _, value)| *value)
    };
    assert_eq!(
        find("nowpilot_queue_publish_total", ("result", "ack")),
        Some(1)
    );
    assert_eq!(
        find("nowpilot_queue_deliveries_total", ("outcome", "ack")),
        Some(1)
    );
}
