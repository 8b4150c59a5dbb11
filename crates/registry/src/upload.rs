//! Blob uploads: cross-repository mount (in `mount`), monolithic PUT, chunked PATCHes (in
//! `patch`) resumed from the registry's offset (manifest PUT and DELETE are in
//! `manifest_write`).
//!
//! An upload is one session (`POST …/blobs/uploads/` → `Location`) that every request
//! continues with the `Location` the previous answer gave. A chunk cut short is not sent
//! again from the top: the session's status (`GET` → `Range: 0-N`) says what the registry
//! kept, and the body is reopened at `N + 1`. One retry budget covers the whole blob, and it
//! is renewed only when the registry confirms bytes beyond the furthest point so far.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Response};
use url::Url;

use ferry_core::Digest;

use crate::api::ProgressFn;
use crate::body::{BodySource, ByteStream, UploadBody};
use crate::client::Client;
use crate::error::{redact, RegistryError};
use crate::mount::Mount;
use crate::refusal::{explain, header_digest, not_redirected, Write};
use crate::scope::Scopes;

/// How a blob is uploaded.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Bodies of known size up to this are sent in one PUT; larger ones (and those of
    /// unknown size) in PATCH chunks of this size.
    pub chunk_size: u64,
    /// Repositories on the same registry that may hold the blob already: a mount from one
    /// of them is tried before any byte is sent.
    pub mount_from: Vec<String>,
}

/// The slowest a registry is expected to hash or copy a blob when an upload is committed.
const COMMIT_BYTES_PER_SEC: u64 = 16 * 1024 * 1024;

/// The default chunk size: 16 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 16 * 1024 * 1024;

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            mount_from: Vec::new(),
        }
    }
}

/// What [`Client::push_blob`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The registry mounted the blob from another repository: no byte was sent.
    Mounted { from: String },
    /// The blob was uploaded; `sent` counts the body bytes sent, retries included.
    Uploaded { sent: u64 },
}

/// Makes a request body, again for each send of the request.
type OpenFn<'a> = dyn FnMut() -> Result<ByteStream, RegistryError> + Send + 'a;

/// The upload session in progress.
pub(crate) struct Session {
    /// Where the next request goes (absolute, query kept).
    pub(crate) location: Url,
    /// Bytes the registry holds.
    pub(crate) offset: u64,
    /// The last request failed midway: ask the registry what it kept before going on.
    needs_status: bool,
}

/// What one blob's attempts share.
pub(crate) struct Run<'a> {
    pub(crate) host: &'a str,
    pub(crate) repo: &'a str,
    pub(crate) scopes: Scopes,
    pub(crate) body: &'a dyn UploadBody,
    pub(crate) chunk_size: u64,
    /// Body bytes sent, all attempts.
    sent: Arc<AtomicU64>,
    /// The registry refused PATCH: send the whole blob in one PUT.
    monolithic_only: bool,
}

impl Client {
    /// Upload `body` as a blob of `repo` on `host`, unless a mount from one of
    /// `opts.mount_from` gives it for free. Returns the digest, the size, and what was done.
    ///
    /// Retries within one budget of attempts, renewed only by bytes the registry confirms
    /// past the furthest point reached; a chunk cut short resumes from the registry's offset.
    /// A session the registry forgot (`BLOB_UPLOAD_UNKNOWN`) starts over from a new one, and
    /// a registry that refuses chunked uploads gets the whole blob in one PUT.
    pub async fn push_blob(
        &self,
        host: &str,
        repo: &str,
        body: &dyn UploadBody,
        opts: &UploadOptions,
        progress: ProgressFn<'_>,
    ) -> Result<(Digest, u64, Pushed), RegistryError> {
        // A registry that does not mount opens an upload session instead (202, as the
        // distribution spec asks): the upload goes on in the last such session, as docker's
        // and containerd's do, rather than leaving it to expire and opening another.
        let mut session: Option<Session> = None;
        if let Some(digest) = body.known_digest() {
            for from in opts.mount_from.iter().filter(|f| f.as_str() != repo) {
                // A mount is an optimisation: one refused for any reason (no access to the
                // source, say) leaves the upload to report what is really wrong.
                let mounted = match self.mount(host, repo, from, &digest).await {
                    Ok(Mount::Done) => true,
                    Ok(Mount::Session(location)) => {
                        if let Some(old) = session.take() {
                            self.cancel_session(host, repo, &old.location).await;
                        }
                        session = Some(Session {
                            location,
                            offset: 0,
                            needs_status: false,
                        });
                        false
                    }
                    Ok(Mount::Refused) => false,
                    Err(e) if e.is_connect() => return Err(e),
                    Err(e) => {
                        tracing::debug!("mounting {digest} from {from} failed: {e}");
                        false
                    }
                };
                if mounted {
                    if let Some(old) = session.take() {
                        self.cancel_session(host, repo, &old.location).await;
                    }
                    let size = match body.size() {
                        Some(s) => s,
                        None => self.blob_exists(host, repo, &digest).await?.unwrap_or(0),
                    };
                    progress(size);
                    return Ok((digest, size, Pushed::Mounted { from: from.clone() }));
                }
            }
        }
        let mut run = Run {
            host,
            repo,
            scopes: Scopes::push(repo),
            body,
            chunk_size: opts.chunk_size.max(1),
            sent: Arc::new(AtomicU64::new(0)),
            monolithic_only: false,
        };
        let mut attempt = 0u32;
        let mut furthest = 0u64;
        loop {
            let result = self.upload_attempt(&mut run, &mut session, progress).await;
            let err = match result {
                Ok((digest, size)) => {
                    progress(size);
                    let sent = run.sent.load(Ordering::Relaxed);
                    return Ok((digest, size, Pushed::Uploaded { sent }));
                }
                Err(e) => e,
            };
            if let Some(s) = &session {
                if s.offset > furthest {
                    furthest = s.offset;
                    attempt = 0;
                }
            }
            // A session that cannot say where it is (a registry without the status GET)
            // is as good as lost: start over rather than give up.
            let no_status =
                err.request().0 == "GET" && matches!(err.status(), Some(404 | 405 | 501));
            let restart =
                err.is_upload_unknown() || err.has_code("BLOB_UPLOAD_INVALID") || no_status;
            // A chunk the registry placed elsewhere than we counted: ask where it is.
            let resync = err.status() == Some(416);
            let chunks_refused = !run.monolithic_only && refuses_chunks(&err, &session);
            if chunks_refused {
                tracing::debug!(
                    "the registry refuses chunked uploads ({err}); sending the blob in one request"
                );
                run.monolithic_only = true;
                if let Some(old) = session.take() {
                    self.cancel_session(host, repo, &old.location).await;
                }
                continue;
            }
            if !(restart || resync || err.is_retryable()) || attempt + 1 >= self.opts.max_attempts {
                return Err(err);
            }
            if restart {
                // The commit may have gone through with its answer lost: then the blob is
                // there and nothing needs sending again.
                if let Some((digest, size)) = body.finished() {
                    if self.blob_exists(host, repo, &digest).await.ok().flatten() == Some(size) {
                        progress(size);
                        let sent = run.sent.load(Ordering::Relaxed);
                        return Ok((digest, size, Pushed::Uploaded { sent }));
                    }
                }
            }
            if restart || run.monolithic_only {
                // A whole-blob PUT always starts at byte 0, so it needs an empty session.
                session = None;
            } else if let Some(s) = &mut session {
                s.needs_status = true;
            }
            self.wait_before_retry(attempt, &err).await?;
            attempt += 1;
        }
    }

    /// One attempt: open (or continue) the session, send what the registry lacks, commit.
    async fn upload_attempt(
        &self,
        run: &mut Run<'_>,
        session: &mut Option<Session>,
        progress: ProgressFn<'_>,
    ) -> Result<(Digest, u64), RegistryError> {
        if session.is_none() {
            *session = Some(self.open_session(run).await?);
        }
        let s = session.as_mut().expect("session opened above");
        if s.needs_status {
            self.session_status(run, s).await?;
        }
        let size = run.body.size();
        let digest = run.body.known_digest();
        if run.monolithic_only {
            return self.put_whole(run, s, progress).await;
        }
        if let (Some(size), Some(_), 0) = (size, &digest, s.offset) {
            if size <= run.chunk_size {
                return self.put_whole(run, s, progress).await;
            }
        }
        self.send_chunks(run, s, progress).await?;
        let (digest, len) = run.body.finished().ok_or_else(|| RegistryError::Protocol {
            url: redact(&s.location),
            reason: "the body was read to its end but does not know its digest".into(),
        })?;
        self.commit(run, s, &digest, None).await?;
        Ok((digest, len))
    }

    /// `POST /v2/<repo>/blobs/uploads/`: a new session.
    async fn open_session(&self, run: &Run<'_>) -> Result<Session, RegistryError> {
        let path = format!("v2/{}/blobs/uploads/", run.repo);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .send(run.host, &run.scopes, Method::POST, &path, headers)
            .await
            .and_then(not_redirected)
            .map_err(|e| explain(e, run.host, run.repo, Write::Blob(None)))?;
        let location = self.location(run.host, &resp).await?;
        Ok(Session {
            location,
            offset: 0,
            needs_status: false,
        })
    }

    /// Ask the registry how much of the session it holds (`GET` → `Range: 0-N`).
    async fn session_status(&self, run: &Run<'_>, s: &mut Session) -> Result<(), RegistryError> {
        let resp = self
            .send(
                run.host,
                &run.scopes,
                Method::GET,
                s.location.as_str(),
                HeaderMap::new(),
            )
            .await
            .and_then(not_redirected)?;
        let held = range_end(resp.headers()).unwrap_or(0);
        if resp.headers().contains_key(reqwest::header::LOCATION) {
            s.location = self.location(run.host, &resp).await?;
        }
        tracing::debug!("the upload session holds {held} bytes; resuming there");
        s.offset = held;
        s.needs_status = false;
        Ok(())
    }

    /// The whole body in one `PUT ?digest=`: for a body that is small, or for a registry that
    /// refuses PATCH. A body whose digest is not known yet is read once to learn it.
    async fn put_whole(
        &self,
        run: &mut Run<'_>,
        s: &mut Session,
        progress: ProgressFn<'_>,
    ) -> Result<(Digest, u64), RegistryError> {
        let (digest, size) = match run.body.finished() {
            Some(f) => f,
            None => self.read_through(run.body, &s.location).await?,
        };
        let body = run.body;
        let location = s.location.clone();
        let mut open = || open_at(body, 0, &location);
        self.commit(
            run,
            s,
            &digest,
            Some((&mut open as &mut _, Some(size), progress)),
        )
        .await?;
        Ok((digest, size))
    }

    /// Read `body` to its end, so that it knows its digest.
    async fn read_through(
        &self,
        body: &dyn UploadBody,
        url: &Url,
    ) -> Result<(Digest, u64), RegistryError> {
        use futures_util::StreamExt;
        let mut stream = open_at(body, 0, url)?;
        while let Some(piece) = stream.next().await {
            piece.map_err(|source| RegistryError::Source {
                url: redact(url),
                source,
            })?;
        }
        body.finished().ok_or_else(|| RegistryError::Protocol {
            url: redact(url),
            reason: "the body was read to its end but does not know its digest".into(),
        })
    }

    /// `PUT <location>?digest=`: with the body (a monolithic upload), or empty after chunks.
    async fn commit(
        &self,
        run: &mut Run<'_>,
        s: &mut Session,
        digest: &Digest,
        body: Option<(&mut OpenFn<'_>, Option<u64>, ProgressFn<'_>)>,
    ) -> Result<(), RegistryError> {
        let mut url = s.location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let mut headers = HeaderMap::new();
        let resp = match body {
            Some((open, size, progress)) => {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                if let Some(size) = size {
                    headers.insert(CONTENT_LENGTH, header_value(&size.to_string()));
                }
                self.send_tracked(run, Method::PUT, url.as_str(), headers, open, 0, progress)
                    .await
            }
            None => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                let wait = self.commit_wait(s.offset);
                let (host, scopes) = (run.host, &run.scopes);
                self.send_waiting(host, scopes, Method::PUT, url.as_str(), headers, None, wait)
                    .await
            }
        }
        .and_then(not_redirected)
        .map_err(|e| explain(e, run.host, run.repo, Write::Blob(Some(digest))))?;
        if let Some(d) = header_digest(&resp) {
            if d != *digest {
                return Err(RegistryError::Protocol {
                    url: redact(resp.url()),
                    reason: format!("the registry stored the blob as {d}, not {digest}"),
                });
            }
        }
        Ok(())
    }

    /// How long the commit of a `size`-byte upload may take to be answered: the request
    /// deadline, plus a second per 16 MiB, as a registry may hash or copy the whole blob
    /// before it answers (distribution on S3 storage does both for a large one).
    fn commit_wait(&self, size: u64) -> std::time::Duration {
        self.opts.request_timeout + std::time::Duration::from_secs(size / COMMIT_BYTES_PER_SEC)
    }

    /// Send a request with a body, telling `progress` the blob offset reached as the body
    /// goes (`base` plus what this request has sent).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_tracked(
        &self,
        run: &Run<'_>,
        method: Method,
        url: &str,
        headers: HeaderMap,
        open: &mut OpenFn<'_>,
        base: u64,
        progress: ProgressFn<'_>,
    ) -> Result<Response, RegistryError> {
        let before = run.sent.load(Ordering::Relaxed);
        let mut src = BodySource {
            open,
            sent: run.sent.clone(),
        };
        // A whole-blob PUT is a commit too: its answer may wait for the blob to be hashed.
        let wait = if method == Method::PUT {
            let len = headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            self.commit_wait(len.unwrap_or(0))
        } else {
            self.opts.request_timeout
        };
        let (host, scopes) = (run.host, &run.scopes);
        let sending = self.send_waiting(host, scopes, method, url, headers, Some(&mut src), wait);
        tokio::pin!(sending);
        loop {
            tokio::select! {
                r = &mut sending => return r,
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                    progress(base + run.sent.load(Ordering::Relaxed).saturating_sub(before));
                }
            }
        }
    }

    /// The absolute upload URL an answer's `Location` names (relative or absolute, query
    /// kept).
    pub(crate) async fn location(&self, host: &str, resp: &Response) -> Result<Url, RegistryError> {
        let base = self.registry(host).await?.base.clone();
        let value = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                url: redact(resp.url()),
                reason: "the upload answer has no Location".into(),
            })?;
        let location = resp
            .url()
            .join(value)
            .or_else(|_| base.join(value))
            .map_err(|e| RegistryError::Protocol {
                url: redact(resp.url()),
                reason: format!("the upload Location is not a URL: {e}"),
            })?;
        if downgrades(&base, &location) {
            return Err(RegistryError::Protocol {
                url: redact(resp.url()),
                reason: format!(
                    "the registry named a plain-HTTP upload URL ({}) although it is reached over HTTPS; ferry does not send image data unencrypted",
                    redact(&location)
                ),
            });
        }
        Ok(location)
    }
}

/// A `Location` that would move an upload from HTTPS to plain HTTP (a registry behind a TLS
/// proxy that does not say so, typically): the body would cross the network in the clear.
fn downgrades(base: &Url, location: &Url) -> bool {
    base.scheme() == "https" && location.scheme() == "http"
}

/// The session failed in a way that says the registry does not take PATCH: a 405 or 501,
/// or a 400/416 to the very first chunk (before any byte was accepted).
fn refuses_chunks(err: &RegistryError, session: &Option<Session>) -> bool {
    let Some(status) = err.status() else {
        return false;
    };
    if err.is_upload_unknown() || err.is_unauthorized() {
        return false;
    }
    let at_start = session.as_ref().is_none_or(|s| s.offset == 0);
    let (method, _) = err.request();
    method == "PATCH"
        && (matches!(status, 405 | 501) || (at_start && matches!(status, 400 | 411 | 416)))
}

/// A new stream of `body` from `offset`, its failure told as the source's.
pub(crate) fn open_at(
    body: &dyn UploadBody,
    offset: u64,
    url: &Url,
) -> Result<ByteStream, RegistryError> {
    body.open(offset).map_err(|source| RegistryError::Source {
        url: redact(url),
        source,
    })
}

pub(crate) fn header_value(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// How many bytes an upload answer's `Range: 0-N` says the registry holds (`N + 1`). `0-0`
/// is read as nothing held: distribution writes it for an empty session, and a single byte
/// sent again costs nothing.
pub(crate) fn range_end(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(reqwest::header::RANGE)?.to_str().ok()?;
    let v = v.trim().trim_start_matches("bytes=");
    let (start, end) = v.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    let end: u64 = end.trim().parse().ok()?;
    Some(if end == 0 { 0 } else { end + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(range: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(r) = range {
            h.insert(reqwest::header::RANGE, HeaderValue::from_str(r).unwrap());
        }
        h
    }

    #[test]
    fn an_upload_location_may_not_leave_https_for_http() {
        let https = Url::parse("https://r.example/").unwrap();
        let http = Url::parse("http://127.0.0.1:5000/").unwrap();
        let to = |s: &str| Url::parse(s).unwrap();
        assert!(downgrades(
            &https,
            &to("http://r.example/v2/a/blobs/uploads/1")
        ));
        assert!(!downgrades(
            &https,
            &to("https://up.example/v2/a/blobs/uploads/1")
        ));
        assert!(!downgrades(
            &http,
            &to("http://127.0.0.1:5000/v2/a/blobs/uploads/1")
        ));
    }

    #[test]
    fn the_range_of_an_upload_answer_says_how_much_is_held() {
        assert_eq!(range_end(&answer(Some("0-99"))), Some(100));
        assert_eq!(range_end(&answer(Some("bytes=0-99"))), Some(100));
        assert_eq!(range_end(&answer(Some("0-0"))), Some(0));
        assert_eq!(range_end(&answer(Some("5-99"))), None);
        assert_eq!(range_end(&answer(Some("0-x"))), None);
        assert_eq!(range_end(&answer(None)), None);
    }
}
