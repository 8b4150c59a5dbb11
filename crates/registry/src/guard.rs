//! A hook that decides which network addresses the client may connect to. A server that
//! fetches images for anyone who asks must not be turned into a way into its own network
//! (SSRF): the check has to be on the addresses a connection actually uses, not on a
//! separate lookup a DNS rebinding could answer differently, so the client resolves every
//! host name through [`GuardedResolver`] and connects only to what survives the filter.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses a connection may go to.
///
/// Contract: `allows` is pure and fast (it runs for every address of every lookup), and
/// answers the same for the same arguments while the client lives.
pub trait AddressGuard: Send + Sync {
    /// May a connection for `host` (a name as it appears in a URL, without port) go to `ip`?
    fn allows(&self, host: &str, ip: IpAddr) -> bool;

    /// May a request go to `host` (a name or an IP literal as the URL has it) on `port`?
    /// Asked before every request and redirect, where the port is known (the resolver
    /// sees only names): a guard that lets a private host through on one port only says
    /// no to its other ports here. Default: any port.
    fn allows_port(&self, host: &str, port: u16) -> bool {
        let _ = (host, port);
        true
    }
}

/// Resolves with the system resolver, then keeps only the addresses the guard allows; a
/// name left with none fails to resolve, with a message saying why.
pub(crate) struct GuardedResolver(pub(crate) Arc<dyn AddressGuard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| guard.allows(&host, a.ip()))
                .collect();
            if kept.is_empty() && !found.is_empty() {
                return Err(format!(
                    "{host} resolves only to addresses this server may not connect to ({})",
                    found
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into());
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether a request (or a redirect) to `url` may go out: host names go through the
/// resolver, but an IP literal is connected to directly, never resolved, so it is checked
/// here. The URL parser has already turned every spelling of an IPv4 address (decimal
/// `2130706433`, octal `0177.0.0.1`, hex, short `127.1`) into [`url::Host::Ipv4`].
pub(crate) fn url_allowed(guard: &dyn AddressGuard, url: &url::Url) -> bool {
    if let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) {
        let host = match host {
            url::Host::Domain(d) => d.to_string(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        if !guard.allows_port(&host, port) {
            return false;
        }
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => guard.allows(&ip.to_string(), IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => guard.allows(&ip.to_string(), IpAddr::V6(ip)),
        _ => true,
    }
}

/// [`url_allowed`] as an error for a request about to be sent (the registry's own URL, an
/// upload's Location, a token realm a registry's challenge names).
pub(crate) fn check_url(
    guard: Option<&Arc<dyn AddressGuard>>,
    url: &url::Url,
) -> Result<(), crate::RegistryError> {
    match guard {
        Some(g) if !url_allowed(g.as_ref(), url) => Err(crate::RegistryError::Config(format!(
            "{}:{} is a private or local address (or a port of one) this server may not connect to",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct PublicOnly;
    impl AddressGuard for PublicOnly {
        fn allows(&self, _host: &str, ip: IpAddr) -> bool {
            let mapped_loopback = matches!(ip, IpAddr::V6(v6)
                if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
            !(ip.is_loopback() || ip.is_unspecified() || mapped_loopback)
        }
    }

    #[test]
    fn ip_literals_in_every_spelling_are_checked_before_a_request() {
        let g: Arc<dyn AddressGuard> = Arc::new(PublicOnly);
        for u in [
            "https://127.0.0.1/token",
            "https://2130706433/token",
            "https://0177.0.0.1/token",
            "https://0x7f000001/token",
            "https://127.1/token",
            "https://[::1]/token",
            "https://[::ffff:127.0.0.1]/token",
            "https://0.0.0.0/token",
        ] {
            let url = url::Url::parse(u).unwrap();
            let err = check_url(Some(&g), &url).unwrap_err().to_string();
            assert!(err.contains("private or local address"), "{u}: {err}");
        }
        let public = url::Url::parse("https://8.8.8.8/token").unwrap();
        assert!(check_url(Some(&g), &public).is_ok());
        let name = url::Url::parse("https://auth.example/token").unwrap();
        assert!(
            check_url(Some(&g), &name).is_ok(),
            "names are checked by the resolver"
        );
        let local = url::Url::parse("https://127.0.0.1/token").unwrap();
        assert!(check_url(None, &local).is_ok(), "no guard, no check");
    }

    struct OnePort;
    impl AddressGuard for OnePort {
        fn allows(&self, _host: &str, _ip: IpAddr) -> bool {
            true
        }
        fn allows_port(&self, host: &str, port: u16) -> bool {
            host != "internal.example" || port == 5000
        }
    }

    #[test]
    fn a_host_allowed_on_one_port_is_refused_on_others() {
        let g: Arc<dyn AddressGuard> = Arc::new(OnePort);
        let ok = url::Url::parse("http://internal.example:5000/token").unwrap();
        assert!(check_url(Some(&g), &ok).is_ok());
        for u in [
            "http://internal.example:6379/token",
            "https://internal.example/token",
        ] {
            let url = url::Url::parse(u).unwrap();
            assert!(check_url(Some(&g), &url).is_err(), "{u}");
            assert!(!url_allowed(g.as_ref(), &url), "{u}");
        }
    }
}
