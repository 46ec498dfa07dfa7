//! Publishing to RabbitMQ: message properties, confirms, the dead-letter headers, unreadable
//! messages and throughput.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions};
use lapin::{BasicProperties, types::AMQPValue};
use nowpilot_model::EventEnvelope;
use nowpilot_model::partition::partition_of;
use nowpilot_queue::amqp::headers;
use nowpilot_queue::{EventQueue, PublishError, ReplaySelector, reasons};
use nowpilot_testkit::{TcpProxy, amqp_config, broker_addr, unique_prefix};

use crate::common::{Backend, event, raw_channel, recv, sys_id, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_sits_in_its_partition_with_our_properties() {
    let backend = Backend::amqp("properties").await;
    let queue = backend.queue.clone();
    let incident = sys_id(1234);
    let published = event(&incident, 8);
    queue.publish(&published).await.expect("publish");

    let partition = partition_of(&incident, queue.topology().partitions());
    let (_connection, channel) = raw_channel().await;
    let message = channel
        .basic_get(
            queue.topology().partition_queue(partition).as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get")
        .expect("the event is in its partition queue")
        .delivery;
    let properties = &message.properties;
    assert_eq!(
        properties.message_id().as_ref().map(|m| m.as_str()),
        Some(published.event_id.as_str())
    );
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(
        properties.app_id().as_ref().map(|a| a.as_str()),
        Some("nowpilot")
    );
    assert!(properties.timestamp().is_some());
    assert_eq!(message.routing_key.as_str(), format!("p.{partition}"));
    let body: EventEnvelope = serde_json::from_slice(&message.data).expect("JSON envelope");
    assert_eq!(body, published);
    backend.finish().await;
}

/// `publish` returns only after the confirm: with the confirm held back by latency, the message
/// is already in the queue while the publish is still waiting, and cutting the connection
/// then makes it fail rather than succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_waits_for_the_confirm() {
    let proxy = TcpProxy::start(broker_addr()).await.expect("proxy");
    let mut config = amqp_config(&unique_prefix("confirm"));
    config.url = proxy.amqp_url().into();
    config.publish_timeout = Duration::from_secs(30);
    let backend = Backend::amqp_with(config).await;
    let queue = backend.queue.clone();
    let incident = sys_id(55);
    let partition = partition_of(&incident, queue.topology().partitions());
    let partition_queue = queue.topology().partition_queue(partition);

    proxy.set_latency(Duration::from_millis(1500));
    let publishing = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.publish(&event(&incident, 1)).await })
    };
    // Look behind the proxy until the broker holds the message.
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
    assert!(
        !publishing.is_finished(),
        "publish returned before its confirm could have arrived"
    );
    proxy.cut();
    let outcome = publishing.await.expect("task");
    assert!(
        matches!(
            outcome,
            Err(PublishError::ChannelClosed { .. } | PublishError::Unavailable { .. })
        ),
        "{outcome:?}"
    );
    proxy.restore();
    proxy.set_latency(Duration::ZERO);
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_the_reason_headers() {
    let backend = Backend::amqp("dead-headers").await;
    let queue = backend.queue.clone();
    let incident = sys_id(66);
    let partition = partition_of(&incident, queue.topology().partitions());
    let mut stream = queue.consume(&[partition]).await.expect("consume");
    queue.publish(&event(&incident, 2)).await.expect("publish");
    let delivery = recv(&mut stream).await;
    delivery
        .dead_letter("close_code_invalid", "ServiceNow refused close_code 'X'")
        .await
        .expect("dead letter");

    let (_connection, channel) = raw_channel().await;
    let dead = queue.topology().dead_queue();
    let deadline = tokio::time::Instant::now() + crate::common::PATIENCE;
    let message = loop {
        let got = channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .expect("get");
        if let Some(got) = got {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let message = message.delivery;
    let table = message
        .properties
        .headers()
        .clone()
        .expect("headers")
        .inner()
        .clone();
    let text = |name: &str| match table.get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(text(headers::REASON), "close_code_invalid");
    assert_eq!(text(headers::ERROR), "ServiceNow refused close_code 'X'");
    chrono::DateTime::parse_from_rfc3339(&text(headers::DEAD_AT)).expect("RFC 3339");
    assert!(matches!(
        table.get(headers::ATTEMPT),
        Some(AMQPValue::LongLongInt(0))
    ));
    channel
        .basic_nack(
            message.delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        )
        .await
        .expect("give back");
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_messages_are_dead_lettered_and_never_replayed() {
    let backend = Backend::amqp("malformed").await;
    let queue = backend.queue.clone();
    let mut stream = queue.consume(&[0]).await.expect("consume");
    let (_connection, channel) = raw_channel().await;
    channel
        .basic_publish(
            queue.topology().events_exchange().as_str().into(),
            "p.0".into(),
            BasicPublishOptions::default(),
            b"{not json",
            BasicProperties::default().with_message_id("garbage-1".into()),
        )
        .await
        .expect("publish garbage");
    // A readable event behind it still arrives: the garbage did not block the partition.
    let incident = crate::common::sys_id_in(0, queue.topology().partitions());
    queue.publish(&event(&incident, 1)).await.expect("publish");
    let delivery = recv(&mut stream).await;
    assert_eq!(delivery.envelope.sys_id, incident);
    delivery.ack().await.expect("ack");

    wait_until("the garbage in the dead-letter queue", || async {
        queue.depths().await.expect("depths").dead == 1
    })
    .await;
    let letters = queue.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event, None);
    assert_eq!(letters[0].message_id.as_deref(), Some("garbage-1"));
    assert_eq!(letters[0].reason, reasons::MALFORMED);
    let report = queue.replay(ReplaySelector::All).await.expect("replay");
    assert!(report.replayed.is_empty());
    assert_eq!(report.unreadable, 1);
    assert_eq!(queue.depths().await.expect("depths").dead, 1);
    backend.finish().await;
}

/// Not an assertion: prints what 64 concurrent publishers achieve with confirms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_throughput_with_64_concurrent_publishers() {
    const PUBLISHERS: u64 = 64;
    const EACH: u64 = 200;
    let mut config = amqp_config(&unique_prefix("throughput"));
    config.partitions = 16;
    config.publish_timeout = Duration::from_secs(30);
    let backend = Backend::amqp_with(config.clone()).await;
    let queue: Arc<dyn EventQueue> = backend.queue.clone();
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for publisher in 0..PUBLISHERS {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                let incident = sys_id(publisher * 1_000_000 + n);
                queue.publish(&event(&incident, n)).await.expect("publish");
            }
        }));
    }
    for task in tasks {
        task.await.expect("publisher");
    }
    let elapsed = started.elapsed();
    let total = PUBLISHERS * EACH;
    println!(
        "publish throughput: {total} confirmed publishes by {PUBLISHERS} concurrent publishers \
         over {} confirm channels in {elapsed:?}: {:.0} msg/s",
        config.publisher_channels,
        total as f64 / elapsed.as_secs_f64()
    );
    let depths = queue.depths().await.expect("depths");
    assert_eq!(depths.partitions.iter().sum::<u64>(), total);
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_publish_is_not_a_success_and_heals() {
    // The exchange exists but partition queue 0 lost its binding: the broker returns the
    // message (mandatory) and the publish must say so.
    let backend = Backend::amqp("unroutable").await;
    let queue = backend.queue.clone();
    let (_connection, channel) = raw_channel().await;
    channel
        .queue_unbind(
            queue.topology().partition_queue(0).as_str().into(),
            queue.topology().events_exchange().as_str().into(),
            "p.0".into(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("unbind");
    let incident = crate::common::sys_id_in(0, queue.topology().partitions());
    let outcome = queue.publish(&event(&incident, 1)).await;
    assert!(
        matches!(
            outcome,
            Err(PublishError::Unroutable {
                reply_code: 312,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(!outcome.unwrap_err().is_retryable());
    // The backend declares its topology again, so publishing heals.
    wait_until("publishing to partition 0 to work again", || {
        let (queue, incident) = (queue.clone(), incident.clone());
        async move { queue.publish(&event(&incident, 2)).await.is_ok() }
    })
    .await;
    backend.finish().await;
}
