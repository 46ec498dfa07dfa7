//! A tiny programmable HTTP server on 127.0.0.1:0 standing in for a ServiceNow instance:
//! every request is recorded, and a closure decides each answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use nowpilot_servicenow::{
    Client, ClientOptions, Credentials, GrantCredentials, InstanceUrl, ResolvedConfig,
};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) raw_query: Option<String>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) at: Instant,
    pub(crate) at_system: SystemTime,
}

impl Recorded {
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn header(&self, key: &str) -> Option<&str> {
        self.headers.get(key).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }

    pub(crate) fn form_value(&self, key: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub(crate) fn is_token_call(&self) -> bool {
        self.path == "/oauth_token.do"
    }

    pub(crate) fn bearer(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) delay: Option<Duration>,
}

impl Reply {
    pub(crate) fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&value).unwrap(),
            delay: None,
        }
    }

    pub(crate) fn raw(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: body.into(),
            delay: None,
        }
    }

    pub(crate) fn envelope(status: u16, message: &str, detail: Option<&str>) -> Reply {
        Reply::json(
            status,
            serde_json::json!({"error": {"message": message, "detail": detail}, "status": "failure"}),
        )
    }

    pub(crate) fn result(value: serde_json::Value) -> Reply {
        Reply::json(200, serde_json::json!({ "result": value }))
    }

    pub(crate) fn token(access: &str, refresh: Option<&str>, expires_in: u64) -> Reply {
        let mut v = serde_json::json!({"access_token": access, "scope": "useraccount", "token_type": "Bearer", "expires_in": expires_in});
        if let Some(r) = refresh {
            v["refresh_token"] = r.into();
        }
        Reply::json(200, v)
    }

    pub(crate) fn oauth_denied() -> Reply {
        Reply::json(
            401,
            serde_json::json!({"error": "server_error", "error_description": "access_denied"}),
        )
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub(crate) fn after(mut self, delay: Duration) -> Reply {
        self.delay = Some(delay);
        self
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

pub(crate) struct Fake {
    pub(crate) base: String,
    log: Arc<Mutex<Vec<Recorded>>>,
    shutdown: CancellationToken,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Fake {
    pub(crate) async fn start(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Fake {
        let handler: Arc<Handler> = Arc::new(handler);
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let router = {
            let log = log.clone();
            axum::Router::new().fallback(move |request: Request| {
                let handler = handler.clone();
                let log = log.clone();
                async move { serve(handler, log, request).await }
            })
        };
        let token = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        Fake {
            base,
            log,
            shutdown,
        }
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn api_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| !r.is_token_call())
            .collect()
    }

    pub(crate) fn token_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_token_call)
            .collect()
    }

    pub(crate) fn instance(&self) -> InstanceUrl {
        InstanceUrl::parse(&self.base).unwrap()
    }

    pub(crate) fn basic(&self) -> Client {
        self.client(basic_credentials(), fast_options())
    }

    pub(crate) fn oauth(&self, grant: GrantCredentials) -> Client {
        self.client(oauth_credentials(grant), fast_options())
    }

    pub(crate) fn client(&self, credentials: Credentials, options: ClientOptions) -> Client {
        self.client_with_timeout(credentials, options, Duration::from_secs(10))
    }

    pub(crate) fn client_with_timeout(
        &self,
        credentials: Credentials,
        options: ClientOptions,
        timeout: Duration,
    ) -> Client {
        let mut config = ResolvedConfig::new(self.instance(), credentials);
        config.timeout = timeout;
        Client::new(config, options).unwrap()
    }
}

async fn serve(
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<Recorded>>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default()
        .to_vec();
    let raw_query = parts.uri.query().map(str::to_owned);
    let query = raw_query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        raw_query,
        query,
        headers: parts.headers,
        body,
        at: Instant::now(),
        at_system: SystemTime::now(),
    };
    log.lock().unwrap().push(recorded.clone());
    let reply = handler(&recorded);
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in reply.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    response
}

pub(crate) const PASSWORD: &str = "pa55-word-value";
pub(crate) const CLIENT_SECRET: &str = "client-secret-value";

pub(crate) fn basic_credentials() -> Credentials {
    Credentials::Basic {
        username: "nowpilot.integration".into(),
        password: SecretString::from(PASSWORD),
    }
}

pub(crate) fn oauth_credentials(grant: GrantCredentials) -> Credentials {
    Credentials::OAuth {
        client_id: "client-id".into(),
        client_secret: SecretString::from(CLIENT_SECRET),
        grant,
    }
}

/// Production behaviour with short backoffs so tests stay fast.
pub(crate) fn fast_options() -> ClientOptions {
    ClientOptions {
        retry_backoff: Duration::from_millis(10),
        ..ClientOptions::default()
    }
}

pub(crate) const SYS_ID: &str = "0123456789abcdef0123456789abcdef";

pub(crate) fn incident_json() -> serde_json::Value {
    serde_json::json!({"sys_id": SYS_ID, "number": "INC0010001", "state": "1", "cmdb_ci": {"link": "x", "value": "ci1"}})
}
