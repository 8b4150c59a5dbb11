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

/// Whether a redirect to `url` may be followed: host names go through the resolver, but an
/// IP literal is connected to directly, so it is checked here.
pub(crate) fn redirect_allowed(guard: &dyn AddressGuard, url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => guard.allows(&ip.to_string(), IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => guard.allows(&ip.to_string(), IpAddr::V6(ip)),
        _ => true,
    }
}
