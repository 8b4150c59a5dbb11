//! Image references: `[host[:port]/]path[:tag][@digest]`, the grammar of the distribution
//! project's `reference` package, with Docker Hub normalising.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The registry that short names (`alpine`, `user/app`) refer to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Why a string is not an image reference. Each variant names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the reference is empty")]
    Empty,
    #[error("reference {reference:?}: the repository name must be lowercase ({component:?})")]
    Uppercase {
        reference: String,
        component: String,
    },
    #[error(
        "reference {reference:?} has an empty path component (check for '//' or a trailing '/')"
    )]
    EmptyComponent { reference: String },
    #[error("reference {reference:?}: path component {component:?} has invalid characters (allowed: a-z, 0-9, and '.', '_', '__' or '-' between them)")]
    BadComponent {
        reference: String,
        component: String,
    },
    #[error("reference {reference:?}: registry host {host:?} is not a valid host[:port]")]
    BadHost { reference: String, host: String },
    #[error("reference {reference:?}: tag {tag:?} is invalid (1-128 characters of A-Z a-z 0-9 _ . -, not starting with '.' or '-')")]
    BadTag { reference: String, tag: String },
    #[error("reference {reference:?}: the name is {len} characters, over the limit of 255")]
    TooLong { reference: String, len: usize },
    #[error("reference {reference:?}: {source}")]
    BadDigest {
        reference: String,
        source: DigestError,
    },
}

/// A fully normalised image reference.
///
/// When both a tag and a digest are given the digest wins: it is what is fetched and
/// verified, and the tag is kept only to name the image in outputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Build a reference from parts that are already valid (as a registry reported them).
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<Reference, ReferenceError> {
        let mut s = format!("{registry}/{repository}");
        if let Some(t) = tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s.parse()
    }

    /// The registry as users name it (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) to send registry API requests to.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository path (`library/alpine`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `latest` when neither tag nor digest was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest if there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same image pinned to `digest` (the tag is kept for naming).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same reference without its tag (a digest reference stays one).
    pub fn without_tag(&self) -> Reference {
        Reference {
            tag: None,
            ..self.clone()
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        Reference::new(&self.registry, &self.repository, Some(tag), None)
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short name docker shows: `docker.io/library/` and `docker.io/` are dropped.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        }
    }

    /// `familiar_name:tag` (`alpine:3.20`), or `familiar_name@digest` when there is no tag.
    pub fn familiar(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{}:{t}", self.familiar_name()),
            (None, Some(d)) => format!("{}@{d}", self.familiar_name()),
            (None, None) => format!("{}:latest", self.familiar_name()),
        }
    }

    /// The full name with the tag (`docker.io/library/alpine:3.20`), as containerd names images;
    /// `None` when the reference has no tag.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// A safe file name stem for this image: `alpine:3.20` → `alpine_3.20`,
    /// `ghcr.io/org/app:1` → `ghcr.io_org_app_1`, a digest-only reference uses 12 hex digits.
    pub fn file_stem(&self) -> String {
        let base = self.familiar_name().replace(['/', ':'], "_");
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{base}_{t}"),
            (None, Some(d)) => format!("{base}_{}", d.short()),
            (None, None) => format!("{base}_latest"),
        }
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`, `[::1]`), where
    /// plain HTTP is used without asking, as docker does.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

/// Whether `host[:port]` names this machine.
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let reference = input.to_string();
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|source| ReferenceError::BadDigest {
                        reference: reference.clone(),
                        source,
                    })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/', so `host:5000/repo` has none.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(ReferenceError::BadTag {
                    reference,
                    tag: t.to_string(),
                });
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::EmptyComponent { reference });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong {
                reference,
                len: name.len(),
            });
        }
        let (registry, path) = split_domain(name);
        if let Some(host) = registry {
            if !valid_host(host) {
                return Err(ReferenceError::BadHost {
                    reference,
                    host: host.to_string(),
                });
            }
        }
        for component in path.split('/') {
            if component.is_empty() {
                return Err(ReferenceError::EmptyComponent { reference });
            }
            if !valid_component(component) {
                if valid_component(&component.to_ascii_lowercase()) {
                    return Err(ReferenceError::Uppercase {
                        reference,
                        component: component.to_string(),
                    });
                }
                return Err(ReferenceError::BadComponent {
                    reference,
                    component: component.to_string(),
                });
            }
        }
        let mut registry = registry.unwrap_or(DOCKER_HUB).to_string();
        if registry == "index.docker.io" || registry == DOCKER_HUB_API {
            registry = DOCKER_HUB.to_string();
        }
        let mut repository = path.to_string();
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        let full_len = registry.len() + 1 + repository.len();
        if full_len > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong {
                reference,
                len: full_len,
            });
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// Split off the registry: the first component is a host if it has a '.' or ':', is
/// `localhost`, or has uppercase letters (which a repository may not).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_host(host: &str) -> bool {
    let (h, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((ip6, after)) = rest.split_once(']') else {
            return false;
        };
        if ip6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match host.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n > 65535)
        {
            return false;
        }
    }
    if host.starts_with('[') {
        return true;
    }
    !h.is_empty()
        && h.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_normalising() {
        assert_eq!(p("alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(p("alpine").api_host(), "registry-1.docker.io");
        assert_eq!(p("user/app:1").to_string(), "docker.io/user/app:1");
        assert_eq!(
            p("docker.io/alpine:3.20").to_string(),
            "docker.io/library/alpine:3.20"
        );
        assert_eq!(p("index.docker.io/library/alpine").registry(), "docker.io");
        assert_eq!(p("alpine:3.20").familiar(), "alpine:3.20");
        assert_eq!(p("user/app").familiar(), "user/app:latest");
        assert_eq!(p("alpine:3.20").file_stem(), "alpine_3.20");
    }

    #[test]
    fn hosts_ports_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("localhost:5000/team/app:v1@{d}"));
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_reference(), d, "the digest wins over the tag");
        assert!(r.is_loopback());
        let r = p(&format!("ghcr.io/org/app@{d}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.file_stem(), "ghcr.io_org_app_aaaaaaaaaaaa");
        assert_eq!(p("127.0.0.1:5000/x").api_host(), "127.0.0.1:5000");
        assert!(p("[::1]:5000/x").is_loopback());
        assert!(!p("ghcr.io/x").is_loopback());
        assert_eq!(p("localhost/x").registry(), "localhost");
        assert_eq!(p("a__b/c-d--e/f.g").repository(), "a__b/c-d--e/f.g");
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Alpine", "lowercase"),
            ("docker.io/Library/alpine", "lowercase"),
            ("a//b", "empty path component"),
            ("a/", "empty path component"),
            ("a$b", "invalid characters"),
            ("-a", "invalid characters"),
            ("a:", "tag"),
            ("a:-x", "tag"),
            ("a@sha256:xyz", "lowercase hex"),
            ("a@md5:abc", "not supported"),
            ("bad_host:5000/x", "registry host"),
            ("host:99999/x", "registry host"),
        ];
        for (input, needle) in cases {
            let err = input.parse::<Reference>().expect_err(input).to_string();
            assert!(
                err.contains(needle),
                "{input:?} gave {err:?}, expected it to mention {needle:?}"
            );
        }
        let long = format!("{}/x", "a".repeat(260));
        assert!(long
            .parse::<Reference>()
            .unwrap_err()
            .to_string()
            .contains("over the limit"));
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}"
    }

    proptest! {
        #[test]
        fn display_round_trips(
            host in proptest::option::of("[a-z]{1,8}\\.[a-z]{2,4}(:[1-9][0-9]{0,3})?"),
            path in proptest::collection::vec(component(), 1..4),
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            hexd in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let mut path = path;
            // Without a host, a first component with a '.' would be read as one.
            if host.is_none() { path[0] = path[0].replace('.', "-"); }
            let mut s = String::new();
            if let Some(h) = &host { s.push_str(h); s.push('/'); }
            s.push_str(&path.join("/"));
            if let Some(t) = &tag { s.push(':'); s.push_str(t); }
            if let Some(h) = &hexd { s.push_str("@sha256:"); s.push_str(h); }
            let r: Reference = s.parse().unwrap();
            let again: Reference = r.to_string().parse().unwrap();
            prop_assert_eq!(&again, &r);
            if tag.is_some() { prop_assert_eq!(r.tag(), tag.as_deref()); }
            if let Some(h) = hexd { prop_assert_eq!(r.manifest_reference(), format!("sha256:{h}")); }
            let stem = r.file_stem();
            prop_assert!(!stem.contains('/') && !stem.starts_with('.'));
        }

        #[test]
        fn never_panics_and_errors_are_sentences(s in "\\PC{0,300}") {
            if let Err(e) = s.parse::<Reference>() {
                prop_assert!(!e.to_string().is_empty());
            }
        }

        #[test]
        fn uppercase_repositories_are_rejected(c in "[a-z]{0,4}[A-Z][a-z]{0,4}") {
            let err = format!("docker.io/{c}").parse::<Reference>().unwrap_err();
            prop_assert!(matches!(err, ReferenceError::Uppercase { .. }), "{}", err);
        }
    }
}
