//! The SSRF guard: which addresses a webhook may not reach unless `allow_private` is set, and a
//! DNS resolver that enforces it on the addresses actually connected to.
//!
//! Checking a host name once at configuration time is not enough: DNS can answer differently
//! at delivery time (DNS rebinding). The [`GuardedResolver`] is plugged into the HTTP client, so
//! every connection, to every address a name resolves to, passes the check. IP-literal URLs
//! never reach a resolver; they are checked when the connector is built.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The kind of non-public range `ip` falls in, or `None` for a public unicast address.
///
/// Covers loopback, private (RFC 1918), shared/CGNAT (100.64/10), link-local (including the
/// 169.254.169.254 cloud metadata address), unique-local (fc00::/7), site-local, unspecified,
/// "this network", multicast, broadcast, reserved, benchmarking and documentation ranges, and
/// IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) forms of the IPv4 ones.
///
/// ```
/// use std::net::IpAddr;
/// use ferrule_connectors::webhook::non_public_range;
///
/// let ip = |s: &str| s.parse::<IpAddr>().unwrap();
/// assert_eq!(non_public_range(ip("169.254.169.254")), Some("link-local"));
/// assert_eq!(non_public_range(ip("::ffff:10.0.0.1")), Some("private"));
/// assert_eq!(non_public_range(ip("93.184.215.14")), None);
/// ```
pub fn non_public_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_unspecified() => "unspecified",
        (0, _, _) => "\"this network\"",
        (127, _, _) => "loopback",
        (10, _, _) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (100, 64..=127, _) => "shared (CGNAT)",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(range)
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_range(v4);
    }
    let segments = ip.segments();
    // NAT64 well-known prefix 64:ff9b::/96 embeds an IPv4 address in the last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        let embedded = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return v4_range(embedded);
    }
    let first = segments[0];
    let range = match first {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if first & 0xfe00 == 0xfc00 => "unique-local",
        _ if first & 0xffc0 == 0xfe80 => "link-local",
        _ if first & 0xffc0 == 0xfec0 => "site-local",
        _ if first & 0xff00 == 0xff00 => "multicast",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        0x0100 if segments[1..4] == [0, 0, 0] => "discard-only",
        // The rest of ::/8 (IPv4-compatible and other reserved forms) is not routable unicast.
        _ if first & 0xff00 == 0 => "reserved",
        _ => return None,
    };
    Some(range)
}

/// A connection target refused by the SSRF guard.
///
/// The webhook connector finds it in a transport error's source chain and reports a permanent
/// outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves only to non-public addresses (e.g. {addr}, {range})")]
pub struct RefusedTarget {
    /// The host name that was resolved.
    pub host: String,
    /// One refused address.
    pub addr: IpAddr,
    /// Its range, as [`non_public_range`] names it.
    pub range: &'static str,
}

/// A DNS resolver that drops every non-public address from the answer, and fails with
/// [`RefusedTarget`] when none is left.
///
/// Mixed answers keep their public addresses: the client then connects only to those.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|addr| non_public_range(addr.ip()).is_none());
            if let (true, Some(first)) = (public.is_empty(), refused.first()) {
                let addr = first.ip();
                let refused = RefusedTarget {
                    host,
                    addr,
                    range: non_public_range(addr).unwrap_or("non-public"),
                };
                return Err(refused.into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> Option<&'static str> {
        non_public_range(s.parse().unwrap())
    }

    #[test]
    fn table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("10.0.0.1", Some("private")),
            ("10.255.255.255", Some("private")),
            ("172.15.255.255", None),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.0", None),
            ("192.168.1.1", Some("private")),
            ("192.169.0.1", None),
            ("100.63.255.255", None),
            ("100.64.0.1", Some("shared (CGNAT)")),
            ("100.127.255.255", Some("shared (CGNAT)")),
            ("100.128.0.0", None),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("\"this network\"")),
            ("255.255.255.255", Some("broadcast")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.255", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("192.0.0.8", Some("IETF protocol assignment")),
            ("192.0.2.1", Some("documentation")),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.9", Some("documentation")),
            ("198.18.0.1", Some("benchmarking")),
            ("8.8.8.8", None),
            ("93.184.215.14", None),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::10.0.0.1", Some("private")),
            ("64:ff9b::8.8.8.8", None),
            ("::127.0.0.1", Some("reserved")),
            ("fc00::1", Some("unique-local")),
            ("fd12:3456::1", Some("unique-local")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("ff02::1", Some("multicast")),
            ("2001:db8::1", Some("documentation")),
            ("100::1", Some("discard-only")),
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
        ];
        for (ip, expected) in cases {
            assert_eq!(range(ip), *expected, "{ip}");
        }
    }

    #[tokio::test]
    async fn resolver_refuses_names_of_loopback_addresses() {
        let err = GuardedResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost must be refused");
        let refused = err
            .downcast_ref::<RefusedTarget>()
            .expect("a RefusedTarget");
        assert_eq!(refused.host, "localhost");
        assert_eq!(refused.range, "loopback");
    }
}
