//! The policy a long-running server needs on top of a [`Backend`]: size accounting, pins
//! (leases held while a blob is served or awaited), LRU and age eviction, and a verify-once
//! rule for serving blobs after a restart. Every `Store` clone shares one [`Shared`].
//!
//! Accounting assumes this process is the main writer: commits and removals made through
//! this process are counted as they happen; what other processes (a `ferry pull` beside the
//! server) add or remove is seen at the next [`crate::Store::rescan`] or when an eviction
//! finds a blob already gone. Eviction is safe regardless: it never removes a blob a writer
//! of any process holds locked, nor one pinned in this process.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ferry_core::Digest;

use crate::backend::{Backend, Removal};
use crate::StoreError;

/// A use is written to the backend (the file's mtime) at most this often per blob: the
/// in-memory record is exact, the persisted one only needs to order blobs after a restart.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Limits the cache is kept under by [`crate::Store::evict`] (and after each commit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes held: complete blobs plus partial downloads.
    pub max_size: Option<u64>,
    /// Blobs unused for longer than this are removed, and partial downloads not written to
    /// for longer than this.
    pub max_age: Option<Duration>,
}

/// Counters and sizes for metrics; cheap to read (no I/O).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Complete blobs known to the accounting, and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// Bytes in partial downloads at the last scan or eviction.
    pub partial_bytes: u64,
    /// Distinct blobs pinned now.
    pub pinned: u64,
    /// Blobs (and their bytes) removed by eviction since the store was opened.
    pub evicted_blobs: u64,
    pub evicted_bytes: u64,
    /// Stale partial-download bytes removed by eviction.
    pub evicted_partial_bytes: u64,
    /// Cached blobs found damaged when verified before a first serve (and removed).
    pub damaged: u64,
}

/// What one eviction pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    pub blobs: u64,
    pub bytes: u64,
    pub partial_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    last_use: SystemTime,
    /// The last use written to the backend.
    persisted: SystemTime,
}

#[derive(Default)]
struct State {
    /// `None` until first needed: a short `ferry pull` never pays for the scan.
    index: Option<HashMap<Digest, Entry>>,
    total: u64,
    partial_bytes: u64,
    pins: HashMap<Digest, usize>,
    /// Blobs this process wrote (verified on arrival) or hashed since it opened the store.
    verified: HashSet<Digest>,
    limits: Limits,
    stats: CacheStats,
}

pub(crate) struct Shared {
    backend: Arc<dyn Backend>,
    state: Mutex<State>,
    /// One verification at a time per blob: concurrent first serves hash it once.
    verifying: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A lease on a blob: while any `Pin` on it lives, eviction leaves it alone. Take one before
/// serving a blob, or for each blob a pull in progress will need (it need not be present
/// yet). Dropping it records the blob's last use.
#[must_use = "a pin protects the blob only while it is held"]
pub struct Pin {
    shared: Arc<Shared>,
    digest: Digest,
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pin").field(&self.digest).finish()
    }
}

impl Pin {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(n) = st.pins.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                st.pins.remove(&self.digest);
            }
        }
        drop(st);
        self.shared.used(&self.digest, SystemTime::now());
    }
}

/// A cached blob opened for serving: verified once in this process, pinned while it lives.
pub struct ServedBlob {
    /// Positioned at the offset asked for.
    pub reader: Box<dyn std::io::Read + Send>,
    /// The whole blob's size.
    pub size: u64,
    pub pin: Pin,
}

impl Shared {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Shared {
        Shared {
            backend,
            state: Mutex::default(),
            verifying: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves counters, not invariants, behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state with the index built (scanning the backend the first time).
    fn indexed(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let mut st = self.lock();
        if st.index.is_none() {
            let listed = self.backend.list()?;
            let partials = self.backend.partials(None)?;
            let mut index = HashMap::with_capacity(listed.len());
            let mut total = 0;
            for b in listed {
                total += b.size;
                index.insert(b.digest, entry(b.size, b.last_use));
            }
            st.index = Some(index);
            st.total = total;
            st.partial_bytes = partials.held;
        }
        Ok(st)
    }

    /// A blob this process stored (verified on arrival).
    pub(crate) fn committed(&self, digest: &Digest, size: u64) {
        let now = SystemTime::now();
        let over = {
            let mut st = self.lock();
            st.verified.insert(digest.clone());
            let State { index, total, .. } = &mut *st;
            if let Some(index) = index {
                if let Some(old) = index.insert(digest.clone(), entry(size, now)) {
                    *total -= old.size;
                }
                *total += size;
            }
            st.index.is_some()
                && st
                    .limits
                    .max_size
                    .is_some_and(|max| st.total + st.partial_bytes > max)
        };
        if over {
            // Best effort: a failure here must not fail the commit that triggered it; the
            // next explicit eviction reports it.
            let _ = self.evict_at(now);
        }
    }

    /// A blob this process found damaged and removed, or saw vanish.
    pub(crate) fn forget(&self, digest: &Digest) {
        let mut st = self.lock();
        st.verified.remove(digest);
        let State { index, total, .. } = &mut *st;
        if let Some(old) = index.as_mut().and_then(|i| i.remove(digest)) {
            *total -= old.size;
        }
    }

    fn used(&self, digest: &Digest, at: SystemTime) {
        let persist = {
            let mut st = self.lock();
            match st.index.as_mut().and_then(|i| i.get_mut(digest)) {
                Some(e) => {
                    e.last_use = e.last_use.max(at);
                    let due = at
                        .duration_since(e.persisted)
                        .is_ok_and(|d| d >= TOUCH_EVERY);
                    if due {
                        e.persisted = at;
                    }
                    due
                }
                // Not indexed (yet): the next scan reads the persisted time, so write it.
                None => true,
            }
        };
        if persist {
            // A failed touch costs ordering precision after a restart, nothing more.
            let _ = self.backend.touch(digest, at);
        }
    }

    pub(crate) fn pin(self: &Arc<Self>, digest: &Digest) -> Pin {
        *self.lock().pins.entry(digest.clone()).or_default() += 1;
        self.used(digest, SystemTime::now());
        Pin {
            shared: Arc::clone(self),
            digest: digest.clone(),
        }
    }

    pub(crate) fn set_limits(&self, limits: Limits) -> Result<CacheStats, StoreError> {
        self.indexed()?.limits = limits;
        self.stats()
    }

    pub(crate) fn stats(&self) -> Result<CacheStats, StoreError> {
        let st = self.indexed()?;
        Ok(CacheStats {
            blobs: st.index.as_ref().map_or(0, |i| i.len() as u64),
            bytes: st.total,
            partial_bytes: st.partial_bytes,
            pinned: st.pins.len() as u64,
            ..st.stats
        })
    }

    /// Rebuild the accounting from the backend, keeping this process's newer uses and its
    /// verified set for blobs still there with the same size.
    pub(crate) fn rescan(&self) -> Result<CacheStats, StoreError> {
        let listed = self.backend.list()?;
        let partials = self.backend.partials(None)?;
        {
            let mut st = self.lock();
            let old = st.index.take().unwrap_or_default();
            let mut index = HashMap::with_capacity(listed.len());
            let mut total = 0;
            for b in listed {
                let mut e = entry(b.size, b.last_use);
                if let Some(o) = old.get(&b.digest).filter(|o| o.size == b.size) {
                    e.last_use = e.last_use.max(o.last_use);
                    e.persisted = e.persisted.max(o.persisted);
                }
                total += b.size;
                index.insert(b.digest, e);
            }
            st.verified.retain(|d| {
                old.get(d)
                    .zip(index.get(d))
                    .is_some_and(|(o, n)| o.size == n.size)
            });
            st.index = Some(index);
            st.total = total;
            st.partial_bytes = partials.held;
        }
        self.stats()
    }

    /// Remove blobs unused since `now - max_age`, then the least recently used until the
    /// cache is under `max_size`, skipping pinned blobs and blobs a writer holds. A blob
    /// that cannot be removed is skipped; the first such error is returned after the pass
    /// (what was removed is counted in the stats either way).
    pub(crate) fn evict_at(&self, now: SystemTime) -> Result<Evicted, StoreError> {
        let limits = self.lock().limits;
        let mut out = Evicted::default();
        let partials = self
            .backend
            .partials(limits.max_age.and_then(|a| now.checked_sub(a)))?;
        out.partial_bytes = partials.removed;
        let candidates = {
            let mut st = self.indexed()?;
            st.partial_bytes = partials.held;
            st.stats.evicted_partial_bytes += partials.removed;
            let mut c: Vec<(SystemTime, Digest)> = st
                .index
                .as_ref()
                .expect("indexed")
                .iter()
                .filter(|(d, _)| !st.pins.contains_key(*d))
                .map(|(d, e)| (e.last_use, d.clone()))
                .collect();
            c.sort();
            c
        };
        let cutoff = limits.max_age.and_then(|a| now.checked_sub(a));
        let mut failed = None;
        for (last_use, digest) in candidates {
            let mut st = self.lock();
            let too_old = cutoff.is_some_and(|c| last_use < c);
            let too_big = limits
                .max_size
                .is_some_and(|max| st.total + st.partial_bytes > max);
            if !too_old && !too_big {
                // Sorted oldest first: nothing later is older, and the size is met.
                break;
            }
            // Checked again under the lock that `pin` takes: a pin taken since the
            // candidates were listed, or a use recorded since, keeps the blob.
            let current = st.index.as_ref().and_then(|i| i.get(&digest)).copied();
            if st.pins.contains_key(&digest) || current.is_none_or(|e| e.last_use != last_use) {
                continue;
            }
            // The lock is held across the removal so no pin can slip in between.
            let removal = match self.backend.remove(&digest) {
                Ok(r) => r,
                // One bad entry (a planted lock file, a permission) must not stop the
                // cache from shrinking: go on, and report the first failure at the end.
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            match removal {
                Removal::Removed { size } => {
                    out.blobs += 1;
                    out.bytes += size;
                    st.stats.evicted_blobs += 1;
                    st.stats.evicted_bytes += size;
                }
                Removal::Busy => continue,
                Removal::Absent => {}
            }
            st.verified.remove(&digest);
            let State { index, total, .. } = &mut *st;
            if let Some(e) = index.as_mut().and_then(|i| i.remove(&digest)) {
                *total -= e.size;
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Open a blob for serving from `offset`: pinned, and hashed in full the first time this
    /// process serves it unless this process wrote it. `None`: absent, or damaged (removed,
    /// counted in [`CacheStats::damaged`]); the caller fetches it again.
    pub(crate) fn open_served(
        self: &Arc<Self>,
        digest: &Digest,
        offset: u64,
    ) -> Result<Option<ServedBlob>, StoreError> {
        let pin = self.pin(digest);
        if !self.lock().verified.contains(digest) {
            let gates = || self.verifying.lock().unwrap_or_else(|e| e.into_inner());
            let gate = Arc::clone(gates().entry(digest.clone()).or_default());
            let verdict = {
                let _one = gate.lock().unwrap_or_else(|e| e.into_inner());
                // Another request may have verified it while this one waited at the gate.
                if self.lock().verified.contains(digest) {
                    Ok(true)
                } else {
                    self.backend.verify(digest)
                }
            };
            gates().remove(digest);
            match verdict {
                Ok(true) => {
                    self.lock().verified.insert(digest.clone());
                }
                Ok(false) => {
                    self.forget(digest);
                    return Ok(None);
                }
                Err(StoreError::Corrupt { .. }) => {
                    self.forget(digest);
                    self.lock().stats.damaged += 1;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        let Some(size) = self.backend.size(digest)? else {
            self.forget(digest);
            return Ok(None);
        };
        let Some(reader) = self.backend.open_at(digest, offset)? else {
            self.forget(digest);
            return Ok(None);
        };
        Ok(Some(ServedBlob { reader, size, pin }))
    }
}

fn entry(size: u64, last_use: SystemTime) -> Entry {
    Entry {
        size,
        last_use,
        persisted: last_use,
    }
}
