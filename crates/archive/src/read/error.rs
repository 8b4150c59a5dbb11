//! Why an archive could not be read.

use std::io;

use ferry_core::Digest;

/// Why an archive (or OCI layout directory) was refused at open, or an image not found in it.
/// Every variant names the archive entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not an image archive: it is neither a tar file (plain, gzip or zstd) nor an OCI layout directory")]
    NotAnArchive { path: String },
    /// `at` says where: "its first entry" or "the entry after NAME".
    #[error("the archive is corrupt at {at}: {reason}")]
    CorruptTar { at: String, reason: String },
    #[error("the archive is truncated: {entry} needs {needed} bytes but the file holds {have}")]
    Truncated {
        entry: String,
        needed: u64,
        have: u64,
    },
    #[error("archive entry {entry:?} has an unsafe path ({reason}); the archive is refused")]
    UnsafePath { entry: String, reason: &'static str },
    #[error(
        "archive entry {entry:?} links to {target:?}, outside the archive; the archive is refused"
    )]
    LinkEscapes { entry: String, target: String },
    #[error("archive entry {entry:?} is a link loop (more than {hops} links followed)")]
    LinkLoop { entry: String, hops: u32 },
    #[error("archive entry {entry:?} cannot be resolved: its links lead through too many paths; the archive is refused")]
    TooManyLinks { entry: String },
    #[error("the archive holds more than {max} entries (at {entry}); it is not an image archive")]
    TooManyEntries { entry: String, max: usize },
    #[error("the archive has no {entry}, which {wanted_by} names")]
    Missing { entry: String, wanted_by: String },
    #[error("archive entry {entry} is not a regular file")]
    NotAFile { entry: String },
    #[error("archive entry {entry} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        entry: String,
        expected: Digest,
        actual: String,
    },
    #[error("archive entry {entry} holds {actual} bytes, but {declared_by} says {expected}")]
    SizeMismatch {
        entry: String,
        declared_by: String,
        expected: u64,
        actual: u64,
    },
    #[error("image config {entry} lists {diff_ids} diff_ids for {layers} layers")]
    DiffIdCount {
        entry: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("layer {entry} is uncompressed and named after digest {named}, but the image config says its content is {diff_id}")]
    DiffIdMismatch {
        entry: String,
        named: Digest,
        diff_id: Digest,
    },
    #[error("archive entry {entry} is malformed: {reason}")]
    Malformed { entry: String, reason: String },
    #[error("archive entry {entry} nests indexes more than {max} deep")]
    TooDeep { entry: String, max: usize },
    #[error("archive entry {entry} is {size} bytes; {rule}")]
    TooBig {
        entry: String,
        size: u64,
        rule: &'static str,
    },
    #[error("archive entry {entry} cannot be read: {reason}")]
    Unsupported { entry: String, reason: String },
    #[error("archive entry {entry} brings the image past {max} manifests; the index is refused")]
    TooMany { entry: String, max: usize },
    #[error("archive entry {entry} brings the manifests and configs read past {max} bytes; the archive is refused")]
    TooMuchMetadata { entry: String, max: u64 },
    #[error("the archive holds neither index.json (an OCI layout) nor manifest.json (docker save): it is not an image archive")]
    NoImageIndex,
    #[error("the archive holds no image")]
    NoImages,
    #[error("the archive holds several images; choose one with --image NAME or --image INDEX (from 0): {available}")]
    Ambiguous { available: String },
    #[error("the archive holds no image {wanted:?}; it holds: {available}")]
    NoSuchImage { wanted: String, available: String },
}

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> ReadError {
    let context = context.into();
    move |source| ReadError::Io { context, source }
}
