//! `ferry serve`: flags, environment and the TOML file merged into the server's
//! configuration (flags win over the environment, which wins over the file); then the
//! server runs until SIGTERM or Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use ferry_registry::{Credential, CredentialFiles};
use ferry_server::{Config, HostPort};

use crate::cli::{parse_duration, parse_size_value, ServeArgs};
use crate::exit;
use crate::stdio::say;

/// How long downloads in flight may go on after a stop signal.
const GRACE: Duration = Duration::from_secs(30);

/// A size in the file: a number of bytes or a string with a unit ("50G").
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// The `--config` file: the flags' names as keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<String>,
    cache_dir: Option<PathBuf>,
    cache_max_size: Option<Size>,
    cache_max_age: Option<String>,
    tag_ttl: Option<String>,
    #[serde(default)]
    allow_private: Vec<String>,
    #[serde(default)]
    allow_registry: Vec<String>,
    #[serde(default)]
    insecure_registry: Vec<String>,
    default_platform: Option<String>,
    max_image_size: Option<Size>,
    #[serde(default)]
    token: Vec<String>,
    max_pulls: Option<u32>,
    max_downloads_per_client: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    min_rate: Option<Size>,
    mirror_of: Option<String>,
    /// Upstream credentials per registry: `[registries."ghcr.io"]` with `username` and
    /// `password`.
    #[serde(default)]
    registries: std::collections::HashMap<String, RegistryLogin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryLogin {
    username: String,
    password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "RegistryLogin({}, <redacted>)", self.username)
    }
}

fn size(s: Size, key: &str) -> anyhow::Result<u64> {
    match s {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size_value(&t).map_err(|e| exit::usage(format!("{key}: {e}"), None)),
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        exit::usage(
            format!("the configuration {} is not valid: {}", path.display(), e.message()),
            Some("keys are the options' names without the leading dashes: listen, cache-dir, cache-max-size, cache-max-age, tag-ttl, allow-private, allow-registry, insecure-registry, default-platform, max-image-size, token, max-pulls, max-downloads-per-client, tls-cert, tls-key, min-rate, mirror-of, [registries.\"HOST\"] with username and password"),
        )
    })
}

fn host_ports(list: &[String], flag: &str) -> anyhow::Result<Vec<HostPort>> {
    list.iter()
        .map(|s| HostPort::parse(s).map_err(|e| exit::usage(format!("--{flag}: {e}"), None)))
        .collect()
}

/// Flags (and their env vars) first, the file for what they leave unset.
fn or_file(flag: Vec<String>, file: Vec<String>) -> Vec<String> {
    if flag.is_empty() {
        file
    } else {
        flag
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let listen = match (args.listen, file.listen) {
        (Some(a), _) => a,
        (None, Some(s)) => s.parse().map_err(|_| {
            exit::usage(format!("listen: {s:?} is not an address (HOST:PORT)"), None)
        })?,
        (None, None) => "127.0.0.1:8080".parse().expect("a valid address"),
    };
    let cache_dir = match args.cache_dir.or(file.cache_dir) {
        Some(d) => d,
        None => dirs::cache_dir().map(|d| d.join("ferry")).ok_or_else(|| {
            exit::usage(
                "cannot tell where the cache directory should be",
                Some("give one with --cache-dir DIR"),
            )
        })?,
    };
    let mut cfg = Config::new(cache_dir);
    cfg.cache_max_size = match args.cache_max_size {
        Some(n) => Some(n),
        None => file
            .cache_max_size
            .map(|s| size(s, "cache-max-size"))
            .transpose()?,
    };
    cfg.cache_max_age = match args.cache_max_age {
        Some(d) => Some(d),
        None => file
            .cache_max_age
            .map(|s| {
                parse_duration(&s).map_err(|e| exit::usage(format!("cache-max-age: {e}"), None))
            })
            .transpose()?,
    };
    if let Some(d) = match args.tag_ttl {
        Some(d) => Some(d),
        None => file
            .tag_ttl
            .map(|s| parse_duration(&s).map_err(|e| exit::usage(format!("tag-ttl: {e}"), None)))
            .transpose()?,
    } {
        cfg.tag_ttl = d;
    }
    cfg.max_image_size = match args.max_image_size {
        Some(n) => Some(n),
        None => file
            .max_image_size
            .map(|s| size(s, "max-image-size"))
            .transpose()?,
    };
    cfg.policy.allow_private = host_ports(
        &or_file(args.allow_private, file.allow_private),
        "allow-private",
    )?;
    cfg.policy.allow_registry = host_ports(
        &or_file(args.allow_registry, file.allow_registry),
        "allow-registry",
    )?;
    cfg.insecure_registries = host_ports(
        &or_file(args.insecure_registry, file.insecure_registry),
        "insecure-registry",
    )?;
    if let Some(p) = args.default_platform.or(file.default_platform) {
        cfg.default_platform = p.parse().map_err(|_| {
            exit::usage(
                format!("default-platform: {p:?} is not OS/ARCH[/VARIANT]"),
                Some("e.g. linux/amd64 or linux/arm64/v8"),
            )
        })?;
    }
    cfg.tokens = or_file(args.token, file.token);
    // The pair comes from one place: flags (and env), else the file.
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        _ => match (file.tls_cert, file.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(exit::usage(
                    "tls-cert and tls-key go together",
                    Some("give both, or neither"),
                ))
            }
        },
    };
    if let Some((cert, key)) = &tls {
        // Refused here, before the start line, not when the first client connects.
        ferry_server::tls_acceptor(cert, key).map_err(|e| exit::usage(e.to_string(), None))?;
    }
    cfg.tls = tls;
    if let Some(n) = args.max_pulls.or(file.max_pulls) {
        cfg.max_pulls = n.max(1) as usize;
    }
    if let Some(n) = args
        .max_downloads_per_client
        .or(file.max_downloads_per_client)
    {
        cfg.max_downloads_per_client = n.max(1) as usize;
    }
    if let Some(n) = match args.min_rate {
        Some(n) => Some(n),
        None => file.min_rate.map(|s| size(s, "min-rate")).transpose()?,
    } {
        cfg.min_rate = n;
    }
    if cfg.tokens.iter().any(String::is_empty) {
        return Err(exit::usage("a --token is empty", None));
    }
    if let Some(m) = args.mirror_of.or(file.mirror_of) {
        let hp = HostPort::parse(&m).map_err(|e| {
            exit::usage(
                format!("mirror-of: {e}"),
                Some("give a registry as HOST or HOST:PORT, e.g. docker.io or ghcr.io"),
            )
        })?;
        cfg.mirror_of = match hp.port {
            Some(p) => format!("{}:{p}", hp.host),
            None => hp.host,
        };
    }
    cfg.client.credential_files = CredentialFiles::from_env();
    // Credentials in the file win over the credential files for their registries.
    cfg.client.credentials = file
        .registries
        .into_iter()
        .map(|(registry, l)| {
            (
                registry,
                Credential::Basic {
                    username: l.username,
                    password: l.password,
                },
            )
        })
        .collect();
    let cfg_tls = cfg.tls.is_some();
    let state = ferry_server::State::new(cfg)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    let scheme = if cfg_tls { "https" } else { "http" };
    say!("ferry serve: listening on {addr}; page: {scheme}://{addr}/");
    ferry_server::serve(listener, state, stop_signal(), GRACE)
        .await
        .context("serving")?;
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
