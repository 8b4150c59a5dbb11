//! Reading a cached blob back, verified in the same pass. A blob was verified when it entered
//! the cache, but the disk, a crash or another program may have changed it since; whatever
//! copies it out hashes it as it copies, so a damaged copy is caught without a second pass
//! over the bytes.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::PathBuf;

use ferry_core::{Digest, Verifier};

use crate::{safe, StoreError};

/// A cached blob opened for reading. It hashes every byte it returns; at the end of the file
/// it fails (`InvalidData`, holding a [`StoreError::Corrupt`]) instead of reporting the end
/// when the content does not match, and removes the damaged file from the cache so the next
/// attempt fetches the blob again. The caller must not use the bytes it got before that error.
pub struct CheckedBlob {
    file: File,
    path: PathBuf,
    digest: Digest,
    verifier: Option<Verifier>,
}

impl CheckedBlob {
    pub(crate) fn new(file: File, path: PathBuf, digest: &Digest, size: Option<u64>) -> Self {
        CheckedBlob {
            file,
            path,
            digest: digest.clone(),
            verifier: Some(Verifier::new(digest.clone(), size)),
        }
    }

    /// Read to the end and report whether the content matched: for callers that want the
    /// verdict, not the bytes.
    pub fn verify(mut self) -> Result<(), StoreError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StoreError::from_read(&self.path, e)),
            }
        }
    }

    fn corrupt(&mut self, detail: String) -> io::Error {
        self.verifier = None;
        // Only the file this reader opened: a good copy put there since stays.
        if safe::same_file(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
        io::Error::new(
            io::ErrorKind::InvalidData,
            StoreError::Corrupt {
                digest: self.digest.clone(),
                detail,
            },
        )
    }
}

impl Read for CheckedBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        let Some(v) = self.verifier.as_mut() else {
            return Ok(n);
        };
        if n > 0 {
            if v.update(&buf[..n]).is_err() {
                let detail = "it is longer than its descriptor declares".to_string();
                return Err(self.corrupt(detail));
            }
            return Ok(n);
        }
        let v = self.verifier.take().expect("checked above");
        match v.finish() {
            Ok(()) => Ok(0),
            Err(ferry_core::VerifyError::DigestMismatch { actual, .. }) => {
                Err(self.corrupt(format!("its content hashes to {actual}")))
            }
            Err(ferry_core::VerifyError::TooShort { expected, got, .. }) => {
                Err(self.corrupt(format!("it holds {got} bytes, not {expected}")))
            }
            Err(e) => Err(self.corrupt(e.to_string())),
        }
    }
}
