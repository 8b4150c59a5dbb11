//! A connection whose writes may neither stall for longer than the idle time nor crawl
//! below a minimum rate: a client that stops reading (its socket buffer full), or that
//! takes a few bytes now and then to keep the connection alive, is disconnected, which
//! drops its response and releases what that response held (its download slot, its share
//! of an image's fetch and the pins on the blobs it was reading).
//!
//! Only time a write is pending counts towards the rate: then the server has bytes ready
//! and the client is not taking them. A response waiting for upstream bytes writes
//! nothing, so a slow registry never gets a client cut.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// The pace a connection's writes must keep.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    /// The longest a write may stay pending.
    pub idle: Duration,
    /// Bytes per second that must be taken over each `window` of pending time; 0: no rule.
    pub min_rate: u64,
    /// The pending time the rate is averaged over.
    pub window: Duration,
}

impl Pace {
    /// The bytes a window must carry.
    fn window_bytes(&self) -> u64 {
        (self.min_rate as u128 * self.window.as_millis() / 1000).min(u64::MAX as u128) as u64
    }

    fn rate_on(&self) -> bool {
        self.min_rate > 0 && !self.window.is_zero()
    }
}

pub(crate) struct WriteStall<I> {
    inner: I,
    pace: Pace,
    metrics: Arc<Metrics>,
    /// When the current pending write began (cleared by any progress).
    stalled_since: Option<Instant>,
    /// Since when the current pending spell counts towards the window (its start, or the
    /// start of a window that began during it).
    counting_from: Option<Instant>,
    /// Pending time counted in the current window before `counting_from`.
    busy: Duration,
    /// Bytes written in the current window.
    bytes: u64,
    /// Fires at the idle limit or at the end of the window, whichever comes first.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<I> WriteStall<I> {
    pub(crate) fn new(inner: I, pace: Pace, metrics: Arc<Metrics>) -> WriteStall<I> {
        WriteStall {
            inner,
            pace,
            metrics,
            stalled_since: None,
            counting_from: None,
            busy: Duration::ZERO,
            bytes: 0,
            timer: None,
        }
    }

    /// A connection paced by the server's idle time and `--min-rate`.
    pub(crate) fn for_state(inner: I, state: &crate::State) -> WriteStall<I> {
        let c = &state.config;
        let pace = Pace {
            idle: c.idle_timeout,
            min_rate: c.min_rate,
            window: c.min_rate_window,
        };
        WriteStall::new(inner, pace, state.metrics.clone())
    }

    /// The next moment something must be decided while a write is pending.
    fn deadline(&self) -> Instant {
        let since = self.stalled_since.expect("only while stalled");
        let idle = since + self.pace.idle;
        match (self.pace.rate_on(), self.counting_from) {
            (true, Some(from)) => idle.min(from + self.pace.window.saturating_sub(self.busy)),
            _ => idle,
        }
    }

    /// Close the window: cut (an error) when it carried too few bytes, else start anew.
    fn end_window(&mut self, now: Instant) -> io::Result<()> {
        if self.bytes < self.pace.window_bytes() {
            self.metrics.cut("slow");
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took {} bytes in {} s of waiting, under the minimum rate of {} bytes/s",
                    self.bytes,
                    self.pace.window.as_secs_f64(),
                    self.pace.min_rate
                ),
            ));
        }
        self.busy = Duration::ZERO;
        self.bytes = 0;
        if self.counting_from.is_some() {
            self.counting_from = Some(now);
        }
        Ok(())
    }

    /// `r` as is when it is ready (counting `n(r)` bytes); while pending, an error once
    /// the stall is too long or the window too thin.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
        n: impl Fn(&T) -> usize,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                let now = Instant::now();
                if let Some(from) = self.counting_from.take() {
                    self.busy += now - from;
                }
                self.stalled_since = None;
                self.timer = None;
                if let Ok(t) = &v {
                    self.bytes = self.bytes.saturating_add(n(t) as u64);
                }
                // A window that ran out just as the write went through: the bytes came,
                // so it is judged with them.
                if self.pace.rate_on() && self.busy >= self.pace.window {
                    if let Err(e) = self.end_window(now) {
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Ready(v)
            }
            Poll::Pending => {
                if self.stalled_since.is_none() {
                    let now = Instant::now();
                    self.stalled_since = Some(now);
                    self.counting_from = Some(now);
                    self.timer = Some(Box::pin(tokio::time::sleep_until(self.deadline())));
                }
                loop {
                    let timer = self.timer.as_mut().expect("set while stalled");
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = Instant::now();
                    let since = self.stalled_since.expect("stalled");
                    if now >= since + self.pace.idle {
                        self.metrics.cut("idle");
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client read nothing for too long",
                        )));
                    }
                    // The window's pending time is used up.
                    if let Some(from) = self.counting_from {
                        self.busy += now - from;
                        self.counting_from = Some(now);
                    }
                    if let Err(e) = self.end_window(now) {
                        return Poll::Ready(Err(e));
                    }
                    let next = self.deadline();
                    self.timer
                        .as_mut()
                        .expect("set while stalled")
                        .as_mut()
                        .reset(next);
                }
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteStall<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteStall<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, r, |n| *n)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, r, |n| *n)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, r, |_| 0)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection that must send its first bytes within a time limit. hyper's header timeout
/// starts only once it knows the protocol, and it learns that from the first bytes (the
/// HTTP/2 preface or not): a client that connects and sends nothing would otherwise hold
/// its connection, and a file descriptor, for ever.
pub(crate) struct FirstBytes<I> {
    inner: I,
    /// Until the first bytes arrive; then `None` and reads pass through.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<I> FirstBytes<I> {
    pub(crate) fn new(inner: I, limit: Duration) -> FirstBytes<I> {
        FirstBytes {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytes<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some(deadline) = self.deadline.as_mut() else {
            return r;
        };
        match r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.deadline = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Err(
                io::Error::new(io::ErrorKind::TimedOut, "the client sent no request"),
            )),
            r => r,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytes<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
