//! Per-client-address request limits: a budget per (endpoint group, client). IPv6 clients are
//! counted by a prefix of their address (`RATE_LIMIT_IPV6_PREFIX`, /64 by default), which one
//! subscriber usually holds whole.
//!
//! Two places keep the budgets. With `REDIS_URL` set, Redis ([`shared`]): one atomic script per
//! limited request, so every instance using that Redis (and `REDIS_KEY_PREFIX`) draws on one
//! budget per client. Without it, or while Redis does not answer within `REDIS_TIMEOUT_MS`, each
//! instance's own memory: the token buckets below. Both give the same budget: `N` a minute, a
//! burst of `N`, refilled evenly; a refusal says when the next request would pass.
//!
//! In memory, each group has its own table of at most `RATE_LIMIT_MAX_CLIENTS` clients, kept in least
//! recently seen order (an LRU: a lookup, an insertion and an eviction are each O(1)). A new
//! client in a full table takes the place of the one seen longest ago, so memory stays bounded
//! however many addresses arrive, a new client is always served, and a client seen recently
//! keeps its bucket. Forgetting a client only ever gives it a full bucket again, so the cost of a
//! flood of addresses is that the quietest clients' limits start over, never that anyone is
//! refused for it.

pub mod shared;

use std::collections::hash_map::RandomState;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use hashlink::LruCache;

use crate::clock::Clock;
use crate::config::RateLimits;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    Login,
    Register,
    Refresh,
    Mail,
}

impl Group {
    const ALL: [Group; 4] = [Group::Login, Group::Register, Group::Refresh, Group::Mail];

    fn index(self) -> usize {
        self as usize
    }

    /// The group's name in Redis keys and logs.
    pub fn name(self) -> &'static str {
        match self {
            Group::Login => "login",
            Group::Register => "register",
            Group::Refresh => "refresh",
            Group::Mail => "mail",
        }
    }
}

/// Where the limits are kept at the moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// In this instance's memory: no `REDIS_URL`.
    Memory,
    /// In Redis, shared by the instances using it.
    Redis,
    /// In this instance's memory because Redis does not answer (`REDIS_URL` is set).
    Fallback,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::Fallback => "fallback",
        }
    }
}

struct Bucket {
    tokens: f64,
    /// Unix ms, by the server's clock.
    at: i64,
}

/// Clients by their network, least recently seen first. SipHash with a random key: the keys
/// come from clients, who must not be able to aim them at one hash slot.
type Table = LruCache<IpAddr, Bucket, RandomState>;

pub struct RateLimiter {
    limits: RateLimits,
    tables: [Mutex<Table>; 4],
    clock: Clock,
    /// With `REDIS_URL`: the budgets in Redis (the tables above serve while it is away).
    shared: Option<shared::Shared>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Limits kept in this instance's memory only.
    pub fn new(limits: RateLimits, clock: Clock) -> Self {
        let capacity = limits.max_clients.max(1);
        Self {
            limits,
            clock,
            tables: Group::ALL
                .map(|_| Mutex::new(LruCache::with_hasher(capacity, RandomState::new()))),
            shared: None,
        }
    }

    /// Limits kept in Redis when `redis.url` is set (else as [`RateLimiter::new`]). No
    /// connection is made here: the first limited request (or [`RateLimiter::start`]) makes it.
    pub fn with_redis(
        limits: RateLimits,
        redis: &crate::config::RedisConfig,
        clock: Clock,
    ) -> Result<Self, String> {
        let mut limiter = Self::new(limits, clock);
        if let Some(url) = &redis.url {
            limiter.shared = Some(shared::Shared::new(
                url.expose(),
                &redis.key_prefix,
                redis.timeout,
            )?);
        }
        Ok(limiter)
    }

    /// At start, with Redis: one round trip, to say in the log whether the limits are shared
    /// (info) or local until Redis answers (warn). Never fails the start.
    pub async fn start(&self) {
        if let Some(shared) = &self.shared {
            shared.start().await;
        }
    }

    /// Where the limits are kept now.
    pub fn backend(&self) -> Backend {
        match &self.shared {
            None => Backend::Memory,
            Some(shared) if shared.on_fallback() => Backend::Fallback,
            Some(_) => Backend::Redis,
        }
    }

    /// Redis's counters (all zero without `REDIS_URL`).
    pub fn stats(&self) -> shared::SharedStats {
        self.shared
            .as_ref()
            .map(shared::Shared::stats)
            .unwrap_or_default()
    }

    fn per_minute(&self, group: Group) -> u32 {
        match group {
            Group::Login => self.limits.login,
            Group::Register => self.limits.register,
            Group::Refresh => self.limits.refresh,
            Group::Mail => self.limits.mail,
        }
    }

    fn table(&self, group: Group) -> std::sync::MutexGuard<'_, Table> {
        self.tables[group.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many clients a group's table holds now (never more than `RATE_LIMIT_MAX_CLIENTS`).
    pub fn clients(&self, group: Group) -> usize {
        self.table(group).len()
    }

    /// Takes one request's allowance; `Err` says how long until the next is allowed. With Redis
    /// this is one round trip, at most `REDIS_TIMEOUT_MS`; without an answer in time, the
    /// instance's own buckets decide.
    pub async fn check(&self, group: Group, ip: IpAddr) -> Result<(), Duration> {
        let limit = self.per_minute(group);
        if limit == 0 {
            return Ok(());
        }
        // Only the client's network reaches a key: never text from the request.
        let network = crate::net::client_network(ip, self.limits.ipv6_prefix);
        if let Some(shared) = &self.shared
            && let Some(decided) = shared.check(group, network, limit).await
        {
            return decided;
        }
        self.check_local_at(group, network, self.clock.now_ms())
    }

    #[cfg(test)]
    fn check_at(&self, group: Group, ip: IpAddr, now: i64) -> Result<(), Duration> {
        let network = crate::net::client_network(ip, self.limits.ipv6_prefix);
        self.check_local_at(group, network, now)
    }

    /// The in-memory bucket of `key` (a client network) takes one request's allowance.
    fn check_local_at(&self, group: Group, key: IpAddr, now: i64) -> Result<(), Duration> {
        let limit = self.per_minute(group);
        if limit == 0 {
            return Ok(());
        }
        let capacity = f64::from(limit);
        let per_second = capacity / 60.0;
        let mut table = self.table(group);
        // `get_mut` marks the client as just seen; `insert` drops the least recently seen one
        // when the table is full, so it never holds more than its capacity.
        if table.get_mut(&key).is_none() {
            table.insert(
                key,
                Bucket {
                    tokens: capacity,
                    at: now,
                },
            );
        }
        let bucket = table.get_mut(&key).expect("just inserted");
        bucket.tokens = (bucket.tokens
            + now.saturating_sub(bucket.at).max(0) as f64 / 1000.0 * per_second)
            .min(capacity);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn limiter(login: u32, max_clients: usize, ipv6_prefix: u8) -> RateLimiter {
        RateLimiter::new(
            RateLimits {
                login,
                register: 0,
                refresh: 0,
                mail: 0,
                ipv6_prefix,
                max_clients,
            },
            Clock::system(),
        )
    }

    #[test]
    fn a_burst_up_to_the_limit_then_refill() {
        let l = limiter(3, 100, 64);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = 1_000_000_i64;
        for _ in 0..3 {
            assert!(l.check_at(Group::Login, ip, t0).is_ok());
        }
        let wait = l.check_at(Group::Login, ip, t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(l.check_at(Group::Login, ip, t0 + 21_000).is_ok());
        // Another address, another group: their own allowance.
        assert!(
            l.check_at(Group::Login, "192.0.2.2".parse().unwrap(), t0)
                .is_ok()
        );
        assert!(l.check_at(Group::Register, ip, t0).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let l = limiter(1, 100, 64);
        let t0 = 1_000_000_i64;
        assert!(
            l.check_at(Group::Login, "2001:db8::1".parse().unwrap(), t0)
                .is_ok()
        );
        assert!(
            l.check_at(Group::Login, "2001:db8::ffff:2".parse().unwrap(), t0)
                .is_err()
        );
        assert!(
            l.check_at(Group::Login, "2001:db8:0:1::1".parse().unwrap(), t0)
                .is_ok()
        );
    }

    #[test]
    fn the_ipv6_prefix_is_configurable() {
        let t0 = 1_000_000_i64;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // /48: the whole site is one client.
        let l = limiter(1, 100, 48);
        assert!(l.check_at(Group::Login, ip("2001:db8:1:2::1"), t0).is_ok());
        assert!(
            l.check_at(Group::Login, ip("2001:db8:1:ffff::9"), t0)
                .is_err()
        );
        assert!(l.check_at(Group::Login, ip("2001:db8:2::1"), t0).is_ok());
        // /128: every address on its own.
        let l = limiter(1, 100, 128);
        assert!(l.check_at(Group::Login, ip("2001:db8::1"), t0).is_ok());
        assert!(l.check_at(Group::Login, ip("2001:db8::2"), t0).is_ok());
        assert!(l.check_at(Group::Login, ip("2001:db8::1"), t0).is_err());
    }

    /// A distinct address for each `i`: IPv4 and IPv6 alternately.
    fn address(i: u32) -> IpAddr {
        if i.is_multiple_of(2) {
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
        } else {
            IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_u128 << 96) | (u128::from(i) << 64),
            ))
        }
    }

    #[test]
    fn a_flood_of_addresses_stays_within_the_cap_and_refuses_no_one() {
        const CAP: usize = 100_000;
        const FLOOD: u32 = 250_000;
        let l = limiter(2, CAP, 64);
        let t0 = 1_000_000_i64;
        let active: IpAddr = "192.0.2.10".parse().unwrap();
        let quiet: IpAddr = "192.0.2.20".parse().unwrap();
        // Both spend their allowance before the flood.
        for ip in [active, quiet] {
            assert!(l.check_at(Group::Login, ip, t0).is_ok());
            assert!(l.check_at(Group::Login, ip, t0).is_ok());
            assert!(l.check_at(Group::Login, ip, t0).is_err());
        }
        for i in 0..FLOOD {
            assert!(
                l.check_at(Group::Login, address(i), t0).is_ok(),
                "address {i} was refused: a full table must not refuse new clients"
            );
            // The active client keeps asking (and keeps being refused): it stays recent.
            if i % 10_000 == 0 {
                assert!(l.check_at(Group::Login, active, t0).is_err(), "{i}");
            }
            if i % 1000 == 0 {
                assert!(l.clients(Group::Login) <= CAP);
            }
        }
        assert_eq!(l.clients(Group::Login), CAP);
        // Still refused: its bucket survived 250 000 other addresses.
        assert!(l.check_at(Group::Login, active, t0).is_err());
        // A client never seen is served.
        assert!(
            l.check_at(Group::Login, "198.51.100.1".parse().unwrap(), t0)
                .is_ok()
        );
        // The quiet one was the least recently seen: forgotten, it starts with a full bucket.
        assert!(l.check_at(Group::Login, quiet, t0).is_ok());
        assert_eq!(l.clients(Group::Login), CAP);
        // Each group has its own table.
        assert_eq!(l.clients(Group::Register), 0);
    }

    #[test]
    fn the_least_recently_seen_client_is_the_one_forgotten() {
        let l = limiter(1, 3, 64);
        let t0 = 1_000_000_i64;
        let ip = |i: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i));
        for i in 1..=3 {
            assert!(l.check_at(Group::Login, ip(i), t0).is_ok());
        }
        // 1 is seen again (refused), so 2 is now the least recently seen.
        assert!(l.check_at(Group::Login, ip(1), t0).is_err());
        assert!(l.check_at(Group::Login, ip(4), t0).is_ok());
        assert_eq!(l.clients(Group::Login), 3);
        assert!(l.check_at(Group::Login, ip(1), t0).is_err());
        assert!(l.check_at(Group::Login, ip(3), t0).is_err());
        assert!(l.check_at(Group::Login, ip(4), t0).is_err());
        // 2 was forgotten: a full bucket again.
        assert!(l.check_at(Group::Login, ip(2), t0).is_ok());
    }
}
