//! One upstream fetch per blob, however many clients of the mirror ask for it. The fetch
//! writes through the store's [`Ingest`] (so the store's per-blob lock also keeps it from
//! running beside an archive job's download of the same blob: one waits for the other),
//! flushes each chunk to the partial file and then announces the new length on a `watch`
//! channel; clients read the growing partial up to that length. The engine's resume
//! (`blob_into`) carries it over upstream drops without the clients noticing.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use ferry_core::{Descriptor, Digest, Reference, ResumableWrite};
use ferry_store::{Ingest, StoreError};

use super::error::V2Error;
use crate::State;

/// How far a fetch has come.
#[derive(Debug, Clone, Default)]
pub struct Fill {
    /// Bytes in the partial file, flushed, from byte 0.
    pub held: u64,
    /// Times the partial was thrown away and begun again (an upstream that ignored Range):
    /// a reader that already sent bytes from before cannot vouch for them any more.
    pub restarts: u32,
    /// `Some(Ok)`: verified and in the store; `Some(Err)`: failed, partial discarded if
    /// its bytes were wrong.
    pub end: Option<Result<(), String>>,
}

/// One blob's download.
pub struct Fetch {
    fill: watch::Sender<Fill>,
}

impl Fetch {
    pub fn subscribe(&self) -> watch::Receiver<Fill> {
        self.fill.subscribe()
    }
}

/// The fetches running, by digest.
#[derive(Default)]
pub struct Fetches {
    running: Mutex<HashMap<Digest, Arc<Fetch>>>,
}

impl Fetches {
    /// The fetch of `desc` from `r`'s repository, joined if one runs, else started; 429
    /// when `max_pulls` run already.
    pub fn join(st: &Arc<State>, r: &Reference, desc: Descriptor) -> Result<Arc<Fetch>, V2Error> {
        let fetches = &st.mirror.fetches;
        let mut running = fetches.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = running.get(&desc.digest) {
            return Ok(f.clone());
        }
        if running.len() >= st.config.max_pulls {
            return Err(V2Error::busy(format!(
                "this server is fetching {} blobs already; try again in a few seconds",
                st.config.max_pulls
            )));
        }
        let fetch = Arc::new(Fetch {
            fill: watch::channel(Fill::default()).0,
        });
        running.insert(desc.digest.clone(), fetch.clone());
        drop(running);
        let (st, r, f) = (st.clone(), r.clone(), fetch.clone());
        // Goes on when the clients leave: the blob is wanted, and what arrives is cached.
        tokio::spawn(async move {
            let end = run(&st, &r, &desc, &f).await;
            if let Err(e) = &end {
                st.metrics.upstream_error("blob");
                tracing::warn!("mirror fetch of blob {}: {e}", desc.digest);
            }
            f.fill.send_modify(|s| s.end = Some(end));
            let mut running = st
                .mirror
                .fetches
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if running
                .get(&desc.digest)
                .is_some_and(|g| Arc::ptr_eq(g, &f))
            {
                running.remove(&desc.digest);
            }
        });
        Ok(fetch)
    }
}

async fn run(st: &State, r: &Reference, desc: &Descriptor, f: &Fetch) -> Result<(), String> {
    let store = st.store().clone();
    let (d, size) = (desc.digest.clone(), desc.size);
    // Blocks while another download of the blob (an archive job's, another process's)
    // holds its lock.
    let ingest = tokio::task::spawn_blocking(move || store.begin(&d, Some(size)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| crate::error_chain(&e))?;
    if ingest.already_done() {
        st.metrics.cache_hits.inc();
        return Ok(());
    }
    st.metrics.cache_misses.inc();
    let from = ingest.offset();
    f.fill.send_modify(|s| s.held = from);
    let mut w = Announcing {
        ingest,
        fill: &f.fill,
    };
    st.client_for(r)
        .blob_into(r.api_host(), r.repository(), desc, &mut w, &|_| {})
        .await
        .map_err(|e| crate::error_chain(&e))?;
    st.metrics.upstream_bytes.inc_by(size.saturating_sub(from));
    let ingest = w.ingest;
    tokio::task::spawn_blocking(move || ingest.commit())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| crate::error_chain(&e))?;
    Ok(())
}

/// The ingest, flushed after every chunk and its new length announced: readers of the
/// partial file see exactly the bytes announced.
struct Announcing<'a> {
    ingest: Ingest,
    fill: &'a watch::Sender<Fill>,
}

fn io_err(e: StoreError) -> io::Error {
    match e {
        StoreError::Io { source, .. } => source,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl ResumableWrite for Announcing<'_> {
    fn offset(&self) -> u64 {
        self.ingest.offset()
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.ingest.write(buf).map_err(io_err)?;
        self.ingest.flush().map_err(io_err)?;
        let held = self.ingest.offset();
        self.fill.send_modify(|s| s.held = held);
        Ok(())
    }

    fn restart(&mut self) -> io::Result<()> {
        self.ingest.restart().map_err(io_err)?;
        self.fill.send_modify(|s| {
            s.held = 0;
            s.restarts += 1;
        });
        Ok(())
    }
}
