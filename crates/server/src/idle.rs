//! A connection with no request in progress for the header timeout is closed. hyper bounds
//! an HTTP/1 connection's wait for its next request's headers, but HTTP/2 has no such
//! bound: a client could open connections, send the preface and hold them (and a file
//! descriptor each) for ever. A request counts as in progress until its response's body
//! is sent or dropped, so a long download or an event stream is never cut by this.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

/// One connection's requests in progress and when the last one ended.
pub(crate) struct Activity {
    active: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            active: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    /// A request begins; it ends when the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Resolves once no request has been in progress for `limit`.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        loop {
            let wait = if self.active.load(Ordering::SeqCst) > 0 {
                limit
            } else {
                let since = self
                    .last
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed();
                if since >= limit {
                    return;
                }
                limit - since
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request in progress (see [`Activity::begin`]).
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request in progress until it is sent or dropped.
pub(crate) struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl Guarded {
    pub(crate) fn new(inner: Body, busy: Busy) -> Guarded {
        Guarded { inner, _busy: busy }
    }
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
