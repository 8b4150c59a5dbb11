//! Writing an archive while its blobs are still arriving. The archive's order is fixed, so a
//! writer can copy blob N as soon as it is verified while later blobs download: the copy
//! overlaps the transfer, and `-o -` starts streaming to a loader at once.
//!
//! Blobs this run downloaded were verified as they arrived and are copied as they are; blobs
//! that were already cached are verified in the same pass that copies them out. Their bytes
//! are streamed before the end of the blob tells whether they matched, so a damaged cached
//! blob fails the write (and is removed from the cache for the next run) instead of
//! completing an archive that holds it.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ferry_core::Digest;
use ferry_store::Store;

use crate::{Event, Progress};

/// Tells waiting readers when blobs land in the store (or that they never will). Wrap the
/// progress sink with it and hand it to the download.
pub struct Arrivals {
    inner: Arc<dyn Progress>,
    failed: Mutex<bool>,
    changed: Condvar,
    /// Blobs downloaded and verified by this run.
    verified: Mutex<HashSet<Digest>>,
}

impl Arrivals {
    pub fn new(inner: Arc<dyn Progress>) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            inner,
            failed: Mutex::new(false),
            changed: Condvar::new(),
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// The downloads stopped with an error: waiting readers give up.
    pub fn fail(&self) {
        if let Ok(mut f) = self.failed.lock() {
            *f = true;
        }
        self.changed.notify_all();
    }

    /// Block until `digest` is in `store`, or the downloads failed.
    pub fn wait_for(&self, store: &Store, digest: &Digest) -> io::Result<()> {
        let mut failed = self
            .failed
            .lock()
            .map_err(|_| io::Error::other("a download task panicked"))?;
        loop {
            if store.contains(digest) {
                return Ok(());
            }
            if *failed {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    format!("blob {digest} was not downloaded"),
                ));
            }
            // The timeout only guards against a notification lost between check and wait.
            failed = self
                .changed
                .wait_timeout(failed, Duration::from_millis(200))
                .map_err(|_| io::Error::other("a download task panicked"))?
                .0;
        }
    }
}

impl Progress for Arrivals {
    fn event(&self, event: Event) {
        if let Event::BlobDone { digest, .. } = &event {
            if let Ok(mut v) = self.verified.lock() {
                v.insert(digest.clone());
            }
        }
        let arrived = matches!(event, Event::BlobDone { .. } | Event::BlobCached { .. });
        self.inner.event(event);
        if arrived {
            // Take the lock so a reader between its check and its wait cannot miss this.
            drop(self.failed.lock());
            self.changed.notify_all();
        }
    }
}

/// A [`ferry_archive::BlobReader`] over the store that waits for blobs still downloading.
pub struct ArrivingReader {
    pub store: Store,
    pub arrivals: Arc<Arrivals>,
}

impl ArrivingReader {
    fn fresh(&self, digest: &Digest) -> bool {
        self.arrivals
            .verified
            .lock()
            .is_ok_and(|v| v.contains(digest))
    }
}

/// The store's error inside an I/O error, where callers can still find it
/// ([`ferry_store::StoreError::in_io`]).
fn store_io(e: ferry_store::StoreError) -> io::Error {
    let kind = match &e {
        ferry_store::StoreError::Io { source, .. } => source.kind(),
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}

impl ferry_archive::BlobReader for ArrivingReader {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        self.arrivals.wait_for(&self.store, digest)?;
        if self.fresh(digest) {
            return Ok(Box::new(self.store.open_blob(digest).map_err(store_io)?));
        }
        Ok(Box::new(
            self.store.open_verified(digest, None).map_err(store_io)?,
        ))
    }

    /// Manifests and configs: verified, and at most 4 MiB.
    fn read_small(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        self.arrivals.wait_for(&self.store, digest)?;
        self.store.read_small(digest).map_err(store_io)
    }

    /// A layer that did not decode may be a damaged cached copy: verify it (removing it if
    /// so) and report that instead of the decoder's complaint.
    fn check(&self, digest: &Digest) -> io::Result<()> {
        let verdict = self
            .store
            .open_verified(digest, None)
            .and_then(|b| b.verify());
        match verdict {
            Err(e @ ferry_store::StoreError::Corrupt { .. }) => Err(store_io(e)),
            _ => Ok(()),
        }
    }
}
