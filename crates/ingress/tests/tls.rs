//! HTTPS with a certificate made here by rcgen, a client trusting exactly its authority, the
//! reload on SIGHUP, and the refusal of unusable files.
//!
//! Its own test binary: it sends SIGHUP to its own process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use nowpilot_ingress::IngressConfig;

/// A throwaway authority and a leaf for `localhost` / `127.0.0.1` it signed.
struct Pki {
    ca_pem: String,
    leaf_pem: String,
    key_pem: String,
}

fn pki(name: &str) -> Pki {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_owned());
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        leaf_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

fn install(dir: &Path, pki: &Pki) -> (PathBuf, PathBuf) {
    let cert = dir.join("ingress.crt");
    let key = dir.join("ingress.key");
    std::fs::write(&cert, &pki.leaf_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    (cert, key)
}

fn trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_serves_the_webhook_reloads_on_sighup_and_refuses_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = pki("first");
    let (cert, key) = install(dir.path(), &first);
    let server = start(IngressConfig {
        tls_cert_file: Some(cert.clone()),
        tls_key_file: Some(key.clone()),
        ..config()
    })
    .await;
    let port = server.addr.port();
    let base = format!("https://localhost:{port}");
    let client = trusting(&first.ca_pem);

    // Probes and a signed callback, over HTTPS.
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body = payload(1, "beth.anglin");
    let signed = signed_request(&event_id(1), now(), &body, SECRET_BYTES);
    let mut request = client
        .post(format!("{base}{}", nowpilot_ingress::WEBHOOK_PATH))
        .body(signed.body.clone());
    for (name, value) in &signed.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    assert_eq!(server.publisher.published().len(), 1);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = server.client.get(server.url("/healthz")).send().await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that does not trust the authority refuses the server.
    let stranger = trusting(&pki("stranger").ca_pem);
    assert!(
        stranger
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );

    // A broken renewal is not loaded: the old certificate keeps serving.
    std::fs::write(&cert, "not a certificate").unwrap();
    hangup().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = trusting(&first.ca_pem);
    assert_eq!(
        fresh
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A good renewal (another authority here, to tell them apart) is served after SIGHUP.
    let second = pki("second");
    install(dir.path(), &second);
    hangup().await;
    let renewed = trusting(&second.ca_pem);
    let mut served = false;
    for _ in 0..100 {
        // A new client each time: a pooled connection would keep the old session.
        if trusting(&second.ca_pem)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the renewed certificate was never served");
    assert_eq!(
        renewed
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        trusting(&first.ca_pem)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );
    server.stop().await;
}

async fn hangup() {
    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[test]
fn unusable_certificate_files_are_refused_without_quoting_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = pki("good");
    let other = pki("other");
    let (cert, key) = install(dir.path(), &good);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let garbage_key = write(
        "garbage.key",
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n",
    );
    let other_key = write("other.key", &other.key_pem);
    let empty = write("empty.crt", "");
    let with = |cert: Option<PathBuf>, key: Option<PathBuf>| IngressConfig {
        tls_cert_file: cert,
        tls_key_file: key,
        ..config()
    };
    let cases = [
        (with(Some(cert.clone()), None), "ingress.tls_key_file"),
        (with(None, Some(key.clone())), "ingress.tls_cert_file"),
        (
            with(Some(dir.path().join("missing.crt")), Some(key.clone())),
            "ingress.tls_cert_file",
        ),
        (
            with(Some(empty), Some(key.clone())),
            "ingress.tls_cert_file",
        ),
        (
            with(Some(key.clone()), Some(key.clone())),
            "ingress.tls_cert_file",
        ),
        (
            with(Some(cert.clone()), Some(cert.clone())),
            "ingress.tls_key_file",
        ),
        (
            with(Some(cert.clone()), Some(garbage_key)),
            "ingress.tls_key_file",
        ),
        (
            with(Some(cert.clone()), Some(other_key)),
            "ingress.tls_key_file",
        ),
    ];
    for (config, key_name) in cases {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with(key_name), "{err}");
        for secret in [
            "c2VjcmV0LWtleS1tYXRlcmlhbA",
            good.key_pem.lines().nth(1).unwrap(),
            other.key_pem.lines().nth(1).unwrap(),
        ] {
            assert!(!err.contains(secret), "{err}");
        }
    }
    let ok = with(Some(cert), Some(key)).validate().unwrap();
    assert!(ok.tls());
    assert!(!format!("{ok:?}").contains(good.key_pem.lines().nth(1).unwrap()));
}
