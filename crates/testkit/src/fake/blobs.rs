//! Blob serving for the fake registry: `Range` requests, streamed bodies, and the blob
//! faults (429, 503, redirects, flipped bytes, mid-body connection drops, throttling).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use ferry_core::Digest;

use super::handlers::{error, set_header};
use super::{Fault, State};

/// How long a dropped body waits before failing, so the bytes before the drop are flushed.
const DROP_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// Serve a blob GET or HEAD on the main listener, applying the configured faults.
pub(crate) fn serve(
    st: &mut State,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response {
    let Ok(digest) = digest.parse::<Digest>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            &format!("{digest:?} is not a valid digest"),
        );
    };
    if !head {
        if let Some(resp) = take_status_fault(st) {
            return resp;
        }
    }
    let bytes = match stored_blob(st, name, &digest) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if head {
        return body_response(
            bytes,
            &digest,
            headers,
            BodyOpts {
                head: true,
                ..BodyOpts::default()
            },
        );
    }
    if st.faults.iter().any(|f| matches!(f, Fault::RedirectBlobs)) {
        let location = format!(
            "http://localhost:{}/{name}/blobs/{digest}",
            st.redirect_addr.port()
        );
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        set_header(&mut resp, "location", &location);
        set_header(&mut resp, "content-length", "0");
        return resp;
    }
    let mut opts = BodyOpts {
        sent: Some(st.body_bytes.clone()),
        ..BodyOpts::default()
    };
    let mut bytes = bytes;
    for fault in st.faults.iter_mut() {
        match fault {
            Fault::WrongDigest { digest: d } if *d == digest && !bytes.is_empty() => {
                let mut v = bytes.to_vec();
                let mid = v.len() / 2;
                v[mid] ^= 0xff;
                bytes = Bytes::from(v);
            }
            Fault::NoRange => opts.no_range = true,
            Fault::ContentRangeFromZero => opts.range_from_zero = true,
            Fault::ContentRangeBytesEquals => opts.range_bytes_equals = true,
            Fault::Throttle { bytes_per_sec } => opts.bytes_per_sec = Some((*bytes_per_sec).max(1)),
            Fault::ThrottleBlob {
                digest: d,
                bytes_per_sec,
            } if *d == digest => opts.bytes_per_sec = Some((*bytes_per_sec).max(1)),
            Fault::DropAfter {
                digest: d,
                after,
                times,
            } if *times > 0
                && opts.drop_after.is_none()
                && d.as_ref().is_none_or(|d| *d == digest) =>
            {
                *times -= 1;
                opts.drop_after = Some(*after);
            }
            _ => {}
        }
    }
    body_response(bytes, &digest, headers, opts)
}

/// Serve a blob on the redirect listener: no auth, no faults, `Range` honoured.
pub(crate) fn serve_plain(
    st: &State,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response {
    let Ok(digest) = digest.parse::<Digest>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "not a valid digest",
        );
    };
    let bytes = match stored_blob(st, name, &digest) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    body_response(
        bytes,
        &digest,
        headers,
        BodyOpts {
            head,
            ..BodyOpts::default()
        },
    )
}

/// A pending 429 or 503 fault, consumed by this GET.
fn take_status_fault(st: &mut State) -> Option<Response> {
    for fault in st.faults.iter_mut() {
        match fault {
            Fault::TooManyRequests {
                times,
                retry_after_secs,
            } if *times > 0 => {
                *times -= 1;
                let mut resp = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOOMANYREQUESTS",
                    "rate limited by the fake",
                );
                set_header(&mut resp, "retry-after", &retry_after_secs.to_string());
                return Some(resp);
            }
            Fault::ServerError { times } if *times > 0 => {
                *times -= 1;
                return Some(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "injected server error",
                ));
            }
            _ => {}
        }
    }
    None
}

#[derive(Debug, Default, Clone)]
struct BodyOpts {
    head: bool,
    no_range: bool,
    drop_after: Option<u64>,
    bytes_per_sec: Option<u64>,
    range_from_zero: bool,
    range_bytes_equals: bool,
    /// Counts the body bytes sent.
    sent: Option<Arc<AtomicU64>>,
}

/// Parse a single `bytes=N-`, `bytes=N-M` or `bytes=-N` range against `len`.
/// `None`: no usable range header (serve everything); `Some(Err(()))`: unsatisfiable.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        let suffix: u64 = end.parse().ok()?;
        if suffix == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(suffix), len - 1)));
    }
    let start: u64 = start.parse().ok()?;
    let end: u64 = if end.is_empty() {
        u64::MAX
    } else {
        end.parse().ok()?
    };
    if end < start {
        return None;
    }
    if start >= len {
        return Some(Err(()));
    }
    Some(Ok((start, end.min(len - 1))))
}

fn body_response(bytes: Bytes, digest: &Digest, headers: &HeaderMap, opts: BodyOpts) -> Response {
    let total = bytes.len() as u64;
    let range = if opts.no_range {
        None
    } else {
        headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_range(v, total))
    };
    let (status, data, start) = match range {
        None => (StatusCode::OK, bytes, None),
        Some(Err(())) => {
            let mut resp = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_INVALID",
                "range not satisfiable",
            );
            set_header(&mut resp, "content-range", &format!("bytes */{total}"));
            return resp;
        }
        Some(Ok((start, end))) => {
            let start = if opts.range_from_zero { 0 } else { start };
            (
                StatusCode::PARTIAL_CONTENT,
                bytes.slice(start as usize..=end as usize),
                Some(start),
            )
        }
    };
    let len = data.len();
    let unit = if opts.range_bytes_equals {
        "bytes="
    } else {
        "bytes "
    };
    let content_range =
        start.map(|start| format!("{unit}{start}-{}/{total}", start + len as u64 - 1));
    let body = if opts.head {
        Body::empty()
    } else {
        stream_body(data, opts.drop_after, opts.bytes_per_sec, opts.sent)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    set_header(&mut resp, "content-type", "application/octet-stream");
    set_header(&mut resp, "content-length", &len.to_string());
    set_header(&mut resp, "docker-content-digest", &digest.to_string());
    set_header(&mut resp, "accept-ranges", "bytes");
    set_header(&mut resp, "etag", &format!("\"{digest}\""));
    if let Some(cr) = content_range {
        set_header(&mut resp, "content-range", &cr);
    }
    resp
}

struct StreamState {
    data: Bytes,
    pos: usize,
    limit: usize,
    chunk: usize,
    drop: bool,
    bytes_per_sec: Option<u64>,
    sent: Option<Arc<AtomicU64>>,
}

/// A streamed body: chunks (paced when throttled), and an `io::Error` after `drop_after`
/// bytes so hyper aborts the connection short of the announced `Content-Length`.
pub(crate) fn stream_body(
    data: Bytes,
    drop_after: Option<u64>,
    bytes_per_sec: Option<u64>,
    sent: Option<Arc<AtomicU64>>,
) -> Body {
    let limit = drop_after.map_or(data.len(), |a| (a as usize).min(data.len()));
    let chunk = match bytes_per_sec {
        Some(bps) => (bps / 20).clamp(1, 16 * 1024) as usize,
        None => 64 * 1024,
    };
    let state = StreamState {
        data,
        pos: 0,
        limit,
        chunk,
        drop: drop_after.is_some(),
        bytes_per_sec,
        sent,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if s.pos < s.limit {
            let end = (s.pos + s.chunk).min(s.limit);
            if let Some(bps) = s.bytes_per_sec {
                let nanos = (end - s.pos) as u128 * 1_000_000_000 / bps as u128;
                tokio::time::sleep(Duration::from_nanos(nanos as u64)).await;
            }
            let piece = s.data.slice(s.pos..end);
            if let Some(sent) = &s.sent {
                sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
            s.pos = end;
            Some((Ok(piece), s))
        } else if s.drop {
            s.drop = false;
            tokio::time::sleep(DROP_FLUSH_DELAY).await;
            let err = std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "fake registry: injected connection drop",
            );
            Some((Err(err), s))
        } else {
            None
        }
    });
    Body::from_stream(stream)
}

/// The bytes of blob `digest` in repository `name`, or the registry's 404.
// A test fake: the 404 response is the natural error value, and its size does not matter.
#[allow(clippy::result_large_err)]
fn stored_blob(st: &State, name: &str, digest: &Digest) -> Result<Bytes, Response> {
    st.repos
        .get(name)
        .and_then(|r| r.blobs.get(digest))
        .cloned()
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                &format!("blob {digest} is not known in {name}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=3-5", 10), Some(Ok((3, 5))));
        assert_eq!(parse_range("bytes=3-50", 10), Some(Ok((3, 9))));
        assert_eq!(parse_range("bytes=-4", 10), Some(Ok((6, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Some(Err(())));
        assert_eq!(parse_range("bytes=5-3", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
    }
}
