//! Platforms (`os/arch[/variant]`) and choosing one from an index, as docker does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a `--platform` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform {0:?} is not of the form os/arch[/variant] (for example linux/arm64/v8)")]
pub struct PlatformError(pub String);

/// An image platform as an index entry describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
            os_version: None,
        }
    }

    /// The platform of the machine ferry runs on, as docker names it.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        let os = match std::env::consts::OS {
            "macos" => "linux",
            other => other,
        };
        Platform::new(os, arch, variant)
    }

    /// Whether an index entry's platform satisfies this wanted platform. A wanted platform
    /// without variant accepts any variant; `arm64` and `arm64/v8` are the same.
    pub fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os
            || normalise_arch(&self.architecture) != normalise_arch(&candidate.architecture)
        {
            return false;
        }
        match &self.variant {
            None => true,
            Some(v) => {
                normalise_variant(&self.architecture, Some(v))
                    == normalise_variant(&candidate.architecture, candidate.variant.as_deref())
            }
        }
    }

    /// Choose the best entry among `candidates` for this wanted platform: an exact variant
    /// match first, then the architecture's default variant, then the first that matches.
    pub fn choose<'a, T>(
        &self,
        candidates: &'a [T],
        platform_of: impl Fn(&T) -> Option<&Platform>,
    ) -> Option<&'a T> {
        let matching: Vec<&T> = candidates
            .iter()
            .filter(|c| platform_of(c).is_some_and(|p| self.matches(p)))
            .collect();
        let default_variant = match normalise_arch(&self.architecture) {
            "arm" => Some("v7"),
            "arm64" => Some("v8"),
            _ => None,
        };
        matching
            .iter()
            .find(|c| {
                let p = platform_of(c).expect("filtered");
                normalise_variant(&p.architecture, p.variant.as_deref()).as_deref()
                    == default_variant
            })
            .or_else(|| matching.first())
            .copied()
    }
}

fn normalise_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" | "armel" => "arm",
        other => other,
    }
}

fn normalise_variant(arch: &str, v: Option<&str>) -> Option<String> {
    match (normalise_arch(arch), v) {
        ("arm64", None) => Some("v8".to_string()),
        ("arm", None) => Some("v7".to_string()),
        (_, v) => v.map(str::to_string),
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform::new(os, arch, Some(v))),
            _ => Err(PlatformError(s.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let want: Platform = "linux/arm64".parse().unwrap();
        assert!(want.matches(&Platform::new("linux", "arm64", Some("v8"))));
        assert!(!want.matches(&Platform::new("linux", "amd64", None)));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(v7.matches(&Platform::new("linux", "arm", None)));
        assert!(!v7.matches(&Platform::new("linux", "arm", Some("v6"))));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v2/x".parse::<Platform>().is_err());
        assert_eq!(v7.to_string(), "linux/arm/v7");
    }

    #[test]
    fn choose_prefers_default_variant() {
        let c = vec![
            Platform::new("linux", "arm", Some("v6")),
            Platform::new("linux", "arm", Some("v7")),
        ];
        let want: Platform = "linux/arm".parse().unwrap();
        assert_eq!(
            want.choose(&c, |p| Some(p)).unwrap().variant.as_deref(),
            Some("v7")
        );
    }
}
