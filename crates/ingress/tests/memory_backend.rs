//! The ingress in front of the queue's in-memory backend: what it acknowledges is really
//! queued, on the incident's partition, exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use nowpilot_model::partition::partition_of;
use nowpilot_queue::{EventQueue, MemoryBackend, QueueConfig, QueueKind};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn accepted_callbacks_are_queued_once_on_their_partition() {
    let queue_shutdown = CancellationToken::new();
    let queue_config = QueueConfig {
        kind: QueueKind::Memory,
        partitions: 8,
        ..QueueConfig::default()
    };
    let backend = Arc::new(MemoryBackend::new(&queue_config, queue_shutdown.clone()).unwrap());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(nowpilot_ingress::run(
        config(),
        backend.clone(),
        no_metrics(),
        listener,
        shutdown.clone(),
    ));
    let client = client();
    let url = format!("http://{addr}{}", nowpilot_ingress::WEBHOOK_PATH);
    let send = |request: TestRequest| {
        let mut builder = client.post(url.clone()).body(request.body.clone());
        for (n, v) in &request.headers {
            builder = builder.header(n.as_str(), v.as_str());
        }
        builder.send()
    };

    let body = payload(12, "beth.anglin");
    let request = signed_request(&event_id(12), now(), &body, SECRET_BYTES);
    assert_eq!(send(request.clone()).await.unwrap().status().as_u16(), 202);
    assert_eq!(send(request).await.unwrap().status().as_u16(), 200);

    let partition = partition_of(SYS_ID, 8);
    let depths = backend.depths().await.unwrap();
    assert_eq!(depths.partitions.iter().sum::<u64>(), 1, "{depths:?}");
    assert_eq!(depths.partitions[usize::from(partition)], 1, "{depths:?}");

    let mut stream = backend.consume(&[partition]).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), stream.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.envelope.event_id.as_str(), event_id(12));
    assert_eq!(delivery.partition, partition);
    delivery.ack().await.unwrap();

    // A stopped queue refuses publishes: the ingress answers 503 and readiness drops.
    queue_shutdown.cancel();
    let mut ready_status = 200;
    for _ in 0..200 {
        ready_status = client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if ready_status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready_status, 503);
    let late = signed_request(&event_id(13), now(), &payload(13, "x"), SECRET_BYTES);
    let response = send(late).await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
