//! `ferry-server` is `ferry serve`: images from registries served as archives over HTTP to
//! people who cannot reach the registries themselves. Every archive response has its exact
//! length, a strong ETag and byte ranges from the first request, while the image's blobs
//! still arrive from upstream: the archive is a pure function of the manifests
//! ([`ferry_archive::Plan`]), so any range maps onto blobs, and a range waits only for
//! the blobs it needs. One upstream fetch per image and per blob, however many clients.
//!
//! [`app`] is the router; [`serve`] runs it on a listener until a shutdown signal.

mod api;
mod http;
mod idle;
mod jobs;
mod metrics;
mod mirror;
mod names;
mod page;
pub mod policy;
mod reader;
mod stall;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_archive::ArchiveImage;
use ferry_copy::{CopyError, PullOptions};
use ferry_core::{Platform, Reference};
use ferry_registry::{Client, ClientOptions};
use ferry_store::{Limits, Store};

pub use http::app;
pub use jobs::{Job, JobState};
pub use policy::{AddressPolicy, HostPort, Refused};
pub use reader::{Archive, Layout};

/// How the server runs. Every field has a `ferry serve` flag, a TOML key and an env var.
#[derive(Clone)]
pub struct Config {
    pub cache_dir: PathBuf,
    pub cache_max_size: Option<u64>,
    pub cache_max_age: Option<Duration>,
    pub policy: AddressPolicy,
    /// Registries reached over plain HTTP or with unverified certificates.
    pub insecure_registries: Vec<HostPort>,
    /// The platform taken from a multi-platform image when the request names none.
    pub default_platform: Platform,
    /// Images larger than this (the archive's length) are refused with 413.
    pub max_image_size: Option<u64>,
    /// Client tokens; empty: no token needed.
    pub tokens: Vec<String>,
    /// How long a tag's digest is trusted before the registry is asked again.
    pub tag_ttl: Duration,
    /// Blobs downloaded at once per image.
    pub parallel: usize,
    /// How long a client may take to send a request's headers (slowloris).
    pub header_timeout: Duration,
    /// How long a client may leave a response unread before it is cut.
    pub idle_timeout: Duration,
    /// Images fetched from upstream at once; more get 429.
    pub max_pulls: usize,
    /// Serve HTTPS with this certificate chain and private key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Archive downloads one client address may have in progress; more get 429. Behind a
    /// reverse proxy every client has the proxy's address: raise it there.
    pub max_downloads_per_client: usize,
    /// The registry client's options (credential files, timeouts); the address guard and
    /// `insecure` are set by the server.
    pub client: ClientOptions,
    /// Bytes per second a client must take, averaged over `min_rate_window` of the time
    /// the server had bytes for it that it did not take; slower connections are cut
    /// (the client can resume with Range). 0: no minimum.
    pub min_rate: u64,
    /// The pending time `min_rate` is averaged over.
    pub min_rate_window: Duration,
    /// The registry `/v2/` names without a registry host come from (`--mirror-of`).
    pub mirror_of: String,
}

impl Config {
    /// The defaults, with the cache at `cache_dir`.
    pub fn new(cache_dir: PathBuf) -> Config {
        Config {
            cache_dir,
            cache_max_size: None,
            cache_max_age: None,
            policy: AddressPolicy::default(),
            insecure_registries: Vec::new(),
            default_platform: Platform::new("linux", "amd64", None),
            max_image_size: None,
            tokens: Vec::new(),
            tag_ttl: Duration::from_secs(600),
            parallel: 4,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_pulls: 32,
            tls: None,
            max_downloads_per_client: 16,
            client: ClientOptions::default(),
            min_rate: 1024,
            min_rate_window: Duration::from_secs(60),
            mirror_of: "docker.io".into(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the cache at {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: ferry_store::StoreError,
    },
    #[error("setting up the registry client")]
    Client(#[source] ferry_registry::RegistryError),
    #[error("reading the TLS {what} {path}: {reason}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// The TLS acceptor for `--tls-cert` and `--tls-key`.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what, path: &std::path::Path, reason: String| StartError::Tls {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("certificate", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("certificate", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(
            "certificate",
            cert,
            "it holds no PEM certificate".into(),
        ));
    }
    // The key's own parse error could quote key material: only say what is wrong.
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| bad("key", key, "it holds no PEM private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("certificate", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            bad(
                "key",
                key,
                format!("it does not go with the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Resolutions remembered before old ones are dropped.
const MAX_RESOLUTIONS: usize = 4096;

/// A resolved image and when it was resolved (tags are asked again after `tag_ttl`).
type Resolution = Arc<tokio::sync::Mutex<Option<(Instant, ArchiveImage)>>>;

/// An image's platforms and its digest, and when they were asked for (`tag_ttl` as
/// resolutions).
type PlatformList = Arc<tokio::sync::Mutex<Option<(Instant, (String, Vec<Platform>))>>>;

/// What every handler shares.
pub struct State {
    pub config: Config,
    store: Store,
    client: Client,
    /// For `--insecure-registry` registries only.
    insecure_client: Client,
    jobs: jobs::Jobs,
    crcs: Arc<reader::Crcs>,
    metrics: Arc<metrics::Metrics>,
    pulls: api::Pulls,
    /// Downloads in progress per client address.
    downloads: std::sync::Mutex<HashMap<std::net::IpAddr, usize>>,
    /// By reference and platform; each entry single-flights its resolution.
    resolved: std::sync::Mutex<HashMap<String, Resolution>>,
    /// `/platforms` and the page's answers by reference, single-flighted, fresh as
    /// resolutions are.
    platform_lists: std::sync::Mutex<HashMap<String, PlatformList>>,
    /// `/pull` fetches that failed, by image name as given, for its status.
    pull_errors: std::sync::Mutex<HashMap<String, String>>,
    /// The registry mirror's tags, repository facts and blob fetches.
    mirror: mirror::Mirror,
}

impl State {
    pub fn new(config: Config) -> Result<Arc<State>, StartError> {
        let store = Store::open(&config.cache_dir).map_err(|source| StartError::Cache {
            path: config.cache_dir.clone(),
            source,
        })?;
        if config.cache_max_size.is_some() || config.cache_max_age.is_some() {
            store
                .set_limits(Limits {
                    max_size: config.cache_max_size,
                    max_age: config.cache_max_age,
                })
                .map_err(|source| StartError::Cache {
                    path: config.cache_dir.clone(),
                    source,
                })?;
        }
        let guard: Arc<dyn ferry_registry::AddressGuard> = Arc::new(config.policy.clone());
        let make = |insecure| {
            let mut o = config.client.clone();
            o.insecure = insecure;
            o.address_guard = Some(guard.clone());
            // The workers also answer requests: a slow disk must not hold them up.
            o.offload_writes = true;
            Client::new(o).map_err(StartError::Client)
        };
        let (client, insecure_client) = (make(false)?, make(true)?);
        Ok(Arc::new(State {
            store,
            client,
            insecure_client,
            jobs: jobs::Jobs::default(),
            crcs: Arc::default(),
            metrics: Arc::default(),
            pulls: api::Pulls::default(),
            downloads: Default::default(),
            resolved: Default::default(),
            platform_lists: Default::default(),
            pull_errors: Default::default(),
            mirror: Default::default(),
            config,
        }))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How many upstream fetches run.
    pub fn jobs_in_flight(&self) -> usize {
        self.jobs.in_flight()
    }

    fn client_for(&self, r: &Reference) -> &Client {
        // HOST:PORT names that port only; HOST every port of it.
        if policy::names_registry(&self.config.insecure_registries, r.registry()) {
            &self.insecure_client
        } else {
            &self.client
        }
    }

    /// `r` resolved for `platform` (`None`: the default, not insisted on), from the cache
    /// of resolutions while fresh; one resolution at a time per reference and platform.
    async fn resolve(
        &self,
        r: &Reference,
        platform: Option<&Platform>,
    ) -> Result<ArchiveImage, ServeError> {
        self.config.policy.check(r)?;
        let key = format!(
            "{r} {}",
            platform.map(ToString::to_string).unwrap_or_default()
        );
        let slot = {
            let mut m = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() >= MAX_RESOLUTIONS {
                // Names nobody asks for any more, failed ones and stale tags go; any
                // number of distinct names must not grow memory without bound.
                let ttl = self.config.tag_ttl;
                m.retain(|_, v| {
                    Arc::strong_count(v) > 1
                        || v.try_lock().map_or(true, |g| {
                            g.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl)
                        })
                });
                if m.len() >= MAX_RESOLUTIONS {
                    m.retain(|_, v| Arc::strong_count(v) > 1);
                }
            }
            m.entry(key).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some((at, image)) = &*slot {
            // A digest names the same image for ever; a tag for `tag_ttl`. The manifests
            // were stored when it was resolved and no job fetches them again: one evicted
            // since (--cache-max-size, --cache-max-age) means resolving again, or every
            // archive of the image would break where that manifest's bytes go.
            let fresh = r.digest().is_some() || at.elapsed() < self.config.tag_ttl;
            if fresh
                && image
                    .manifests
                    .iter()
                    .all(|m| self.store.contains(&m.digest))
            {
                return Ok(image.clone());
            }
        }
        let opts = PullOptions {
            platform: platform
                .cloned()
                .unwrap_or_else(|| self.config.default_platform.clone()),
            platform_explicit: platform.is_some(),
            all_platforms: false,
            jobs: self.config.parallel,
            keep_artifacts: false,
        };
        let images = ferry_copy::resolve_all(
            self.client_for(r),
            &self.store,
            std::slice::from_ref(r),
            &opts,
            &ferry_copy::NoProgress,
        )
        .await
        .map_err(|e| {
            let e = ServeError::from_copy(e);
            self.metrics.upstream_error(e.kind());
            e
        })?;
        let image = images
            .into_iter()
            .next()
            .ok_or_else(|| ServeError::Upstream("the registry named no image".into()))?;
        *slot = Some((Instant::now(), image.clone()));
        Ok(image)
    }

    /// The platforms `r` offers and its digest, from the cache while fresh (a digest for
    /// ever, a tag for `tag_ttl`); one upstream question at a time per reference.
    pub(crate) async fn platforms(
        &self,
        r: &Reference,
    ) -> Result<(String, Vec<Platform>), ServeError> {
        self.config.policy.check(r)?;
        let slot = {
            let mut m = self
                .platform_lists
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if m.len() >= MAX_RESOLUTIONS {
                // As for resolutions: stale and unused answers go first, then all unused.
                let ttl = self.config.tag_ttl;
                m.retain(|_, v| {
                    Arc::strong_count(v) > 1
                        || v.try_lock().map_or(true, |g| {
                            g.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl)
                        })
                });
                if m.len() >= MAX_RESOLUTIONS {
                    m.retain(|_, v| Arc::strong_count(v) > 1);
                }
            }
            m.entry(r.to_string()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some((at, answer)) = &*slot {
            if r.digest().is_some() || at.elapsed() < self.config.tag_ttl {
                return Ok(answer.clone());
            }
        }
        let answer = http::list_platforms(self, r).await?;
        *slot = Some((Instant::now(), answer.clone()));
        Ok(answer)
    }

    /// The image's fetch, started if none runs, kept going until it ends whether or not
    /// a client waits (v1's `/pull` and the jobs API: their clients poll).
    fn keep_fetching(&self, image: &ArchiveImage) -> Result<Arc<Job>, ServeError> {
        let handle = self.join(image)?;
        let job = handle.job.clone();
        tokio::spawn(async move {
            let _ = handle.job.wait_done().await;
        });
        Ok(job)
    }

    fn join(&self, image: &ArchiveImage) -> Result<Arc<jobs::JobHandle>, ServeError> {
        self.jobs
            .join(
                self.client_for(&image.name),
                &self.store,
                image,
                self.config.parallel,
                &self.metrics,
                self.config.max_pulls,
            )
            .ok_or_else(|| {
                ServeError::Busy(format!(
                    "this server is fetching {} images already; try again in a few seconds",
                    self.config.max_pulls
                ))
            })
    }

    /// The archive of `image` in `layout`, its blobs fetched by the image's one job.
    fn archive(&self, image: &ArchiveImage, layout: Layout) -> Result<Arc<Archive>, ServeError> {
        let job = self.join(image)?;
        Ok(Arc::new(Archive {
            layout,
            job,
            store: self.store.clone(),
            crcs: self.crcs.clone(),
            metrics: self.metrics.clone(),
            idle_timeout: self.config.idle_timeout,
        }))
    }

    /// A download slot for `peer`, held while its response is sent; `None` when the peer
    /// has `max_downloads_per_client` already.
    fn download_slot(self: &Arc<Self>, peer: Option<std::net::IpAddr>) -> Option<DownloadSlot> {
        let Some(ip) = peer else {
            return Some(DownloadSlot {
                state: None,
                ip: None,
            });
        };
        let ip = client_key(ip);
        let mut m = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= self.config.max_downloads_per_client {
            return None;
        }
        *n += 1;
        Some(DownloadSlot {
            state: Some(self.clone()),
            ip: Some(ip),
        })
    }
}

/// The address a per-client limit counts under: an IPv6 client holds a whole /64 (one
/// host picks any address in it at will), so it counts as one client; an IPv4-mapped
/// address counts as its IPv4 address.
fn client_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// One client's download in progress (see [`State::download_slot`]).
pub(crate) struct DownloadSlot {
    state: Option<Arc<State>>,
    ip: Option<std::net::IpAddr>,
}

impl Drop for DownloadSlot {
    fn drop(&mut self) {
        if let (Some(st), Some(ip)) = (&self.state, self.ip) {
            let mut m = st.downloads.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

/// Why a request failed, with the HTTP status it maps to.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{0}")]
    UpstreamAuth(String),
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Busy(String),
}

impl ServeError {
    fn from_copy(e: CopyError) -> ServeError {
        let msg = error_chain(&e);
        let registry = match &e {
            CopyError::Manifest { source, .. } | CopyError::Blob { source, .. } => Some(source),
            _ => None,
        };
        match (&e, registry) {
            (_, Some(r)) if r.is_not_found() => ServeError::NotFound(msg),
            (_, Some(r))
                if r.is_unauthorized() || r.is_credentials_refused() || r.is_not_authorized() =>
            {
                ServeError::UpstreamAuth(format!(
                    "the registry refused access: {msg} (the server's credentials for it are missing or not accepted; private images also answer this way when they do not exist)"
                ))
            }
            (CopyError::NoPlatform { .. } | CopyError::WrongPlatform { .. }, _) => {
                ServeError::NotFound(msg)
            }
            (
                CopyError::Artifact { .. }
                | CopyError::NothingLoadable { .. }
                | CopyError::ForeignLayer { .. },
                _,
            ) => ServeError::BadRequest(msg),
            _ => ServeError::Upstream(msg),
        }
    }

    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ServeError::BadRequest(_) => "bad_request",
            ServeError::Unauthorized(_) => "unauthorized",
            ServeError::Refused(_) => "refused",
            ServeError::NotFound(_) => "not_found",
            ServeError::TooLarge(_) => "too_large",
            ServeError::Internal(_) => "internal",
            ServeError::Busy(_) => "busy",
            ServeError::UpstreamAuth(_) => "auth",
            ServeError::Upstream(_) => "upstream",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ServeError::BadRequest(_) => 400,
            ServeError::Unauthorized(_) => 401,
            ServeError::Refused(_) => 403,
            ServeError::NotFound(_) => 404,
            ServeError::TooLarge(_) => 413,
            ServeError::Busy(_) => 429,
            ServeError::Internal(_) => 500,
            ServeError::UpstreamAuth(_) | ServeError::Upstream(_) => 502,
        }
    }
}

/// An error and its causes in one line, each cause once.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

/// Run the server on `listener` until `shutdown` resolves; then stop accepting, let
/// responses in flight finish for at most `grace`, and return.
///
/// Its own accept loop rather than `axum::serve`, for what that one cannot set: a client
/// must send a request's headers within `Config::header_timeout` (slowloris), headers are
/// limited in size, and each request knows its peer's address (per-client limits).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::TokioIo;

    let tls = match &state.config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key).map_err(std::io::Error::other)?),
        None => None,
    };
    let upkeep = tokio::spawn(upkeep(state.clone()));
    let router = app(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (router, state, watcher, tls) = (
            router.clone(),
            state.clone(),
            graceful.watcher(),
            tls.clone(),
        );
        tokio::spawn(async move {
            match tls {
                None => {
                    let io = stall::WriteStall::for_state(stream, &state);
                    serve_conn(TokioIo::new(io), peer, router, &state, watcher).await
                }
                Some(acceptor) => {
                    // Paced under TLS too: a slow TLS client holds what a plain one does.
                    let stream = stall::WriteStall::for_state(stream, &state);
                    // The handshake is bounded like the headers are.
                    let hs =
                        tokio::time::timeout(state.config.header_timeout, acceptor.accept(stream))
                            .await;
                    match hs {
                        Ok(Ok(s)) => {
                            serve_conn(TokioIo::new(s), peer, router, &state, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let r = tokio::select! {
        _ = graceful.shutdown() => Ok(()),
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("downloads still in flight after {}s; stopping anyway", grace.as_secs());
            Ok(())
        }
    };
    upkeep.abort();
    r
}

/// Serve one connection (plain or TLS) until it ends or the server stops.
async fn serve_conn<I>(
    io: hyper_util::rt::TokioIo<I>,
    peer: std::net::SocketAddr,
    router: axum::Router,
    state: &State,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use hyper_util::server::conn::auto;
    let activity = idle::Activity::new();
    let act = activity.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let mut router = router.clone();
            let busy = act.begin();
            async move {
                let resp =
                    tower_service::Service::call(&mut router, req.map(axum::body::Body::new))
                        .await?;
                Ok::<_, std::convert::Infallible>(
                    resp.map(|b| axum::body::Body::new(idle::Guarded::new(b, busy))),
                )
            }
        });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let io = hyper_util::rt::TokioIo::new(stall::FirstBytes::new(
        io.into_inner(),
        state.config.header_timeout,
    ));
    let conn = builder.serve_connection(io, service);
    tokio::select! {
        r = watcher.watch(conn) => {
            if let Err(e) = r {
                tracing::debug!("connection from {peer}: {e}");
            }
        }
        // HTTP/2 has no bound of its own on a connection without requests.
        _ = activity.idle_for(state.config.header_timeout) => {
            tracing::debug!("connection from {peer}: no request for {:?}; closed", state.config.header_timeout);
        }
    }
}

/// The most a request's headers may take (hyper's read buffer for HTTP/1; the header list
/// for HTTP/2). Requests here are a path and a few headers.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The cache's upkeep: `--cache-max-age` needs a periodic eviction (a commit over
/// `--cache-max-size` evicts by itself), and blobs another process added or removed in a
/// shared cache are picked up by a rescan now and then.
async fn upkeep(state: Arc<State>) {
    const EVERY: Duration = Duration::from_secs(60);
    const RESCAN_EVERY: u32 = 10;
    let limited = state.config.cache_max_size.is_some() || state.config.cache_max_age.is_some();
    let mut tick = tokio::time::interval(EVERY);
    tick.tick().await;
    for n in 1u32.. {
        tick.tick().await;
        let store = state.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            if n % RESCAN_EVERY == 0 {
                store.rescan()?;
            }
            if limited {
                store.evict()?;
            }
            Ok::<_, ferry_store::StoreError>(())
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::warn!("cache upkeep: {}", error_chain(&e));
        }
    }
}

#[cfg(test)]
mod client_key_tests {
    use super::client_key;

    #[test]
    fn an_ipv6_slash_64_counts_as_one_client() {
        let k = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(k("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::");
        assert_ne!(k("2001:db8:1:3::1"), "2001:db8:1:2::");
        assert_eq!(k("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
    }
}
