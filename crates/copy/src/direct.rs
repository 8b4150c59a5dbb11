//! Writing a planned archive file directly: its layout is known before any layer arrives, so
//! each download writes its bytes straight into the blob's place in the output as well as
//! into the cache. The output is never read back from the cache, which saves a full pass
//! over the image's bytes. Blobs that come from the cache are verified in the same loop that
//! copies them into place (by the download tasks, `-j` at a time), so a damaged cached copy
//! costs a refetch into its region, never a bad archive.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry_archive::{ArchiveError, Plan};
use ferry_core::{Digest, ResumableWrite};
use ferry_store::{Ingest, Store, StoreError};

use crate::CopyError;

/// An output archive being filled in place.
pub struct DirectArchive {
    file: File,
    regions: HashMap<Digest, (u64, u64)>,
    filled: Mutex<HashSet<Digest>>,
}

/// What copying a cached blob into its place found.
pub(crate) enum Cached {
    /// Copied and verified.
    Copied,
    /// The cached copy was damaged and has been removed from the cache: fetch it again (the
    /// region's bytes are rewritten by the download).
    Damaged(StoreError),
}

impl DirectArchive {
    /// Create `path` (which must not exist) holding `plan`'s headers and metadata, with room
    /// for every blob.
    pub fn create(path: &Path, plan: &Plan) -> Result<Arc<DirectArchive>, ArchiveError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| ArchiveError::Io {
                context: format!("creating {}", path.display()),
                source,
            })?;
        // Locked on this very open file, before anything is written, and for as long as the
        // archive lives: another run's cleanup of stale temporary outputs takes only files
        // whose lock it can get. (A file system without locks leaves it unlocked.)
        let _ = file.try_lock();
        plan.write_skeleton(&file)?;
        let regions = plan
            .blob_regions()
            .into_iter()
            .map(|(d, off, size)| (d, (off, size)))
            .collect();
        Ok(Arc::new(DirectArchive {
            file,
            regions,
            filled: Mutex::new(HashSet::new()),
        }))
    }

    pub(crate) fn region(&self, d: &Digest) -> Option<(u64, u64)> {
        self.regions.get(d).copied()
    }

    pub(crate) fn mark_filled(&self, d: &Digest) {
        if let Ok(mut f) = self.filled.lock() {
            f.insert(d.clone());
        }
    }

    /// Copy the bytes a previous attempt left in `d`'s partial file into its region.
    pub(crate) fn copy_partial(&self, store: &Store, d: &Digest, held: u64) -> io::Result<()> {
        let Some((base, _)) = self.region(d) else {
            return Ok(());
        };
        if held == 0 {
            return Ok(());
        }
        let src = store.open_partial(d).map_err(io::Error::other)?;
        copy_range(src.take(held), held, &self.file, base)
    }

    /// Copy cached blob `d` into its region, hashing it on the way, and mark it filled when
    /// it matched. Nothing is written past the region: bytes beyond the blob's size fail the
    /// read before they are returned.
    pub(crate) fn copy_cached(&self, store: &Store, d: &Digest) -> Result<Cached, CopyError> {
        let Some((base, size)) = self.region(d) else {
            return Ok(Cached::Copied);
        };
        let store_err = |source| CopyError::Store {
            digest: d.clone(),
            source,
        };
        let mut src = store.open_verified(d, Some(size)).map_err(store_err)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = match src.read_chunk(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e @ StoreError::Corrupt { .. }) => return Ok(Cached::Damaged(e)),
                Err(e) => return Err(store_err(e)),
            };
            self.file
                .write_all_at(&buf[..n], base + done)
                .map_err(|source| CopyError::Output {
                    digest: d.clone(),
                    source,
                })?;
            done += n as u64;
        }
        self.mark_filled(d);
        Ok(Cached::Copied)
    }

    /// Copy every blob that was not downloaded or copied yet into place from the store: the
    /// manifests, which the resolution fetched, verified and stored in this run (a cached
    /// copy that differed was replaced then), so they are copied as they are.
    pub fn fill_rest(&self, store: &Store) -> io::Result<()> {
        let filled = self
            .filled
            .lock()
            .map_err(|_| io::Error::other("a download task panicked"))?
            .clone();
        for (d, (base, size)) in &self.regions {
            if filled.contains(d) {
                continue;
            }
            let src = store.open_blob(d).map_err(io::Error::other)?;
            copy_range(src, *size, &self.file, *base)?;
        }
        Ok(())
    }
}

/// Copy `src` to its end into `dst` at `base`. It must hold exactly `len` bytes; nothing is
/// ever written past `base + len` (the next entry's place).
fn copy_range(mut src: impl Read, len: u64, dst: &File, base: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if done + n as u64 > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected {len} bytes, found more"),
            ));
        }
        dst.write_all_at(&buf[..n], base + done)?;
        done += n as u64;
    }
    if done != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("expected {len} bytes, found {done}"),
        ));
    }
    Ok(())
}

/// The store's ingest and the blob's region in the output, written together. A restart
/// rewrites the region from its start, so it always ends holding exactly the bytes the
/// ingest verified.
pub(crate) struct Tee<'a> {
    pub(crate) ingest: &'a mut Ingest,
    pub(crate) out: &'a DirectArchive,
    pub(crate) base: u64,
}

impl ResumableWrite for Tee<'_> {
    fn offset(&self) -> u64 {
        self.ingest.offset()
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let pos = self.ingest.offset();
        ResumableWrite::append(self.ingest, buf)?;
        self.out.file.write_all_at(buf, self.base + pos)
    }

    fn restart(&mut self) -> io::Result<()> {
        ResumableWrite::restart(self.ingest)
    }
}
