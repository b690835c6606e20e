//! The admin listener's accept loop: HTTP/1 with limits a slow or idle client cannot
//! outlast, so a few thousand half-open connections cannot pin memory and file
//! descriptors (`axum::serve` sets no header timeout), and one peer cannot hold the
//! connections everyone else needs (see [`crate::peers`]).
//!
//! ```text
//!  accept ─▶ a slot under the peer (api.max_connections_per_peer) and the listener
//!            (api.max_connections); full: the oldest connection not serving a
//!            request gives its slot up, and only if none can, the newcomer is closed
//!    connection task: hyper http1, headers within api.header_read_timeout
//!                     (counted from the connection's start and after each response,
//!                      so it is also the keep-alive idle limit)
//!                     closed when no byte moves either way for api.idle_timeout
//!                     (a stalled body or a client that stops reading)
//! ```

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
};
use tower::ServiceExt as _;

use crate::peers::{Admission, Connections};

/// The most a connection may buffer, so about the largest request head (request line
/// and headers) accepted: far above any real request to this API.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Limits on the admin listener's connections (`api.*` in the config).
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Open connections at most, all peers together.
    pub max_connections: usize,
    /// Open connections of one peer (an IPv4 address or an IPv6 /64) at most.
    pub max_connections_per_peer: usize,
}

/// How many connections hold a slot right now (for tests and metrics).
#[derive(Debug, Clone, Default)]
pub struct ConnectionGauge(Arc<AtomicUsize>);

impl ConnectionGauge {
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests
/// finish (the caller bounds how long it waits).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    gauge: ConnectionGauge,
    shutdown: impl Future<Output = ()>,
) {
    let table = Connections::new(
        limits.max_connections,
        limits.max_connections_per_peer,
        gauge.0.clone(),
    );
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A request head larger than this is answered 431; hyper's default (about
        // 400 KiB) let every half-open connection pin that much while its headers
        // trickled in.
        .max_buf_size(MAX_HEAD_BYTES);
    tokio::pin!(shutdown);
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "admin API: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admitted = match table.admit(peer.ip()) {
            Admission::Admitted(a) => a,
            Admission::Refused => {
                tracing::debug!(peer = %peer.ip(), "admin API: connection refused, no idle connection could make room for it");
                drop(sock);
                continue;
            }
        };
        if admitted.evicted {
            tracing::debug!(peer = %peer.ip(), "admin API: closed an idle connection to make room");
        }
        let _ = sock.set_nodelay(true);
        let activity = Activity::default();
        let io = TokioIo::new(Watched {
            inner: sock,
            activity: activity.clone(),
        });
        let slot = admitted.slot.clone();
        let service = {
            let app = app.clone();
            let slot = slot.clone();
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                // Not evicted while it serves this request.
                let serving = slot.serving();
                let app = app.clone();
                async move {
                    let res = app.oneshot(req).await;
                    drop(serving);
                    res
                }
            })
        };
        let conn = graceful.watch(http.serve_connection(io, service));
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "admin API connection ended with an error");
                },
                () = activity.idle_for(idle) => {
                    tracing::debug!(?idle, "admin API connection idle; closed");
                }
                () = slot.closed() => {}
            }
            drop(admitted);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// When a connection last moved a byte, in milliseconds since `start`.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::default(),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A socket that records when it last read or wrote a byte.
struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
