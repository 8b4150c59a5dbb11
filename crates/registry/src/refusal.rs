//! What a registry's refusal of a write means, in words: its error codes turned into a
//! sentence ([`RegistryError::Rejected`]), and answers a write must not be taken for.

use reqwest::Response;

use ferry_core::Digest;

use crate::error::{redact, RegistryError};

/// What a write was about, for the sentence explaining a refusal.
pub(crate) enum Write<'a> {
    Blob(Option<&'a Digest>),
    Manifest(&'a str),
    Delete,
}

/// Turn a refusal carrying the registry's error codes into a sentence saying what it means.
pub(crate) fn explain(e: RegistryError, host: &str, repo: &str, what: Write<'_>) -> RegistryError {
    let RegistryError::Status {
        method,
        url,
        status,
        codes,
        retry_after,
    } = e
    else {
        return e;
    };
    let code = |c: &str| codes.iter().any(|x| x.code == c);
    let at = format!("{host}/{repo}");
    let reason = match &what {
        Write::Delete if status == 405 || code("UNSUPPORTED") => Some(format!(
            "{host} does not allow deleting manifests (docker-registry allows it with REGISTRY_STORAGE_DELETE_ENABLED=true)"
        )),
        Write::Manifest(r) if code("MANIFEST_BLOB_UNKNOWN") || code("BLOB_UNKNOWN") => Some(format!(
            "{at} refused manifest {r}: it names a blob the repository does not hold; push the blobs first"
        )),
        Write::Manifest(r) if code("MANIFEST_INVALID") => {
            Some(format!("{at} refused manifest {r} as invalid"))
        }
        Write::Manifest(r) if code("TAG_INVALID") => {
            Some(format!("{at} refused the tag of manifest {r}"))
        }
        Write::Manifest(r) if code("DIGEST_INVALID") => Some(format!(
            "{at} says manifest {r} does not match its digest"
        )),
        Write::Blob(Some(d)) if code("DIGEST_INVALID") => Some(format!(
            "{at} received blob {d} with other content than its digest: the bytes were changed or cut on the way"
        )),
        Write::Blob(_) if code("SIZE_INVALID") => Some(format!(
            "{at} received a blob of another size than declared"
        )),
        _ if code("NAME_INVALID") => Some(format!("{host} refuses the repository name {repo}")),
        _ if code("DENIED") => Some(format!("{host} denied the request to write to {repo}")),
        _ if code("UNSUPPORTED") || status == 405 => Some(format!(
            "{host} does not support this operation on {repo}"
        )),
        _ => None,
    };
    match reason {
        Some(reason) => RegistryError::Rejected {
            reason,
            method,
            url,
            status,
            codes,
        },
        None => RegistryError::Status {
            method,
            url,
            status,
            codes,
            retry_after,
        },
    }
}

/// A redirect answered to a write: ferry does not send uploads elsewhere than the registry
/// (a streamed body cannot follow it, and credentials must not).
pub(crate) fn not_redirected(resp: Response) -> Result<Response, RegistryError> {
    if resp.status().is_redirection() {
        return Err(RegistryError::Protocol {
            url: redact(resp.url()),
            reason: format!(
                "the registry answered a write with a redirect ({}), which ferry does not follow",
                resp.status()
            ),
        });
    }
    Ok(resp)
}

pub(crate) fn header_digest(resp: &Response) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<Digest>().ok())
}
