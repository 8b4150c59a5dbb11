//! One upstream fetch per image, however many clients ask. A [`Job`] downloads the blobs
//! of one resolved image (keyed by its manifest digest) through the pull engine; clients
//! hold a [`JobHandle`], and when the last handle goes the fetch is cancelled (the engine
//! keeps what it had, resumable). Readers wait for blobs on a `watch` channel that the
//! engine's arrival events update: no polling, and no thread parked per waiting request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;
use tokio::task::AbortHandle;

use ferry_archive::ArchiveImage;
use ferry_copy::{Event, Progress};
use ferry_core::Digest;
use ferry_registry::Client;
use ferry_store::{Pin, Store};

use crate::metrics::Metrics;

/// What a job has done so far.
#[derive(Debug, Clone, Default)]
pub struct JobState {
    /// Blobs downloaded and verified, or found in the cache and verified again.
    pub ready: HashSet<Digest>,
    /// Bytes of `ready` blobs, for progress.
    pub done_bytes: u64,
    pub finished: bool,
    /// Why the fetch stopped, when it failed.
    pub error: Option<String>,
}

/// The download of one image's blobs.
pub struct Job {
    /// The configs and layers the job fetches (every other blob of the archive, the
    /// manifests, was stored when the image was resolved).
    pub expected: HashSet<Digest>,
    pub total_bytes: u64,
    /// The blobs with their sizes, in archive order.
    pub blobs: Vec<(Digest, u64)>,
    /// Bytes of each blob held so far (progress; not a readiness signal).
    held: Mutex<HashMap<Digest, u64>>,
    state: watch::Sender<JobState>,
}

impl Job {
    pub fn state(&self) -> JobState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of [`state`](Self::state).
    pub fn subscribe(&self) -> watch::Receiver<JobState> {
        self.state.subscribe()
    }

    /// Each blob: digest, size, bytes held so far, whether it is ready.
    pub fn blob_progress(&self) -> Vec<(Digest, u64, u64, bool)> {
        let st = self.state.borrow().ready.clone();
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        self.blobs
            .iter()
            .map(|(d, size)| {
                let done = st.contains(d);
                let h = if done {
                    *size
                } else {
                    held.get(d).copied().unwrap_or(0)
                };
                (d.clone(), *size, h, done)
            })
            .collect()
    }

    /// Wait until `digest` may be read from the store: announced by the fetch, or not one
    /// of its blobs. Fails when the fetch failed before announcing it.
    pub async fn wait_for(&self, digest: &Digest) -> Result<(), String> {
        if !self.expected.contains(digest) {
            return Ok(());
        }
        let mut rx = self.state.subscribe();
        let r = rx
            .wait_for(|s| s.ready.contains(digest) || s.error.is_some() || s.finished)
            .await;
        match r {
            Ok(s) if s.ready.contains(digest) => Ok(()),
            Ok(s) => Err(s
                .error
                .clone()
                .unwrap_or_else(|| format!("blob {digest} was not downloaded"))),
            Err(_) => Err("the download stopped".into()),
        }
    }

    /// Wait until the fetch has finished; its error if it failed.
    pub async fn wait_done(&self) -> Result<(), String> {
        let mut rx = self.state.subscribe();
        let s = rx
            .wait_for(|s| s.finished)
            .await
            .map_err(|_| "the download stopped".to_string())?;
        match &s.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
impl Job {
    /// A job with no blobs that never finishes (tests of the tables that hold jobs).
    pub(crate) fn running_for_test() -> Arc<Job> {
        Arc::new(Job {
            expected: HashSet::new(),
            total_bytes: 0,
            blobs: Vec::new(),
            held: Mutex::default(),
            state: watch::channel(JobState::default()).0,
        })
    }
}

/// The engine's events turned into job state and metrics.
struct Arrived {
    job: Arc<Job>,
    metrics: Arc<Metrics>,
    /// Bytes each download started from (a resumed one had some).
    held: Mutex<HashMap<Digest, u64>>,
}

impl Progress for Arrived {
    fn event(&self, event: Event) {
        match &event {
            Event::BlobProgress { digest, held } => {
                self.job
                    .held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(digest.clone(), *held);
            }
            Event::BlobStarted { digest, held, .. } => {
                self.metrics.cache_misses.inc();
                self.held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(digest.clone(), *held);
            }
            Event::BlobCached { .. } => {
                self.metrics.cache_hits.inc();
            }
            Event::BlobDone { digest, size } => {
                let held = self
                    .held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(digest)
                    .unwrap_or(0);
                self.metrics
                    .upstream_bytes
                    .inc_by(size.saturating_sub(held));
            }
            _ => {}
        }
        if let Event::BlobDone { digest, size } | Event::BlobCached { digest, size } = event {
            self.job.state.send_modify(|s| {
                if s.ready.insert(digest) {
                    s.done_bytes += size;
                }
            });
        }
    }
}

/// A client's hold on a job: the fetch goes on while any handle lives.
pub struct JobHandle {
    pub job: Arc<Job>,
    abort: AbortHandle,
    /// Leases on every blob of the image against eviction while the fetch runs or a
    /// response reads it. Here, not on [`Job`]: the jobs API keeps a `Job` for its status
    /// long after both, and must not keep its blobs from eviction for that.
    _pins: Vec<Pin>,
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        // The last client went away: nobody waits for this work. What was downloaded stays
        // in the cache, and a partial blob resumes next time.
        self.abort.abort();
    }
}

/// The jobs running, by manifest digest (and platform choice: the same key means the same
/// blobs).
#[derive(Default)]
pub struct Jobs {
    running: Mutex<HashMap<String, Weak<JobHandle>>>,
}

impl Jobs {
    /// The job for `image`, joined if one runs, else started; `None` when `max_jobs`
    /// other fetches run (the client is told to come back).
    pub fn join(
        &self,
        client: &Client,
        store: &Store,
        image: &ArchiveImage,
        parallel: usize,
        metrics: &Arc<Metrics>,
        max_jobs: usize,
    ) -> Option<Arc<JobHandle>> {
        let key = image.root.digest.to_string();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = running.get(&key).and_then(Weak::upgrade) {
            let failed = h.job.state.borrow().error.is_some();
            if !failed {
                return Some(h);
            }
        }
        running.retain(|_, w| w.strong_count() > 0);
        let busy = running
            .values()
            .filter_map(Weak::upgrade)
            .filter(|h| !h.job.state.borrow().finished)
            .count();
        if busy >= max_jobs {
            return None;
        }
        let mut expected = HashSet::new();
        let mut blobs = Vec::new();
        let mut total_bytes = 0;
        for p in &image.images {
            for d in std::iter::once(&p.config).chain(&p.layers) {
                if expected.insert(d.digest.clone()) {
                    total_bytes += d.size;
                    blobs.push((d.digest.clone(), d.size));
                }
            }
        }
        let pins = expected
            .iter()
            .chain(image.manifests.iter().map(|m| &m.digest))
            .map(|d| store.pin(d))
            .collect();
        let (tx, _) = watch::channel(JobState::default());
        let job = Arc::new(Job {
            expected,
            total_bytes,
            blobs,
            held: Mutex::default(),
            state: tx,
        });
        let (client, store, images) = (client.clone(), store.clone(), vec![image.clone()]);
        let j = job.clone();
        let metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let progress = Arc::new(Arrived {
                job: j.clone(),
                metrics: metrics.clone(),
                held: Mutex::default(),
            });
            let r =
                ferry_copy::fetch_blobs(&client, &store, &images, parallel, progress, None).await;
            if r.is_err() {
                metrics.upstream_error("blob");
            }
            j.state.send_modify(|s| {
                s.finished = true;
                if let Err(e) = r {
                    s.error = Some(crate::error_chain(&e));
                }
            });
        });
        let h = Arc::new(JobHandle {
            job,
            abort: task.abort_handle(),
            _pins: pins,
        });
        running.insert(key, Arc::downgrade(&h));
        Some(h)
    }

    /// How many fetches run.
    pub fn in_flight(&self) -> usize {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .values()
            .filter_map(Weak::upgrade)
            .filter(|h| !h.job.state.borrow().finished)
            .count()
    }
}
