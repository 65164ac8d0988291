//! The client's address behind trusted proxies. Each proxy appends the address it got the
//! request from to `Forwarded` (RFC 7239, `for=`) or `X-Forwarded-For`, so the list reads
//! client, proxy, proxy… and only its right end was written by proxies this service trusts.
//! From the TCP peer, the list is walked right to left for as long as the address at hand
//! is a trusted proxy; the first that is not is the client. A peer that is not a trusted
//! proxy is the client whatever its headers say, since anyone can send them.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use axum::http::header::FORWARDED;
use ipnet::IpNet;

/// The client of a request from `peer` with `headers`, given the `trusted` proxies.
pub fn client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|net| net.contains(&address));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in hops(headers).into_iter().rev() {
        // An element a proxy could not fill ("unknown", an obfuscated name) ends the walk
        // at the last proxy known: its clients count as one.
        match hop {
            Some(address) if is_trusted(client) => client = address,
            _ => break,
        }
    }
    client
}

/// The addresses the forwarding headers list, left to right (`None` for an element that is
/// not an address). `Forwarded` wins when present: it is the standard.
fn hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|element| !element.is_empty())
            .collect::<Vec<_>>()
    };
    let forwarded = values(FORWARDED.as_str());
    if forwarded.is_empty() {
        return values("x-forwarded-for").into_iter().map(address).collect();
    }
    forwarded
        .into_iter()
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| name.eq_ignore_ascii_case("for"))
                .and_then(|(_, node)| address(node))
        })
        .collect()
}

/// An address as proxies write it: bare, with a port, IPv6 in brackets, maybe quoted.
fn address(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(bracketed) = node.strip_prefix('[') {
        return bracketed.split(']').next()?.parse().ok();
    }
    node.parse()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const PROXY: &str = "10.0.0.5";

    fn trusted() -> Vec<IpNet> {
        vec!["10.0.0.0/24".parse().expect("a network")]
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let claims = headers(&[("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(
            client(ip("198.51.100.9"), &claims, &trusted()),
            ip("198.51.100.9")
        );
        assert_eq!(
            client(ip(PROXY), &claims, &[]),
            ip(PROXY),
            "no proxy is trusted"
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        let chain = headers(&[("x-forwarded-for", "203.0.113.7, 192.0.2.1, 10.0.0.9")]);
        assert_eq!(client(ip(PROXY), &chain, &trusted()), ip("192.0.2.1"));
    }

    #[test]
    fn forwarded_is_read_before_x_forwarded_for_with_ports_brackets_and_quotes() {
        let both = headers(&[
            (
                "forwarded",
                r#"for="[2001:db8::7]:4711";proto=https, for=10.0.0.9:80"#,
            ),
            ("x-forwarded-for", "192.0.2.1"),
        ]);
        assert_eq!(client(ip(PROXY), &both, &trusted()), ip("2001:db8::7"));
    }

    #[test]
    fn an_element_that_is_no_address_stops_at_the_last_known_proxy() {
        let unknown = headers(&[("forwarded", "for=unknown, for=10.0.0.9")]);
        assert_eq!(client(ip(PROXY), &unknown, &trusted()), ip("10.0.0.9"));
        let garbage = headers(&[("x-forwarded-for", "not-an-address")]);
        assert_eq!(client(ip(PROXY), &garbage, &trusted()), ip(PROXY));
    }

    #[test]
    fn a_trusted_peer_without_headers_is_the_client() {
        assert_eq!(client(ip(PROXY), &HeaderMap::new(), &trusted()), ip(PROXY));
    }
}
