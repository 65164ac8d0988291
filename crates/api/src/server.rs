//! The serve loop of both listeners: HTTP/1 connections with a deadline for the request
//! headers, an idle deadline (no byte moved either way), a cap on open connections and a
//! smaller one per peer address, a graceful drain on shutdown, and TLS when configured.
//!
//! axum's own `serve` sets none of these, so a silent connection, one that sends half a
//! request line, or a client that stops reading a streamed export would hold its socket
//! (and, for the export, a database connection) for as long as it liked.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::tls::TlsAcceptor;

/// How long the process waits, once both listeners have drained, for blocking jobs still
/// running: a CPU-heavy job whose request was answered at its deadline may run on (it keeps
/// its slot, see `api::blocking`), and must not hold the process past SIGTERM.
pub const BLOCKING_JOBS_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's headers, by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may move no byte in either direction, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most connections one listener keeps open at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Most connections one listener keeps open from one peer address at once, by default: a
/// quarter of [`DEFAULT_MAX_CONNECTIONS`], so one client cannot take every slot.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// Refused connections given a moment to read their answer at once; beyond that, a refused
/// connection is closed without one.
const REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection is given to read its answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// The body of the answer to a connection over its address's cap.
const TOO_MANY_CONNECTIONS: &str = concat!(
    r#"{"type":"/problems/too-many-connections","title":"Too many connections","status":429,"#,
    r#""detail":"this address has as many connections open as it may; reuse or close one"}"#,
);

/// What one listener allows its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From the connection's start, or the end of the previous response, to the end of
    /// the request headers.
    pub header_read_timeout: Duration,
    /// The longest a connection may move no byte; a stalled body upload or a client that
    /// stops reading its response is closed after it.
    pub idle_timeout: Duration,
    /// Open connections; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Open connections from one peer address; a further one from it is answered 429 and
    /// closed at once (it does not wait: it would hold a place in the backlog).
    pub max_connections_per_address: usize,
    /// Peers not held to `max_connections_per_address`: the trusted proxies, whose
    /// connections carry many clients (`TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            trusted_proxies: Arc::from([]),
        }
    }
}

/// Runs `main` to completion on a multi-threaded runtime, then shuts the runtime down,
/// waiting at most `grace` for blocking jobs still running: their threads are left behind
/// for the process's exit instead of being waited for (what dropping a runtime does).
pub fn run_then_shut_down<T>(
    main: impl std::future::Future<Output = T>,
    grace: Duration,
) -> std::io::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let output = runtime.block_on(main);
    runtime.shutdown_timeout(grace);
    Ok(output)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish and closes idle connections. With `tls`, each connection
/// first completes a TLS handshake within the header-read timeout.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<TlsAcceptor>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.map_err(std::io::Error::other)?,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a connection reset before accept: the
                    // listener itself is fine, so wait a little instead of spinning.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let is_proxy = limits
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer.ip()));
        let cap = if is_proxy {
            usize::MAX
        } else {
            limits.max_connections_per_address
        };
        let Some(address_slot) = per_address.admit(client_of(peer.ip()), cap) else {
            tracing::debug!(%peer, "refusing a connection over its address's cap");
            refuse(stream, &refusals);
            continue;
        };
        let connection = Connection {
            peer,
            router: router.clone(),
            limits: limits.clone(),
            stopping: stopping.clone(),
            _slots: (slot, address_slot),
        };
        match &tls {
            None => {
                tokio::spawn(connection.serve(stream));
            }
            Some(tls) => {
                let acceptor = tls.current();
                tokio::spawn(async move {
                    let deadline = connection.limits.header_read_timeout;
                    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake not done in {deadline:?}"),
                    }
                });
            }
        }
    }
    drop(listener);
    // Nobody may be listening any more when every connection has closed already.
    let _ = stop.send(true);
    // Each open connection holds a slot: having them all back means all have closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _drained = slots
        .acquire_many(all)
        .await
        .map_err(std::io::Error::other)?;
    Ok(())
}

/// One accepted connection and what it holds while it is open.
struct Connection {
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    stopping: watch::Receiver<bool>,
    _slots: (OwnedSemaphorePermit, AddressSlot),
}

impl Connection {
    async fn serve<S>(mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let limits = self.limits.clone();
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: Arc::clone(&activity),
        });
        let service = TowerToHyperService::new(self.router.clone().map_request(
            move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // Above the registry's own limits, which answer problem+json (`head_limits`).
            .max_buf_size(crate::head_limits::HYPER_HEAD_BUFFER);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                    }
                    return;
                }
                _ = self.stopping.wait_for(|stop| *stop), if !draining => {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                () = tokio::time::sleep_until(activity.deadline(limits.idle_timeout)) => {
                    if activity.idle_for() >= limits.idle_timeout {
                        tracing::debug!(%peer, "closing a connection idle for {:?}", limits.idle_timeout);
                        return;
                    }
                }
            }
        }
    }
}

/// Whom a peer address counts as for the per-address cap: an IPv4 address (an IPv4-mapped
/// IPv6 one included) as itself, an IPv6 address by its /64, the smallest network a site
/// is given, so that one host cannot take a fresh address for every connection.
fn client_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
    }
}

/// Open connections per peer address of one listener.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    /// A place for one more connection from `address`, unless it has `cap` open already.
    fn admit(self: &Arc<Self>, address: IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(address).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            address,
            counts: Arc::clone(self),
        })
    }
}

/// One open connection's place in its address's count, given back when it closes.
struct AddressSlot {
    address: IpAddr,
    counts: Arc<PerAddress>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Answers a connection over its address's cap with 429 and closes it. The answer fits in
/// a fresh socket's send buffer, so it is written without waiting. Closing a socket whose
/// client has sent bytes nobody read resets it, which may destroy the answer before the
/// client reads it; so the rest of what the client sends is read and dropped for a moment
/// before closing, by at most [`REFUSALS_IN_FLIGHT`] refusals at once (the next ones are
/// closed at once, so refusing costs a bounded amount whatever the rate of connections).
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>) {
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{TOO_MANY_CONNECTIONS}",
        TOO_MANY_CONNECTIONS.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    let Ok(permit) = Arc::clone(refusals).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(read) if read > 0) {}
        })
        .await;
    });
}

/// When a connection last moved a byte, as milliseconds after it was opened.
struct Activity {
    opened: Instant,
    last_millis: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_millis: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_millis.load(Ordering::Relaxed))
    }

    fn deadline(&self, idle_timeout: Duration) -> Instant {
        self.last() + idle_timeout
    }

    fn idle_for(&self) -> Duration {
        self.last().elapsed()
    }
}

/// A socket (plain or TLS) that notes every byte it moves in its [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn an_ipv6_network_counts_as_one_client_and_ipv4_addresses_each_as_their_own() {
        let client = |text: &str| client_of(text.parse().expect("an address"));
        assert_eq!(client("2001:db8:1:2::1"), client("2001:db8:1:2:ffff::9"));
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"));
        assert_ne!(client("192.0.2.1"), client("192.0.2.2"));
        assert_eq!(client("::ffff:192.0.2.1"), client("192.0.2.1"));
    }

    #[test]
    fn shutdown_does_not_wait_for_a_runaway_blocking_job() {
        let finished = Arc::new(AtomicBool::new(false));
        let (release_job, job_released) = mpsc::channel::<()>();
        let (shut_down, has_shut_down) = mpsc::channel();
        let job_finished = Arc::clone(&finished);
        std::thread::spawn(move || {
            let served = run_then_shut_down(
                async move {
                    // A job that runs on after its request was answered, until told to stop.
                    drop(tokio::task::spawn_blocking(move || {
                        let _ = job_released.recv();
                        job_finished.store(true, Ordering::SeqCst);
                    }));
                    "served"
                },
                Duration::from_millis(50),
            );
            let _ = shut_down.send(served.ok());
        });
        let outcome = has_shut_down
            .recv_timeout(Duration::from_secs(60))
            .expect("the runtime shut down with the job still running");
        assert_eq!(outcome, Some("served"));
        assert!(
            !finished.load(Ordering::SeqCst),
            "the job had not ended when the runtime shut down"
        );
        let _ = release_job.send(());
    }
}
