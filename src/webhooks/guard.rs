//! Where a webhook may be sent: the guard against server-side request forgery.
//!
//! A webhook makes this server send requests to a URL a superuser chose. Without a guard, a
//! stolen superuser token (or a careless one) could point it at the internal network: the cloud
//! metadata service (169.254.169.254), the database, an admin console on localhost. So, unless
//! WEBHOOK_ALLOW_PRIVATE_NETWORKS is set:
//!
//! - the URL must be `http://` or `https://`, with a host, without a user name or password;
//! - the host must not be, nor resolve to, an address that is not public (see [`non_public`]:
//!   loopback, private, link-local, CGNAT, unspecified, broadcast, multicast, benchmarking,
//!   reserved, documentation, and the IPv6 forms that embed such an IPv4 address), nor be
//!   `localhost` or a name under it.
//!
//! The URL is checked when it is registered and again at every delivery attempt, where the host
//! is resolved once ([`resolve`]), every address it resolves to is checked, and the connection
//! is made to one of those checked addresses (never by name again), so a DNS answer that changes
//! between the check and the connection (rebinding) gains nothing. Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// The longest URL an endpoint may have.
pub const MAX_URL_LENGTH: usize = 2048;

/// Why a URL or an address is refused. The message names no part of the URL but its host (its
/// path or query may hold a token of the receiver's).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("is not a URL")]
    NotUrl,
    #[error("must be at most {MAX_URL_LENGTH} characters")]
    TooLong,
    #[error("must start with http:// or https://")]
    Scheme,
    #[error("must not contain a user name or password")]
    Userinfo,
    #[error("must not contain a fragment (#...)")]
    Fragment,
    #[error("must have a host")]
    NoHost,
    #[error("names this machine (localhost), which webhooks may not reach")]
    Localhost,
    #[error("is {kind} address ({ip}), which webhooks may not reach")]
    Address { ip: IpAddr, kind: &'static str },
    #[error("resolves to {kind} address ({ip}), which webhooks may not reach")]
    Resolves { ip: IpAddr, kind: &'static str },
    #[error("host {host} does not resolve: {reason}")]
    Unresolved { host: String, reason: String },
}

/// A URL that passed [`parse`]: where to connect and what to ask for.
#[derive(Clone, Debug)]
pub struct Target {
    url: Url,
}

impl Target {
    /// The URL as stored (normalised: lower-case scheme and host, IDNA, default port dropped).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// The host as written in the URL (an IPv6 address without brackets).
    pub fn host(&self) -> Host<&str> {
        self.url.host().expect("parse() checked the host")
    }

    pub fn port(&self) -> u16 {
        self.url
            .port_or_known_default()
            .expect("http and https have default ports")
    }

    /// The `Host` header: the host, and the port unless it is the scheme's default.
    pub fn authority(&self) -> String {
        let host = self.url.host_str().expect("parse() checked the host");
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }

    /// The request target: path and query.
    pub fn path_and_query(&self) -> String {
        match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_string(),
        }
    }

    /// Scheme, host and port: what may be said of the URL in an audit event or a log line.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

/// Checks the form of a URL: `http` or `https`, a host, no user name or password, no fragment,
/// at most [`MAX_URL_LENGTH`] characters. Says nothing yet about where the host is.
pub fn parse(text: &str) -> Result<Target, Refusal> {
    if text.chars().count() > MAX_URL_LENGTH {
        return Err(Refusal::TooLong);
    }
    // The scheme first, as written (the URL parser would skip leading spaces).
    let scheme = text
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        return Err(Refusal::Scheme);
    }
    let url = Url::parse(text).map_err(|_| Refusal::NotUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::Userinfo);
    }
    if url.fragment().is_some() {
        return Err(Refusal::Fragment);
    }
    match url.host() {
        None => return Err(Refusal::NoHost),
        Some(Host::Domain("")) => return Err(Refusal::NoHost),
        Some(_) => {}
    }
    if url.as_str().len() > MAX_URL_LENGTH {
        return Err(Refusal::TooLong);
    }
    Ok(Target { url })
}

/// Checks the host as written: an IP address must be public, and a name must not be
/// `localhost` or under it. (A name's addresses are checked when it is resolved.)
pub fn check_host(target: &Target) -> Result<(), Refusal> {
    match target.host() {
        Host::Ipv4(ip) => check_ip(IpAddr::V4(ip)),
        Host::Ipv6(ip) => check_ip(IpAddr::V6(ip)),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                Err(Refusal::Localhost)
            } else {
                Ok(())
            }
        }
    }
}

/// Refuses an address that is not public.
pub fn check_ip(ip: IpAddr) -> Result<(), Refusal> {
    match non_public(ip) {
        Some(kind) => Err(Refusal::Address { ip, kind }),
        None => Ok(()),
    }
}

/// What kind of non-public address `ip` is (as "a loopback"), or `None` for a public one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => non_public_v4(ip),
        IpAddr::V6(ip) => non_public_v6(ip),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified (0.0.0.0/8)",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private (RFC 1918)",
        (100, 64..=127, _) => "a shared (CGNAT, 100.64.0.0/10)",
        (127, _, _) => "a loopback",
        (169, 254, _) => "a link-local",
        (192, 0, 0) => "an IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation",
        (192, 88, 99) => "a 6to4 relay (192.88.99.0/24)",
        (198, 18..=19, _) => "a benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "a multicast",
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => "the broadcast",
        (240..=255, _, _) => "a reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("an unspecified");
    }
    if ip.is_loopback() {
        return Some("a loopback");
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // ::ffff:a.b.c.d (IPv4-mapped): what the IPv4 address is.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    // ::a.b.c.d (IPv4-compatible, deprecated; never public) and ::ffff:0:a.b.c.d (translated).
    if s[..6] == [0; 6] || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0) {
        return Some(
            non_public_v4(embedded(s[6], s[7])).unwrap_or("an IPv4-compatible (deprecated)"),
        );
    }
    Some(match s[0] {
        // 64:ff9b::/96, NAT64 of an IPv4 address: what that address is.
        0x0064 if s[1] == 0xff9b && s[2..6] == [0; 4] => {
            return non_public_v4(embedded(s[6], s[7]));
        }
        // 64:ff9b:1::/48, local NAT64.
        0x0064 if s[1] == 0xff9b && s[2] == 1 => "a local NAT64 (64:ff9b:1::/48)",
        0x0100 if s[1..4] == [0; 3] => "a discard-only (100::/64)",
        // 2001::/32 Teredo (an obscured IPv4 address), 2001:db8::/32 documentation.
        0x2001 if s[1] == 0 => "a Teredo (2001::/32)",
        0x2001 if s[1] == 0x0db8 => "a documentation",
        // 2002::/16 6to4: what the IPv4 address in it is.
        0x2002 => return non_public_v4(embedded(s[1], s[2])),
        0x3fff if s[1] < 0x1000 => "a documentation",
        0xfc00..=0xfdff => "a unique local (fc00::/7)",
        0xfe80..=0xfebf => "a link-local",
        0xfec0..=0xfeff => "a site-local (deprecated)",
        0xff00..=0xffff => "a multicast",
        _ => return None,
    })
}

/// Resolves the target's host (once) and returns the addresses to connect to: every one checked
/// unless `allow_private`. A name with any non-public address is refused whole.
pub async fn resolve(target: &Target, allow_private: bool) -> Result<Vec<SocketAddr>, Refusal> {
    if !allow_private {
        check_host(target)?;
    }
    let port = target.port();
    let addresses: Vec<SocketAddr> = match target.host() {
        Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Host::Domain(name) => {
            let unresolved = |reason: String| Refusal::Unresolved {
                host: name.to_string(),
                reason,
            };
            tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| unresolved(e.to_string()))?
                .collect()
        }
    };
    if addresses.is_empty() {
        return Err(Refusal::Unresolved {
            host: target.authority(),
            reason: "no address".into(),
        });
    }
    if !allow_private {
        for address in &addresses {
            if let Some(kind) = non_public(address.ip()) {
                return Err(Refusal::Resolves {
                    ip: address.ip(),
                    kind,
                });
            }
        }
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> Refusal {
        let target = match parse(url) {
            Ok(target) => target,
            Err(refusal) => return refusal,
        };
        check_host(&target).expect_err(url)
    }

    #[test]
    fn only_plain_http_and_https_urls_pass() {
        for good in [
            "https://hooks.example.com/in",
            "http://hooks.example.com:8080/a/b?c=d",
            "https://8.8.8.8/x",
            "https://[2606:4700:4700::1111]/",
            "HTTPS://Hooks.Example.COM/in ",
        ] {
            let target = parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            check_host(&target).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert_eq!(refused("ftp://hooks.example.com/"), Refusal::Scheme);
        assert_eq!(refused("file:///etc/passwd"), Refusal::Scheme);
        assert_eq!(refused("gopher://hooks.example.com/"), Refusal::Scheme);
        assert_eq!(refused("javascript:alert(1)"), Refusal::Scheme);
        assert_eq!(
            refused("https://user:pw@hooks.example.com/"),
            Refusal::Userinfo
        );
        assert_eq!(
            refused("https://user@hooks.example.com/"),
            Refusal::Userinfo
        );
        assert_eq!(refused("https://hooks.example.com/#x"), Refusal::Fragment);
        assert_eq!(refused("hooks.example.com/in"), Refusal::Scheme);
        assert_eq!(refused(" https://hooks.example.com/in"), Refusal::Scheme);
        assert_eq!(refused("https:hooks.example.com/in"), Refusal::Scheme);
        assert_eq!(refused(""), Refusal::Scheme);
        assert_eq!(refused("http://a b/"), Refusal::NotUrl);
        assert_eq!(
            refused(&format!("https://a.example/{}", "x".repeat(2048))),
            Refusal::TooLong
        );
    }

    #[test]
    fn the_parts_of_a_target() {
        let t = parse("https://Hooks.Example.com:8443/in/x?a=1&b=2").unwrap();
        assert_eq!(t.as_str(), "https://hooks.example.com:8443/in/x?a=1&b=2");
        assert!(t.is_https());
        assert_eq!(t.port(), 8443);
        assert_eq!(t.authority(), "hooks.example.com:8443");
        assert_eq!(t.path_and_query(), "/in/x?a=1&b=2");
        assert_eq!(t.origin(), "https://hooks.example.com:8443");
        let t = parse("http://[2606:4700::1]").unwrap();
        assert_eq!(t.port(), 80);
        assert_eq!(t.authority(), "[2606:4700::1]");
        assert_eq!(t.path_and_query(), "/");
    }

    #[test]
    fn local_names_and_non_public_literals_are_refused() {
        for url in [
            "http://localhost/",
            "http://LOCALHOST:8080/",
            "http://localhost./",
            "http://api.localhost/",
            "http://127.0.0.1/",
            "http://127.1/",
            "http://0x7f.0.0.1/",
            "http://2130706433/",
            "http://0/",
            "http://0.0.0.0/",
            "http://10.0.0.1/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://100.127.255.255/",
            "http://198.18.0.1/",
            "http://198.19.255.255/",
            "http://224.0.0.1/",
            "http://239.255.255.250/",
            "http://240.0.0.1/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[::8.8.8.8]/",
            "http://[::ffff:0:127.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[64:ff9b:1::1]/",
            "http://[2002:7f00:1::]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[2001::1]/",
            "http://[2001:db8::1]/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[fe80::1]/",
            "http://[febf::1]/",
            "http://[fec0::1]/",
            "http://[ff02::1]/",
            "http://[100::1]/",
        ] {
            assert!(
                matches!(refused(url), Refusal::Localhost | Refusal::Address { .. }),
                "{url} was not refused"
            );
        }
    }

    #[test]
    fn every_range_boundary() {
        let v4 = |s: &str| non_public(IpAddr::V4(s.parse().unwrap()));
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(v4(public), None, "{public}");
        }
        for (private, kind) in [
            ("0.255.255.255", "an unspecified (0.0.0.0/8)"),
            ("10.255.255.255", "a private (RFC 1918)"),
            ("100.64.0.0", "a shared (CGNAT, 100.64.0.0/10)"),
            ("127.255.255.255", "a loopback"),
            ("169.254.169.254", "a link-local"),
            ("172.16.0.0", "a private (RFC 1918)"),
            ("192.168.0.0", "a private (RFC 1918)"),
            ("198.18.0.0", "a benchmarking (198.18.0.0/15)"),
            ("224.0.0.0", "a multicast"),
            ("239.255.255.255", "a multicast"),
            ("240.0.0.0", "a reserved (240.0.0.0/4)"),
            ("255.255.255.254", "a reserved (240.0.0.0/4)"),
            ("255.255.255.255", "the broadcast"),
        ] {
            assert_eq!(v4(private), Some(kind), "{private}");
        }
        let v6 = |s: &str| non_public(IpAddr::V6(s.parse().unwrap()));
        for public in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
            "fbff:ffff::1",
            "2001:4860::8888",
        ] {
            assert_eq!(v6(public), None, "{public}");
        }
        assert_eq!(v6("::ffff:127.0.0.1"), Some("a loopback"));
        assert_eq!(v6("::ffff:192.168.0.1"), Some("a private (RFC 1918)"));
        assert_eq!(v6("::127.0.0.1"), Some("a loopback"));
        assert_eq!(v6("::8.8.8.8"), Some("an IPv4-compatible (deprecated)"));
        assert_eq!(v6("64:ff9b::a9fe:a9fe"), Some("a link-local"));
        assert_eq!(v6("fdff:ffff::1"), Some("a unique local (fc00::/7)"));
    }

    #[test]
    fn refusals_say_the_kind_and_address_but_never_the_path() {
        let message = refused("http://169.254.169.254/secret-path?token=abc").to_string();
        assert_eq!(
            message,
            "is a link-local address (169.254.169.254), which webhooks may not reach"
        );
    }

    #[tokio::test]
    async fn resolution_checks_every_address_unless_private_networks_are_allowed() {
        let target = parse("http://localhost:9/x").unwrap();
        assert_eq!(resolve(&target, false).await, Err(Refusal::Localhost));
        let addresses = resolve(&target, true).await.unwrap();
        assert!(
            addresses
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 9)
        );
        let target = parse("http://127.0.0.1:9/x").unwrap();
        assert!(matches!(
            resolve(&target, false).await,
            Err(Refusal::Address { .. })
        ));
        assert_eq!(
            resolve(&target, true).await.unwrap(),
            vec!["127.0.0.1:9".parse().unwrap()]
        );
    }
}
