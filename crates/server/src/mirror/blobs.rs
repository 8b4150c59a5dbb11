//! `GET|HEAD /v2/<name>/blobs/<digest>`: a cached blob from the store, or one still
//! arriving read from its growing partial file as the fetch announces bytes. The last byte
//! of a response leaves only once the whole blob is verified: a blob that fails
//! verification cuts every response short, so no client ever completes a download of
//! wrong bytes.

use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::mpsc;

use ferry_core::{Descriptor, Digest, Reference};

use super::error::{Code, V2Error};
use super::fetch::{Fetch, Fetches};
use crate::http::{parse_range, Ask};
use crate::State;

/// The largest piece sent at once.
const CHUNK: u64 = 256 * 1024;

/// The blob `digest` of `r`'s repository.
pub async fn serve(
    st: &Arc<State>,
    r: &Reference,
    digest: &str,
    method: &Method,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<Response, V2Error> {
    let d: Digest = digest.parse().map_err(|_| {
        V2Error::new(400, Code::DigestInvalid, "the digest is not ALGORITHM:HEX")
            .detail(digest.chars().take(200).collect::<String>())
    })?;
    let size = size_in_repo(st, r, &d).await?;
    if let Some(max) = st.config.max_image_size {
        if size > max {
            return Err(V2Error::new(
                403,
                Code::Denied,
                format!("blob {d} is {size} bytes, more than this server's limit of {max} bytes (--max-image-size)"),
            ));
        }
    }
    let (status, start, end) = match parse_range(headers.get(header::RANGE), size) {
        Ask::Whole => (StatusCode::OK, 0, size),
        Ask::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e),
        Ask::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .header(header::CONTENT_LENGTH, 0)
                .body(Body::empty())
                .map_err(|e| V2Error::new(500, Code::Unknown, e.to_string()));
        }
    };
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", d.to_string())
        .header(header::ETAG, format!("\"{d}\""));
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    if *method == Method::HEAD || start == end {
        return b
            .body(Body::empty())
            .map_err(|e| V2Error::new(500, Code::Unknown, e.to_string()));
    }
    let slot = st.download_slot(peer).ok_or_else(|| {
        V2Error::busy(format!(
            "this address has {} downloads in progress already; let one finish first",
            st.config.max_downloads_per_client
        ))
    })?;
    let pin = st.store().pin(&d);
    let store = st.store().clone();
    let dd = d.clone();
    let cached = tokio::task::spawn_blocking(move || store.check(&dd, size))
        .await
        .map_err(|e| V2Error::new(500, Code::Unknown, e.to_string()))?
        .unwrap_or(false);
    let source = if cached {
        st.metrics.cache_hits.inc();
        Source::Cached
    } else {
        let desc = Descriptor::new("application/octet-stream", d.clone(), size);
        Source::Fetch(Fetches::join(st, r, desc)?)
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let job = Producer {
        st: st.clone(),
        digest: d,
        tx,
    };
    let gone = job.tx.clone();
    tokio::spawn(async move {
        let _held = (slot, pin);
        let work = async {
            match source {
                Source::Cached => job.cached(start, end).await,
                Source::Fetch(f) => job.arriving(&f, start, end).await,
            }
        };
        let r = tokio::select! {
            r = work => r,
            // The client left while this waited for bytes: free its slot and pin now, not
            // when the bytes arrive.
            _ = gone.closed() => Ok(()),
        };
        if let Err(e) = r {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::debug!("mirror blob {}: {e}", job.digest);
            }
            // Never blocks: with the channel full the body ends short all the same.
            let _ = job.tx.try_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    b.body(Body::from_stream(stream))
        .map_err(|e| V2Error::new(500, Code::Unknown, e.to_string()))
}

/// The blob's size, only if `r`'s repository is known to hold it: learnt from a manifest
/// the mirror served for that repository, or asked of the upstream repository (HEAD, and
/// remembered). A blob in the cache is never enough on its own: it may have been fetched
/// with credentials that reach a private repository.
async fn size_in_repo(st: &State, r: &Reference, d: &Digest) -> Result<u64, V2Error> {
    if let Some(size) = st.mirror.known(r, d) {
        return Ok(size);
    }
    let unknown = || {
        V2Error::new(
            404,
            Code::BlobUnknown,
            "the upstream repository has no such blob",
        )
        .detail(d.to_string())
    };
    let size = st
        .client_for(r)
        .blob_exists(r.api_host(), r.repository(), d)
        .await
        .map_err(|e| V2Error::upstream(&e, Code::BlobUnknown))?
        .ok_or_else(unknown)?;
    st.mirror.learn(r, d, size);
    Ok(size)
}

enum Source {
    Cached,
    Fetch(Arc<Fetch>),
}

/// One response's producer.
struct Producer {
    st: Arc<State>,
    digest: Digest,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl Producer {
    async fn send(&self, b: Vec<u8>) -> io::Result<()> {
        let n = b.len() as u64;
        match tokio::time::timeout(
            self.st.config.idle_timeout,
            self.tx.send(Ok(Bytes::from(b))),
        )
        .await
        {
            Ok(Ok(())) => {
                self.st.metrics.bytes_served.inc_by(n);
                Ok(())
            }
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for too long",
            )),
        }
    }

    /// From the store, verified first if this process has not served it yet.
    async fn cached(&self, start: u64, end: u64) -> io::Result<()> {
        let (store, d) = (self.st.store().clone(), self.digest.clone());
        let blob = tokio::task::spawn_blocking(move || store.open_served(&d, start))
            .await
            .map_err(io::Error::other)?
            .map_err(|e| io::Error::other(crate::error_chain(&e)))?
            .ok_or_else(|| io::Error::other("the blob left the cache; ask again"))?;
        let mut reader = blob.reader;
        let _pin = blob.pin;
        let mut pos = start;
        while pos < end {
            let want = (end - pos).min(CHUNK) as usize;
            let (r, got) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let got = reader.read_exact(&mut buf).map(|()| buf);
                (reader, got)
            })
            .await
            .map_err(io::Error::other)?;
            reader = r;
            self.send(got?).await?;
            pos += want as u64;
        }
        Ok(())
    }

    /// From the partial file while the fetch fills it, waiting (notified) for the bytes
    /// not there yet; the response's last byte only after the blob is verified.
    async fn arriving(&self, f: &Fetch, start: u64, end: u64) -> io::Result<()> {
        let mut rx = f.subscribe();
        let mut generation = rx.borrow().restarts;
        let mut file: Option<std::fs::File> = None;
        let mut pos = start;
        let mut sent = false;
        while pos < end {
            let (limit, done) = {
                let s = rx.borrow_and_update();
                if let Some(Err(e)) = &s.end {
                    return Err(io::Error::other(format!("fetching the blob failed: {e}")));
                }
                if s.restarts != generation {
                    if sent {
                        return Err(io::Error::other(
                            "the upstream download started over; resume with Range",
                        ));
                    }
                    generation = s.restarts;
                }
                let done = matches!(s.end, Some(Ok(())));
                let limit = if done { end } else { s.held.min(end - 1) };
                (limit, done)
            };
            if limit <= pos {
                rx.changed()
                    .await
                    .map_err(|_| io::Error::other("the blob's fetch stopped"))?;
                continue;
            }
            if file.is_none() {
                let store = self.st.store();
                // After the commit the partial is the blob (a rename): an open file stays
                // valid, and a late opener finds the blob.
                let opened = if done {
                    store.open_blob(&self.digest)
                } else {
                    store.open_partial(&self.digest)
                };
                match opened {
                    Ok(h) => file = Some(h),
                    Err(_) if !done => {
                        rx.changed()
                            .await
                            .map_err(|_| io::Error::other("the blob's fetch stopped"))?;
                        continue;
                    }
                    Err(e) => return Err(io::Error::other(crate::error_chain(&e))),
                }
            }
            let Some(h) = file.take() else { continue };
            let want = (limit - pos).min(CHUNK) as usize;
            let at = pos;
            let (h, got) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let mut n = 0;
                let r = loop {
                    match h.read_at(&mut buf[n..], at + n as u64) {
                        Ok(0) => break Ok(()),
                        Ok(k) => {
                            n += k;
                            if n == want {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(n);
                (h, r.map(|()| buf))
            })
            .await
            .map_err(io::Error::other)?;
            file = Some(h);
            let buf = got?;
            if buf.is_empty() {
                // The partial was cut back (a restart) under the read: look again.
                tokio::task::yield_now().await;
                continue;
            }
            pos += buf.len() as u64;
            self.send(buf).await?;
            sent = true;
        }
        Ok(())
    }
}
