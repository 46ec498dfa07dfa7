//! Tests of the `[worker]` section.

use std::time::Duration;

use nowpilot_model::plans::{PlanConfig, PlanSet};

use super::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn worker(text: &str) -> WorkerConfig {
    toml::from_str(text).unwrap()
}

fn plans(text: &str) -> PlanSet {
    #[derive(Deserialize)]
    struct File {
        plans: Vec<PlanConfig>,
    }
    let file: File = toml::from_str(text).unwrap();
    PlanSet::new(&file.plans, false).unwrap()
}

fn error(config: &WorkerConfig, plans: &PlanSet) -> WorkerConfigError {
    config.validate(plans).unwrap_err()
}

#[test]
fn defaults() {
    let c = worker("");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9091");
    assert_eq!(c.concurrency, 16);
    assert_eq!(c.proposal_ttl, Duration::from_secs(86_400));
    assert_eq!(
        c.retry_delays,
        [5, 30, 300, 1800].map(Duration::from_secs).to_vec()
    );
    assert!(!c.quickstart);
    let settings = c.validate(&PlanSet::default()).unwrap();
    assert_eq!(settings.client_options().max_in_flight, Some(16));
    assert!(settings.runbook_key().is_none());
}

#[test]
fn full_section_parses() {
    let c = worker(
        r#"
        admin_listen = "0.0.0.0:9999"
        concurrency = 4
        quickstart = true
        allowed_hosts = ["status.example.com", "*.corp.example", "127.0.0.1"]
        prometheus_url = "http://prom.corp.example:9090"
        approvers = ["Maya.Patel", "group:Platform SRE"]
        proposal_ttl = "2h"
        runbook_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        retry_delays = ["1s", "1m 30s"]
        integration_user = "nowpilot.integration"
        "#,
    );
    let s = c.validate(&PlanSet::default()).unwrap();
    assert_eq!(s.approvers().users, ["maya.patel"]);
    assert_eq!(s.approvers().groups, ["Platform SRE"]);
    assert_eq!(
        s.approvers().describe(),
        "maya.patel, members of Platform SRE"
    );
    assert_eq!(
        s.config().retry_delays,
        [Duration::from_secs(1), Duration::from_secs(90)]
    );
    assert!(s.allowed_hosts().allows("a.corp.example"));
    assert!(s.runbook_key().is_some());
    assert_eq!(s.client_options().max_in_flight, Some(4));
}

#[test]
fn unknown_keys_and_bad_durations_are_refused_by_name() {
    let e = toml::from_str::<WorkerConfig>("prefetch = 3").unwrap_err();
    assert!(e.to_string().contains("prefetch"), "{e}");
    let e = toml::from_str::<WorkerConfig>("retry_delays = [\"5s\", \"soon\"]").unwrap_err();
    assert!(e.to_string().contains("retry_delays[1]"), "{e}");
}

#[test]
fn keys_are_named_in_errors() {
    let empty = PlanSet::default();
    let cases = [
        (
            "allowed_hosts = [\"a.com\", \"b.com\", \"https://c.com\"]",
            "worker.allowed_hosts[2]",
        ),
        ("concurrency = 0", "worker.concurrency"),
        (
            "prometheus_url = \"http://prom.example:9090\"",
            "worker.prometheus_url",
        ),
        ("approvers = [\"maya\", \"group:\"]", "worker.approvers[1]"),
        ("approvers = [\"Maya Patel\"]", "worker.approvers[0]"),
        ("proposal_ttl = \"0s\"", "worker.proposal_ttl"),
        ("integration_user = \" \"", "worker.integration_user"),
        (
            "runbook_secret = \"not-a-secret-value\"",
            "worker.runbook_secret",
        ),
        // 15 bytes after whsec_: too short.
        (
            "runbook_secret = \"whsec_c2hvcnQtYnV0LXZhbGlk\"",
            "worker.runbook_secret",
        ),
    ];
    for (text, key) in cases {
        let e = error(&worker(text), &empty);
        assert_eq!(e.key, key, "{text}: {e}");
    }
}

#[test]
fn secrets_never_show() {
    let c = worker("runbook_secret = \"whsec_!!!hunter2-not-base64\"");
    let e = error(&c, &PlanSet::default());
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let c = worker(&format!("runbook_secret = \"{SECRET}\""));
    let shown = format!("{c:?} {:?}", c.validate(&PlanSet::default()).unwrap());
    assert!(
        !shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "{shown}"
    );
    assert!(shown.contains("REDACTED"));
}

#[test]
fn secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runbook.secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let mut c = WorkerConfig {
        runbook_secret_file: Some(path.clone()),
        ..WorkerConfig::default()
    };
    assert!(
        c.validate(&PlanSet::default())
            .unwrap()
            .runbook_key()
            .is_some()
    );
    c.runbook_secret = Some(SECRET.into());
    assert_eq!(
        error(&c, &PlanSet::default()).key,
        "worker.runbook_secret_file"
    );
    c.runbook_secret = None;
    c.runbook_secret_file = Some(dir.path().join("missing"));
    assert_eq!(
        error(&c, &PlanSet::default()).key,
        "worker.runbook_secret_file"
    );
}

#[test]
fn plan_urls_must_be_allowed() {
    let set = plans(
        r#"
        [[plans]]
        name = "checkout"
        autonomy = "autonomous"
        [[plans.steps]]
        kind = "http_probe"
        name = "health"
        url = "https://status.example.com/health"
        [[plans.steps]]
        kind = "runbook"
        name = "restart"
        url = "https://rundeck.example.com/hook"
        verify = { url = "https://evil.example.net/verify" }
        [[plans.actions]]
        kind = "investigate"
        "#,
    );
    let mut c = worker(&format!(
        "allowed_hosts = [\"status.example.com\"]\nrunbook_secret = \"{SECRET}\""
    ));
    assert_eq!(error(&c, &set).key, "plans[0].steps[1].url");
    c.allowed_hosts.push("rundeck.example.com".into());
    let e = error(&c, &set);
    assert_eq!(e.key, "plans[0].steps[1].verify.url");
    assert!(e.reason.contains("evil.example.net"), "{e}");
    c.allowed_hosts.push("*.example.net".into());
    c.validate(&set).unwrap();
    c.runbook_secret = None;
    assert_eq!(error(&c, &set).key, "plans[0].steps[1]");
}

#[test]
fn prometheus_needs_a_server() {
    let set = plans(
        r#"
        [[plans]]
        name = "p"
        autonomy = "autonomous"
        [[plans.steps]]
        kind = "prometheus"
        name = "errors"
        query = "sum(rate(errors[5m]))"
        op = ">"
        threshold = 0.5
        [[plans.actions]]
        kind = "investigate"
        "#,
    );
    let mut c = worker("allowed_hosts = [\"prom.example.com\"]");
    assert_eq!(error(&c, &set).key, "plans[0].steps[0].base_url");
    c.prometheus_url = Some("http://prom.example.com:9090".into());
    c.validate(&set).unwrap();
}

#[test]
fn review_needs_approvers_and_findings_need_an_investigation() {
    let review = plans(
        r#"
        [[plans]]
        name = "r"
        [[plans.actions]]
        kind = "resolve"
        close_code = "Solution provided"
        close_notes = "Fixed."
        "#,
    );
    let e = error(&worker(""), &review);
    assert_eq!(e.key, "worker.approvers");
    worker("approvers = [\"maya.patel\"]")
        .validate(&review)
        .unwrap();

    let findings = plans(
        r#"
        [[plans]]
        name = "f"
        autonomy = "autonomous"
        [[plans.actions]]
        kind = "work_note"
        text = "hello"
        when = "findings.related.ok"
        "#,
    );
    assert_eq!(
        error(&worker(""), &findings).key,
        "plans[0].actions[0].when"
    );
}

#[test]
fn poller_and_membership_keys() {
    let none = PlanSet::default();
    let c = worker("");
    assert!(c.poller);
    assert_eq!(c.poll_interval, Duration::from_secs(60));
    assert_eq!(c.poll_window, Duration::from_secs(600));
    assert_eq!(c.membership_heartbeat, Duration::from_secs(1));
    assert_eq!(c.member_timeout, Duration::from_secs(3));
    let s = c.validate(&none).unwrap();
    let ownership = s.ownership_settings();
    assert!(!ownership.member_id.is_empty());
    assert_eq!(
        ownership,
        s.ownership_settings(),
        "one id per process, however often it is asked"
    );
    assert_eq!(ownership.takeover_grace, Duration::from_secs(6));

    let c = worker(
        r#"
        poller = false
        poll_interval = "5s"
        poll_window = "1m"
        member_id = "pod-7"
        membership_heartbeat = "500ms"
        member_timeout = "2s"
        "#,
    );
    let s = c.validate(&none).unwrap();
    assert!(!s.config().poller);
    let ownership = s.ownership_settings();
    assert_eq!(ownership.member_id, "pod-7");
    assert_eq!(ownership.heartbeat_interval, Duration::from_millis(500));
    assert_eq!(ownership.member_timeout, Duration::from_secs(2));

    for (text, key) in [
        ("poll_interval = \"500ms\"", "worker.poll_interval"),
        (
            "poll_interval = \"10m\"\npoll_window = \"10m\"",
            "worker.poll_window",
        ),
        ("poll_window = \"30d\"", "worker.poll_window"),
        ("member_id = \"  \"", "worker.member_id"),
        (
            "membership_heartbeat = \"10ms\"",
            "worker.membership_heartbeat",
        ),
        (
            "membership_heartbeat = \"2s\"\nmember_timeout = \"3s\"",
            "worker.member_timeout",
        ),
    ] {
        assert_eq!(error(&worker(text), &none).key, key, "{text}");
    }
    let debug = format!("{:?}", worker("member_id = \"pod-7\""));
    assert!(
        debug.contains("poll_window") && debug.contains("pod-7"),
        "{debug}"
    );
}
