//! `nowpilot demo`: nowpilot doing its whole job in one command, with nothing installed.
//!
//! It starts a ServiceNow simulator seeded with a demo estate (or uses a running one with
//! `--simulator`), small services on loopback standing in for what nowpilot probes and the
//! runbook it calls, and nowpilot itself as `nowpilot run` would (memory queue, status page),
//! with three plans: one that runs the payments runbook and proposes the resolution for review,
//! one that investigates checkout incidents, and the built-in Quickstart plan. Then people make
//! changes through the Table API, and every change takes the production path: the simulator's
//! business rule posts a signed callback to the ingress, which queues it for the worker, which
//! acts through the Table API. The timeline shows each arrival, the plan that matched and why,
//! and what each action did. At the end the records are read back to check every step.
//!
//! Modules: `instance` (the Table API as people and as the integration user), `services` (the
//! probed endpoints and the signed runbook), `scenario` (the steps and the verdict), `timeline`
//! (the live output).

mod instance;
mod scenario;
mod services;
mod timeline;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use clap::Args;
use nowpilot_admin::ConnectionManager;
use nowpilot_ingress::IngressConfig;
use nowpilot_model::plans::{PlanConfig, PlanSet};
use nowpilot_queue::{QueueConfig, QueueKind};
use nowpilot_servicenow::ServiceNowConfig;
use nowpilot_snowsim::{SimConfig, SimUser, Simulator};
use nowpilot_worker::WorkerConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::run::{Stack, StackConfig, wiring::EventObserver};
use super::{EXIT_FAILURE, fail, report, shutdown_signal};
use crate::{Exit, output::Style, telemetry};

/// nowpilot's integration user in the demo estate.
pub const INTEGRATION: &str = "nowpilot.integration";
/// The SRE lead: opens incidents and approves proposals.
pub const APPROVER: &str = "maya.patel";
/// A service desk analyst.
pub const CALLER: &str = "carlos.mendes";
/// The plan that investigates checkout incidents.
pub const CHECKOUT_PLAN: &str = "checkout-investigation";
/// The plan that runs the payments runbook and proposes the resolution.
pub const PAYMENTS_PLAN: &str = "payments-recovery";
/// The close code of the resolution.
pub const RESOLVE_CLOSE_CODE: &str = "Solution provided";

/// The demo's plans; `{services}` is the base URL of the demo services.
const PLANS: &str = r#"
# Priority-1 payments incidents: acknowledge, look around, run the restart runbook and check
# that payments answers again; then propose resolving, for a person to approve.
[[plans]]
name = "payments-recovery"
autonomy = "autonomous"
[plans.intake]
priorities = [1]
configuration_items = ["payments-api"]
[[plans.steps]]
kind = "related"
[[plans.steps]]
kind = "http_probe"
name = "payments_health"
url = "{services}/payments/health"
[[plans.steps]]
kind = "runbook"
name = "restart_payments"
url = "{services}/runbooks/restart-payments"
[plans.steps.verify]
url = "{services}/payments/health"
[[plans.actions]]
kind = "acknowledge"
note = "Payments is down; nowpilot runs the restart runbook."
[[plans.actions]]
kind = "investigate"
[[plans.actions]]
kind = "resolve"
autonomy = "review"
when = "findings.runbook.restart_payments.verified == true"
close_code = "Solution provided"
close_notes = "The restart-payments runbook restarted the service and the health check passes again."

# Priority-1 and -2 incidents on checkout-api: acknowledge and investigate (recent changes on
# the CI, the health endpoint), on its own.
[[plans]]
name = "checkout-investigation"
autonomy = "autonomous"
[plans.intake]
priorities = [1, 2]
configuration_items = ["checkout-api"]
[[plans.steps]]
kind = "related"
[[plans.steps]]
kind = "http_probe"
name = "checkout_health"
url = "{services}/checkout/health"
[[plans.actions]]
kind = "acknowledge"
[[plans.actions]]
kind = "investigate"
"#;

/// `nowpilot demo` flags.
#[derive(Args)]
pub struct DemoArgs {
    /// End after the scenario instead of staying up; the exit code is 0 only if every step
    /// happened (checked in the instance's records).
    #[arg(long)]
    exit: bool,
    /// Where the embedded simulator listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where the status page (and /healthz, /metrics) listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    status_listen: SocketAddr,
    /// Use this running simulator (`nowpilot sim --seed-demo ...`) instead of an embedded one.
    #[arg(long, value_name = "URL")]
    simulator: Option<String>,
    /// With --simulator: a user the demo signs in as, NAME:PASSWORD; give one each for
    /// nowpilot.integration (role admin), maya.patel and carlos.mendes.
    #[arg(
        long = "sim-user",
        value_name = "NAME:PASSWORD",
        requires = "simulator"
    )]
    sim_users: Vec<String>,
    /// How long each step may take before the demo says which effect did not happen.
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = humantime::parse_duration)]
    step_timeout: Duration,
}

impl std::fmt::Debug for DemoArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .sim_users
            .iter()
            .map(|u| u.split(':').next().unwrap_or_default())
            .collect();
        f.debug_struct("DemoArgs")
            .field("exit", &self.exit)
            .field("listen", &self.listen)
            .field("status_listen", &self.status_listen)
            .field("simulator", &self.simulator)
            .field("sim_users", &names)
            .field("step_timeout", &self.step_timeout)
            .finish()
    }
}

fn random_secret(prefix: &str) -> SecretString {
    let bytes: [u8; 24] = rand::random();
    SecretString::from(format!(
        "{prefix}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The instance to play on: an embedded simulator, or the one `--simulator` names.
async fn instance(
    args: &DemoArgs,
    shutdown: &CancellationToken,
) -> Result<(instance::Instance, &'static str), Exit> {
    let mut users: HashMap<String, SecretString> = HashMap::new();
    let (url, kind) = match &args.simulator {
        Some(url) => {
            for entry in &args.sim_users {
                let (name, password) = entry
                    .split_once(':')
                    .ok_or_else(|| fail(2, "demo: --sim-user takes NAME:PASSWORD"))?;
                users.insert(name.to_owned(), SecretString::from(password.to_owned()));
            }
            for needed in [INTEGRATION, APPROVER, CALLER] {
                if !users.contains_key(needed) {
                    return Err(fail(
                        2,
                        format!("demo: --simulator needs --sim-user {needed}:PASSWORD"),
                    ));
                }
            }
            (url.trim_end_matches('/').to_owned(), "running")
        }
        None => {
            for name in [INTEGRATION, APPROVER, CALLER] {
                users.insert(name.to_owned(), random_secret("demo-"));
            }
            let mut config = SimConfig {
                seed_demo: true,
                users: users
                    .iter()
                    .map(|(n, p)| SimUser::new(n.clone(), p.expose_secret().to_owned()))
                    .collect(),
                instance_name: "demo".to_owned(),
                ..SimConfig::default()
            };
            // Admin, so the structured journal (who wrote what) is readable.
            config
                .user_roles
                .insert(INTEGRATION.to_owned(), vec!["admin".to_owned()]);
            let listener = TcpListener::bind(args.listen).await.map_err(|e| {
                fail(
                    EXIT_FAILURE,
                    format!("demo: cannot listen on {}: {e}", args.listen),
                )
            })?;
            let addr = listener
                .local_addr()
                .map_err(|e| fail(EXIT_FAILURE, format!("demo: {e}")))?;
            tokio::spawn(nowpilot_snowsim::run(
                Simulator::new(config),
                listener,
                shutdown.clone(),
            ));
            (format!("http://{addr}"), "embedded")
        }
    };
    let instance = instance::Instance::new(&url, users, INTEGRATION)
        .map_err(|e| fail(EXIT_FAILURE, format!("demo: {e}")))?;
    Ok((instance, kind))
}

#[derive(Deserialize)]
struct PlansFile {
    plans: Vec<PlanConfig>,
}

/// The demo plans (plus Quickstart) against the services at `services`.
fn plans(services: &str) -> Result<PlanSet, String> {
    let text = PLANS.replace("{services}", services);
    let file: PlansFile = toml::from_str(&text).map_err(|e| format!("demo plans: {e}"))?;
    PlanSet::new(&file.plans, true).map_err(|e| format!("demo plans: {e}"))
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<(), Exit> {
    telemetry::init_logging(&telemetry::TelemetryConfig::default(), Some("warn"));
    let style = Style::detect();
    let demo_fail = |e: String| fail(EXIT_FAILURE, format!("demo: {e}"));
    let shutdown = CancellationToken::new();
    let (instance, kind) = instance(&args, &shutdown).await?;
    let runbook_secret = random_secret("whsec_");
    let services = services::start(&runbook_secret, shutdown.clone())
        .await
        .map_err(demo_fail)?;
    println!("{}", style.bold("nowpilot demo"));
    println!("  ServiceNow ({kind} simulator)   {}", instance.url());
    println!(
        "  services it probes and the runbook it calls   {}",
        services.url
    );
    let checkout_ci = instance
        .configuration_item("checkout-api")
        .await
        .map_err(demo_fail)?;
    let payments_ci = instance
        .configuration_item("payments-api")
        .await
        .map_err(demo_fail)?;

    let plans = plans(&services.url).map_err(demo_fail)?;
    let worker = WorkerConfig {
        quickstart: true,
        allowed_hosts: vec!["127.0.0.1".to_owned()],
        approvers: vec![APPROVER.to_owned()],
        runbook_secret: Some(runbook_secret),
        integration_user: Some(INTEGRATION.to_owned()),
        ..WorkerConfig::default()
    }
    .validate(&plans)
    .map_err(|e| demo_fail(e.to_string()))?;
    let webhook_secret = random_secret("whsec_");
    let ingress = IngressConfig {
        secrets: vec![webhook_secret.clone()],
        echo_users: vec![INTEGRATION.to_owned()],
        ..IngressConfig::default()
    }
    .validate()
    .map_err(|e| demo_fail(e.to_string()))?;
    let queue = QueueConfig {
        kind: QueueKind::Memory,
        partitions: 4,
        ..QueueConfig::default()
    };
    let integration_password = instance.password_of(INTEGRATION).map_err(demo_fail)?;
    let mut snow = ServiceNowConfig::basic(instance.url(), INTEGRATION, integration_password);
    snow.timeout = Duration::from_secs(15);
    let workdir = std::env::temp_dir().join(format!("nowpilot-demo-{}", std::process::id()));
    let connection = ConnectionManager::new(
        workdir.join("nowpilot.toml"),
        &workdir,
        Some(snow),
        worker.client_options(),
    );

    println!("\nConnecting as {INTEGRATION} (Basic auth) ...");
    let Some(checked) = connection.check().await else {
        return Err(demo_fail("no connection is configured".to_owned()));
    };
    report::print(&checked, nowpilot_servicenow::AuthKind::Basic, style);
    if let Some(failure) = checked.failure() {
        shutdown.cancel();
        return Err(Exit(report::exit_code(failure)));
    }
    let journal_by_user = checked.checks.iter().any(|c| {
        c.name == nowpilot_servicenow::CheckName::Journal
            && c.status == nowpilot_servicenow::CheckStatus::Passed
    });
    if !journal_by_user {
        shutdown.cancel();
        return Err(demo_fail(format!(
            "{INTEGRATION} cannot read who wrote each work note (sys_journal_field), which approvals and the checks need: give it role admin (nowpilot sim --user-roles {INTEGRATION}=admin)"
        )));
    }

    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let ingress_listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(demo_fail)?;
    let admin_listener = bind(args.status_listen).await.map_err(demo_fail)?;
    let render_metrics = telemetry::install_metrics()
        .map_err(|e| demo_fail(format!("cannot install the metrics recorder: {e}")))?;
    let (arrived_tx, arrived_rx) = mpsc::unbounded_channel();
    let observer: EventObserver = Arc::new(move |event| {
        let _ = arrived_tx.send(event.clone());
    });
    let mut stack = Stack::start(StackConfig {
        role: "demo",
        queue,
        ingress,
        ingress_listener,
        admin_listener,
        admin_token: None,
        connection,
        plans: plans.clone(),
        worker,
        render_metrics,
        on_event: Some(observer),
    })
    .await
    .map_err(demo_fail)?;
    let webhook = format!(
        "http://{}{}",
        stack.ingress_addr,
        nowpilot_ingress::WEBHOOK_PATH
    );
    instance
        .set_webhook(&webhook, &webhook_secret)
        .await
        .map_err(demo_fail)?;
    let status_url = format!("http://{}/", stack.admin_addr);
    println!(
        "\nnowpilot runs in this process: the business rule posts signed callbacks to {webhook}"
    );
    if stack.status_page {
        println!("Status page: {status_url}");
    } else {
        println!(
            "No status page: {} is not a loopback address and the demo sets no admin token.",
            stack.admin_addr
        );
    }

    let timeline_stop = CancellationToken::new();
    let timeline = tokio::spawn(timeline::print(
        style,
        Arc::new(plans),
        arrived_rx,
        stack.activity.subscribe(),
        timeline_stop.clone(),
    ));
    let mut scenario = scenario::Scenario {
        instance,
        services,
        passes: stack.activity.subscribe(),
        seen: HashMap::new(),
        step_timeout: args.step_timeout,
        style,
        checkout_ci,
        payments_ci,
    };
    let mut played = scenario::Played::default();
    let outcome = tokio::select! {
        outcome = scenario.play(&mut played) => outcome,
        reason = stack.failed() => Err(reason),
    };
    if let Err(e) = &outcome {
        println!(
            "\n{}",
            style.red(&style.bold(&format!("The demo stopped: {e}")))
        );
    }
    let checks = scenario.verify(&played).await;
    println!("\n{}", style.bold("What the instance's records say"));
    for check in &checks {
        let mark = if check.ok {
            style.green("✓")
        } else {
            style.red("✗")
        };
        println!("  {mark} {}", check.what);
    }
    let all_ok = outcome.is_ok() && checks.iter().all(|c| c.ok);
    if all_ok {
        println!("\n{}", style.green(&style.bold("Every step happened.")));
    } else {
        println!(
            "\n{}",
            style.red(&style.bold("Some steps did not happen (see above)."))
        );
    }

    if !args.exit {
        println!("\nnowpilot keeps running.");
        if stack.status_page {
            println!("Status page: {status_url}");
        }
        if kind == "running" {
            println!(
                "Create or change incidents at {} and watch them arrive here.",
                scenario.instance.url()
            );
        }
        println!("Ctrl-C ends the demo.");
        tokio::select! {
            () = shutdown_signal() => {}
            reason = stack.failed() => println!("{}", style.red(&reason)),
        }
    }
    stack.shutdown().await;
    timeline_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), timeline).await;
    shutdown.cancel();
    if all_ok {
        Ok(())
    } else {
        Err(Exit(EXIT_FAILURE))
    }
}
