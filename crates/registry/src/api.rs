//! The API calls: manifests, blobs (streamed, verified, resumed), tags and the catalog.

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};

use ferry_core::{media, Descriptor, Digest, Manifest, Reference, ResumableWrite, Verifier};

use crate::client::{read_body, Client};
use crate::error::RegistryError;
use crate::mirror::Route;
use crate::scope::Scopes;

/// Manifests larger than this are refused (distribution's own limit).
const MAX_MANIFEST: usize = ferry_core::MAX_SMALL_BLOB as usize;

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

/// Progress of one blob: bytes held so far (a download), or the offset of the blob the
/// upload has reached (an upload; it may go back after a restart).
pub type ProgressFn<'a> = &'a (dyn Fn(u64) + Send + Sync);

fn pull_scope(repo: &str) -> Scopes {
    Scopes::pull(repo)
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
    /// Mirrors of `host` are asked first ([`crate::mirror`]).
    pub async fn manifest_at(
        &self,
        host: &str,
        repo: &str,
        tag_or_digest: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        let routes = self.routes(host);
        let mut i = 0;
        loop {
            let c = self.for_route(&routes, i);
            match c
                .manifest_via(host, &routes[i], repo, tag_or_digest, expected)
                .await
            {
                Err(e) if self.next_route(host, repo, &routes, i, &e) => i += 1,
                r => return r,
            }
        }
    }

    /// [`Client::manifest_at`] along one route.
    async fn manifest_via(
        &self,
        host: &str,
        route: &Route,
        repo: &str,
        tag_or_digest: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        let path = route.path(&format!("v2/{repo}/manifests/{tag_or_digest}"));
        let host_key = route.key.as_str();
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(media::MANIFEST_ACCEPT));
        let scope = pull_scope(repo);
        let (bytes, content_type, header_digest) = self
            .with_retries(|| async {
                // One deadline for the headers and the body together: a registry that
                // trickles a manifest a byte at a time must not hold a pull forever.
                let until = tokio::time::Instant::now() + self.opts.request_timeout;
                let resp = self
                    .send(host_key, &scope, Method::GET, &path, headers.clone())
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
                if let Some(len) = resp.content_length().filter(|&l| l > MAX_MANIFEST as u64) {
                    return Err(too_large(&url, format!("{len} bytes")));
                }
                let body = self
                    .deadline_until(until, "GET", &url, read_body(resp, MAX_MANIFEST + 1, &url))
                    .await?;
                if body.len() > MAX_MANIFEST {
                    // Reading stopped one byte past the limit: the true size is not known.
                    return Err(too_large(&url, format!("{} bytes or more", body.len())));
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
        Manifest::refuse_schema1(&bytes, content_type.as_deref()).map_err(|error| {
            RegistryError::Manifest {
                reference: where_.clone(),
                error,
            }
        })?;
        let mut v = Verifier::new(digest.clone(), Some(bytes.len() as u64));
        v.update(&bytes)?;
        v.finish()?;
        let manifest = Manifest::parse(&bytes, content_type.as_deref()).map_err(|error| {
            RegistryError::Manifest {
                reference: where_,
                error,
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

    /// The digest of manifest `tag_or_digest` of `repo` on `host`, from the
    /// `Docker-Content-Digest` of a HEAD: Docker Hub counts manifest GETs against its pull
    /// rate limit, not HEADs. A registry that sends no such header (or does not allow HEAD)
    /// is asked with a GET, and the digest is that of the bytes. A HEAD's digest is the
    /// registry's word, not verified: use it to compare, not to trust content.
    pub async fn manifest_digest(
        &self,
        host: &str,
        repo: &str,
        tag_or_digest: &str,
    ) -> Result<Digest, RegistryError> {
        let path = format!("v2/{repo}/manifests/{tag_or_digest}");
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(media::MANIFEST_ACCEPT));
        let scope = pull_scope(repo);
        let routes = self.routes(host);
        let mut i = 0;
        let header = loop {
            let (c, route) = (self.for_route(&routes, i), &routes[i]);
            let path = route.path(&path);
            let head = c
                .with_retries(|| c.send(&route.key, &scope, Method::HEAD, &path, headers.clone()))
                .await;
            match head {
                Ok(resp) => {
                    break resp
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<Digest>().ok())
                }
                Err(e) if e.status() == Some(405) => break None,
                Err(e) if self.next_route(host, repo, &routes, i, &e) => i += 1,
                Err(e) => return Err(e),
            }
        };
        match header {
            Some(d) => Ok(d),
            None => Ok(self
                .manifest_at(host, repo, tag_or_digest, None)
                .await?
                .digest),
        }
    }

    /// Download small blob `desc` of `repo` (an image config) into memory and verify its
    /// size and digest. Refused before any request when `desc` declares more than
    /// [`ferry_core::MAX_SMALL_BLOB`]; retried and resumed as [`Client::blob_into`] is.
    pub async fn blob_small(
        &self,
        host: &str,
        repo: &str,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        if desc.size > ferry_core::MAX_SMALL_BLOB {
            return Err(RegistryError::Protocol {
                url: format!("{host}/v2/{repo}/blobs/{}", desc.digest),
                reason: format!(
                    "the blob is {} bytes; {}",
                    desc.size,
                    ferry_core::MAX_SMALL_BLOB_RULE
                ),
            });
        }
        let mut out = SmallBlob {
            bytes: Vec::with_capacity(desc.size as usize),
            cap: desc.size,
        };
        self.blob_into(host, repo, desc, &mut out, &|_| {}).await?;
        let mut v = Verifier::new(desc.digest.clone(), Some(desc.size));
        v.update(&out.bytes)?;
        v.finish()?;
        Ok(out.bytes)
    }

    /// Download blob `desc` of `repo` into `out`, verifying size and digest as bytes arrive.
    ///
    /// Starts at `out.offset()` (bytes a previous attempt left), asks for the rest with
    /// `Range`, and on a dropped or stalled connection, a 5xx or a 429 waits and continues
    /// from the byte where it stopped. A server that ignores `Range` makes `out` start over;
    /// one that answers with a `Content-Range` other than the one asked for makes it start
    /// over once, then fails. Failed attempts are counted only while no byte beyond the
    /// furthest point reached so far arrives, so a slow link that drops often still
    /// finishes, and a server that keeps forcing restarts does not loop forever. The caller
    /// commits `out` (the final digest check) afterwards.
    ///
    /// Mirrors of `host` are asked first ([`crate::mirror`]); the next endpoint goes on from
    /// the bytes the last one left in `out`.
    pub async fn blob_into(
        &self,
        host: &str,
        repo: &str,
        desc: &Descriptor,
        out: &mut dyn ResumableWrite,
        progress: ProgressFn<'_>,
    ) -> Result<(), RegistryError> {
        let routes = self.routes(host);
        let mut i = 0;
        loop {
            let c = self.for_route(&routes, i);
            // A mirror with another endpoint after it is checked here, when the whole blob
            // comes from it: wrong bytes fall back instead of failing the caller's check.
            let check = routes[i].is_mirror() && i + 1 < routes.len() && out.offset() == 0;
            let result = if check {
                let mut checked = CheckedWrite::new(out, desc);
                let r = c
                    .blob_via(host, &routes[i], repo, desc, &mut checked, progress)
                    .await;
                match r {
                    Ok(()) => checked.verify(),
                    Err(e) => Err(e),
                }
            } else {
                c.blob_via(host, &routes[i], repo, desc, out, progress)
                    .await
            };
            match result {
                Err(e) if self.next_route(host, repo, &routes, i, &e) => i += 1,
                r => return r,
            }
        }
    }

    /// [`Client::blob_into`] along one route.
    async fn blob_via(
        &self,
        host: &str,
        route: &Route,
        repo: &str,
        desc: &Descriptor,
        out: &mut dyn ResumableWrite,
        progress: ProgressFn<'_>,
    ) -> Result<(), RegistryError> {
        let scope = pull_scope(repo);
        let path = route.path(&format!("v2/{repo}/blobs/{}", desc.digest));
        let write_err = |source: std::io::Error| RegistryError::Write {
            digest: desc.digest.to_string(),
            source,
        };
        let mut attempt = 0u32;
        let mut furthest = out.offset();
        let mut run = BlobRun::default();
        loop {
            let offset = out.offset();
            progress(offset);
            if offset == desc.size {
                return Ok(());
            }
            let result = self
                .blob_attempt(&route.key, &scope, &path, desc, out, progress, &mut run)
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() => {
                    // Only new bytes are progress: bytes fetched again after a restart are
                    // not, nor is a trickle below the minimum rate (or a server crawling
                    // along at a byte a second would be retried for ever).
                    let stalled = matches!(e, RegistryError::Stalled { .. });
                    if out.offset() > furthest && !stalled {
                        attempt = 0;
                    }
                    furthest = furthest.max(out.offset());
                    if attempt + 1 >= self.opts.max_attempts {
                        return Err(e);
                    }
                    self.wait_before_retry(attempt, &e).await?;
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

    #[allow(clippy::too_many_arguments)]
    async fn blob_attempt(
        &self,
        host: &str,
        scope: &Scopes,
        path: &str,
        desc: &Descriptor,
        out: &mut dyn ResumableWrite,
        progress: ProgressFn<'_>,
        run: &mut BlobRun,
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
                let header = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                if let Err(why) = check_content_range(header.as_deref(), offset, desc.size) {
                    // Bytes that are not the ones asked for: take the blob from the top, once.
                    out.restart().map_err(write_err)?;
                    progress(0);
                    if run.restarted_for_range {
                        return Err(RegistryError::Protocol {
                            url,
                            reason: format!(
                                "the registry answers a range request with {why}, even after starting over; it does not serve ranges correctly"
                            ),
                        });
                    }
                    run.restarted_for_range = true;
                    return Err(RegistryError::Incomplete {
                        url,
                        reason: format!(
                            "asked for bytes from {offset}, got {why}; starting the blob over"
                        ),
                        received: 0,
                    });
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
        self.read_blob_body(&mut resp, &url, desc, out, progress)
            .await?;
        if out.offset() < desc.size {
            // A clean end before the declared size: treat as a dropped connection.
            return Err(RegistryError::Incomplete {
                reason: format!("the body ended at byte {} of {}", out.offset(), desc.size),
                url,
                received: out.offset(),
            });
        }
        Ok(())
    }

    /// Copy a blob body into `out`, failing as [`RegistryError::Stalled`] when fewer than
    /// `stall_min_bytes` arrive in any `stall_timeout` window: a minimum throughput rather
    /// than an idle timeout, so a server trickling a byte a second is caught too.
    async fn read_blob_body(
        &self,
        resp: &mut reqwest::Response,
        url: &str,
        desc: &Descriptor,
        out: &mut dyn ResumableWrite,
        progress: ProgressFn<'_>,
    ) -> Result<(), RegistryError> {
        let window = self.opts.stall_timeout;
        let min_bytes = self.opts.stall_min_bytes;
        let mut window_end = tokio::time::Instant::now() + window;
        let mut window_bytes = 0u64;
        // With `offload_writes`, chunks are gathered and written BATCH bytes at a time off
        // the async worker (block_in_place costs a thread hand-off: too much per 16 KiB
        // frame). Without, each chunk is written as it comes, on the worker.
        let offload = self.opts.offload_writes;
        let threshold = if offload { BATCH } else { 0 };
        let mut batch = Batch::default();
        let write = |batch: &mut Batch, out: &mut dyn ResumableWrite| {
            batch
                .write_to(out, offload)
                .map_err(|source| RegistryError::Write {
                    digest: desc.digest.to_string(),
                    source,
                })
        };
        loop {
            // `chunk()` only polls the body for its next frame: dropping it at the timeout
            // loses nothing.
            match tokio::time::timeout_at(window_end, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    window_bytes += chunk.len() as u64;
                    batch.push(chunk);
                    if batch.len >= threshold {
                        write(&mut batch, out)?;
                        progress(out.offset());
                    }
                }
                Ok(Ok(None)) => {
                    write(&mut batch, out)?;
                    progress(out.offset());
                    return Ok(());
                }
                Ok(Err(error)) => {
                    // What arrived before the drop is kept: the resume starts after it.
                    write(&mut batch, out)?;
                    return Err(RegistryError::Body {
                        url: url.to_string(),
                        received: out.offset(),
                        error: error.without_url(),
                    });
                }
                Err(_) => {}
            }
            let now = tokio::time::Instant::now();
            if now >= window_end {
                if window_bytes < min_bytes {
                    write(&mut batch, out)?;
                    return Err(RegistryError::Stalled {
                        url: url.to_string(),
                        received: out.offset(),
                        min_bytes,
                        window,
                    });
                }
                window_end = now + window;
                window_bytes = 0;
            }
        }
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
            let (body, next) = self.json_page(host, &Scopes::catalog(), &path).await?;
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
        scope: &Scopes,
        path: &str,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        self.with_retries(|| async {
            let until = tokio::time::Instant::now() + self.opts.request_timeout;
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
            let body = self
                .deadline_until(until, "GET", &url, read_body(resp, 64 * 1024 * 1024, &url))
                .await?;
            Ok((body, next))
        })
        .await
    }
}

/// A download target that hashes what goes through it from byte 0, so a blob from a mirror
/// is checked before it is handed on (the caller checks it again on commit).
struct CheckedWrite<'a> {
    inner: &'a mut dyn ResumableWrite,
    verifier: Verifier,
    desc: &'a Descriptor,
}

impl<'a> CheckedWrite<'a> {
    fn new(inner: &'a mut dyn ResumableWrite, desc: &'a Descriptor) -> CheckedWrite<'a> {
        CheckedWrite {
            inner,
            verifier: Verifier::new(desc.digest.clone(), Some(desc.size)),
            desc,
        }
    }

    /// Check the whole blob; on a mismatch the bytes are dropped (the next endpoint starts
    /// from byte 0) and the error is the verification failure.
    fn verify(self) -> Result<(), RegistryError> {
        match self.verifier.finish() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inner
                    .restart()
                    .map_err(|source| RegistryError::Write {
                        digest: self.desc.digest.to_string(),
                        source,
                    })?;
                Err(e.into())
            }
        }
    }
}

impl ResumableWrite for CheckedWrite<'_> {
    fn offset(&self) -> u64 {
        self.inner.offset()
    }

    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.append(buf)?;
        // A size overrun is the inner target's to report (it knows the declared size).
        let _ = self.verifier.update(buf);
        Ok(())
    }

    fn restart(&mut self) -> std::io::Result<()> {
        self.inner.restart()?;
        self.verifier = Verifier::new(self.desc.digest.clone(), Some(self.desc.size));
        Ok(())
    }
}

/// An in-memory download target that refuses to grow past its declared size.
struct SmallBlob {
    bytes: Vec<u8>,
    cap: u64,
}

impl ResumableWrite for SmallBlob {
    fn offset(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.bytes.len() as u64 + buf.len() as u64 > self.cap {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the blob is larger than its descriptor declares",
            ));
        }
        self.bytes.extend_from_slice(buf);
        Ok(())
    }

    fn restart(&mut self) -> std::io::Result<()> {
        self.bytes.clear();
        Ok(())
    }
}

/// A manifest refused for its size (`size` as "N bytes").
fn too_large(url: &url::Url, size: String) -> RegistryError {
    RegistryError::Protocol {
        url: crate::error::redact(url),
        reason: format!(
            "the manifest is {size}; {}",
            ferry_core::MAX_SMALL_BLOB_RULE
        ),
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

/// What one [`Client::blob_into`] remembers across its attempts.
#[derive(Default)]
struct BlobRun {
    /// A bad `Content-Range` already made the blob start over once.
    restarted_for_range: bool,
}

/// Check a 206's `Content-Range` against the open range `bytes=offset-` asked for a blob of
/// `size` bytes: exactly `bytes START-END/TOTAL` with START the offset, END the last byte
/// and TOTAL the size (or `*`, unknown). `Err` says what came instead.
fn check_content_range(header: Option<&str>, offset: u64, size: u64) -> Result<(), String> {
    let Some(value) = header else {
        return Err("no Content-Range".into());
    };
    let shown = || format!("Content-Range {value:?}");
    let spec = value.strip_prefix("bytes ").ok_or_else(shown)?;
    let (range, total) = spec.split_once('/').ok_or_else(shown)?;
    let (start, end) = range.split_once('-').ok_or_else(shown)?;
    let num = |v: &str| {
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse::<u64>().ok())
            .flatten()
    };
    let (Some(start), Some(end)) = (num(start), num(end)) else {
        return Err(shown());
    };
    let total_ok = total == "*" || num(total) == Some(size);
    if start != offset || Some(end) != size.checked_sub(1) || !total_ok {
        return Err(shown());
    }
    Ok(())
}

/// Bytes gathered from a blob body before they are written at once (see [`Batch`]).
const BATCH: usize = 512 * 1024;

/// Body frames received but not yet written to the blob's writer.
#[derive(Default)]
struct Batch {
    chunks: Vec<bytes::Bytes>,
    len: usize,
}

impl Batch {
    fn push(&mut self, chunk: bytes::Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// Append every gathered frame to `out`, in order; off the async workers if `offload`.
    fn write_to(&mut self, out: &mut dyn ResumableWrite, offload: bool) -> std::io::Result<()> {
        if self.chunks.is_empty() {
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.chunks);
        self.len = 0;
        let mut write = || chunks.iter().try_for_each(|c| out.append(c));
        if offload {
            off_workers(write)
        } else {
            write()
        }
    }
}

/// Run blocking work (a chunk's file write and hashing in the store's ingest) without
/// holding up the async workers: on a multi-threaded runtime the worker hands its other tasks
/// to another thread for the duration, so request handlers on the same runtime stay
/// responsive while a slow disk is written. A current-thread runtime cannot hand off, so the
/// work runs in place there. Order and the writer's offset stay exactly as if called directly.
fn off_workers<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_content_range, next_page_path};

    #[test]
    fn content_range_is_checked_strictly() {
        assert_eq!(
            check_content_range(Some("bytes 10-99/100"), 10, 100),
            Ok(())
        );
        assert_eq!(check_content_range(Some("bytes 10-99/*"), 10, 100), Ok(()));
        for bad in [
            "bytes 0-99/100",
            "bytes=10-99/100",
            "bytes 10-98/100",
            "bytes 10-99/101",
            "bytes 10-/100",
            "bytes +10-99/100",
            "items 10-99/100",
            "bytes 10-99",
        ] {
            assert_eq!(
                check_content_range(Some(bad), 10, 100),
                Err(format!("Content-Range {bad:?}")),
                "{bad}"
            );
        }
        assert_eq!(
            check_content_range(None, 10, 100),
            Err("no Content-Range".into())
        );
    }

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
