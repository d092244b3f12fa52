//! Client addresses: which peers are trusted proxies, and the client address behind them.

use std::net::IpAddr;
use std::str::FromStr;

/// An address or a network in CIDR notation (`10.0.0.0/8`, `::1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| "not an IP address or network".to_string())?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) compare as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the peer itself, unless the peer is a trusted proxy, in which case the
/// right-most address of `X-Forwarded-For` that is not itself a trusted proxy.
///
/// `forwarded_for` is every `X-Forwarded-For` line of the request, in the order received (`None`
/// for a line that is not text): several lines are one list, as if joined with commas. The list is
/// walked from the right, the end our own proxies wrote, so whatever a client put on the left, in
/// the same line or a line of its own, is never reached while a proxy's entry comes after it.
/// An entry that is not an address ends what can be believed: the last address read is the client.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = Option<&'a str>>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for line in forwarded_for.rev() {
        let Some(line) = line else {
            return client;
        };
        for hop in line.rsplit(',') {
            match parse_hop(hop) {
                Some(ip) => {
                    client = canonical(ip);
                    if !is_trusted(client) {
                        return client;
                    }
                }
                None => return client,
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or (as some proxies write) an address with a port,
/// `192.0.2.1:4711` or `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The network of `ip` that is counted as one client: an IPv4 address on its own, an IPv6
/// address by its first `ipv6_prefix` bits (IPv4-mapped IPv6 addresses count as IPv4).
pub fn client_network(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(ipv6_prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.1")));
        let one: IpNet = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nonsense".parse::<IpNet>().is_err());
    }

    /// `client_ip` over header lines given as strings.
    fn client(peer: &str, lines: &[&str], trusted: &[IpNet]) -> IpAddr {
        client_ip(ip(peer), lines.iter().map(|l| Some(*l)), trusted)
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client("1.2.3.4", &["9.9.9.9"], &trusted), ip("1.2.3.4"));
        assert_eq!(client("10.0.0.1", &["9.9.9.9"], &trusted), ip("9.9.9.9"));
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6, 9.9.9.9, 10.0.0.2"], &trusted),
            ip("9.9.9.9")
        );
        assert_eq!(client("10.0.0.1", &[], &trusted), ip("10.0.0.1"));
        assert_eq!(client("10.0.0.1", &["garbage"], &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn several_forwarded_for_lines_are_one_list_read_from_the_right() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        // A client's forged line first, then the line its proxy added: the proxy's wins.
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6", "9.9.9.9"], &trusted),
            ip("9.9.9.9")
        );
        // Through two proxies of ours, each adding a line.
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6", "9.9.9.9", "10.0.0.2"], &trusted),
            ip("9.9.9.9")
        );
        assert_eq!(
            client(
                "10.0.0.1",
                &["6.6.6.6, 7.7.7.7", "10.0.0.3, 10.0.0.2"],
                &trusted
            ),
            ip("7.7.7.7")
        );
        // Everything trusted: the left-most address.
        assert_eq!(
            client("10.0.0.1", &["10.0.0.9", "10.0.0.2"], &trusted),
            ip("10.0.0.9")
        );
        // An unreadable entry or line stops the walk at the last address read.
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6", "unknown, 10.0.0.2"], &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(
                ip("10.0.0.1"),
                [Some("6.6.6.6"), None, Some("10.0.0.2")].into_iter(),
                &trusted
            ),
            ip("10.0.0.2")
        );
        // Ports, as some proxies write them.
        assert_eq!(
            client("10.0.0.1", &["9.9.9.9:4711"], &trusted),
            ip("9.9.9.9")
        );
        assert_eq!(
            client("10.0.0.1", &["[2001:db8::9]:4711"], &trusted),
            ip("2001:db8::9")
        );
        assert_eq!(
            client("10.0.0.1", &["[2001:db8::9]"], &trusted),
            ip("2001:db8::9")
        );
        // From a peer that is not trusted, no line is read.
        assert_eq!(
            client("9.9.9.9", &["6.6.6.6", "7.7.7.7"], &trusted),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_by_the_prefix() {
        assert_eq!(
            client_network(ip("2001:db8:1:2:3:4:5:6"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_network(ip("2001:db8:1:2:3:4:5:6"), 48),
            ip("2001:db8:1::")
        );
        assert_eq!(
            client_network(ip("2001:db8:1:203:4:5:6:7"), 56),
            ip("2001:db8:1:200::")
        );
        assert_eq!(
            client_network(ip("2001:db8:1:2:3:4:5:6"), 128),
            ip("2001:db8:1:2:3:4:5:6")
        );
        assert_eq!(client_network(ip("ffff::1"), 1), ip("8000::"));
        // IPv4, plain or mapped, is never grouped.
        assert_eq!(client_network(ip("192.0.2.7"), 8), ip("192.0.2.7"));
        assert_eq!(client_network(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
    }
}

#[cfg(test)]
mod properties {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// Our proxies' networks in these properties.
    fn ours() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
    }

    fn is_ours(ip: IpAddr) -> bool {
        ours().iter().any(|net| net.contains(ip))
    }

    /// Any address: IPv4, IPv6, and IPv4-mapped IPv6.
    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            3 => any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
            2 => any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
            1 => any::<u32>().prop_map(|n| IpAddr::V6(Ipv4Addr::from(n).to_ipv6_mapped())),
        ]
    }

    /// An address of one of our proxies (10.0.0.0/8 or fd00::/8).
    fn proxy_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff)))),
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from((0xfd << 120) | (n >> 8)))),
        ]
    }

    /// How an entry is written: with a port or not (`192.0.2.1:4711`, `[2001:db8::1]:4711`),
    /// an IPv6 address in brackets or not, spaces around.
    #[derive(Clone, Debug)]
    struct Style {
        port: Option<u16>,
        bracketed: bool,
        before: usize,
        after: usize,
    }

    fn style() -> impl Strategy<Value = Style> {
        (
            proptest::option::of(any::<u16>()),
            any::<bool>(),
            0..3usize,
            0..3usize,
        )
            .prop_map(|(port, bracketed, before, after)| Style {
                port,
                bracketed,
                before,
                after,
            })
    }

    fn written(ip: IpAddr, style: &Style) -> String {
        let entry = match (ip, style.port) {
            (IpAddr::V4(v4), Some(port)) => format!("{v4}:{port}"),
            (IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
            (IpAddr::V6(v6), None) if style.bracketed => format!("[{v6}]"),
            (ip, None) => ip.to_string(),
        };
        format!(
            "{}{entry}{}",
            " ".repeat(style.before),
            " ".repeat(style.after)
        )
    }

    /// What a client may send as `X-Forwarded-For`: entries that look like anyone's address
    /// (ours among them) or like nothing, on any number of lines.
    fn forged_lines() -> impl Strategy<Value = Vec<String>> {
        let entry = prop_oneof![
            3 => (any_ip(), style()).prop_map(|(ip, s)| written(ip, &s)),
            2 => (proxy_ip(), style()).prop_map(|(ip, s)| written(ip, &s)),
            1 => "[0-9a-f.:\\[\\] ]{0,20}",
            1 => Just("unknown".to_string()),
        ];
        proptest::collection::vec(
            proptest::collection::vec(entry, 0..4).prop_map(|entries| entries.join(",")),
            0..3,
        )
    }

    /// A request through 1 to 3 of our proxies from a client outside them: the client's address,
    /// the peer (the last proxy) and the `X-Forwarded-For` lines as they arrive. The client sent
    /// `forged` lines; each proxy appended the address it saw, to the last line (as nginx's
    /// `$proxy_add_x_forwarded_for` does) or as a line of its own.
    fn proxied_request() -> impl Strategy<Value = (IpAddr, IpAddr, Vec<String>)> {
        (
            any_ip().prop_filter("outside our proxies", |ip| !is_ours(*ip)),
            style(),
            forged_lines(),
            proptest::collection::vec((proxy_ip(), style(), any::<bool>()), 1..4),
        )
            .prop_map(|(client, client_style, forged, proxies)| {
                let mut lines = forged;
                let mut seen = written(client, &client_style);
                let mut peer = client;
                for (proxy, style, own_line) in proxies {
                    match lines.last_mut() {
                        Some(last) if !own_line => *last = format!("{last}, {seen}"),
                        _ => lines.push(seen),
                    }
                    seen = written(proxy, &style);
                    peer = proxy;
                }
                (client, peer, lines)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Rule: behind our proxies a client cannot choose its address. Whatever it writes in
        /// `X-Forwarded-For` (its own lines, or the start of the line the first proxy appends
        /// to: a left-most entry, our proxies' addresses, garbage), the client address is the one
        /// the first of our proxies saw and appended.
        #[test]
        fn behind_trusted_proxies_the_client_is_the_address_the_first_proxy_saw(
            (client, peer, lines) in proxied_request(),
        ) {
            let ip = client_ip(peer, lines.iter().map(|l| Some(l.as_str())), &ours());
            prop_assert_eq!(ip, canonical(client), "lines {:?} from peer {}", lines, peer);
        }

        /// Rule: the header is believed only from our proxies, and never yields an address from
        /// nowhere. From a peer that is not ours the client is the peer, whatever the header
        /// says; from one of ours, it is the peer or an address an entry of the header names.
        #[test]
        fn forwarded_for_is_read_only_from_trusted_peers_and_never_yields_an_address_from_nowhere(
            lines in prop_oneof![
                forged_lines(),
                proptest::collection::vec("[0-9a-f.:, \\[\\]]{0,60}", 0..4),
            ],
            peer in prop_oneof![proxy_ip(), any_ip()],
        ) {
            let ip = client_ip(peer, lines.iter().map(|l| Some(l.as_str())), &ours());
            if is_ours(peer) {
                let named = lines.iter().flat_map(|l| l.split(',')).any(|hop| {
                    parse_hop(hop).map(canonical) == Some(ip)
                });
                prop_assert!(ip == canonical(peer) || named, "{} from {:?}", ip, lines);
            } else {
                prop_assert_eq!(ip, canonical(peer));
            }
        }

        /// Rule: an IPv6 client cannot leave its per-client allowance by changing the bits of its
        /// address after the prefix (every address of a prefix is one client, in that prefix),
        /// and IPv4 addresses, plain or mapped, are never grouped with others.
        #[test]
        fn every_address_of_an_ipv6_prefix_is_one_client_and_ipv4_ones_are_their_own(
            address in any::<u128>(),
            other_bits in any::<u128>(),
            prefix in 0u8..=128,
            v4 in any::<u32>(),
        ) {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            let neighbour = (address & mask) | (other_bits & !mask);
            let (a, b) = (Ipv6Addr::from(address), Ipv6Addr::from(neighbour));
            prop_assume!(a.to_ipv4_mapped().is_none() && b.to_ipv4_mapped().is_none());
            let network = client_network(IpAddr::V6(a), prefix);
            prop_assert_eq!(network, client_network(IpAddr::V6(b), prefix));
            let net: IpNet = format!("{network}/{prefix}").parse().unwrap();
            prop_assert!(net.contains(IpAddr::V6(a)) && net.contains(IpAddr::V6(b)));
            let v4 = Ipv4Addr::from(v4);
            prop_assert_eq!(client_network(IpAddr::V4(v4), prefix), IpAddr::V4(v4));
            prop_assert_eq!(client_network(IpAddr::V6(v4.to_ipv6_mapped()), prefix), IpAddr::V4(v4));
        }
    }
}
