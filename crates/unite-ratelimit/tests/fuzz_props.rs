//! Fuzz-style properties of client-IP extraction (`TrustedProxies::client_ip`): arbitrary
//! `X-Forwarded-For` / `Forwarded` headers never panic, an untrusted peer is always the client,
//! and a forwarded address is believed only when a trusted proxy handed it over.
//!
//! 4,096 cases a property by default; `PROPTEST_CASES=10000000` for a long run (see
//! `docs/RELIABILITY.md`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use proptest::prelude::*;
use unite_ratelimit::TrustedProxies;

/// Cases a property: `PROPTEST_CASES` when set, else a count that keeps CI fast.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 4096;
    }
    config.failure_persistence = None;
    config
}

/// Addresses from a small pool, so that trusted ones, repeats and mapped forms all show up.
fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, any::<u8>()).prop_map(|(a, b)| IpAddr::V4(Ipv4Addr::new(10, a, 0, b))),
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        (0u16..4, any::<u16>())
            .prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::new(0xfd00, a, 0, 0, 0, 0, 0, b))),
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
        // IPv4-mapped IPv6: must be treated as the IPv4 address it maps.
        (0u8..4, any::<u8>())
            .prop_map(|(a, b)| IpAddr::V6(Ipv4Addr::new(10, a, 0, b).to_ipv6_mapped())),
        Just(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ]
}

fn trusted() -> impl Strategy<Value = TrustedProxies> {
    proptest::collection::vec(
        prop_oneof![
            Just("10.0.0.0/8".parse::<IpNet>().ok()),
            Just("fd00::/16".parse::<IpNet>().ok()),
            Just("127.0.0.1/32".parse::<IpNet>().ok()),
            (ip(), 0u8..=128).prop_map(|(ip, len)| IpNet::new(ip, len).ok()),
        ],
        0..4,
    )
    .prop_map(|nets| TrustedProxies::new(nets.into_iter().flatten()))
}

/// One hop as proxies (and forgers) write it.
fn hop() -> impl Strategy<Value = String> {
    prop_oneof![
        ip().prop_map(|ip| ip.to_string()),
        (ip(), any::<u16>()).prop_map(|(ip, port)| match ip {
            IpAddr::V4(v4) => format!("{v4}:{port}"),
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        }),
        ip().prop_map(|ip| format!("\"{ip}\"")),
        ip().prop_map(|ip| format!("[{ip}]")),
        Just("unknown".to_owned()),
        Just(String::new()),
        "[ -~]{0,40}",
        any::<String>(),
    ]
}

/// A `Forwarded` element around a hop.
fn forwarded_element() -> impl Strategy<Value = String> {
    (hop(), any::<bool>(), "[a-zA-Z]{0,5}").prop_map(|(hop, upper, extra)| {
        let key = if upper { "For" } else { "for" };
        format!("{key}={hop};proto=https;{extra}=x")
    })
}

/// Header lines (each a comma-separated list), as bytes a `HeaderValue` may hold.
fn lines(element: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let line = prop_oneof![
        proptest::collection::vec(element, 0..5).prop_map(|hops| hops.join(", ").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..60),
    ];
    proptest::collection::vec(line, 0..4)
}

/// Every address that can be read out of a header text, by any split (canonical forms).
fn addresses_in(text: &str) -> Vec<IpAddr> {
    text.split([',', ';', '=', '"', ' ', '\t', '[', ']'])
        .filter_map(|token| {
            token
                .parse::<IpAddr>()
                .ok()
                .or_else(|| token.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        })
        .map(|ip| ip.to_canonical())
        .collect()
}

fn headers(xff: &[Vec<u8>], forwarded: &[Vec<u8>]) -> (HeaderMap, Vec<String>) {
    let mut map = HeaderMap::new();
    let mut texts = Vec::new();
    for (name, values) in [("x-forwarded-for", xff), ("forwarded", forwarded)] {
        for bytes in values {
            if let Ok(v) = HeaderValue::from_bytes(bytes) {
                texts.push(String::from_utf8_lossy(bytes).into_owned());
                map.append(HeaderName::from_static(name), v);
            }
        }
    }
    (map, texts)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn client_ip_never_panics_and_believes_only_trusted_proxies(
        trusted in trusted(),
        peer in ip(),
        xff in lines(hop()),
        forwarded in lines(forwarded_element()),
    ) {
        let (map, texts) = headers(&xff, &forwarded);
        let client = trusted.client_ip(&map, peer);
        let peer = peer.to_canonical();

        // Always canonical: a mapped IPv4 address is its IPv4 form.
        prop_assert_eq!(client, client.to_canonical());
        if !trusted.contains(peer) {
            // An untrusted peer is the client, whatever the headers say.
            prop_assert_eq!(client, peer);
        } else if client != peer {
            // Anything else was written in a header: extraction never invents an address.
            prop_assert!(
                texts.iter().any(|t| addresses_in(t).contains(&client)),
                "{} is in none of {:?}", client, texts
            );
        }
        // No headers: the peer, trusted or not.
        prop_assert_eq!(trusted.client_ip(&HeaderMap::new(), peer), peer);
    }

    #[test]
    fn no_trusted_proxy_means_the_peer(
        peer in ip(),
        xff in lines(hop()),
        forwarded in lines(forwarded_element()),
    ) {
        let (map, _) = headers(&xff, &forwarded);
        prop_assert_eq!(TrustedProxies::none().client_ip(&map, peer), peer.to_canonical());
    }

    #[test]
    fn a_chain_of_trusted_proxies_yields_the_rightmost_untrusted_hop(
        forged in proptest::collection::vec(ip(), 0..3),
        // Any address outside 10/8 (the trusted proxies): 10.x.y.z is moved to 11.x.y.z rather
        // than rejected, so a long run never stops on proptest's limit of rejected cases.
        client in any::<u32>().prop_map(|n| {
            let n = if n >> 24 == 10 { n ^ (1 << 24) } else { n };
            IpAddr::V4(Ipv4Addr::from(n))
        }),
        proxies in proptest::collection::vec((0u8..4, any::<u8>()), 0..4),
        use_forwarded in any::<bool>(),
    ) {
        // Whatever the client forged to the left, the proxies (10/8, trusted) appended the
        // address they saw: that one is the answer.
        let ten = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!ten.contains(&client));
        let trusted = TrustedProxies::new([ten]);
        let mut hops: Vec<IpAddr> = forged;
        hops.push(client);
        hops.extend(proxies.iter().map(|&(a, b)| IpAddr::V4(Ipv4Addr::new(10, a, 1, b))));
        let mut map = HeaderMap::new();
        let value = if use_forwarded {
            hops.iter().map(|h| match h {
                IpAddr::V4(_) => format!("for={h}"),
                IpAddr::V6(_) => format!("for=\"[{h}]\""),
            }).collect::<Vec<_>>().join(", ")
        } else {
            hops.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        let name = if use_forwarded { "forwarded" } else { "x-forwarded-for" };
        map.insert(HeaderName::from_static(name), HeaderValue::from_str(&value).map_err(|e| TestCaseError::fail(e.to_string()))?);
        prop_assert_eq!(trusted.client_ip(&map, IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))), client);
    }
}
