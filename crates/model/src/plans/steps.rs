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

/// One `[[plans.steps]]` entry as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepConfig {
    /// Related records: the configuration item, change requests on it in the last
    /// `change_window`, other open incidents on it, parent and child incidents, and the latest
    /// `discussion_entries` journal entries.
    Related {
        /// Step name (default `related`).
        #[serde(default)]
        name: Option<String>,
        /// How far back to look for changes on the CI (default `24h`).
        #[serde(default, with = "crate::duration::serde_opt")]
        change_window: Option<Duration>,
        /// How many recent journal entries to include (default 5).
        #[serde(default)]
        discussion_entries: Option<usize>,
        /// Step timeout (default `10s`).
        #[serde(default, with = "crate::duration::serde_opt")]
        timeout: Option<Duration>,
    },
    /// An HTTP probe: `ok` when the status matches (and the latency is under `max_latency`).
    HttpProbe {
        /// Step name, used as `findings.probe.<name>`.
        name: String,
        /// The URL (host must be in `[worker] allowed_hosts`).
        url: String,
        /// `GET` (default), `HEAD` or `POST`.
        #[serde(default)]
        method: Option<String>,
        /// The expected status (default 200).
        #[serde(default)]
        expect_status: Option<u16>,
        /// Slower than this counts as not ok.
        #[serde(default, with = "crate::duration::serde_opt")]
        max_latency: Option<Duration>,
        /// Step timeout (default `10s`).
        #[serde(default, with = "crate::duration::serde_opt")]
        timeout: Option<Duration>,
    },
    /// A Prometheus instant query compared with a threshold: `ok` when `value <op> threshold`.
    Prometheus {
        /// Step name, used as `findings.prometheus.<name>`.
        name: String,
        /// PromQL returning one sample (the first is used).
        query: String,
        /// `>`, `>=`, `<`, `<=`, `==`, `!=`.
        op: Comparison,
        /// The threshold.
        threshold: f64,
        /// Overrides `[worker] prometheus_url`.
        #[serde(default)]
        base_url: Option<String>,
        /// Step timeout (default `10s`).
        #[serde(default, with = "crate::duration::serde_opt")]
        timeout: Option<Duration>,
    },
    /// A runbook webhook: a signed POST of the incident context to automation (Rundeck, AWX,
    /// a CI pipeline), then an optional verification probe.
    Runbook {
        /// Step name, used as `findings.runbook.<name>`.
        name: String,
        /// The automation URL (host must be in `[worker] allowed_hosts`).
        url: String,
        /// A probe run after the runbook to verify it worked.
        #[serde(default)]
        verify: Option<VerifyConfig>,
        /// Step timeout (default `30s`).
        #[serde(default, with = "crate::duration::serde_opt")]
        timeout: Option<Duration>,
    },
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
        let ten = Duration::from_secs(10);
        let name_ok = |name: &str| -> Result<String, (String, String)> {
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
        let step = match c {
            StepConfig::Related {
                name,
                change_window,
                discussion_entries,
                timeout,
            } => Step {
                name: name_ok(name.as_deref().unwrap_or("related"))?,
                kind: StepKind::Related {
                    change_window: change_window.unwrap_or(Duration::from_secs(24 * 3600)),
                    discussion_entries: discussion_entries.unwrap_or(5).min(100),
                },
                timeout: timeout.unwrap_or(ten),
            },
            StepConfig::HttpProbe {
                name,
                url,
                method,
                expect_status,
                max_latency,
                timeout,
            } => {
                check_url(url, ".url")?;
                let method = method.as_deref().unwrap_or("GET").to_ascii_uppercase();
                if !matches!(method.as_str(), "GET" | "HEAD" | "POST") {
                    return Err((".method".into(), "must be GET, HEAD or POST".into()));
                }
                Step {
                    name: name_ok(name)?,
                    kind: StepKind::HttpProbe {
                        url: url.clone(),
                        method,
                        expect_status: status(*expect_status, ".expect_status")?,
                        max_latency: *max_latency,
                    },
                    timeout: timeout.unwrap_or(ten),
                }
            }
            StepConfig::Prometheus {
                name,
                query,
                op,
                threshold,
                base_url,
                timeout,
            } => {
                if query.trim().is_empty() {
                    return Err((".query".into(), "must not be empty".into()));
                }
                if !threshold.is_finite() {
                    return Err((".threshold".into(), "must be a finite number".into()));
                }
                if let Some(u) = base_url {
                    check_url(u, ".base_url")?;
                }
                Step {
                    name: name_ok(name)?,
                    kind: StepKind::Prometheus {
                        query: query.clone(),
                        op: *op,
                        threshold: *threshold,
                        base_url: base_url.clone(),
                    },
                    timeout: timeout.unwrap_or(ten),
                }
            }
            StepConfig::Runbook {
                name,
                url,
                verify,
                timeout,
            } => {
                check_url(url, ".url")?;
                if let Some(v) = verify {
                    check_url(&v.url, ".verify.url")?;
                    status(v.expect_status, ".verify.expect_status")?;
                }
                Step {
                    name: name_ok(name)?,
                    kind: StepKind::Runbook {
                        url: url.clone(),
                        verify: verify.clone(),
                    },
                    timeout: timeout.unwrap_or(Duration::from_secs(30)),
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
