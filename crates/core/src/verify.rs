//! Verification of blob bytes against their expected size and digest.
//!
//! Every byte ferry takes from a network or an archive goes through a [`Verifier`]; nothing is
//! trusted until [`Verifier::finish`] says so. Content-Length is never trusted on its own.

use std::io::{self, Read};

use sha2::Digest as _;

use crate::digest::{Algorithm, Digest};

/// Why a blob failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("blob {digest} is larger than the {expected} bytes its descriptor declares")]
    TooLong { digest: Digest, expected: u64 },
    #[error("blob {digest} ended after {got} bytes but its descriptor declares {expected}")]
    TooShort {
        digest: Digest,
        expected: u64,
        got: u64,
    },
    #[error("blob {expected} does not match its digest: its content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// Incremental size and digest check. Feed bytes with [`update`](Self::update) in order,
/// then call [`finish`](Self::finish).
pub struct Verifier {
    expected: Digest,
    expected_size: Option<u64>,
    seen: u64,
    hasher: Hasher,
}

impl Verifier {
    /// A verifier for a blob of `expected` digest and, when known, `expected_size` bytes.
    pub fn new(expected: Digest, expected_size: Option<u64>) -> Verifier {
        let hasher = match expected.algorithm() {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        };
        Verifier {
            expected,
            expected_size,
            seen: 0,
            hasher,
        }
    }

    /// Bytes seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Hash `buf`. Fails as soon as the blob grows past its declared size.
    pub fn update(&mut self, buf: &[u8]) -> Result<(), VerifyError> {
        self.seen += buf.len() as u64;
        if let Some(size) = self.expected_size {
            if self.seen > size {
                return Err(VerifyError::TooLong {
                    digest: self.expected.clone(),
                    expected: size,
                });
            }
        }
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(buf),
            Hasher::Sha512(h) => h.update(buf),
        }
        Ok(())
    }

    /// Check the size and digest of everything fed so far.
    pub fn finish(self) -> Result<(), VerifyError> {
        if let Some(size) = self.expected_size {
            if self.seen != size {
                return Err(VerifyError::TooShort {
                    digest: self.expected,
                    expected: size,
                    got: self.seen,
                });
            }
        }
        let actual = match self.hasher {
            Hasher::Sha256(h) => Digest::from_parts(Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => Digest::from_parts(Algorithm::Sha512, hex::encode(h.finalize())),
        };
        if actual != self.expected {
            return Err(VerifyError::DigestMismatch {
                expected: self.expected,
                actual,
            });
        }
        Ok(())
    }
}

/// A reader that verifies what passes through it and returns an error instead of EOF when
/// the content does not match.
pub struct VerifyingReader<R> {
    inner: R,
    verifier: Option<Verifier>,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            verifier: Some(Verifier::new(expected, expected_size)),
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let Some(v) = self.verifier.as_mut() else {
            return Ok(n);
        };
        if n == 0 {
            let v = self.verifier.take().expect("checked above");
            v.finish()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            return Ok(0);
        }
        v.update(&buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }
}

/// Where a resumable download writes: it knows how many bytes it already holds, takes the
/// bytes that follow, and can start over when a server will not resume. Implemented by the
/// store's ingest file; the registry client drives it.
pub trait ResumableWrite: Send {
    /// Bytes already held; a download continues from here.
    fn offset(&self) -> u64;
    /// Append bytes that continue the content at [`offset`](Self::offset). Fails when the
    /// content grows past its declared size.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()>;
    /// Discard everything held and start from byte 0.
    fn restart(&mut self) -> std::io::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_matching_content() {
        let d = Digest::sha256_of(b"hello");
        let mut r = VerifyingReader::new(&b"hello"[..], d, Some(5));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn rejects_wrong_digest_short_and_long() {
        let d = Digest::sha256_of(b"hello");
        let mut out = Vec::new();
        let err = VerifyingReader::new(&b"hellO"[..], d.clone(), Some(5))
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(err.to_string().contains("does not match"));
        let err = VerifyingReader::new(&b"hell"[..], d.clone(), Some(5))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("ended after 4 bytes"));
        let err = VerifyingReader::new(&b"hello!"[..], d, Some(5))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("larger than"));
    }

    #[test]
    fn sha512_is_verified() {
        let hexd = hex::encode(sha2::Sha512::digest(b"x"));
        let d: Digest = format!("sha512:{hexd}").parse().unwrap();
        let mut v = Verifier::new(d, None);
        v.update(b"x").unwrap();
        v.finish().unwrap();
    }
}
