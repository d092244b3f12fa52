//! Per-client-address request limits: a token bucket per (endpoint group, client), in memory.
//! IPv6 clients are counted by a prefix of their address (`RATE_LIMIT_IPV6_PREFIX`, /64 by
//! default), which one subscriber usually holds whole.
//!
//! Each group has its own table of at most `RATE_LIMIT_MAX_CLIENTS` clients, kept in least
//! recently seen order (an LRU: a lookup, an insertion and an eviction are each O(1)). A new
//! client in a full table takes the place of the one seen longest ago, so memory stays bounded
//! however many addresses arrive, a new client is always served, and a client seen recently
//! keeps its bucket. Forgetting a client only ever gives it a full bucket again, so the cost of a
//! flood of addresses is that the quietest clients' limits start over, never that anyone is
//! refused for it.

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
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(limits: RateLimits, clock: Clock) -> Self {
        let capacity = limits.max_clients.max(1);
        Self {
            limits,
            clock,
            tables: Group::ALL
                .map(|_| Mutex::new(LruCache::with_hasher(capacity, RandomState::new()))),
        }
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

    /// Takes one request's allowance; `Err` says how long until the next is allowed.
    pub fn check(&self, group: Group, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(group, ip, self.clock.now_ms())
    }

    fn check_at(&self, group: Group, ip: IpAddr, now: i64) -> Result<(), Duration> {
        let limit = self.per_minute(group);
        if limit == 0 {
            return Ok(());
        }
        let capacity = f64::from(limit);
        let per_second = capacity / 60.0;
        let key = crate::net::client_network(ip, self.limits.ipv6_prefix);
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
