//! Which registries the server may fetch from. By default any public one: a server that
//! fetches whatever name a client sends must not reach into its own network (SSRF). The
//! check on addresses runs on the connection itself (the registry client resolves host
//! names through [`AddressPolicy`] as its [`AddressGuard`]); registries named by an IP
//! literal are checked here before any request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferry_core::Reference;
use ferry_registry::AddressGuard;

/// A `HOST[:PORT]` from `--allow-private` or `--allow-registry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

impl HostPort {
    /// Parse `HOST[:PORT]` (`[v6]:PORT` for IPv6 with a port). Hosts compare lowercased.
    pub fn parse(s: &str) -> Result<HostPort, String> {
        let bad = || format!("{s:?} is not HOST or HOST:PORT");
        let (host, port) = split_host_port(s).ok_or_else(bad)?;
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
        {
            return Err(bad());
        }
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        self.host.eq_ignore_ascii_case(host) && (self.port.is_none() || self.port == port)
    }
}

/// `host[:port]` split; IPv6 in brackets. `None` for a malformed port.
/// Whether `registry` (a reference's registry, `HOST[:PORT]`) is one of `list`: the same
/// host, and the same port when the entry names one.
pub fn names_registry(list: &[HostPort], registry: &str) -> bool {
    let (host, port) = split_host_port(registry).unwrap_or((registry, None));
    list.iter().any(|h| h.matches(host, port))
}

fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((h, _)) if h.contains(':') => Some((s, None)),
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((s, None)),
    }
}

/// Why the server will not fetch from a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "{registry} is not among the registries this server may fetch from (--allow-registry)"
    )]
    NotAllowed { registry: String },
    #[error("{registry} is a private or local address; this server fetches only from public registries unless started with --allow-private {registry}")]
    Private { registry: String },
}

/// The registry rules of one server.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    pub allow_private: Vec<HostPort>,
    /// Empty: any public registry.
    pub allow_registry: Vec<HostPort>,
}

impl AddressPolicy {
    /// Check `r`'s registry before any request: the allow-list, and an IP literal's address
    /// (host names are checked on each connection by [`AddressGuard::allows`]).
    pub fn check(&self, r: &Reference) -> Result<(), Refused> {
        let registry = r.registry().to_string();
        let (host, port) = split_host_port(&registry).unwrap_or((&registry, None));
        if !self.allow_registry.is_empty()
            && !self.allow_registry.iter().any(|a| a.matches(host, port))
        {
            return Err(Refused::NotAllowed { registry });
        }
        // The URL the client builds reads every spelling of an IPv4 address (decimal
        // `2130706433`, octal `0177.0.0.1`, hex, short `127.1`) as that address: judge the
        // address the connection will use, and compare --allow-private with it.
        let literal = ip_literal(host);
        let canonical = literal.map(|ip| ip.to_string());
        let host = canonical.as_deref().unwrap_or(host);
        let named = self.allow_private.iter().any(|a| a.matches(host, port));
        let host_named = self
            .allow_private
            .iter()
            .any(|a| a.host.eq_ignore_ascii_case(host));
        let private_literal = literal.is_some_and(|ip| !is_public(ip));
        // A host allowed on another port only: its connections would pass the resolver
        // (which sees no port), so the port is enforced here.
        if (private_literal || host_named || host.eq_ignore_ascii_case("localhost")) && !named {
            return Err(Refused::Private { registry });
        }
        Ok(())
    }
}

/// The address `host` names when a URL is built on it, if it is an IP literal in any
/// spelling the URL parser accepts.
fn ip_literal(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    match url::Host::parse(host) {
        Ok(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Ok(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

impl AddressGuard for AddressPolicy {
    fn allows(&self, host: &str, ip: IpAddr) -> bool {
        is_public(ip)
            || self
                .allow_private
                .iter()
                .any(|a| a.host.eq_ignore_ascii_case(host))
    }

    /// A host `--allow-private` names with a port is reachable on that port only: a
    /// redirect or a token realm must not take the server to its other ports.
    fn allows_port(&self, host: &str, port: u16) -> bool {
        let mut named = self
            .allow_private
            .iter()
            .filter(|a| a.host.eq_ignore_ascii_case(host))
            .peekable();
        named.peek().is_none() || named.any(|a| a.port.is_none_or(|p| p == port))
    }
}

/// Whether `ip` is a globally routable unicast address: not loopback, private, link-local,
/// unique-local, shared (CGNAT), documentation, benchmarking, multicast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, shared
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || o[0] >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64: an IPv4 address inside
        // 6to4: the IPv4 address in bits 16..48, reached through a relay or the host's
        // own 6to4 tunnel; one that is not public is not either.
        || (s[0] == 0x2002
            && !is_public_v4(Ipv4Addr::new(
                (s[1] >> 8) as u8,
                s[1] as u8,
                (s[2] >> 8) as u8,
                s[2] as u8,
            )))
        || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0) // ::ffff:0:0/96, IPv4-translated
        || s[0] == 0x0100 // discard-only
        || s[..6] == [0; 6]) // ::/96, IPv4-compatible (deprecated): never a public registry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip(a)), "{a}");
        }
        for a in ["8.8.8.8", "104.16.0.1", "2606:4700::1"] {
            assert!(is_public(ip(a)), "{a}");
        }
    }

    #[test]
    fn ipv4_addresses_inside_ipv6_forms_are_judged_as_ipv4() {
        // 6to4 of 127.0.0.1, 10.0.0.1, 192.168.1.1; IPv4-translated 127.0.0.1.
        for a in [
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:c0a8:101::5",
            "::ffff:0:7f00:1",
        ] {
            assert!(!is_public(ip(a)), "{a}");
        }
        // 6to4 of a public address stays public.
        assert!(is_public(ip("2002:808:808::1")));
    }

    #[test]
    fn an_insecure_registry_with_a_port_names_that_port_only() {
        let list = vec![HostPort::parse("reg.example:5000").unwrap()];
        assert!(names_registry(&list, "reg.example:5000"));
        assert!(names_registry(&list, "REG.example:5000"));
        assert!(!names_registry(&list, "reg.example"));
        assert!(!names_registry(&list, "reg.example:443"));
        let list = vec![HostPort::parse("reg.example").unwrap()];
        assert!(names_registry(&list, "reg.example"));
        assert!(names_registry(&list, "reg.example:5000"));
        assert!(!names_registry(&list, "other.example"));
        let list = vec![HostPort::parse("[::1]:5000").unwrap()];
        assert!(names_registry(&list, "[::1]:5000"));
        assert!(!names_registry(&list, "[::1]:5001"));
    }

    #[test]
    fn allow_private_names_a_host_and_port() {
        let p = AddressPolicy {
            allow_private: vec![HostPort::parse("127.0.0.1:5000").unwrap()],
            allow_registry: vec![],
        };
        let r = |s: &str| s.parse::<Reference>().unwrap();
        assert!(p.check(&r("127.0.0.1:5000/a:b")).is_ok());
        assert!(p.check(&r("127.0.0.1:5001/a:b")).is_err());
        assert!(p.check(&r("10.0.0.1:5000/a:b")).is_err());
        assert!(p.check(&r("localhost:5000/a:b")).is_err());
        assert!(p.check(&r("alpine")).is_ok());
        // Other spellings of a private address, as the URL parser reads them.
        for other in [
            "2130706433:5001/a:b",
            "0177.0.0.1:5001/a:b",
            "0x7f000001:5001/a:b",
            "127.1:5001/a:b",
            "[::ffff:127.0.0.1]:5001/a:b",
            "[::1]:5000/a:b",
            "0.0.0.0:5000/a:b",
        ] {
            if let Ok(parsed) = other.parse::<Reference>() {
                assert!(p.check(&parsed).is_err(), "{other}");
            }
        }
        assert!(p.check(&r("2130706433:5000/a:b")).is_ok());
        assert!(p.allows("127.0.0.1", ip("127.0.0.1")));
        assert!(!p.allows("evil.example", ip("127.0.0.1")));
        // Redirects and token realms: the named port only.
        assert!(p.allows_port("127.0.0.1", 5000));
        assert!(!p.allows_port("127.0.0.1", 6379));
        assert!(p.allows_port("registry.example", 443));
    }

    #[test]
    fn allow_registry_limits_registries() {
        let p = AddressPolicy {
            allow_private: vec![],
            allow_registry: vec![HostPort::parse("docker.io").unwrap()],
        };
        assert!(p.check(&"alpine".parse().unwrap()).is_ok());
        assert_eq!(
            p.check(&"ghcr.io/o/r".parse().unwrap())
                .unwrap_err()
                .to_string(),
            "ghcr.io is not among the registries this server may fetch from (--allow-registry)"
        );
    }
}
