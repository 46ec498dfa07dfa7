//! Ownership against the local RabbitMQ (`NOWPILOT_TEST_AMQP_URL`): lock exclusivity, an even
//! split, takeover after a member leaves, and revocation when the coordination connection is
//! cut. Each test has its own prefix and deletes its topology.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nowpilot_testkit::{TcpProxy, amqp_url, broker_addr, unique_prefix};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::broker::{Coordination, LockAttempt};
use super::*;

// testkit's own `amqp_config`/`TopologyGuard` use the other copy of this crate (the one
// testkit links), so these tests build their configuration and clean up themselves.
fn amqp_config(prefix: &str) -> QueueConfig {
    let mut config = QueueConfig::with_prefix(prefix);
    config.url = SecretString::from(amqp_url());
    config.partitions = 4;
    config.publish_timeout = Duration::from_secs(3);
    config.connect_timeout = Duration::from_secs(3);
    config.heartbeat = Duration::from_secs(5);
    config
}

struct TopologyGuard(QueueConfig);

impl TopologyGuard {
    fn new(config: &QueueConfig) -> Self {
        TopologyGuard(config.clone())
    }
}

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        let config = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(crate::amqp::delete_topology(&config))
        })
        .join();
    }
}

type Table = Arc<Mutex<Vec<Option<String>>>>;

fn fast(id: &str) -> OwnershipSettings {
    OwnershipSettings {
        member_id: id.to_owned(),
        heartbeat_interval: Duration::from_millis(300),
        member_timeout: Duration::from_secs(1),
        lock_retry: Duration::from_millis(200),
        takeover_grace: Duration::from_secs(3),
        connection_heartbeat: Duration::from_secs(1),
    }
}

/// A stand-in worker: consumes nothing, but keeps a shared table of who consumes what and
/// fails the test if two members ever hold one partition at the same time.
fn fake_worker(
    id: &'static str,
    mut ownership: PartitionOwnership,
    table: Table,
    stop: CancellationToken,
    log: Arc<Mutex<Vec<(String, OwnershipEvent)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => break,
                event = ownership.next() => match event { Some(e) => e, None => break },
            };
            log.lock().unwrap().push((id.to_owned(), event));
            match event {
                OwnershipEvent::Acquired(p) => {
                    let mut t = table.lock().unwrap();
                    let slot = &mut t[usize::from(p)];
                    assert!(slot.is_none(), "{id} acquired p{p} while {slot:?} holds it");
                    *slot = Some(id.to_owned());
                }
                OwnershipEvent::Release(p) | OwnershipEvent::Revoked(p) => {
                    let mut t = table.lock().unwrap();
                    let slot = &mut t[usize::from(p)];
                    if slot.as_deref() == Some(id) {
                        *slot = None;
                    }
                    drop(t);
                    ownership.released(p);
                }
            }
        }
        // Like the worker: stop consuming first, then leave.
        {
            let mut t = table.lock().unwrap();
            for slot in t.iter_mut() {
                if slot.as_deref() == Some(id) {
                    *slot = None;
                }
            }
        }
        ownership.close().await;
    })
}

fn owned_by(table: &Table, id: &str) -> usize {
    table
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.as_deref() == Some(id))
        .count()
}

async fn wait_for(what: &str, bound: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + bound;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_lock_is_exclusive_and_dies_with_its_connection() {
    let config = amqp_config(&unique_prefix("lock"));
    let _cleanup = TopologyGuard::new(&config);
    let beat = Duration::from_secs(2);
    let mut a = Coordination::connect(&config, "a", beat).await.unwrap();
    let mut b = Coordination::connect(&config, "b", beat).await.unwrap();
    assert_eq!(a.try_lock(0).await.unwrap(), LockAttempt::Taken);
    // Declaring it again on the holder's own connection is fine (idempotent).
    assert_eq!(a.try_lock(0).await.unwrap(), LockAttempt::Taken);
    assert_eq!(b.try_lock(0).await.unwrap(), LockAttempt::Held);
    // The refused declaration closed B's lock channel; the next call reopens one.
    assert_eq!(b.try_lock(1).await.unwrap(), LockAttempt::Taken);
    assert_eq!(a.try_lock(1).await.unwrap(), LockAttempt::Held);
    a.unlock(0).await.unwrap();
    assert_eq!(b.try_lock(0).await.unwrap(), LockAttempt::Taken);
    // B's connection goes: its locks go with it.
    b.close().await;
    assert_eq!(a.try_lock(0).await.unwrap(), LockAttempt::Taken);
    assert_eq!(a.try_lock(1).await.unwrap(), LockAttempt::Taken);
    a.close().await;
}

#[tokio::test]
async fn members_split_evenly_and_take_over_when_one_leaves() {
    let config = amqp_config(&unique_prefix("split"));
    let _cleanup = TopologyGuard::new(&config);
    crate::amqp::declare_topology(&config).await.unwrap();
    let table: Table = Arc::new(Mutex::new(vec![None; 4]));
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let a = PartitionOwnership::start(&config, fast("member-a")).unwrap();
    let members = a.members();
    let task_a = fake_worker("member-a", a, table.clone(), stop_a.clone(), log.clone());
    wait_for("a to own everything", Duration::from_secs(15), || {
        owned_by(&table, "member-a") == 4
    })
    .await;
    let b = PartitionOwnership::start(&config, fast("member-b")).unwrap();
    let task_b = fake_worker("member-b", b, table.clone(), stop_b.clone(), log.clone());
    wait_for("an even split", Duration::from_secs(15), || {
        owned_by(&table, "member-a") == 2 && owned_by(&table, "member-b") == 2
    })
    .await;
    let view = members.borrow().clone();
    assert_eq!(view.len(), 2, "{view:?}");
    assert!(view[0].this_process && view[0].id == "member-a");
    // B shuts down: A takes its partitions.
    stop_b.cancel();
    task_b.await.unwrap();
    wait_for("a to take over", Duration::from_secs(15), || {
        owned_by(&table, "member-a") == 4
    })
    .await;
    stop_a.cancel();
    task_a.await.unwrap();
    let log = log.lock().unwrap();
    assert!(
        log.iter()
            .any(|(id, e)| id == "member-a" && matches!(e, OwnershipEvent::Release(_))),
        "a handed partitions over: {log:?}"
    );
}

#[tokio::test]
async fn a_cut_coordination_connection_revokes_and_recovers() {
    let base = amqp_config(&unique_prefix("revoke"));
    let _cleanup = TopologyGuard::new(&base);
    crate::amqp::declare_topology(&base).await.unwrap();
    let proxy = TcpProxy::start(broker_addr()).await.unwrap();
    let mut config = base.clone();
    config.url = SecretString::from(proxy.amqp_url());
    let table: Table = Arc::new(Mutex::new(vec![None; 4]));
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let ownership = PartitionOwnership::start(&config, fast("cut")).unwrap();
    let task = fake_worker("cut", ownership, table.clone(), stop.clone(), log.clone());
    wait_for("ownership", Duration::from_secs(15), || {
        owned_by(&table, "cut") == 4
    })
    .await;
    proxy.cut();
    wait_for("revocation", Duration::from_secs(15), || {
        owned_by(&table, "cut") == 0
    })
    .await;
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| matches!(e, OwnershipEvent::Revoked(_)))
            .count(),
        4
    );
    proxy.restore();
    wait_for("recovery", Duration::from_secs(20), || {
        owned_by(&table, "cut") == 4
    })
    .await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn the_memory_backend_owns_everything() {
    let mut config = QueueConfig::with_prefix("mem");
    config.kind = crate::QueueKind::Memory;
    config.partitions = 3;
    let mut ownership = PartitionOwnership::start(&config, OwnershipSettings::default()).unwrap();
    for p in 0..3 {
        assert_eq!(ownership.next().await, Some(OwnershipEvent::Acquired(p)));
    }
    let pending = tokio::time::timeout(Duration::from_millis(50), ownership.next()).await;
    assert!(pending.is_err(), "nothing else ever comes");
    ownership.close().await;
}

#[test]
fn settings_are_checked() {
    assert!(OwnershipSettings::default().validate().is_ok());
    let mut s = fast("x");
    s.member_timeout = s.heartbeat_interval;
    assert!(s.validate().is_err());
    let mut s = fast("");
    s.member_id.clear();
    assert!(s.validate().is_err());
    assert!(default_member_id().len() > 6);
}
