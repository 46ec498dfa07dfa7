//! The whole production path in one test process: the simulator's business rule posts signed
//! callbacks to a real ingress, which publishes to real RabbitMQ, from which a real worker
//! consumes and writes back to the simulator. Each pipeline has its own queue prefix.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use nowpilot_admin::ConnectionManager;
use nowpilot_ingress::{IngressConfig, IngressState};
use nowpilot_model::{
    Record,
    plans::{PlanConfig, PlanSet},
};
use nowpilot_queue::{AmqpBackend, EventPublisher, EventQueue, QueueConfig};
use nowpilot_servicenow::{ClientOptions, ServiceNowConfig};
use nowpilot_snowsim::{JournalEntry, SimConfig, SimUser, WebhookConfig, WebhookSecret};
use nowpilot_testkit::{TopologyGuard, amqp_config, unique_prefix};
use nowpilot_worker::{PassReport, WorkerConfig, WorkerDeps};
use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::SimHandle;

/// The webhook secret every pipeline uses.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// nowpilot's integration user (role admin, so the structured journal is readable).
pub const INTEGRATION: (&str, &str) = ("nowpilot.integration", "integration-pw");

/// How to build a pipeline.
pub struct Setup {
    /// Test name, part of the queue prefix.
    pub name: &'static str,
    /// `[[plans]]` TOML.
    pub plans: String,
    /// The `[worker]` section.
    pub worker: WorkerConfig,
    /// The simulator (users, seed, rate limits); the webhook is filled in.
    pub sim: SimConfig,
}

impl Setup {
    /// A pipeline with these plans over the seeded demo instance.
    pub fn new(name: &'static str, plans: &str) -> Setup {
        let mut sim = SimConfig {
            seed_demo: true,
            users: vec![
                SimUser::new(INTEGRATION.0, INTEGRATION.1),
                SimUser::new("admin", "admin"),
            ],
            ..SimConfig::default()
        };
        sim.user_roles
            .insert(INTEGRATION.0.into(), vec!["admin".into()]);
        Setup {
            name,
            plans: plans.to_owned(),
            worker: WorkerConfig::default(),
            sim,
        }
    }
}

#[derive(Deserialize)]
struct PlansFile {
    #[serde(default)]
    plans: Vec<PlanConfig>,
}

/// A running pipeline.
pub struct Pipeline {
    /// The simulator.
    pub sim: SimHandle,
    /// The ingress base URL.
    pub ingress: String,
    /// The queue backend (shared by ingress and worker).
    pub queue: Arc<AmqpBackend>,
    /// The queue configuration (prefix, partitions).
    pub queue_config: QueueConfig,
    reports: Arc<Mutex<Vec<PassReport>>>,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
    _guard: TopologyGuard,
    _dir: tempfile::TempDir,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Pipeline {
    /// Starts everything and waits until the broker is ready.
    pub async fn start(setup: Setup) -> Pipeline {
        let prefix = unique_prefix(setup.name);
        let mut queue_config = amqp_config(&prefix);
        queue_config.partitions = 4;
        let guard = TopologyGuard::new(&queue_config);
        let shutdown = CancellationToken::new();
        let queue = Arc::new(
            AmqpBackend::connect(&queue_config, shutdown.child_token())
                .await
                .expect("broker"),
        );
        let mut ready = queue.readiness_watch();
        tokio::time::timeout(Duration::from_secs(30), async {
            while !ready.borrow_and_update().ready {
                ready.changed().await.expect("readiness");
            }
        })
        .await
        .expect("the broker became ready");

        // Ingress.
        let ingress_config = IngressConfig {
            secrets: vec![SecretString::from(SECRET.to_owned())],
            echo_users: vec![INTEGRATION.0.into()],
            ..IngressConfig::default()
        };
        let publisher: Arc<dyn EventPublisher> = queue.clone();
        let state = IngressState::new(
            ingress_config.validate().expect("ingress config"),
            publisher,
            Arc::new(String::new),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ingress = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(nowpilot_ingress::serve(
            state,
            listener,
            shutdown.child_token(),
        ));

        // Simulator with its business rule pointed at the ingress.
        let mut sim_config = setup.sim;
        sim_config.webhook = WebhookConfig {
            url: Some(
                format!("{ingress}/webhooks/servicenow")
                    .parse()
                    .expect("url"),
            ),
            secret: Some(WebhookSecret::parse(SECRET).expect("secret")),
            skip_user: None,
        };
        let sim = SimHandle::start(sim_config).await;

        // Worker.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut snow = ServiceNowConfig::basic(
            &sim.url,
            INTEGRATION.0,
            SecretString::from(INTEGRATION.1.to_owned()),
        );
        snow.timeout = Duration::from_secs(10);
        let manager = ConnectionManager::new(
            dir.path().join("nowpilot.toml"),
            dir.path(),
            Some(snow),
            ClientOptions::default(),
        );
        let file: PlansFile = toml::from_str(&setup.plans).expect("plans TOML");
        let plans = PlanSet::new(&file.plans, setup.worker.quickstart).expect("valid plans");
        let mut worker = setup.worker;
        worker.integration_user = Some(INTEGRATION.0.into());
        let settings = worker.validate(&plans).expect("valid worker config");
        let reports = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        let sink = {
            let reports = reports.clone();
            let notify = notify.clone();
            Arc::new(move |report: PassReport| {
                reports.lock().expect("reports").push(report);
                notify.notify_waiters();
            })
        };
        let queue_dyn: Arc<dyn EventQueue> = queue.clone();
        let deps = WorkerDeps::new(queue_dyn, manager, plans, settings).with_activity(sink);
        tokio::spawn(nowpilot_worker::run(deps, shutdown.child_token()));

        Pipeline {
            sim,
            ingress,
            queue,
            queue_config,
            reports,
            notify,
            shutdown,
            _guard: guard,
            _dir: dir,
        }
    }

    /// A person creates an incident (the business rule fires); returns its sys_id.
    pub fn create(&self, user: &str, fields: &[(&str, &str)]) -> String {
        let created = self
            .sim
            .sim
            .insert_as(user, "incident", record(fields))
            .expect("insert");
        created.value_or_empty("sys_id").to_owned()
    }

    /// A person updates an incident (the business rule fires).
    pub fn update(&self, user: &str, sys_id: &str, fields: &[(&str, &str)]) {
        self.sim
            .sim
            .update_as(user, "incident", sys_id, record(fields))
            .expect("update");
    }

    /// The stored incident.
    pub fn get(&self, sys_id: &str) -> Record {
        self.sim.sim.get("incident", sys_id).expect("incident")
    }

    /// Journal entries written by nowpilot, oldest first.
    pub fn our_notes(&self, sys_id: &str) -> Vec<JournalEntry> {
        self.sim
            .sim
            .journal("incident", sys_id)
            .into_iter()
            .filter(|e| e.created_by == INTEGRATION.0)
            .collect()
    }

    /// Pass reports so far for `sys_id`.
    pub fn reports_for(&self, sys_id: &str) -> Vec<PassReport> {
        self.reports
            .lock()
            .expect("reports")
            .iter()
            .filter(|r| r.sys_id == sys_id)
            .cloned()
            .collect()
    }

    /// Waits (at most `limit`) until `check` holds; panics with `what` otherwise.
    pub async fn wait_until<F: Fn() -> bool>(&self, what: &str, limit: Duration, check: F) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if check() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}

/// A record from field pairs.
pub fn record(fields: &[(&str, &str)]) -> Record {
    let mut r = Record::new();
    for (k, v) in fields {
        r.set(*k, *v);
    }
    r
}
