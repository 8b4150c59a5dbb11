//! Reading a cached blob back, verified. A blob was verified when it entered the cache, but
//! the disk, a crash or another program may have changed it since; a reader that must not
//! pass on damaged bytes hashes them as it reads, so a damaged copy is caught without a
//! second pass over the bytes.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::{Digest, Verifier, VerifyError};

use crate::cache::Shared;
use crate::{safe, StoreError};

/// A cached blob opened for a verified read. Not an [`io::Read`]: a damaged copy is a
/// [`StoreError::Corrupt`] the caller matches on, not an I/O error to dig it out of.
pub struct CheckedBlob {
    file: File,
    path: PathBuf,
    digest: Digest,
    /// `None` once the end was reached (verified) or the content failed.
    verifier: Option<Verifier>,
    /// Told when a damaged copy is removed, so the accounting follows.
    shared: Option<Arc<Shared>>,
}

impl CheckedBlob {
    pub(crate) fn new(
        file: File,
        path: PathBuf,
        digest: &Digest,
        size: Option<u64>,
        shared: Option<Arc<Shared>>,
    ) -> Self {
        CheckedBlob {
            file,
            path,
            digest: digest.clone(),
            verifier: Some(Verifier::new(digest.clone(), size)),
            shared,
        }
    }

    /// Read the next bytes into `buf`, hashing them. `Ok(0)` means the end, and that the
    /// whole blob matched its digest (and size, when given). Bytes past the declared size
    /// are refused before they are returned. On a mismatch the damaged file is removed from
    /// the cache and [`StoreError::Corrupt`] returned; the caller must not use the bytes it
    /// got before that. Reading on after the end or an error is an error.
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, StoreError> {
        let Some(v) = self.verifier.as_mut() else {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: io::Error::other("read past the end of a verified blob"),
            });
        };
        let n = loop {
            match self.file.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.verifier = None;
                    return Err(StoreError::io(&self.path)(e));
                }
            }
        };
        if n > 0 {
            if v.update(&buf[..n]).is_err() {
                return Err(self.corrupt("it is longer than its descriptor declares".into()));
            }
            return Ok(n);
        }
        let v = self.verifier.take().expect("checked above");
        match v.finish() {
            Ok(()) => Ok(0),
            Err(VerifyError::DigestMismatch { actual, .. }) => {
                Err(self.corrupt(format!("its content hashes to {actual}")))
            }
            Err(VerifyError::TooShort { expected, got, .. }) => {
                Err(self.corrupt(format!("it holds {got} bytes, not {expected}")))
            }
            Err(e) => Err(self.corrupt(e.to_string())),
        }
    }

    /// Read to the end and report whether the content matched: for callers that want the
    /// verdict, not the bytes.
    pub fn verify(mut self) -> Result<(), StoreError> {
        let mut buf = vec![0u8; 256 * 1024];
        while self.read_chunk(&mut buf)? > 0 {}
        Ok(())
    }

    fn corrupt(&mut self, detail: String) -> StoreError {
        self.verifier = None;
        // Only the file this reader opened: a good copy put there since stays.
        if safe::same_file(&self.file, &self.path) && fs::remove_file(&self.path).is_ok() {
            if let Some(s) = &self.shared {
                s.forget(&self.digest);
            }
        }
        StoreError::Corrupt {
            digest: self.digest.clone(),
            detail,
        }
    }
}
