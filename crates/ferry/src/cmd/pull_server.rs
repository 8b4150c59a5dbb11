//! `ferry pull` through mirrors and a ferry server: which mirrors apply (flags, the config
//! file, `--no-mirror`), what a `--server` offers (its registry mirror under `/v2/`, or only
//! its `/image` archive), and the archive download: resumable with `Range` + `If-Range`
//! across dropped connections and killed runs, then imported with every blob verified.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, ETAG, IF_RANGE, RANGE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use url::Url;

use ferry_core::{Digest, Platform, Reference};
use ferry_registry::{ClientOptions, Credential, MirrorHook, MirrorNotice, MirrorRule};

use super::output::Output;
use crate::cli::PullArgs;
use crate::exit;

/// How a pull reaches its images.
pub(crate) enum Route {
    /// The registries, with these mirrors asked first (maybe none).
    Registries(Vec<MirrorRule>),
    /// A server with the registry API: the only mirror, the registries never asked.
    ServerMirror(Url),
    /// A server without it: its `/image` archive endpoint.
    ServerArchive(Url),
}

/// Decide the route from the flags, FERRY_SERVER and the config file, probing a server.
pub(crate) async fn route(args: &PullArgs) -> anyhow::Result<Route> {
    let m = &args.mirror;
    let (config, config_path) = if m.no_mirror && m.config.is_none() {
        Default::default()
    } else {
        super::user_config::load(m.config.as_deref())?
    };
    let env_server = std::env::var("FERRY_SERVER").ok().filter(|s| !s.is_empty());
    let server = if m.no_mirror {
        None
    } else {
        m.server
            .clone()
            .map(|s| (s, "--server".to_string()))
            .or(env_server.map(|s| (s, "FERRY_SERVER".to_string())))
            .or(config.server.clone().map(|s| {
                let from = config_path
                    .as_ref()
                    .map(|p| format!("server in {}", p.display()))
                    .unwrap_or_default();
                (s, from)
            }))
    };
    if let Some((text, from)) = server {
        let url = ferry_registry::mirror::endpoint_url(&text)
            .map_err(|e| exit::usage(format!("{from}: {e}"), None))?;
        return probe(&url, args).await;
    }
    let mut rules = Vec::new();
    let mut specs: Vec<(String, String)> = m
        .mirrors
        .iter()
        .map(|s| (s.clone(), "--mirror".into()))
        .collect();
    if !m.no_mirror {
        let from = config_path
            .as_ref()
            .map(|p| format!("the mirrors of {}", p.display()))
            .unwrap_or_default();
        specs.extend(config.mirror_specs().into_iter().map(|s| (s, from.clone())));
    }
    for (spec, from) in specs {
        let rule =
            MirrorRule::parse(&spec).map_err(|e| exit::usage(format!("{from}: {e}"), None))?;
        rules.push(rule);
    }
    Ok(Route::Registries(rules))
}

/// Ask `server/v2/` whether the server speaks the registry API: 200, or 401 with a
/// challenge, does; 404 (DockerImageSave, a ferry without the mirror) does not.
async fn probe(server: &Url, args: &PullArgs) -> anyhow::Result<Route> {
    let http = http_client(args)?;
    let url = server.join("v2/").context("building the probe URL")?;
    let mut req = http
        .get(url.clone())
        .timeout(Duration::from_secs(args.net.timeout));
    if let Some(t) = &args.mirror.server_token {
        // A server that wants a token everywhere answers the probe only with it.
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| unreachable_server(server, &e))?;
    let status = resp.status();
    // A registry's challenge: Basic, or Bearer with a token endpoint to ask. A Bearer
    // challenge without one is a server wanting its own token on every route.
    let challenge = resp
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .and_then(ferry_registry::challenge::Challenge::parse);
    let registry_challenge = match &challenge {
        Some(ferry_registry::challenge::Challenge::Basic { .. }) => true,
        Some(ferry_registry::challenge::Challenge::Bearer { realm, .. }) => {
            Url::parse(realm).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        }
        None => false,
    };
    if status.is_success() || (status == StatusCode::UNAUTHORIZED && registry_challenge) {
        return Ok(Route::ServerMirror(server.clone()));
    }
    if status == StatusCode::NOT_FOUND {
        return Ok(Route::ServerArchive(server.clone()));
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        let given = if args.mirror.server_token.is_some() {
            "refused the token given"
        } else {
            "wants a token"
        };
        return Err(exit::UserError {
            message: format!("the server {} {given} ({status} for {url})", shown(server)),
            hint: Some("give the server's token with --server-token or FERRY_SERVER_TOKEN".into()),
            code: exit::AUTH,
        }
        .into());
    }
    Err(exit::UserError {
        message: format!(
            "the server {} answered {status} to {url}: it is neither a registry mirror nor an archive server",
            shown(server)
        ),
        hint: None,
        code: exit::NETWORK,
    }
    .into())
}

fn unreachable_server(server: &Url, e: &reqwest::Error) -> anyhow::Error {
    let mut cause = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = format!("{cause}: {s}");
        src = s.source();
    }
    exit::UserError {
        message: format!("cannot reach the server {} ({cause})", shown(server)),
        hint: Some("check --server / FERRY_SERVER / the config file's server; --server means the registries are not asked".into()),
        code: exit::NETWORK,
    }
    .into()
}

fn shown(u: &Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

fn http_client(args: &PullArgs) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(args.net.timeout));
    if args.net.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    for path in &args.net.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA certificate {}", path.display()))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("reading the CA certificate {}", path.display()))?
        {
            b = b.add_root_certificate(c);
        }
    }
    b.build().context("setting up HTTP")
}

/// Set the client options for `route`: the mirrors, the server's token (as the Basic
/// password of the server's own host: a mirror gets no registry's credentials), and the
/// notice printed when a mirror fails (a warning: printed even with -q).
pub(crate) fn apply(route: &Route, token: Option<&str>, opts: &mut ClientOptions) {
    match route {
        Route::Registries(rules) => opts.mirrors = rules.clone(),
        Route::ServerMirror(url) => {
            opts.mirrors = vec![MirrorRule {
                registry: None,
                endpoint: url.clone(),
            }];
            opts.mirrors_only = true;
            if let Some(t) = token {
                let host = match url.port() {
                    Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
                    None => url.host_str().unwrap_or_default().to_string(),
                };
                opts.credentials.insert(
                    host,
                    Credential::Basic {
                        username: "ferry".into(),
                        password: t.to_string(),
                    },
                );
            }
        }
        Route::ServerArchive(_) => {}
    }
    let hook: MirrorHook = Arc::new(|n: &MirrorNotice| {
        crate::progress::warning(&n.to_string());
    });
    opts.on_mirror = Some(hook);
}

/// An error of a pull through a server's mirror, said in the server's terms where the
/// registry client's hint would mislead: a refusal is about the server's token, not about
/// registry credentials.
pub(crate) fn explain(route: &Route, e: anyhow::Error) -> anyhow::Error {
    let Route::ServerMirror(url) = route else {
        return e;
    };
    let refused = e
        .chain()
        .filter_map(|c| c.downcast_ref::<ferry_registry::RegistryError>())
        .find(|r| {
            matches!(
                r,
                ferry_registry::RegistryError::CredentialsRefused { .. }
                    | ferry_registry::RegistryError::NotAuthorized { .. }
            ) || matches!(r.status(), Some(401 | 403))
        });
    match refused {
        Some(r) => exit::UserError {
            message: format!("the server {} refused the pull: {r}", shown(url)),
            hint: Some("give the server's token with --server-token or FERRY_SERVER_TOKEN".into()),
            code: exit::AUTH,
        }
        .into(),
        None => e,
    }
}

/// `ferry pull --server URL IMAGE` against a server without the registry API: download its
/// `/image` archive (resumably) into the cache directory, import it, remove it.
pub(crate) async fn pull_archive(
    args: &PullArgs,
    server: &Url,
    reference: &Reference,
    platform: &Platform,
    output: Output,
    cache: &Path,
) -> anyhow::Result<()> {
    if args.all_platforms {
        return Err(exit::usage(
            "--all-platforms needs a server with the registry mirror; this one serves one platform per archive",
            None,
        ));
    }
    let mut url = server.join("image").context("building the download URL")?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("name", &reference.to_string());
        q.append_pair("os", &platform.os);
        q.append_pair("arch", &platform.architecture);
        if let Some(v) = &platform.variant {
            q.append_pair("variant", v);
        }
    }
    let dir = cache.join("server-downloads");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // One partial per (server, image, platform): a second run finds the first one's bytes.
    let key = Digest::sha256_of(url.as_str().as_bytes()).hex()[..32].to_string();
    let partial = dir.join(format!("{key}.partial"));
    let etag = dir.join(format!("{key}.etag"));
    let http = http_client(args)?;
    let dl = Download {
        http: &http,
        url: &url,
        token: args.mirror.server_token.as_deref(),
        partial: &partial,
        etag: &etag,
        quiet: args.quiet,
        timeout: Duration::from_secs(args.net.timeout),
        name: reference.to_string(),
        bar: download_bar(args.quiet, &reference.to_string()),
    };
    let done = dl.run().await;
    dl.bar.finish_and_clear();
    done?;
    let done = dir.join(format!("{key}.tar"));
    std::fs::rename(&partial, &done).with_context(|| format!("renaming {}", partial.display()))?;
    let _ = std::fs::remove_file(&etag);
    let result = import(args, &done, reference, platform, output).await;
    // Imported, or found bad (a bad archive is not resumed: the next run downloads anew).
    let _ = std::fs::remove_file(&done);
    result
}

/// Write the downloaded archive's image to `output`: read by the archive readers and
/// checked blob by blob (size and digest) while the pull writers copy it.
async fn import(
    args: &PullArgs,
    archive_path: &Path,
    reference: &Reference,
    platform: &Platform,
    output: Output,
) -> anyhow::Result<()> {
    let store = super::push::open_cache(args.cache_dir.as_deref())?;
    let archive = super::push::open_archive(archive_path, &store)
        .await
        .context("importing the server's archive")?;
    let image = archive.select(None)?.clone();
    let choice = ferry_copy::PlatformChoice::One {
        platform: platform.clone(),
        explicit: args.platform.is_some(),
    };
    let copy = ferry_copy::archive_image(&image, &choice)?;
    let source = Arc::new(ferry_copy::ArchiveSource { archive });
    let name = args.record_as.clone().unwrap_or_else(|| reference.clone());
    // What the server's index.json recorded for the top manifest: a platform only when the
    // image came from a multi-platform one.
    let recorded = image.root.as_ref().map(|r| r.descriptor.platform.clone());
    let (mut img, blobs) = ferry_copy::archive_output(source, &copy, name)?;
    if let (Some(None), false) = (&recorded, ferry_core::media::is_index(&img.root.media_type)) {
        // Written as a pull from the registry writes it, so the output is the same bytes
        // either way: the platform comes from the config here, not from an index.
        img.root.platform = None;
        for part in &mut img.images {
            part.platform = None;
        }
    }
    let scratch = store.root().join("ingest");
    let cache = store.root().to_path_buf();
    let (format, force, quiet) = (args.format, args.force, args.quiet);
    let written = tokio::task::spawn_blocking(move || {
        super::pull::write_output(&[img], &blobs, &scratch, format, &output, &cache, force)
    })
    .await
    .context("the writer task failed")??;
    if let (Some(p), false) = (written, quiet) {
        crate::progress::notice(&format!("wrote {}", p.display()));
    }
    Ok(())
}

/// One resumable archive download into `partial`, its strong ETag kept in `etag` so a later
/// run (after a kill) resumes only if the server still serves the same bytes.
struct Download<'a> {
    http: &'a reqwest::Client,
    url: &'a Url,
    token: Option<&'a str>,
    partial: &'a Path,
    etag: &'a Path,
    quiet: bool,
    timeout: Duration,
    name: String,
    /// Bytes of the download on a terminal (hidden otherwise, and with -q).
    bar: indicatif::ProgressBar,
}

/// Attempts in a row without a new byte before the download gives up.
const MAX_ATTEMPTS: u32 = 8;

/// Why one attempt ended.
enum Attempt {
    Done,
    /// Try again (after a wait unless `now`): a dropped connection, a 5xx, a restart.
    Again {
        why: String,
        now: bool,
    },
}

impl Download<'_> {
    async fn run(&self) -> anyhow::Result<()> {
        let mut failures = 0u32;
        let mut furthest = self.have();
        if furthest > 0 && !self.quiet {
            self.say(&format!(
                "resuming the download of {} at byte {furthest}",
                self.name
            ));
        } else if !self.quiet {
            self.say(&format!(
                "downloading {} from {}",
                self.name,
                self.url.origin().ascii_serialization()
            ));
        }
        loop {
            match self.attempt().await? {
                Attempt::Done => {
                    if !self.quiet {
                        self.say(&format!("downloaded {} ({} bytes)", self.name, self.have()));
                    }
                    return Ok(());
                }
                Attempt::Again { why, now } => {
                    let have = self.have();
                    if have > furthest {
                        failures = 0;
                        furthest = have;
                    } else {
                        failures += 1;
                    }
                    if failures >= MAX_ATTEMPTS {
                        return Err(exit::UserError {
                            message: format!(
                                "downloading {} from the server failed {MAX_ATTEMPTS} times in a row without progress: {why}",
                                self.name
                            ),
                            hint: Some("run the same command again: the download resumes where it stopped".into()),
                            code: exit::NETWORK,
                        }
                        .into());
                    }
                    let wait = if now {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(200 * (1 << failures.min(5)))
                    };
                    if !self.quiet {
                        self.say(&format!("retrying the download at byte {have}: {why}"));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// A line above the bar.
    fn say(&self, text: &str) {
        self.bar.suspend(|| crate::progress::notice(text));
    }

    /// Bytes held from an earlier attempt (zero without a recorded ETag: they cannot be
    /// trusted to belong to what the server serves now).
    fn have(&self) -> u64 {
        if !self.etag.exists() {
            return 0;
        }
        std::fs::metadata(self.partial)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn restart(&self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.etag);
        match std::fs::remove_file(self.partial) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.partial.display())),
        }
    }

    async fn attempt(&self) -> anyhow::Result<Attempt> {
        let have = self.have();
        let mut req = self.http.get(self.url.clone());
        if let Some(t) = self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let etag = std::fs::read_to_string(self.etag).ok();
        if let (true, Some(tag)) = (have > 0, etag.as_deref()) {
            req = req
                .header(RANGE, format!("bytes={have}-"))
                .header(IF_RANGE, tag.trim());
        }
        let resp = match tokio::time::timeout(self.timeout, req.send()).await {
            Err(_) => {
                return Ok(Attempt::Again {
                    why: "no answer in time".into(),
                    now: false,
                })
            }
            Ok(Err(e)) if e.is_connect() && have == 0 => {
                return Err(unreachable_server(self.url, &e));
            }
            Ok(Err(e)) => {
                return Ok(Attempt::Again {
                    why: e.to_string(),
                    now: false,
                })
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let (start, total) = match status {
            StatusCode::OK => {
                // The whole archive: either asked so, or the ETag changed (If-Range).
                self.restart()?;
                let tag = resp
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .filter(|t| !t.starts_with("W/"))
                    .map(str::to_string);
                if let Some(t) = &tag {
                    write_atomic(self.etag, t.as_bytes())?;
                }
                if have > 0 && !self.quiet {
                    self.say(&format!(
                        "the server's archive of {} changed; downloading it from the start",
                        self.name
                    ));
                }
                (0, resp.content_length())
            }
            StatusCode::PARTIAL_CONTENT => {
                let range = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((s, total)) if s == have => (s, Some(total)),
                    _ => {
                        self.restart()?;
                        return Ok(Attempt::Again {
                            why: "the server answered another range than asked; starting over"
                                .into(),
                            now: true,
                        });
                    }
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                self.restart()?;
                return Ok(Attempt::Again {
                    why: "the server refused the range; starting over".into(),
                    now: true,
                });
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Ok(Attempt::Again {
                    why: format!("the server answered {s}"),
                    now: false,
                });
            }
            s => {
                let body = resp.text().await.unwrap_or_default();
                let text = body.chars().take(300).collect::<String>();
                let code = match s {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => exit::AUTH,
                    StatusCode::NOT_FOUND => exit::NOT_FOUND,
                    _ => exit::GENERAL,
                };
                let hint = matches!(code, exit::AUTH).then(|| {
                    "give the server's token with --server-token or FERRY_SERVER_TOKEN".to_string()
                });
                return Err(exit::UserError {
                    message: format!("the server answered {s} for {}: {}", self.name, text.trim()),
                    hint,
                    code,
                }
                .into());
            }
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.partial)
            .with_context(|| format!("opening {}", self.partial.display()))?;
        if let Some(t) = total {
            self.bar.set_length(t);
        }
        self.bar.set_position(start);
        let mut at = start;
        let mut resp = resp;
        loop {
            match tokio::time::timeout(self.timeout, resp.chunk()).await {
                Err(_) => {
                    return Ok(Attempt::Again {
                        why: format!("no byte in {}s", self.timeout.as_secs()),
                        now: false,
                    })
                }
                Ok(Err(e)) => {
                    file.flush().ok();
                    return Ok(Attempt::Again {
                        why: format!("the connection dropped at byte {at}: {e}"),
                        now: false,
                    });
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    file.write_all(&chunk)
                        .with_context(|| format!("writing {}", self.partial.display()))?;
                    at += chunk.len() as u64;
                    self.bar.set_position(at);
                }
            }
        }
        file.sync_all().ok();
        match total {
            Some(t) if at == t => Ok(Attempt::Done),
            None => Ok(Attempt::Done),
            Some(t) => Ok(Attempt::Again {
                why: format!("the body ended at byte {at} of {t}"),
                now: false,
            }),
        }
    }
}

/// The download's bar: bytes, rate and ETA on a terminal, nothing elsewhere or with -q.
fn download_bar(quiet: bool, name: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(crate::sanitize::clean(name).to_string());
    bar
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.parse().ok()?, total.parse().ok()?))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}
