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
            "{} is a private or local address; this server may not connect to it",
            url.host_str().unwrap_or("")
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
            !(ip.is_loopback() || ip.is_unspecified())
                && !matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
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
}
