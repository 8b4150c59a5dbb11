//! A download in progress: `ingest/<alg>-<hex>.partial`, hashed as it is written, moved into
//! `blobs/` only when verified.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::{Digest, Verifier, VerifyError};

use crate::backend::{BlobIngest, FsBackend};
use crate::cache::Shared;
use crate::{safe, StoreError};

/// Holds the blob's lock file for as long as it lives.
pub struct Ingest {
    digest: Digest,
    size: Option<u64>,
    partial: PathBuf,
    target: PathBuf,
    out: Option<BufWriter<File>>,
    verifier: Verifier,
    _lock: File,
    done: bool,
    /// The store's accounting, told about the commit.
    shared: Option<Arc<Shared>>,
}

impl Ingest {
    pub(crate) fn begin(
        store: &FsBackend,
        shared: Option<Arc<Shared>>,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Ingest, StoreError> {
        let lock_path = store.lock_path(digest);
        let lock = store.lock_file(digest)?;
        lock.lock().map_err(StoreError::io(&lock_path))?;
        let partial = store.partial_path(digest);
        let target = store.blob_path(digest);
        let mut ingest = Ingest {
            digest: digest.clone(),
            size,
            partial: partial.clone(),
            target: target.clone(),
            out: None,
            verifier: Verifier::new(digest.clone(), size),
            _lock: lock,
            done: match size {
                Some(n) => store.check(digest, n, shared.clone())?,
                None => store.contains(digest),
            },
            shared,
        };
        if ingest.done {
            return Ok(ingest);
        }
        // Never through a link: one planted here would make ferry truncate and overwrite a
        // file of someone else's choosing, then rename the link into blobs/.
        let mut file = safe::open(
            &partial,
            safe::options()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true),
        )?;
        // Re-hash what a previous attempt left, so the final check covers every byte.
        let mut buf = vec![0u8; 256 * 1024];
        let mut valid = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(StoreError::io(&partial))?;
            if n == 0 {
                break;
            }
            if ingest.verifier.update(&buf[..n]).is_err() {
                // Longer than the blob can be: the partial is junk. Start again.
                ingest.verifier = Verifier::new(digest.clone(), size);
                valid = 0;
                break;
            }
            valid += n as u64;
        }
        file.set_len(valid).map_err(StoreError::io(&partial))?;
        file.seek(SeekFrom::Start(valid))
            .map_err(StoreError::io(&partial))?;
        ingest.out = Some(BufWriter::with_capacity(256 * 1024, file));
        Ok(ingest)
    }

    /// Whether the blob was already complete in the store when this ingest began (another
    /// process finished it while we waited for the lock). Then there is nothing to write.
    pub fn already_done(&self) -> bool {
        self.done
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes already held: where a download should resume (`Range: bytes=<offset>-`).
    pub fn offset(&self) -> u64 {
        self.verifier.seen()
    }

    /// Append bytes that continue the blob at [`offset`](Self::offset).
    pub fn write(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        if let Some(size) = self.size {
            if self.verifier.seen() + buf.len() as u64 > size {
                return Err(VerifyError::TooLong {
                    digest: self.digest.clone(),
                    expected: size,
                }
                .into());
            }
        }
        // Bytes are hashed only once they are in the file, so the hash never covers bytes a
        // failed write did not store.
        let out = self.out.as_mut().ok_or_else(|| done_error(&self.partial))?;
        out.write_all(buf).map_err(StoreError::io(&self.partial))?;
        self.verifier.update(buf)?;
        Ok(())
    }

    /// Throw away the partial bytes (the server would not resume, so the content restarts).
    pub fn restart(&mut self) -> Result<(), StoreError> {
        let out = self.out.as_mut().ok_or_else(|| done_error(&self.partial))?;
        out.flush().map_err(StoreError::io(&self.partial))?;
        let f = out.get_mut();
        f.set_len(0).map_err(StoreError::io(&self.partial))?;
        f.seek(SeekFrom::Start(0))
            .map_err(StoreError::io(&self.partial))?;
        self.verifier = Verifier::new(self.digest.clone(), self.size);
        Ok(())
    }

    /// Flush what was received so far to the partial file (kept for a later resume).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(StoreError::io(&self.partial))?;
        }
        Ok(())
    }

    /// Verify size and digest and move the blob into `blobs/`. On a mismatch the partial
    /// file is deleted (its bytes are wrong, so resuming from them would be too) and the
    /// error names the blob.
    pub fn commit(mut self) -> Result<PathBuf, StoreError> {
        if self.done {
            return Ok(self.target.clone());
        }
        let out = self.out.take().ok_or_else(|| done_error(&self.partial))?;
        let file = out.into_inner().map_err(|e| StoreError::Io {
            path: self.partial.clone(),
            source: e.into_error(),
        })?;
        let size = self.verifier.seen();
        let verifier =
            std::mem::replace(&mut self.verifier, Verifier::new(self.digest.clone(), None));
        if let Err(e) = verifier.finish() {
            drop(file);
            let _ = fs::remove_file(&self.partial);
            return Err(e.into());
        }
        // No fsync: a blob's safety against a killed process comes from verify-then-rename,
        // and an fsync per blob costs more than the whole transfer on a fast link (see
        // docs/BENCHMARKS.md). A cached blob is verified again before it goes into an output
        // (`CheckedBlob`), and `Store::check` hashes a blob whose size looks wrong.
        drop(file);
        fs::rename(&self.partial, &self.target).map_err(StoreError::io(&self.target))?;
        self.done = true;
        if let Some(s) = &self.shared {
            s.committed(&self.digest, size);
        }
        Ok(self.target.clone())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // Keep whatever arrived for the next attempt.
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
    }
}

fn done_error(path: &std::path::Path) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: io::Error::other("ingest already finished"),
    }
}

impl ferry_core::ResumableWrite for Ingest {
    fn offset(&self) -> u64 {
        Ingest::offset(self)
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write(buf).map_err(|e| match e {
            StoreError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        })
    }

    fn restart(&mut self) -> io::Result<()> {
        Ingest::restart(self).map_err(|e| io::Error::other(e.to_string()))
    }
}

impl BlobIngest for Ingest {
    fn already_done(&self) -> bool {
        self.done
    }

    fn offset(&self) -> u64 {
        Ingest::offset(self)
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        Ingest::write(self, buf)
    }

    fn restart(&mut self) -> Result<(), StoreError> {
        Ingest::restart(self)
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        Ingest::commit(*self).map(drop)
    }
}
