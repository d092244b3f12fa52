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
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt as _;

/// The most a connection buffers of a request head; a longer head is refused with 431 (the
/// application refuses heads over 16 KiB itself, with a problem document). Bounds what slow heads
/// can hold: `MAX_CONNECTIONS` × 32 KiB.
const MAX_HEAD_BUFFER: usize = 32 * 1024;

/// How long a connection may take over its request heads, and stay idle.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub header_read: Duration,
    pub keep_alive: Duration,
}

pub(super) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
    mut shed: watch::Receiver<()>,
    mut close: watch::Receiver<bool>,
) {
    tracing::trace!(%peer, "connection accepted");
    let _ = stream.set_nodelay(true);
    #[cfg(unix)]
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_progress = activity.request_started(!request.body().is_end_stream());
            let mut request =
                request.map(|body| Watched::new(body, &activity, Activity::body_read));
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = app.clone().oneshot(request);
            let activity = activity.clone();
            async move {
                let response = response.await;
                drop(in_progress);
                response.map(|r| r.map(|body| Watched::new(body, &activity, Activity::body_sent)))
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
    // The timer is never later than the connection's deadline, without being told of every
    // change: it is set to the deadline, or to a check within the shortest timeout if that is
    // sooner (or no deadline is running, a request being served). A deadline only ever starts
    // at least that far after the moment it starts, so the timer, set before, fires no later
    // than it; firing, it looks again. (Telling the task of each request's start and end cost
    // a wake-up and a timer reset each.)
    let check_every = timeouts.header_read.min(timeouts.keep_alive);
    let timer = tokio::time::sleep(check_every);
    let mut timer = pin!(timer);
    let mut armed = timer.deadline();
    let mut stopping = false;
    loop {
        let next_check = Instant::now() + check_every;
        let due = activity
            .deadline(&timeouts)
            .map_or(next_check, |deadline| deadline.min(next_check));
        if due != armed {
            timer.as_mut().reset(due);
            armed = due;
        }
        tokio::select! {
            result = conn.as_mut() => {
                match result {
                    Ok(()) => tracing::trace!(%peer, "connection closed"),
                    Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                }
                return;
            }
            () = &mut timer => {
                if activity.deadline(&timeouts).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, "closing a connection: request head too slow, or idle");
                    // Reset rather than closed: the kernel is not to go on sending what a slow
                    // reader left unread.
                    #[cfg(unix)]
                    reset_on_close(fd);
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
            _ = close.changed() => {
                tracing::debug!(%peer, "closing a connection: the shutdown grace period is over");
                #[cfg(unix)]
                reset_on_close(fd);
                return;
            }
        }
    }
}

/// Sets SO_LINGER to zero on `fd`, a socket this task still owns: closing it then resets the
/// connection and drops its unsent bytes at once.
#[cfg(unix)]
fn reset_on_close(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the open socket of this connection (not yet closed: the connection owning
    // it is alive), and setsockopt only reads the struct we pass.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// What one connection is doing, as its timers need to know. Times are milliseconds since the
/// connection's start.
///
/// A connection is *busy* from a request's start until its response has been handed whole to
/// the socket; otherwise it is between requests. While busy there is no head timer; once the
/// handler has answered, the response must be taken within the keep-alive timeout of the
/// request's end (writing does not count as activity: a client reading a few bytes a minute
/// would otherwise keep its connection for ever). Between requests, the first byte of the next
/// head starts the head timer; bytes of it read while busy (pipelined) start it when the
/// connection stops being busy.
struct Activity {
    start: Instant,
    /// The last byte read, or the end of the last request: the idle timer counts from it.
    last_io: AtomicU64,
    /// When the head of the next request began ([`NONE`]: no byte of it yet). The first
    /// request's head is counted from the start.
    head_since: AtomicU64,
    in_progress: AtomicUsize,
    busy: AtomicBool,
    /// The request's body has been read whole (or it has none): bytes read now are the next
    /// request's.
    body_read: AtomicBool,
    /// The response's body has been handed to hyper whole.
    body_sent: AtomicBool,
    /// Bytes of the next request were read while busy.
    next_read: AtomicBool,
    /// The last read between requests went on past the end of a head (a pipelined request).
    past_head: AtomicBool,
    /// At least one request was answered: the connection is a keep-alive one.
    answered: AtomicBool,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            body_read: AtomicBool::new(true),
            body_sent: AtomicBool::new(true),
            next_read: AtomicBool::new(false),
            past_head: AtomicBool::new(false),
            answered: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn read(&self, bytes: &[u8]) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) {
            if self.body_read.load(Ordering::Relaxed) {
                self.next_read.store(true, Ordering::Relaxed);
            }
            return;
        }
        // Anything after the last head's end is the next request (or the body of this one,
        // which `request_started` tells apart).
        let past_head = bytes
            .windows(4)
            .rposition(|w| w == b"\r\n\r\n")
            .is_some_and(|end| end + 4 < bytes.len());
        self.past_head.store(past_head, Ordering::Relaxed);
        if self.head_since.load(Ordering::Relaxed) == NONE {
            self.head_since.store(now, Ordering::Relaxed);
        }
    }

    fn request_started(self: &Arc<Self>, has_body: bool) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        self.busy.store(true, Ordering::Relaxed);
        self.body_read.store(!has_body, Ordering::Relaxed);
        self.body_sent.store(false, Ordering::Relaxed);
        // A request without a body read with bytes after its head: those are the next one's.
        self.next_read.store(
            !has_body && self.past_head.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        InProgress(self.clone())
    }

    fn body_read(&self) {
        self.body_read.store(true, Ordering::Relaxed);
    }

    fn body_sent(&self) {
        self.body_sent.store(true, Ordering::Relaxed);
    }

    /// hyper has nothing left to write: a response handed over whole ends the busy time.
    fn flushed(&self) {
        if self.busy.load(Ordering::Relaxed)
            && self.in_progress.load(Ordering::Relaxed) == 0
            && self.body_sent.load(Ordering::Relaxed)
        {
            self.busy.store(false, Ordering::Relaxed);
            if self.next_read.swap(false, Ordering::Relaxed) {
                self.head_since.store(self.now(), Ordering::Relaxed);
            }
        }
    }

    /// When the connection is to be closed if nothing changes; `None` while a request is in
    /// progress.
    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        if self.in_progress.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::Relaxed) {
            NONE => Some(self.at(self.last_io.load(Ordering::Relaxed)) + timeouts.keep_alive),
            since => Some(self.at(since) + timeouts.header_read),
        }
    }

    /// Between two requests, with no byte of the next: closing loses nothing.
    fn idle_between_requests(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
            && !self.busy.load(Ordering::Relaxed)
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
        activity.last_io.store(activity.now(), Ordering::Relaxed);
    }
}

/// A request's or a response's body, telling [`Activity`] when it has been read or sent whole.
struct Watched<B> {
    inner: B,
    activity: Arc<Activity>,
    ended: fn(&Activity),
}

impl<B: Body> Watched<B> {
    fn new(inner: B, activity: &Arc<Activity>, ended: fn(&Activity)) -> Self {
        if inner.is_end_stream() {
            ended(activity);
        }
        Self {
            inner,
            activity: activity.clone(),
            ended,
        }
    }
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let result = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(result, Poll::Ready(None)) || self.inner.is_end_stream() {
            (self.ended)(&self.activity);
        }
        result
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, telling [`Activity`] of every byte read, and when hyper's writing is done.
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
            self.activity.read(&buf.filled()[before..]);
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes the socket once its own buffer is written out.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(result, Poll::Ready(Ok(()))) {
            self.activity.flushed();
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
