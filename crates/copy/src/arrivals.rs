//! Writing an archive while its blobs are still arriving. The archive's order is fixed, so a
//! writer can copy blob N as soon as it is ready while later blobs download: the copy
//! overlaps the transfer, and `-o -` starts streaming to a loader at once.
//!
//! A blob the downloads handle is ready once they announce it: downloaded and verified
//! ([`Event::BlobDone`]), or found in the cache and verified again ([`Event::BlobCached`]).
//! A damaged cached copy is fetched again before it is announced, so the writer only ever
//! copies bytes known to be good, and nothing damaged reaches an output, not even a stream
//! whose bytes cannot be taken back.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex};

use ferry_core::Digest;
use ferry_store::{Store, StoreError};

use crate::{Event, Progress};

/// Tells waiting readers when blobs are ready (or that they never will be). Wrap the
/// progress sink with it and hand it to the download.
pub struct Arrivals {
    inner: Arc<dyn Progress>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    failed: bool,
    /// The blobs the downloads handle; `None` until they start.
    expected: Option<HashSet<Digest>>,
    /// Those announced so far.
    ready: HashSet<Digest>,
}

impl Arrivals {
    pub fn new(inner: Arc<dyn Progress>) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            inner,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    /// The downloads start: these are the blobs they will announce. Readers wait for this.
    pub(crate) fn expect(&self, digests: impl IntoIterator<Item = Digest>) {
        if let Ok(mut s) = self.state.lock() {
            s.expected = Some(digests.into_iter().collect());
        }
        self.changed.notify_all();
    }

    /// The downloads stopped with an error: waiting readers give up.
    pub fn fail(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.failed = true;
        }
        self.changed.notify_all();
    }

    /// Block until `digest` may be read: announced by the downloads, or not one of theirs
    /// (a manifest, which the resolution verified and stored). Fails when the downloads did.
    pub fn wait_for(&self, digest: &Digest) -> io::Result<()> {
        let panicked = |_| io::Error::other("a download task panicked");
        let mut s = self.state.lock().map_err(panicked)?;
        loop {
            if s.failed {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    format!("blob {digest} was not downloaded"),
                ));
            }
            if let Some(expected) = &s.expected {
                if !expected.contains(digest) || s.ready.contains(digest) {
                    return Ok(());
                }
            }
            // Every change is made under the lock, so no notification is missed.
            s = self.changed.wait(s).map_err(panicked)?;
        }
    }
}

impl Progress for Arrivals {
    fn arrivals(&self) -> Option<&Arrivals> {
        Some(self)
    }

    fn event(&self, event: Event) {
        let ready = match &event {
            Event::BlobDone { digest, .. } | Event::BlobCached { digest, .. } => {
                Some(digest.clone())
            }
            _ => None,
        };
        self.inner.event(event);
        if let Some(d) = ready {
            if let Ok(mut s) = self.state.lock() {
                s.ready.insert(d);
            }
            self.changed.notify_all();
        }
    }
}

/// A [`ferry_archive::BlobReader`] over the store that waits until each blob is ready (see
/// [`Arrivals`]) and then copies it as it is.
pub struct ArrivingReader {
    pub store: Store,
    pub arrivals: Arc<Arrivals>,
}

/// The store's error as the I/O error a [`ferry_archive::BlobReader`] returns (its message
/// and kind; nobody looks inside).
fn store_io(e: StoreError) -> io::Error {
    let kind = match &e {
        StoreError::Io { source, .. } => source.kind(),
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}

impl ferry_archive::BlobReader for ArrivingReader {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        self.arrivals.wait_for(digest)?;
        Ok(Box::new(self.store.open_blob(digest).map_err(store_io)?))
    }

    /// Manifests and configs: at most 4 MiB (the store's limit and message).
    fn read_small(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        self.arrivals.wait_for(digest)?;
        self.store.read_small(digest).map_err(store_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn digest(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    /// Runs `wait_for(d)` on a thread; the receiver gets its result.
    fn waiter(a: &Arc<Arrivals>, d: &Digest) -> mpsc::Receiver<io::Result<()>> {
        let (tx, rx) = mpsc::channel();
        let (a, d) = (a.clone(), d.clone());
        std::thread::spawn(move || {
            let _ = tx.send(a.wait_for(&d));
        });
        rx
    }

    const SHORT: Duration = Duration::from_millis(100);
    const LONG: Duration = Duration::from_secs(5);

    #[test]
    fn a_cached_blob_is_ready_only_once_announced() {
        let a = Arrivals::new(Arc::new(crate::NoProgress));
        let (layer, manifest) = (digest("layer"), digest("manifest"));
        let on_layer = waiter(&a, &layer);
        let on_manifest = waiter(&a, &manifest);
        // Before the downloads say what they handle, nothing is ready: a cached blob may
        // still be one they are about to check.
        assert!(on_manifest.recv_timeout(SHORT).is_err());
        a.expect([layer.clone()]);
        on_manifest.recv_timeout(LONG).unwrap().unwrap();
        assert!(on_layer.recv_timeout(SHORT).is_err(), "not announced yet");
        a.event(Event::BlobCached {
            digest: layer.clone(),
            size: 1,
        });
        on_layer.recv_timeout(LONG).unwrap().unwrap();
    }

    #[test]
    fn waiting_readers_give_up_when_the_downloads_fail() {
        let a = Arrivals::new(Arc::new(crate::NoProgress));
        let layer = digest("layer");
        a.expect([layer.clone()]);
        let on_layer = waiter(&a, &layer);
        assert!(on_layer.recv_timeout(SHORT).is_err());
        a.fail();
        let err = on_layer.recv_timeout(LONG).unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    }

    #[test]
    fn a_waiting_reader_wakes_within_milliseconds_of_the_arrival() {
        let a = Arrivals::new(Arc::new(crate::NoProgress));
        let layer = digest("layer");
        a.expect([layer.clone()]);
        let on_layer = waiter(&a, &layer);
        // Let the reader settle into its wait, well past any short polling period.
        assert!(on_layer.recv_timeout(Duration::from_millis(250)).is_err());
        let announced = std::time::Instant::now();
        a.event(Event::BlobDone {
            digest: layer.clone(),
            size: 1,
        });
        on_layer.recv_timeout(LONG).unwrap().unwrap();
        let woke = announced.elapsed();
        // Woken by the notification, not by a timed poll (which took up to 200 ms).
        assert!(woke < Duration::from_millis(30), "woke after {woke:?}");
    }
}
