//! HTTPS for the simulator, with a self-signed certificate made at start.
//!
//! Real instances are only reachable over HTTPS, and some clients (ServiceNow's own PySNC, for
//! one) refuse plain `http://`. With `--tls`, the simulator serves HTTPS with a certificate for
//! `localhost`, `127.0.0.1` and `::1`; `--tls-cert-out FILE` writes it (PEM) so a client can
//! trust exactly it.

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{Simulator, error::SimConfigError};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate and the server configuration that presents it.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_pem: String,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A fresh certificate for `localhost`, `127.0.0.1` and `::1`, issued by a throwaway
    /// certificate authority made at the same time. Clients trust the authority
    /// ([`TlsIdentity::cert_pem`]); a bare self-signed leaf is refused by strict verifiers
    /// such as OpenSSL's.
    pub fn self_signed() -> Result<TlsIdentity, SimConfigError> {
        let tls_error = |e: &dyn std::fmt::Display| SimConfigError::Tls(e.to_string());
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_error(&e))?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nowpilot simulator CA");
        let ca_key = rcgen::KeyPair::generate().map_err(|e| tls_error(&e))?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| tls_error(&e))?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let mut leaf_params = rcgen::CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .map_err(|e| tls_error(&e))?;
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nowpilot simulator");
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = rcgen::KeyPair::generate().map_err(|e| tls_error(&e))?;
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| tls_error(&e))?;

        let chain = vec![
            CertificateDer::from(leaf.der().to_vec()),
            CertificateDer::from(ca_cert.der().to_vec()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(&e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls_error(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            cert_pem: ca_cert.pem(),
            config: Arc::new(config),
        })
    }

    /// The issuing authority's certificate, PEM-encoded, for clients to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

/// Like [`crate::run`], over HTTPS with `identity`.
pub async fn run_tls(
    sim: Simulator,
    listener: TcpListener,
    identity: TlsIdentity,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(identity.config);
    let router: Router = sim.router();
    let connections = TaskTracker::new();
    loop {
        let (tcp, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let stop = shutdown.clone();
        connections.spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let builder = Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = connection => {}
                () = stop.cancelled() => {}
            }
        });
    }
    connections.close();
    // In-flight requests get a moment; idle keep-alive connections are simply dropped.
    let _ = tokio::time::timeout(crate::SHUTDOWN_GRACE, connections.wait()).await;
    Ok(())
}
