//! Investigation steps: what an `investigate` action gathers before it writes its findings.
//!
//! Results land in one `findings` JSON object (the CEL variable of action `when`s) at the path
//! [`Step::findings_path`] gives:
//!
//! - `findings.related = {ok, ci, changes, open_incidents, parent, children, discussion, error?}`
//! - `findings.probe.<name> = {ok, status, latency_ms, error}`
//! - `findings.prometheus.<name> = {ok, value, threshold, op, error}` (`ok`: the comparison
//!   holds)
//! - `findings.runbook.<name> = {ok, status, verified, error}`
//!
//! `probe`, `prometheus` and `runbook` are always present (possibly empty objects). A step
//! that fails is a finding (`ok: false` with `error`), never a failed pass, with one
//! exception: a transient ServiceNow error in `related` (429, 5xx, timeout) retries the pass
//! rather than post half a picture. Each step runs under its own time limit, in config order.
//!
//! Every URL comes from the configuration and is checked against `allowed_hosts` right before
//! the request; no incident field chooses a URL, host or header. The runbook body carries
//! incident data, the URL does not.

pub mod outbound;
pub mod related;

use std::time::Duration;

use chrono::Utc;
use nowpilot_model::Incident;
use nowpilot_model::plans::steps::{Comparison, VerifyConfig};
use nowpilot_model::plans::{Plan, Step, StepKind};
use nowpilot_servicenow::{Client, Error};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};

use crate::config::RunbookKey;
use crate::history::History;
use outbound::{Outbound, OutboundError};

/// Runs steps. Cheap to share.
#[derive(Debug, Clone)]
pub struct Investigator {
    outbound: Outbound,
    prometheus_url: Option<String>,
    runbook_key: Option<RunbookKey>,
}

/// What a pass knows when it investigates.
pub struct Subject<'a> {
    /// The ServiceNow client.
    pub client: &'a Client,
    /// The incident as read at the start of the pass.
    pub incident: &'a Incident,
    /// Its journal.
    pub history: &'a History,
    /// The newest event of the pass (the runbook body carries it).
    pub event_id: &'a str,
}

impl Investigator {
    /// An investigator using `outbound`, the default Prometheus server and the runbook key.
    pub fn new(
        outbound: Outbound,
        prometheus_url: Option<String>,
        runbook_key: Option<RunbookKey>,
    ) -> Self {
        Investigator {
            outbound,
            prometheus_url,
            runbook_key,
        }
    }

    /// Runs the plan's steps in order and returns the findings object.
    pub async fn investigate(&self, plan: &Plan, subject: &Subject<'_>) -> Result<Json, Error> {
        let mut findings = json!({"probe": {}, "prometheus": {}, "runbook": {}});
        for step in &plan.steps {
            let result = match &step.kind {
                StepKind::Related {
                    change_window,
                    discussion_entries,
                } => {
                    let gathered = related::gather(
                        subject.client,
                        subject.incident,
                        subject.history,
                        *change_window,
                        *discussion_entries,
                    );
                    match tokio::time::timeout(step.timeout, gathered).await {
                        Ok(Ok(value)) => value,
                        Ok(Err(e)) => return Err(e),
                        Err(_) => json!({"ok": false, "error": timed_out(step.timeout)}),
                    }
                }
                StepKind::HttpProbe {
                    url,
                    method,
                    expect_status,
                    max_latency,
                } => {
                    self.probe(url, method, *expect_status, *max_latency, step.timeout)
                        .await
                }
                StepKind::Prometheus {
                    query,
                    op,
                    threshold,
                    base_url,
                } => {
                    let base = base_url.as_deref().or(self.prometheus_url.as_deref());
                    self.prometheus(base, query, *op, *threshold, step.timeout)
                        .await
                }
                StepKind::Runbook { url, verify } => {
                    self.runbook(plan, step, url, verify.as_ref(), subject)
                        .await
                }
            };
            insert_path(&mut findings, &step.findings_path(), result);
        }
        Ok(findings)
    }

    async fn probe(
        &self,
        url: &str,
        method: &str,
        expect_status: u16,
        max_latency: Option<Duration>,
        limit: Duration,
    ) -> Json {
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        let answer = match self.outbound.check(url) {
            Ok(url) => {
                self.outbound
                    .send(method, url, HeaderMap::new(), None, limit)
                    .await
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(answer) => {
                let latency_ms = u64::try_from(answer.latency.as_millis()).unwrap_or(u64::MAX);
                let slow = max_latency.is_some_and(|max| answer.latency > max);
                let error = if answer.status != expect_status {
                    Json::String(format!(
                        "expected HTTP {expect_status}, got {}",
                        answer.status
                    ))
                } else if slow {
                    Json::String(format!(
                        "answered in {latency_ms} ms, slower than the {} ms allowed",
                        max_latency.map_or(0, |m| m.as_millis())
                    ))
                } else {
                    Json::Null
                };
                json!({"ok": error.is_null(), "status": answer.status, "latency_ms": latency_ms, "error": error})
            }
            Err(e) => {
                json!({"ok": false, "status": null, "latency_ms": null, "error": e.to_string()})
            }
        }
    }

    async fn prometheus(
        &self,
        base: Option<&str>,
        query: &str,
        op: Comparison,
        threshold: f64,
        limit: Duration,
    ) -> Json {
        let outcome = async {
            let base = base.ok_or_else(|| "no Prometheus URL is configured".to_owned())?;
            let mut url = self.outbound.check(base).map_err(|e| e.to_string())?;
            let path = format!("{}/api/v1/query", url.path().trim_end_matches('/'));
            url.set_path(&path);
            url.set_query(None);
            url.query_pairs_mut().append_pair("query", query);
            let answer = self
                .outbound
                .send(Method::GET, url, HeaderMap::new(), None, limit)
                .await
                .map_err(|e| e.to_string())?;
            if answer.status != 200 {
                return Err(format!("Prometheus answered HTTP {}", answer.status));
            }
            first_sample(&answer.body)
        }
        .await;
        let op_symbol = op.symbol();
        match outcome {
            Ok(value) if value.is_finite() => {
                let ok = op.holds(value, threshold);
                json!({"ok": ok, "value": value, "threshold": threshold, "op": op_symbol, "error": null})
            }
            Ok(_) => {
                json!({"ok": false, "value": null, "threshold": threshold, "op": op_symbol, "error": "the sample is not a finite number"})
            }
            Err(error) => {
                json!({"ok": false, "value": null, "threshold": threshold, "op": op_symbol, "error": error})
            }
        }
    }

    async fn runbook(
        &self,
        plan: &Plan,
        step: &Step,
        url: &str,
        verify: Option<&VerifyConfig>,
        subject: &Subject<'_>,
    ) -> Json {
        let failed =
            |error: String| json!({"ok": false, "status": null, "verified": null, "error": error});
        let Some(key) = &self.runbook_key else {
            return failed("no runbook secret is configured".into());
        };
        let target = match self.outbound.check(url) {
            Ok(target) => target,
            Err(e) => return failed(e.to_string()),
        };
        let incident = subject.incident;
        let body = json!({
            "incident": {
                "number": incident.number(),
                "sys_id": incident.sys_id(),
                "short_description": incident.short_description(),
                "priority": incident.field("priority"),
                "state": incident.field("state"),
                "cmdb_ci": incident.field("cmdb_ci"),
            },
            "plan": plan.name,
            "event_id": subject.event_id,
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        // The same id for every attempt at this runbook on this incident, so the automation
        // can drop a repeat (Standard Webhooks ids are idempotency keys).
        let mut hash = Sha256::new();
        hash.update(format!("{}|{}|{}", incident.sys_id(), plan.name, step.name).as_bytes());
        let id = format!(
            "msg_{}",
            hex::encode(hash.finalize().get(..12).unwrap_or_default())
        );
        let headers = outbound::sign(key, &id, Utc::now().timestamp(), &body);
        let answer = self
            .outbound
            .send(Method::POST, target, headers, Some(body), step.timeout)
            .await;
        let status = match answer {
            Ok(answer) => answer.status,
            Err(e) => return failed(e.to_string()),
        };
        if !(200..300).contains(&status) {
            return json!({"ok": false, "status": status, "verified": null, "error": format!("the runbook answered HTTP {status}")});
        }
        let Some(verify) = verify else {
            return json!({"ok": true, "status": status, "verified": null, "error": null});
        };
        if let Some(delay) = verify.delay.filter(|d| !d.is_zero()) {
            tokio::time::sleep(delay).await;
        }
        let expect = verify.expect_status.unwrap_or(200);
        let checked = match self.outbound.check(&verify.url) {
            Ok(url) => {
                self.outbound
                    .send(Method::GET, url, HeaderMap::new(), None, step.timeout)
                    .await
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok(a) if a.status == expect => {
                json!({"ok": true, "status": status, "verified": true, "error": null})
            }
            Ok(a) => {
                json!({"ok": false, "status": status, "verified": false, "error": format!("verification expected HTTP {expect}, got {}", a.status)})
            }
            Err(e) => {
                json!({"ok": false, "status": status, "verified": false, "error": format!("verification failed: {e}")})
            }
        }
    }
}

fn timed_out(limit: Duration) -> String {
    OutboundError::Timeout(limit).to_string()
}

/// The first sample's value of an instant query answer (vector, scalar or matrix).
fn first_sample(body: &[u8]) -> Result<f64, String> {
    let answer: Json = serde_json::from_slice(body)
        .map_err(|_| "Prometheus answered something other than JSON".to_owned())?;
    if answer["status"] != "success" {
        let error = answer["error"].as_str().unwrap_or("unknown error");
        return Err(format!("Prometheus refused the query: {error}"));
    }
    let data = &answer["data"];
    let pair = match data["resultType"].as_str() {
        Some("vector") => &data["result"][0]["value"],
        Some("matrix") => {
            let values = &data["result"][0]["values"];
            values
                .as_array()
                .and_then(|v| v.last())
                .unwrap_or(&Json::Null)
        }
        Some("scalar") => &data["result"],
        _ => &Json::Null,
    };
    let text = pair[1]
        .as_str()
        .ok_or_else(|| "the query returned no samples".to_owned())?;
    text.trim()
        .parse::<f64>()
        .map_err(|_| format!("the sample {text:?} is not a number"))
}

/// Sets `path` (`probe.checkout`) in `findings` to `value`.
fn insert_path(findings: &mut Json, path: &str, value: Json) {
    let mut node = findings;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Json::Object(Map::new());
        }
        let Some(map) = node.as_object_mut() else {
            return;
        };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        node = map
            .entry(part.to_owned())
            .or_insert_with(|| Json::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_from_every_result_type() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1714550000.1,"0.25"]}]}}"#;
        assert_eq!(first_sample(vector), Ok(0.25));
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1714550000,"3"]}}"#;
        assert_eq!(first_sample(scalar), Ok(3.0));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"7.5"]]}]}}"#;
        assert_eq!(first_sample(matrix), Ok(7.5));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(first_sample(empty).unwrap_err().contains("no samples"));
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(first_sample(error).unwrap_err().contains("parse error"));
        assert!(first_sample(b"<html>").is_err());
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"NaN"]}]}}"#;
        assert!(first_sample(nan).unwrap().is_nan());
    }

    #[test]
    fn paths_nest() {
        let mut f = json!({"probe": {}});
        insert_path(&mut f, "probe.checkout", json!({"ok": true}));
        insert_path(&mut f, "related", json!({"ok": false}));
        insert_path(&mut f, "runbook.restart", json!(1));
        assert_eq!(
            f,
            json!({"probe": {"checkout": {"ok": true}}, "related": {"ok": false}, "runbook": {"restart": 1}})
        );
    }
}
