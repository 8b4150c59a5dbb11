//! What a `/v2/` path names: the repository as the client spelt it, which upstream
//! registry and repository that is, and the object asked for. Names are checked against the
//! distribution spec's grammar before anything else sees them, so no `..`, no empty or
//! odd components, nothing over the spec's length.

use ferry_core::{Digest, Reference};

use super::error::{Code, V2Error};

/// The longest repository name the spec allows clients to rely on.
const MAX_NAME: usize = 255;

/// The object under the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A tag or a digest.
    Manifest(String),
    Blob(String),
    Tags,
}

/// A parsed `/v2/<name>/…` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Path {
    /// The name as the client wrote it (for `Link` headers back at the mirror).
    pub name: String,
    pub object: Object,
}

/// Split `rest` (the path after `/v2/`) into name and object. The object is found from the
/// end, since names have slashes.
pub fn parse(rest: &str) -> Result<V2Path, V2Error> {
    let unknown = || V2Error::new(404, Code::NameUnknown, "no such registry API path");
    let (name, object) = if let Some(n) = rest.strip_suffix("/tags/list") {
        (n, Object::Tags)
    } else if let Some((n, r)) = rest.rsplit_once("/manifests/") {
        (n, Object::Manifest(r.to_string()))
    } else if let Some((n, d)) = rest.rsplit_once("/blobs/") {
        (n, Object::Blob(d.to_string()))
    } else {
        return Err(unknown());
    };
    check_name(name)?;
    Ok(V2Path {
        name: name.to_string(),
        object,
    })
}

/// The spec's repository grammar: components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by
/// `/`, at most 255 characters; the first may instead be a registry host (see
/// [`host_prefix`]).
pub fn check_name(name: &str) -> Result<(), V2Error> {
    let bad = |why: &str| {
        V2Error::new(
            400,
            Code::NameInvalid,
            format!("invalid repository name: {why}"),
        )
        .detail(name.chars().take(MAX_NAME).collect::<String>())
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(bad("longer than 255 characters"));
    }
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    if !(is_component(first) || looks_like_host(first) && is_host(first)) {
        return Err(bad("each path component is lowercase letters and digits, separated by '.', '_', '__' or dashes"));
    }
    if looks_like_host(first) && name == first {
        return Err(bad("a registry host alone names no repository"));
    }
    if !parts.all(is_component) {
        return Err(bad("each path component is lowercase letters and digits, separated by '.', '_', '__' or dashes"));
    }
    Ok(())
}

fn is_component(c: &str) -> bool {
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
        // A separator: '.', '_', '__' or any run of '-', with alphanumerics on both sides.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !b.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// A first component that names a registry: it has a `.` or a `:`, or is `localhost`
/// (the reference grammar's rule).
pub fn looks_like_host(c: &str) -> bool {
    c.contains('.') || c.contains(':') || c == "localhost"
}

/// `host[:port]` with DNS labels (letters, digits, inner dashes).
fn is_host(c: &str) -> bool {
    let (host, port) = match c.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (c, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|x| x.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// The registry and repository upstream: `ns` (containerd's `?ns=`) when given, else a
/// host prefix of the name, else `mirror_of`. Docker Hub's short names get `library/` from
/// the reference parser, as everywhere in ferry.
pub fn upstream(name: &str, ns: Option<&str>, mirror_of: &str) -> Result<Reference, V2Error> {
    let full = match ns.filter(|n| !n.is_empty()) {
        Some(ns) => {
            if !is_host(ns) {
                return Err(V2Error::new(
                    400,
                    Code::NameInvalid,
                    "?ns= is not a registry host (HOST or HOST:PORT)",
                ));
            }
            format!("{ns}/{name}")
        }
        None => {
            let first = name.split('/').next().unwrap_or_default();
            if looks_like_host(first) {
                name.to_string()
            } else {
                format!("{mirror_of}/{name}")
            }
        }
    };
    full.parse::<Reference>().map_err(|e| {
        V2Error::new(
            400,
            Code::NameInvalid,
            format!("invalid repository name: {e}"),
        )
        .detail(name.to_string())
    })
}

/// `r` pointed at manifest `reference` (a tag or a digest), or NAME/MANIFEST errors.
pub fn manifest_ref(r: &Reference, reference: &str) -> Result<Reference, V2Error> {
    let s = if reference.contains(':') {
        let d: Digest = reference.parse().map_err(|_| {
            V2Error::new(400, Code::DigestInvalid, "the digest is not ALGORITHM:HEX")
                .detail(reference.to_string())
        })?;
        format!("{}@{d}", r.name())
    } else {
        let tag_ok = !reference.is_empty()
            && reference.len() <= 128
            && reference
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !tag_ok {
            return Err(
                V2Error::new(404, Code::ManifestUnknown, "not a tag or a digest")
                    .detail(reference.chars().take(128).collect::<String>()),
            );
        }
        format!("{}:{reference}", r.name())
    };
    s.parse::<Reference>()
        .map_err(|e| V2Error::new(400, Code::NameInvalid, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_name_and_object() {
        let p = parse("library/alpine/manifests/3.20").unwrap();
        assert_eq!(p.name, "library/alpine");
        assert_eq!(p.object, Object::Manifest("3.20".into()));
        let p = parse("a/blobs/b/blobs/sha256:00").unwrap();
        assert_eq!(p.name, "a/blobs/b");
        assert_eq!(parse("x/y/tags/list").unwrap().object, Object::Tags);
        assert!(parse("x/y/other").is_err());
    }

    #[test]
    fn names_follow_the_grammar() {
        for ok in [
            "alpine",
            "library/alpine",
            "a-b__c.d/e",
            "ghcr.io/o/r",
            "localhost:5000/x",
            "127.0.0.1:5000/a",
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            "a/../b",
            "A/b",
            "a//b",
            "a/",
            "-a",
            "a_",
            "a___b",
            "ghcr.io",
            &"a".repeat(256),
            "a b",
            "a/%2e%2e",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_upstream_is_ns_then_a_host_prefix_then_mirror_of() {
        let r = upstream("alpine", None, "docker.io").unwrap();
        assert_eq!(
            (r.registry(), r.repository()),
            ("docker.io", "library/alpine")
        );
        let r = upstream("o/r", Some("ghcr.io"), "docker.io").unwrap();
        assert_eq!((r.registry(), r.repository()), ("ghcr.io", "o/r"));
        let r = upstream("ghcr.io/o/r", None, "docker.io").unwrap();
        assert_eq!((r.registry(), r.repository()), ("ghcr.io", "o/r"));
        let r = upstream("app", None, "127.0.0.1:5000").unwrap();
        assert_eq!((r.registry(), r.repository()), ("127.0.0.1:5000", "app"));
        assert!(upstream("a", Some("bad host/x"), "docker.io").is_err());
    }
}
