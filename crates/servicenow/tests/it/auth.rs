//! Basic and OAuth: grant bodies, refresh before expiry, fallback, re-authentication on 401.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nowpilot_servicenow::{CodeExchange, Error, GrantCredentials, ReadOptions, exchange_code};
use secrecy::{ExposeSecret, SecretString};

use crate::fake::*;

fn api_ok() -> Reply {
    Reply::result(incident_json())
}

#[tokio::test]
async fn client_credentials_grant_is_a_form_body_and_the_token_is_used() {
    let fake = Fake::start(|r| {
        if r.is_token_call() {
            Reply::token("AT-1", None, 1800)
        } else {
            api_ok()
        }
    })
    .await;
    let client = fake.oauth(GrantCredentials::ClientCredentials);
    let record = client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(record.value("number"), Some("INC0010001"));

    let token = &fake.token_requests()[0];
    assert_eq!(token.method, "POST");
    assert_eq!(
        token.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        token.raw_query, None,
        "parameters must travel in the body only"
    );
    let mut form = token.form();
    form.sort();
    assert_eq!(
        form,
        [
            ("client_id".to_owned(), "client-id".to_owned()),
            ("client_secret".to_owned(), CLIENT_SECRET.to_owned()),
            ("grant_type".to_owned(), "client_credentials".to_owned()),
        ]
    );
    let api = &fake.api_requests()[0];
    assert_eq!(api.bearer(), Some("AT-1"));
    assert_eq!(api.path, format!("/api/now/v2/table/incident/{SYS_ID}"));
    assert_eq!(api.header("accept"), Some("application/json"));
    assert_eq!(
        client
            .current_refresh_token()
            .map(|t| t.expose_secret().to_owned()),
        None
    );
}

#[tokio::test]
async fn password_grant_then_refresh_before_expiry_keeping_the_newest_refresh_token() {
    let fake = Fake::start(|r| {
        if !r.is_token_call() {
            return api_ok();
        }
        match r.form_value("grant_type").as_deref() {
            Some("password") => Reply::token("AT-A", Some("RT-1"), 4),
            Some("refresh_token") if r.form_value("refresh_token").as_deref() == Some("RT-1") => {
                Reply::token("AT-B", Some("RT-2"), 1800)
            }
            _ => Reply::oauth_denied(),
        }
    })
    .await;
    let client = fake.oauth(GrantCredentials::Password {
        username: "nowpilot.integration".into(),
        password: SecretString::from(PASSWORD),
    });
    client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(fake.token_requests().len(), 1, "a fresh token is reused");
    let first = &fake.token_requests()[0];
    assert_eq!(
        first.form_value("username").as_deref(),
        Some("nowpilot.integration")
    );
    assert_eq!(first.form_value("password").as_deref(), Some(PASSWORD));
    assert_eq!(
        first.form_value("client_secret").as_deref(),
        Some(CLIENT_SECRET)
    );

    // A 4 s token is refreshed once half of it is gone, while it is still valid.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    let tokens = fake.token_requests();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        tokens[1].form_value("grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(
        tokens[1].form_value("client_id").as_deref(),
        Some("client-id")
    );
    let bearers: Vec<_> = fake
        .api_requests()
        .iter()
        .map(|r| r.bearer().unwrap().to_owned())
        .collect();
    assert_eq!(bearers, ["AT-A", "AT-A", "AT-B"]);
    assert_eq!(
        client.current_refresh_token().unwrap().expose_secret(),
        "RT-2"
    );
}

#[tokio::test]
async fn refused_refresh_falls_back_to_the_primary_grant() {
    let fake = Fake::start(|r| {
        if !r.is_token_call() {
            return api_ok();
        }
        match r.form_value("grant_type").as_deref() {
            Some("password") => Reply::token("AT-P", Some("RT-dead"), 2),
            _ => Reply::oauth_denied(),
        }
    })
    .await;
    let client = fake.oauth(GrantCredentials::Password {
        username: "u".into(),
        password: SecretString::from(PASSWORD),
    });
    client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    let grants: Vec<_> = fake
        .token_requests()
        .iter()
        .map(|r| r.form_value("grant_type").unwrap())
        .collect();
    assert_eq!(grants, ["password", "refresh_token", "password"]);
}

#[tokio::test]
async fn refresh_token_only_setup_surfaces_the_opaque_refusal_as_oauth_error() {
    let fake = Fake::start(|r| {
        if r.is_token_call() {
            Reply::oauth_denied()
        } else {
            api_ok()
        }
    })
    .await;
    let client = fake.oauth(GrantCredentials::RefreshToken {
        refresh_token: SecretString::from("RT-expired"),
    });
    let error = client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    match &error {
        Error::OAuth {
            status,
            error,
            description,
        } => {
            assert_eq!(*status, Some(401));
            assert_eq!(error, "server_error");
            assert_eq!(description.as_deref(), Some("access_denied"));
        }
        other => panic!("expected OAuth, got {other:?}"),
    }
    assert!(!error.is_retryable());
    assert!(
        fake.api_requests().is_empty(),
        "no API call without a token"
    );
    let token = &fake.token_requests()[0];
    assert_eq!(
        token.form_value("refresh_token").as_deref(),
        Some("RT-expired")
    );
    let text = format!("{error} {error:?}");
    assert!(
        !text.contains("RT-expired") && !text.contains(CLIENT_SECRET),
        "{text}"
    );
}

#[tokio::test]
async fn authorization_code_exchange_posts_the_code_as_a_form() {
    let fake = Fake::start(|_| Reply::token("AT-C", Some("RT-C"), 1800)).await;
    let instance = fake.instance();
    let secret = SecretString::from(CLIENT_SECRET);
    let set = exchange_code(&CodeExchange {
        instance: &instance,
        client_id: "client-id",
        client_secret: &secret,
        code: "the-code",
        redirect_uri: "http://127.0.0.1:8400/callback",
        timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    assert_eq!(set.refresh_token.unwrap().expose_secret(), "RT-C");
    let request = &fake.requests()[0];
    assert_eq!(request.path, "/oauth_token.do");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let mut form = request.form();
    form.sort();
    let expected: Vec<(String, String)> = [
        ("client_id", "client-id"),
        ("client_secret", CLIENT_SECRET),
        ("code", "the-code"),
        ("grant_type", "authorization_code"),
        ("redirect_uri", "http://127.0.0.1:8400/callback"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(form, expected);
}

#[tokio::test]
async fn a_401_triggers_one_reauthentication_and_one_retry_even_for_writes() {
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let fake = Fake::start(move |r| {
        if r.is_token_call() {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::token(&format!("AT-{n}"), None, 1800);
        }
        match r.bearer() {
            Some("AT-1") => Reply::envelope(
                401,
                "User Not Authenticated",
                Some("Required to provide Auth information"),
            ),
            _ => api_ok(),
        }
    })
    .await;
    let client = fake.oauth(GrantCredentials::ClientCredentials);
    let mut fields = serde_json::Map::new();
    fields.insert("work_notes".into(), "hello".into());
    client.patch("incident", SYS_ID, &fields).await.unwrap();
    let bearers: Vec<_> = fake
        .api_requests()
        .iter()
        .map(|r| r.bearer().unwrap().to_owned())
        .collect();
    assert_eq!(bearers, ["AT-1", "AT-2"]);
    assert_eq!(fake.token_requests().len(), 2);
    for r in fake.api_requests() {
        assert_eq!(r.method, "PATCH");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, br#"{"work_notes":"hello"}"#);
    }
}

#[tokio::test]
async fn a_second_401_surfaces() {
    let fake = Fake::start(|r| {
        if r.is_token_call() {
            Reply::token("AT", None, 1800)
        } else {
            Reply::envelope(
                401,
                "User Not Authenticated",
                Some("Required to provide Auth information"),
            )
        }
    })
    .await;
    let client = fake.oauth(GrantCredentials::ClientCredentials);
    let error = client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
    assert_eq!(fake.api_requests().len(), 2);
    assert_eq!(fake.token_requests().len(), 2);
    assert!(error.to_string().contains("GET incident: 401"), "{error}");
}

#[tokio::test]
async fn basic_auth_sends_credentials_and_never_retries_a_401() {
    let fake = Fake::start(|_| {
        Reply::envelope(
            401,
            "User Not Authenticated",
            Some("Required to provide Auth information"),
        )
    })
    .await;
    let client = fake.basic();
    let error = client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unauthorized { .. }));
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    // base64("nowpilot.integration:pa55-word-value")
    assert_eq!(
        requests[0].header("authorization"),
        Some("Basic bm93cGlsb3QuaW50ZWdyYXRpb246cGE1NS13b3JkLXZhbHVl")
    );
    let text = format!("{error} {error:?} {client:?}");
    assert!(
        !text.contains(PASSWORD) && !text.contains("bm93cGlsb3Q"),
        "{text}"
    );
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let fake = Fake::start(|r| {
        if r.is_token_call() {
            Reply::token("AT", None, 1800).after(Duration::from_millis(200))
        } else {
            api_ok()
        }
    })
    .await;
    let client = fake.oauth(GrantCredentials::ClientCredentials);
    let calls = (0..20).map(|_| {
        let client = client.clone();
        async move {
            client
                .get("incident", SYS_ID, &ReadOptions::default())
                .await
        }
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(fake.token_requests().len(), 1);
    assert_eq!(fake.api_requests().len(), 20);
}

#[tokio::test]
async fn max_in_flight_caps_concurrent_calls() {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (a, p) = (active.clone(), peak.clone());
    // The fake records concurrency by counting requests that arrived and not yet answered;
    // the answer is delayed so that uncapped calls would overlap.
    let fake = Fake::start(move |_| {
        let now = a.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(now, Ordering::SeqCst);
        let a = a.clone();
        tokio::spawn(async move {
            // Count the call as finished a little before it is answered, so a capped client
            // can never be seen above the cap by timing accident.
            tokio::time::sleep(Duration::from_millis(100)).await;
            a.fetch_sub(1, Ordering::SeqCst);
        });
        Reply::result(incident_json()).after(Duration::from_millis(150))
    })
    .await;
    let options = nowpilot_servicenow::ClientOptions {
        max_in_flight: Some(2),
        ..fast_options()
    };
    let client = fake.client(basic_credentials(), options);
    let calls = (0..6).map(|_| {
        let client = client.clone();
        async move {
            client
                .get("incident", SYS_ID, &ReadOptions::default())
                .await
        }
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(fake.requests().len(), 6);
    assert!(
        peak.load(Ordering::SeqCst) <= 2,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_failed_early_refresh_keeps_using_the_still_valid_token() {
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let fake = Fake::start(move |r| {
        if !r.is_token_call() {
            return api_ok();
        }
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::token("AT-1", None, 4)
        } else {
            Reply::raw(503, "<html>maintenance</html>")
        }
    })
    .await;
    let client = fake.oauth(GrantCredentials::ClientCredentials);
    client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    // Due for refresh (half of 4 s gone) but not expired: the outage does not stop calls.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    client
        .get("incident", SYS_ID, &ReadOptions::default())
        .await
        .unwrap();
    assert_eq!(fake.token_requests().len(), 2);
    let bearers: Vec<_> = fake
        .api_requests()
        .iter()
        .map(|r| r.bearer().unwrap().to_owned())
        .collect();
    assert_eq!(bearers, ["AT-1", "AT-1"]);
}
