//! `ferry-store` is the content-addressed blob cache every transfer goes through.
//!
//! Verified blobs live at `blobs/<algorithm>/<hex>` and nothing else ever appears there:
//! downloads are written to `ingest/<hex>.partial`, hashed as they arrive, and renamed into
//! `blobs/` only once size and digest match. A partial file survives a dropped connection
//! or a killed process, so the next attempt continues from the bytes it already has; a
//! per-blob lock file keeps two processes from writing the same partial at once.
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

mod ingest;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ferry_core::{Digest, Verifier, VerifyError};

pub use ingest::Ingest;

/// What went wrong in the store. Every variant names the file involved.
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

/// A content-addressed blob store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Open (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        for sub in ["blobs/sha256", "blobs/sha512", "ingest"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(StoreError::io(&p))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the verified blob `digest` lives (whether or not it is there yet).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Where a download in progress keeps its bytes.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
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

    /// Whether the verified blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Whether the blob is present with its expected size. A file of another size can only be
    /// left by a crash of the machine (blobs are renamed into place after verification, but
    /// not fsynced): it is removed, so the blob is fetched again instead of trusted.
    pub fn has(&self, digest: &Digest, size: u64) -> bool {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) if m.is_file() && m.len() == size => true,
            Ok(m) if m.is_file() => {
                let _ = fs::remove_file(self.blob_path(digest));
                false
            }
            _ => false,
        }
    }

    /// The size of a present blob.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    /// Open a verified blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(StoreError::io(&p))
    }

    /// Read a whole (small) verified blob: manifests and configs.
    pub fn read_small(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(digest);
        let mut out = Vec::new();
        File::open(&p)
            .and_then(|mut f| f.read_to_end(&mut out))
            .map_err(StoreError::io(&p))?;
        Ok(out)
    }

    /// Store `bytes` as blob `digest` after verifying them; a no-op when present.
    pub fn put_verified(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if self.has(digest, bytes.len() as u64) {
            return Ok(());
        }
        let mut v = Verifier::new(digest.clone(), Some(bytes.len() as u64));
        v.update(bytes)?;
        v.finish()?;
        let target = self.blob_path(digest);
        let tmp =
            self.root
                .join("ingest")
                .join(format!("{}.{}.tmp", digest.hex(), std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            fs::rename(&tmp, &target)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::Io {
                path: target.clone(),
                source: e,
            }
        })
    }

    /// Start or resume writing blob `digest`. Blocks while another process writes the same
    /// blob; the caller should check [`contains`](Self::contains) again afterwards (see
    /// [`Ingest::already_done`]). The bytes already in the partial file are re-hashed so
    /// that the final check covers the whole blob.
    pub fn begin(&self, digest: &Digest, size: Option<u64>) -> Result<Ingest, StoreError> {
        Ingest::begin(self, digest, size)
    }

    /// Bytes held in partial downloads (what a resume would reuse).
    pub fn partial_bytes(&self, digest: &Digest) -> u64 {
        fs::metadata(self.partial_path(digest))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
