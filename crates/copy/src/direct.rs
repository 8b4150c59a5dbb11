//! Writing a planned archive file directly: its layout is known before any layer arrives, so
//! each download writes its bytes straight into the blob's place in the output as well as
//! into the cache. The output is never read back from the cache, which saves a full pass
//! over the image's bytes.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry_archive::{ArchiveError, Plan};
use ferry_core::{Digest, ResumableWrite};
use ferry_store::{Ingest, Store};

/// An output archive being filled in place.
pub struct DirectArchive {
    file: File,
    regions: HashMap<Digest, (u64, u64)>,
    filled: Mutex<HashSet<Digest>>,
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
        let src = File::open(store.partial_path(d))?;
        copy_range(&src, held, &self.file, base)
    }

    /// Copy every blob that was not downloaded into place (cached ones, manifests) from the
    /// store, checking each one's length.
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
            let src = store
                .open_blob(d)
                .map_err(|e| io::Error::other(e.to_string()))?;
            let len = src.metadata()?.len();
            if len != *size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("blob {d} holds {len} bytes, expected {size}"),
                ));
            }
            copy_range(&src, *size, &self.file, *base)?;
        }
        Ok(())
    }
}

fn copy_range(src: &File, len: u64, dst: &File, base: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut r = src.take(len);
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
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
