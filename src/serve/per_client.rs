//! The cap on connections open at once from one client (`MAX_CONNECTIONS_PER_CLIENT`): an IPv4
//! address, or an IPv6 network of `IPV6_PREFIX` bits, as the rate limiter counts clients.
//! Trusted proxies are exempt: behind one, the peer is the proxy, not the client.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::net::IpNet;

pub(super) struct PerClient {
    max: usize,
    ipv6_prefix: u8,
    exempt: Vec<IpNet>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Open connections by client network; a network with none has no entry, so the table is
    /// never larger than the connections open.
    open: HashMap<IpAddr, Client>,
    /// Clients refused since the burst began, and how many connections they were refused.
    bursting: usize,
    refused: u64,
}

#[derive(Default)]
struct Client {
    open: usize,
    /// Refused since reaching the cap, until back under 90% of it: one burst.
    over: bool,
}

/// One connection counted against its client; dropping it gives the place back.
pub(super) struct Counted(Option<(Arc<PerClient>, IpAddr)>);

impl PerClient {
    pub(super) fn new(max: usize, ipv6_prefix: u8, exempt: Vec<IpNet>) -> Self {
        Self {
            max: max.max(1),
            ipv6_prefix,
            exempt,
            state: Mutex::new(State::default()),
        }
    }

    /// Counts a new connection from `peer`; `None` if its client has `max` open already.
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Counted> {
        let peer = crate::net::canonical(peer);
        if self.exempt.iter().any(|net| net.contains(peer)) {
            return Some(Counted(None));
        }
        let network = crate::net::client_network(peer, self.ipv6_prefix);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        let client = state.open.entry(network).or_default();
        if client.open < self.max {
            client.open += 1;
            return Some(Counted(Some((self.clone(), network))));
        }
        state.refused += 1;
        if !client.over {
            client.over = true;
            state.bursting += 1;
            if state.bursting == 1 {
                tracing::warn!(
                    client = %network,
                    max_connections_per_client = self.max,
                    "MAX_CONNECTIONS_PER_CLIENT reached: further connections from this client \
                     are closed at once"
                );
            }
        }
        None
    }

    fn release(&self, network: IpAddr) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        let Some(client) = state.open.get_mut(&network) else {
            return;
        };
        client.open -= 1;
        if client.over && client.open <= self.max - (self.max / 10).max(1) {
            client.over = false;
            state.bursting -= 1;
            if state.bursting == 0 {
                tracing::info!(
                    refused = state.refused,
                    "every client is back under MAX_CONNECTIONS_PER_CLIENT"
                );
                state.refused = 0;
            }
        }
        if client.open == 0 {
            state.open.remove(&network);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some((per_client, network)) = self.0.take() {
            per_client.release(network);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_capped_its_ipv6_network_counted_once_and_proxies_exempt() {
        let per_client = Arc::new(PerClient::new(2, 64, vec!["10.0.0.0/8".parse().unwrap()]));
        let a = per_client.admit("2001:db8::1".parse().unwrap()).unwrap();
        let _b = per_client.admit("2001:db8::2".parse().unwrap()).unwrap();
        assert!(per_client.admit("2001:db8::3".parse().unwrap()).is_none());
        assert!(per_client.admit("2001:db8:1::1".parse().unwrap()).is_some());
        drop(a);
        assert!(per_client.admit("2001:db8::3".parse().unwrap()).is_some());
        let proxied: Vec<_> = (0..5)
            .map(|_| per_client.admit("10.1.2.3".parse().unwrap()).unwrap())
            .collect();
        assert_eq!(proxied.len(), 5);
    }
}
