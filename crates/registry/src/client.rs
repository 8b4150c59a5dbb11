//! The client: one `reqwest` connection pool, per-registry state (scheme and authentication),
//! and the request path every API call takes — authenticate, send, on 401 re-authenticate
//! once, turn error statuses into [`RegistryError`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Mutex;
use url::Url;

use crate::auth::AuthState;
use crate::credentials::{Credential, CredentialFiles};
use crate::error::{parse_codes, redact, RegistryError};

/// How the client behaves. `Default` is what `ferry pull` uses without flags.
#[derive(Debug, Clone)]
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
    /// The longest `Retry-After` that is waited out before giving up.
    pub max_retry_after: Duration,
    /// Connect timeout, and the longest a body may stall without a byte.
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub user_agent: String,
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
            max_retry_after: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            user_agent: concat!("ferry/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// What a registry is like, learnt once by pinging `/v2/`.
pub(crate) struct RegistryState {
    pub(crate) base: Url,
    pub(crate) name: String,
    pub(crate) auth: Mutex<AuthState>,
}

/// A registry API client, cheap to clone and safe to share between tasks.
#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) opts: Arc<ClientOptions>,
    registries: Arc<Mutex<HashMap<String, Arc<RegistryState>>>>,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client, RegistryError> {
        let mut b = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
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
        let http = b
            .build()
            .map_err(|e| RegistryError::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            http,
            opts: Arc::new(opts),
            registries: Arc::new(Mutex::new(HashMap::new())),
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
        let mut map = self.registries.lock().await;
        if let Some(s) = map.get(registry) {
            return Ok(s.clone());
        }
        let state = Arc::new(self.ping(registry).await?);
        map.insert(registry.to_string(), state.clone());
        Ok(state)
    }

    /// Find the scheme and the authentication the registry wants.
    async fn ping(&self, registry: &str) -> Result<RegistryState, RegistryError> {
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
        let mut last_err = None;
        for scheme in schemes {
            let base = Url::parse(&format!("{scheme}://{registry}/")).map_err(|e| {
                RegistryError::Config(format!("registry {registry:?} is not a valid host: {e}"))
            })?;
            let url = base
                .join("v2/")
                .map_err(|e| RegistryError::Config(e.to_string()))?;
            // One attempt per scheme: every caller of `registry()` runs inside a retry loop
            // already, and retrying here as well multiplied the attempts (a registry that
            // does not answer took ~100 s to fail), and delayed the `--insecure` fallback
            // to http by a whole round of retries.
            let resp = self.http.get(url.clone()).send().await.map_err(|source| {
                RegistryError::Transport {
                    method: "GET".into(),
                    url: redact(&url),
                    source: source.without_url(),
                }
            });
            match resp {
                Ok(resp) => {
                    let status = resp.status();
                    let challenge = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|h| h.to_str().ok())
                        .and_then(crate::challenge::Challenge::parse);
                    if !(status.is_success() || status == StatusCode::UNAUTHORIZED) {
                        return Err(status_error("GET", &url, resp).await);
                    }
                    // Credential helpers are programs that may take their time (a keychain
                    // prompt): run them off the async threads.
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
                        auth: Mutex::new(auth),
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        let err = last_err.unwrap_or_else(|| RegistryError::Config("no scheme to try".into()));
        if !self.opts.insecure && !loopback {
            if let RegistryError::Transport { source, .. } = &err {
                let chain = error_chain(source);
                if chain.contains("certificate")
                    || chain.contains("InvalidCertificate")
                    || chain.contains("UnknownIssuer")
                {
                    return Err(RegistryError::Insecure(format!(
                        "{registry} presented a certificate that is not trusted ({chain}); pass --ca-cert FILE with its CA, or --insecure to skip verification"
                    )));
                }
                if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
                    return Err(RegistryError::Insecure(format!(
                        "{registry} did not answer in TLS; it may be a plain-HTTP registry ({chain}); pass --insecure to allow plain HTTP"
                    )));
                }
            }
        }
        Err(err)
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

    /// Send an authenticated request for `repository` with `actions` (`pull`, `push`).
    /// Error statuses become [`RegistryError::Status`]; a 401 is answered by fetching a new
    /// token once. The caller decides about retries.
    pub(crate) async fn send(
        &self,
        registry: &str,
        scope: &str,
        method: Method,
        path: &str,
        headers: HeaderMap,
    ) -> Result<Response, RegistryError> {
        let state = self.registry(registry).await?;
        let url = state
            .base
            .join(path)
            .map_err(|e| RegistryError::Config(format!("bad path {path:?}: {e}")))?;
        let mut refreshed = false;
        loop {
            let auth = self.authorization(&state, scope).await?;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a.clone());
            }
            let resp = req
                .send()
                .await
                .map_err(|source| RegistryError::Transport {
                    method: method.to_string(),
                    url: redact(&url),
                    source: source.without_url(),
                })?;
            // Only the registry itself may ask for new credentials: a 401 from a host it
            // redirected to must not steer tokens or passwords elsewhere.
            if resp.status() == StatusCode::UNAUTHORIZED
                && !refreshed
                && same_origin(resp.url(), &state.base)
            {
                refreshed = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .and_then(crate::challenge::Challenge::parse);
                state
                    .auth
                    .lock()
                    .await
                    .invalidate(scope, auth.as_ref(), challenge);
                continue;
            }
            if !resp.status().is_success() && !resp.status().is_redirection() {
                return Err(status_error(method.as_str(), &url, resp).await);
            }
            return Ok(resp);
        }
    }

    /// The `Authorization` value for `scope`, fetching a token when needed.
    async fn authorization(
        &self,
        state: &RegistryState,
        scope: &str,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let mut auth = state.auth.lock().await;
        auth.header_for(self, &state.name, scope).await
    }

    /// Retry `op` while its error is retryable.
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
                    let wait = self.backoff(attempt, e.retry_after())?;
                    tracing::debug!("retrying in {wait:?} after: {e}");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// How long to wait before attempt `attempt + 1`.
    pub(crate) fn backoff(
        &self,
        attempt: u32,
        retry_after: Option<u64>,
    ) -> Result<Duration, RegistryError> {
        if let Some(secs) = retry_after {
            let d = Duration::from_secs(secs);
            if d > self.opts.max_retry_after {
                return Err(RegistryError::Protocol {
                    url: String::new(),
                    reason: format!("the registry asks to wait {secs} s before trying again (rate limited); try later"),
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

/// Whether two URLs have the same scheme, host and port.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Turn an error response into a [`RegistryError::Status`], reading at most 64 KiB of body.
pub(crate) async fn status_error(method: &str, url: &Url, resp: Response) -> RegistryError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
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
        .map_err(|source| RegistryError::Body {
            url: crate::error::redact(url),
            received: 0,
            source: source.without_url(),
        })
}

/// Read a body of at most `limit` bytes.
async fn read_limited(mut resp: Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
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
