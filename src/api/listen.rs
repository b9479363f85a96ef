//! The connection layer: accepts TCP connections, does TLS, and serves HTTP/1.1 and HTTP/2 on
//! them, under limits that no client (slow, idle or numerous) can exhaust.
//!
//! - **Connections**: at most [`ConnectionLimits::max_connections`] at once, and at most
//!   `max_connections_per_ip` from one address; a connection over either is closed at once.
//! - **TLS handshakes**: at most `max_handshakes` at once (each costs CPU), and a sixteenth of
//!   them from one address; a connection waits for its turn within `handshake_timeout`, which
//!   also bounds the handshake itself.
//! - **Request headers**: a connection must start its first request within
//!   `header_read_timeout` of being ready (whatever the protocol), and an HTTP/1.1 connection
//!   must deliver each next request's headers within it too, so an idle HTTP/1.1 connection is
//!   closed after this long.
//! - **Idle**: a connection with no request in flight (streaming responses such as watches
//!   count as in flight) for `idle_timeout` is closed gracefully (HTTP/2 included, whose
//!   keep-alive pings also detect dead peers).
//!
//! Shutdown: on the signal, every connection finishes its in-flight requests and closes;
//! [`serve`] returns when all are closed or `drain` has passed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long an idle connection that was told to close may take to do so.
const IDLE_GOODBYE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long in-flight requests get to finish on shutdown.
    pub drain: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            max_connections_per_ip: 2_500,
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            drain: Duration::from_secs(30),
        }
    }
}

/// Open connections per client address, and the address's own share of TLS handshakes.
struct PerIp {
    table: Mutex<HashMap<IpAddr, (usize, Arc<Semaphore>)>>,
    handshakes_per_ip: usize,
}

impl PerIp {
    fn new(handshakes_per_ip: usize) -> Self {
        PerIp {
            table: Mutex::new(HashMap::new()),
            handshakes_per_ip,
        }
    }

    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut m = self.table.lock();
        let (n, handshakes) = m
            .entry(ip)
            .or_insert_with(|| (0, Arc::new(Semaphore::new(self.handshakes_per_ip))));
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
            handshakes: handshakes.clone(),
        })
    }
}

struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
    /// This address's handshakes in progress: one address cannot take every handshake slot.
    handshakes: Arc<Semaphore>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.table.table.lock();
        if let Some((n, _)) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then drains for at most `limits.drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let per_ip = Arc::new(PerIp::new((limits.max_handshakes / 16).max(1)));
    let acceptor = tls.map(TlsAcceptor::from);
    let limits = Arc::new(limits);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: back off briefly rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: too many connections");
            continue;
        };
        let Some(ip_slot) = per_ip.enter(peer.ip(), limits.max_connections_per_ip) else {
            tracing::debug!(%peer, "connection refused: too many connections from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, acceptor, handshakes, limits, shutdown) = (
            app.clone(),
            acceptor.clone(),
            handshakes.clone(),
            limits.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_connection(stream, peer, app, &limits, shutdown).await,
                Some(acceptor) => {
                    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
                    // Waits for a turn (within the deadline) rather than refusing: first among
                    // its own address's handshakes, then among everyone's. A burst of silent
                    // connections from one address delays that address, not the others.
                    let turn = async {
                        let own = ip_slot.handshakes.clone().acquire_owned().await.ok()?;
                        let any = handshakes.clone().acquire_owned().await.ok()?;
                        Some((own, any))
                    };
                    let Ok(Some(_handshaking)) = tokio::time::timeout_at(deadline, turn).await
                    else {
                        tracing::debug!(%peer, "connection closed: no TLS handshake slot in time");
                        return;
                    };
                    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    drop(_handshaking);
                    serve_connection(tls, peer, app, &limits, shutdown).await;
                }
            }
        });
    }
    // Every connection holds a slot until it closes: wait for all of them to come back.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout");
    }
}

/// What a connection is doing, for the idle timeout.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Requests started on the connection so far.
    started: AtomicUsize,
    /// Milliseconds since the connection opened, when the last request started or ended.
    last_change_ms: AtomicU64,
}

/// One request (and its response body) in flight on a connection.
struct InFlight {
    activity: Arc<Activity>,
    opened: Instant,
}

impl InFlight {
    fn start(activity: &Arc<Activity>, opened: Instant) -> Self {
        activity.started.fetch_add(1, Ordering::SeqCst);
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            activity: activity.clone(),
            opened,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first, then the count: whoever sees the count drop sees the new time.
        self.activity
            .last_change_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    limits: &ConnectionLimits,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let opened = Instant::now();
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let in_flight = InFlight::start(&activity, opened);
            let app = app.clone();
            async move {
                let resp = app.oneshot(req.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| {
                    Body::new(TrackedBody {
                        body,
                        _in_flight: in_flight,
                    })
                }))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(128);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut idle_check = tokio::time::interval(
        limits
            .idle_timeout
            .min(limits.header_read_timeout)
            .min(Duration::from_secs(5)),
    );
    // Once closing, a connection gets this long to finish; a peer that never answers the
    // HTTP/2 goodbye (or keeps a response open) is then dropped.
    let closing_deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(closing_deadline);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = &mut closing_deadline, if closing => return,
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
                closing_deadline.as_mut().reset(tokio::time::Instant::now() + limits.drain);
            }
            _ = idle_check.tick(), if !closing => {
                // A connection that never starts a request (whatever protocol it claims, or
                // none) is dropped once the header deadline has passed.
                if activity.started.load(Ordering::SeqCst) == 0
                    && opened.elapsed() >= limits.header_read_timeout
                {
                    tracing::debug!(%peer, "closing a connection that sent no request");
                    return;
                }
                let in_flight = activity.in_flight.load(Ordering::SeqCst);
                let idle_since = Duration::from_millis(activity.last_change_ms.load(Ordering::SeqCst));
                if in_flight == 0
                    && opened.elapsed().saturating_sub(idle_since) >= limits.idle_timeout
                {
                    tracing::debug!(%peer, "closing an idle connection");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    closing_deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + IDLE_GOODBYE);
                }
            }
        }
    }
}
