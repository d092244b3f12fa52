//! One connection: hyper serving it, and the timers that close it when its request head is
//! too slow or it has been idle too long (the rules are in `serve`'s first comment).

use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::ConnectionLimits;

/// The most a connection buffers of a request head; a longer head is refused with 431 (the
/// application refuses heads over 16 KiB itself, with a problem document). Bounds what slow heads
/// can hold: `MAX_CONNECTIONS` × 32 KiB.
const MAX_HEAD_BUFFER: usize = 32 * 1024;

pub(super) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    mut shed: watch::Receiver<()>,
) {
    tracing::trace!(%peer, "connection accepted");
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let in_progress = activity.request_started();
            let response = app.clone().oneshot(request);
            async move {
                let response = response.await;
                drop(in_progress);
                response
            }
        })
    };
    let mut conn = pin!(
        hyper::server::conn::http1::Builder::new()
            // Timed here instead, see `Activity`: hyper's would also cut idle connections.
            .header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size(MAX_HEAD_BUFFER)
            .serve_connection(io, service)
    );
    let timer = tokio::time::sleep(Duration::ZERO);
    let mut timer = pin!(timer);
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(&limits);
        if let Some(deadline) = deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            result = conn.as_mut() => {
                match result {
                    Ok(()) => tracing::trace!(%peer, "connection closed"),
                    Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = &mut timer, if deadline.is_some() => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, "closing a connection: request head too slow, or idle");
                    return;
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            changed = shed.changed(), if !stopping => {
                if changed.is_err() || activity.idle_between_requests() {
                    // hyper closes an idle connection at once, and otherwise after the response
                    // it may still be writing.
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What one connection is doing, as its timers need to know. Times are milliseconds since the
/// connection's start.
struct Activity {
    start: Instant,
    /// The last byte read or written.
    last_io: AtomicU64,
    /// When the head of the next request began ([`NONE`]: no byte of it yet). The first
    /// request's head is counted from the start.
    head_since: AtomicU64,
    in_progress: AtomicUsize,
    /// At least one request was answered: the connection is a keep-alive one.
    answered: AtomicBool,
    /// Wakes the connection's task to set its timer again.
    changed: tokio::sync::Notify,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_progress.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
        {
            self.head_since.store(now, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        InProgress(self.clone())
    }

    /// When the connection is to be closed if nothing changes; `None` while a request is in
    /// progress.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_progress.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::Relaxed) {
            NONE => Some(self.at(self.last_io.load(Ordering::Relaxed)) + limits.keep_alive_timeout),
            since => Some(self.at(since) + limits.header_read_timeout),
        }
    }

    /// Between two requests, with no byte of the next: closing loses nothing.
    fn idle_between_requests(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
            && self.in_progress.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
    }
}

/// A request being answered; dropped when its response is ready (or the request abandoned).
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.in_progress.fetch_sub(1, Ordering::Relaxed);
        activity.answered.store(true, Ordering::Relaxed);
        activity.wrote();
        activity.changed.notify_one();
    }
}

/// The connection's socket, telling [`Activity`] of every byte moved.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
