//! Unit tests of the config module.
use super::*;

fn parse(toml_like_json: serde_json::Value) -> Result<ServiceNowConfig, serde_json::Error> {
    serde_json::from_value(toml_like_json)
}

#[test]
fn basic_resolves_with_password_file_trimming_one_newline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret \r\n").unwrap();
    let cfg = parse(serde_json::json!({
        "instance_url": "https://acme.service-now.com/",
        "username": "nowpilot.integration",
        "password_file": "pw",
    }))
    .unwrap();
    assert_eq!(cfg.timeout, Duration::from_secs(30));
    let resolved = cfg.resolve(dir.path()).unwrap();
    assert_eq!(resolved.instance.as_str(), "https://acme.service-now.com");
    match resolved.credentials {
        Credentials::Basic { username, password } => {
            assert_eq!(username, "nowpilot.integration");
            assert_eq!(password.expose_secret(), "s3cret ");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_keys_are_refused_and_timeout_is_humantime() {
    let e = parse(serde_json::json!({"instance_url": "https://a.service-now.com", "passwd": "x"}))
        .unwrap_err();
    assert!(e.to_string().contains("passwd"), "{e}");
    let cfg =
        parse(serde_json::json!({"instance_url": "https://a.service-now.com", "timeout": "1m 5s"}))
            .unwrap();
    assert_eq!(cfg.timeout, Duration::from_secs(65));
}

#[test]
fn incomplete_combinations_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "username": "u"}),
            "servicenow.password_file",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "password": "p"}),
            "servicenow.username",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "auth": "oauth", "client_id": "c", "client_secret": "s"}),
            "servicenow.grant",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "auth": "oauth", "grant": "password", "client_id": "c", "client_secret": "s", "username": "u"}),
            "servicenow.password_file",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "auth": "oauth", "grant": "refresh_token", "client_id": "c", "client_secret": "s"}),
            "servicenow.refresh_token_file",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "auth": "oauth", "grant": "authorization_code", "client_id": "c", "client_secret": "s"}),
            "servicenow.refresh_token_file",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "auth": "oauth", "grant": "client_credentials", "client_secret": "s"}),
            "servicenow.client_id",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "auth": "oauth", "grant": "client_credentials", "client_id": "c"}),
            "servicenow.client_secret_file",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "username": "u", "password": "p", "password_file": "f"}),
            "servicenow.password and servicenow.password_file",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com/x", "username": "u", "password": "p"}),
            "servicenow.instance_url",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "username": "u", "password_file": "missing"}),
            "servicenow.password_file",
        ),
        (
            serde_json::json!({"instance_url": "https://a.service-now.com", "username": "u", "password": "p", "timeout": "0s"}),
            "servicenow.timeout",
        ),
    ];
    for (json, key) in cases {
        let cfg = parse(json.clone()).unwrap();
        let err = cfg.resolve(dir.path()).unwrap_err();
        assert!(err.to_string().starts_with(key), "{json}: {err}");
    }
}

#[test]
fn oauth_grants_resolve() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rt"), "refresh-abc\n").unwrap();
    let cfg = parse(serde_json::json!({
        "instance_url": "https://a.service-now.com", "auth": "oauth", "grant": "authorization_code",
        "client_id": "cid", "client_secret": "csecret", "refresh_token_file": "rt"
    }))
    .unwrap();
    assert_eq!(cfg.auth_description(), "oauth (authorization_code)");
    match cfg.resolve(dir.path()).unwrap().credentials {
        Credentials::OAuth {
            client_id,
            grant: GrantCredentials::RefreshToken { refresh_token },
            ..
        } => {
            assert_eq!(client_id, "cid");
            assert_eq!(refresh_token.expose_secret(), "refresh-abc");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_secret_file_is_refused_without_content() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "\n").unwrap();
    let cfg = parse(serde_json::json!({"instance_url": "https://a.service-now.com", "username": "u", "password_file": "pw"})).unwrap();
    let err = cfg.resolve(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("servicenow.password_file") && err.contains("is empty"),
        "{err}"
    );
}

#[test]
fn secrets_stay_out_of_debug_and_default_serialization() {
    let mut cfg = ServiceNowConfig::oauth(
        "https://a.service-now.com",
        "cid",
        SecretString::from("client-secret-value"),
        Grant::Password,
    );
    cfg.username = Some("u".into());
    cfg.password = Some(SecretString::from("password-value"));
    cfg.refresh_token = Some(SecretString::from("refresh-value"));
    let debug = format!("{cfg:?} {:?}", cfg.with_secrets());
    let json = serde_json::to_string(&cfg).unwrap();
    for secret in ["client-secret-value", "password-value", "refresh-value"] {
        assert!(!debug.contains(secret), "{debug}");
        assert!(!json.contains(secret), "{json}");
    }
    let resolved = cfg.resolve(Path::new(".")).unwrap();
    let debug = format!("{resolved:?}");
    for secret in ["client-secret-value", "password-value"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    // The explicit view does carry them, and reads back.
    let saved = serde_json::to_value(cfg.with_secrets()).unwrap();
    assert_eq!(saved["client_secret"], "client-secret-value");
    assert_eq!(saved["timeout"], "30s");
    let back: ServiceNowConfig = serde_json::from_value(saved).unwrap();
    assert_eq!(back.password.unwrap().expose_secret(), "password-value");
}
