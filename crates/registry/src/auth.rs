//! Answering a registry's challenge: Basic credentials, or Bearer tokens fetched from the
//! challenge's realm for each scope, cached until shortly before they expire and fetched
//! again when the registry says a token is no longer good (a token that expires in the middle
//! of a long download on a slow link).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use url::Url;

use crate::challenge::Challenge;
use crate::client::{read_body, Client};
use crate::credentials::Credential;
use crate::error::{redact, RegistryError};
use crate::scope::Scopes;

/// Tokens are renewed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

struct Token {
    header: HeaderValue,
    /// When to fetch a new one: a little before it expires.
    refresh_at: Instant,
}

/// Per-registry authentication state. Its lock is only ever held for a lookup or an
/// update, never across a network wait: token fetches are single-flighted per scope by a
/// separate async gate, so parallel downloads of one repository share one fetch while
/// requests for other scopes (and other registries) go on.
pub(crate) struct AuthState {
    inner: std::sync::Mutex<Inner>,
}

struct Inner {
    challenge: Option<Challenge>,
    credential: Option<Credential>,
    tokens: HashMap<String, Token>,
    fetching: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

/// What answering a challenge for one scope takes.
enum Plan {
    Ready(Option<HeaderValue>),
    Fetch {
        gate: Arc<tokio::sync::Mutex<()>>,
        realm: String,
        service: Option<String>,
        credential: Option<Credential>,
    },
}

impl AuthState {
    pub(crate) fn new(challenge: Option<Challenge>, credential: Option<Credential>) -> AuthState {
        AuthState {
            inner: std::sync::Mutex::new(Inner {
                challenge,
                credential,
                tokens: HashMap::new(),
                fetching: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a credential is in use for this registry (so a 401 means it was refused).
    pub(crate) fn has_credential(&self) -> bool {
        self.lock().credential.is_some()
    }

    /// Whether the registry wants Bearer tokens from a token service (rather than checking
    /// credentials itself).
    pub(crate) fn uses_tokens(&self) -> bool {
        matches!(self.lock().challenge, Some(Challenge::Bearer { .. }))
    }

    /// Forget the token `used` for `scope` after a 401, adopting the newer challenge if any.
    /// A token another task has fetched since is kept: parallel downloads that all meet the
    /// expiry renew it once, not once each.
    pub(crate) fn invalidate(
        &self,
        scopes: &Scopes,
        used: Option<&HeaderValue>,
        challenge: Option<Challenge>,
    ) {
        let mut inner = self.lock();
        if inner
            .tokens
            .get(&scopes.key())
            .is_some_and(|t| Some(&t.header) == used)
        {
            inner.tokens.remove(&scopes.key());
        }
        if challenge.is_some() {
            inner.challenge = challenge;
        }
    }

    /// The `Authorization` value for `scopes`, fetching a token when needed.
    pub(crate) async fn header_for(
        &self,
        client: &Client,
        registry: &str,
        scopes: &Scopes,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let gate = match self.plan(registry, scopes)? {
            Plan::Ready(h) => return Ok(h),
            Plan::Fetch { gate, .. } => gate,
        };
        let _turn = gate.lock().await;
        // Another task may have fetched it while this one waited its turn.
        let (realm, service, credential) = match self.plan(registry, scopes)? {
            Plan::Ready(h) => return Ok(h),
            Plan::Fetch {
                realm,
                service,
                credential,
                ..
            } => (realm, service, credential),
        };
        let token = fetch_token(
            client,
            registry,
            &realm,
            service.as_deref(),
            scopes,
            credential.as_ref(),
        )
        .await?;
        let header = token.header.clone();
        self.lock().tokens.insert(scopes.key(), token);
        Ok(Some(header))
    }

    fn plan(&self, registry: &str, scopes: &Scopes) -> Result<Plan, RegistryError> {
        let mut inner = self.lock();
        match &inner.challenge {
            None => Ok(Plan::Ready(None)),
            Some(Challenge::Basic { .. }) => match &inner.credential {
                Some(Credential::Basic { username, password }) => Ok(Plan::Ready(Some(basic_header(username, password)))),
                Some(Credential::IdentityToken(_)) => Err(RegistryError::Auth {
                    registry: registry.to_string(),
                    reason: "the registry wants a username and password, but the stored credential is an identity token".into(),
                }),
                None => Ok(Plan::Ready(None)),
            },
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scopes.key();
                if let Some(t) = inner.tokens.get(&key) {
                    if t.refresh_at > Instant::now() {
                        return Ok(Plan::Ready(Some(t.header.clone())));
                    }
                }
                let (realm, service) = (realm.clone(), service.clone());
                let credential = inner.credential.clone();
                let gate = inner.fetching.entry(key).or_default().clone();
                Ok(Plan::Fetch {
                    gate,
                    realm,
                    service,
                    credential,
                })
            }
        }
    }
}

fn basic_header(user: &str, pass: &str) -> HeaderValue {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut v = HeaderValue::from_str(&format!("Basic {enc}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

async fn fetch_token(
    client: &Client,
    registry: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &Scopes,
    credential: Option<&Credential>,
) -> Result<Token, RegistryError> {
    let auth_err = |reason: String| RegistryError::Auth {
        registry: registry.to_string(),
        reason,
    };
    let mut url = Url::parse(realm)
        .map_err(|e| auth_err(format!("the token realm {realm:?} is not a URL: {e}")))?;
    // The realm comes from the registry's answer: a public registry must not be able to
    // point the token fetch at a private address by naming it as an IP literal.
    crate::guard::check_url(client.opts.address_guard.as_ref(), &url)?;
    let realm_host = url.host_str().unwrap_or("").to_string();
    let realm_port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    if url.scheme() != "https" {
        let loopback =
            ferry_core::reference::is_loopback_host(&format!("{realm_host}{realm_port}"));
        if url.scheme() != "http" || (!loopback && !client.opts.insecure) {
            return Err(auth_err(format!(
                "the token realm {} is not HTTPS; refusing to send credentials there (use --insecure to allow)",
                redact(&url)
            )));
        }
    }
    let req = match credential {
        Some(Credential::IdentityToken(refresh)) => {
            let rendered: Vec<String> = scopes.iter().map(ToString::to_string).collect();
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_id", "ferry"),
            ];
            if let Some(s) = service {
                form.push(("service", s));
            }
            for s in &rendered {
                form.push(("scope", s.as_str()));
            }
            client.http.post(url.clone()).form(&form)
        }
        other => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes.iter() {
                    q.append_pair("scope", &s.to_string());
                }
                if other.is_some() {
                    q.append_pair(
                        "account",
                        match other {
                            Some(Credential::Basic { username, .. }) => username,
                            _ => "",
                        },
                    );
                }
            }
            let mut r = client.http.get(url.clone());
            if let Some(Credential::Basic { username, password }) = other {
                r = r.header(
                    reqwest::header::AUTHORIZATION,
                    basic_header(username, password),
                );
            }
            r
        }
    };
    let req = req
        .build()
        .map_err(|e| auth_err(format!("cannot build the token request: {e}")))?;
    let method = req.method().clone();
    // One attempt, under one deadline for headers and body: the request that needed the
    // token is itself retried by its caller, and retrying here as well multiplied the
    // attempts (6 x 6 against a failing token service).
    let service_err = |source: RegistryError| RegistryError::TokenService {
        registry: registry.to_string(),
        source: Box::new(source),
    };
    let until = tokio::time::Instant::now() + client.opts.request_timeout;
    let body = client
        .deadline_until(until, method.as_str(), &url, async {
            let resp = client
                .http
                .execute(req)
                .await
                .map_err(|e| crate::client::transport_error(method.as_str(), &url, e))?;
            let status = resp.status();
            if (status == 401 || status == 403) && credential.is_some() {
                return Err(RegistryError::CredentialsRefused {
                    registry: registry.to_string(),
                    method: method.to_string(),
                    url: redact(&url),
                    status: status.as_u16(),
                });
            }
            if status == 401 || status == 403 {
                return Err(auth_err(
                    "the registry requires credentials — pass --username and --password-stdin, or add them to ~/.docker/config.json".into(),
                ));
            }
            if !status.is_success() {
                return Err(crate::client::status_error(method.as_str(), &url, resp, until).await);
            }
            read_body(resp, 1024 * 1024, &url).await
        })
        .await
        .map_err(|e| match e {
            RegistryError::CredentialsRefused { .. } | RegistryError::Auth { .. } => e,
            other => service_err(other),
        })?;
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
        auth_err(format!(
            "the token service answered something that is not a token: {e}"
        ))
    })?;
    let value = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| auth_err("the token service answered without a token".into()))?;
    let mut header = HeaderValue::from_str(&format!("Bearer {value}"))
        .map_err(|_| auth_err("the token has characters a header cannot carry".into()))?;
    header.set_sensitive(true);
    // The spec's default lifetime is 60 s when the service does not say.
    // Clamped: a service that says "forever" must not overflow the clock arithmetic.
    let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(60).clamp(1, 86_400));
    let margin = EXPIRY_MARGIN.min(lifetime / 2);
    Ok(Token {
        header,
        refresh_at: Instant::now() + lifetime - margin,
    })
}
