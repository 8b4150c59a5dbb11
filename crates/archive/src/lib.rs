//! `ferry-archive` turns images held in a blob store into the files users load: ferry's
//! default archive (one deterministic tar that is both a `docker load` archive and an OCI
//! layout, with the registry's original compressed blobs), an OCI layout directory, and
//! docker's legacy layout with uncompressed layers for old loaders.
//!
//! The default archive is planned before anything is written: [`Plan::new`] lists every entry
//! with its size, so the archive's length is known up front and the bytes are a pure function
//! of the manifests (same input, same bytes, every time).
//!
//! ```no_run
//! # fn f(images: Vec<ferry_archive::ArchiveImage>, blobs: &dyn ferry_archive::BlobReader) -> Result<(), Box<dyn std::error::Error>> {
//! let plan = ferry_archive::Plan::new(&images);
//! println!("{} bytes", plan.len());
//! plan.write_tar(blobs, std::io::stdout().lock())?;
//! # Ok(()) }
//! ```

mod legacy;
mod plan;
mod ranges;
mod tarfmt;

use std::io::{self, Read};

use ferry_core::{Descriptor, Digest, Platform, Reference, MAX_SMALL_BLOB, MAX_SMALL_BLOB_RULE};

pub use legacy::write_legacy;
pub use plan::{Entry, EntryBody, Plan};
pub use ranges::{Segment, Segments};

/// Read access to verified blobs (the store).
///
/// Contract: a reader hands out only blobs it knows match their digests (verified when they
/// arrived, or checked since); writers copy the bytes as they are and check only lengths.
/// There is no second chance after a read: on a stream the bytes are already out.
pub trait BlobReader: Sync {
    /// Open blob `digest` for reading from its start.
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>>;
    /// Read a small blob (manifest, config) whole; more than [`MAX_SMALL_BLOB`] bytes is
    /// refused, not read.
    fn read_small(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open(digest)?
            .take(MAX_SMALL_BLOB + 1)
            .read_to_end(&mut out)?;
        if out.len() as u64 > MAX_SMALL_BLOB {
            // Reading stops one byte past the limit: the true size is not known.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {digest} is {} bytes or more; {MAX_SMALL_BLOB_RULE}",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }
}

/// One platform's image: its manifest, config and layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageParts {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub platform: Option<Platform>,
}

/// An image as it goes into an archive: the name it was pulled as, the top-level manifest
/// (an image manifest, or an index when all platforms are kept) and the images under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveImage {
    pub name: Reference,
    /// The manifest the archive's index points at.
    pub root: Descriptor,
    /// Every manifest to store: the root first, then, for an index, its children.
    pub manifests: Vec<Descriptor>,
    /// The images with their blobs, in the order their manifests appear.
    pub images: Vec<ImageParts>,
    /// Which of `images` docker's `manifest.json` lists (docker loads one platform).
    pub docker_image: Option<usize>,
    /// The index one platform was taken from, when `root` is that platform's manifest: its
    /// digest is what `repo@<digest>` named and what docker records (`RepoDigests`).
    pub index: Option<Descriptor>,
}

/// The `index.json` annotation that records [`ArchiveImage::index`]: the digest of the
/// index a single platform's image was taken from.
pub const INDEX_DIGEST_ANNOTATION: &str = "io.ferry.image.index.digest";

impl ArchiveImage {
    /// The names docker records for the image (`RepoTags`): its familiar name and tag, or
    /// none for an image pulled by digest alone.
    pub fn repo_tags(&self) -> Vec<String> {
        self.name
            .tag()
            .map(|_| self.name.familiar())
            .into_iter()
            .collect()
    }

    /// A single-platform image.
    pub fn single(name: Reference, parts: ImageParts) -> ArchiveImage {
        ArchiveImage {
            name,
            root: parts.manifest.clone(),
            manifests: vec![parts.manifest.clone()],
            images: vec![parts],
            docker_image: Some(0),
            index: None,
        }
    }
}

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} decompresses to {actual}, but the image config says its content is {expected}")]
    DiffIdMismatch {
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("the image config {digest} is malformed: {reason}")]
    BadConfig { digest: Digest, reason: String },
    #[error("the sizes the manifests declare add up to more than 16 EiB")]
    TooLarge,
}

pub(crate) fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

#[cfg(test)]
mod tests;
