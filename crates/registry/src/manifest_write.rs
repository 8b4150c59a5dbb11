//! Manifest PUT and DELETE.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;

use ferry_core::Digest;

use crate::body::{BodySource, BytesBody, UploadBody};
use crate::client::Client;
use crate::error::{redact, RegistryError};
use crate::refusal::{explain, header_digest, not_redirected, Write};
use crate::scope::Scopes;
use crate::upload::header_value;

impl Client {
    /// Store `bytes` as manifest `reference` (a tag or a digest) of `repo` with Content-Type
    /// `media_type`. Returns the digest, checked against the registry's
    /// `Docker-Content-Digest`.
    pub async fn put_manifest(
        &self,
        host: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, RegistryError> {
        let body = BytesBody::new(bytes);
        let digest = body.known_digest().expect("a bytes body knows its digest");
        let path = format!("v2/{repo}/manifests/{reference}");
        if let Ok(named) = reference.parse::<Digest>() {
            if named != digest {
                return Err(RegistryError::Config(format!(
                    "the manifest to push as {host}/{repo}@{named} hashes to {digest}"
                )));
            }
        }
        let content_type = HeaderValue::from_str(media_type).map_err(|_| {
            RegistryError::Config(format!("{media_type:?} is not a valid media type"))
        })?;
        let scopes = Scopes::push(repo);
        let sent = Arc::new(AtomicU64::new(0));
        let resp = self
            .with_retries(|| async {
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, content_type.clone());
                headers.insert(
                    CONTENT_LENGTH,
                    header_value(&body.bytes().len().to_string()),
                );
                let b = &body;
                let mut open = || {
                    b.open(0).map_err(|source| RegistryError::Source {
                        url: path.clone(),
                        source,
                    })
                };
                let mut src = BodySource {
                    open: &mut open,
                    sent: sent.clone(),
                };
                self.send_body(host, &scopes, Method::PUT, &path, headers, Some(&mut src))
                    .await
            })
            .await
            .and_then(not_redirected)
            .map_err(|e| explain(e, host, repo, Write::Manifest(reference)))?;
        if let Some(d) = header_digest(&resp) {
            if d != digest {
                return Err(RegistryError::Protocol {
                    url: redact(resp.url()),
                    reason: format!(
                        "the registry stored the manifest as {d}, but its bytes hash to {digest}"
                    ),
                });
            }
        }
        Ok(digest)
    }

    /// Delete manifest `digest` of `repo` (and so every tag pointing at it).
    pub async fn delete_manifest(
        &self,
        host: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let path = format!("v2/{repo}/manifests/{digest}");
        let scopes = Scopes::delete(repo);
        self.with_retries(|| self.send(host, &scopes, Method::DELETE, &path, HeaderMap::new()))
            .await
            .and_then(not_redirected)
            .map_err(|e| explain(e, host, repo, Write::Delete))?;
        Ok(())
    }
}
