//! Writing an archive while its blobs are still arriving. The archive's order is fixed, so a
//! writer can copy blob N as soon as it is verified while later blobs download: the copy
//! overlaps the transfer, and `-o -` starts streaming to a loader at once.
//!
//! Blobs this run downloaded were verified as they arrived and are copied as they are; blobs
//! that were already cached are verified in the same pass that copies them out. A damaged
//! cached blob is removed from the cache and, where the writer can still rewrite what it
//! wrote (a file of an OCI layout, a legacy layer unpacked to scratch first), fetched again
//! through [`Refetch`] and read once more. On a stream (`-o -`) its bytes are already out
//! before the end of the blob tells whether they matched, so the write fails instead of
//! completing an archive that holds them.

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
    refetch: Mutex<Option<Arc<Refetch>>>,
}

/// Fetches one blob of the pull again, from the registry, into the store: what the downloads
/// leave behind for a writer that finds a cached copy damaged.
pub(crate) struct Refetch {
    pub(crate) client: ferry_registry::Client,
    pub(crate) store: Store,
    pub(crate) blobs:
        std::collections::HashMap<Digest, (ferry_core::Reference, ferry_core::Descriptor)>,
    /// Weak: the progress sink is the `Arrivals` that holds this.
    pub(crate) progress: std::sync::Weak<dyn Progress>,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl Refetch {
    /// Fetch `digest` again, blocking (call it from a writer's thread, not an async task).
    fn fetch(&self, digest: &Digest) -> Result<bool, crate::CopyError> {
        let (Some((r, d)), Some(progress)) = (self.blobs.get(digest), self.progress.upgrade())
        else {
            return Ok(false);
        };
        self.runtime.block_on(crate::engine::download_one(
            &self.client,
            &self.store,
            r,
            d,
            progress.as_ref(),
            None,
        ))?;
        Ok(true)
    }
}

impl Arrivals {
    pub fn new(inner: Arc<dyn Progress>) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            inner,
            failed: Mutex::new(false),
            changed: Condvar::new(),
            verified: Mutex::new(HashSet::new()),
            refetch: Mutex::new(None),
        })
    }

    pub(crate) fn set_refetch(&self, r: Refetch) {
        if let Ok(mut slot) = self.refetch.lock() {
            *slot = Some(Arc::new(r));
        }
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
    fn arrivals(&self) -> Option<&Arrivals> {
        Some(self)
    }

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

    /// Manifests and configs: verified, and at most 4 MiB. A damaged cached copy is fetched
    /// again once (nothing of it was handed out yet).
    fn read_small(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        self.arrivals.wait_for(&self.store, digest)?;
        match self.store.read_small(digest).map_err(store_io) {
            Err(e) if ferry_store::StoreError::is_corrupt_io(&e) && self.repair(digest, &e)? => {
                self.store.read_small(digest).map_err(store_io)
            }
            other => other,
        }
    }

    /// After a failed read: if the cached copy is damaged (the error says so, or hashing it
    /// shows it), it is removed; then it is fetched again when the downloads left the means,
    /// else the damage is reported (better than a decoder's complaint about it).
    fn repair(&self, digest: &Digest, error: &io::Error) -> io::Result<bool> {
        let damaged = match ferry_store::StoreError::in_io(error) {
            Some(ferry_store::StoreError::Corrupt { .. }) => None,
            _ => match self
                .store
                .open_verified(digest, None)
                .and_then(|b| b.verify())
            {
                Err(e @ ferry_store::StoreError::Corrupt { .. }) => Some(e),
                _ => return Ok(false),
            },
        };
        let refetch = self.arrivals.refetch.lock().ok().and_then(|r| r.clone());
        let Some(refetch) = refetch.filter(|r| r.blobs.contains_key(digest)) else {
            return match damaged {
                Some(e) => Err(store_io(e)),
                None => Ok(false),
            };
        };
        self.arrivals.event(Event::Warning {
            message: format!(
                "{}; downloading it again",
                damage_text(error, damaged.as_ref())
            ),
        });
        refetch.fetch(digest).map_err(io::Error::other)
    }
}

fn damage_text(error: &io::Error, damaged: Option<&ferry_store::StoreError>) -> String {
    match damaged {
        Some(e) => e.to_string(),
        None => error.to_string(),
    }
}
