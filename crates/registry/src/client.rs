//! The client: one `reqwest` connection pool, per-registry state (scheme and authentication),
//! and the request path every API call takes — authenticate, send, on 401 re-authenticate
//! once, turn error statuses into [`RegistryError`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::OnceCell;
use url::Url;

use crate::auth::AuthState;
use crate::body::{BodySource, BodyWatch, CountingStream};
use crate::credentials::{Credential, CredentialFiles};
use crate::error::{parse_codes, redact, secs, RegistryError};
use crate::mirror::{MirrorHook, MirrorNotice, MirrorRule, Route};
use crate::scope::Scopes;

/// Called before each wait between attempts, so a user sees retries as they happen.
pub type RetryHook = Arc<dyn Fn(&RetryNotice) + Send + Sync>;

/// A retry about to happen: how long we wait, and why.
#[derive(Debug, Clone)]
pub struct RetryNotice {
    pub wait: Duration,
    /// The attempt that failed (1-based) and how many failures in a row are allowed.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Whether the wait is the registry's own `Retry-After`.
    pub asked_by_registry: bool,
    /// The failure, rendered.
    pub reason: String,
}

impl std::fmt::Display for RetryNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.asked_by_registry {
            write!(
                f,
                "waiting {} as the registry asks: {}",
                secs(self.wait),
                self.reason
            )
        } else {
            write!(
                f,
                "retrying in {} (attempt {} of {}): {}",
                secs(self.wait),
                self.attempt + 1,
                self.max_attempts,
                self.reason
            )
        }
    }
}

/// How the client behaves. `Default` is what `ferry pull` uses without flags.
#[derive(Clone)]
pub struct ClientOptions {
    /// Accept plain HTTP and unverifiable certificates from any registry.
    pub insecure: bool,
    /// Extra CA certificates (PEM) to trust.
    pub ca_certs: Vec<Vec<u8>>,
    /// Credentials given on the command line, for the registries named.
    pub credentials: HashMap<String, Credential>,
    /// Files consulted when no explicit credential is given.
    pub credential_files: CredentialFiles,
    /// Attempts in a row that may fail without any progress before giving up.
    pub max_attempts: u32,
    /// First backoff delay; doubles each failed attempt up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` that is waited out; a longer one fails at once.
    pub max_retry_after: Duration,
    /// The longest a TCP (and TLS) connection may take to set up.
    pub connect_timeout: Duration,
    /// Deadline for a whole small request (ping, token, manifest, tag list), headers and
    /// body, and for the headers of a blob download.
    pub request_timeout: Duration,
    /// A blob body that brings fewer than `stall_min_bytes` in `stall_timeout` is treated
    /// as a dropped connection (and resumed).
    pub stall_timeout: Duration,
    pub stall_min_bytes: u64,
    pub user_agent: String,
    /// Told about every retry before its wait.
    pub on_retry: Option<RetryHook>,
    /// When set, connections go only to addresses it allows: host names are resolved
    /// through it and redirects to IP literals it refuses are not followed (a server
    /// refusing private networks). Hosts given as IP literals are the caller's to check.
    /// A guarded client ignores proxies from the environment (HTTP(S)_PROXY).
    pub address_guard: Option<Arc<dyn crate::AddressGuard>>,
    /// Write downloaded blob bytes off the async workers (`block_in_place`, 512 KiB at a
    /// time), so a slow disk does not hold up other tasks on the runtime: for a server,
    /// whose workers also answer requests. Off for the command line, where nothing else
    /// waits on the workers: each thread hand-off spreads allocations over more malloc
    /// arenas (measured: peak memory of an 8-layer pull 18 → 47 MiB).
    pub offload_writes: bool,
    /// Endpoints asked before a registry for reads (manifests, blobs), in order; see
    /// [`crate::mirror`].
    pub mirrors: Vec<MirrorRule>,
    /// Never go to a registry directly for a read that has mirrors: when they all fail,
    /// the read fails (`ferry pull --server`: the registries cannot be reached from here).
    pub mirrors_only: bool,
    /// Told about every mirror that fails, before the next endpoint is tried.
    pub on_mirror: Option<MirrorHook>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are left out on purpose: a Debug print must never show a password.
        f.debug_struct("ClientOptions")
            .field("insecure", &self.insecure)
            .field("ca_certs", &self.ca_certs.len())
            .field(
                "credentials_for",
                &self.credentials.keys().collect::<Vec<_>>(),
            )
            .field("max_attempts", &self.max_attempts)
            .field("base_backoff", &self.base_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("stall_min_bytes", &self.stall_min_bytes)
            .field("on_retry", &self.on_retry.is_some())
            .field("address_guard", &self.address_guard.is_some())
            .field("offload_writes", &self.offload_writes)
            .field("mirrors", &self.mirrors)
            .field("mirrors_only", &self.mirrors_only)
            .finish_non_exhaustive()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: false,
            ca_certs: Vec::new(),
            credentials: HashMap::new(),
            credential_files: CredentialFiles::default(),
            max_attempts: 6,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            stall_min_bytes: 1024,
            user_agent: concat!("ferry/", env!("CARGO_PKG_VERSION")).to_string(),
            on_retry: None,
            address_guard: None,
            offload_writes: false,
            mirrors: Vec::new(),
            mirrors_only: false,
            on_mirror: None,
        }
    }
}

/// What a registry is like, learnt once by pinging `/v2/`.
pub(crate) struct RegistryState {
    pub(crate) base: Url,
    pub(crate) name: String,
    /// Never held across a network wait: token fetches are single-flighted per scope
    /// inside [`AuthState`].
    pub(crate) auth: AuthState,
}

/// A registry's state, filled by the first ping that succeeds.
type RegistryCell = Arc<OnceCell<Arc<RegistryState>>>;

/// A registry API client, cheap to clone and safe to share between tasks.
#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) opts: Arc<ClientOptions>,
    /// One cell per registry: the first task pings, the others for that registry wait for
    /// its answer, and tasks for other registries are not held up. A failed ping leaves the
    /// cell empty, so a later call tries again.
    registries: Arc<std::sync::Mutex<HashMap<String, RegistryCell>>>,
    /// Mirrors given up on for the rest of this client's life (down, or refusing us), so
    /// each blob does not wait for the same failure again.
    mirrors_down: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client, RegistryError> {
        let mut b = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .pool_max_idle_per_host(16)
            .redirect(reqwest::redirect::Policy::limited(10));
        for pem in &opts.ca_certs {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                RegistryError::Config(format!("the CA certificate file is not PEM: {e}"))
            })?;
            if certs.is_empty() {
                return Err(RegistryError::Config(
                    "the CA certificate file holds no certificate".into(),
                ));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if opts.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(guard) = &opts.address_guard {
            // Through an HTTP(S)_PROXY from the environment the guard would see only the
            // proxy's address, and the proxy would connect wherever it is told.
            b = b.no_proxy();
            b = b.dns_resolver(Arc::new(crate::guard::GuardedResolver(guard.clone())));
            let g = guard.clone();
            b = b.redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 10 {
                    attempt.error("too many redirects")
                } else if !crate::guard::url_allowed(g.as_ref(), attempt.url()) {
                    // The redirect itself comes back as the answer: an error status.
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }));
        }
        let http = b
            .build()
            .map_err(|e| RegistryError::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            http,
            opts: Arc::new(opts),
            registries: Arc::new(std::sync::Mutex::new(HashMap::new())),
            mirrors_down: Arc::default(),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The state of `registry` (an API host such as `registry-1.docker.io` or `127.0.0.1:5000`),
    /// pinging it the first time.
    pub(crate) async fn registry(
        &self,
        registry: &str,
    ) -> Result<Arc<RegistryState>, RegistryError> {
        let cell = {
            let mut map = self.registries.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(registry.to_string()).or_default().clone()
        };
        cell.get_or_try_init(|| async { self.ping(registry).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// Where a read for the registry at API host `host` goes, in order: its mirrors not
    /// given up on, then the registry itself unless `mirrors_only` (with `mirrors_only`, a
    /// mirror given up on is still tried: there is nothing else).
    pub(crate) fn routes(&self, host: &str) -> Vec<Route> {
        let down = self
            .mirrors_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ns = crate::mirror::user_name(host).to_string();
        let mut out: Vec<Route> = Vec::new();
        for rule in self.opts.mirrors.iter().filter(|r| r.applies_to(host)) {
            let key = rule.endpoint.to_string();
            let skip = !self.opts.mirrors_only && down.contains(&key);
            if !skip && !out.iter().any(|r| r.key == key) {
                out.push(Route {
                    key,
                    ns: Some(ns.clone()),
                });
            }
        }
        let has_mirrors = self.opts.mirrors.iter().any(|r| r.applies_to(host));
        if !(self.opts.mirrors_only && has_mirrors) {
            out.push(Route {
                key: host.to_string(),
                ns: None,
            });
        }
        out
    }

    /// The client to send a read along route `i` of `routes` with: a mirror with another
    /// endpoint after it gets two attempts, not the full budget, so a broken mirror costs
    /// one short wait before the next endpoint is asked.
    pub(crate) fn for_route(&self, routes: &[Route], i: usize) -> std::borrow::Cow<'_, Client> {
        if i + 1 < routes.len() && routes[i].is_mirror() && self.opts.max_attempts > 2 {
            let mut opts = (*self.opts).clone();
            opts.max_attempts = 2;
            std::borrow::Cow::Owned(Client {
                http: self.http.clone(),
                opts: Arc::new(opts),
                registries: self.registries.clone(),
                mirrors_down: self.mirrors_down.clone(),
            })
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    /// After route `i` of `routes` failed with `err` for `repo`: whether to go on to the
    /// next route. Tells the mirror hook, and gives up on a mirror that is down or refuses
    /// us (not on one that merely lacks this object).
    pub(crate) fn next_route(
        &self,
        host: &str,
        repo: &str,
        routes: &[Route],
        i: usize,
        err: &RegistryError,
    ) -> bool {
        let route = &routes[i];
        if !route.is_mirror() || i + 1 >= routes.len() || !crate::mirror::falls_back(err) {
            return false;
        }
        if crate::mirror::mirror_down(err) {
            self.mirrors_down
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(route.key.clone());
        }
        let shown = |key: &str| {
            Url::parse(key)
                .map(|u| crate::mirror::shown(&u))
                .unwrap_or_else(|_| key.to_string())
        };
        let next = &routes[i + 1];
        let notice = MirrorNotice {
            registry: crate::mirror::user_name(host).to_string(),
            repository: repo.to_string(),
            mirror: shown(&route.key),
            reason: err.to_string(),
            next: next.is_mirror().then(|| shown(&next.key)),
        };
        tracing::debug!("{notice}");
        if let Some(hook) = &self.opts.on_mirror {
            hook(&notice);
        }
        true
    }

    /// Run `fut` (a request, its body, or both) until `until`, the request's deadline.
    pub(crate) async fn deadline_until<T>(
        &self,
        until: tokio::time::Instant,
        method: &str,
        url: &Url,
        fut: impl std::future::Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout_at(until, fut).await {
            Ok(r) => r,
            Err(_) => Err(RegistryError::Timeout {
                method: method.to_string(),
                url: redact(url),
                after: self.opts.request_timeout,
            }),
        }
    }

    /// Find the scheme and the authentication the registry wants.
    /// `key` is an API host, or a mirror's endpoint URL (which fixes the scheme and may
    /// hold a path).
    async fn ping(&self, key: &str) -> Result<RegistryState, RegistryError> {
        if key.contains("://") {
            let base = Url::parse(key).map_err(|e| {
                RegistryError::Config(format!("mirror {key:?} is not a valid URL: {e}"))
            })?;
            let host = base.host_str().unwrap_or_default();
            let name = match base.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            };
            return self.ping_bases(&name, vec![base]).await;
        }
        let registry = key;
        let loopback = ferry_core::reference::is_loopback_host(registry);
        // Loopback registries speak plain HTTP, as docker assumes; one given a CA certificate
        // or --insecure is tried over TLS first, as docker's localhost "insecure registry" is.
        let schemes: &[&str] = if loopback && !self.opts.insecure && self.opts.ca_certs.is_empty() {
            &["http"]
        } else if loopback || self.opts.insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut bases = Vec::new();
        for scheme in schemes {
            bases.push(Url::parse(&format!("{scheme}://{registry}/")).map_err(|e| {
                RegistryError::Config(format!("registry {registry:?} is not a valid host: {e}"))
            })?);
        }
        self.ping_bases(registry, bases).await
    }

    /// Ping `/v2/` under each of `bases` in turn; the first that answers is the registry's.
    /// `registry` (host[:port]) names it in errors and chooses its credentials.
    async fn ping_bases(
        &self,
        registry: &str,
        bases: Vec<Url>,
    ) -> Result<RegistryState, RegistryError> {
        let loopback = ferry_core::reference::is_loopback_host(registry);
        let mut last_err = None;
        for base in bases {
            let url = base
                .join("v2/")
                .map_err(|e| RegistryError::Config(e.to_string()))?;
            // One attempt per scheme, and a failure to connect is not retried by callers
            // either (`Unreachable`): a registry that refuses connections or does not
            // resolve is reported in well under a second, as skopeo does, instead of after
            // a minute of silent retries. Drops in the middle of transfers keep their
            // patient retries.
            // One deadline for the headers and any error body read after them.
            crate::guard::check_url(self.opts.address_guard.as_ref(), &url)?;
            let until = tokio::time::Instant::now() + self.opts.request_timeout;
            let resp = match tokio::time::timeout_at(until, self.http.get(url.clone()).send()).await
            {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => Err(Some(e.without_url())),
                Err(_) => Err(None),
            };
            match resp {
                Ok(resp) => {
                    let status = resp.status();
                    let challenge = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|h| h.to_str().ok())
                        .and_then(crate::challenge::Challenge::parse);
                    if status == StatusCode::NOT_FOUND {
                        return Err(RegistryError::NotARegistry {
                            registry: registry.to_string(),
                            url: redact(&url),
                            status: status.as_u16(),
                        });
                    }
                    if !(status.is_success() || status == StatusCode::UNAUTHORIZED) {
                        return Err(status_error("GET", &url, resp, until).await);
                    }
                    // Credential helpers are programs that may take their time (a keychain
                    // prompt): run them off the async threads. No lock is held meanwhile;
                    // only tasks wanting this same registry wait for the answer.
                    let (this, name) = (self.clone(), registry.to_string());
                    let credential =
                        tokio::task::spawn_blocking(move || this.credential_for(&name))
                            .await
                            .map_err(|e| {
                                RegistryError::Config(format!("looking up credentials failed: {e}"))
                            })??;
                    let auth = AuthState::new(challenge, credential);
                    return Ok(RegistryState {
                        base,
                        name: registry.to_string(),
                        auth,
                    });
                }
                Err(e) => last_err = Some((url, e)),
            }
        }
        let Some((url, err)) = last_err else {
            return Err(RegistryError::Config("no scheme to try".into()));
        };
        if !self.opts.insecure && !loopback {
            if let Some(error) = &err {
                let chain = error_chain(error);
                if chain.contains("certificate")
                    || chain.contains("InvalidCertificate")
                    || chain.contains("UnknownIssuer")
                {
                    return Err(RegistryError::Insecure(format!(
                        "{registry} presented a certificate that is not trusted ({}); pass --ca-cert FILE with its CA, or --insecure to skip verification",
                        crate::error::describe(error)
                    )));
                }
                if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
                    return Err(RegistryError::Insecure(format!(
                        "{registry} did not answer in TLS; it may be a plain-HTTP registry ({}); pass --insecure to allow plain HTTP",
                        crate::error::describe(error)
                    )));
                }
            }
        }
        let cause = match &err {
            Some(e) => crate::error::describe(e),
            None => format!(
                "no answer within {} (--timeout)",
                secs(self.opts.request_timeout)
            ),
        };
        Err(RegistryError::Unreachable {
            registry: registry.to_string(),
            url: redact(&url),
            cause,
        })
    }

    fn credential_for(&self, registry: &str) -> Result<Option<Credential>, RegistryError> {
        let user_name = if registry == ferry_core::reference::DOCKER_HUB_API {
            "docker.io"
        } else {
            registry
        };
        if let Some(c) = self
            .opts
            .credentials
            .get(user_name)
            .or_else(|| self.opts.credentials.get(registry))
        {
            return Ok(Some(c.clone()));
        }
        self.opts
            .credential_files
            .lookup(user_name)
            .map_err(|e| RegistryError::Auth {
                registry: user_name.to_string(),
                reason: e.to_string(),
            })
    }

    /// Send an authenticated request needing `scopes`.
    /// Error statuses become [`RegistryError::Status`]; a 401 is answered by fetching a new
    /// token once. A second 401 to credentials we sent is [`RegistryError::CredentialsRefused`]
    /// when the registry checks them itself (Basic), and [`RegistryError::NotAuthorized`]
    /// when its token service accepted them (Bearer) — [`RegistryError::PushDenied`] when
    /// the request writes. The headers, and the body of an error answer, must arrive within
    /// the request deadline; the caller reads a success's body (under its own deadline or
    /// stall check) and decides about retries.
    pub(crate) async fn send(
        &self,
        registry: &str,
        scopes: &Scopes,
        method: Method,
        path: &str,
        headers: HeaderMap,
    ) -> Result<Response, RegistryError> {
        self.send_body(registry, scopes, method, path, headers, None)
            .await
    }

    /// [`Client::send`] with a request body made by `body` (called again when a 401 makes
    /// the request go out a second time). `path` may also be an absolute URL on the
    /// registry (an upload's `Location`). A body's request has no overall deadline: it must
    /// keep moving (at least `stall_min_bytes` per `stall_timeout`), and once it is sent the
    /// answer must come within the request deadline.
    pub(crate) async fn send_body(
        &self,
        registry: &str,
        scopes: &Scopes,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<&mut BodySource<'_>>,
    ) -> Result<Response, RegistryError> {
        let wait = self.opts.request_timeout;
        self.send_waiting(registry, scopes, method, path, headers, body, wait)
            .await
    }

    /// [`Client::send_body`] whose answer may take up to `answer_within` once the request
    /// is sent (an upload's commit, which some registries answer only after re-reading or
    /// copying the whole blob).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_waiting(
        &self,
        registry: &str,
        scopes: &Scopes,
        method: Method,
        path: &str,
        headers: HeaderMap,
        mut body: Option<&mut BodySource<'_>>,
        answer_within: Duration,
    ) -> Result<Response, RegistryError> {
        let state = self.registry(registry).await?;
        let url = state
            .base
            .join(path)
            .map_err(|e| RegistryError::Config(format!("bad path {path:?}: {e}")))?;
        crate::guard::check_url(self.opts.address_guard.as_ref(), &url)?;
        // Credentials go only to the registry itself, never to a host an upload's Location
        // names.
        let own_url = same_origin(&url, &state.base);
        let mut refreshed = false;
        loop {
            let auth = if own_url {
                state.auth.header_for(self, &state.name, scopes).await?
            } else {
                None
            };
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a.clone());
            }
            let watch = match body.as_deref_mut() {
                Some(src) => {
                    let stream = (src.open)()?;
                    let declared = headers
                        .get(reqwest::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let watch = Arc::new(BodyWatch::new(declared));
                    let counted = CountingStream {
                        inner: stream,
                        watch: watch.clone(),
                        total: src.sent.clone(),
                    };
                    req = req.body(reqwest::Body::wrap_stream(counted));
                    Some(watch)
                }
                None => None,
            };
            // The error body read below counts against the same deadline as the headers.
            let mut until = tokio::time::Instant::now() + answer_within;
            let sending = async {
                req.send()
                    .await
                    .map_err(|e| transport_error(method.as_str(), &url, e))
            };
            let resp = match &watch {
                None => match tokio::time::timeout_at(until, sending).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(RegistryError::Timeout {
                            method: method.to_string(),
                            url: redact(&url),
                            after: answer_within,
                        })
                    }
                },
                Some(w) => {
                    let r = tokio::select! {
                        r = sending => r,
                        e = self.watch_body(w, method.as_str(), &url, answer_within) => Err(e),
                    };
                    if let Some(e) = w.take_error() {
                        return Err(RegistryError::Source {
                            url: redact(&url),
                            source: e,
                        });
                    }
                    until = tokio::time::Instant::now() + answer_within;
                    r?
                }
            };
            // reqwest follows a redirect of a request without a body (an upload's commit, a
            // DELETE) and hands back the answer of wherever it led: a write must be answered
            // by the URL it was sent to, or it did not happen where we meant it to.
            if !matches!(method, Method::GET | Method::HEAD) && resp.url() != &url {
                return Err(RegistryError::Protocol {
                    url: redact(&url),
                    reason: format!(
                        "the registry redirected {method} to {}, which ferry does not follow for a write",
                        redact(resp.url())
                    ),
                });
            }
            // Only the registry itself may ask for new credentials: a 401 from a host it
            // redirected to must not steer tokens or passwords elsewhere.
            let own = same_origin(resp.url(), &state.base);
            if resp.status() == StatusCode::UNAUTHORIZED && !refreshed && own {
                refreshed = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .and_then(crate::challenge::Challenge::parse);
                state.auth.invalidate(scopes, auth.as_ref(), challenge);
                continue;
            }
            let refused = resp.status() == StatusCode::UNAUTHORIZED
                || (resp.status() == StatusCode::FORBIDDEN && scopes.writes());
            if refused && own && state.auth.has_credential() {
                let status = resp.status().as_u16();
                // The credentials let us in (a ping, a pull), but not to write here.
                if scopes.writes() && (state.auth.uses_tokens() || status == 403) {
                    return Err(RegistryError::PushDenied {
                        action: scopes.denied_action(),
                        registry: state.name.clone(),
                        repository: scopes.target(),
                        method: method.to_string(),
                        url: redact(&url),
                        status,
                    });
                }
                // With token auth the token service has accepted the credentials (it would
                // have refused them with its own 401): a registry that still says 401 means
                // the account may not use this repository, or that the repository does not
                // exist (Docker Hub answers 401, not 404, for a name it does not know).
                if state.auth.uses_tokens() {
                    return Err(RegistryError::NotAuthorized {
                        registry: state.name.clone(),
                        repository: scopes.target(),
                        method: method.to_string(),
                        url: redact(&url),
                        status,
                    });
                }
                if status == 401 {
                    return Err(RegistryError::CredentialsRefused {
                        registry: state.name.clone(),
                        method: method.to_string(),
                        url: redact(&url),
                        status,
                    });
                }
            }
            if !resp.status().is_success() && !resp.status().is_redirection() {
                return Err(status_error(method.as_str(), &url, resp, until).await);
            }
            return Ok(resp);
        }
    }

    /// Resolve with an error when a request body stops moving (fewer than `stall_min_bytes`
    /// taken in a `stall_timeout` window), or when the answer does not come within the
    /// request deadline after the body was sent; never resolves otherwise.
    async fn watch_body(
        &self,
        w: &BodyWatch,
        method: &str,
        url: &Url,
        answer_within: Duration,
    ) -> RegistryError {
        let window = self.opts.stall_timeout;
        loop {
            let before = w.sent();
            let window_end = tokio::time::Instant::now() + window;
            while !w.is_done() && tokio::time::Instant::now() < window_end {
                tokio::time::sleep(Duration::from_millis(50).min(window)).await;
            }
            if w.is_done() {
                tokio::time::sleep(answer_within).await;
                return RegistryError::Timeout {
                    method: method.to_string(),
                    url: redact(url),
                    after: answer_within,
                };
            }
            if w.sent().saturating_sub(before) < self.opts.stall_min_bytes {
                return RegistryError::SendStalled {
                    method: method.to_string(),
                    url: redact(url),
                    sent: w.sent(),
                    min_bytes: self.opts.stall_min_bytes,
                    window,
                };
            }
        }
    }

    /// Retry `op` while its error is retryable, within one budget of attempts. Nothing
    /// `op` calls retries on its own, so attempts never multiply.
    pub(crate) async fn with_retries<T, F, Fut>(&self, op: F) -> Result<T, RegistryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt + 1 < self.opts.max_attempts => {
                    self.wait_before_retry(attempt, &e).await?;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Wait before attempt `attempt + 1` after `err`, telling the retry hook first. A
    /// `Retry-After` longer than allowed is an error at once.
    pub(crate) async fn wait_before_retry(
        &self,
        attempt: u32,
        err: &RegistryError,
    ) -> Result<(), RegistryError> {
        let wait = self.backoff(attempt, err)?;
        let notice = RetryNotice {
            wait,
            attempt: attempt + 1,
            max_attempts: self.opts.max_attempts,
            asked_by_registry: err.retry_after().is_some(),
            reason: err.to_string(),
        };
        tracing::debug!("{notice}");
        if let Some(hook) = &self.opts.on_retry {
            hook(&notice);
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// How long to wait before attempt `attempt + 1` after `err`.
    pub(crate) fn backoff(
        &self,
        attempt: u32,
        err: &RegistryError,
    ) -> Result<Duration, RegistryError> {
        if let Some(asked) = err.retry_after() {
            let d = Duration::from_secs(asked);
            if d > self.opts.max_retry_after {
                let (method, url) = err.request();
                return Err(RegistryError::WaitTooLong {
                    method,
                    url,
                    status: err.status().unwrap_or(429),
                    wait: d,
                    max: self.opts.max_retry_after,
                });
            }
            return Ok(d);
        }
        let exp = self
            .opts
            .base_backoff
            .saturating_mul(1u32 << attempt.min(16));
        let capped = exp.min(self.opts.max_backoff);
        let jitter = rand::random::<f64>() * 0.25 + 0.875;
        Ok(capped.mul_f64(jitter))
    }
}

/// A request that did not complete, as a [`RegistryError`]: a redirect loop is told apart
/// from a network failure.
pub(crate) fn transport_error(method: &str, url: &Url, e: reqwest::Error) -> RegistryError {
    if e.is_redirect() {
        return RegistryError::RedirectLoop {
            method: method.to_string(),
            url: redact(url),
        };
    }
    RegistryError::Transport {
        method: method.to_string(),
        url: redact(url),
        error: e.without_url(),
    }
}

/// Whether two URLs have the same scheme, host and port.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Turn an error response into a [`RegistryError::Status`], reading at most 64 KiB of body
/// until `until`, the request's deadline. The body only adds the registry's error codes: one
/// still arriving at the deadline (a server trickling an error page) is given up, and the
/// status alone is reported.
pub(crate) async fn status_error(
    method: &str,
    url: &Url,
    resp: Response,
    until: tokio::time::Instant,
) -> RegistryError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = tokio::time::timeout_at(until, read_limited(resp, 64 * 1024))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    RegistryError::Status {
        method: method.to_string(),
        url: redact(url),
        status,
        codes: parse_codes(&body),
        retry_after,
    }
}

/// `Retry-After` is either seconds or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<u64> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(secs);
    }
    let when = httpdate::parse_http_date(v.trim()).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// Read a whole (bounded) response body; a connection lost on the way is a retryable error.
pub(crate) async fn read_body(
    resp: reqwest::Response,
    limit: usize,
    url: &url::Url,
) -> Result<Vec<u8>, RegistryError> {
    read_limited(resp, limit)
        .await
        .map_err(|(received, error)| RegistryError::Body {
            url: crate::error::redact(url),
            received,
            error: error.without_url(),
        })
}

/// Read a body of at most `limit` bytes; on failure, how many had arrived.
async fn read_limited(mut resp: Response, limit: usize) -> Result<Vec<u8>, (u64, reqwest::Error)> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| (out.len() as u64, e))? {
        if out.len() + chunk.len() > limit {
            out.extend_from_slice(&chunk[..limit - out.len()]);
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}
