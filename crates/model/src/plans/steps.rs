//! Investigation steps: what an `investigate` action gathers before it writes its findings.
//!
//! Each step's result lands in the CEL variable `findings` under a fixed path, so action
//! conditions can use it: `findings.related` (the one `related` step), `findings.probe.<name>`,
//! `findings.prometheus.<name>`, `findings.runbook.<name>`. Every URL here comes from the config
//! and must be on the worker's `allowed_hosts`; nothing in an incident can choose a host.

use std::time::Duration;

use serde::Deserialize;

/// A comparison for a Prometheus threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Comparison {
    /// `>`
    #[serde(rename = ">")]
    Greater,
    /// `>=`
    #[serde(rename = ">=")]
    GreaterOrEqual,
    /// `<`
    #[serde(rename = "<")]
    Less,
    /// `<=`
    #[serde(rename = "<=")]
    LessOrEqual,
    /// `==`
    #[serde(rename = "==")]
    Equal,
    /// `!=`
    #[serde(rename = "!=")]
    NotEqual,
}

impl Comparison {
    /// Applies the comparison.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Greater => value > threshold,
            Comparison::GreaterOrEqual => value >= threshold,
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
            Comparison::Equal => value == threshold,
            Comparison::NotEqual => value != threshold,
        }
    }

    /// The operator's symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Equal => "==",
            Comparison::NotEqual => "!=",
        }
    }
}

/// The step kinds, as spelled in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKindName {
    /// Related records: the configuration item, change requests on it in the last
    /// `change_window`, other open incidents on it, parent and child incidents, and the latest
    /// `discussion_entries` journal entries.
    Related,
    /// An HTTP probe: `ok` when the status matches (and the latency is under `max_latency`).
    HttpProbe,
    /// A Prometheus instant query compared with a threshold: `ok` when `value <op> threshold`.
    Prometheus,
    /// A runbook webhook: a signed POST of the incident context to automation (Rundeck, AWX,
    /// a CI pipeline), then an optional verification probe.
    Runbook,
}

impl StepKindName {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKindName::Related => "related",
            StepKindName::HttpProbe => "http_probe",
            StepKindName::Prometheus => "prometheus",
            StepKindName::Runbook => "runbook",
        }
    }
}

/// One `[[plans.steps]]` entry as written in the config. Which keys apply depends on `kind`;
/// a key that does not apply is an error rather than silently ignored. (One flat table rather
/// than a tagged enum, so an error names the exact key: `steps[0].timeout`, not `steps[0]`.)
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// `related`, `http_probe`, `prometheus` or `runbook`.
    pub kind: StepKindName,
    /// Step name: `findings.probe.<name>`, `findings.prometheus.<name>`,
    /// `findings.runbook.<name>` (required for those kinds; `related` by default).
    #[serde(default)]
    pub name: Option<String>,
    /// Step timeout (default `10s`; `30s` for a runbook).
    #[serde(default, with = "crate::duration::serde_opt")]
    pub timeout: Option<Duration>,
    /// related: how far back to look for changes on the CI (default `24h`).
    #[serde(default, with = "crate::duration::serde_opt")]
    pub change_window: Option<Duration>,
    /// related: how many recent journal entries to include (default 5).
    #[serde(default)]
    pub discussion_entries: Option<usize>,
    /// http_probe, runbook: the URL (host must be in `[worker] allowed_hosts`).
    #[serde(default)]
    pub url: Option<String>,
    /// http_probe: `GET` (default), `HEAD` or `POST`.
    #[serde(default)]
    pub method: Option<String>,
    /// http_probe: the expected status (default 200).
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// http_probe: slower than this counts as not ok.
    #[serde(default, with = "crate::duration::serde_opt")]
    pub max_latency: Option<Duration>,
    /// prometheus: PromQL returning one sample (the first is used).
    #[serde(default)]
    pub query: Option<String>,
    /// prometheus: `>`, `>=`, `<`, `<=`, `==`, `!=`.
    #[serde(default)]
    pub op: Option<Comparison>,
    /// prometheus: the threshold.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// prometheus: overrides `[worker] prometheus_url`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// runbook: a probe run after the runbook to verify it worked.
    #[serde(default)]
    pub verify: Option<VerifyConfig>,
}

/// A runbook's verification probe.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// The URL to probe (host must be allowed).
    pub url: String,
    /// The expected status (default 200).
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// Wait this long after the runbook answered before probing (default `0s`).
    #[serde(default, with = "crate::duration::serde_opt")]
    pub delay: Option<Duration>,
}

/// A validated step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique within the plan.
    pub name: String,
    /// What it does.
    pub kind: StepKind,
    /// Its time limit.
    pub timeout: Duration,
}

/// What a validated step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Related records.
    Related {
        /// Change lookback.
        change_window: Duration,
        /// Journal entries to include.
        discussion_entries: usize,
    },
    /// HTTP probe.
    HttpProbe {
        /// URL.
        url: String,
        /// Method.
        method: String,
        /// Expected status.
        expect_status: u16,
        /// Latency bound.
        max_latency: Option<Duration>,
    },
    /// Prometheus threshold.
    Prometheus {
        /// PromQL.
        query: String,
        /// Comparison.
        op: Comparison,
        /// Threshold.
        threshold: f64,
        /// Base URL override.
        base_url: Option<String>,
    },
    /// Runbook webhook.
    Runbook {
        /// URL.
        url: String,
        /// Verification probe.
        verify: Option<VerifyConfig>,
    },
}

impl Step {
    /// The `related` step with defaults.
    pub fn default_related() -> Step {
        Step {
            name: "related".into(),
            kind: StepKind::Related {
                change_window: Duration::from_secs(24 * 3600),
                discussion_entries: 5,
            },
            timeout: Duration::from_secs(10),
        }
    }

    /// Validates a config entry; errors are `(".key", reason)`.
    pub fn from_config(c: &StepConfig) -> Result<Step, (String, String)> {
        use StepKindName as K;
        let kind_name = c.kind.as_str();
        let allowed: &[&str] = match c.kind {
            K::Related => &["change_window", "discussion_entries"],
            K::HttpProbe => &["url", "method", "expect_status", "max_latency"],
            K::Prometheus => &["query", "op", "threshold", "base_url"],
            K::Runbook => &["url", "verify"],
        };
        let present = [
            ("change_window", c.change_window.is_some()),
            ("discussion_entries", c.discussion_entries.is_some()),
            ("url", c.url.is_some()),
            ("method", c.method.is_some()),
            ("expect_status", c.expect_status.is_some()),
            ("max_latency", c.max_latency.is_some()),
            ("query", c.query.is_some()),
            ("op", c.op.is_some()),
            ("threshold", c.threshold.is_some()),
            ("base_url", c.base_url.is_some()),
            ("verify", c.verify.is_some()),
        ];
        for (key, set) in present {
            if set && !allowed.contains(&key) {
                return Err((
                    format!(".{key}"),
                    format!("does not apply to a `{kind_name}` step"),
                ));
            }
        }
        let needs = |key: &str| {
            (
                format!(".{key}"),
                format!("a `{kind_name}` step needs `{key}`"),
            )
        };
        let name_ok = |name: Option<&str>| -> Result<String, (String, String)> {
            let name = match (name, c.kind) {
                (Some(name), _) => name,
                (None, K::Related) => "related",
                (None, _) => return Err(needs("name")),
            };
            if super::valid_name(name) && !name.contains('.') {
                Ok(name.to_owned())
            } else {
                Err((
                    ".name".into(),
                    "must be 1-64 letters, digits, '-' or '_' (it becomes findings.<kind>.<name>)"
                        .into(),
                ))
            }
        };
        let name = name_ok(c.name.as_deref())?;
        let ten = Duration::from_secs(10);
        let step = match c.kind {
            K::Related => Step {
                name,
                kind: StepKind::Related {
                    change_window: c.change_window.unwrap_or(Duration::from_secs(24 * 3600)),
                    discussion_entries: c.discussion_entries.unwrap_or(5).min(100),
                },
                timeout: c.timeout.unwrap_or(ten),
            },
            K::HttpProbe => {
                let url = c.url.as_ref().ok_or_else(|| needs("url"))?;
                check_url(url, ".url")?;
                let method = c.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
                if !matches!(method.as_str(), "GET" | "HEAD" | "POST") {
                    return Err((".method".into(), "must be GET, HEAD or POST".into()));
                }
                Step {
                    name,
                    kind: StepKind::HttpProbe {
                        url: url.clone(),
                        method,
                        expect_status: status(c.expect_status, ".expect_status")?,
                        max_latency: c.max_latency,
                    },
                    timeout: c.timeout.unwrap_or(ten),
                }
            }
            K::Prometheus => {
                let query = c.query.as_ref().ok_or_else(|| needs("query"))?;
                let op = c.op.ok_or_else(|| needs("op"))?;
                let threshold = c.threshold.ok_or_else(|| needs("threshold"))?;
                if query.trim().is_empty() {
                    return Err((".query".into(), "must not be empty".into()));
                }
                if !threshold.is_finite() {
                    return Err((".threshold".into(), "must be a finite number".into()));
                }
                if let Some(u) = &c.base_url {
                    check_url(u, ".base_url")?;
                }
                Step {
                    name,
                    kind: StepKind::Prometheus {
                        query: query.clone(),
                        op,
                        threshold,
                        base_url: c.base_url.clone(),
                    },
                    timeout: c.timeout.unwrap_or(ten),
                }
            }
            K::Runbook => {
                let url = c.url.as_ref().ok_or_else(|| needs("url"))?;
                check_url(url, ".url")?;
                if let Some(v) = &c.verify {
                    check_url(&v.url, ".verify.url")?;
                    status(v.expect_status, ".verify.expect_status")?;
                }
                Step {
                    name,
                    kind: StepKind::Runbook {
                        url: url.clone(),
                        verify: c.verify.clone(),
                    },
                    timeout: c.timeout.unwrap_or(Duration::from_secs(30)),
                }
            }
        };
        if step.timeout.is_zero() {
            return Err((".timeout".into(), "must be longer than zero".into()));
        }
        Ok(step)
    }

    /// Every URL this step contacts (for the allow-list check at load).
    pub fn urls(&self) -> Vec<(&'static str, &str)> {
        match &self.kind {
            StepKind::Related { .. } => vec![],
            StepKind::HttpProbe { url, .. } => vec![("url", url)],
            StepKind::Prometheus { base_url, .. } => {
                base_url.iter().map(|u| ("base_url", u.as_str())).collect()
            }
            StepKind::Runbook { url, verify, .. } => {
                let mut v = vec![("url", url.as_str())];
                if let Some(verify) = verify {
                    v.push(("verify.url", verify.url.as_str()));
                }
                v
            }
        }
    }

    /// The findings path of this step's result (`probe.checkout`, `related`, ...).
    pub fn findings_path(&self) -> String {
        match &self.kind {
            StepKind::Related { .. } => "related".into(),
            StepKind::HttpProbe { .. } => format!("probe.{}", self.name),
            StepKind::Prometheus { .. } => format!("prometheus.{}", self.name),
            StepKind::Runbook { .. } => format!("runbook.{}", self.name),
        }
    }
}

fn status(s: Option<u16>, key: &str) -> Result<u16, (String, String)> {
    match s.unwrap_or(200) {
        s @ 100..=599 => Ok(s),
        _ => Err((
            key.into(),
            "must be an HTTP status between 100 and 599".into(),
        )),
    }
}

/// The host (lowercased, without port) of an `http(s)://` URL, or an explanation.
pub fn url_host(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| "must start with https:// or http://".to_owned())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not contain credentials (user@host)".into());
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    Ok(host.to_ascii_lowercase())
}

fn check_url(url: &str, key: &str) -> Result<(), (String, String)> {
    url_host(url).map(drop).map_err(|r| (key.to_owned(), r))
}
