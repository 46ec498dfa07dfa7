//! The incident business rule: after every insert and update of an incident, a signed POST to
//! the webhook URL, sent asynchronously, once (ServiceNow does not retry a plain REST message),
//! in commit order per record, with the outcome kept in a bounded log.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use url::Url;

use crate::{
    config::{SimConfig, WebhookConfig, WebhookSecret},
    locks::{lock, read, write},
    schema::{INCIDENT, Kind, SYS_ID, SYS_MOD_COUNT, SYS_UPDATED_BY, SYS_UPDATED_ON},
    store::Row,
};

/// How long one callback may take, as the script's `setHttpTimeout(10000)`.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallbackRecord {
    /// `webhook-id`: `<sys_id>-<sys_mod_count>`.
    pub webhook_id: String,
    /// The incident.
    pub sys_id: String,
    /// `insert` or `update`.
    pub operation: String,
    /// The record version the callback carried.
    pub sys_mod_count: u64,
    /// Where it was sent.
    pub url: String,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it failed without an answer (connect error, timeout).
    pub error: Option<String>,
    /// When it was queued, microseconds since the simulator started.
    pub queued_us: u64,
    /// When it finished, microseconds since the simulator started.
    pub finished_us: u64,
}

/// One queued callback: a snapshot of the record at the version that fired it.
struct Job {
    sys_id: String,
    operation: &'static str,
    mod_count: u64,
    record: Row,
    url: Url,
    secret: Option<WebhookSecret>,
    queued_us: u64,
}

/// Queues, sends and logs callbacks.
pub(crate) struct Dispatcher {
    settings: RwLock<WebhookConfig>,
    /// Pending callbacks per record; a record has an entry exactly while a task drains it.
    lanes: Mutex<HashMap<String, VecDeque<Job>>>,
    log: Mutex<VecDeque<CallbackRecord>>,
    capacity: usize,
    client: Result<reqwest::Client, String>,
    runtime: Option<tokio::runtime::Handle>,
    instance: String,
    started: Instant,
}

impl Dispatcher {
    /// A dispatcher for this configuration; `started` anchors the log's timestamps.
    pub(crate) fn new(config: &SimConfig, started: Instant) -> Self {
        let client = reqwest::Client::builder()
            .timeout(CALLBACK_TIMEOUT)
            .user_agent("ServiceNow/1.0")
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        Dispatcher {
            settings: RwLock::new(config.webhook.clone()),
            lanes: Mutex::new(HashMap::new()),
            log: Mutex::new(VecDeque::new()),
            capacity: config.callback_log_capacity.max(1),
            client,
            runtime: tokio::runtime::Handle::try_current().ok(),
            instance: config.instance_name.clone(),
            started,
        }
    }

    /// The current target (the secret stays redacted in `Debug`).
    pub(crate) fn settings(&self) -> WebhookConfig {
        read(&self.settings).clone()
    }

    /// Changes the target for callbacks fired from now on.
    pub(crate) fn set(&self, config: WebhookConfig) {
        *write(&self.settings) = config;
    }

    /// The callback log, oldest first.
    pub(crate) fn log(&self) -> Vec<CallbackRecord> {
        lock(&self.log).iter().cloned().collect()
    }

    fn micros(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Queues the callback for a committed incident write. The caller holds the store's write
    /// lock, so callbacks of one record are queued in commit order.
    pub(crate) fn fire(self: &Arc<Self>, row: &Row, inserted: bool) {
        let (url, secret) = {
            let settings = read(&self.settings);
            let Some(url) = settings.url.clone() else {
                return;
            };
            if settings.skip_user.as_deref() == row.get(SYS_UPDATED_BY).map(String::as_str) {
                return;
            }
            (url, settings.secret.clone())
        };
        let job = Job {
            sys_id: row[SYS_ID].clone(),
            operation: if inserted { "insert" } else { "update" },
            mod_count: row[SYS_MOD_COUNT].parse().unwrap_or(0),
            record: row.clone(),
            url,
            secret,
            queued_us: self.micros(),
        };
        let sys_id = job.sys_id.clone();
        {
            let mut lanes = lock(&self.lanes);
            if let Some(queue) = lanes.get_mut(&sys_id) {
                queue.push_back(job);
                return;
            }
            lanes.insert(sys_id.clone(), VecDeque::from([job]));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.runtime.clone());
        match runtime {
            Some(runtime) => {
                runtime.spawn(Arc::clone(self).drain(sys_id));
            }
            None => {
                // Without a runtime nothing can be sent; record that instead of losing it.
                let jobs = lock(&self.lanes).remove(&sys_id).unwrap_or_default();
                for job in jobs {
                    let record = self.outcome(&job, None, Some("no tokio runtime".into()));
                    self.push(record);
                }
            }
        }
    }

    async fn drain(self: Arc<Self>, sys_id: String) {
        loop {
            let job = {
                let mut lanes = lock(&self.lanes);
                match lanes.get_mut(&sys_id).and_then(VecDeque::pop_front) {
                    Some(job) => job,
                    None => {
                        lanes.remove(&sys_id);
                        return;
                    }
                }
            };
            let record = self.deliver(&job).await;
            self.push(record);
        }
    }

    async fn deliver(&self, job: &Job) -> CallbackRecord {
        let client = match &self.client {
            Ok(client) => client,
            Err(e) => return self.outcome(job, None, Some(e.clone())),
        };
        let body = payload_body(&self.instance, job.operation, &job.record);
        let webhook_id = format!("{}-{}", job.sys_id, job.mod_count);
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut request = client
            .post(job.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(secret) = &job.secret {
            request = request.header(
                "webhook-signature",
                sign(secret.key(), &webhook_id, timestamp, &body),
            );
        }
        match request.body(body).send().await {
            Ok(response) => self.outcome(job, Some(response.status().as_u16()), None),
            Err(e) => self.outcome(job, None, Some(e.to_string())),
        }
    }

    fn outcome(&self, job: &Job, status: Option<u16>, error: Option<String>) -> CallbackRecord {
        CallbackRecord {
            webhook_id: format!("{}-{}", job.sys_id, job.mod_count),
            sys_id: job.sys_id.clone(),
            operation: job.operation.to_owned(),
            sys_mod_count: job.mod_count,
            url: job.url.to_string(),
            status,
            error,
            queued_us: job.queued_us,
            finished_us: self.micros(),
        }
    }

    fn push(&self, record: CallbackRecord) {
        if status_failed(&record) {
            tracing::debug!(webhook_id = %record.webhook_id, status = ?record.status, error = ?record.error, "callback failed");
        }
        let mut log = lock(&self.log);
        while log.len() >= self.capacity {
            log.pop_front();
        }
        log.push_back(record);
    }
}

fn status_failed(record: &CallbackRecord) -> bool {
    record.status.is_none_or(|s| !(200..300).contains(&s))
}

#[derive(Serialize)]
struct Payload<'a> {
    schema_version: u32,
    instance: &'a str,
    table: &'a str,
    operation: &'a str,
    sys_id: &'a str,
    sys_mod_count: &'a str,
    sys_updated_on: &'a str,
    sys_updated_by: &'a str,
    record: BTreeMap<&'a str, &'a str>,
}

/// The callback body: compact JSON, every non-ASCII character escaped so the signed bytes are
/// ASCII whatever charset the signer uses.
pub(crate) fn payload_body(instance: &str, operation: &str, row: &Row) -> String {
    let at = |pos: usize| row.get(pos).map_or("", String::as_str);
    let record = INCIDENT
        .fields
        .iter()
        .zip(row)
        .filter(|(f, _)| !matches!(f.kind, Kind::Journal | Kind::JournalList))
        .map(|(f, v)| (f.name, v.as_str()))
        .collect();
    let payload = Payload {
        schema_version: 1,
        instance,
        table: INCIDENT.name,
        operation,
        sys_id: at(SYS_ID),
        sys_mod_count: at(SYS_MOD_COUNT),
        sys_updated_on: at(SYS_UPDATED_ON),
        sys_updated_by: at(SYS_UPDATED_BY),
        record,
    };
    // Serializing strings and maps of strings cannot fail.
    escape_non_ascii(&serde_json::to_string(&payload).unwrap_or_default())
}

/// Replaces every non-ASCII character with `\uXXXX` (surrogate pairs above the BMP). Valid
/// because in serde_json's output non-ASCII characters only occur inside strings.
pub(crate) fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// `v1,<base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))>` (Standard Webhooks).
pub(crate) fn sign(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC accepts keys of any length; this branch exists only to avoid a panic path.
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_is_escaped() {
        let escaped = escape_non_ascii(r#"{"a":"Zoë 😀 \"q\""}"#);
        assert_eq!(escaped, r#"{"a":"Zo\u00eb \ud83d\ude00 \"q\""}"#);
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["a"], "Zoë 😀 \"q\"");
    }

    #[test]
    fn payload_has_every_field_but_journals() {
        let mut row: Row = INCIDENT
            .fields
            .iter()
            .map(|f| f.default.to_owned())
            .collect();
        row[SYS_ID] = "0123456789abcdef0123456789abcdef".into();
        row[SYS_MOD_COUNT] = "4".into();
        if let Some(p) = INCIDENT.position("short_description") {
            row[p] = "Café down".into();
        }
        let body = payload_body("dev1", "update", &row);
        assert!(body.is_ascii());
        let parsed = nowpilot_model::CallbackPayload::parse(body.as_bytes()).unwrap();
        assert_eq!(parsed.sys_mod_count, 4);
        assert_eq!(parsed.instance, "dev1");
        assert_eq!(parsed.record.value("short_description"), Some("Café down"));
        assert_eq!(parsed.record.value("state"), Some("1"));
        assert!(!parsed.record.contains("work_notes"));
        assert!(!parsed.record.contains("comments_and_work_notes"));
        assert!(body.starts_with(
            r#"{"schema_version":1,"instance":"dev1","table":"incident","operation":"update","#
        ));
    }

    #[test]
    fn signature_is_standard_webhooks() {
        // Computed independently: HMAC-SHA256("key", "id.1.body") in base64.
        let sig = sign(b"key", "id", 1, "body");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"id.1.body");
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("v1,{expected}"));
    }
}
