//! Unit tests of the `[ingress]` section: parsing, defaults and every validation error.

use super::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn parse(text: &str) -> IngressConfig {
    toml::from_str(text).unwrap()
}

#[test]
fn defaults_match_the_reference() {
    let c = parse(&format!("secrets = [\"{SECRET}\"]"));
    assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.tolerance, Duration::from_secs(300));
    assert_eq!(c.max_body, ByteSize(262_144));
    assert_eq!(c.retry_after, Duration::from_secs(5));
    let s = c.validate().unwrap();
    assert_eq!(s.max_body(), 262_144);
}

#[test]
fn max_body_accepts_numbers_and_units() {
    for (text, bytes) in [
        ("max_body = 4096", 4096),
        ("max_body = \"256KiB\"", 262_144),
        ("max_body = \"1 MiB\"", 1_048_576),
        ("max_body = \"64kB\"", 64_000),
        ("max_body = \"2048B\"", 2048),
    ] {
        assert_eq!(parse(text).max_body, ByteSize(bytes), "{text}");
    }
    for bad in [
        "max_body = \"lots\"",
        "max_body = \"5 parsecs\"",
        "max_body = -1",
    ] {
        assert!(toml::from_str::<IngressConfig>(bad).is_err(), "{bad}");
    }
    assert!(ByteSize::parse("99999999999999999999GiB").is_err());
}

#[test]
fn unknown_keys_are_refused() {
    assert!(toml::from_str::<IngressConfig>("secret = \"x\"").is_err());
}

#[test]
fn bad_secrets_name_the_key_and_never_the_value() {
    // (secret, a fragment of it that must not leak)
    let cases = [
        ("whsec_not*base64!!", "not*base64"),
        ("plainsecretvalue", "plainsecretvalue"),
        ("whsec_", ""),
        // 15 bytes: one short of the minimum.
        ("whsec_c2hvcnQtYnV0LXZhbGlk", "c2hvcnQtYnV0LXZhbGlk"),
    ];
    for (bad, fragment) in cases {
        let c = IngressConfig {
            secrets: vec![SECRET.into(), bad.into()],
            ..IngressConfig::default()
        };
        let text = c.validate().unwrap_err().to_string();
        assert!(text.starts_with("ingress.secrets[1]: "), "{text}");
        assert!(fragment.is_empty() || !text.contains(fragment), "{text}");
        assert!(!text.contains(&SECRET[6..]), "{text}");
    }
}

#[test]
fn no_secret_at_all_is_an_error() {
    let err = IngressConfig::default().validate().unwrap_err();
    assert_eq!(err, IngressConfigError::NoSecrets);
    assert_eq!(err.key(), "ingress.secrets");
    assert!(err.reason().contains("ingress.secrets_file"), "{err}");
}

#[test]
fn keys_of_the_minimum_length_are_accepted() {
    // 16 bytes: the minimum.
    let c = IngressConfig {
        secrets: vec!["whsec_c2l4dGVlbi1ieXRlLWtleQ==".into()],
        ..IngressConfig::default()
    };
    c.validate().unwrap();
}

#[test]
fn secrets_file_lines_are_read_and_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("secrets"),
        format!("# current\n{SECRET}\n\nwhsec_%%%\n"),
    )
    .unwrap();
    let c = IngressConfig {
        secrets_file: Some("secrets".into()),
        ..IngressConfig::default()
    };
    let err = c.validate_in(dir.path()).unwrap_err();
    assert!(
        err.to_string().starts_with("ingress.secrets_file (line 4)"),
        "{err}"
    );
    std::fs::write(dir.path().join("secrets"), format!("{SECRET}\n")).unwrap();
    assert!(c.validate_in(dir.path()).is_ok());
    let missing = IngressConfig {
        secrets_file: Some("nope".into()),
        ..IngressConfig::default()
    };
    assert!(matches!(
        missing.validate_in(dir.path()),
        Err(IngressConfigError::File { .. })
    ));
}

#[test]
fn limits_are_checked() {
    let base = || IngressConfig {
        secrets: vec![SECRET.into()],
        ..IngressConfig::default()
    };
    let cases: Vec<(IngressConfig, &str)> = vec![
        (
            IngressConfig {
                max_body: ByteSize(10),
                ..base()
            },
            "ingress.max_body",
        ),
        (
            IngressConfig {
                tolerance: Duration::ZERO,
                ..base()
            },
            "ingress.tolerance",
        ),
        (
            IngressConfig {
                retry_after: Duration::ZERO,
                ..base()
            },
            "ingress.retry_after",
        ),
        (
            IngressConfig {
                dedupe_capacity: 0,
                ..base()
            },
            "ingress.dedupe_capacity",
        ),
        (
            IngressConfig {
                echo_users: vec![" ".into()],
                ..base()
            },
            "ingress.echo_users[0]",
        ),
        (
            IngressConfig {
                body_signature: Some(BodySignatureConfig {
                    header: "webhook-signature".into(),
                    secret: Some("s3cret".into()),
                    secret_file: None,
                }),
                ..base()
            },
            "ingress.body_signature.header",
        ),
    ];
    for (config, key) in cases {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with(key), "{err}");
    }
}

#[test]
fn body_signature_alone_is_enough() {
    let c = parse(
        "[body_signature]\nheader = \"x-hmac-signature\"\nsecret = \"plain shared secret\"\n",
    );
    let s = c.validate().unwrap();
    let debug = format!("{s:?} {c:?}");
    assert!(!debug.contains("plain shared secret"), "{debug}");
}
