//! Per-client-address request limits: a token bucket per (endpoint group, address), in memory.
//! IPv6 clients are counted by their /64, which one subscriber usually holds whole.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimits;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    Login,
    Register,
    Refresh,
    Mail,
}

/// The most addresses tracked at once; beyond it, idle buckets are dropped first.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(Group, IpAddr), Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn key_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        },
        v4 => v4,
    }
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
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

    /// Takes one request's allowance; `Err` says how long until the next is allowed.
    pub fn check(&self, group: Group, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(group, ip, Instant::now())
    }

    fn check_at(&self, group: Group, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let limit = self.per_minute(group);
        if limit == 0 {
            return Ok(());
        }
        let capacity = f64::from(limit);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            // Full buckets hold nothing worth keeping.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < capacity
            });
            if buckets.len() >= MAX_BUCKETS {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry((group, key_of(ip))).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second)
            .min(capacity);
        bucket.at = now;
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
    use super::*;

    fn limiter(login: u32) -> RateLimiter {
        RateLimiter::new(RateLimits {
            login,
            register: 0,
            refresh: 0,
            mail: 0,
        })
    }

    #[test]
    fn a_burst_up_to_the_limit_then_refill() {
        let l = limiter(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at(Group::Login, ip, t0).is_ok());
        }
        let wait = l.check_at(Group::Login, ip, t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            l.check_at(Group::Login, ip, t0 + Duration::from_secs(21))
                .is_ok()
        );
        // Another address, another group: their own allowance.
        assert!(
            l.check_at(Group::Login, "192.0.2.2".parse().unwrap(), t0)
                .is_ok()
        );
        assert!(l.check_at(Group::Register, ip, t0).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let l = limiter(1);
        let t0 = Instant::now();
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
}
