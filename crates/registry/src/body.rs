//! Request bodies: what is uploaded ([`UploadBody`]: re-openable at any offset, so a retry
//! or a resume sends only what is needed), and the plumbing that counts the bytes a request
//! body hands to the connection so a stalled upload is noticed.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::error::RegistryError;

/// Bytes to upload that can be produced again from any offset (resume, retry).
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// What a request body is made from, each time the request goes out.
pub(crate) struct BodySource<'a> {
    /// A new stream of the body; called again when the request is sent a second time (a
    /// token renewed on a 401).
    pub(crate) open: &'a mut (dyn FnMut() -> Result<ByteStream, RegistryError> + Send),
    /// Bytes handed to the connection over all attempts.
    pub(crate) sent: Arc<AtomicU64>,
}

/// How far one request body has gone.
#[derive(Default)]
pub(crate) struct BodyWatch {
    sent: AtomicU64,
    done: AtomicBool,
    /// The body's declared length (`Content-Length`): hyper stops polling a body once it
    /// has written that many bytes, so the stream's end is never seen and the count must
    /// say the body is through.
    expected: Option<u64>,
    /// A failure reading the body (a local file), kept so it is not mistaken for the
    /// network's.
    error: Mutex<Option<std::io::Error>>,
}

impl BodyWatch {
    pub(crate) fn new(expected: Option<u64>) -> BodyWatch {
        BodyWatch {
            expected,
            ..BodyWatch::default()
        }
    }

    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The whole body has been handed to the connection: the stream ended, or the declared
    /// length was reached.
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed) || self.expected.is_some_and(|e| self.sent() >= e)
    }

    pub(crate) fn take_error(&self) -> Option<std::io::Error> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A body stream that counts what the connection takes from it.
pub(crate) struct CountingStream {
    pub(crate) inner: ByteStream,
    pub(crate) watch: Arc<BodyWatch>,
    pub(crate) total: Arc<AtomicU64>,
}

impl Stream for CountingStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(b))) => {
                self.watch.sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                self.total.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            Poll::Ready(Some(Err(e))) => {
                *self.watch.error.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(std::io::Error::new(e.kind(), e.to_string()));
            }
            Poll::Ready(None) => self.watch.done.store(true, Ordering::Relaxed),
            Poll::Pending => {}
        }
        polled
    }
}

/// Something to upload that can be read again from any offset.
///
/// Contract: every stream from [`UploadBody::open`] yields the same bytes for the same
/// offsets; `open` may be called any number of times (retries, resumes), from any task.
pub trait UploadBody: Send + Sync {
    /// Total length when known up front (a blob in a file); None for a layer compressed on
    /// the way.
    fn size(&self) -> Option<u64>;
    /// The digest when known up front (lets the client try a cross-repository mount).
    fn known_digest(&self) -> Option<ferry_core::Digest>;
    /// The bytes from `offset` to the end; may be called again after a failure.
    fn open(&self, offset: u64) -> std::io::Result<ByteStream>;
    /// Digest and length of the whole body: known up front, or once a stream from `open`
    /// was read to its end — from any offset: a body that learns its digest on the way
    /// (a layer compressed while it streams) must hash the bytes before the offset too, as
    /// an upload resumed mid-blob reads only from there.
    fn finished(&self) -> Option<(ferry_core::Digest, u64)>;
}

/// A body held in memory: a config, a manifest, a small blob.
#[derive(Debug, Clone)]
pub struct BytesBody {
    bytes: Bytes,
    digest: ferry_core::Digest,
}

impl BytesBody {
    pub fn new(bytes: impl Into<Bytes>) -> BytesBody {
        let bytes = bytes.into();
        let digest = ferry_core::Digest::sha256_of(&bytes);
        BytesBody { bytes, digest }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl UploadBody for BytesBody {
    fn size(&self) -> Option<u64> {
        Some(self.bytes.len() as u64)
    }

    fn known_digest(&self) -> Option<ferry_core::Digest> {
        Some(self.digest.clone())
    }

    fn open(&self, offset: u64) -> std::io::Result<ByteStream> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|&o| o <= self.bytes.len())
            .ok_or_else(|| past_end(offset, self.bytes.len() as u64))?;
        let rest = self.bytes.slice(start..);
        // Pieces of at most READ_BLOCK, so the stall check sees steady progress.
        let pieces: Vec<std::io::Result<Bytes>> = (0..rest.len())
            .step_by(READ_BLOCK)
            .map(|i| Ok(rest.slice(i..rest.len().min(i + READ_BLOCK))))
            .collect();
        Ok(Box::pin(futures_util::stream::iter(pieces)))
    }

    fn finished(&self) -> Option<(ferry_core::Digest, u64)> {
        Some((self.digest.clone(), self.bytes.len() as u64))
    }
}

/// How much a file body reads at a time: the most an upload buffers beyond what is in flight.
const READ_BLOCK: usize = 256 * 1024;

fn past_end(offset: u64, size: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("offset {offset} is past the end of a {size}-byte body"),
    )
}

/// A region `start..start + size` of a file whose digest is known: a blob file, or a blob
/// inside an uncompressed tar archive. Read in blocks of 256 KiB, never whole.
#[derive(Debug, Clone)]
pub struct FileBody {
    path: std::path::PathBuf,
    start: u64,
    size: u64,
    digest: ferry_core::Digest,
}

impl FileBody {
    pub fn new(
        path: impl Into<std::path::PathBuf>,
        start: u64,
        size: u64,
        digest: ferry_core::Digest,
    ) -> FileBody {
        FileBody {
            path: path.into(),
            start,
            size,
            digest,
        }
    }
}

impl UploadBody for FileBody {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn known_digest(&self) -> Option<ferry_core::Digest> {
        Some(self.digest.clone())
    }

    fn open(&self, offset: u64) -> std::io::Result<ByteStream> {
        use std::io::{Seek, SeekFrom};
        if offset > self.size {
            return Err(past_end(offset, self.size));
        }
        let mut f = std::fs::File::open(&self.path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        f.seek(SeekFrom::Start(self.start + offset))?;
        let file = tokio::fs::File::from_std(f);
        let remaining = self.size - offset;
        let path = self.path.clone();
        let stream = futures_util::stream::unfold(
            (file, remaining, path),
            |(mut file, remaining, path)| async move {
                use tokio::io::AsyncReadExt;
                if remaining == 0 {
                    return None;
                }
                let want = remaining.min(READ_BLOCK as u64) as usize;
                let mut buf = vec![0u8; want];
                match file.read(&mut buf).await {
                    Ok(0) => Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("{} ended {remaining} bytes early", path.display()),
                        )),
                        (file, 0, path),
                    )),
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(Bytes::from(buf)), (file, remaining - n as u64, path)))
                    }
                    Err(e) => Some((Err(e), (file, 0, path))),
                }
            },
        );
        Ok(Box::pin(stream))
    }

    fn finished(&self) -> Option<(ferry_core::Digest, u64)> {
        Some((self.digest.clone(), self.size))
    }
}
