//! HTTPS for the ingress with rustls (the aws-lc-rs provider), when `tls_cert_file` and
//! `tls_key_file` are set.
//!
//! - The certificate and key are read and checked against each other at start-up: a bad
//!   file stops the process with an error naming the key, never the key material.
//! - `SIGHUP` re-reads both files; a pair that does not load is logged and the old one kept,
//!   so a botched renewal never takes the endpoint down. New connections get the new pair.
//! - Handshakes run off the accept loop, each bounded in time, at most
//!   [`MAX_HANDSHAKES`] at once: a client that opens a connection and never speaks TLS holds
//!   one slot for at most the handshake timeout, and never delays other clients.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

/// Largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Handshakes in progress at most; further connections wait in the kernel's backlog.
pub(crate) const MAX_HANDSHAKES: usize = 1024;
/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate or key could not be used. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsLoadError {
    /// The config key of the file at fault.
    pub(crate) key: &'static str,
    /// What is wrong.
    pub(crate) reason: String,
}

/// The certificate currently served; replaced on reload.
pub(crate) struct ReloadableCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(Arc::clone(&current))
    }
}

impl ReloadableCert {
    /// Re-reads both files; on failure the served pair stays as it was.
    pub(crate) fn reload(&self) -> Result<(), TlsLoadError> {
        let fresh = load_pair(&self.cert_file, &self.key_file, &self.provider)?;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Arc::new(fresh);
        Ok(())
    }
}

/// The validated TLS setup: the rustls configuration and the certificate it serves.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) cert: Arc<ReloadableCert>,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Loads `cert_file` (PEM chain, leaf first) and `key_file` (PEM PKCS#8, PKCS#1 or SEC1).
    pub(crate) fn load(cert_file: &Path, key_file: &Path) -> Result<TlsSetup, TlsLoadError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let pair = load_pair(cert_file, key_file, &provider)?;
        let cert = Arc::new(ReloadableCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider: Arc::clone(&provider),
            current: RwLock::new(Arc::new(pair)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsLoadError {
                key: "ingress.tls_cert_file",
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsSetup {
            config: Arc::new(config),
            cert,
        })
    }
}

fn read_pem(path: &Path, key: &'static str) -> Result<Vec<u8>, TlsLoadError> {
    use std::io::Read as _;
    let fail = |reason: String| TlsLoadError { key, reason };
    let file = std::fs::File::open(path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(fail(format!(
            "{} is larger than {MAX_PEM_BYTES} bytes; is this the right file?",
            path.display()
        )));
    }
    Ok(bytes)
}

fn load_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsLoadError> {
    const CERT: &str = "ingress.tls_cert_file";
    const KEY: &str = "ingress.tls_key_file";
    let pem = read_pem(cert_file, CERT)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsLoadError {
            key: CERT,
            reason: format!(
                "{} is not a PEM certificate chain: {e}",
                cert_file.display()
            ),
        })?;
    if chain.is_empty() {
        return Err(TlsLoadError {
            key: CERT,
            reason: format!("{} holds no CERTIFICATE block", cert_file.display()),
        });
    }
    let pem = read_pem(key_file, KEY)?;
    // The parser's error text could quote the file; say only what kind of problem it is.
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsLoadError {
        key: KEY,
        reason: format!(
            "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key_file.display()
        ),
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| TlsLoadError {
        key: KEY,
        reason: match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key does not belong to the certificate".to_owned()
            }
            _ => "the private key cannot be used (unsupported or malformed)".to_owned(),
        },
    })
}

/// Re-reads the certificate on every `SIGHUP` until `shutdown`.
pub(crate) fn reload_on_sighup(cert: Arc<ReloadableCert>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; the TLS certificate will not reload");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    received = hangups.recv() => if received.is_none() { return },
                }
                match cert.reload() {
                    Ok(()) => info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => warn!(
                        key = e.key,
                        reason = %e.reason,
                        "SIGHUP: TLS certificate not reloaded; still serving the previous one"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (cert, shutdown);
    }
}

/// A listener that yields connections whose TLS handshake completed.
pub(crate) struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    /// Stops the accept loop when the server drops the listener.
    _stop: DropGuard,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Starts accepting on `listener`, handshaking with `config`.
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let stop = CancellationToken::new();
        let (sender, incoming) = mpsc::channel(64);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accepting = stop.clone();
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    () = accepting.cancelled() => return,
                    permit = Arc::clone(&slots).acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let (tcp, peer) = tokio::select! {
                    () = accepting.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, like axum does.
                            debug!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            // The server may be gone (shutting down): the stream is dropped.
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            incoming,
            local_addr,
            _stop: stop.drop_guard(),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accept loop ended (only when the listener is dropped): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
