//! Errors in the registry's own format: `{"errors":[{"code":…,"message":…,"detail":…}]}`
//! with the distribution spec's codes, so registry clients show them as they would a
//! registry's.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use ferry_registry::RegistryError;

use crate::{error_chain, Refused};

/// The spec's error codes that a read-only mirror answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    NameInvalid,
    NameUnknown,
    ManifestUnknown,
    BlobUnknown,
    DigestInvalid,
    Unauthorized,
    Denied,
    TooManyRequests,
    Unsupported,
    /// Not one of the spec's: distribution's own code for what fits none (an upstream
    /// that failed), which clients show as its message.
    Unknown,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Unsupported => "UNSUPPORTED",
            Code::Unknown => "UNKNOWN",
        }
    }
}

/// One failed `/v2/` request: the status, the code and a sentence for the user.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct V2Error {
    pub status: u16,
    pub code: Code,
    pub message: String,
    /// What the request named (a tag, a digest), for `detail`.
    pub detail: Option<String>,
}

impl V2Error {
    pub fn new(status: u16, code: Code, message: impl Into<String>) -> V2Error {
        V2Error {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn detail(mut self, d: impl Into<String>) -> V2Error {
        self.detail = Some(d.into());
        self
    }

    /// An upstream failure as a client of the mirror should see it. `missing` is the code
    /// for "the registry does not have it" (MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN).
    pub fn upstream(e: &RegistryError, missing: Code) -> V2Error {
        let msg = error_chain(e);
        if e.is_not_found() {
            V2Error::new(
                404,
                missing,
                format!("the upstream registry has no such thing: {msg}"),
            )
        } else if e.is_unauthorized() || e.is_credentials_refused() || e.is_not_authorized() {
            // Not 401: that would make the client ask its user for the mirror's password,
            // while it is the server's credentials upstream that are missing or refused.
            V2Error::new(
                403,
                Code::Denied,
                format!("the upstream registry refused access: {msg} (the server's credentials for it are missing or not accepted; private images also answer this way when they do not exist)"),
            )
        } else if e.status() == Some(429) {
            V2Error::new(
                429,
                Code::TooManyRequests,
                format!("the upstream registry asks to slow down: {msg}"),
            )
        } else {
            V2Error::new(
                502,
                Code::Unknown,
                format!("the upstream registry failed: {msg}"),
            )
        }
    }

    pub fn unsupported() -> V2Error {
        V2Error::new(
            405,
            Code::Unsupported,
            "this is a read-only mirror: pushes and deletes are not supported",
        )
    }

    pub fn busy(what: String) -> V2Error {
        V2Error::new(429, Code::TooManyRequests, what)
    }

    pub fn unauthorized() -> V2Error {
        V2Error::new(
            401,
            Code::Unauthorized,
            "this mirror wants a token: log in with any user name and the token as the password",
        )
    }
}

impl From<Refused> for V2Error {
    fn from(r: Refused) -> V2Error {
        V2Error::new(403, Code::Denied, r.to_string())
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut body = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(d) = self.detail {
            body["detail"] = json!(d);
        }
        let mut resp = (status, axum::Json(json!({ "errors": [body] }))).into_response();
        if self.code == Code::Unauthorized {
            // How registry clients learn to send the token (RFC 9110, 11.6.1): Basic, which
            // docker, podman, skopeo and containerd all speak from their usual login.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ferry\""),
            );
        }
        resp
    }
}
