//! `GET|HEAD /v2/<name>/manifests/<reference>`: the exact bytes upstream sent, with their
//! media type and digest. By digest a manifest is cached for ever (the store verifies it
//! against its digest); by tag, the tag's digest is trusted for `--tag-ttl`, one upstream
//! question at a time per repository and tag; when upstream fails (5xx, 429, no
//! connection) a tag already seen is answered with the digest it had.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;

use ferry_core::{Digest, Manifest, Reference};

use super::error::{Code, V2Error};
use super::name;
use crate::State;

/// The manifest `reference` (a tag or a digest) of `r`'s repository.
pub async fn serve(
    st: &Arc<State>,
    r: &Reference,
    reference: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, V2Error> {
    let mr = name::manifest_ref(r, reference)?;
    let (digest, bytes, media_type) = match mr.digest() {
        Some(d) => by_digest(st, &mr, d).await?,
        None => by_tag(st, &mr).await?,
    };
    st.mirror.learn_manifest(r, &digest, &bytes);
    // A mirror cannot convert a manifest (another format would have another digest, and
    // the client asked for upstream's content), so when the client's Accept lists neither
    // this media type nor a wildcard it gets MANIFEST_UNKNOWN, as distribution answers a
    // client that does not accept an index. No Accept at all accepts anything.
    if !accepts(headers, &media_type) {
        return Err(V2Error::new(
            404,
            Code::ManifestUnknown,
            format!(
                "the manifest is {media_type}, which the request's Accept header does not list"
            ),
        )
        .detail(reference.to_string()));
    }
    let len = bytes.len();
    let b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &media_type)
        .header(header::CONTENT_LENGTH, len)
        .header("docker-content-digest", digest.to_string())
        .header(header::ETAG, format!("\"{digest}\""));
    let body = if *method == Method::HEAD {
        Body::empty()
    } else {
        st.metrics.bytes_served.inc_by(len as u64);
        Body::from(bytes)
    };
    b.body(body)
        .map_err(|e| V2Error::new(500, Code::Unknown, e.to_string()))
}

fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut given = false;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let t = item.split(';').next().unwrap_or("").trim();
            if t.is_empty() {
                continue;
            }
            given = true;
            let (major, _) = media_type.split_once('/').unwrap_or((media_type, ""));
            if t.eq_ignore_ascii_case(media_type)
                || t == "*/*"
                || t.strip_suffix("/*")
                    .is_some_and(|m| m.eq_ignore_ascii_case(major))
            {
                return true;
            }
        }
    }
    !given
}

/// From the cache when this repository is known to hold it, else from upstream.
async fn by_digest(
    st: &Arc<State>,
    mr: &Reference,
    d: &Digest,
) -> Result<(Digest, Vec<u8>, String), V2Error> {
    if st.mirror.known(mr, d).is_some() {
        if let Some(hit) = cached(st, d).await {
            st.metrics.cache_hits.inc();
            return Ok(hit);
        }
    }
    upstream(st, mr).await
}

async fn by_tag(st: &Arc<State>, mr: &Reference) -> Result<(Digest, Vec<u8>, String), V2Error> {
    let slot = st.mirror.tag_slot(mr);
    let mut slot = slot.lock().await;
    if let Some((at, d)) = &*slot {
        if at.elapsed() < st.config.tag_ttl {
            if let Some(hit) = cached(st, d).await {
                st.metrics.cache_hits.inc();
                return Ok(hit);
            }
        }
    }
    // A stale tag whose manifest is still cached is checked with a HEAD first: Docker Hub
    // counts manifest GETs against its pull limit, not HEADs, and an unchanged tag needs
    // no bytes. (A HEAD's digest is only compared, never trusted for content: the bytes
    // served are the cached ones, verified against their digest.)
    if let Some((_, d)) = &*slot {
        let still = st
            .client_for(mr)
            .manifest_digest(mr.api_host(), mr.repository(), &mr.manifest_reference())
            .await;
        if still.as_ref().is_ok_and(|now| now == d) {
            if let Some(hit) = cached(st, d).await {
                st.metrics.cache_hits.inc();
                *slot = Some((Instant::now(), d.clone()));
                return Ok(hit);
            }
        }
    }
    let got = match upstream(st, mr).await {
        Ok(got) => got,
        // Upstream down or overloaded (not "no such tag", not "refused"): the digest the
        // tag had is better than a failed pull; it is asked again next time.
        Err(e) if e.status >= 500 || e.status == 429 => {
            if let Some((_, d)) = &*slot {
                if let Some(hit) = cached(st, d).await {
                    tracing::warn!(
                        "{}: serving the tag's cached digest; the registry failed: {e}",
                        mr.familiar()
                    );
                    return Ok(hit);
                }
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    *slot = Some((Instant::now(), got.0.clone()));
    Ok(got)
}

/// A stored manifest, read and verified against its digest; its media type from its own
/// `mediaType` (or its shape, for an OCI manifest without one), since the store keeps
/// bytes only. `None` when absent or unreadable: ask upstream.
async fn cached(st: &State, d: &Digest) -> Option<(Digest, Vec<u8>, String)> {
    let (store, dd) = (st.store().clone(), d.clone());
    let bytes = tokio::task::spawn_blocking(move || {
        if store.contains(&dd) {
            store.read_small(&dd).ok()
        } else {
            None
        }
    })
    .await
    .ok()
    .flatten()?;
    let m = Manifest::parse(&bytes, None).ok()?;
    Some((d.clone(), bytes, m.media_type().to_string()))
}

async fn upstream(st: &Arc<State>, mr: &Reference) -> Result<(Digest, Vec<u8>, String), V2Error> {
    let m = st.client_for(mr).manifest(mr).await.map_err(|e| {
        V2Error::upstream(&e, Code::ManifestUnknown).detail(mr.manifest_reference())
    })?;
    st.metrics.cache_misses.inc();
    let (store, d, b) = (st.store().clone(), m.digest.clone(), m.bytes.clone());
    tokio::task::spawn_blocking(move || store.put_verified(&d, &b))
        .await
        .map_err(|e| V2Error::new(500, Code::Unknown, e.to_string()))?
        .map_err(|e| {
            V2Error::new(
                500,
                Code::Unknown,
                format!("caching the manifest: {}", crate::error_chain(&e)),
            )
        })?;
    Ok((m.digest, m.bytes, m.media_type))
}
