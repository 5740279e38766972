//! The client IP of a request: the socket peer, or a forwarded address when the peer is a
//! trusted proxy.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use http::header::{FORWARDED, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::Error;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The networks whose connections may tell us the client address (`X-Forwarded-For`,
/// `Forwarded`).
///
/// ```
/// use unite_ratelimit::TrustedProxies;
/// let trusted = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1, ::1").unwrap();
/// assert!(trusted.contains("10.1.2.3".parse().unwrap()));
/// assert!(!trusted.contains("192.0.2.1".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// No trusted proxy: the socket peer is always the client.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// These networks.
    #[must_use]
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            nets: nets.into_iter().map(|n| n.trunc()).collect(),
        }
    }

    /// A comma- or space-separated list of CIDR blocks or single addresses.
    ///
    /// # Errors
    /// [`Error::Config`] naming the entry that is neither.
    pub fn parse(list: &str) -> Result<Self, Error> {
        let mut nets = Vec::new();
        for item in list.split([',', ' ', '\t', '\n']).filter(|s| !s.is_empty()) {
            let net = match IpNet::from_str(item) {
                Ok(n) => n,
                Err(_) => IpAddr::from_str(item).map(IpNet::from).map_err(|_| {
                    Error::config(
                        "trusted_proxies",
                        format!("`{item}` is neither a CIDR block nor an IP address"),
                    )
                })?,
            };
            nets.push(net);
        }
        Ok(Self::new(nets))
    }

    /// Whether `ip` is in one of the networks.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// `true` when no proxy is trusted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The client address of a request that arrived from `peer` with `headers`.
    ///
    /// When `peer` is not a trusted proxy, it is the client, whatever the headers say. When it
    /// is, the hops of `Forwarded` (or, without it, `X-Forwarded-For`) are walked from the
    /// right, skipping trusted proxies: the first untrusted address is the client. A malformed
    /// hop stops the walk at the nearest trusted address (a proxy would not have written it).
    #[must_use]
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let forwarded = headers.get_all(FORWARDED);
        if forwarded.iter().next().is_some() {
            self.walk(forwarded.iter().rev(), parse_forwarded_element, peer)
        } else {
            let xff = headers.get_all(&X_FORWARDED_FOR);
            self.walk(xff.iter().rev(), parse_address, peer)
        }
    }

    fn walk<'a>(
        &self,
        values: impl Iterator<Item = &'a HeaderValue>,
        parse: fn(&str) -> Option<IpAddr>,
        peer: IpAddr,
    ) -> IpAddr {
        let mut nearest = peer;
        for value in values {
            let Ok(value) = value.to_str() else {
                return nearest;
            };
            for element in value.rsplit(',') {
                let element = element.trim();
                if element.is_empty() {
                    continue;
                }
                let Some(ip) = parse(element) else {
                    return nearest;
                };
                let ip = ip.to_canonical();
                if !self.contains(ip) {
                    return ip;
                }
                nearest = ip;
            }
        }
        nearest
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`, optionally
/// in double quotes.
fn parse_address(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s);
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return if port_ok {
            inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            None
        };
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// The `for=` parameter of one `Forwarded` element (RFC 7239).
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if key.trim().eq_ignore_ascii_case("for") {
            parse_address(value)
        } else {
            None
        }
    })
}

/// Masks an IPv6 address to its first `prefix` bits (one customer usually holds a whole /64).
pub(crate) fn mask_ipv6(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if prefix < 128 => {
            let bits = u128::from(v6);
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_wins_over_any_header() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(t.client_ip(&h, ip("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::none().client_ip(&h, ip("10.0.0.1")),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.0.0/16").unwrap();
        // The client forged the first entry; two proxies appended the rest.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 192.168.1.1")]);
        assert_eq!(t.client_ip(&h, ip("10.0.0.2")), ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.8:4711"),
        ]);
        assert_eq!(t.client_ip(&h, ip("10.0.0.2")), ip("198.51.100.8"));
        // All hops trusted: the left-most.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.8.8.8")]);
        assert_eq!(t.client_ip(&h, ip("10.0.0.2")), ip("10.9.9.9"));
        // No header at all: the proxy itself.
        assert_eq!(
            t.client_ip(&HeaderMap::new(), ip("10.0.0.2")),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn forwarded_is_preferred_and_parsed() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&[
            ("x-forwarded-for", "5.5.5.5"),
            (
                "forwarded",
                r#"for=192.0.2.43;proto=https, For="[2001:db8:cafe::17]:4711";by=10.0.0.1"#,
            ),
        ]);
        assert_eq!(t.client_ip(&h, ip("10.0.0.1")), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(t.client_ip(&h, ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn malformed_hops_stop_at_the_nearest_trusted_address() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        for bad in [
            "garbage",
            "[::1",
            "[::1]x",
            "1.2.3.4:port",
            "999.1.1.1",
            "\"",
            "[]",
        ] {
            let h = headers(&[("x-forwarded-for", &format!("7.7.7.7, {bad}, 10.1.1.1"))]);
            assert_eq!(t.client_ip(&h, ip("10.0.0.1")), ip("10.1.1.1"), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert_eq!(t.client_ip(&h, ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let t = TrustedProxies::parse("127.0.0.1").unwrap();
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.1")]);
        assert_eq!(t.client_ip(&h, ip("::ffff:127.0.0.1")), ip("198.51.100.1"));
        assert!(TrustedProxies::parse("10.0.0.0/8 bogus").is_err());
    }

    #[test]
    fn ipv6_masking() {
        assert_eq!(
            mask_ipv6(ip("2001:db8:1:2:3:4:5:6"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(mask_ipv6(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(mask_ipv6(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(mask_ipv6(ip("1.2.3.4"), 64), ip("1.2.3.4"));
    }
}
