//! A TCP proxy for fault tests.
//!
//! It listens on `127.0.0.1:0` and forwards every accepted connection to the upstream address.
//! [`TcpProxy::cut`] drops every open connection at once (both sides see the socket close) and
//! refuses new ones (accepted, then closed immediately) while the listening port stays
//! reserved; [`TcpProxy::restore`] accepts again on the same port, so a client reconnects to
//! the same address. [`TcpProxy::set_latency`] delays every forwarded chunk, in both
//! directions, which keeps replies (such as publisher confirms) in flight long enough for a
//! test to cut the connection under them.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct State {
    upstream: String,
    cut: AtomicBool,
    latency_ms: AtomicU64,
    /// Cancelled by `cut`: every connection of this epoch closes.
    epoch: Mutex<CancellationToken>,
}

impl State {
    fn epoch(&self) -> CancellationToken {
        self.epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::SeqCst))
    }
}

/// A TCP proxy in front of one upstream address. Stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept_loop: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream` (`host:port`, resolved for each
    /// connection).
    pub async fn start(upstream: impl Into<String>) -> io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream: upstream.into(),
            cut: AtomicBool::new(false),
            latency_ms: AtomicU64::new(0),
            epoch: Mutex::new(CancellationToken::new()),
        });
        let accept_loop = tokio::spawn(accept(listener, state.clone()));
        Ok(TcpProxy {
            addr,
            state,
            accept_loop,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The test broker URL ([`crate::amqp_url`]) with its host and port replaced by the proxy's.
    pub fn amqp_url(&self) -> String {
        let raw = crate::amqp_url();
        match url::Url::parse(&raw) {
            Ok(mut url) => {
                let moved = url.set_host(Some(&self.addr.ip().to_string())).is_ok()
                    && url.set_port(Some(self.addr.port())).is_ok();
                if moved {
                    url.to_string()
                } else {
                    format!("amqp://guest:guest@{}/%2f", self.addr)
                }
            }
            Err(_) => format!("amqp://guest:guest@{}/%2f", self.addr),
        }
    }

    /// Drops every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        let mut epoch = self
            .state
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        epoch.cancel();
        *epoch = CancellationToken::new();
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Delays every forwarded chunk by `latency` (zero turns it off). Applies to open
    /// connections too.
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.state.latency_ms.store(ms, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.state.epoch().cancel();
    }
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.state.upstream)
            .field("cut", &self.state.cut.load(Ordering::SeqCst))
            .finish()
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Transient accept errors (e.g. too many open files): try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if state.cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        tokio::spawn(forward(client, state.clone(), state.epoch()));
    }
}

async fn forward(client: TcpStream, state: Arc<State>, epoch: CancellationToken) {
    let upstream = tokio::select! {
        connected = TcpStream::connect(state.upstream.as_str()) => match connected {
            Ok(stream) => stream,
            Err(_) => return,
        },
        () = epoch.cancelled() => return,
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    // Whichever side ends first (or a cut) ends both: returning drops all four halves.
    tokio::select! {
        () = pump(client_read, upstream_write, &state) => {}
        () = pump(upstream_read, client_write, &state) => {}
        () = epoch.cancelled() => {}
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: &State) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let latency = state.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let Some(chunk) = buffer.get(..read) else {
            return;
        };
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if socket.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(addr: SocketAddr) -> io::Result<Vec<u8>> {
        let mut socket = TcpStream::connect(addr).await?;
        socket.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut buf))
            .await
            .map_err(|_| io::Error::other("timeout"))??;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn forwards_cuts_refuses_and_restores() {
        let upstream = echo_server().await;
        let proxy = TcpProxy::start(upstream.to_string()).await.unwrap();
        assert_eq!(roundtrip(proxy.addr()).await.unwrap(), b"ping");

        // An open connection is dropped by the cut.
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.unwrap();
        proxy.cut();
        let read = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        // New connections are refused while cut.
        assert!(roundtrip(proxy.addr()).await.is_err());

        proxy.restore();
        assert_eq!(roundtrip(proxy.addr()).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn latency_delays_forwarding() {
        let upstream = echo_server().await;
        let proxy = TcpProxy::start(upstream.to_string()).await.unwrap();
        let latency = Duration::from_millis(200);
        proxy.set_latency(latency);
        let started = tokio::time::Instant::now();
        assert_eq!(roundtrip(proxy.addr()).await.unwrap(), b"ping");
        // A lower bound only: the request and the reply each waited at least once.
        assert!(started.elapsed() >= latency * 2, "{:?}", started.elapsed());
    }
}
