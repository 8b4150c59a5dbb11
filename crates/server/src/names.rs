//! Checking what clients send: image names by the reference grammar, platforms by a strict
//! alphabet. Nothing a client sends reaches a shell, a path or a log unchecked.

use ferry_core::{Platform, Reference};

use crate::ServeError;

/// The longest image name accepted (the reference grammar allows 255 for the repository,
/// plus registry, tag and digest).
const MAX_NAME: usize = 512;

/// An image name as the reference grammar has it (`alpine`, `library/alpine:3.20`,
/// `ghcr.io/o/r@sha256:…`).
pub fn image(name: Option<&str>, param: &str) -> Result<Reference, ServeError> {
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ServeError::BadRequest(format!("give the image name as ?{param}=")))?;
    if name.len() > MAX_NAME || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ServeError::BadRequest(format!(
            "{param} is not an image name (at most {MAX_NAME} printable ASCII characters)"
        )));
    }
    name.parse::<Reference>()
        .map_err(|e| ServeError::BadRequest(format!("{:?} is not an image name: {e}", name)))
}

/// One of os/arch/variant: `[a-z0-9._-]{1,32}`.
fn platform_part(v: &str, what: &str) -> Result<(), ServeError> {
    let ok = (1..=32).contains(&v.len())
        && v.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ServeError::BadRequest(format!(
            "{what} must be 1 to 32 of a-z, 0-9, '.', '_', '-'"
        )))
    }
}

/// The platform a request names, if any: `os` (default linux when `arch` is given),
/// `arch`, `variant`.
pub fn platform(
    os: Option<&str>,
    arch: Option<&str>,
    variant: Option<&str>,
) -> Result<Option<Platform>, ServeError> {
    let (os, arch, variant) = (
        os.filter(|s| !s.is_empty()),
        arch.filter(|s| !s.is_empty()),
        variant.filter(|s| !s.is_empty()),
    );
    for (v, what) in [(os, "os"), (arch, "arch"), (variant, "variant")] {
        if let Some(v) = v {
            platform_part(v, what)?;
        }
    }
    match (os, arch) {
        (None, None) if variant.is_none() => Ok(None),
        (_, None) => Err(ServeError::BadRequest(
            "give arch with os or variant (e.g. &os=linux&arch=arm64&variant=v8)".into(),
        )),
        (os, Some(arch)) => Ok(Some(Platform::new(os.unwrap_or("linux"), arch, variant))),
    }
}

/// The download's file name as DockerImageSave gives it: the name as asked with `/`, `:`
/// and `.` turned into `_` (`ubuntu:25.04` → `ubuntu_25_04`).
pub fn file_stem(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| {
            if matches!(c, '/' | ':' | '.' | '@') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_docker_image_save() {
        assert_eq!(file_stem("ubuntu:25.04"), "ubuntu_25_04");
        assert_eq!(file_stem("ghcr.io/o/r:t"), "ghcr_io_o_r_t");
    }

    #[test]
    fn platform_parts_are_strict() {
        assert!(platform(Some("linux"), Some("arm64"), Some("v8")).is_ok());
        assert!(platform(Some("Linux"), Some("arm64"), None).is_err());
        assert!(platform(None, Some("a\"b"), None).is_err());
        assert!(platform(None, Some(&"a".repeat(33)), None).is_err());
        assert!(platform(Some("linux"), None, None).is_err());
        assert_eq!(platform(None, None, None).unwrap(), None);
    }

    #[test]
    fn names_are_checked_by_the_grammar() {
        assert!(image(Some("alpine:3.20"), "name").is_ok());
        assert!(image(Some("../.."), "name").is_err());
        assert!(image(Some("a b"), "name").is_err());
        assert!(image(Some("alpine;rm -rf /"), "name").is_err());
        assert!(image(None, "name").is_err());
    }
}
