//! The body stream of a chunked upload: one stream of the blob shared by all its chunks
//! (so a body compressed on the way is compressed once), each chunk taking its share.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::body::ByteStream;

pub(crate) fn lock(c: &Mutex<Cursor>) -> std::sync::MutexGuard<'_, Cursor> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// The body stream shared by the chunks of one upload, and the bytes read ahead of them.
pub(crate) struct Cursor {
    pub(crate) stream: ByteStream,
    /// Read from the stream, not yet handed to a chunk (at most one piece of the stream).
    pub(crate) leftover: Bytes,
    /// Body offset of the next byte to hand out.
    pub(crate) pos: u64,
    pub(crate) eof: bool,
}

impl Cursor {
    pub(crate) fn is_empty(&self) -> bool {
        self.leftover.is_empty() && self.eof
    }

    /// Have a piece at hand, or know the stream has ended.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.leftover.is_empty() && !self.eof {
            match self.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => self.leftover = b,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => self.eof = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// One chunk: the next `remaining` bytes of the shared cursor.
pub(crate) struct ChunkStream {
    pub(crate) cursor: Arc<Mutex<Cursor>>,
    pub(crate) remaining: u64,
}

impl Stream for ChunkStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let cursor = self.cursor.clone();
        let mut c = lock(&cursor);
        match c.poll_fill(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {}
        }
        if c.leftover.is_empty() {
            return Poll::Ready(None);
        }
        let n = (c.leftover.len() as u64).min(self.remaining) as usize;
        let piece = c.leftover.split_to(n);
        c.pos += n as u64;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(piece)))
    }
}
