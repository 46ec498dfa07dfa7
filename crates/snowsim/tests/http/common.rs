//! Starting a simulator on port 0 and talking to it.

use std::{future::Future, time::Duration};

use nowpilot_snowsim::{SimConfig, SimUser, Simulator, run};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running simulator; stops when dropped.
pub(crate) struct Instance {
    pub(crate) sim: Simulator,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a simulator with this configuration.
pub(crate) async fn start(config: SimConfig) -> Instance {
    let sim = Simulator::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(run(sim.clone(), listener, shutdown.clone()));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Instance {
        sim,
        base,
        http,
        shutdown,
    }
}

/// A configuration with these users (`name`, `password`, roles).
pub(crate) fn with_users(users: &[(&str, &str, &str)]) -> SimConfig {
    let mut config = SimConfig {
        users: users.iter().map(|(u, p, _)| SimUser::new(*u, *p)).collect(),
        ..SimConfig::default()
    };
    for (user, _, roles) in users {
        config.user_roles.insert(
            (*user).to_owned(),
            roles
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    }
    config
}

impl Instance {
    /// An absolute URL for a path.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request as `admin` / `admin`.
    pub(crate) fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.as_user("admin", "admin", method, path)
    }

    /// A request with Basic credentials.
    pub(crate) fn as_user(
        &self,
        user: &str,
        password: &str,
        method: Method,
        path: &str,
    ) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .basic_auth(user, Some(password))
            .header("Accept", "application/json")
    }

    /// POSTs a record as admin and returns the `result`.
    pub(crate) async fn create(&self, table: &str, body: Value) -> Value {
        let response = self
            .admin(Method::POST, &format!("/api/now/table/{table}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "create {table}");
        json(response).await["result"].clone()
    }

    /// GETs a path as admin and returns the JSON body.
    pub(crate) async fn get_json(&self, path: impl AsRef<str>) -> Value {
        json(self.admin(Method::GET, path.as_ref()).send().await.unwrap()).await
    }
}

/// The response body as JSON.
pub(crate) async fn json(response: Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Polls `check` until it yields a value (gives up after 10 s).
pub(crate) async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..500 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within 10 s");
}

/// The error envelope ServiceNow sends.
pub(crate) fn envelope(message: &str, detail: &str) -> Value {
    serde_json::json!({"error": {"message": message, "detail": detail}, "status": "failure"})
}
