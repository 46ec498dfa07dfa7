//! The fault suite's harness: a whole nowpilot deployment as separate processes, with every
//! link a scenario breaks behind a proxy owned by the test.
//!
//! ```text
//!  simulator (in this test: records, journal, request and callback logs)
//!     │ business rule: one signed callback per change, never retried
//!     ▼
//!  nowpilot ingress (process) ──TcpProxy──▶ RabbitMQ ◀──TcpProxy── nowpilot worker × N (processes)
//!                                                                        │
//!  simulator ◀──[TokenFaultProxy]◀── TcpProxy ◀──────── Table API, OAuth ┘
//! ```
//!
//! Every process has its own TCP proxy to the broker, so "the broker restarts" is every proxy
//! cutting its connections and refusing new ones (the shared RabbitMQ itself is never
//! restarted: other tests use it at the same time). The workers reach the simulator through
//! one TCP proxy (cut, slow, restore) and, in OAuth scenarios, an HTTP proxy that can fail the
//! token endpoint alone. Each worker authenticates as its own ServiceNow user, so the
//! simulator's request log says which worker made which request.
//!
//! The load is new priority-2 incidents created as a person (`test.caller`): each fires
//! exactly one callback, so "callback accepted" and "incident handled" pair up one to one. The
//! plan acknowledges priority-2 incidents: one PATCH with one note and its marker. Counting
//! ([`Deployment::measure`]): accepted = callbacks answered 2xx; handled = accepted whose
//! incident carries the acknowledgement marker; duplicates = notes beyond one per
//! (incident, plan, action); lost = accepted − handled; dead-lettered = the dead-letter
//! queue's depth; left in queues = partition and retry queues once the workers have stopped
//! gracefully (anything still there was never settled).

#![allow(dead_code)]

pub(crate) mod http_relay;
pub(crate) mod process;
pub(crate) mod table;
pub(crate) mod token_proxy;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nowpilot_queue::{AmqpBackend, EventQueue, QueueConfig, QueueDepths};
use nowpilot_snowsim::{
    CallbackRecord, OAuthClient, SimConfig, SimUser, Simulator, WebhookConfig, WebhookSecret,
};
use nowpilot_testkit::{TcpProxy, TopologyGuard, amqp_config, broker_addr, unique_prefix};
use nowpilot_tests::SimHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::scale_support::{ACK_PLAN, CALLER, SECRET, WORKER_PASSWORD, p2_incident, worker_user};
use process::NowpilotProcess;
use table::Row;
use token_proxy::TokenFaultProxy;

/// The plan the workers run.
pub(crate) const PLAN: &str = "ack";
/// Its one action.
pub(crate) const ACTION: &str = "acknowledge";

/// How a deployment is built.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Part of the queue prefix.
    pub(crate) name: &'static str,
    /// How many worker processes.
    pub(crate) workers: usize,
    /// Partition count `P`.
    pub(crate) partitions: u16,
    /// Extra `[worker]` TOML: concurrency, poller, retry delays.
    pub(crate) worker_section: String,
    /// OAuth client credentials with access tokens living this long (the token endpoint
    /// behind a [`TokenFaultProxy`]) instead of Basic auth.
    pub(crate) oauth_token_ttl: Option<Duration>,
}

impl Options {
    /// `workers` workers over `P = 4`, poller off, concurrency 16, Basic auth.
    pub(crate) fn new(name: &'static str, workers: usize) -> Options {
        Options {
            name,
            workers,
            partitions: 4,
            worker_section: "concurrency = 16\npoller = false\n".to_owned(),
            oauth_token_ttl: None,
        }
    }
}

/// A running deployment. Dropping it kills every process before the topology is deleted.
pub(crate) struct Deployment {
    /// The worker processes (`worker.<i>`, ServiceNow user `worker.<i>`).
    pub(crate) workers: Vec<NowpilotProcess>,
    /// The ingress process.
    pub(crate) ingress: NowpilotProcess,
    /// The workers' link to the simulator.
    pub(crate) sim_link: TcpProxy,
    /// The token endpoint's fault switch (OAuth deployments only).
    pub(crate) token_proxy: Option<TokenFaultProxy>,
    /// The simulator.
    pub(crate) sim: SimHandle,
    /// The workers' ServiceNow users, by index.
    pub(crate) users: Vec<String>,
    ingress_broker: TcpProxy,
    worker_brokers: Vec<TcpProxy>,
    ingress_addr: SocketAddr,
    /// The test's own broker connection (not proxied): depths and dead letters.
    inspector: Arc<AmqpBackend>,
    shutdown: CancellationToken,
    started: Instant,
    _guard: TopologyGuard,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // The processes go first (their own Drop kills and reaps them), then the inspector's
        // connection, and the topology guard, declared last, deletes the queues.
        self.workers.clear();
        self.shutdown.cancel();
    }
}

/// A port nobody listens on right now, for a process that must come back on the same address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Deployment {
    /// Starts the simulator, the proxies, the ingress and the workers, and waits until the
    /// ingress is ready and every worker consumes partitions.
    pub(crate) async fn start(options: Options) -> Deployment {
        let started = Instant::now();
        let mut queue = amqp_config(&unique_prefix(options.name));
        queue.partitions = options.partitions;
        let guard = TopologyGuard::new(&queue);
        let shutdown = CancellationToken::new();
        let users: Vec<String> = (0..options.workers).map(worker_user).collect();

        let ingress_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let sim = SimHandle::start(sim_config(&users, &options, ingress_addr)).await;
        let token_proxy = match options.oauth_token_ttl {
            Some(_) => Some(TokenFaultProxy::start(&sim.url).await),
            None => None,
        };
        let sim_upstream = match &token_proxy {
            Some(proxy) => proxy.addr.to_string(),
            None => sim.url.trim_start_matches("http://").to_owned(),
        };
        let sim_link = TcpProxy::start(sim_upstream)
            .await
            .expect("simulator proxy");

        let inspector = crate::scale_support::backend(&queue, shutdown.child_token()).await;

        let ingress_broker = TcpProxy::start(broker_addr()).await.expect("broker proxy");
        let ingress = NowpilotProcess::start(
            "ingress",
            "ingress",
            &ingress_config(&queue, &ingress_broker, ingress_addr, &users),
        );
        let mut worker_brokers = Vec::new();
        let mut workers = Vec::new();
        for user in &users {
            let broker = TcpProxy::start(broker_addr()).await.expect("broker proxy");
            let config = worker_config(&queue, &broker, &sim_link, user, &options);
            workers.push(NowpilotProcess::start(user, "worker", &config));
            worker_brokers.push(broker);
        }
        let mut deployment = Deployment {
            workers,
            ingress,
            sim_link,
            token_proxy,
            sim,
            users,
            ingress_broker,
            worker_brokers,
            ingress_addr,
            inspector,
            shutdown,
            started,
            _guard: guard,
        };
        deployment.wait_ingress_ready().await;
        for index in 0..deployment.workers.len() {
            deployment.wait_worker_consuming(index).await;
        }
        eprintln!(
            "{}: deployment ready in {:.1} s",
            options.name,
            started.elapsed().as_secs_f64()
        );
        deployment
    }

    /// When the deployment started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Waits (at most 60 s) until the ingress answers `/readyz` with 200 (its broker session
    /// is up).
    pub(crate) async fn wait_ingress_ready(&mut self) {
        let client = reqwest::Client::new();
        let url = format!("http://{}/readyz", self.ingress_addr);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                self.ingress.running(),
                "the ingress exited: {}",
                self.ingress.log_tail(40)
            );
            let ready = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the ingress never became ready: {}",
                self.ingress.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (at most 60 s) until worker `index`'s current run consumes a partition.
    pub(crate) async fn wait_worker_consuming(&mut self, index: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let worker = &mut self.workers[index];
        while !worker.current_log().contains("consuming partition") {
            assert!(
                worker.running(),
                "{} exited: {}",
                worker.name,
                worker.log_tail(40)
            );
            assert!(
                Instant::now() < deadline,
                "{} never consumed a partition: {}",
                worker.name,
                worker.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A handle that creates the load, for a task running beside the scenario's faults.
    pub(crate) fn load(&self) -> Load {
        Load {
            sim: self.sim.sim.clone(),
        }
    }

    /// The simulator's clock now (µs since it started), read from the request log of a
    /// request this test makes, so moments of the scenario compare with logged requests.
    pub(crate) async fn sim_clock_us(&self) -> u64 {
        let answer = reqwest::Client::new()
            .get(format!(
                "{}/api/now/table/sys_user?sysparm_limit=1",
                self.sim.url
            ))
            .basic_auth(CALLER, Some("caller-pw"))
            .send()
            .await
            .expect("the clock request");
        assert!(answer.status().is_success(), "{}", answer.status());
        self.sim
            .sim
            .request_log()
            .iter()
            .rev()
            .find(|r| r.user.as_deref() == Some(CALLER) && r.table.as_deref() == Some("sys_user"))
            .map(|r| r.start_us)
            .expect("the clock request is logged")
    }

    /// Cuts every process's broker connection and refuses new ones: a broker restart as
    /// nowpilot sees it.
    pub(crate) fn cut_broker(&self) {
        self.ingress_broker.cut();
        for proxy in &self.worker_brokers {
            proxy.cut();
        }
    }

    /// Lets the processes reach the broker again.
    pub(crate) fn restore_broker(&self) {
        self.ingress_broker.restore();
        for proxy in &self.worker_brokers {
            proxy.restore();
        }
    }

    /// Delays every chunk between the ingress and the broker by `latency`, both ways.
    pub(crate) fn slow_ingress_broker(&self, latency: Duration) {
        self.ingress_broker.set_latency(latency);
    }

    /// Delays every chunk between worker `index` and the broker by `latency`, both ways.
    pub(crate) fn slow_worker_broker(&self, index: usize, latency: Duration) {
        self.worker_brokers[index].set_latency(latency);
    }

    /// Cuts worker `index`'s broker connections (dropping whatever the proxy still holds)
    /// and refuses new ones until [`Self::restore_broker`].
    pub(crate) fn cut_worker_broker(&self, index: usize) {
        self.worker_brokers[index].cut();
    }

    /// The insert callbacks of `sys_ids` the business rule has finished (answered or failed).
    pub(crate) fn insert_callbacks(&self, sys_ids: &[String]) -> Vec<CallbackRecord> {
        let wanted: HashSet<&str> = sys_ids.iter().map(String::as_str).collect();
        self.sim
            .sim
            .callback_log()
            .into_iter()
            .filter(|c| c.operation == "insert" && wanted.contains(c.sys_id.as_str()))
            .collect()
    }

    /// The notes saying an action was done, per (plan, action), written by a worker.
    pub(crate) fn done_notes(&self, sys_id: &str) -> BTreeMap<(String, String), usize> {
        let mut done = BTreeMap::new();
        for entry in self.sim.sim.journal("incident", sys_id) {
            if entry.element != "work_notes" || !self.users.contains(&entry.created_by) {
                continue;
            }
            for marker in nowpilot_worker::markers::parse(&entry.value) {
                if let Some((plan, action)) = marker.done_action() {
                    *done
                        .entry((plan.to_owned(), action.to_owned()))
                        .or_insert(0) += 1;
                }
            }
        }
        done
    }

    /// Whether the incident carries the acknowledgement marker.
    pub(crate) fn acknowledged(&self, sys_id: &str) -> bool {
        self.done_notes(sys_id)
            .contains_key(&(PLAN.to_owned(), ACTION.to_owned()))
    }

    /// The queue depths, as the broker counts ready messages.
    pub(crate) async fn depths(&self) -> QueueDepths {
        self.inspector.depths().await.expect("queue depths")
    }

    /// The latest request any worker made to the simulator (µs on the simulator's clock).
    fn last_worker_request_us(&self) -> Option<u64> {
        self.sim
            .sim
            .request_log()
            .iter()
            .filter(|r| r.user.as_ref().is_some_and(|u| self.users.contains(u)))
            .map(|r| r.end_us)
            .max()
    }

    /// Settles and counts: waits (within `limit` from now) until every callback of `sys_ids`
    /// has finished, every accepted one is handled, the queues are empty and the workers have
    /// been idle for 3 s; then stops the workers gracefully and counts. Never panics on a bad
    /// count: the caller asserts on the row after it is recorded.
    pub(crate) async fn measure(
        &mut self,
        mut row: Row,
        sys_ids: &[String],
        limit: Duration,
    ) -> Row {
        let deadline = Instant::now() + limit;
        // Every callback answered or failed (the business rule gives up after 10 s).
        while self.insert_callbacks(sys_ids).len() < sys_ids.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let accepted: Vec<String> = self
            .insert_callbacks(sys_ids)
            .into_iter()
            .filter(|c| c.status.is_some_and(|s| (200..300).contains(&s)))
            .map(|c| c.sys_id)
            .collect();
        while !accepted.iter().all(|id| self.acknowledged(id)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Quiet: nothing ready in partition or retry queues, and no worker request for 3 s (a
        // redelivered event would make one).
        let mut quiet_since: Option<(Instant, Option<u64>)> = None;
        while Instant::now() < deadline {
            let depths = self.depths().await;
            let last = self.last_worker_request_us();
            let empty = depths.partitions.iter().all(|d| *d == 0) && depths.retry == 0;
            match quiet_since {
                Some((since, seen)) if empty && seen == last => {
                    if since.elapsed() >= Duration::from_secs(3) {
                        break;
                    }
                }
                _ => quiet_since = empty.then(|| (Instant::now(), last)),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // A graceful stop requeues whatever a worker still held: what is left was never
        // settled.
        for worker in &mut self.workers {
            let _ = worker.stop().await;
        }
        let depths = self.depths().await;

        let callbacks = self.insert_callbacks(sys_ids);
        let accepted: HashSet<&str> = callbacks
            .iter()
            .filter(|c| c.status.is_some_and(|s| (200..300).contains(&s)))
            .map(|c| c.sys_id.as_str())
            .collect();
        row.sent = sys_ids.len();
        row.accepted = accepted.len();
        row.refused = callbacks
            .iter()
            .filter(|c| c.status.is_some_and(|s| !(200..300).contains(&s)))
            .count();
        row.unanswered = sys_ids.len() - row.accepted - row.refused;
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        for callback in &callbacks {
            let key = match (callback.status, &callback.error) {
                (Some(status), _) if (200..300).contains(&status) => continue,
                (Some(status), _) => format!("answered {status}"),
                (None, Some(error)) => error.clone(),
                (None, None) => "no answer".to_owned(),
            };
            *failures.entry(key).or_insert(0) += 1;
        }
        if !failures.is_empty() {
            eprintln!("callbacks not accepted, by outcome: {failures:#?}");
        }
        for sys_id in sys_ids {
            let done = self.done_notes(sys_id);
            row.duplicates += done.values().map(|n| n.saturating_sub(1)).sum::<usize>();
            let acknowledged = done.contains_key(&(PLAN.to_owned(), ACTION.to_owned()));
            match (accepted.contains(sys_id.as_str()), acknowledged) {
                (true, true) => row.handled += 1,
                (true, false) => row.lost += 1,
                (false, true) => row.unaccepted_handled += 1,
                (false, false) => {}
            }
        }
        row.dead_lettered = depths.dead;
        row.left_in_queues = depths.partitions.iter().sum::<u64>() + depths.retry;
        row.duration = self.started.elapsed();
        if row.dead_lettered > 0 {
            eprintln!("dead letters: {:?}", self.dead_letter_reasons().await);
        }
        table::record(&row);
        row
    }

    /// The reason of every dead letter (at most 100), oldest first.
    pub(crate) async fn dead_letter_reasons(&self) -> Vec<String> {
        self.inspector
            .dead_letters(100)
            .await
            .expect("dead letters")
            .into_iter()
            .map(|letter| letter.reason)
            .collect()
    }

    /// The logs' last lines of every process, for failure messages.
    pub(crate) fn log_tails(&self) -> String {
        let mut text = format!("--- ingress\n{}\n", self.ingress.log_tail(30));
        for worker in &self.workers {
            text.push_str(&format!("--- {}\n{}\n", worker.name, worker.log_tail(30)));
        }
        text
    }

    /// Asserts the outcome every scenario must have: every accepted callback handled, each
    /// effect once, nothing dead-lettered, nothing left in a queue.
    pub(crate) fn assert_clean(&self, row: &Row) {
        self.assert_clean_except_dead(row, 0);
    }

    /// As [`Self::assert_clean`], with exactly `dead` dead letters injected on purpose.
    pub(crate) fn assert_clean_except_dead(&self, row: &Row, dead: u64) {
        let line = row.markdown();
        assert!(row.accepted > 0, "nothing was accepted: {line}");
        assert_eq!(
            row.lost,
            0,
            "accepted callbacks lost: {line}\n{}",
            self.log_tails()
        );
        assert_eq!(row.handled, row.accepted, "{line}");
        assert_eq!(
            row.duplicates,
            0,
            "duplicate notes: {line}\n{}",
            self.log_tails()
        );
        assert_eq!(
            row.dead_lettered,
            dead,
            "dead letters: {line}\n{}",
            self.log_tails()
        );
        assert_eq!(
            row.left_in_queues,
            0,
            "events never settled: {line}\n{}",
            self.log_tails()
        );
    }
}

fn sim_config(users: &[String], options: &Options, ingress: SocketAddr) -> SimConfig {
    let mut sim_users = vec![SimUser::new(CALLER, "caller-pw")];
    sim_users.extend(users.iter().map(|u| SimUser::new(u, WORKER_PASSWORD)));
    let mut config = SimConfig {
        users: sim_users,
        // One callback per insert and one (echo) per acknowledgement, with room to spare.
        callback_log_capacity: 50_000,
        request_log_capacity: 300_000,
        ..SimConfig::default()
    };
    for user in config.users.clone() {
        config
            .user_roles
            .insert(user.user_name.clone(), vec!["admin".into()]);
    }
    if let Some(ttl) = options.oauth_token_ttl {
        config.token_ttl = ttl;
        config.oauth_clients = users
            .iter()
            .map(|user| OAuthClient {
                app_user: Some(user.clone()),
                ..OAuthClient::new(client_id(user), client_secret(user))
            })
            .collect();
    }
    config.webhook = WebhookConfig {
        url: Some(
            format!("http://{ingress}/webhooks/servicenow")
                .parse()
                .expect("webhook url"),
        ),
        secret: Some(WebhookSecret::parse(SECRET).expect("secret")),
        skip_user: None,
    };
    config
}

fn client_id(user: &str) -> String {
    format!("{user}-client")
}

fn client_secret(user: &str) -> String {
    format!("{user}-client-secret")
}

/// The `[queue]` section of a process whose broker is behind `proxy`.
fn queue_section(queue: &QueueConfig, proxy: &TcpProxy) -> String {
    format!(
        r#"
[queue]
url = "{url}"
prefix = "{prefix}"
partitions = {partitions}
heartbeat = "5s"
publish_timeout = "3s"
connect_timeout = "3s"
"#,
        url = proxy.amqp_url(),
        prefix = queue.prefix,
        partitions = queue.partitions,
    )
}

fn ingress_config(
    queue: &QueueConfig,
    broker: &TcpProxy,
    listen: SocketAddr,
    users: &[String],
) -> String {
    let echo_users: Vec<String> = users.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"
[ingress]
listen = "{listen}"
secrets = ["{SECRET}"]
echo_users = [{echo}]
shutdown_grace = "5s"
{queue}
"#,
        echo = echo_users.join(", "),
        queue = queue_section(queue, broker),
    )
}

fn worker_config(
    queue: &QueueConfig,
    broker: &TcpProxy,
    sim_link: &TcpProxy,
    user: &str,
    options: &Options,
) -> String {
    let servicenow = match options.oauth_token_ttl {
        None => {
            format!("auth = \"basic\"\nusername = \"{user}\"\npassword = \"{WORKER_PASSWORD}\"\n")
        }
        Some(_) => format!(
            "auth = \"oauth\"\ngrant = \"client_credentials\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n",
            client_id(user),
            client_secret(user)
        ),
    };
    // With client credentials nowpilot cannot know its own user name from the connection.
    let integration_user = match options.oauth_token_ttl {
        Some(_) => format!("integration_user = \"{user}\"\n"),
        None => String::new(),
    };
    format!(
        r#"
[servicenow]
instance_url = "http://{sim}"
timeout = "10s"
{servicenow}
{queue}
[worker]
admin_listen = "127.0.0.1:0"
member_id = "{user}"
membership_heartbeat = "500ms"
member_timeout = "2s"
{integration_user}{section}
{ACK_PLAN}
"#,
        sim = sim_link.addr(),
        queue = queue_section(queue, broker),
        section = options.worker_section,
    )
}

/// Creates the load: new priority-2 incidents, as a person, each firing one callback.
#[derive(Clone)]
pub(crate) struct Load {
    sim: Simulator,
}

impl Load {
    /// Creates `count` incidents, `per_second` of them per second; returns their sys_ids.
    pub(crate) async fn create(
        self,
        tag: &'static str,
        count: usize,
        per_second: f64,
    ) -> Vec<String> {
        let begun = Instant::now();
        let mut sys_ids = Vec::with_capacity(count);
        for i in 0..count {
            let due = begun + Duration::from_secs_f64(i as f64 / per_second);
            tokio::time::sleep_until(due).await;
            let created = self
                .sim
                .insert_as(CALLER, "incident", p2_incident(&format!("{tag} {i}")))
                .expect("insert");
            sys_ids.push(created.value_or_empty("sys_id").to_owned());
        }
        sys_ids
    }
}
