//! Writing an archive while its blobs are still arriving. The archive's order is fixed, so a
//! writer can copy blob N as soon as it is verified while later blobs download: the copy
//! overlaps the transfer, and `-o -` starts streaming to a loader at once.

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
}

impl Arrivals {
    pub fn new(inner: Arc<dyn Progress>) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            inner,
            failed: Mutex::new(false),
            changed: Condvar::new(),
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

impl ferry_archive::BlobReader for ArrivingReader {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        self.arrivals.wait_for(&self.store, digest)?;
        let f = self
            .store
            .open_blob(digest)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Box::new(f))
    }
}
