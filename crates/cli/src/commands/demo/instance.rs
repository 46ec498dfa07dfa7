//! The demo's hands and eyes on the ServiceNow instance (the simulator): people create and
//! update incidents through the Table API as themselves, so every change fires the business
//! rule exactly as a change in the UI would; the integration user reads the records back to
//! check what happened.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

/// A stored record: field name → value (strings; references as sys_ids).
pub type Fields = Map<String, Value>;

/// One journal entry.
#[derive(Debug, Clone)]
pub struct Note {
    /// `work_notes` or `comments`.
    pub element: String,
    /// The text.
    pub value: String,
    /// The author's user name.
    pub created_by: String,
}

/// The instance and the people who use it.
#[derive(Clone)]
pub struct Instance {
    base: String,
    http: reqwest::Client,
    users: HashMap<String, SecretString>,
    integration: String,
}

/// A field's string value.
pub fn text<'a>(record: &'a Fields, field: &str) -> &'a str {
    record.get(field).and_then(Value::as_str).unwrap_or("")
}

impl Instance {
    /// The instance at `base` (no trailing slash), with the passwords of the people the demo
    /// acts as; `integration` reads the records.
    pub fn new(
        base: &str,
        users: HashMap<String, SecretString>,
        integration: &str,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Instance {
            base: base.trim_end_matches('/').to_owned(),
            http,
            users,
            integration: integration.to_owned(),
        })
    }

    /// The instance URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The password the demo knows for `user`.
    pub fn password_of(&self, user: &str) -> Result<SecretString, String> {
        self.password(user).cloned()
    }

    fn password(&self, user: &str) -> Result<&SecretString, String> {
        self.users.get(user).ok_or_else(|| {
            format!("no password for {user} (give it with --sim-user {user}:PASSWORD)")
        })
    }

    async fn call(
        &self,
        user: &str,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, String> {
        let password = self.password(user)?;
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(user, Some(password.expose_secret()))
            .header("accept", "application/json")
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path} as {user}: {e}"))?;
        let status = response.status();
        let value: Value = response.json().await.map_err(|e| {
            format!("{method} {path} as {user}: HTTP {status}, unreadable answer: {e}")
        })?;
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("no message");
            return Err(format!(
                "{method} {path} as {user}: HTTP {status}: {message}"
            ));
        }
        Ok(value["result"].clone())
    }

    /// `user` creates an incident; returns the stored record.
    pub async fn create_incident(
        &self,
        user: &str,
        fields: &[(&str, &str)],
    ) -> Result<Fields, String> {
        let body: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        let result = self
            .call(
                user,
                reqwest::Method::POST,
                "/api/now/table/incident",
                &[("sysparm_exclude_reference_link", "true")],
                Some(Value::Object(body)),
            )
            .await?;
        result
            .as_object()
            .cloned()
            .ok_or_else(|| "the instance answered the insert without a record".to_owned())
    }

    /// `user` updates an incident.
    pub async fn update_incident(
        &self,
        user: &str,
        sys_id: &str,
        fields: &[(&str, &str)],
    ) -> Result<(), String> {
        let body: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        self.call(
            user,
            reqwest::Method::PATCH,
            &format!("/api/now/table/incident/{sys_id}"),
            &[("sysparm_exclude_reference_link", "true")],
            Some(Value::Object(body)),
        )
        .await
        .map(drop)
    }

    /// An incident as stored.
    pub async fn incident(&self, sys_id: &str) -> Result<Fields, String> {
        let result = self
            .call(
                &self.integration,
                reqwest::Method::GET,
                &format!("/api/now/table/incident/{sys_id}"),
                &[("sysparm_exclude_reference_link", "true")],
                None,
            )
            .await?;
        result
            .as_object()
            .cloned()
            .ok_or_else(|| format!("incident {sys_id} was not found"))
    }

    /// An incident's journal (work notes and comments).
    pub async fn journal(&self, sys_id: &str) -> Result<Vec<Note>, String> {
        let query = format!("element_id={sys_id}^ORDERBYsys_created_on");
        let result = self
            .call(
                &self.integration,
                reqwest::Method::GET,
                "/api/now/table/sys_journal_field",
                &[
                    ("sysparm_query", &query),
                    ("sysparm_fields", "element,value,sys_created_by"),
                ],
                None,
            )
            .await?;
        Ok(result
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| Note {
                        element: row["element"].as_str().unwrap_or("").to_owned(),
                        value: row["value"].as_str().unwrap_or("").to_owned(),
                        created_by: row["sys_created_by"].as_str().unwrap_or("").to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The sys_id of the configuration item named `name`.
    pub async fn configuration_item(&self, name: &str) -> Result<String, String> {
        let query = format!("name={name}");
        let result = self
            .call(
                &self.integration,
                reqwest::Method::GET,
                "/api/now/table/cmdb_ci",
                &[("sysparm_query", &query), ("sysparm_fields", "sys_id")],
                None,
            )
            .await?;
        result[0]["sys_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "the instance has no configuration item {name}: start the simulator with --seed-demo"
                )
            })
    }

    /// Points the business rule at `url`, signing with `secret`, skipping the integration
    /// user's own changes (the simulator's `/_sim/webhook` control endpoint).
    pub async fn set_webhook(&self, url: &str, secret: &SecretString) -> Result<(), String> {
        let response = self
            .http
            .post(format!("{}/_sim/webhook", self.base))
            .json(&json!({
                "url": url,
                "secret": secret.expose_secret(),
                "skip_user": self.integration,
            }))
            .send()
            .await
            .map_err(|e| format!("cannot set the simulator's webhook: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "the simulator refused the webhook settings: HTTP {} (is {} a nowpilot simulator?)",
                response.status(),
                self.base
            ))
        }
    }
}
