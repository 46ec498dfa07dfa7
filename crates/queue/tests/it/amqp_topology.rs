//! The RabbitMQ topology: idempotent declaration, the arguments the broker holds, stranded
//! partitions, mismatches, the delivery limit's dead-lettering, and deletion.

use lapin::ExchangeKind;
use lapin::options::{
    BasicGetOptions, BasicRejectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use nowpilot_model::partition::partition_of;
use nowpilot_queue::amqp::{declare_topology, delete_topology};
use nowpilot_queue::{AmqpBackend, QueueError, RETRY_TIERS, reasons};
use nowpilot_testkit::{TopologyGuard, amqp_config, unique_prefix};
use tokio_util::sync::CancellationToken;

use crate::common::{Backend, event, raw_channel, sys_id, wait_until};

fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The partition queue arguments, written out independently of the code under test.
fn expected_partition_args(prefix: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    args.insert(
        "x-dead-letter-exchange".into(),
        long(&format!("{prefix}.dlx")),
    );
    args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
    args.insert("x-overflow".into(), long("reject-publish"));
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(20));
    args
}

fn is_precondition_failed(error: &lapin::Error) -> bool {
    error.to_string().contains("PRECONDITION")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_twice_is_idempotent_and_the_broker_holds_our_arguments() {
    let config = amqp_config(&unique_prefix("declare-twice"));
    let _guard = TopologyGuard::new(&config);
    assert!(declare_topology(&config).await.expect("first").is_empty());
    assert!(declare_topology(&config).await.expect("second").is_empty());

    let prefix = &config.prefix;
    let (_connection, channel) = raw_channel().await;
    // A redeclare with the expected arguments is accepted only if they are equivalent to what
    // the broker holds.
    for partition in 0..config.partitions {
        channel
            .queue_declare(
                format!("{prefix}.events.p{partition}").as_str().into(),
                QueueDeclareOptions::durable(),
                expected_partition_args(prefix),
            )
            .await
            .expect("the partition queue has the expected arguments");
    }
    let mut classic = FieldTable::default();
    classic.insert("x-queue-type".into(), long("classic"));
    classic.insert(
        "x-dead-letter-exchange".into(),
        long(&format!("{prefix}.events")),
    );
    for tier in RETRY_TIERS {
        let mut args = classic.clone();
        let ttl = i32::try_from(tier.delay.as_millis()).unwrap();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl));
        channel
            .queue_declare(
                format!("{prefix}.retry.{}", tier.name).as_str().into(),
                QueueDeclareOptions::durable(),
                args,
            )
            .await
            .expect("the retry queue has the expected arguments");
    }
    for (name, kind) in [
        ("events", ExchangeKind::Direct),
        ("dlx", ExchangeKind::Fanout),
        ("retry", ExchangeKind::Headers),
    ] {
        channel
            .exchange_declare(
                format!("{prefix}.{name}").as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the exchange has the expected type");
    }

    // And a different delivery limit is refused: the broker really compares the arguments.
    let mut other = expected_partition_args(prefix);
    other.insert("x-delivery-limit".into(), AMQPValue::LongInt(5));
    let refused = channel
        .queue_declare(
            format!("{prefix}.events.p0").as_str().into(),
            QueueDeclareOptions::durable(),
            other,
        )
        .await
        .expect_err("a different delivery limit must be refused");
    assert!(is_precondition_failed(&refused), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_partition_count_reports_stranded_queues() {
    let mut config = amqp_config(&unique_prefix("stranded"));
    config.partitions = 4;
    let _guard = TopologyGuard::new(&config);
    declare_topology(&config).await.expect("declare 4");

    let mut fewer = config.clone();
    fewer.partitions = 2;
    let stranded = declare_topology(&fewer).await.expect("declare 2");
    let names: Vec<_> = stranded.iter().map(|s| s.name.clone()).collect();
    assert_eq!(
        names,
        [
            format!("{}.events.p2", config.prefix),
            format!("{}.events.p3", config.prefix)
        ]
    );

    // The backend reports them too.
    let shutdown = CancellationToken::new();
    let backend = AmqpBackend::connect(&fewer, shutdown.clone())
        .await
        .expect("connect");
    assert_eq!(backend.stranded_partitions().len(), 2);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_other_arguments_is_named_in_the_error() {
    let config = amqp_config(&unique_prefix("mismatch"));
    let _guard = TopologyGuard::new(&config);
    let (_connection, channel) = raw_channel().await;
    let name = format!("{}.events.p0", config.prefix);
    channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("pre-declare a classic queue");

    let error = AmqpBackend::connect(&config, CancellationToken::new())
        .await
        .expect_err("the classic queue must be refused");
    match &error {
        QueueError::TopologyMismatch { name: named, .. } => assert_eq!(named, &name),
        other => panic!("expected a topology mismatch, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&name), "{message}");
    assert!(message.contains("differ from this version"), "{message}");
    assert!(!error.is_retryable());
}

/// The partition queues dead-letter a message after the delivery limit (20) through the DLX,
/// and `dead_letters` reads the broker's reason. `basic.reject` is used because it counts as a
/// failed delivery on every RabbitMQ version (4.3 no longer counts `basic.nack`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_limit_dead_letters_poison_messages() {
    let backend = Backend::amqp("delivery-limit").await;
    let queue = backend.queue.clone();
    let incident = sys_id(77);
    let partition = partition_of(&incident, queue.topology().partitions());
    let poison = event(&incident, 1);
    queue.publish(&poison).await.expect("publish");

    let (_connection, channel) = raw_channel().await;
    let partition_queue = queue.topology().partition_queue(partition);
    let mut deliveries = 0;
    while let Some(message) = channel
        .basic_get(
            partition_queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .expect("get")
    {
        deliveries += 1;
        assert!(deliveries <= 25, "never dead-lettered");
        channel
            .basic_reject(
                message.delivery.delivery_tag,
                BasicRejectOptions { requeue: true },
            )
            .await
            .expect("reject");
    }
    assert!(
        deliveries >= 20,
        "dead-lettered after only {deliveries} deliveries"
    );
    wait_until("the poison message in the dead-letter queue", || async {
        queue.depths().await.expect("depths").dead == 1
    })
    .await;
    let letters = queue.dead_letters(5).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event.as_ref(), Some(&poison));
    assert_eq!(letters[0].reason, reasons::DELIVERY_LIMIT);
    assert!(letters[0].dead_at.is_some());
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_topology_removes_everything() {
    let config = amqp_config(&unique_prefix("delete"));
    let mut guard = TopologyGuard::new(&config);
    declare_topology(&config).await.expect("declare");
    guard.delete_now();
    // Deleting what is gone is fine.
    delete_topology(&config).await.expect("delete again");

    let (connection, _) = raw_channel().await;
    for queue in nowpilot_queue::Topology::new(config.prefix.clone(), config.partitions)
        .names()
        .queues
    {
        let channel = connection.create_channel().await.expect("channel");
        let missing = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable().passive(),
                FieldTable::default(),
            )
            .await;
        assert!(missing.is_err(), "{queue} still exists");
    }
}
