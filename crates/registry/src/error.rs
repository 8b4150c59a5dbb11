//! The registry client's error type: it keeps what happened (method, redacted URL, status,
//! the registry's error codes) so callers ask questions instead of matching strings.

use std::fmt;

use serde::Deserialize;

/// One entry of the registry's `{"errors":[…]}` body.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RegistryErrorCode {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl fmt::Display for RegistryErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

fn render_codes(codes: &[RegistryErrorCode]) -> String {
    if codes.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = codes.iter().map(ToString::to_string).collect();
    format!(" ({})", parts.join("; "))
}

/// Everything that can go wrong talking to a registry.
///
/// Each variant renders as one sentence that already holds its cause: HTTP stack errors are
/// condensed into their informative part ([`describe`]) instead of being chained, so a
/// rendered chain never repeats "error sending request".
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an error status.
    #[error("{method} {url} returned {status}{}", render_codes(codes))]
    Status {
        method: String,
        url: String,
        status: u16,
        codes: Vec<RegistryErrorCode>,
        /// Seconds the registry asked us to wait (429/503 `Retry-After`).
        retry_after: Option<u64>,
    },
    /// The request did not complete: connection refused or reset, TLS, timeout.
    #[error("{method} {url} failed: {}", describe(error))]
    Transport {
        method: String,
        url: String,
        error: reqwest::Error,
    },
    /// The first contact with a registry (the `/v2/` ping) failed: no connection, or no
    /// answer within the deadline. Not retried: an address that refuses connections or
    /// does not resolve will not start working in the next seconds, and saying so at once
    /// beats a minute of silent retries.
    #[error("cannot reach the registry {registry} ({url}): {cause}")]
    Unreachable {
        registry: String,
        url: String,
        /// What went wrong, condensed ([`describe`]) or the deadline missed.
        cause: String,
    },
    /// The connection dropped while the body was arriving.
    #[error(
        "the connection dropped while reading {url} after {received} bytes: {}",
        describe(error)
    )]
    Body {
        url: String,
        received: u64,
        error: reqwest::Error,
    },
    /// A request (headers and body) did not complete within the deadline.
    #[error("{method} {url} did not complete within {} (--timeout)", secs(*after))]
    Timeout {
        method: String,
        url: String,
        after: std::time::Duration,
    },
    /// A blob body delivered too little for too long.
    #[error("the download of {url} stalled: fewer than {min_bytes} bytes arrived in {} (after {received} bytes; --timeout)", secs(*window))]
    Stalled {
        url: String,
        received: u64,
        min_bytes: u64,
        window: std::time::Duration,
    },
    /// A transfer ended early or was answered with a range we did not ask for: worth
    /// another attempt, but no HTTP error status was involved.
    #[error("{url}: {reason}")]
    Incomplete {
        url: String,
        reason: String,
        /// Bytes of the blob held when it happened.
        received: u64,
    },
    /// The registry asked to wait longer than we are willing to.
    #[error("{method} {url} returned {status}: the registry asks to wait {} before trying again, longer than the {} allowed (--max-wait)", secs(*wait), secs(*max))]
    WaitTooLong {
        method: String,
        url: String,
        status: u16,
        wait: std::time::Duration,
        max: std::time::Duration,
    },
    /// Redirects went round in a loop (or past the limit).
    #[error("{method} {url} was redirected too many times (a redirect loop)")]
    RedirectLoop { method: String, url: String },
    /// The host answered `/v2/` with something no registry answers: it is not a registry's
    /// API address.
    #[error("{url} returned {status}: {registry} does not serve the registry API (/v2/)")]
    NotARegistry {
        registry: String,
        url: String,
        status: u16,
    },
    /// The token service named by the registry's challenge failed.
    #[error("the token service of {registry} failed")]
    TokenService {
        registry: String,
        #[source]
        source: Box<RegistryError>,
    },
    /// Credentials were given and the registry (or its token service) refused them.
    #[error("{registry} refused the credentials given for it ({method} {url} returned {status})")]
    CredentialsRefused {
        registry: String,
        method: String,
        url: String,
        status: u16,
    },
    /// The token service accepted the credentials, but the registry refused the token for
    /// this repository: the account may not pull it, or it does not exist (Docker Hub answers
    /// 401 for a repository it does not know, even to a valid token).
    #[error("the account is not authorised for {repository} on {registry}, or {repository} does not exist ({method} {url} returned {status})")]
    NotAuthorized {
        registry: String,
        repository: String,
        method: String,
        url: String,
        status: u16,
    },
    /// The registry's authentication could not be satisfied.
    #[error("authentication with {registry} failed: {reason}")]
    Auth { registry: String, reason: String },
    /// A manifest was refused. Rendered as its cause alone, which ends the chain: callers
    /// wrap it with the reference they asked for, and chaining the parse error as well
    /// printed it three times.
    #[error("{error}")]
    Manifest {
        reference: String,
        error: ferry_core::ManifestError,
    },
    /// Content did not match its digest or size.
    #[error(transparent)]
    Verify(#[from] ferry_core::VerifyError),
    /// Writing downloaded bytes locally failed.
    #[error("writing {digest}: {source}")]
    Write {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    /// A registry talked plain HTTP or sent a bad certificate and we may not accept that.
    #[error("{0}")]
    Insecure(String),
    /// The client was configured wrongly (a CA file that does not parse, say).
    #[error("{0}")]
    Config(String),
    /// The registry sent something that is not what the API promises.
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
    /// Reading what was being uploaded failed (a local file), not the network.
    #[error("reading the data to upload to {url} failed: {source}")]
    Source {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// An upload's body stopped moving: the registry took too little for too long.
    #[error("the upload to {url} stalled: the registry took fewer than {min_bytes} bytes in {} (after {sent} bytes; --timeout)", secs(*window))]
    SendStalled {
        method: String,
        url: String,
        sent: u64,
        min_bytes: u64,
        window: std::time::Duration,
    },
    /// The credentials were accepted (for pulling) but the registry refuses to let this
    /// account write to the repository. `action` says what was refused: "push to" or
    /// "delete from".
    #[error(
        "the account may not {action} {repository} on {registry} ({method} {url} returned {status})"
    )]
    PushDenied {
        action: &'static str,
        registry: String,
        repository: String,
        method: String,
        url: String,
        status: u16,
    },
    /// The registry refused a write (an upload, a manifest, a delete) for a reason its
    /// error codes name; `reason` says it in words.
    #[error("{reason}: {method} {url} returned {status}{}", render_codes(codes))]
    Rejected {
        reason: String,
        method: String,
        url: String,
        status: u16,
        codes: Vec<RegistryErrorCode>,
    },
}

impl RegistryError {
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. }
            | RegistryError::CredentialsRefused { status, .. }
            | RegistryError::NotAuthorized { status, .. }
            | RegistryError::PushDenied { status, .. }
            | RegistryError::Rejected { status, .. }
            | RegistryError::WaitTooLong { status, .. } => Some(*status),
            RegistryError::TokenService { source, .. } => source.status(),
            _ => None,
        }
    }

    /// The thing asked for does not exist (404, or a `*_UNKNOWN` code). An upload session
    /// the registry forgot is not this: see [`RegistryError::is_upload_unknown`].
    pub fn is_not_found(&self) -> bool {
        match self {
            RegistryError::Status { .. } if self.is_upload_unknown() => false,
            RegistryError::Status { status, codes, .. } => {
                *status == 404
                    || codes
                        .iter()
                        .any(|c| c.code.ends_with("_UNKNOWN") || c.code == "NAME_UNKNOWN")
            }
            _ => false,
        }
    }

    /// The registry does not know the upload session (`BLOB_UPLOAD_UNKNOWN`): it expired or
    /// was purged, and the upload must start again from a new one.
    pub fn is_upload_unknown(&self) -> bool {
        self.has_code("BLOB_UPLOAD_UNKNOWN")
    }

    /// Whether the registry's answer carries error code `code`.
    pub fn has_code(&self, code: &str) -> bool {
        match self {
            RegistryError::Status { codes, .. } | RegistryError::Rejected { codes, .. } => {
                codes.iter().any(|c| c.code == code)
            }
            _ => false,
        }
    }

    /// Credentials are missing, wrong, or lack the permission.
    pub fn is_unauthorized(&self) -> bool {
        match self {
            RegistryError::Status { status, codes, .. } => {
                *status == 401
                    || *status == 403
                    || codes
                        .iter()
                        .any(|c| c.code == "UNAUTHORIZED" || c.code == "DENIED")
            }
            RegistryError::Rejected { status, codes, .. } => {
                *status == 401
                    || *status == 403
                    || codes
                        .iter()
                        .any(|c| c.code == "UNAUTHORIZED" || c.code == "DENIED")
            }
            RegistryError::Auth { .. }
            | RegistryError::CredentialsRefused { .. }
            | RegistryError::PushDenied { .. }
            | RegistryError::NotAuthorized { .. } => true,
            _ => false,
        }
    }

    /// Credentials were given and refused (as opposed to missing).
    pub fn is_credentials_refused(&self) -> bool {
        matches!(self, RegistryError::CredentialsRefused { .. })
    }

    /// Credentials were accepted but not for the repository asked for, which may also not
    /// exist.
    pub fn is_not_authorized(&self) -> bool {
        matches!(self, RegistryError::NotAuthorized { .. })
    }

    /// Worth trying again: network failures, dropped or stalled bodies, transfers cut
    /// short, timeouts, 408, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Status { status, codes, .. } => {
                matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
                    || codes.iter().any(|c| c.code == "TOOMANYREQUESTS")
            }
            RegistryError::Transport { error, .. } => {
                !error.is_builder() && !error.is_redirect() && !is_tls_or_scheme_error(error)
            }
            RegistryError::Body { .. }
            | RegistryError::Timeout { .. }
            | RegistryError::Stalled { .. }
            | RegistryError::SendStalled { .. }
            | RegistryError::Incomplete { .. } => true,
            RegistryError::TokenService { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// A connection could not be made (refused, unresolvable, connect timeout).
    pub fn is_connect(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Transport { error, .. } => error.is_connect(),
            RegistryError::TokenService { source, .. } => source.is_connect(),
            _ => false,
        }
    }

    /// Bytes of a blob already held when a download failed: a run again resumes from there.
    pub fn bytes_kept(&self) -> u64 {
        match self {
            RegistryError::Body { received, .. }
            | RegistryError::Stalled { received, .. }
            | RegistryError::Incomplete { received, .. } => *received,
            _ => 0,
        }
    }

    /// How long the registry asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            RegistryError::TokenService { source, .. } => source.retry_after(),
            _ => None,
        }
    }

    /// The method and URL of the request that failed, where the error has them.
    pub(crate) fn request(&self) -> (String, String) {
        match self {
            RegistryError::Status { method, url, .. }
            | RegistryError::Transport { method, url, .. }
            | RegistryError::Timeout { method, url, .. } => (method.clone(), url.clone()),
            RegistryError::Rejected { method, url, .. }
            | RegistryError::SendStalled { method, url, .. }
            | RegistryError::PushDenied { method, url, .. } => (method.clone(), url.clone()),
            RegistryError::Body { url, .. }
            | RegistryError::Stalled { url, .. }
            | RegistryError::Incomplete { url, .. } => ("GET".into(), url.clone()),
            RegistryError::TokenService { source, .. } => source.request(),
            _ => (String::new(), String::new()),
        }
    }
}

/// `4 s`, `0.5 s`, `20 ms`, `2 min 30 s`.
pub(crate) fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 120 {
        let (m, r) = (s / 60, s % 60);
        if r == 0 {
            format!("{m} min")
        } else {
            format!("{m} min {r} s")
        }
    } else if s == 0 && d.as_millis() < 100 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() != 0 && s < 10 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{s} s")
    }
}

/// Messages of the HTTP stack that only say which layer an error passed through.
const WRAPPERS: &[&str] = &[
    "error sending request",
    "client error (connect)",
    "client error (sendrequest)",
    "tcp connect error",
    "error trying to connect",
    "dns error",
    "request or response body error",
    "error decoding response body",
    "error reading a body from connection",
];

/// One phrase for an HTTP stack error: the informative links of its cause chain, wrappers
/// and repeats left out (`connection refused (os error 111)`, not "error sending request:
/// client error (Connect): tcp connect error: …").
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        let text = s.to_string();
        let lower = text.to_ascii_lowercase();
        let wrapper = WRAPPERS.iter().any(|w| lower == *w);
        let repeat = parts.iter().any(|p| p.contains(text.as_str()));
        if !wrapper && !repeat && !text.is_empty() {
            // A later, more specific message often restates the earlier one in full.
            parts.retain(|p| !text.contains(p.as_str()));
            parts.push(text);
        }
        src = s.source();
    }
    if parts.is_empty() {
        let e = e.to_string();
        return if e.is_empty() {
            "unknown error".into()
        } else {
            e
        };
    }
    parts.join(": ")
}

fn is_tls_or_scheme_error(e: &reqwest::Error) -> bool {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        let text = s.to_string().to_ascii_lowercase();
        if text.contains("certificate")
            || text.contains("invalid peer")
            || text.contains("invalidcontenttype")
            || text.contains("tls") && text.contains("handshake")
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// Strip credentials and query strings from a URL before it appears in an error or log:
/// pre-signed redirect URLs carry secrets in their query. The query is replaced by a literal
/// `?…` in the text (setting it on the URL would percent-encode it to `?%E2%80%A6`).
pub fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let had_query = u.query().is_some();
    u.set_query(None);
    u.set_fragment(None);
    let mut s = u.to_string();
    if had_query {
        s.push_str("?…");
    }
    s
}

/// Parse an error body; a body that is not the registry error JSON yields no codes.
pub(crate) fn parse_codes(body: &[u8]) -> Vec<RegistryErrorCode> {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<RegistryErrorCode>,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.errors)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_and_redaction() {
        let e = RegistryError::Status {
            method: "GET".into(),
            url: "x".into(),
            status: 404,
            codes: parse_codes(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
            retry_after: None,
        };
        assert!(e.is_not_found() && !e.is_retryable());
        assert!(e.to_string().contains("MANIFEST_UNKNOWN: manifest unknown"));
        let e = RegistryError::Status {
            method: "GET".into(),
            url: "x".into(),
            status: 429,
            codes: vec![],
            retry_after: Some(3),
        };
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(3));
        let u = url::Url::parse("https://user:pw@s3.example/blob?X-Amz-Signature=secret").unwrap();
        let r = redact(&u);
        assert_eq!(r, "https://s3.example/blob?…");
    }
}
