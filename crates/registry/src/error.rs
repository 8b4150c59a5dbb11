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
    /// The request did not complete: connection refused, reset, TLS, timeout.
    #[error("{method} {url} failed: {source}")]
    Transport {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The connection dropped while the body was arriving.
    #[error("the connection dropped while reading {url} after {received} bytes: {source}")]
    Body {
        url: String,
        received: u64,
        #[source]
        source: reqwest::Error,
    },
    /// The registry's authentication could not be satisfied.
    #[error("authentication with {registry} failed: {reason}")]
    Auth { registry: String, reason: String },
    /// A manifest was refused.
    #[error("manifest {reference}: {source}")]
    Manifest {
        reference: String,
        #[source]
        source: ferry_core::ManifestError,
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
}

impl RegistryError {
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The thing asked for does not exist (404, or a `*_UNKNOWN` code).
    pub fn is_not_found(&self) -> bool {
        match self {
            RegistryError::Status { status, codes, .. } => {
                *status == 404
                    || codes
                        .iter()
                        .any(|c| c.code.ends_with("_UNKNOWN") || c.code == "NAME_UNKNOWN")
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
            RegistryError::Auth { .. } => true,
            _ => false,
        }
    }

    /// Worth trying again: network failures, dropped bodies, 408, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Status { status, codes, .. } => {
                matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
                    || codes.iter().any(|c| c.code == "TOOMANYREQUESTS")
            }
            RegistryError::Transport { source, .. } => {
                !source.is_builder() && !is_tls_or_scheme_error(source)
            }
            RegistryError::Body { .. } => true,
            _ => false,
        }
    }

    /// How long the registry asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
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
/// pre-signed redirect URLs carry secrets in their query.
pub fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.to_string()
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
        assert!(!r.contains("secret") && !r.contains("pw"), "{r}");
    }
}
