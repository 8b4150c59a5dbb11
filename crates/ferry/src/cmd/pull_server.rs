//! `ferry pull` through mirrors and a ferry server: which mirrors apply (flags, the config
//! file, `--no-mirror`), what a `--server` offers (its registry mirror under `/v2/`, or only
//! its `/image` archive), and the archive path: download (`server_download`), then import
//! with every blob verified, written as a direct pull writes it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
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
    // Explicit --mirror flags beat a server from the environment or the file.
    let server = if m.no_mirror || !m.mirrors.is_empty() {
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

pub(super) fn unreachable_server(server: &Url, e: &reqwest::Error) -> anyhow::Error {
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
    let dl = super::server_download::Download {
        http: &http,
        url: &url,
        token: args.mirror.server_token.as_deref(),
        partial: &partial,
        etag: &etag,
        quiet: args.quiet,
        timeout: Duration::from_secs(args.net.timeout),
        name: reference.to_string(),
        bar: super::server_download::download_bar(args.quiet, &reference.to_string()),
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
