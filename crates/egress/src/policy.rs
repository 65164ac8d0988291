//! Which destinations an outbound request may reach: the URL rules and the address ranges,
//! as plain data and functions without I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Longest URL accepted, in bytes.
pub const MAX_URL_LENGTH: usize = 2048;

/// Where an address leads, as far as outbound requests are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Routed on the public internet.
    Public,
    /// The platform's own network (the named range): reached only when the policy allows
    /// private addresses.
    Internal(&'static str),
    /// Never a destination (the named range), whatever the policy.
    Never(&'static str),
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

#[expect(
    clippy::too_many_arguments,
    reason = "the eight groups of an IPv6 address"
)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// The IPv4 ranges that are not public. The first range containing an address names it,
/// so a single address inside a wider range comes before that range.
#[rustfmt::skip]
const IPV4_RANGES: &[(Ipv4Net, Reach)] = &[
    // The metadata services hand out the machine's cloud credentials: never reachable,
    // even where private addresses are allowed.
    (v4(169, 254, 169, 254, 32), Reach::Never("a cloud metadata service")),
    (v4(100, 100, 100, 200, 32), Reach::Never("a cloud metadata service")),
    (v4(255, 255, 255, 255, 32), Reach::Never("broadcast")),
    // Connecting to 0.0.0.0 reaches the machine itself on Linux.
    (v4(0, 0, 0, 0, 8), Reach::Never("this network (0.0.0.0/8)")),
    (v4(192, 0, 2, 0, 24), Reach::Never("documentation")),
    (v4(198, 51, 100, 0, 24), Reach::Never("documentation")),
    (v4(203, 0, 113, 0, 24), Reach::Never("documentation")),
    (v4(224, 0, 0, 0, 4), Reach::Never("multicast")),
    (v4(240, 0, 0, 0, 4), Reach::Never("reserved")),
    (v4(127, 0, 0, 0, 8), Reach::Internal("loopback")),
    (v4(10, 0, 0, 0, 8), Reach::Internal("private (RFC 1918)")),
    (v4(172, 16, 0, 0, 12), Reach::Internal("private (RFC 1918)")),
    (v4(192, 168, 0, 0, 16), Reach::Internal("private (RFC 1918)")),
    (v4(100, 64, 0, 0, 10), Reach::Internal("shared address space (CGNAT)")),
    (v4(169, 254, 0, 0, 16), Reach::Internal("link-local")),
    (v4(192, 0, 0, 0, 24), Reach::Internal("IETF protocol assignments")),
    (v4(198, 18, 0, 0, 15), Reach::Internal("benchmarking")),
];

/// The IPv6 ranges that are not public, first match wins as for IPv4. Addresses that embed
/// an IPv4 address are judged by that address (see [`embedded_ipv4`]).
#[rustfmt::skip]
const IPV6_RANGES: &[(Ipv6Net, Reach)] = &[
    (v6(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254, 128), Reach::Never("a cloud metadata service")),
    (v6(0, 0, 0, 0, 0, 0, 0, 0, 128), Reach::Never("unspecified")),
    (v6(0, 0, 0, 0, 0, 0, 0, 1, 128), Reach::Internal("loopback")),
    (v6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8), Reach::Never("multicast")),
    (v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), Reach::Never("documentation")),
    (v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20), Reach::Never("documentation")),
    (v6(0x100, 0, 0, 0, 0, 0, 0, 0, 64), Reach::Never("discard-only")),
    // Teredo (2001::/32) tunnels to an obfuscated IPv4 address; nothing here needs it.
    (v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 23), Reach::Never("IETF protocol assignments")),
    (v6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7), Reach::Internal("unique-local")),
    (v6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10), Reach::Internal("link-local")),
    (v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10), Reach::Internal("site-local")),
    (v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48), Reach::Internal("local-use NAT64")),
];

/// IPv4-mapped (`::ffff:a.b.c.d`), the deprecated IPv4-compatible (`::a.b.c.d`), SIIT's
/// IPv4-translated (`::ffff:0:a.b.c.d`) and well-known NAT64 (`64:ff9b::a.b.c.d`) forms
/// carry the address in their low 32 bits.
const LOW_BITS_EMBEDDINGS: [Ipv6Net; 4] = [
    v6(0, 0, 0, 0, 0, 0xffff, 0, 0, 96),
    v6(0, 0, 0, 0, 0, 0, 0, 0, 96),
    v6(0, 0, 0, 0, 0xffff, 0, 0, 0, 96),
    v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96),
];

/// 6to4 carries the address in bits 16 to 48.
const SIX_TO_FOUR: Ipv6Net = v6(0x2002, 0, 0, 0, 0, 0, 0, 0, 16);

/// The IPv4 address that an IPv6 address reaches through, when it embeds one: the
/// connection ends up there, so the IPv6 form is judged as that address.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let [.., a, b, c, d] = ip.octets();
    if LOW_BITS_EMBEDDINGS.iter().any(|net| net.contains(&ip)) {
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    let [_, _, a, b, c, d, ..] = ip.octets();
    SIX_TO_FOUR.contains(&ip).then(|| Ipv4Addr::new(a, b, c, d))
}

/// Where `ip` leads.
pub fn reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(ip) => IPV4_RANGES
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map_or(Reach::Public, |(_, reach)| *reach),
        IpAddr::V6(ip) => IPV6_RANGES
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, reach)| *reach)
            .or_else(|| embedded_ipv4(ip).map(|v4| reach(IpAddr::V4(v4))))
            .unwrap_or(Reach::Public),
    }
}

/// Why a URL may not be fetched. Each reason depends on the URL's text alone, never on the
/// network, so it may be shown to whoever gave the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Longer than [`MAX_URL_LENGTH`].
    #[error("must be at most {} characters", MAX_URL_LENGTH)]
    TooLong,
    /// Holds a space, a backslash or a control character (which parsers read differently).
    #[error("must not contain spaces, backslashes or control characters")]
    Unprintable,
    /// Not an absolute URL.
    #[error("is not a URL")]
    NotAUrl,
    /// Not https where only https is allowed.
    #[error("must be an https URL")]
    HttpsOnly,
    /// Neither http nor https.
    #[error("must be an http or https URL")]
    Scheme,
    /// Carries a user name or password (`user:pass@host`), in any form.
    #[error("must not carry a user name or password")]
    Credentials,
    /// Names no host.
    #[error("must name a host")]
    NoHost,
    /// The host is an address literal outside the policy (the range is for logs).
    #[error("must point to a public address")]
    NotPublic {
        /// The range the address is in.
        range: &'static str,
    },
}

/// What outbound requests may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Plain `http://` URLs may be fetched; otherwise https only.
    pub allow_http: bool,
    /// Addresses of the platform's own network ([`Reach::Internal`]: loopback, private,
    /// link-local, …) may be reached; [`Reach::Never`] addresses never are.
    pub allow_private: bool,
}

impl Policy {
    /// Stage and production: https only, public addresses only.
    pub const STRICT: Self = Self {
        allow_http: false,
        allow_private: false,
    };

    /// Development and tests: plain http, and the platform's own network (receivers on
    /// loopback).
    pub const DEVELOPMENT: Self = Self {
        allow_http: true,
        allow_private: true,
    };

    /// Destinations the operator configured, not a caller (the platform admins' OIDC
    /// issuer): as often as not on the platform's own network, so its addresses are allowed;
    /// plain http only when `allow_http` (the start-up checks allow it on loopback outside
    /// prod). [`Reach::Never`] addresses stay refused, as for every policy.
    pub const fn operator(allow_http: bool) -> Self {
        Self {
            allow_http,
            allow_private: true,
        }
    }

    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.check_address(ip).is_ok()
    }

    fn check_address(&self, ip: IpAddr) -> Result<(), UrlError> {
        match reach(ip) {
            Reach::Public => Ok(()),
            Reach::Internal(_) if self.allow_private => Ok(()),
            Reach::Internal(range) | Reach::Never(range) => Err(UrlError::NotPublic { range }),
        }
    }

    /// `text` parsed, if its scheme, credentials and host follow the rules. A host given as
    /// an address is checked here, since the HTTP client connects to it without resolving;
    /// a host name is checked when it is resolved, at connect time.
    pub fn check_url(&self, text: &str) -> Result<Url, UrlError> {
        if text.len() > MAX_URL_LENGTH {
            return Err(UrlError::TooLong);
        }
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return Err(UrlError::Unprintable);
        }
        let url = Url::parse(text).map_err(|_| UrlError::NotAUrl)?;
        // The parser drops an empty `@` (and reads `http:@host`, with any number of
        // slashes) where other parsers may read it otherwise: any `@` before the path is
        // refused, not only a non-empty user name.
        let after_scheme = text
            .split_once(':')
            .map_or("", |(_, rest)| rest.trim_start_matches('/'));
        let authority = after_scheme
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default();
        if authority.contains('@') || !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ if self.allow_http => return Err(UrlError::Scheme),
            _ => return Err(UrlError::HttpsOnly),
        }
        match url.host() {
            None | Some(Host::Domain("")) => return Err(UrlError::NoHost),
            Some(Host::Domain(name)) => {
                if let Ok(ip) = name.parse::<IpAddr>() {
                    self.check_address(ip)?;
                }
            }
            Some(Host::Ipv4(ip)) => self.check_address(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_address(IpAddr::V6(ip))?,
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests;
