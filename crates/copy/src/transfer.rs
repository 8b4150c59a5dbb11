//! The send path: one image from an [`ImageSource`] to an [`ImageDestination`]. Every blob
//! goes through one pipeline — held already? reusable (mounted)? else sent, checked while it
//! streams — `jobs` at a time; manifests follow only once every blob is held, rewritten
//! where layers were compressed on the way and byte for byte where nothing changed (so an
//! image pulled and pushed again keeps its digest).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use ferry_core::media::{self, Compression};
use ferry_core::{Descriptor, Digest, ImageManifest};

use crate::memo::CompressedMemo;
use crate::seam::{CopyBlob, CopyImage, CopyPlatform, ImageDestination, ImageSource};
use crate::{CopyError, Event, OpenBlob, Progress, SendBody};

/// How to send.
#[derive(Clone, Default)]
pub struct SendOptions {
    /// Blobs sent at once (at least 1; the destination may allow fewer).
    pub jobs: usize,
    /// The tags the image's top manifest is stored under; by its digest alone when empty.
    pub tags: Vec<String>,
    /// Remembers what uncompressed layers compressed to, so a layer sent before is found
    /// at the destination without compressing it again.
    pub memo: Option<Arc<CompressedMemo>>,
    /// Compress uncompressed image layers on the way (a push); without it every blob goes
    /// byte for byte (a copy between registries).
    pub compress: bool,
}

/// What was stored: the top manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// Whether a layer is compressed by the engine on the way: an image layer stored
/// uncompressed. Foreign layers and artifacts' blobs go as they are.
fn compresses(d: &Descriptor) -> bool {
    media::is_image_layer(&d.media_type)
        && !media::is_foreign_layer(&d.media_type)
        && media::layer_compression(&d.media_type) == Compression::None
}

/// Copy `image` from `source` to `dest`; see the module documentation.
pub async fn send_image<S: ImageSource, D: ImageDestination>(
    source: Arc<S>,
    image: &CopyImage<S::Location>,
    dest: Arc<D>,
    opts: &SendOptions,
    progress: Arc<dyn Progress>,
) -> Result<Sent, CopyError> {
    let Some(first) = image.platforms.first() else {
        return Err(CopyError::BadSource {
            image: image.name.clone(),
            reason: "it holds no image".into(),
        });
    };
    // Every blob once, configs before layers, in the order the image lists them.
    let mut blobs: Vec<(CopyBlob<S::Location>, bool)> = Vec::new();
    let mut seen = HashSet::new();
    for p in &image.platforms {
        if seen.insert(p.config.descriptor.digest.clone()) {
            blobs.push((p.config.clone(), false));
        }
        for l in &p.layers {
            if seen.insert(l.descriptor.digest.clone()) {
                blobs.push((l.clone(), opts.compress && compresses(&l.descriptor)));
            }
        }
    }
    progress.event(Event::Resolved {
        reference: image.name.clone(),
        digest: image
            .index
            .as_ref()
            .or(first.manifest.as_ref())
            .map(|m| m.digest())
            .unwrap_or_else(|| first.config.descriptor.digest.clone()),
        platform: match &image.index {
            None => first.platform.as_ref().map(ToString::to_string),
            Some(_) => None,
        },
        blobs: blobs.len(),
        bytes: blobs
            .iter()
            .fold(0u64, |a, (b, _)| a.saturating_add(b.descriptor.size)),
        contents: blobs
            .iter()
            .map(|(b, _)| (b.descriptor.digest.clone(), b.descriptor.size))
            .collect(),
    });
    let sent = send_blobs(source, &image.name, blobs, dest.clone(), opts, progress).await?;
    put_manifests(image, &sent, dest.as_ref(), opts).await
}

/// Send every blob; the descriptor each now has at the destination, by its source digest.
async fn send_blobs<S: ImageSource, D: ImageDestination>(
    source: Arc<S>,
    name: &str,
    blobs: Vec<(CopyBlob<S::Location>, bool)>,
    dest: Arc<D>,
    opts: &SendOptions,
    progress: Arc<dyn Progress>,
) -> Result<HashMap<Digest, Descriptor>, CopyError> {
    let slots = Arc::new(Semaphore::new(
        opts.jobs.clamp(1, dest.max_parallel().max(1)),
    ));
    let mut set = JoinSet::new();
    for (blob, compress) in blobs {
        let (source, dest, progress, slots, memo, name) = (
            source.clone(),
            dest.clone(),
            progress.clone(),
            slots.clone(),
            opts.memo.clone(),
            name.to_string(),
        );
        set.spawn(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|e| CopyError::Task(e.to_string()))?;
            let d = send_one(source, &name, &blob, compress, dest, memo, progress).await?;
            Ok::<_, CopyError>((blob.descriptor.digest.clone(), d))
        });
    }
    let mut sent = HashMap::new();
    while let Some(res) = set.join_next().await {
        match res {
            Ok(Ok((from, to))) => {
                sent.insert(from, to);
            }
            // Returning drops the set, which cancels the sends still in flight.
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(CopyError::Task(e.to_string())),
        }
    }
    Ok(sent)
}

struct Opener<S: ImageSource> {
    source: Arc<S>,
    at: S::Location,
}

impl<S: ImageSource> OpenBlob for Opener<S> {
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        self.source.open_blob(&self.at)
    }
}

async fn send_one<S: ImageSource, D: ImageDestination>(
    source: Arc<S>,
    name: &str,
    blob: &CopyBlob<S::Location>,
    compress: bool,
    dest: Arc<D>,
    memo: Option<Arc<CompressedMemo>>,
    progress: Arc<dyn Progress>,
) -> Result<Descriptor, CopyError> {
    let d = &blob.descriptor;
    let gzip_type = |d: &Descriptor| {
        if d.media_type.starts_with("application/vnd.docker.") {
            media::DOCKER_LAYER_GZIP
        } else {
            media::OCI_LAYER_GZIP
        }
    };
    let held = |digest: Digest, size: u64, media_type: &str, mounted: bool| {
        // Reported under the source's name for the blob, as its progress was announced.
        let (source_digest, source_size) = (d.digest.clone(), d.size);
        progress.event(if mounted {
            Event::BlobMounted {
                digest: source_digest,
                size: source_size,
            }
        } else {
            Event::BlobCached {
                digest: source_digest,
                size: source_size,
            }
        });
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            ..d.clone()
        }
    };
    // An uncompressed layer's own digest is its diff_id: the memo's key either way, and
    // always what the compressed pass checks the layer's bytes against, so the memo is
    // only ever written under a key its content was verified to have.
    let diff = blob.diff_id.as_ref().unwrap_or(&d.digest);
    // A layer the memo and the registry say is there already is not read from the source:
    // like a blob skipped by its HEAD, its bytes at the destination are the ones verified
    // (when the memo entry was written) to decompress to the config's diff_id, so the
    // manifest names correct content even if the archive's own copy is damaged.
    // What the blob is called at the destination, when known without sending it.
    let known = if compress {
        memo.as_ref().and_then(|m| m.get(diff))
    } else {
        Some((d.digest.clone(), d.size))
    };
    if let Some((digest, size)) = &known {
        let media_type = if compress {
            gzip_type(d)
        } else {
            &d.media_type
        };
        if dest.has_blob(digest).await? {
            return Ok(held(digest.clone(), *size, media_type, false));
        }
        if dest.reuse_blob(digest).await? {
            return Ok(held(digest.clone(), *size, media_type, true));
        }
    }
    // A blob fetched first (a registry source) shows its download as the first half of its
    // progress and its upload as the second.
    let fetching = Fetching {
        inner: progress.as_ref(),
        fetched: std::sync::atomic::AtomicBool::new(false),
    };
    source.prepare(&blob.at, d, &fetching).await?;
    let halves = fetching.fetched.load(std::sync::atomic::Ordering::Relaxed);
    let open: Arc<dyn OpenBlob> = Arc::new(Opener {
        source: source.clone(),
        at: blob.at.clone(),
    });
    let body = Arc::new(if compress {
        SendBody::gzip(d.digest.clone(), Some(diff.clone()), open)
    } else {
        SendBody::verbatim(d.clone(), blob.diff_id.clone(), open)
    });
    if !halves {
        progress.event(Event::BlobStarted {
            digest: d.digest.clone(),
            size: d.size,
            held: 0,
        });
    }
    // A layer being compressed is measured by the source bytes read: its compressed size,
    // what is sent, is not known until the end.
    let report = |n: u64| {
        progress.event(Event::BlobProgress {
            digest: d.digest.clone(),
            held: match (compress, halves) {
                (true, _) => body.consumed(),
                (false, true) => d.size / 2 + n.min(d.size) / 2,
                (false, false) => n,
            },
        })
    };
    let put = dest.put_blob(body.clone(), &report).await;
    // A content check that failed is the cause, whatever the destination made of it.
    if let Some(e) = body.failure() {
        return Err(CopyError::Content {
            image: name.to_string(),
            source: e,
        });
    }
    let (digest, size) = put?;
    if let (true, Some(m)) = (compress, &memo) {
        // Only a cache: a failure to remember costs a compression next time.
        let _ = m.put(diff, &digest, size);
    }
    progress.event(Event::BlobDone {
        digest: d.digest.clone(),
        size: d.size,
    });
    Ok(Descriptor {
        media_type: if compress {
            gzip_type(d).to_string()
        } else {
            d.media_type.clone()
        },
        digest,
        size,
        ..d.clone()
    })
}

/// A source's download events for one blob, as the first half of its progress: the blob
/// is announced (its bar starts) and moves to half way; its end is the upload's to report.
struct Fetching<'a> {
    inner: &'a dyn Progress,
    fetched: std::sync::atomic::AtomicBool,
}

impl Progress for Fetching<'_> {
    fn event(&self, event: Event) {
        match event {
            Event::BlobStarted { digest, size, held } => {
                self.fetched
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.inner.event(Event::BlobStarted {
                    digest,
                    size,
                    held: held / 2,
                });
            }
            Event::BlobProgress { digest, held } => self.inner.event(Event::BlobProgress {
                digest,
                held: held / 2,
            }),
            Event::Warning { message } => self.inner.event(Event::Warning { message }),
            // Fetched (or found in the cache): the upload goes on from here.
            _ => {}
        }
    }
}

/// A manifest ready to store.
struct Made {
    media_type: String,
    bytes: Vec<u8>,
}

impl Made {
    fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            &self.media_type,
            Digest::sha256_of(&self.bytes),
            self.bytes.len() as u64,
        )
    }
}

/// The manifest of platform `p` at the destination: the source's bytes when no blob
/// changed, else rewritten (or, for a source without one, made) to name what was sent.
fn platform_manifest<L>(
    name: &str,
    p: &CopyPlatform<L>,
    sent: &HashMap<Digest, Descriptor>,
) -> Result<Made, CopyError> {
    let after = |b: &CopyBlob<L>| {
        sent.get(&b.descriptor.digest)
            .cloned()
            .unwrap_or_else(|| b.descriptor.clone())
    };
    let layers: Vec<Descriptor> = p.layers.iter().map(after).collect();
    let unchanged =
        p.layers.iter().zip(&layers).all(|(b, d)| {
            b.descriptor.digest == d.digest && b.descriptor.media_type == d.media_type
        });
    let bad = |reason: String| CopyError::BadSource {
        image: name.to_string(),
        reason,
    };
    match &p.manifest {
        Some(m) if unchanged => Ok(Made {
            media_type: m.media_type.clone(),
            bytes: m.bytes.clone(),
        }),
        Some(m) => {
            // Rewritten field by field: annotations and anything else the source had stay.
            let mut v: serde_json::Value = serde_json::from_slice(&m.bytes)
                .map_err(|e| bad(format!("its manifest is not JSON: {e}")))?;
            let Some(list) = v.get_mut("layers").and_then(|l| l.as_array_mut()) else {
                return Err(bad("its manifest lists no layers".into()));
            };
            if list.len() != layers.len() {
                return Err(bad("its manifest and its layers disagree".into()));
            }
            for (entry, d) in list.iter_mut().zip(&layers) {
                entry["mediaType"] = d.media_type.clone().into();
                entry["digest"] = d.digest.to_string().into();
                entry["size"] = d.size.into();
            }
            Ok(Made {
                media_type: m.media_type.clone(),
                bytes: serde_json::to_vec(&v).map_err(|e| bad(e.to_string()))?,
            })
        }
        None => {
            // Docker's types, as docker push makes from the same archive; a zstd layer has
            // no Docker type, and then the manifest is OCI.
            let oci = layers
                .iter()
                .any(|l| media::layer_compression(&l.media_type) == Compression::Zstd);
            let (manifest_type, config_type) = if oci {
                (media::OCI_MANIFEST, media::OCI_CONFIG)
            } else {
                (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
            };
            let m = ImageManifest {
                schema_version: 2,
                media_type: Some(manifest_type.to_string()),
                config: Descriptor::new(
                    config_type,
                    p.config.descriptor.digest.clone(),
                    p.config.descriptor.size,
                ),
                layers: layers
                    .into_iter()
                    .map(|l| {
                        let t = match (media::layer_compression(&l.media_type), oci) {
                            (Compression::Gzip, false) => media::DOCKER_LAYER_GZIP,
                            (Compression::Gzip, true) => media::OCI_LAYER_GZIP,
                            (Compression::Zstd, _) => media::OCI_LAYER_ZSTD,
                            (Compression::None, _) => &l.media_type,
                        };
                        Descriptor::new(t, l.digest, l.size)
                    })
                    .collect(),
                artifact_type: None,
            };
            Ok(Made {
                media_type: manifest_type.to_string(),
                bytes: serde_json::to_vec(&m).map_err(|e| bad(e.to_string()))?,
            })
        }
    }
}

/// Store the image's manifests: each platform's, then the index (rewritten when a child
/// changed or is not copied), under every tag.
async fn put_manifests<L, D: ImageDestination>(
    image: &CopyImage<L>,
    sent: &HashMap<Digest, Descriptor>,
    dest: &D,
    opts: &SendOptions,
) -> Result<Sent, CopyError> {
    let mut children: Vec<(Option<Digest>, Made)> = Vec::new();
    for p in &image.platforms {
        let made = platform_manifest(&image.name, p, sent)?;
        children.push((p.manifest.as_ref().map(|m| m.digest()), made));
    }
    let top = match &image.index {
        None => children
            .pop()
            .map(|(_, m)| m)
            .ok_or_else(|| CopyError::BadSource {
                image: image.name.clone(),
                reason: "it holds no image".into(),
            })?,
        Some(index) => {
            for (_, m) in &children {
                let d = m.descriptor();
                dest.put_manifest(&d.digest.to_string(), &m.media_type, m.bytes.clone())
                    .await?;
            }
            // Nested indexes as they are, innermost first: each names only what is stored
            // before it. (Their children are never rewritten: only archives' images are,
            // and archive readers flatten nested indexes.)
            for m in image.nested.iter().rev() {
                dest.put_manifest(&m.digest().to_string(), &m.media_type, m.bytes.clone())
                    .await?;
                children.push((
                    Some(m.digest()),
                    Made {
                        media_type: m.media_type.clone(),
                        bytes: m.bytes.clone(),
                    },
                ));
            }
            index_manifest(&image.name, index, &children)?
        }
    };
    let d = top.descriptor();
    let digest_ref = d.digest.to_string();
    let refs: Vec<&str> = if opts.tags.is_empty() {
        vec![&digest_ref]
    } else {
        opts.tags.iter().map(String::as_str).collect()
    };
    for r in refs {
        dest.put_manifest(r, &top.media_type, top.bytes.clone())
            .await?;
    }
    Ok(Sent {
        digest: d.digest,
        media_type: d.media_type,
        size: d.size,
    })
}

/// The index to store: the source's bytes when every entry is copied unchanged, else the
/// source's index with the entries copied, each naming its manifest as stored.
fn index_manifest(
    name: &str,
    index: &crate::seam::SourceManifest,
    children: &[(Option<Digest>, Made)],
) -> Result<Made, CopyError> {
    let bad = |reason: String| CopyError::BadSource {
        image: name.to_string(),
        reason,
    };
    let mut v: serde_json::Value = serde_json::from_slice(&index.bytes)
        .map_err(|e| bad(format!("its index is not JSON: {e}")))?;
    let Some(list) = v.get_mut("manifests").and_then(|l| l.as_array_mut()) else {
        return Err(bad("its index lists no manifests".into()));
    };
    let now: HashMap<String, Descriptor> = children
        .iter()
        .filter_map(|(old, m)| old.as_ref().map(|o| (o.to_string(), m.descriptor())))
        .collect();
    let unchanged = list.iter().all(|e| {
        let old = e["digest"].as_str().unwrap_or_default();
        now.get(old).is_some_and(|d| d.digest.to_string() == old)
    });
    if unchanged {
        return Ok(Made {
            media_type: index.media_type.clone(),
            bytes: index.bytes.clone(),
        });
    }
    list.retain(|e| now.contains_key(e["digest"].as_str().unwrap_or_default()));
    for e in list.iter_mut() {
        let d = &now[e["digest"].as_str().unwrap_or_default()];
        e["mediaType"] = d.media_type.clone().into();
        e["digest"] = d.digest.to_string().into();
        e["size"] = d.size.into();
    }
    Ok(Made {
        media_type: index.media_type.clone(),
        bytes: serde_json::to_vec(&v).map_err(|e| bad(e.to_string()))?,
    })
}
