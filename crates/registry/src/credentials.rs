//! Where credentials come from: explicit ones, podman's `auth.json`, and docker's
//! `config.json` (`auths` with `auth` or `identitytoken`, `credHelpers`, `credsStore`).

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

/// A credential for one registry. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json), exchanged at the token realm.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Only the position is kept: serde's message would quote the file's values, secrets
    /// among them.
    #[error("{path} is not a valid credentials file (JSON error at line {line}, column {column})")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("the 'auth' entry for {registry} in {path} is not base64 of 'user:password'")]
    BadAuth { registry: String, path: PathBuf },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {reason}")]
    Helper {
        helper: String,
        registry: String,
        reason: String,
    },
    /// Writing a credentials file (its temporary file, or the rename over it) failed.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is JSON, but not shaped like a credentials file, so it is left alone.
    #[error("{path} cannot be updated: {what}")]
    Shape { path: PathBuf, what: &'static str },
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The files credentials are looked up in, in order. Built from the environment by
/// [`CredentialFiles::from_env`]; tests build their own.
#[derive(Debug, Clone, Default)]
pub struct CredentialFiles {
    pub files: Vec<PathBuf>,
}

impl CredentialFiles {
    /// `$REGISTRY_AUTH_FILE` (podman), `$XDG_RUNTIME_DIR/containers/auth.json`, then
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub fn from_env() -> CredentialFiles {
        let mut files = Vec::new();
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
            files.push(PathBuf::from(p));
        } else if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
            files.push(Path::new(&run).join("containers/auth.json"));
        }
        files.push(docker_config_path());
        CredentialFiles { files }
    }

    /// The credential for `registry` (as users name it: `docker.io`, `ghcr.io`,
    /// `localhost:5000`), or `None` when no file has one.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credential>, CredentialError> {
        for path in &self.files {
            let text = match std::fs::read(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CredentialError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            };
            let cfg: ConfigFile =
                serde_json::from_slice(&text).map_err(|e| CredentialError::Parse {
                    path: path.clone(),
                    line: e.line(),
                    column: e.column(),
                })?;
            if let Some(c) = lookup_in(&cfg, path, registry)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => Path::new(&d).join("config.json"),
        None => home_dir().join(".docker/config.json"),
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The keys a registry may be stored under. Docker Hub is `https://index.docker.io/v1/`.
pub(crate) fn normalise_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" | "registry.docker.io" => {
            "docker.io".to_string()
        }
        other => other.to_string(),
    }
}

pub(crate) fn helper_server_url(registry: &str) -> String {
    if registry == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

fn lookup_in(
    cfg: &ConfigFile,
    path: &Path,
    registry: &str,
) -> Result<Option<Credential>, CredentialError> {
    // docker's order (`GetCredentialsStore`): the registry's `credHelpers` entry, else
    // `credsStore`, else the file. With a helper configured docker never reads the file's
    // secret (its native store keeps only the email there), so neither does ferry: an old
    // `auth` left in the file must not win over what the helper holds.
    let want = normalise_key(registry);
    if let Some((_, helper)) = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| normalise_key(k) == want)
    {
        return run_helper(helper, registry);
    }
    if let Some(store) = cfg.creds_store.as_ref().filter(|s| !s.is_empty()) {
        return run_helper(store, registry);
    }
    if let Some((_, entry)) = cfg.auths.iter().find(|(k, _)| normalise_key(k) == want) {
        if let Some(tok) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(tok.clone())));
        }
        if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
            let bad = || CredentialError::BadAuth {
                registry: registry.to_string(),
                path: path.to_path_buf(),
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let text = String::from_utf8(raw).map_err(|_| bad())?;
            let (u, p) = text.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credential::Basic {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            }));
        }
    }
    Ok(None)
}

/// Run `docker-credential-<helper> get` with the server URL on stdin (no shell involved).
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credential>, CredentialError> {
    let fail = |reason: String| CredentialError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        reason,
    };
    let out = helper_call(helper, "get", helper_server_url(registry).as_bytes()).map_err(fail)?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // Helpers answer "credentials not found in native keychain" when they have none.
        if msg.to_ascii_lowercase().contains("not found") {
            return Ok(None);
        }
        return Err(fail(format!("exit status {}", out.status)));
    }
    #[derive(Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let ans: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|e| {
        fail(format!(
            "its answer is not the expected JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if ans.username == "<token>" {
        return Ok(Some(Credential::IdentityToken(ans.secret)));
    }
    Ok(Some(Credential::Basic {
        username: ans.username,
        password: ans.secret,
    }))
}

/// Run `docker-credential-<helper> <op>` (no shell involved) with `input` on its stdin and
/// return what it did. The error text never holds `input`: a `store` input is a secret.
pub(crate) fn helper_call(
    helper: &str,
    op: &str,
    input: &[u8],
) -> Result<std::process::Output, String> {
    if !helper
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("the helper name has characters a program name cannot have".into());
    }
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(op)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its exit status below.
        if let Err(e) = stdin.write_all(input) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(format!("writing to it: {e}"));
            }
        }
    }
    child.wait_with_output().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_with(json: &str) -> (tempfile::TempDir, CredentialFiles) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(&p, json).unwrap();
        (d, CredentialFiles { files: vec![p] })
    }

    #[test]
    fn auths_entries() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let (_d, f) = files_with(&format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"ghcr.io":{{"identitytoken":"tok"}},"localhost:5000":{{"auth":"bm9jb2xvbg=="}}}}}}"#
        ));
        assert_eq!(
            f.lookup("docker.io").unwrap(),
            Some(Credential::Basic {
                username: "bob".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            f.lookup("ghcr.io").unwrap(),
            Some(Credential::IdentityToken("tok".into()))
        );
        assert!(f.lookup("quay.io").unwrap().is_none());
        let err = f.lookup("localhost:5000").unwrap_err().to_string();
        assert!(err.contains("not base64 of 'user:password'"), "{err}");
        assert!(!format!("{:?}", f.lookup("docker.io").unwrap()).contains("s3cret"));
    }

    /// A directory on PATH (put there once for the whole test binary: PATH is process-wide
    /// and tests run in parallel) holding `docker-credential-ferrytest`, which answers
    /// `u-URL` / `p` for any server URL, and `docker-credential-ferryempty`, which holds
    /// nothing.
    fn test_helpers() {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        DIR.get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let d = tempfile::tempdir().unwrap();
            for (name, body) in [
                (
                    "ferrytest",
                    "read url\necho \"{\\\"Username\\\":\\\"u-$url\\\",\\\"Secret\\\":\\\"p\\\"}\"\n",
                ),
                (
                    "ferryempty",
                    "echo \"credentials not found in native keychain\"\nexit 1\n",
                ),
            ] {
                let helper = d.path().join(format!("docker-credential-{name}"));
                std::fs::write(&helper, format!("#!/bin/sh\n{body}")).unwrap();
                std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755))
                    .unwrap();
            }
            let path = format!(
                "{}:{}",
                d.path().display(),
                std::env::var("PATH").unwrap_or_default()
            );
            std::env::set_var("PATH", path);
            d
        });
    }

    #[test]
    fn helpers_are_run_without_a_shell() {
        test_helpers();
        let (_c, f) =
            files_with(r#"{"credHelpers":{"myreg.example":"ferrytest"},"credsStore":"ferrytest"}"#);
        assert_eq!(
            f.lookup("myreg.example").unwrap(),
            Some(Credential::Basic {
                username: "u-myreg.example".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            f.lookup("docker.io").unwrap(),
            Some(Credential::Basic {
                username: "u-https://index.docker.io/v1/".into(),
                password: "p".into()
            })
        );
        let (_c, f) = files_with(r#"{"credsStore":"bad;rm -rf /"}"#);
        assert!(f.lookup("x.io").is_err());
    }

    /// docker's order: `credHelpers[registry]`, else `credsStore`, else the file's `auths`.
    /// With a helper configured the file's secret is never used, even when the helper holds
    /// nothing (docker's native store reads only the email from the file).
    #[test]
    fn a_configured_helper_wins_over_the_files_auths_entry() {
        test_helpers();
        let stale = base64::engine::general_purpose::STANDARD.encode("stale:old-pw");
        let (_c, f) = files_with(&format!(
            r#"{{"auths":{{"myreg.example":{{"auth":"{stale}"}},"other.example":{{"auth":"{stale}"}}}},"credsStore":"ferrytest","credHelpers":{{"other.example":"ferryempty"}}}}"#
        ));
        assert_eq!(
            f.lookup("myreg.example").unwrap(),
            Some(Credential::Basic {
                username: "u-myreg.example".into(),
                password: "p".into()
            }),
            "credsStore is asked before auths"
        );
        assert_eq!(
            f.lookup("other.example").unwrap(),
            None,
            "credHelpers is asked first, and its 'not found' is final"
        );
        let (_c, f) = files_with(&format!(
            r#"{{"auths":{{"myreg.example":{{"auth":"{stale}"}}}},"credsStore":"ferryempty"}}"#
        ));
        assert_eq!(f.lookup("myreg.example").unwrap(), None);
        // An empty credsStore is no helper: the file is read.
        let (_c, f) = files_with(&format!(
            r#"{{"auths":{{"myreg.example":{{"auth":"{stale}"}}}},"credsStore":""}}"#
        ));
        assert_eq!(
            f.lookup("myreg.example").unwrap(),
            Some(Credential::Basic {
                username: "stale".into(),
                password: "old-pw".into()
            })
        );
    }
}
