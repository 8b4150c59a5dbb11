//! Mirrors: other endpoints serving a registry's content (a pull-through cache such as
//! `ferry serve`, a `docker-registry` proxy), asked before the registry itself — the
//! registries.conf / containerd `hosts.toml` idea.
//!
//! A read (manifest, manifest digest, blob) for registry R goes to each mirror of R in
//! order, then to R unless [`ClientOptions::mirrors_only`](crate::ClientOptions) is set. A
//! mirror request names the repository as R does (`library/alpine` for docker.io) and carries
//! `?ns=R`, containerd's convention for telling a mirror which upstream is meant (plain
//! registries ignore it). A mirror is another host: it gets only the credentials stored or
//! given for its own host, never R's. Bytes from a mirror are verified exactly as bytes from
//! R are (manifests here, blobs by the caller's digest check).

use std::sync::Arc;

use url::Url;

use crate::error::{redact, RegistryError};

/// "Requests for `registry` go to `endpoint` first."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRule {
    /// The registry as a user names it (`docker.io`, `ghcr.io`, `127.0.0.1:5000`); `None`
    /// for every registry.
    pub registry: Option<String>,
    /// `scheme://host[:port][/path]`, its path ending in `/`; the API is under `v2/` of it.
    pub endpoint: Url,
}

impl MirrorRule {
    /// A rule from `[REGISTRY=]URL` as given on a command line or in a config file. A URL
    /// without a scheme is `http://` on a loopback host (as registries are) and `https://`
    /// elsewhere.
    pub fn parse(spec: &str) -> Result<MirrorRule, RegistryError> {
        // Registry names hold no '=', and a mirror URL may not have a query.
        let (registry, url) = match spec.split_once('=') {
            Some((r, u)) if !r.contains('/') => (Some(r.trim().to_string()), u.trim()),
            _ => (None, spec.trim()),
        };
        if registry.as_deref() == Some("") {
            return Err(RegistryError::Config(format!(
                "mirror {spec:?} names no registry before '='"
            )));
        }
        let registry = registry.filter(|r| r != "*");
        Ok(MirrorRule {
            registry,
            endpoint: endpoint_url(url)?,
        })
    }

    /// Whether this rule applies to the registry at API host `host`.
    pub(crate) fn applies_to(&self, host: &str) -> bool {
        match &self.registry {
            None => true,
            Some(r) => r == host || r == user_name(host) || canonical(r) == host,
        }
    }
}

/// The endpoint URL of a mirror given as `URL` or `host[:port][/path]`.
pub fn endpoint_url(spec: &str) -> Result<Url, RegistryError> {
    let bad = |why: String| RegistryError::Config(format!("mirror {spec:?} is not a URL: {why}"));
    let text = if spec.contains("://") {
        spec.to_string()
    } else {
        let host = spec.split('/').next().unwrap_or(spec);
        let scheme = if ferry_core::reference::is_loopback_host(host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{spec}")
    };
    let mut url = Url::parse(&text).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "the scheme is {}, not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none() {
        return Err(bad("it names no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "it holds credentials; store them for the mirror's host instead (ferry login)".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it has a query or fragment".into()));
    }
    let path = url.path().trim_end_matches('/').to_string();
    let path = path.strip_suffix("/v2").unwrap_or(&path).to_string();
    url.set_path(&format!("{path}/"));
    Ok(url)
}

/// The name a user gives the registry at API host `host` (docker.io for Docker Hub).
pub(crate) fn user_name(host: &str) -> &str {
    if host == ferry_core::reference::DOCKER_HUB_API {
        "docker.io"
    } else {
        host
    }
}

fn canonical(name: &str) -> &str {
    match name {
        "docker.io" | "index.docker.io" => ferry_core::reference::DOCKER_HUB_API,
        other => other,
    }
}

/// A mirror that failed a request, and what is tried next.
#[derive(Debug, Clone)]
pub struct MirrorNotice {
    /// The registry the request was meant for, as a user names it.
    pub registry: String,
    /// The repository asked for.
    pub repository: String,
    /// The mirror's endpoint (redacted).
    pub mirror: String,
    /// The failure, rendered.
    pub reason: String,
    /// The next mirror's endpoint, or `None` when the registry itself is next.
    pub next: Option<String>,
}

impl std::fmt::Display for MirrorNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mirror {} failed for {}/{}: {}; ",
            self.mirror, self.registry, self.repository, self.reason
        )?;
        match &self.next {
            Some(n) => write!(f, "trying mirror {n}"),
            None => write!(f, "trying {} itself", self.registry),
        }
    }
}

/// Told about every mirror that fails, before the next endpoint is tried.
pub type MirrorHook = Arc<dyn Fn(&MirrorNotice) + Send + Sync>;

/// Where one read goes: a mirror (by its endpoint) or the registry itself.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The key of the endpoint's state: the API host, or the mirror's endpoint URL.
    pub(crate) key: String,
    /// Appended to every path: `?ns=R` on a mirror, empty on the registry.
    pub(crate) ns: Option<String>,
}

impl Route {
    /// `path` (which may hold a query already) with this route's `ns`.
    pub(crate) fn path(&self, path: &str) -> String {
        match &self.ns {
            None => path.to_string(),
            Some(ns) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}ns={ns}")
            }
        }
    }

    pub(crate) fn is_mirror(&self) -> bool {
        self.ns.is_some()
    }
}

/// Whether a failure on a mirror means "try the next endpoint". Only local failures (the
/// download target, the configuration) end the read at once.
pub(crate) fn falls_back(e: &RegistryError) -> bool {
    !matches!(
        e,
        RegistryError::Write { .. } | RegistryError::Config(_) | RegistryError::Source { .. }
    )
}

/// Whether a failure means the mirror is no use for the rest of this run (it is down or
/// refuses us), as opposed to lacking one object.
pub(crate) fn mirror_down(e: &RegistryError) -> bool {
    !e.is_not_found()
}

pub(crate) fn shown(url: &Url) -> String {
    redact(url).trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn mirror_requests_name_the_registry_in_ns() {
        let m = Route {
            key: "http://127.0.0.1:5000/".into(),
            ns: Some("docker.io".into()),
        };
        assert_eq!(
            m.path("v2/library/alpine/manifests/3"),
            "v2/library/alpine/manifests/3?ns=docker.io"
        );
        assert_eq!(
            m.path("v2/x/tags/list?n=5"),
            "v2/x/tags/list?n=5&ns=docker.io"
        );
        let r = Route {
            key: "registry-1.docker.io".into(),
            ns: None,
        };
        assert_eq!(r.path("v2/x/blobs/d"), "v2/x/blobs/d");
    }
}
