//! The per-client limits in Redis (`REDIS_URL`), shared by every instance that uses the same
//! Redis and `REDIS_KEY_PREFIX`.
//!
//! **One round trip per limited request**: `EVALSHA` of [`GCRA`], an atomic Lua script (the
//! generic cell rate algorithm), through [`redis::Script`], which loads the script again when
//! Redis answers NOSCRIPT (after a restart). The script reads Redis's own clock (`TIME`), so the
//! instances' clocks never matter. A client's state is one key,
//! `{REDIS_KEY_PREFIX}ratelimit:{group}:{network}`, holding its theoretical arrival time, with a
//! TTL that ends when its budget would be full again: the keys are bounded by the client
//! networks seen in the last minute, and a key is only ever made of the group's name and the
//! client's network as [`crate::net::client_network`] computes it (never text from a header).
//!
//! The budget is the in-memory bucket's: `N` a minute with a burst of `N`. With the emission
//! interval `T = 60 s / N`, a request at `now` passes if `max(tat, now) + T - now <= N·T`, and
//! then `tat` becomes `max(tat, now) + T`; refused, nothing is written and the wait is
//! `max(tat, now) + T - N·T - now`, exactly the bucket's `(1 - tokens) / rate`.
//!
//! **When Redis is away.** Each call waits at most `REDIS_TIMEOUT_MS`. An error or a timeout
//! puts the instance on its own in-memory limits (one warn line when it switches, counted), and
//! from then on only one request a second tries Redis again (the others do not wait for it);
//! when one gets an answer, the limits are shared again (one info line). A request is never
//! refused, nor answered 5xx, because Redis is away. The [`redis::aio::ConnectionManager`]
//! reconnects by itself.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Group;

/// How long, while on the local limits, before one request tries Redis again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// GCRA in one atomic step. KEYS[1]: the client's key. ARGV[1]: the emission interval in
/// microseconds (60 s / N); ARGV[2]: N, the burst. Returns `{1, 0}` when the request passes,
/// `{0, wait}` (microseconds) when it is refused. Microseconds since the epoch (about 1.8e15) are
/// exact in Lua's doubles.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored) or now, now)
end
local next_tat = tat + interval
local wait = next_tat - burst * interval - now
if wait > 0 then
  return {0, math.ceil(wait)}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return {1, 0}
";

/// Redis's part of the limiter.
pub struct Shared {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    /// Where Redis is, for the log (never the URL, which may carry a password).
    address: String,
    /// True while the instance counts on its own limits.
    fallback: AtomicBool,
    /// While on the local limits: when (ms since `epoch`) the next request may try Redis.
    next_probe_ms: AtomicU64,
    epoch: Instant,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    round_trips: AtomicU64,
}

/// Counters of the shared limits, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Calls to Redis that failed or did not answer within `REDIS_TIMEOUT_MS`.
    pub errors: u64,
    /// Times the instance switched to its own limits.
    pub fallbacks: u64,
    /// Limited requests Redis decided.
    pub round_trips: u64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A client for `url` (not connected yet: see [`Shared::start`]).
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("REDIS_URL is not usable ({:?})", e.kind()))?;
        let address = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            // A reconnection in the background: a few quick tries, then the next request that
            // tries Redis (one a second while on the local limits) starts another.
            .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis client ({:?})", e.kind()))?;
        Ok(Self {
            connection,
            script: redis::Script::new(GCRA),
            prefix: prefix.to_string(),
            timeout,
            address,
            fallback: AtomicBool::new(false),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            errors: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
        })
    }

    /// One `PING` at start (waiting up to a second, or `REDIS_TIMEOUT_MS` if longer), and the
    /// script loaded: the log says whether the limits start shared or local.
    pub async fn start(&self) {
        let mut connection = self.connection.clone();
        let wait = self.timeout.max(Duration::from_secs(1));
        let ready = tokio::time::timeout(wait, async {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await?;
            self.script.load_async(&mut connection).await
        })
        .await;
        match ready {
            Ok(Ok(_)) => tracing::info!(
                redis = %self.address,
                prefix = %self.prefix,
                "rate limits shared through Redis"
            ),
            Ok(Err(e)) => self.failed(&format!("{:?}", e.kind())),
            Err(_) => self.failed("no answer in time"),
        }
    }

    pub fn on_fallback(&self) -> bool {
        self.fallback.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> SharedStats {
        SharedStats {
            errors: self.errors.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
        }
    }

    /// The key of a client's budget in a group.
    fn key(&self, group: Group, network: IpAddr) -> String {
        format!("{}ratelimit:{}:{network}", self.prefix, group.name())
    }

    /// Redis's decision on one request of `network` in `group` (`limit` a minute), or `None`:
    /// Redis did not answer (or is not being tried this second), and the caller decides with the
    /// instance's own buckets.
    pub async fn check(
        &self,
        group: Group,
        network: IpAddr,
        limit: u32,
    ) -> Option<Result<(), Duration>> {
        let probe = self.on_fallback();
        if probe && !self.claim_probe() {
            return None;
        }
        let interval_us = 60_000_000_u64.div_ceil(u64::from(limit.max(1)));
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(self.key(group, network));
        invocation.arg(interval_us).arg(limit);
        let call = invocation.invoke_async::<(i64, i64)>(&mut connection);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((allowed, wait_us))) => {
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                // Only the request that tried Redis on purpose ends the fallback: one that was
                // under way when another failed does not (the switches stay one a second at
                // most, and so do their log lines).
                if probe && self.fallback.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        redis = %self.address,
                        "Redis answers again: rate limits shared again"
                    );
                }
                Some(if allowed == 1 {
                    Ok(())
                } else {
                    Err(Duration::from_micros(wait_us.max(1) as u64))
                })
            }
            Ok(Err(e)) => {
                self.failed(&format!("{:?}", e.kind()));
                None
            }
            Err(_) => {
                self.failed("no answer within REDIS_TIMEOUT_MS");
                None
            }
        }
    }

    /// Counts a failed call; the first after Redis answered switches to the local limits, said
    /// once in the log. Redis is tried again a second later.
    fn failed(&self, why: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.next_probe_ms.store(
            self.now_ms() + PROBE_EVERY.as_millis() as u64,
            Ordering::Relaxed,
        );
        if !self.fallback.swap(true, Ordering::Relaxed) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                redis = %self.address,
                error = why,
                "Redis is unreachable: rate limits are per instance until it answers"
            );
        }
    }

    /// While on the local limits: true for the one request a second that tries Redis.
    fn claim_probe(&self) -> bool {
        let now = self.now_ms();
        let due = self.next_probe_ms.load(Ordering::Relaxed);
        now >= due
            && self
                .next_probe_ms
                .compare_exchange(
                    due,
                    now + PROBE_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}
