//! The seam between the engine and what it copies from and to: an [`ImageSource`] hands out
//! blob bytes, an [`ImageDestination`] takes blobs and manifests (the containers/image
//! `ImageDestination` idea). What to copy is plain data ([`CopyImage`]), built by whoever
//! read the source: an archive reader, or the pull engine's resolution into the store.

use std::future::Future;
use std::io::{self, Read};
use std::sync::Arc;

use ferry_core::{Descriptor, Digest, Platform};

use crate::{CopyError, Progress, SendBody};

/// Where blobs come from.
pub trait ImageSource: Send + Sync + 'static {
    /// How the source finds a blob (a region of an archive, a digest in the store).
    type Location: Clone + Send + Sync + 'static;

    /// Open the blob at `at` from its start. The source need not verify anything: the
    /// engine checks every byte against the descriptor (and the layer's diff_id) as it
    /// streams, and opens the blob again from its start for every attempt.
    fn open_blob(&self, at: &Self::Location) -> io::Result<Box<dyn Read + Send>>;

    /// Make the blob `d` at `at` ready for [`open_blob`](Self::open_blob) (a registry
    /// source fetches it into its cache), reporting the work to `progress` as download
    /// events. Called once per blob, only for a blob that is to be sent: not for one the
    /// destination holds or can reuse.
    fn prepare(
        &self,
        at: &Self::Location,
        d: &Descriptor,
        progress: &dyn Progress,
    ) -> impl Future<Output = Result<(), CopyError>> + Send {
        let _ = (at, d, progress);
        async { Ok(()) }
    }
}

/// Where images go.
///
/// Contract: for each blob the engine calls [`has_blob`](Self::has_blob), then, if the
/// destination lacks it, [`reuse_blob`](Self::reuse_blob), then, if that could not help,
/// [`put_blob`](Self::put_blob) — up to [`max_parallel`](Self::max_parallel) blobs at once.
/// Only once every blob of an image is held does it call
/// [`put_manifest`](Self::put_manifest): children of an index first, then the root, by
/// digest and then by each tag. A failed call fails the copy; nothing after it is called, so
/// a tag never names an image whose blobs did not all arrive.
pub trait ImageDestination: Send + Sync + 'static {
    /// How many blobs may be in flight at once; 1 for a destination that cannot take
    /// concurrent writes.
    fn max_parallel(&self) -> usize {
        usize::MAX
    }

    /// Whether the destination holds blob `digest` already (nothing need be sent).
    fn has_blob(&self, digest: &Digest) -> impl Future<Output = Result<bool, CopyError>> + Send;

    /// Make the destination hold `digest` without sending its bytes (a registry's
    /// cross-repository mount), when it can: `true` when it now holds it. Called only after
    /// [`has_blob`](Self::has_blob) said no.
    fn reuse_blob(&self, digest: &Digest) -> impl Future<Output = Result<bool, CopyError>> + Send {
        let _ = digest;
        async { Ok(false) }
    }

    /// Send `body`, calling `progress` with the bytes sent so far. Returns the digest and
    /// size the destination now holds. The body checks its content while it streams; a
    /// failed check ends the stream with an error, and the destination must then not hold
    /// the blob under any digest.
    fn put_blob(
        &self,
        body: Arc<SendBody>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> impl Future<Output = Result<(Digest, u64), CopyError>> + Send;

    /// Store manifest `bytes` (of `media_type`) under `reference`: a tag, or the digest of
    /// the bytes. Returns the digest the destination computed.
    fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<Digest, CopyError>> + Send;
}

/// A manifest as the source holds it, byte for byte.
#[derive(Debug, Clone)]
pub struct SourceManifest {
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl SourceManifest {
    pub fn digest(&self) -> Digest {
        Digest::sha256_of(&self.bytes)
    }
}

/// A blob of an image and where the source keeps it.
#[derive(Debug, Clone)]
pub struct CopyBlob<L> {
    /// The blob as the source describes it.
    pub descriptor: Descriptor,
    pub at: L,
    /// For a layer: its uncompressed digest from the config, checked on the way.
    pub diff_id: Option<Digest>,
}

/// One platform's image.
#[derive(Debug, Clone)]
pub struct CopyPlatform<L> {
    pub platform: Option<Platform>,
    /// The manifest; `None` when the source has none (docker's legacy archives): one is
    /// made.
    pub manifest: Option<SourceManifest>,
    pub config: CopyBlob<L>,
    pub layers: Vec<CopyBlob<L>>,
}

/// An image to copy: one platform, or an index and the platforms it lists.
#[derive(Debug, Clone)]
pub struct CopyImage<L> {
    /// What messages call it.
    pub name: String,
    /// The index, when the whole of a multi-platform image is copied.
    pub index: Option<SourceManifest>,
    /// Indexes nested under `index` (a registry's; archives' readers flatten them), outer
    /// first: stored as they are, innermost first, between the platforms' manifests and
    /// `index`.
    pub nested: Vec<SourceManifest>,
    pub platforms: Vec<CopyPlatform<L>>,
}
