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
    /// Bumped for every chunk handed out: a request's body may still be polled by its
    /// connection after its answer came (a 401 answered before the body was read, with a
    /// proxy draining the rest), and must then not take bytes from the chunk sent next.
    pub(crate) generation: u64,
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
    cursor: Arc<Mutex<Cursor>>,
    remaining: u64,
    generation: u64,
}

impl ChunkStream {
    /// The next chunk of `cursor`, `remaining` bytes long; any stream handed out before it
    /// stops taking bytes.
    pub(crate) fn next(cursor: &Arc<Mutex<Cursor>>, remaining: u64) -> ChunkStream {
        let generation = {
            let mut c = lock(cursor);
            c.generation += 1;
            c.generation
        };
        ChunkStream {
            cursor: cursor.clone(),
            remaining,
            generation,
        }
    }
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
        if c.generation != self.generation {
            return Poll::Ready(Some(Err(std::io::Error::other(
                "this chunk was superseded by a newer send of the upload",
            ))));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn cursor(bytes: &'static [u8]) -> Arc<Mutex<Cursor>> {
        let pieces = bytes.chunks(2).map(|p| Ok(Bytes::from_static(p)));
        Arc::new(Mutex::new(Cursor {
            stream: Box::pin(futures_util::stream::iter(pieces.collect::<Vec<_>>())),
            leftover: Bytes::new(),
            pos: 0,
            eof: false,
            generation: 0,
        }))
    }

    #[tokio::test]
    async fn a_superseded_chunk_takes_no_bytes_from_the_next() {
        let c = cursor(b"abcdefgh");
        let mut old = ChunkStream::next(&c, 8);
        assert_eq!(
            old.next().await.unwrap().unwrap(),
            Bytes::from_static(b"ab")
        );
        let mut new = ChunkStream::next(&c, 4);
        // The old request's connection polls its body once more: it gets nothing.
        assert!(old.next().await.unwrap().is_err());
        let mut got = Vec::new();
        while let Some(piece) = new.next().await {
            got.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(got, b"cdef");
        assert_eq!(lock(&c).pos, 6);
    }
}
