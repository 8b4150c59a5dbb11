//! `ferry-store` is the content-addressed blob cache every transfer goes through.
//!
//! Verified blobs live at `blobs/<algorithm>/<hex>` and nothing else ever appears there:
//! downloads are written to `ingest/<hex>.partial`, hashed as they arrive, and renamed into
//! `blobs/` only once size and digest match. A partial file survives a dropped connection
//! or a killed process, so the next attempt continues from the bytes it already has; a
//! per-blob lock file keeps two processes from writing the same partial at once.
//!
//! For a long-running server the store also keeps size accounting, pins ([`Store::pin`]),
//! LRU and age eviction ([`Store::evict`]) and a verify-once rule for serving after a crash
//! ([`Store::open_served`]), all through the [`Backend`] trait ([`FsBackend`] on disk).
//!
//! ```no_run
//! # fn main() -> Result<(), ferry_store::StoreError> {
//! use ferry_core::Digest;
//! let store = ferry_store::Store::open("/tmp/ferry-cache")?;
//! let data = b"hello";
//! let digest = Digest::sha256_of(data);
//! let mut ingest = store.begin(&digest, Some(5))?;
//! ingest.write(&data[ingest.offset() as usize..])?;
//! ingest.commit()?;
//! assert!(store.contains(&digest));
//! # Ok(()) }
//! ```

mod backend;
mod cache;
mod checked;
mod ingest;
mod safe;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use ferry_core::{Digest, Verifier, VerifyError, MAX_SMALL_BLOB, MAX_SMALL_BLOB_RULE};

pub use backend::{Backend, BlobEntry, BlobIngest, FsBackend, Partials, Removal};
pub use cache::{CacheStats, Evicted, Limits, Pin, ServedBlob};
pub use checked::CheckedBlob;
pub use ingest::Ingest;

use cache::Shared;

/// What went wrong in the store. Every variant names the file or blob involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cache I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A manifest declares another size for a blob the cache holds verified: the manifest is
    /// wrong, and the cached blob is kept.
    #[error("it declares {declared} bytes for blob {digest}, but the verified copy in the cache holds {actual}")]
    SizeMismatch {
        digest: Digest,
        declared: u64,
        actual: u64,
    },
    #[error("blob {digest} is {size} bytes; {MAX_SMALL_BLOB_RULE}")]
    TooLarge { digest: Digest, size: u64 },
    /// A cache entry that is a symbolic link, not a regular file, or someone else's.
    #[error("refusing the cache entry {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    /// A cached blob no longer matches its digest; it has been removed from the cache.
    #[error(
        "the cached copy of blob {digest} is damaged ({detail}); it was removed from the cache"
    )]
    Corrupt { digest: Digest, detail: String },
}

impl StoreError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the error is a content mismatch (as opposed to a local I/O problem).
    pub fn is_verify(&self) -> bool {
        matches!(self, StoreError::Verify(_))
    }
}

/// A content-addressed blob store rooted at one directory. Clones share one accounting,
/// pin table and set of limits (see [`pin`](Self::pin), [`evict`](Self::evict)).
///
/// The path-level methods (`blob_path`, `begin` returning an [`Ingest`], `open_blob`, ...)
/// are the filesystem backend's, used by the pull engine; the cache policy (`pin`,
/// `open_served`, `evict`, `rescan`, `stats`) goes through the [`Backend`] trait only.
#[derive(Debug, Clone)]
pub struct Store {
    fs: FsBackend,
    shared: Arc<Shared>,
}

impl Store {
    /// Open (creating if needed, mode 0700) the store at `root`. Refuses a root owned by
    /// another user, and `blobs/` or `ingest/` that are symbolic links or someone else's.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        safe::ensure_dir(&root, false)?;
        for sub in ["blobs", "blobs/sha256", "blobs/sha512", "ingest"] {
            safe::ensure_dir(&root.join(sub), true)?;
        }
        let fs = FsBackend::new(root);
        let shared = Arc::new(Shared::new(Arc::new(fs.clone())));
        Ok(Store { fs, shared })
    }

    pub fn root(&self) -> &Path {
        self.fs.root()
    }

    /// The filesystem backend under this store.
    pub fn backend(&self) -> &FsBackend {
        &self.fs
    }

    /// Where the verified blob `digest` lives (whether or not it is there yet).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.fs.blob_path(digest)
    }

    /// Where a download in progress keeps its bytes.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.fs.partial_path(digest)
    }

    #[cfg(test)]
    pub(crate) fn lock_path(&self, digest: &Digest) -> PathBuf {
        self.fs.lock_path(digest)
    }

    /// Whether the blob is present (a regular file; a link is not a blob).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.fs.contains(digest)
    }

    /// Whether the blob is present with the size a manifest declares for it.
    ///
    /// A manifest never removes verified content. When the file has another size, only its
    /// content can tell a lying manifest from a file a machine crash cut short (blobs are
    /// renamed into place after verification, but not fsynced), so it is hashed — rare, and
    /// bounded by the blob's size: if it still matches its digest it stays and the manifest
    /// gets [`StoreError::SizeMismatch`]; if it does not, it is damaged and removed, and the
    /// blob is reported absent so it is fetched again.
    pub fn check(&self, digest: &Digest, size: u64) -> Result<bool, StoreError> {
        self.fs.check(digest, size, Some(self.shared.clone()))
    }

    /// The size of a present blob.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        safe::entry(&self.blob_path(digest))
            .ok()
            .flatten()
            .map(|m| m.len())
    }

    /// Open a cached blob for reading as it is: for a blob this process has verified itself
    /// (downloaded, or checked with [`open_verified`](Self::open_verified)).
    pub fn open_blob(&self, digest: &Digest) -> Result<fs::File, StoreError> {
        safe::open_read(&self.blob_path(digest))
    }

    /// Open a cached blob for a read verified against its digest and, when given, its size
    /// (see [`CheckedBlob`]); a damaged copy is removed when the read finds it.
    pub fn open_verified(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<CheckedBlob, StoreError> {
        let p = self.blob_path(digest);
        let f = safe::open_read(&p)?;
        Ok(CheckedBlob::new(
            f,
            p,
            digest,
            size,
            Some(self.shared.clone()),
        ))
    }

    /// Read a whole small blob (a manifest or config), verified, at most [`MAX_SMALL_BLOB`] bytes.
    pub fn read_small(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(digest);
        let f = safe::open_read(&p)?;
        let size = f.metadata().map_err(StoreError::io(&p))?.len();
        if size > MAX_SMALL_BLOB {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
            });
        }
        let mut out = vec![0u8; size as usize];
        let mut held = 0;
        let mut blob = CheckedBlob::new(f, p, digest, None, Some(self.shared.clone()));
        loop {
            if held == out.len() {
                // The limit holds even if the file grew since it was measured.
                if out.len() as u64 > MAX_SMALL_BLOB {
                    return Err(StoreError::TooLarge {
                        digest: digest.clone(),
                        size: out.len() as u64,
                    });
                }
                out.resize((out.len() * 2).clamp(4096, MAX_SMALL_BLOB as usize + 1), 0);
            }
            match blob.read_chunk(&mut out[held..])? {
                0 => break,
                n => held += n,
            }
        }
        out.truncate(held);
        Ok(out)
    }

    /// Store `bytes` as blob `digest` after verifying them. A copy already present is kept
    /// only if it holds exactly these bytes; a damaged one is replaced.
    pub fn put_verified(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let mut v = Verifier::new(digest.clone(), Some(bytes.len() as u64));
        v.update(bytes)?;
        v.finish()?;
        if bytes.len() as u64 <= MAX_SMALL_BLOB
            && self.check(digest, bytes.len() as u64)?
            && self.read_small(digest).is_ok_and(|held| held == bytes)
        {
            return Ok(());
        }
        let target = self.blob_path(digest);
        let tmp =
            self.root()
                .join("ingest")
                .join(format!("{}.{}.tmp", digest.hex(), std::process::id()));
        let write = || -> io::Result<()> {
            // A leftover of a dead process with this pid, or something planted: never
            // written through (create_new does not follow links).
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = safe::options().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            fs::rename(&tmp, &target)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::Io {
                path: target.clone(),
                source: e,
            }
        })?;
        self.shared.committed(digest, bytes.len() as u64);
        Ok(())
    }

    /// Start or resume writing blob `digest`. Blocks while another process writes the same
    /// blob; the caller should check [`contains`](Self::contains) again afterwards (see
    /// [`Ingest::already_done`]). The bytes already in the partial file are re-hashed so
    /// that the final check covers the whole blob. Fails with
    /// [`StoreError::SizeMismatch`] when the cache holds the blob verified with another size.
    pub fn begin(&self, digest: &Digest, size: Option<u64>) -> Result<Ingest, StoreError> {
        Ingest::begin(&self.fs, Some(self.shared.clone()), digest, size)
    }

    /// Bytes held in partial downloads (what a resume would reuse).
    pub fn partial_bytes(&self, digest: &Digest) -> u64 {
        safe::entry(&self.partial_path(digest))
            .ok()
            .flatten()
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Open the partial download of `digest` for reading (to copy what it holds elsewhere).
    pub fn open_partial(&self, digest: &Digest) -> Result<fs::File, StoreError> {
        safe::open_read(&self.partial_path(digest))
    }

    /// Lease `digest` (present or not yet) against eviction until the [`Pin`] is dropped;
    /// records a use. For a blob being served, and for each blob a pull in progress needs.
    pub fn pin(&self, digest: &Digest) -> Pin {
        self.shared.pin(digest)
    }

    /// Open a cached blob to serve it from `offset`, pinned while the [`ServedBlob`] lives.
    ///
    /// Crash safety: blobs are renamed into place without fsync, so after a crash a file
    /// under `blobs/` may be short or hold garbage. A blob this process did not write is
    /// hashed in full the first time this process serves it (once, however many requests
    /// ask at the same time); a damaged copy is removed. `Ok(None)`: absent or damaged —
    /// fetch it again. Blocking (a first serve reads the whole blob): call it from a
    /// blocking thread, not an async worker.
    pub fn open_served(
        &self,
        digest: &Digest,
        offset: u64,
    ) -> Result<Option<ServedBlob>, StoreError> {
        self.shared.open_served(digest, offset)
    }

    /// Set the limits [`evict`](Self::evict) keeps the cache under, scanning the cache
    /// first if this process has not yet (so a server pays for the scan at start-up). With
    /// `max_size` set, a commit that takes the cache over it evicts at once.
    pub fn set_limits(&self, limits: Limits) -> Result<CacheStats, StoreError> {
        self.shared.set_limits(limits)
    }

    /// Remove blobs unused for longer than `max_age`, then the least recently used ones
    /// until blobs plus partial downloads fit in `max_size`. Never a pinned blob nor one a
    /// writer of any process holds; stale partial downloads nobody writes go too. Readers
    /// that already opened a removed blob read it to its end; later opens find it absent.
    /// Call it periodically for `max_age`; the first call scans the cache.
    pub fn evict(&self) -> Result<Evicted, StoreError> {
        self.shared.evict_at(SystemTime::now())
    }

    /// [`evict`](Self::evict) as if the clock said `now` (tests, and servers that keep
    /// their own clock).
    pub fn evict_at(&self, now: SystemTime) -> Result<Evicted, StoreError> {
        self.shared.evict_at(now)
    }

    /// Rebuild the accounting from what is on disk: picks up blobs other processes added
    /// or removed. Costs one directory listing and one `lstat` per blob.
    pub fn rescan(&self) -> Result<CacheStats, StoreError> {
        self.shared.rescan()
    }

    /// Sizes and counters for metrics. The first call scans the cache (see
    /// [`rescan`](Self::rescan)); later ones are read from memory.
    pub fn stats(&self) -> Result<CacheStats, StoreError> {
        self.shared.stats()
    }
}

#[cfg(test)]
mod tests;
