//! The topology guard against the real broker.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use nowpilot_queue::Topology;
use nowpilot_queue::amqp::declare_topology;
use nowpilot_testkit::{TopologyGuard, amqp_config, amqp_url, unique_prefix};

#[tokio::test]
async fn the_guard_deletes_the_topology_even_when_the_test_panics() {
    let config = amqp_config(&unique_prefix("guard"));
    declare_topology(&config).await.expect("declare");

    let guarded = config.clone();
    let failed_test = std::thread::spawn(move || {
        let _guard = TopologyGuard::new(&guarded);
        panic!("a failing test (expected in this test's output)");
    })
    .join();
    assert!(failed_test.is_err());

    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let names = Topology::new(config.prefix.clone(), config.partitions).names();
    for queue in names.queues {
        // A passive declare of a missing queue closes its channel: one channel per probe.
        let channel = connection.create_channel().await.expect("channel");
        let probe = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable().passive(),
                FieldTable::default(),
            )
            .await;
        assert!(probe.is_err(), "{queue} survived the guard");
    }
}
