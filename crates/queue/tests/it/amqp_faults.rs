//! Broker faults through the TCP proxy: cuts, refused connections, restores, consumers
//! cancelled by the broker, and shutdown.

use std::time::Duration;

use nowpilot_model::partition::partition_of;
use nowpilot_queue::{PublishError, QueueError, Readiness, SettleError};
use nowpilot_testkit::{TcpProxy, amqp_config, broker_addr, unique_prefix};
use tokio::sync::watch;

use crate::common::{Backend, PATIENCE, event, raw_channel, recv, sys_id, wait_until};

async fn wait_readiness(watch: &mut watch::Receiver<Readiness>, ready: bool) {
    tokio::time::timeout(PATIENCE, watch.wait_for(|r| r.ready == ready))
        .await
        .unwrap_or_else(|_| panic!("readiness never became {ready}"))
        .expect("readiness sender gone");
}

async fn proxied(name: &str) -> (TcpProxy, Backend) {
    let proxy = TcpProxy::start(broker_addr()).await.expect("proxy");
    let mut config = amqp_config(&unique_prefix(name));
    config.url = proxy.amqp_url().into();
    let backend = Backend::amqp_with(config).await;
    (proxy, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_fails_fast_and_everything_resumes_after_restore() {
    let (proxy, backend) = proxied("cut").await;
    let queue = backend.queue.clone();
    let mut readiness = queue.readiness_watch();
    wait_readiness(&mut readiness, true).await;

    let incident = sys_id(101);
    let partition = partition_of(&incident, queue.topology().partitions());
    let mut stream = queue.consume(&[partition]).await.expect("consume");
    queue.publish(&event(&incident, 1)).await.expect("publish");
    let before_cut = recv(&mut stream).await;

    proxy.cut();
    wait_readiness(&mut readiness, false).await;
    assert!(queue.readiness().reason.is_some());

    // While cut: publishes fail at once with Unavailable, without waiting for a reconnect.
    let outcome = queue.publish(&event(&incident, 2)).await;
    assert!(
        matches!(outcome, Err(PublishError::Unavailable { .. })),
        "{outcome:?}"
    );
    // A delivery from the dead connection cannot be acknowledged "successfully".
    let settled = before_cut.ack().await;
    assert!(
        matches!(settled, Err(SettleError::Stale { .. })),
        "{settled:?}"
    );

    proxy.restore();
    wait_readiness(&mut readiness, true).await;
    // Same backend, same stream: publishing and consuming work again.
    queue
        .publish(&event(&incident, 3))
        .await
        .expect("publish after restore");
    let mut seen = Vec::new();
    while !seen.contains(&3) {
        let delivery = recv(&mut stream).await;
        seen.push(delivery.envelope.sys_mod_count);
        if delivery.envelope.sys_mod_count == 1 {
            // The unacknowledged delivery from before the cut comes back.
            assert!(delivery.redelivered);
        }
        delivery.ack().await.expect("ack after restore");
    }
    assert_eq!(seen, vec![1, 3], "version 1 redelivered first, then 3");
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_while_the_broker_is_unreachable_connects_later() {
    let proxy = TcpProxy::start(broker_addr()).await.expect("proxy");
    proxy.cut();
    let mut config = amqp_config(&unique_prefix("late-broker"));
    config.url = proxy.amqp_url().into();
    let backend = Backend::amqp_with(config).await;
    let queue = backend.queue.clone();
    assert!(!queue.readiness().ready);
    let outcome = queue.publish(&event(&sys_id(1), 1)).await;
    assert!(
        matches!(outcome, Err(PublishError::Unavailable { .. })),
        "{outcome:?}"
    );
    assert!(matches!(
        queue.depths().await,
        Err(QueueError::NotConnected(_))
    ));

    proxy.restore();
    let mut readiness = queue.readiness_watch();
    wait_readiness(&mut readiness, true).await;
    queue.publish(&event(&sys_id(1), 2)).await.expect("publish");
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_cancelled_by_the_broker_resubscribes() {
    let backend = Backend::amqp("broker-cancel").await;
    let queue = backend.queue.clone();
    let incident = sys_id(303);
    let partition = partition_of(&incident, queue.topology().partitions());
    let mut stream = queue.consume(&[partition]).await.expect("consume");
    queue.publish(&event(&incident, 1)).await.expect("publish");
    recv(&mut stream).await.ack().await.expect("ack");

    // Deleting the queue makes the broker cancel the consumer (basic.cancel).
    let (_connection, channel) = raw_channel().await;
    channel
        .queue_delete(
            queue.topology().partition_queue(partition).as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .expect("delete the partition queue");

    // The backend redeclares the topology and subscribes again; publishes may fail until then.
    let mut readiness = queue.readiness_watch();
    wait_readiness(&mut readiness, true).await;
    wait_until("a publish to the redeclared partition", || {
        let (queue, incident) = (queue.clone(), incident.clone());
        async move { queue.publish(&event(&incident, 2)).await.is_ok() }
    })
    .await;
    let delivery = recv(&mut stream).await;
    assert_eq!(delivery.envelope.sys_mod_count, 2);
    delivery.ack().await.expect("ack");
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_publishes_and_closes() {
    let backend = Backend::amqp("shutdown").await;
    let queue = backend.queue.clone();
    let mut stream = queue.consume(&[0, 1]).await.expect("consume");
    backend.shutdown.cancel();
    tokio::time::timeout(PATIENCE, queue.closed())
        .await
        .expect("closed in time");
    assert!(!queue.readiness().ready);
    assert!(matches!(
        queue.publish(&event(&sys_id(1), 1)).await,
        Err(PublishError::ShuttingDown)
    ));
    assert!(matches!(
        queue.consume(&[0]).await,
        Err(QueueError::ShuttingDown)
    ));
    let end = tokio::time::timeout(Duration::from_secs(30), stream.recv())
        .await
        .expect("the stream ends at shutdown");
    assert!(end.is_none());
    backend.finish().await;
}

/// Shutdown refuses new publishes but lets one already waiting for its confirm finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_in_flight_confirms() {
    let (proxy, backend) = proxied("drain").await;
    let queue = backend.queue.clone();
    let incident = sys_id(404);
    let partition_queue = queue
        .topology()
        .partition_queue(partition_of(&incident, queue.topology().partitions()));
    proxy.set_latency(Duration::from_millis(700));
    let publishing = {
        let (queue, incident) = (queue.clone(), incident.clone());
        tokio::spawn(async move { queue.publish(&event(&incident, 1)).await })
    };
    let (_connection, channel) = raw_channel().await;
    wait_until("the message to reach the broker", || async {
        channel
            .queue_declare(
                partition_queue.as_str().into(),
                lapin::options::QueueDeclareOptions::durable().passive(),
                lapin::types::FieldTable::default(),
            )
            .await
            .map(|q| q.message_count() == 1)
            .unwrap_or(false)
    })
    .await;
    backend.shutdown.cancel();
    assert!(matches!(
        queue.publish(&event(&incident, 2)).await,
        Err(PublishError::ShuttingDown)
    ));
    let in_flight = publishing.await.expect("task");
    assert!(in_flight.is_ok(), "{in_flight:?}");
    tokio::time::timeout(PATIENCE, queue.closed())
        .await
        .expect("closed in time");
    backend.finish().await;
}
