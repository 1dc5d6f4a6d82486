//! The client's address behind a reverse proxy: `Forwarded` (RFC 7239) or
//! `X-Forwarded-For`, believed only from the proxies named in `--trusted-proxies`.
//!
//! Behind a proxy every connection comes from the proxy's address, so the per-address
//! limits would count all clients as one and the logs would name none of them. Anyone can
//! write those headers, so they are read only when the connection itself comes from a
//! trusted proxy, and the chain is walked from the nearest hop outwards, stopping at the
//! first address that is not a trusted proxy: that is the client as far as anyone trusted
//! can vouch.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parse a comma-separated list of addresses and CIDR ranges; empty trusts no one.
    pub fn parse(setting: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for item in setting.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "trusted proxy {item:?} is not an address or CIDR range (say 10.0.0.0/8)"
                    )
                })?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    /// Whether connections from `addr` may say whom they forward.
    pub fn trusts(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client behind a connection from `peer` with these request headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let chain = forwarded_for(headers);
        let mut client = peer;
        for hop in chain.iter().rev() {
            match hop {
                Some(addr) if self.trusts(*addr) => client = *addr,
                Some(addr) => return *addr,
                // An obfuscated or unknown hop: nothing beyond it can be vouched for.
                None => return client,
            }
        }
        client
    }
}

/// An IPv4 address mapped into IPv6 as the plain IPv4 address, so ranges match either way.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The forwarding chain, client first: from `Forwarded` if present, else
/// `X-Forwarded-For`. A hop that is not an address (`unknown`, `_hidden`) is `None`.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .map(|element| forwarded_element(element))
            .collect();
    }
    values("x-forwarded-for")
        .iter()
        .map(|hop| node_address(hop))
        .collect()
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.60;proto=https`).
fn forwarded_element(element: &str) -> Option<IpAddr> {
    element
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
        .and_then(|(_, value)| node_address(value.trim().trim_matches('"')))
}

/// An address as proxies write it: `192.0.2.60`, `192.0.2.60:4711`, `[2001:db8::1]:4711`,
/// `2001:db8::1`.
fn node_address(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    if let Ok(addr) = node.parse::<IpAddr>() {
        return Some(canonical(addr));
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(canonical);
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            proxies.client(ip("203.0.113.7"), &spoofed),
            ip("203.0.113.7")
        );
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.1"), &spoofed), ip("10.0.0.1"));
    }

    #[test]
    fn the_chain_is_walked_from_the_nearest_hop_to_the_first_untrusted_address() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1").unwrap();
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.2, 192.168.1.1")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &chain), ip("198.51.100.2"));
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &split), ip("198.51.100.9"));
        let all_trusted = headers(&[("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &all_trusted), ip("10.1.1.1"));
        let unknown = headers(&[("x-forwarded-for", "198.51.100.2, unknown")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &unknown), ip("10.0.0.1"));
        assert_eq!(
            proxies.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_its_forms_are_read() {
        let proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        let both = headers(&[
            (
                "forwarded",
                "for=\"[2001:db8::7]:4711\";proto=https, for=127.0.0.1",
            ),
            ("x-forwarded-for", "198.51.100.2"),
        ]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &both), ip("2001:db8::7"));
        let with_port = headers(&[("forwarded", "proto=http;For=192.0.2.60:8080")]);
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &with_port),
            ip("192.0.2.60")
        );
        let hidden = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &hidden), ip("127.0.0.1"));
        assert!(
            proxies.trusts(ip("::ffff:127.0.0.1")),
            "IPv4-mapped matches"
        );
    }

    #[test]
    fn a_malformed_entry_names_itself() {
        let e = TrustedProxies::parse("10.0.0.0/8, proxy.internal").unwrap_err();
        assert!(e.contains("\"proxy.internal\""), "{e}");
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
    }
}
