//! Checking credentials before they are stored, as `docker login` does: ping `/v2/`, answer
//! its challenge with the credentials (Basic: send them; Bearer: ask the token service for a
//! token with no scope, `account=` the username), and expect the registry to accept the
//! result on `/v2/`.

use base64::Engine as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::challenge::Challenge;
use crate::client::{read_body, same_origin, status_error, transport_error, Client};
use crate::credentials::Credential;
use crate::error::{redact, RegistryError};

/// What a login check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginCheck {
    /// The registry (or its token service) accepted the credentials.
    Accepted,
    /// The registry asks for no credentials at all: there was nothing to check them
    /// against (docker stores them anyway).
    NotRequired,
}

impl Client {
    /// Check `credential` (a username and password) against the registry at `host` (its API
    /// host, e.g. `registry-1.docker.io` or `127.0.0.1:5000`). A refusal is
    /// [`RegistryError::CredentialsRefused`]; nothing is stored or cached. One attempt per
    /// request: a login is interactive, and a retry would only delay the answer.
    pub async fn check_login(
        &self,
        host: &str,
        credential: &Credential,
    ) -> Result<LoginCheck, RegistryError> {
        let Credential::Basic { username, password } = credential else {
            return Err(RegistryError::Auth {
                registry: host.to_string(),
                reason: "a login takes a username and password, not an identity token".into(),
            });
        };
        // The ping finds the scheme (and says clearly when the host is unreachable or no
        // registry); the challenge is then asked for again, without credentials.
        let state = self.registry(host).await?;
        let v2 = state
            .base
            .join("v2/")
            .map_err(|e| RegistryError::Config(e.to_string()))?;
        let basic = basic_header(username, password);
        let resp = self.login_get(&v2, None).await?;
        let challenge = match resp.status() {
            s if s.is_success() => return Ok(LoginCheck::NotRequired),
            StatusCode::UNAUTHORIZED => resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .and_then(Challenge::parse),
            _ => return Err(self.error_of(&v2, resp).await),
        };
        let answer = match challenge {
            Some(Challenge::Basic { .. }) => basic,
            Some(Challenge::Bearer { realm, service, .. }) => {
                self.login_token(host, &realm, service.as_deref(), username, basic)
                    .await?
            }
            None => {
                return Err(RegistryError::Auth {
                    registry: host.to_string(),
                    reason: "it answers 401 without a challenge ferry can answer (Basic or Bearer)"
                        .into(),
                })
            }
        };
        let resp = self.login_get(&v2, Some(answer)).await?;
        match resp.status() {
            s if s.is_success() => Ok(LoginCheck::Accepted),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if same_origin(resp.url(), &v2) => {
                Err(RegistryError::CredentialsRefused {
                    registry: host.to_string(),
                    method: "GET".into(),
                    url: redact(&v2),
                    status: resp.status().as_u16(),
                })
            }
            _ => Err(self.error_of(&v2, resp).await),
        }
    }

    /// A GET with an optional `Authorization`, within the request deadline.
    async fn login_get(
        &self,
        url: &Url,
        auth: Option<HeaderValue>,
    ) -> Result<Response, RegistryError> {
        crate::guard::check_url(self.opts.address_guard.as_ref(), url)?;
        let mut req = self.http.get(url.clone());
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let until = tokio::time::Instant::now() + self.opts.request_timeout;
        self.deadline_until(until, "GET", url, async {
            req.send().await.map_err(|e| transport_error("GET", url, e))
        })
        .await
    }

    async fn error_of(&self, url: &Url, resp: Response) -> RegistryError {
        let until = tokio::time::Instant::now() + self.opts.request_timeout;
        status_error("GET", url, resp, until).await
    }

    /// A token with no scope from `realm` for `username`: the token service checks the
    /// password. Its 401 or 403 is a refusal.
    async fn login_token(
        &self,
        host: &str,
        realm: &str,
        service: Option<&str>,
        username: &str,
        basic: HeaderValue,
    ) -> Result<HeaderValue, RegistryError> {
        let auth_err = |reason: String| RegistryError::Auth {
            registry: host.to_string(),
            reason,
        };
        let mut url = Url::parse(realm)
            .map_err(|e| auth_err(format!("the token realm {realm:?} is not a URL: {e}")))?;
        if url.scheme() != "https" {
            let hp = format!(
                "{}{}",
                url.host_str().unwrap_or(""),
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            );
            let loopback = ferry_core::reference::is_loopback_host(&hp);
            if url.scheme() != "http" || (!loopback && !self.opts.insecure) {
                return Err(auth_err(format!(
                    "the token realm {} is not HTTPS; refusing to send credentials there (use --insecure to allow)",
                    redact(&url)
                )));
            }
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("account", username);
        }
        let resp =
            self.login_get(&url, Some(basic))
                .await
                .map_err(|e| RegistryError::TokenService {
                    registry: host.to_string(),
                    source: Box::new(e),
                })?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::CredentialsRefused {
                registry: host.to_string(),
                method: "GET".into(),
                url: redact(&url),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(RegistryError::TokenService {
                registry: host.to_string(),
                source: Box::new(self.error_of(&url, resp).await),
            });
        }
        let until = tokio::time::Instant::now() + self.opts.request_timeout;
        let body = self
            .deadline_until(until, "GET", &url, read_body(resp, 1024 * 1024, &url))
            .await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            auth_err("the token service answered something that is not a token".into())
        })?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| auth_err("the token service answered without a token".into()))?;
        let mut h = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| auth_err("the token has characters a header cannot carry".into()))?;
        h.set_sensitive(true);
        Ok(h)
    }
}

fn basic_header(user: &str, pass: &str) -> HeaderValue {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut v = HeaderValue::from_str(&format!("Basic {enc}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}
