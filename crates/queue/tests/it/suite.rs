//! One test body, run against both backends: the semantics the worker relies on.

use std::time::Duration;

use nowpilot_model::partition::partition_of;
use nowpilot_model::{EventId, EventSource};
use nowpilot_queue::ReplaySelector;

use crate::common::{Backend, Kind, event, recv, sys_id, sys_id_in, wait_until};

/// Runs the test body `$name(kind, name)` once on RabbitMQ and once in memory.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::common::Kind;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp() {
                super::$name(Kind::Amqp, stringify!($name)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(Kind::Memory, stringify!($name)).await;
            }
        }
    )*};
}

both_backends!(
    publish_consume_ack,
    per_partition_order,
    retry_comes_back_with_attempt_plus_one,
    dead_letter_list_and_replay,
    requeue_and_drop_redeliver,
    prefetch_bounds_unsettled_deliveries,
    stop_consuming_ends_the_stream,
    dropping_the_stream_gives_deliveries_back,
);

async fn publish_consume_ack(kind: Kind, name: &str) {
    let backend = Backend::start(kind, name, |_| {}).await;
    let queue = backend.queue.clone();
    let partitions = queue.topology().partitions();
    assert!(queue.readiness().ready, "{:?}", queue.readiness());

    let events: Vec<_> = (0..partitions)
        .map(|p| event(&sys_id_in(p, partitions), 1))
        .collect();
    for e in &events {
        queue.publish(e).await.expect("publish");
    }
    let all: Vec<u16> = (0..partitions).collect();
    wait_until("every partition to hold its event", || async {
        queue.depths().await.expect("depths").partitions == vec![1; usize::from(partitions)]
    })
    .await;

    let mut stream = queue.consume(&all).await.expect("consume");
    let mut seen = Vec::new();
    for _ in 0..events.len() {
        let delivery = recv(&mut stream).await;
        assert_eq!(
            delivery.partition,
            partition_of(&delivery.envelope.sys_id, partitions)
        );
        assert_eq!(delivery.attempt, 0);
        assert!(!delivery.redelivered);
        seen.push(delivery.envelope.clone());
        delivery.ack().await.expect("ack");
    }
    seen.sort_by(|a, b| a.sys_id.cmp(&b.sys_id));
    let mut expected = events.clone();
    expected.sort_by(|a, b| a.sys_id.cmp(&b.sys_id));
    assert_eq!(seen, expected);

    let depths = queue.depths().await.expect("depths");
    assert_eq!(depths.partitions, vec![0; usize::from(partitions)]);
    assert_eq!((depths.retry, depths.dead), (0, 0));
    backend.finish().await;
}

async fn per_partition_order(kind: Kind, name: &str) {
    let backend = Backend::start(kind, name, |_| {}).await;
    let queue = backend.queue.clone();
    let incident = sys_id(42);
    let partition = partition_of(&incident, queue.topology().partitions());
    let mut stream = queue.consume(&[partition]).await.expect("consume");
    for version in 0..200 {
        queue
            .publish(&event(&incident, version))
            .await
            .expect("publish");
    }
    for version in 0..200 {
        let delivery = recv(&mut stream).await;
        assert_eq!(
            delivery.envelope.sys_mod_count, version,
            "events of one incident must arrive in publish order"
        );
        delivery.ack().await.expect("ack");
    }
    backend.finish().await;
}

async fn retry_comes_back_with_attempt_plus_one(kind: Kind, name: &str) {
    let backend = Backend::start(kind, name, |_| {}).await;
    let queue = backend.queue.clone();
    let incident = sys_id(7);
    let partition = partition_of(&incident, queue.topology().partitions());
    let mut stream = queue.consume(&[partition]).await.expect("consume");
    queue.publish(&event(&incident, 3)).await.expect("publish");

    let first = recv(&mut stream).await;
    assert_eq!(first.attempt, 0);
    let tier = first
        .retry(Duration::from_secs(2), "ServiceNow answered 503")
        .await
        .expect("retry");
    assert_eq!(tier.name, "5s");

    // Back after the tier's delay (asserted: it returns; not: how fast).
    let again = recv(&mut stream).await;
    assert_eq!(again.envelope.event_id, EventId::new(&incident, 3));
    assert_eq!(again.partition, partition);
    assert_eq!(again.attempt, 1);
    let tier = again
        .retry(Duration::from_secs(1), "still failing")
        .await
        .expect("second retry");
    assert_eq!(tier.name, "5s");
    let third = recv(&mut stream).await;
    assert_eq!(third.attempt, 2);
    third.ack().await.expect("ack");
    let depths = queue.depths().await.expect("depths");
    assert_eq!(depths.retry, 0);
    backend.finish().await;
}

async fn dead_letter_list_and_replay(kind: Kind, name: &str) {
    let backend = Backend::start(kind, name, |_| {}).await;
    let queue = backend.queue.clone();
    let incident = sys_id(9);
    let partition = partition_of(&incident, queue.topology().partitions());
    let mut stream = queue.consume(&[partition]).await.expect("consume");
    let original = event(&incident, 5);
    queue.publish(&original).await.expect("publish");

    let delivery = recv(&mut stream).await;
    let long_error = format!("plan 'p1' failed: {}", "x".repeat(3000));
    delivery
        .dead_letter("plan_failed", &long_error)
        .await
        .expect("dead letter");
    wait_until("the dead letter to be counted", || async {
        queue.depths().await.expect("depths").dead == 1
    })
    .await;

    // Looking does not remove, however often.
    for _ in 0..3 {
        let letters = queue.dead_letters(10).await.expect("dead letters");
        assert_eq!(letters.len(), 1);
        let letter = &letters[0];
        assert_eq!(letter.event.as_ref(), Some(&original));
        assert_eq!(
            letter.message_id.as_deref(),
            Some(original.event_id.as_str())
        );
        assert_eq!(letter.reason, "plan_failed");
        let error = letter.error.as_deref().expect("error text");
        assert!(error.starts_with("plan 'p1' failed"));
        assert!(error.len() <= 1024, "{}", error.len());
        assert!(letter.dead_at.is_some());
        assert_eq!(letter.attempt, 0);
    }
    assert_eq!(queue.depths().await.expect("depths").dead, 1);

    let missing = EventId::new(&sys_id(10_000), 1);
    let report = queue
        .replay(ReplaySelector::Ids(vec![
            original.event_id.clone(),
            missing.clone(),
        ]))
        .await
        .expect("replay");
    assert_eq!(report.replayed, vec![original.event_id.clone()]);
    assert_eq!(report.not_found, vec![missing]);
    assert_eq!(report.unreadable, 0);

    let replayed = recv(&mut stream).await;
    assert_eq!(replayed.envelope.event_id, original.event_id);
    assert_eq!(replayed.envelope.source, EventSource::Replay);
    assert_eq!(replayed.attempt, 0);
    replayed.ack().await.expect("ack");
    let depths = queue.depths().await.expect("depths");
    assert_eq!(depths.dead, 0);
    assert!(
        queue
            .dead_letters(10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    backend.finish().await;
}

async fn requeue_and_drop_redeliver(kind: Kind, name: &str) {
    let backend = Backend::start(kind, name, |_| {}).await;
    let queue = backend.queue.clone();
    let incident = sys_id(11);
    let partition = partition_of(&incident, queue.topology().partitions());
    let mut stream = queue.consume(&[partition]).await.expect("consume");
    queue.publish(&event(&incident, 1)).await.expect("publish");

    let first = recv(&mut stream).await;
    assert!(!first.redelivered);
    assert_eq!(first.delivery_count, None);
    first.requeue().await.expect("requeue");

    let second = recv(&mut stream).await;
    assert!(second.redelivered);
    assert_eq!(second.envelope.sys_mod_count, 1);
    // Dropped without settling: it must come back, not hold its prefetch slot forever.
    drop(second);

    let third = recv(&mut stream).await;
    assert!(third.redelivered);
    assert!(third.delivery_count.unwrap_or(0) >= 1, "{third:?}");
    third.ack().await.expect("ack");
    backend.finish().await;
}

async fn prefetch_bounds_unsettled_deliveries(kind: Kind, name: &str) {
    let backend = Backend::start(kind, name, |config| config.prefetch = 2).await;
    let queue = backend.queue.clone();
    let incident = sys_id(12);
    let partition = partition_of(&incident, queue.topology().partitions());
    for version in 0..3 {
        queue
            .publish(&event(&incident, version))
            .await
            .expect("publish");
    }
    let mut stream = queue.consume(&[partition]).await.expect("consume");
    let a = recv(&mut stream).await;
    let b = recv(&mut stream).await;
    // The third may not come while two are unsettled (a bounded wait: it can only pass
    // wrongly, never fail wrongly).
    let third = tokio::time::timeout(Duration::from_millis(500), stream.recv()).await;
    assert!(third.is_err(), "a third delivery arrived beyond prefetch 2");
    a.ack().await.expect("ack");
    let c = recv(&mut stream).await;
    assert_eq!(c.envelope.sys_mod_count, 2);
    b.ack().await.expect("ack");
    c.ack().await.expect("ack");
    backend.finish().await;
}

async fn stop_consuming_ends_the_stream(kind: Kind, name: &str) {
    let backend = Backend::start(kind, name, |_| {}).await;
    let queue = backend.queue.clone();
    let mut stream = queue.consume(&[0, 1]).await.expect("consume");
    queue.stop_consuming(&[0]).await.expect("stop 0");
    // Partition 1 still delivers.
    let incident = sys_id_in(1, queue.topology().partitions());
    queue.publish(&event(&incident, 1)).await.expect("publish");
    let delivery = recv(&mut stream).await;
    assert_eq!(delivery.partition, 1);
    // A delivery handed out before the stop can still be settled.
    queue.stop_consuming(&[1]).await.expect("stop 1");
    delivery.ack().await.expect("ack after stop");
    let end = tokio::time::timeout(crate::common::PATIENCE, stream.recv())
        .await
        .expect("the stream did not end");
    assert!(end.is_none(), "no partition left: the stream ends");
    // Events published now stay queued.
    let incident0 = sys_id_in(0, queue.topology().partitions());
    queue.publish(&event(&incident0, 1)).await.expect("publish");
    wait_until("the event to wait in partition 0", || async {
        queue.depths().await.expect("depths").partitions[0] == 1
    })
    .await;
    assert!(matches!(
        queue.consume(&[99]).await,
        Err(nowpilot_queue::QueueError::InvalidPartition { partition: 99, .. })
    ));
    backend.finish().await;
}

async fn dropping_the_stream_gives_deliveries_back(kind: Kind, name: &str) {
    let backend = Backend::start(kind, name, |_| {}).await;
    let queue = backend.queue.clone();
    let incident = sys_id(13);
    let partition = partition_of(&incident, queue.topology().partitions());
    for version in 0..3 {
        queue
            .publish(&event(&incident, version))
            .await
            .expect("publish");
    }
    let mut stream = queue.consume(&[partition]).await.expect("consume");
    let held = recv(&mut stream).await;
    // Give the others time to be prefetched into the stream (not required for the test).
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    drop(held);

    let mut stream = queue.consume(&[partition]).await.expect("consume again");
    let mut versions = Vec::new();
    for _ in 0..3 {
        let delivery = recv(&mut stream).await;
        versions.push(delivery.envelope.sys_mod_count);
        delivery.ack().await.expect("ack");
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        vec![0, 1, 2],
        "every unsettled delivery came back"
    );
    backend.finish().await;
}
