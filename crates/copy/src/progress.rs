//! Progress events: what the engine reports as it works, for bars, plain lines or nothing.

use ferry_core::Digest;

/// Something that happened during a copy.
#[derive(Debug, Clone)]
pub enum Event {
    /// A reference was resolved to a manifest.
    Resolved {
        reference: String,
        digest: Digest,
        platform: Option<String>,
        blobs: usize,
        bytes: u64,
        /// Digest and size of each of those blobs (configs and layers, in archive order), so
        /// a renderer can tell which image a blob's progress belongs to.
        contents: Vec<(Digest, u64)>,
    },
    /// A blob download starts (or resumes from `held` bytes).
    BlobStarted {
        digest: Digest,
        size: u64,
        held: u64,
    },
    /// A blob was already in the cache; nothing is downloaded.
    BlobCached { digest: Digest, size: u64 },
    /// Bytes of a blob held so far.
    BlobProgress { digest: Digest, held: u64 },
    /// A blob is downloaded and verified.
    BlobDone { digest: Digest, size: u64 },
    /// Something the user should know that does not stop the copy (an image of another
    /// platform than this machine's, a tag that does not match the digest asked for). The
    /// text may hold strings from the registry: renderers sanitise it before printing.
    Warning { message: String },
    /// A blob the destination lacked was mounted from another repository of the same
    /// registry: nothing is sent.
    BlobMounted { digest: Digest, size: u64 },
}

/// Receives events; called from several tasks at once.
pub trait Progress: Send + Sync {
    fn event(&self, event: Event);

    /// The [`Arrivals`](crate::Arrivals) behind this sink, if it is one: the downloads tell
    /// it which blobs they will announce, so the archive writer waits for those.
    fn arrivals(&self) -> Option<&crate::Arrivals> {
        None
    }
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event) {}
}
