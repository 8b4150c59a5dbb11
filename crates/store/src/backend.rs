//! Where blobs live: the seam between the cache's policy (accounting, pins, eviction,
//! verify-before-serve, in `cache.rs`) and the storage that holds the bytes. The filesystem
//! backend ([`FsBackend`]) keeps every filesystem specific — paths, `O_NOFOLLOW`, lock files,
//! rename — to itself; a backend on object storage for multi-node servers is a later issue.
//!
//! The policy layer only ever calls these methods, so a second backend needs nothing else.

use std::fmt;
use std::fs::{self, File, TryLockError};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use ferry_core::{Algorithm, Digest};

use crate::cache::Shared;
use crate::{safe, CheckedBlob, Ingest, StoreError};

/// A complete blob as [`Backend::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
    /// The last use recorded with [`Backend::touch`] (or the time the blob was stored).
    pub last_use: SystemTime,
}

/// What [`Backend::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed {
        size: u64,
    },
    /// A writer (in any process) holds the blob: it was left alone.
    Busy,
    Absent,
}

/// Bytes held by partial downloads, after removing the stale ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Partials {
    pub held: u64,
    pub removed: u64,
}

/// A blob being written; see [`Ingest`] for the filesystem one.
pub trait BlobIngest: Send {
    /// The blob was already complete when the ingest began: write nothing, just commit.
    fn already_done(&self) -> bool;
    /// Bytes already held (a resume starts here).
    fn offset(&self) -> u64;
    /// Append bytes continuing at [`offset`](Self::offset); refused past the declared size.
    fn write(&mut self, buf: &[u8]) -> Result<(), StoreError>;
    /// Throw away what is held and start from byte 0.
    fn restart(&mut self) -> Result<(), StoreError>;
    /// Verify size and digest and make the blob visible to readers; on a mismatch nothing
    /// becomes visible and the partial bytes are discarded.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Storage for complete blobs and partial downloads. Implementations are shared between
/// threads and may be shared between processes (and, for object storage, machines).
///
/// Contract: a blob is visible ([`size`](Self::size), [`open_at`](Self::open_at),
/// [`list`](Self::list)) only after an ingest of it committed; nothing here verifies bytes
/// on read except [`verify`](Self::verify). Errors name the blob or path involved.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The size of the complete blob, `None` when absent. One metadata lookup.
    fn size(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;

    /// Open the complete blob for reading from `offset` (as stored, unverified); `None` when
    /// absent. A reader that is open keeps reading to its end even if the blob is removed
    /// meanwhile.
    fn open_at(
        &self,
        digest: &Digest,
        offset: u64,
    ) -> Result<Option<Box<dyn Read + Send>>, StoreError>;

    /// Hash the whole stored blob. `Ok(true)`: it matches; `Ok(false)`: absent;
    /// [`StoreError::Corrupt`]: it did not match and was removed.
    fn verify(&self, digest: &Digest) -> Result<bool, StoreError>;

    /// Start or resume writing the blob; blocks while another writer (any process) holds it.
    fn begin(&self, digest: &Digest, size: Option<u64>) -> Result<Box<dyn BlobIngest>, StoreError>;

    /// Remove the complete blob unless a writer holds it. While the removal runs, writers
    /// of the blob wait, so one that begins meanwhile sees it absent and fetches it again.
    fn remove(&self, digest: &Digest) -> Result<Removal, StoreError>;

    /// Every complete blob with its size and last recorded use. Cost: one entry listing and
    /// one metadata lookup per blob.
    fn list(&self) -> Result<Vec<BlobEntry>, StoreError>;

    /// Record that the blob was used at `at` (persisted: it survives a restart and is seen
    /// by other processes that [`list`](Self::list)).
    fn touch(&self, digest: &Digest, at: SystemTime) -> Result<(), StoreError>;

    /// Bytes held by partial downloads; first removes those nobody writes that have not
    /// grown since `stale_before`.
    fn partials(&self, stale_before: Option<SystemTime>) -> Result<Partials, StoreError>;
}

/// The filesystem backend: `blobs/<alg>/<hex>`, `ingest/<alg>-<hex>.partial` and `.lock`.
/// The last use of a blob is its file's mtime (atime is unreliable under relatime/noatime).
#[derive(Debug, Clone)]
pub struct FsBackend {
    root: PathBuf,
}

impl FsBackend {
    /// The backend over an already opened store root (see [`crate::Store::open`]).
    pub(crate) fn new(root: PathBuf) -> FsBackend {
        FsBackend { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    pub(crate) fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("ingest").join(format!(
            "{}-{}.partial",
            digest.algorithm().as_str(),
            digest.hex()
        ))
    }

    pub(crate) fn lock_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("ingest").join(format!(
            "{}-{}.lock",
            digest.algorithm().as_str(),
            digest.hex()
        ))
    }

    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// See [`crate::Store::check`].
    pub(crate) fn check(
        &self,
        digest: &Digest,
        size: u64,
        shared: Option<Arc<Shared>>,
    ) -> Result<bool, StoreError> {
        let path = self.blob_path(digest);
        let Some(m) = safe::entry(&path)? else {
            return Ok(false);
        };
        if m.len() == size {
            return Ok(true);
        }
        let f = safe::open_read(&path)?;
        match CheckedBlob::new(f, path, digest, None, shared).verify() {
            Ok(()) => Err(StoreError::SizeMismatch {
                digest: digest.clone(),
                declared: size,
                actual: m.len(),
            }),
            Err(StoreError::Corrupt { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The blob's lock file, opened (created if needed) but not locked.
    pub(crate) fn lock_file(&self, digest: &Digest) -> Result<File, StoreError> {
        safe::open(
            &self.lock_path(digest),
            safe::options().create(true).truncate(false).write(true),
        )
    }

    /// Like [`lock_file`](Self::lock_file), locked without waiting; `None` when a writer
    /// holds it.
    fn try_lock(&self, digest: &Digest) -> Result<Option<File>, StoreError> {
        let f = self.lock_file(digest)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(StoreError::io(&self.lock_path(digest))(e)),
        }
    }
}

impl Backend for FsBackend {
    fn size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(safe::entry(&self.blob_path(digest))?.map(|m| m.len()))
    }

    fn open_at(
        &self,
        digest: &Digest,
        offset: u64,
    ) -> Result<Option<Box<dyn Read + Send>>, StoreError> {
        let path = self.blob_path(digest);
        let mut f = match safe::open_read(&path) {
            Ok(f) => f,
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(offset))
            .map_err(StoreError::io(&path))?;
        Ok(Some(Box::new(f)))
    }

    fn verify(&self, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.blob_path(digest);
        let f = match safe::open_read(&path) {
            Ok(f) => f,
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        CheckedBlob::new(f, path, digest, None, None).verify()?;
        Ok(true)
    }

    fn begin(&self, digest: &Digest, size: Option<u64>) -> Result<Box<dyn BlobIngest>, StoreError> {
        Ok(Box::new(Ingest::begin(self, None, digest, size)?))
    }

    fn remove(&self, digest: &Digest) -> Result<Removal, StoreError> {
        let path = self.blob_path(digest);
        let Some(m) = safe::entry(&path)? else {
            return Ok(Removal::Absent);
        };
        // Held across the unlink: a writer that begins meanwhile waits, then finds the blob
        // absent and fetches it, instead of taking "already done" for a file about to go.
        let Some(_lock) = self.try_lock(digest)? else {
            return Ok(Removal::Busy);
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(Removal::Removed { size: m.len() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removal::Absent),
            Err(e) => Err(StoreError::io(&path)(e)),
        }
    }

    fn list(&self) -> Result<Vec<BlobEntry>, StoreError> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(alg.as_str());
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&dir)(e)),
            };
            for e in entries {
                let e = e.map_err(StoreError::io(&dir))?;
                let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                // Anything that is not a well-formed digest name is not a blob (and is
                // never served): skip it.
                let Ok(digest) = format!("{}:{name}", alg.as_str()).parse::<Digest>() else {
                    continue;
                };
                // One lstat per entry; a link or another user's file is not a blob.
                let Ok(m) = e.metadata() else { continue };
                if safe::check_file(&e.path(), &m).is_err() {
                    continue;
                }
                out.push(BlobEntry {
                    digest,
                    size: m.len(),
                    last_use: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        Ok(out)
    }

    fn touch(&self, digest: &Digest, at: SystemTime) -> Result<(), StoreError> {
        let path = self.blob_path(digest);
        let f = safe::open_read(&path)?;
        // futimens with explicit times needs ownership, not write access.
        f.set_modified(at).map_err(StoreError::io(&path))
    }

    fn partials(&self, stale_before: Option<SystemTime>) -> Result<Partials, StoreError> {
        let dir = self.root.join("ingest");
        let mut out = Partials::default();
        for e in fs::read_dir(&dir).map_err(StoreError::io(&dir))? {
            let e = e.map_err(StoreError::io(&dir))?;
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".partial")) else {
                continue;
            };
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() {
                continue;
            }
            let stale = stale_before.is_some_and(|t| m.modified().is_ok_and(|mt| mt < t));
            if stale {
                if let Some(digest) = stem
                    .split_once('-')
                    .and_then(|(a, h)| format!("{a}:{h}").parse::<Digest>().ok())
                {
                    // Only a partial nobody is writing (its writer holds the lock); an
                    // unusable lock file keeps the partial (counted as held).
                    if let Ok(Some(_lock)) = self.try_lock(&digest) {
                        if fs::remove_file(e.path()).is_ok() {
                            out.removed += m.len();
                            continue;
                        }
                    }
                }
            }
            out.held += m.len();
        }
        Ok(out)
    }
}
