//! The HTTP/1.1 server loop, written out instead of `axum::serve` (which it mirrors: hyper-util's
//! `TokioIo`, a task per connection, graceful shutdown) for what that cannot be told:
//!
//! - **Slow request heads.** A connection must deliver a request's whole head (request line and
//!   headers) within `HEADER_READ_TIMEOUT_SECONDS`, counted from the connection's start for its
//!   first request and from the head's first byte for the next ones; otherwise it is closed.
//!   A connection that connects and sends nothing, or trickles a header a byte at a time, holds
//!   its slot for that long at most, and at most 32 KiB of buffer.
//! - **Idle connections.** A connection that has no request in progress and has not moved a byte
//!   for `KEEP_ALIVE_TIMEOUT_SECONDS` is closed.
//! - **A cap on open connections** (`MAX_CONNECTIONS`). At the cap, the loop stops accepting:
//!   further connections wait in the kernel's listen backlog (and past it the kernel refuses
//!   them) until a connection closes. Reaching the cap logs one warning per burst, and asks the
//!   connections idle between requests to close, so that slots held by idle keep-alive
//!   connections go to clients waiting with a request.
//! - **A cap per client** (`MAX_CONNECTIONS_PER_CLIENT`, see `per_client`): a connection over
//!   it is closed at once, so that one address cannot hold the server at `MAX_CONNECTIONS`.
//! - **A shutdown deadline** (`SHUTDOWN_GRACE_SECONDS`): connections still open that long after
//!   the shutdown signal are closed.
//!
//! A request in progress is never cut short by these: `REQUEST_TIMEOUT_SECONDS` bounds it.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

mod conn;
mod per_client;

use conn::{Timeouts, serve_connection};
use per_client::PerClient;

use crate::net::IpNet;

/// What the server allows each connection, and how many at once.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Clients are IPv6 networks of this many bits.
    pub ipv6_prefix: u8,
    /// Peers exempt from the per-client cap: the trusted proxies.
    pub exempt: Vec<IpNet>,
    /// How long in-flight connections may take to finish after the shutdown signal.
    pub shutdown_grace: Duration,
}

/// File descriptors kept back from the open-file limit for everything but client connections:
/// the database pool (added on top), mail, the listener, the log.
const RESERVED_FILES: u64 = 128;
/// The default cap, whatever the open-file limit allows.
const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;

/// Raises this process's soft open-file limit to its hard limit (what systemd and most
/// distributions expect of a server that needs many sockets) and returns the soft limit in
/// force; `None` where there is no such limit to read.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection cap: `configured`, or 10 000 where the open-file limit leaves room for them
/// beside `other_files` (the database pool) and [`RESERVED_FILES`], and what it does leave otherwise.
pub fn max_connections(
    configured: Option<usize>,
    open_file_limit: Option<u64>,
    other_files: u64,
) -> usize {
    if let Some(n) = configured {
        if let Some(limit) = open_file_limit {
            let room = limit.saturating_sub(RESERVED_FILES + other_files);
            if n as u64 > room {
                tracing::warn!(
                    max_connections = n,
                    open_file_limit = limit,
                    "MAX_CONNECTIONS is more than the open-file limit leaves room for: accepting will \
                     fail (too many open files) before the cap is reached; raise the limit (ulimit -n, \
                     LimitNOFILE=) or lower MAX_CONNECTIONS"
                );
            }
        }
        return n;
    }
    let room = open_file_limit.map_or(DEFAULT_MAX_CONNECTIONS, |limit| {
        limit.saturating_sub(RESERVED_FILES + other_files)
    });
    room.clamp(1, DEFAULT_MAX_CONNECTIONS) as usize
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets every
/// request in progress finish, closes idle connections, and returns when no connection is left,
/// or once `shutdown_grace` has passed, after closing those that are.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let capacity = Arc::new(Capacity {
        slots: Arc::new(Semaphore::new(max)),
        max,
        at_cap: AtomicBool::new(false),
    });
    let per_client = Arc::new(PerClient::new(
        limits.max_connections_per_client,
        limits.ipv6_prefix,
        limits.exempt.clone(),
    ));
    let timeouts = Timeouts {
        header_read: limits.header_read_timeout,
        keep_alive: limits.keep_alive_timeout,
    };
    // Every connection watches these: `stop` for the graceful shutdown, `shed` to close if idle,
    // `close` to close at once (the grace period is over).
    let (stop, _) = watch::channel(false);
    let (shed, _) = watch::channel(());
    let (close, _) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut accept_failing = false;
    'accept: loop {
        let slot = match capacity.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                capacity.reached();
                // Ask idle connections to close, and again while waiting: others may have
                // become idle since.
                let mut ask = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tokio::select! {
                        slot = capacity.slots.clone().acquire_owned() => {
                            break slot.expect("the semaphore is never closed");
                        }
                        _ = ask.tick() => {
                            shed.send_replace(());
                        }
                        () = &mut shutdown => break 'accept,
                    }
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_failing = false;
                    accepted
                }
                Err(e) => {
                    drop(slot);
                    if !is_connection_error(&e) {
                        // Out of file descriptors, most likely: say so once, make room, retry.
                        if !accept_failing {
                            accept_failing = true;
                            tracing::error!(error = %e, "cannot accept connections; closing idle ones and retrying");
                        }
                        shed.send_replace(());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(counted) = per_client.admit(peer.ip()) else {
            // Closed at once; the slot is free again.
            tracing::debug!(%peer, "connection closed: MAX_CONNECTIONS_PER_CLIENT");
            continue;
        };
        let connection = serve_connection(
            stream,
            peer,
            app.clone(),
            timeouts,
            stop.subscribe(),
            shed.subscribe(),
            close.subscribe(),
        );
        let capacity = capacity.clone();
        tokio::spawn(async move {
            connection.await;
            drop(counted);
            drop(slot);
            capacity.released();
        });
    }
    drop(listener);
    stop.send_replace(true);
    // Every connection holds a slot until it is closed: all slots back, all connections done.
    let all_closed = capacity.slots.acquire_many(max as u32);
    if tokio::time::timeout(limits.shutdown_grace, all_closed)
        .await
        .is_err()
    {
        tracing::warn!(
            open = max - capacity.slots.available_permits(),
            shutdown_grace_seconds = limits.shutdown_grace.as_secs(),
            "SHUTDOWN_GRACE_SECONDS is over: closing the connections still open"
        );
        close.send_replace(true);
        let _ = capacity.slots.acquire_many(max as u32).await;
    }
}

/// The connection slots, and whether the cap was reached: true from reaching it until the open
/// connections are back under 90% of it, so that a burst is one warning however long it lasts.
struct Capacity {
    slots: Arc<Semaphore>,
    max: usize,
    at_cap: AtomicBool,
}

impl Capacity {
    fn reached(&self) {
        if !self.at_cap.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_connections = self.max,
                "MAX_CONNECTIONS reached: new connections wait in the listen backlog until open \
                 ones close; idle keep-alive connections are being closed"
            );
        }
    }

    /// After a connection has given its slot back.
    fn released(&self) {
        let free = self.slots.available_permits();
        if self.at_cap.load(Ordering::Relaxed)
            && free >= (self.max / 10).max(1)
            && self.at_cap.swap(false, Ordering::Relaxed)
        {
            tracing::info!(
                open = self.max - free,
                max_connections = self.max,
                "open connections are back under MAX_CONNECTIONS"
            );
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_fits_the_open_file_limit() {
        assert_eq!(max_connections(None, Some(1_048_576), 10), 10_000);
        assert_eq!(max_connections(None, Some(1024), 10), 1024 - 128 - 10);
        assert_eq!(max_connections(None, Some(100), 10), 1);
        assert_eq!(max_connections(None, None, 10), 10_000);
        assert_eq!(max_connections(Some(50_000), Some(1024), 10), 50_000);
    }
}
