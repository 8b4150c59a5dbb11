//! The user's config file for `ferry pull`: a default ferry server and mirrors per registry
//! (the registries.conf idea), at `$XDG_CONFIG_HOME/ferry/config.toml`.
//!
//! ```toml
//! server = "http://ferry.lan:8080"
//! [mirrors]
//! "docker.io" = ["https://mirror.example", "http://127.0.0.1:5000"]
//! "*" = ["https://all.example"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exit;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserConfig {
    pub(crate) server: Option<String>,
    #[serde(default)]
    pub(crate) mirrors: BTreeMap<String, Vec<String>>,
}

impl UserConfig {
    /// The mirror rules as `[REGISTRY=]URL` specs: those for one registry first (a
    /// registry's own mirrors come before the ones for every registry), each list in order.
    pub(crate) fn mirror_specs(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (registry, urls) in self.mirrors.iter().filter(|(r, _)| r.as_str() != "*") {
            out.extend(urls.iter().map(|u| format!("{registry}={u}")));
        }
        if let Some(all) = self.mirrors.get("*") {
            out.extend(all.iter().cloned());
        }
        out
    }
}

/// The default file: `$XDG_CONFIG_HOME/ferry/config.toml`, else `~/.config/ferry/config.toml`.
fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("ferry").join("config.toml"))
}

/// Read the config file: `explicit` (--config, FERRY_CONFIG) must exist; the default one may
/// be missing (then nothing is configured). A malformed file is a usage error naming the
/// file and the line.
pub(crate) fn load(explicit: Option<&Path>) -> anyhow::Result<(UserConfig, Option<PathBuf>)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match default_path() {
            Some(p) if p.exists() => p,
            _ => return Ok((UserConfig::default(), None)),
        },
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let config = parse(&text).map_err(|(line, why)| {
        exit::usage(
            format!(
                "the config file {} is not valid: line {line}: {why}",
                path.display()
            ),
            Some("it may hold server = \"URL\" and a [mirrors] table: \"docker.io\" = [\"URL\", ...], \"*\" = [...]"),
        )
    })?;
    Ok((config, Some(path)))
}

/// Parse the file's text; on failure the (1-based) line and why.
fn parse(text: &str) -> Result<UserConfig, (usize, String)> {
    toml::from_str::<UserConfig>(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        (line, e.message().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn config_mirrors_come_per_registry_then_for_all() {
        let c = parse(
            "server = \"http://s:1\"\n[mirrors]\n\"*\" = [\"http://all\"]\n\"docker.io\" = [\"https://a\", \"http://b\"]\n",
        )
        .unwrap();
        assert_eq!(c.server.as_deref(), Some("http://s:1"));
        assert_eq!(
            c.mirror_specs(),
            vec!["docker.io=https://a", "docker.io=http://b", "http://all"]
        );
    }

    #[test]
    fn a_malformed_config_names_the_line() {
        let (line, why) =
            parse("server = \"http://s\"\n\n[mirrors]\n\"docker.io\" = \"x\"\n").unwrap_err();
        assert_eq!(line, 4, "{why}");
        let (line, why) = parse("server = \"http://s\"\nservers = 1\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(why.contains("unknown field `servers`"), "{why}");
    }
}
