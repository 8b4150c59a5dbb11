//! The API calls: manifests, blobs (streamed, verified, resumed), tags and the catalog.

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};

use ferry_core::{media, Descriptor, Digest, Manifest, Reference, ResumableWrite, Verifier};

use crate::client::{read_body, Client};
use crate::error::RegistryError;

/// Manifests larger than this are refused (distribution's own limit is 4 MiB).
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// A manifest as the registry sent it: the exact bytes, which the digest covers.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
    pub manifest: Manifest,
}

impl FetchedManifest {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            &self.media_type,
            self.digest.clone(),
            self.bytes.len() as u64,
        )
    }
}

/// Progress of one blob download, as bytes held so far.
pub type ProgressFn<'a> = &'a (dyn Fn(u64) + Send + Sync);

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

impl Client {
    /// Fetch a manifest by tag or digest. The digest is verified whenever it is known: the
    /// reference's digest, else the registry's `Docker-Content-Digest` header.
    pub async fn manifest(&self, reference: &Reference) -> Result<FetchedManifest, RegistryError> {
        self.manifest_at(
            reference.api_host(),
            reference.repository(),
            &reference.manifest_reference(),
            reference.digest(),
        )
        .await
    }

    /// Fetch the manifest `tag_or_digest` of `repo` on `host`.
    pub async fn manifest_at(
        &self,
        host: &str,
        repo: &str,
        tag_or_digest: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        let path = format!("v2/{repo}/manifests/{tag_or_digest}");
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(media::MANIFEST_ACCEPT));
        let scope = pull_scope(repo);
        let (bytes, content_type, header_digest) = self
            .with_retries(|| async {
                let resp = self
                    .send(host, &scope, Method::GET, &path, headers.clone())
                    .await?;
                let url = resp.url().clone();
                let ct = resp
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let dcd = resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if resp
                    .content_length()
                    .is_some_and(|l| l as usize > MAX_MANIFEST)
                {
                    return Err(RegistryError::Protocol {
                        url: crate::error::redact(&url),
                        reason: "the manifest is larger than 4 MiB".into(),
                    });
                }
                let body = read_body(resp, MAX_MANIFEST + 1, &url).await?;
                if body.len() > MAX_MANIFEST {
                    return Err(RegistryError::Protocol {
                        url: crate::error::redact(&url),
                        reason: "the manifest is larger than 4 MiB".into(),
                    });
                }
                Ok((body, ct, dcd))
            })
            .await?;
        let where_ = format!("{host}/{repo}:{tag_or_digest}");
        let digest = match (
            expected,
            header_digest
                .as_deref()
                .and_then(|d| d.parse::<Digest>().ok()),
        ) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => d,
            (None, None) => Digest::sha256_of(&bytes),
        };
        // Schema 1's digest covers only its JWS payload: name it before a verify fails on it.
        Manifest::refuse_schema1(&bytes, content_type.as_deref()).map_err(|source| {
            RegistryError::Manifest {
                reference: where_.clone(),
                source,
            }
        })?;
        let mut v = Verifier::new(digest.clone(), Some(bytes.len() as u64));
        v.update(&bytes)?;
        v.finish()?;
        let manifest = Manifest::parse(&bytes, content_type.as_deref()).map_err(|source| {
            RegistryError::Manifest {
                reference: where_,
                source,
            }
        })?;
        let media_type = manifest.media_type().to_string();
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
            manifest,
        })
    }

    /// Download blob `desc` of `repo` into `out`, verifying size and digest as bytes arrive.
    ///
    /// Starts at `out.offset()` (bytes a previous attempt left), asks for the rest with
    /// `Range`, and on a dropped connection, a 5xx or a 429 waits and continues from the byte
    /// where it stopped. A server that ignores `Range` makes `out` start over. Attempts are
    /// counted only when no byte arrived since the last failure, so a slow link that drops
    /// often still finishes. The caller commits `out` (the final digest check) afterwards.
    pub async fn blob_into(
        &self,
        host: &str,
        repo: &str,
        desc: &Descriptor,
        out: &mut dyn ResumableWrite,
        progress: ProgressFn<'_>,
    ) -> Result<(), RegistryError> {
        let scope = pull_scope(repo);
        let path = format!("v2/{repo}/blobs/{}", desc.digest);
        let write_err = |source: std::io::Error| RegistryError::Write {
            digest: desc.digest.to_string(),
            source,
        };
        let mut attempt = 0u32;
        loop {
            let offset = out.offset();
            progress(offset);
            if offset == desc.size {
                return Ok(());
            }
            let before = offset;
            let result = self
                .blob_attempt(host, &scope, &path, desc, out, progress)
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() => {
                    if out.offset() > before {
                        attempt = 0;
                    }
                    if attempt + 1 >= self.opts.max_attempts {
                        return Err(e);
                    }
                    let wait = self.backoff(attempt, e.retry_after())?;
                    tracing::debug!(
                        "blob {}: {e}; resuming from byte {} in {wait:?}",
                        desc.digest.short(),
                        out.offset()
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(RegistryError::Write { source, .. })
                    if source.kind() == std::io::ErrorKind::InvalidData =>
                {
                    // The content grew past its declared size: the registry is serving
                    // something else. Nothing resumable is left.
                    out.restart().map_err(write_err)?;
                    return Err(RegistryError::Protocol {
                        url: format!("{host}/{path}"),
                        reason: format!(
                            "blob {} is larger than the {} bytes its descriptor declares",
                            desc.digest, desc.size
                        ),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn blob_attempt(
        &self,
        host: &str,
        scope: &str,
        path: &str,
        desc: &Descriptor,
        out: &mut dyn ResumableWrite,
        progress: ProgressFn<'_>,
    ) -> Result<(), RegistryError> {
        let write_err = |source: std::io::Error| RegistryError::Write {
            digest: desc.digest.to_string(),
            source,
        };
        let offset = out.offset();
        let mut headers = HeaderMap::new();
        if offset > 0 {
            let v = HeaderValue::from_str(&format!("bytes={offset}-"))
                .map_err(|e| RegistryError::Config(e.to_string()))?;
            headers.insert(RANGE, v);
        }
        let mut resp = self.send(host, scope, Method::GET, path, headers).await?;
        let url = crate::error::redact(resp.url());
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let start = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(offset) {
                    // A range we did not ask for: take it from the top next time.
                    out.restart().map_err(write_err)?;
                    // Having restarted, the next attempt asks for the whole blob.
                    return Err(retryable(RegistryError::Protocol {
                        url,
                        reason: format!("asked for bytes from {offset}, got Content-Range starting at {start:?}"),
                    }));
                }
            }
            StatusCode::OK => {
                if offset > 0 {
                    tracing::debug!(
                        "{url} ignored Range; starting blob {} again",
                        desc.digest.short()
                    );
                    out.restart().map_err(write_err)?;
                    progress(0);
                }
            }
            other => {
                return Err(RegistryError::Protocol {
                    url,
                    reason: format!("unexpected status {other} for a blob"),
                });
            }
        }
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    out.append(&chunk).map_err(write_err)?;
                    progress(out.offset());
                }
                Ok(None) => break,
                Err(source) => {
                    return Err(RegistryError::Body {
                        url,
                        received: out.offset(),
                        source: source.without_url(),
                    })
                }
            }
        }
        if out.offset() < desc.size {
            // A clean end before the declared size: treat as a dropped connection.
            return Err(retryable(RegistryError::Protocol {
                url,
                reason: format!("the body ended at byte {} of {}", out.offset(), desc.size),
            }));
        }
        Ok(())
    }

    /// Whether blob `digest` exists in `repo` (HEAD), and its size.
    pub async fn blob_exists(
        &self,
        host: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let path = format!("v2/{repo}/blobs/{digest}");
        let scope = pull_scope(repo);
        match self
            .with_retries(|| self.send(host, &scope, Method::HEAD, &path, HeaderMap::new()))
            .await
        {
            // Not `content_length()`: that is the body's size hint, which is 0 for a HEAD.
            Ok(r) => Ok(r
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All tags of a repository, following `Link` pagination.
    pub async fn tags(&self, host: &str, repo: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut path = format!("v2/{repo}/tags/list?n=1000");
        for _ in 0..10_000 {
            let (body, next) = self.json_page(host, &pull_scope(repo), &path).await?;
            let t: Tags = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                url: path.clone(),
                reason: format!("bad tag list: {e}"),
            })?;
            out.extend(t.tags.unwrap_or_default());
            match next {
                Some(n) => path = n,
                None => break,
            }
        }
        Ok(out)
    }

    /// The repositories of a registry (`/v2/_catalog`), following pagination.
    pub async fn catalog(&self, host: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let mut out = Vec::new();
        let mut path = "v2/_catalog?n=1000".to_string();
        for _ in 0..10_000 {
            let (body, next) = self.json_page(host, "registry:catalog:*", &path).await?;
            let c: Catalog =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                    url: path.clone(),
                    reason: format!("bad catalog: {e}"),
                })?;
            out.extend(c.repositories);
            match next {
                Some(n) => path = n,
                None => break,
            }
        }
        Ok(out)
    }

    async fn json_page(
        &self,
        host: &str,
        scope: &str,
        path: &str,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        self.with_retries(|| async {
            let resp = self
                .send(host, scope, Method::GET, path, HeaderMap::new())
                .await?;
            let url = resp.url().clone();
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split(';').next())
                .map(|l| l.trim().trim_start_matches('<').trim_end_matches('>'))
                .map(|l| next_page_path(l, &url))
                .transpose()?;
            let body = read_body(resp, 64 * 1024 * 1024, &url).await?;
            Ok((body, next))
        })
        .await
    }
}

/// The path (and query) of a `Link` target. A link to another host is refused: following it
/// would send this registry's `Authorization` there.
fn next_page_path(link: &str, page: &url::Url) -> Result<String, RegistryError> {
    let target = page.join(link).map_err(|e| RegistryError::Protocol {
        url: crate::error::redact(page),
        reason: format!("bad pagination link: {e}"),
    })?;
    if !crate::client::same_origin(&target, page) {
        return Err(RegistryError::Protocol {
            url: crate::error::redact(page),
            reason: format!(
                "the pagination link points to another host ({})",
                crate::error::redact(&target)
            ),
        });
    }
    let mut path = target.path().trim_start_matches('/').to_string();
    if let Some(q) = target.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(path)
}

/// Mark a protocol hiccup as worth a retry by presenting it as a 503.
fn retryable(e: RegistryError) -> RegistryError {
    match e {
        RegistryError::Protocol { url, reason } => RegistryError::Status {
            method: "GET".into(),
            url,
            status: 503,
            codes: vec![crate::error::RegistryErrorCode {
                code: "INCOMPLETE".into(),
                message: reason,
            }],
            retry_after: None,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::next_page_path;

    #[test]
    fn pagination_links_stay_on_the_registry() {
        let page = url::Url::parse("https://reg.example/v2/_catalog?n=2").unwrap();
        assert_eq!(
            next_page_path("</v2/_catalog?n=2&last=b>".trim_matches(['<', '>']), &page).unwrap(),
            "v2/_catalog?n=2&last=b"
        );
        assert_eq!(
            next_page_path("https://reg.example/v2/_catalog?last=c", &page).unwrap(),
            "v2/_catalog?last=c"
        );
        let err = next_page_path("https://evil.example/v2/_catalog?last=c", &page)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another host"), "{err}");
        assert!(
            next_page_path("http://reg.example/v2/x", &page).is_err(),
            "a scheme change is another origin"
        );
    }
}
