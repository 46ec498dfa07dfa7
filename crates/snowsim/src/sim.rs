//! The [`Simulator`] handle: shared state, the direct API for in-process tests, and the
//! operations the HTTP layer builds on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use chrono::Utc;
use nowpilot_model::{FieldValue, Record};
use serde::Serialize;

use crate::{
    auth::{AccessLevel, Accounts, Tokens},
    config::{FaultSettings, OAuthClient, SimConfig, WebhookConfig},
    error::SimError,
    limits::{FaultState, RateLimiter},
    locks::{lock, read, write},
    logic::{self, Actor, Committed, Target},
    query::{self, Clause, Condition, EvalContext, Operand, Operator, ValueExpr},
    render,
    reqlog::{LoggedRequest, RequestLog},
    schema::{self, SYS_CREATED_BY, SYS_CREATED_ON, SYS_ID, TABLES, id, table_id},
    seed,
    store::{Row, Store},
    webhook::{CallbackRecord, Dispatcher},
};

/// An in-memory ServiceNow instance. Cheap to clone: clones share one instance.
///
/// For tests and demos only: the `/_sim/` control endpoints of its [`Simulator::router`] need
/// no authentication.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("instance", &self.inner.instance_name)
            .finish_non_exhaustive()
    }
}

/// The shared state. Lock order, where several are taken: store → webhook settings → lanes.
pub(crate) struct Inner {
    pub(crate) started: Instant,
    pub(crate) instance_name: String,
    pub(crate) store: RwLock<Store>,
    pub(crate) accounts: Accounts,
    pub(crate) oauth_clients: HashMap<String, OAuthClient>,
    pub(crate) default_app_user: Option<String>,
    pub(crate) tokens: Mutex<Tokens>,
    pub(crate) token_ttl: Duration,
    pub(crate) refresh_ttl: Duration,
    pub(crate) rate: Option<RateLimiter>,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) requests: RequestLog,
    pub(crate) webhooks: Arc<Dispatcher>,
}

/// One journal entry (`sys_journal_field` row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    /// The entry's own sys_id.
    pub sys_id: String,
    /// `name`: the table of the record.
    pub table: String,
    /// `element`: `work_notes` or `comments`.
    pub element: String,
    /// `element_id`: the record's sys_id.
    pub element_id: String,
    /// `value`: the text.
    pub value: String,
    /// `sys_created_on`.
    pub created_on: String,
    /// `sys_created_by`: the author's user name.
    pub created_by: String,
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) user_name: String,
    pub(crate) sys_id: String,
    pub(crate) level: AccessLevel,
}

impl Simulator {
    /// Builds an instance: reference data, configured users, and the demo estate if asked.
    /// Call it inside a tokio runtime if callbacks are configured (they are sent from tasks).
    pub fn new(config: SimConfig) -> Simulator {
        let started = Instant::now();
        let mut store = Store::new();
        seed::reference_data(&mut store);
        if config.seed_demo {
            seed::demo(&mut store, Utc::now());
        }
        let users: Vec<(String, String)> = config
            .users
            .iter()
            .map(|u| {
                let name = if u.user_name == "admin" {
                    "System Administrator".to_owned()
                } else {
                    u.user_name.clone()
                };
                (u.user_name.clone(), name)
            })
            .collect();
        seed::users(&mut store, &users);

        let inner = Inner {
            started,
            instance_name: config.instance_name.clone(),
            store: RwLock::new(store),
            accounts: Accounts::new(&config),
            oauth_clients: config
                .oauth_clients
                .iter()
                .map(|c| (c.client_id.clone(), c.clone()))
                .collect(),
            default_app_user: Accounts::first_user(&config),
            tokens: Mutex::new(Tokens::default()),
            token_ttl: config.token_ttl,
            refresh_ttl: config.refresh_token_ttl,
            rate: config
                .rate_limit
                .map(|limit| RateLimiter::new(limit, config.rate_limit_window)),
            faults: Mutex::new(FaultState::new(config.faults.clone(), started)),
            requests: RequestLog::new(config.request_log_capacity),
            webhooks: Arc::new(Dispatcher::new(&config, started)),
        };
        Simulator {
            inner: Arc::new(inner),
        }
    }

    /// The HTTP API: Table API, OAuth, and the `/_sim/` control endpoints.
    pub fn router(&self) -> axum::Router {
        crate::http::router(self.clone())
    }

    /// Inserts a record as user `admin`, running the business logic (number, priority,
    /// journal, callbacks). Returns the stored values.
    pub fn insert(&self, table: &str, fields: Record) -> Result<Record, SimError> {
        self.insert_as("admin", table, fields)
    }

    /// Inserts a record as `user`.
    pub fn insert_as(&self, user: &str, table: &str, fields: Record) -> Result<Record, SimError> {
        let t = known_table(table)?;
        let committed = self.write(user, t, Target::Insert, &record_input(fields))?;
        Ok(render::plain_record(TABLES[t], &committed.row))
    }

    /// Updates a record as user `admin`.
    pub fn update(&self, table: &str, sys_id: &str, fields: Record) -> Result<Record, SimError> {
        self.update_as("admin", table, sys_id, fields)
    }

    /// Updates a record as `user`, with the same semantics as a PATCH.
    pub fn update_as(
        &self,
        user: &str,
        table: &str,
        sys_id: &str,
        fields: Record,
    ) -> Result<Record, SimError> {
        let t = known_table(table)?;
        let committed = self.write(user, t, Target::Update(sys_id), &record_input(fields))?;
        Ok(render::plain_record(TABLES[t], &committed.row))
    }

    /// Deletes a record.
    pub fn delete(&self, table: &str, sys_id: &str) -> Result<(), SimError> {
        let t = known_table(table)?;
        logic::delete(&mut write(&self.inner.store), t, sys_id).map(|_| ())
    }

    /// A record's stored values (references as sys_ids, journal fields empty).
    pub fn get(&self, table: &str, sys_id: &str) -> Option<Record> {
        let t = table_id(table)?;
        let store = read(&self.inner.store);
        store
            .get(t, sys_id)
            .map(|row| render::plain_record(TABLES[t], row))
    }

    /// Runs an encoded query as user `admin` (invalid parts are dropped, as on the wire).
    pub fn query(&self, table: &str, encoded_query: &str) -> Result<Vec<Record>, SimError> {
        let t = known_table(table)?;
        let store = read(&self.inner.store);
        let user_id = store
            .user_by_name("admin")
            .map(|r| r[SYS_ID].clone())
            .unwrap_or_default();
        let rows = select(&store, t, encoded_query, &[], "admin", &user_id);
        Ok(rows
            .into_iter()
            .map(|row| render::plain_record(TABLES[t], row))
            .collect())
    }

    /// A record's journal entries, oldest first.
    pub fn journal(&self, table: &str, sys_id: &str) -> Vec<JournalEntry> {
        let store = read(&self.inner.store);
        let def = &schema::SYS_JOURNAL_FIELD;
        let pos = |f: &str| def.position(f).unwrap_or(SYS_ID);
        let (name, element, element_id, value) =
            (pos("name"), pos("element"), pos("element_id"), pos("value"));
        store
            .journal_rows(sys_id)
            .into_iter()
            .filter(|row| row[name] == table)
            .map(|row| JournalEntry {
                sys_id: row[SYS_ID].clone(),
                table: row[name].clone(),
                element: row[element].clone(),
                element_id: row[element_id].clone(),
                value: row[value].clone(),
                created_on: row[SYS_CREATED_ON].clone(),
                created_by: row[SYS_CREATED_BY].clone(),
            })
            .collect()
    }

    /// Every HTTP request answered so far (bounded), oldest first.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.inner.requests.entries()
    }

    /// Forgets the request log.
    pub fn clear_request_log(&self) {
        self.inner.requests.clear();
    }

    /// Revokes every OAuth access token: the next call with one gets 401 (refresh tokens stay
    /// valid). Lets tests exercise a client's re-authentication.
    pub fn revoke_access_tokens(&self) {
        lock(&self.inner.tokens).revoke_access();
    }

    /// Every callback outcome so far (bounded), oldest first.
    pub fn callback_log(&self) -> Vec<CallbackRecord> {
        self.inner.webhooks.log()
    }

    /// Replaces the fault settings; a forced status counts its duration from now.
    pub fn set_faults(&self, faults: FaultSettings) {
        *lock(&self.inner.faults) = FaultState::new(faults, Instant::now());
    }

    /// The fault settings in effect.
    pub fn faults(&self) -> FaultSettings {
        lock(&self.inner.faults).settings().clone()
    }

    /// Replaces the callback target for writes from now on.
    pub fn set_webhook(&self, webhook: WebhookConfig) {
        self.inner.webhooks.set(webhook);
    }

    /// The callback target.
    pub fn webhook(&self) -> WebhookConfig {
        self.inner.webhooks.settings()
    }

    /// One write through the business logic; fires the incident callback while the store is
    /// still locked, so callbacks of one record queue in commit order.
    pub(crate) fn write(
        &self,
        user: &str,
        table: usize,
        target: Target<'_>,
        input: &[(String, String)],
    ) -> Result<Committed, SimError> {
        let mut store = write(&self.inner.store);
        let actor = Actor {
            user_name: user,
            now: Utc::now(),
        };
        let committed = logic::write(&mut store, table, target, input, actor)?;
        if committed.changed && table == id::INCIDENT {
            self.inner.webhooks.fire(&committed.row, committed.inserted);
        }
        Ok(committed)
    }

    /// Microseconds since the simulator started.
    pub(crate) fn micros(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

fn known_table(table: &str) -> Result<usize, SimError> {
    table_id(table).ok_or_else(|| SimError::InvalidTable(table.to_owned()))
}

/// A record given to the handle as write input: values as strings.
fn record_input(fields: Record) -> Vec<(String, String)> {
    fields
        .into_iter()
        .filter_map(|(name, value)| {
            let text = match value {
                FieldValue::Text(s) => s,
                FieldValue::Reference { value, .. } => value?,
                FieldValue::Other(json) => json_scalar(&json)?,
            };
            Some((name, text))
        })
        .collect()
}

/// A JSON value as a field value: strings as they are, numbers and booleans as text, `null`
/// as empty; arrays and objects without a `value` have no field form.
pub(crate) fn json_scalar(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Object(map) => map.get("value").and_then(json_scalar),
        Value::Array(_) => None,
    }
}

/// The rows of a table matching an encoded query plus `name=value` filters, in query order.
/// Invalid parts and unknown fields are dropped, as ServiceNow does by default.
pub(crate) fn select<'a>(
    store: &'a Store,
    table: usize,
    encoded_query: &str,
    filters: &[(String, String)],
    user_name: &str,
    user_sys_id: &str,
) -> Vec<&'a Row> {
    let Some(t) = store.table(table) else {
        return Vec::new();
    };
    let def = t.def;
    let (mut q, _) = query::parse_lenient(encoded_query);
    for (field, value) in filters {
        let condition = Condition {
            field: field.clone(),
            operator: Operator::Eq,
            operand: Operand::Value(ValueExpr::Literal(value.clone())),
        };
        for conjunction in &mut q.disjuncts {
            conjunction.clauses.push(Clause {
                alternatives: vec![condition.clone()],
            });
        }
    }
    q.retain_known_fields(|f| def.knows_path(f));
    let ctx = EvalContext {
        now: Utc::now(),
        user_sys_id,
        user_name,
    };
    let mut views: Vec<_> = t
        .rows()
        .map(|row| store.view(def, row))
        .filter(|v| q.matches(v, &ctx))
        .collect();
    q.sort(&mut views);
    views.into_iter().map(|v| v.row).collect()
}
