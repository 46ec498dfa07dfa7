//! The simulator side of the worker benchmark: a `nowpilot sim` child process, the incidents
//! created in it, and what its request log says about the calls the worker made.

use std::{collections::BTreeMap, path::Path, process::Stdio, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The person who opens the incidents (a different user than the worker's, as in real life).
const CREATOR: (&str, &str) = ("admin", "admin");
/// The worker's integration user.
pub const INTEGRATION_USER: &str = "nowpilot.integration";
/// How many requests `nowpilot sim` keeps in its log (its default).
pub const REQUEST_LOG_CAPACITY: usize = 100_000;

/// A running `nowpilot sim` process; killed when dropped, so it never outlives the benchmark.
pub struct SimProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The process id, for its CPU time.
    pub pid: u32,
    /// The integration user's password (random per run).
    pub integration_password: String,
    http: reqwest::Client,
}

/// An incident created for the benchmark.
#[derive(Debug, Clone)]
pub struct Created {
    /// Its sys_id.
    pub sys_id: String,
    /// Its number.
    pub number: String,
    /// Its `sys_mod_count` after creation.
    pub version: u64,
}

impl SimProcess {
    /// Starts `nowpilot sim` on a free port with `latency_ms` injected into every Table API
    /// call, and waits for its "listening" line.
    pub async fn start(binary: &Path, latency_ms: u64, pool: usize) -> anyhow::Result<Self> {
        let integration_password = format!("bench-{:016x}", rand::random::<u64>());
        let mut child = Command::new(binary)
            .arg("sim")
            .args(["--listen", "127.0.0.1:0", "--seed-demo"])
            .args(["--latency-ms", &latency_ms.to_string()])
            .args(["--user", &format!("{}:{}", CREATOR.0, CREATOR.1)])
            .args([
                "--user",
                &format!("{INTEGRATION_USER}:{integration_password}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} sim", binary.display()))?;
        let pid = child.id().context("the simulator exited at once")?;
        let base = crate::binary::sim_listening(&mut child).await?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .build()?;
        Ok(SimProcess {
            child,
            base,
            pid,
            integration_password,
            http,
        })
    }

    /// Creates `count` High-priority (impact 2 × urgency 1) incidents through the Table API,
    /// `parallel` at a time, as a person would.
    pub async fn create_incidents(
        &self,
        count: usize,
        parallel: usize,
    ) -> anyhow::Result<Vec<Created>> {
        let url: Arc<str> = format!("{}/api/now/table/incident", self.base).into();
        let parallel = parallel.clamp(1, count.max(1));
        let mut tasks = tokio::task::JoinSet::new();
        for lane in 0..parallel {
            let (http, url) = (self.http.clone(), url.clone());
            tasks.spawn(async move {
                let mut made = Vec::new();
                for i in (lane..count).step_by(parallel) {
                    made.push((i, create_one(&http, &url, i).await?));
                }
                anyhow::Ok(made)
            });
        }
        let mut all = Vec::with_capacity(count);
        while let Some(joined) = tasks.join_next().await {
            all.extend(joined??);
        }
        all.sort_by_key(|(i, _)| *i);
        Ok(all.into_iter().map(|(_, c)| c).collect())
    }

    /// Forgets the request log (so it holds the measured phase only).
    pub async fn clear_request_log(&self) -> anyhow::Result<()> {
        let answer = self
            .http
            .delete(format!("{}/_sim/requests", self.base))
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("DELETE /_sim/requests answered {}", answer.status());
        }
        Ok(())
    }

    /// The Table API calls in the request log, and how many entries the log held.
    pub async fn table_calls(&self) -> anyhow::Result<(Vec<Call>, usize)> {
        let log: Vec<Value> = self
            .http
            .get(format!("{}/_sim/requests", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok((log.iter().filter_map(Call::from_log).collect(), log.len()))
    }

    /// Asks the simulator to stop (SIGTERM), then kills it if it lingers.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn create_one(http: &reqwest::Client, url: &str, i: usize) -> anyhow::Result<Created> {
    let body = json!({
        "short_description": format!("Checkout API p95 latency above 2s (bench {i})"),
        "description": "Synthetic incident for the worker benchmark.",
        "impact": "2",
        "urgency": "1",
        "category": "software",
    });
    let answer = http
        .post(url)
        .basic_auth(CREATOR.0, Some(CREATOR.1))
        .header("accept", "application/json")
        .json(&body)
        .send()
        .await?;
    let status = answer.status();
    let value: Value = answer.json().await?;
    if status.as_u16() != 201 {
        bail!("creating an incident answered {status}: {value}");
    }
    let field = |name: &str| {
        value["result"][name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the created incident has no {name}: {value}"))
    };
    if field("priority")? != "2" {
        bail!(
            "the simulator gave the incident priority {}, not 2",
            field("priority")?
        );
    }
    Ok(Created {
        sys_id: field("sys_id")?,
        number: field("number")?,
        version: field("sys_mod_count")?.parse().unwrap_or(0),
    })
}

/// One Table API call as the simulator logged it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `GET incident/{sys_id}`, `GET sys_journal_field`, `PATCH incident/{sys_id}`, ...
    pub kind: String,
    /// The HTTP status.
    pub status: u16,
    /// Arrival, µs since the simulator started.
    pub start_us: u64,
    /// Answer ready, µs since the simulator started.
    pub end_us: u64,
}

impl Call {
    fn from_log(entry: &Value) -> Option<Call> {
        let path = entry["path"].as_str()?;
        if !path.starts_with("/api/now/") {
            return None;
        }
        let table = entry["table"].as_str().unwrap_or("?");
        let one = if entry["sys_id"].is_string() {
            "/{sys_id}"
        } else {
            ""
        };
        Some(Call {
            kind: format!("{} {table}{one}", entry["method"].as_str().unwrap_or("?")),
            status: u16::try_from(entry["status"].as_u64()?).ok()?,
            start_us: entry["start_us"].as_u64()?,
            end_us: entry["end_us"].as_u64()?,
        })
    }
}

/// What the request log of a measured phase says.
#[derive(Debug, Default)]
pub struct CallStats {
    /// Table API calls.
    pub calls: u64,
    /// Calls per kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Calls answered with a non-2xx status.
    pub failed: u64,
    /// The most calls overlapping in time, as the simulator saw them.
    pub max_in_flight: u64,
    /// Sum of every call's time in the simulator, in seconds (÷ wall time = mean in flight).
    pub busy_seconds: f64,
}

impl CallStats {
    /// Tallies `calls` and sweeps their intervals for the peak overlap.
    pub fn of(calls: &[Call]) -> CallStats {
        let mut stats = CallStats::default();
        // +1 at a start, -1 at an end; at equal times the end goes first, so a call that
        // starts the microsecond another ends does not count as overlapping it.
        let mut edges: Vec<(u64, i64)> = Vec::with_capacity(calls.len() * 2);
        for call in calls {
            stats.calls += 1;
            *stats.by_kind.entry(call.kind.clone()).or_default() += 1;
            if !(200..300).contains(&call.status) {
                stats.failed += 1;
            }
            let end = call.end_us.max(call.start_us);
            stats.busy_seconds += (end - call.start_us) as f64 / 1e6;
            edges.push((call.start_us, 1));
            edges.push((end, -1));
        }
        edges.sort_unstable();
        let mut now: i64 = 0;
        let mut peak: i64 = 0;
        for (_, delta) in edges {
            now += delta;
            peak = peak.max(now);
        }
        stats.max_in_flight = u64::try_from(peak).unwrap_or(0);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(start_us: u64, end_us: u64) -> Call {
        Call {
            kind: "GET incident/{sys_id}".into(),
            status: 200,
            start_us,
            end_us,
        }
    }

    #[test]
    fn overlap_counts_only_simultaneous_calls() {
        // 0-10 and 5-15 overlap; 15-20 starts when 5-15 ends (not overlapping); 16-17 nests.
        let stats = CallStats::of(&[call(0, 10), call(5, 15), call(15, 20), call(16, 17)]);
        assert_eq!(stats.max_in_flight, 2);
        assert_eq!(stats.calls, 4);
        assert!((stats.busy_seconds - 26e-6).abs() < 1e-12);
        let three = CallStats::of(&[call(0, 10), call(1, 9), call(2, 8), call(9, 12)]);
        assert_eq!(three.max_in_flight, 3);
        assert_eq!(CallStats::of(&[]).max_in_flight, 0);
    }

    #[test]
    fn log_entries_become_calls() {
        let entry = json!({"method": "PATCH", "path": "/api/now/v2/table/incident/abc",
            "table": "incident", "sys_id": "abc", "status": 200, "start_us": 5, "end_us": 9});
        let c = Call::from_log(&entry).unwrap();
        assert_eq!(c.kind, "PATCH incident/{sys_id}");
        let control = json!({"method": "DELETE", "path": "/_sim/requests", "status": 204,
            "start_us": 1, "end_us": 2});
        assert!(Call::from_log(&control).is_none());
    }
}
