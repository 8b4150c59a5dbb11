//! The send path against an in-memory source and destination.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferry_core::{media, Descriptor, Digest, Manifest};

use crate::seam::*;
use crate::{send_image, CompressedMemo, CopyError, NoProgress, SendBody, SendOptions};

#[derive(Default)]
struct MemSource {
    blobs: HashMap<Digest, Vec<u8>>,
}

impl ImageSource for MemSource {
    type Location = Digest;
    fn open_blob(&self, at: &Digest) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.blobs[at].clone())))
    }
}

#[derive(Default)]
struct MemDest {
    blobs: Mutex<HashMap<Digest, Vec<u8>>>,
    manifests: Mutex<Vec<(String, String, Vec<u8>)>>,
    puts: AtomicUsize,
}

impl ImageDestination for MemDest {
    async fn has_blob(&self, digest: &Digest) -> Result<bool, CopyError> {
        Ok(self.blobs.lock().unwrap().contains_key(digest))
    }

    async fn put_blob(
        &self,
        body: Arc<SendBody>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(Digest, u64), CopyError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let mut bytes = Vec::new();
        body.open(0)
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(|source| CopyError::Source {
                what: "reading".into(),
                source,
            })?;
        progress(bytes.len() as u64);
        let d = Digest::sha256_of(&bytes);
        if let Some(k) = body.known_digest() {
            assert_eq!(k, &d);
        }
        let n = bytes.len() as u64;
        self.blobs.lock().unwrap().insert(d.clone(), bytes);
        Ok((d, n))
    }

    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Digest, CopyError> {
        let d = Digest::sha256_of(&bytes);
        self.manifests
            .lock()
            .unwrap()
            .push((reference.into(), media_type.into(), bytes));
        Ok(d)
    }
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn layer(seed: u8) -> Vec<u8> {
    (0..50_000u32)
        .map(|i| (i as u8).wrapping_mul(seed))
        .collect()
}

/// An image of two layers, stored compressed (`gzip`) or as docker's legacy archives hold
/// them (no manifest, uncompressed).
fn image(src: &mut MemSource, gzip: bool, with_manifest: bool) -> CopyImage<Digest> {
    let tars = [layer(3), layer(5)];
    let diff_ids: Vec<Digest> = tars.iter().map(|t| Digest::sha256_of(t)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_d = Descriptor::new(
        media::OCI_CONFIG,
        Digest::sha256_of(&config),
        config.len() as u64,
    );
    src.blobs.insert(config_d.digest.clone(), config);
    let mut layers = Vec::new();
    for (t, diff) in tars.iter().zip(&diff_ids) {
        let (bytes, mt) = if gzip {
            (gz(t), media::OCI_LAYER_GZIP)
        } else {
            (t.clone(), media::OCI_LAYER_TAR)
        };
        let d = Descriptor::new(mt, Digest::sha256_of(&bytes), bytes.len() as u64);
        src.blobs.insert(d.digest.clone(), bytes);
        layers.push(CopyBlob {
            at: d.digest.clone(),
            descriptor: d,
            diff_id: Some(diff.clone()),
        });
    }
    let manifest = with_manifest.then(|| SourceManifest {
        media_type: media::OCI_MANIFEST.into(),
        bytes: serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": config_d,
            "layers": layers.iter().map(|l| &l.descriptor).collect::<Vec<_>>(),
            "annotations": {"kept": "yes"},
        }))
        .unwrap(),
    });
    CopyImage {
        name: "test".into(),
        index: None,
        nested: Vec::new(),
        platforms: vec![CopyPlatform {
            platform: None,
            manifest,
            config: CopyBlob {
                at: config_d.digest.clone(),
                descriptor: config_d,
                diff_id: None,
            },
            layers,
        }],
    }
}

fn opts(tags: &[&str]) -> SendOptions {
    SendOptions {
        jobs: 2,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        memo: None,
        compress: true,
    }
}

async fn send(
    src: MemSource,
    img: &CopyImage<Digest>,
    dest: &Arc<MemDest>,
    o: &SendOptions,
) -> Result<crate::Sent, CopyError> {
    send_image(Arc::new(src), img, dest.clone(), o, Arc::new(NoProgress)).await
}

#[tokio::test]
async fn compressed_image_with_a_manifest_is_sent_byte_for_byte_and_skipped_the_second_time() {
    let mut src = MemSource::default();
    let img = image(&mut src, true, true);
    let original = img.platforms[0].manifest.clone().unwrap();
    let blobs = src.blobs.clone();
    let dest = Arc::new(MemDest::default());
    let sent = send(src, &img, &dest, &opts(&["v1", "latest"]))
        .await
        .unwrap();
    assert_eq!(sent.digest, original.digest());
    let m = dest.manifests.lock().unwrap().clone();
    assert_eq!(
        m.iter().map(|(r, _, _)| r.as_str()).collect::<Vec<_>>(),
        ["v1", "latest"]
    );
    assert!(m.iter().all(|(_, _, b)| b == &original.bytes));
    assert_eq!(*dest.blobs.lock().unwrap(), blobs);
    assert_eq!(dest.puts.load(Ordering::SeqCst), 3);

    let again = send(MemSource { blobs }, &img, &dest, &opts(&[]))
        .await
        .unwrap();
    assert_eq!(again.digest, sent.digest);
    assert_eq!(dest.puts.load(Ordering::SeqCst), 3, "every blob was held");
}

#[tokio::test]
async fn uncompressed_layers_are_gzipped_and_the_manifest_rewritten_to_name_them() {
    let mut src = MemSource::default();
    let img = image(&mut src, false, true);
    let dest = Arc::new(MemDest::default());
    let sent = send(src, &img, &dest, &opts(&["v1"])).await.unwrap();
    let (_, mt, bytes) = dest.manifests.lock().unwrap()[0].clone();
    assert_eq!(mt, media::OCI_MANIFEST);
    assert_eq!(sent.digest, Digest::sha256_of(&bytes));
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["annotations"]["kept"], "yes", "other fields stay");
    let Manifest::Image(m) = Manifest::parse(&bytes, Some(&mt)).unwrap() else {
        panic!()
    };
    let held = dest.blobs.lock().unwrap().clone();
    for (l, orig) in m.layers.iter().zip(&img.platforms[0].layers) {
        assert_eq!(l.media_type, media::OCI_LAYER_GZIP);
        let blob = &held[&l.digest];
        assert_eq!(l.size, blob.len() as u64);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(Some(Digest::sha256_of(&tar)), orig.diff_id);
    }
}

#[tokio::test]
async fn legacy_image_without_a_manifest_gets_a_docker_one_and_the_memo_skips_compression() {
    let mut src = MemSource::default();
    let img = image(&mut src, false, false);
    let blobs = src.blobs.clone();
    let dest = Arc::new(MemDest::default());
    let cache = tempfile::tempdir().unwrap();
    let o = SendOptions {
        memo: Some(Arc::new(CompressedMemo::under(cache.path()))),
        ..opts(&["v1"])
    };
    let sent = send(src, &img, &dest, &o).await.unwrap();
    assert_eq!(sent.media_type, media::DOCKER_MANIFEST);
    let (_, _, bytes) = dest.manifests.lock().unwrap()[0].clone();
    let Manifest::Image(m) = Manifest::parse(&bytes, None).unwrap() else {
        panic!()
    };
    assert_eq!(m.config.media_type, media::DOCKER_CONFIG);
    assert!(m
        .layers
        .iter()
        .all(|l| l.media_type == media::DOCKER_LAYER_GZIP));
    let puts = dest.puts.load(Ordering::SeqCst);
    let again = send(MemSource { blobs }, &img, &dest, &o).await.unwrap();
    assert_eq!(again.digest, sent.digest, "same bytes, same manifest");
    assert_eq!(
        dest.puts.load(Ordering::SeqCst),
        puts,
        "nothing compressed again"
    );
}

#[tokio::test]
async fn a_layer_not_matching_its_diff_id_fails_before_any_manifest_is_stored() {
    let mut src = MemSource::default();
    let mut img = image(&mut src, false, true);
    img.platforms[0].layers[1].diff_id = Some(Digest::sha256_of(b"not this layer"));
    let dest = Arc::new(MemDest::default());
    let err = send(src, &img, &dest, &opts(&["v1"])).await.unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.starts_with("test is damaged"), "{chain}");
    assert!(chain.contains("diff_ids say"), "{chain}");
    assert!(dest.manifests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_memo_learns_only_what_a_checked_pass_compressed() {
    let cache = tempfile::tempdir().unwrap();
    let memo = Arc::new(CompressedMemo::under(cache.path()));
    let o = SendOptions {
        memo: Some(memo.clone()),
        ..opts(&["v1"])
    };
    // A layer not matching its diff_id: nothing remembered under that diff_id.
    let mut src = MemSource::default();
    let mut img = image(&mut src, false, true);
    let claimed = Digest::sha256_of(b"not this layer");
    img.platforms[0].layers[1].diff_id = Some(claimed.clone());
    let dest = Arc::new(MemDest::default());
    send(src, &img, &dest, &o).await.unwrap_err();
    assert_eq!(memo.get(&claimed), None);

    // No diff_id named: the uncompressed layer is checked against its own digest, the key
    // the memo would keep it under.
    let cache = tempfile::tempdir().unwrap();
    let memo = Arc::new(CompressedMemo::under(cache.path()));
    let o = SendOptions {
        memo: Some(memo.clone()),
        ..opts(&["v1"])
    };
    let mut src = MemSource::default();
    let mut img = image(&mut src, false, true);
    let l = &mut img.platforms[0].layers[0];
    l.diff_id = None;
    let named = l.descriptor.digest.clone();
    src.blobs.get_mut(&named).unwrap()[10] ^= 0xff;
    let dest = Arc::new(MemDest::default());
    let err = send(src, &img, &dest, &o).await.unwrap_err();
    assert!(matches!(err, CopyError::Content { .. }), "{err:?}");
    assert_eq!(memo.get(&named), None);
    assert!(dest.manifests.lock().unwrap().is_empty());
}

/// The decision documented in docs/NOTES.md: a layer the memo and the destination vouch
/// for is not read again, as a blob skipped by its HEAD is not, and the image stored is
/// right even when the source's copy of that layer is damaged.
#[tokio::test]
async fn a_layer_the_memo_and_the_destination_hold_is_not_read_again() {
    let cache = tempfile::tempdir().unwrap();
    let o = SendOptions {
        memo: Some(Arc::new(CompressedMemo::under(cache.path()))),
        ..opts(&["v1"])
    };
    let mut src = MemSource::default();
    let img = image(&mut src, false, true);
    let mut blobs = src.blobs.clone();
    let dest = Arc::new(MemDest::default());
    let sent = send(src, &img, &dest, &o).await.unwrap();
    let l = &img.platforms[0].layers[0].descriptor.digest;
    blobs.get_mut(l).unwrap()[10] ^= 0xff;
    let again = send(
        MemSource {
            blobs: blobs.clone(),
        },
        &img,
        &dest,
        &o,
    )
    .await
    .unwrap();
    assert_eq!(again.digest, sent.digest);
    // Without the memo the damaged layer is read, and refused.
    let err = send(MemSource { blobs }, &img, &dest, &opts(&["v1"]))
        .await
        .unwrap_err();
    assert!(matches!(err, CopyError::Content { .. }), "{err:?}");
}

#[tokio::test]
async fn a_compressed_layer_not_matching_its_digest_fails_before_any_manifest_is_stored() {
    let mut src = MemSource::default();
    let img = image(&mut src, true, true);
    let bad = &img.platforms[0].layers[0].descriptor.digest;
    src.blobs.get_mut(bad).unwrap()[100] ^= 0xff;
    let dest = Arc::new(MemDest::default());
    let err = send(src, &img, &dest, &opts(&["v1"])).await.unwrap_err();
    assert!(matches!(err, CopyError::Content { .. }), "{err:?}");
    assert!(dest.manifests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_index_is_sent_whole_or_rewritten_when_a_child_changed() {
    for gzip in [true, false] {
        let mut src = MemSource::default();
        let one = image(&mut src, gzip, true);
        let child = one.platforms[0].manifest.clone().unwrap();
        let index = SourceManifest {
            media_type: media::OCI_INDEX.into(),
            bytes: serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": media::OCI_INDEX,
                "manifests": [{"mediaType": media::OCI_MANIFEST, "digest": child.digest(),
                    "size": child.bytes.len(), "platform": {"os": "linux", "architecture": "amd64"}}],
            }))
            .unwrap(),
        };
        let img = CopyImage {
            index: Some(index.clone()),
            ..one
        };
        let dest = Arc::new(MemDest::default());
        let sent = send(src, &img, &dest, &opts(&["v1"])).await.unwrap();
        let m = dest.manifests.lock().unwrap().clone();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].0, "v1");
        assert_eq!(m[0].0, Digest::sha256_of(&m[0].2).to_string());
        if gzip {
            assert_eq!(sent.digest, index.digest(), "unchanged index, same bytes");
        } else {
            let v: serde_json::Value = serde_json::from_slice(&m[1].2).unwrap();
            assert_eq!(v["manifests"][0]["digest"], m[0].0.as_str());
            assert_eq!(v["manifests"][0]["platform"]["os"], "linux");
        }
    }
}

/// A source that "downloads" each blob in `prepare`, reporting it as a registry source does.
struct FetchingSource(MemSource);

impl ImageSource for FetchingSource {
    type Location = Digest;
    fn open_blob(&self, at: &Digest) -> io::Result<Box<dyn Read + Send>> {
        self.0.open_blob(at)
    }
    async fn prepare(
        &self,
        _at: &Digest,
        d: &Descriptor,
        progress: &dyn crate::Progress,
    ) -> Result<(), CopyError> {
        progress.event(crate::Event::BlobStarted {
            digest: d.digest.clone(),
            size: d.size,
            held: 0,
        });
        progress.event(crate::Event::BlobProgress {
            digest: d.digest.clone(),
            held: d.size,
        });
        progress.event(crate::Event::BlobDone {
            digest: d.digest.clone(),
            size: d.size,
        });
        Ok(())
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<crate::Event>>);

impl crate::Progress for Recorder {
    fn event(&self, e: crate::Event) {
        self.0.lock().unwrap().push(e);
    }
}

#[tokio::test]
async fn a_fetched_blob_reports_one_start_one_end_and_progress_that_only_grows() {
    let mut src = MemSource::default();
    let img = image(&mut src, true, true);
    let dest = Arc::new(MemDest::default());
    let rec = Arc::new(Recorder::default());
    send_image(
        Arc::new(FetchingSource(src)),
        &img,
        dest,
        &SendOptions {
            compress: false,
            ..opts(&["v1"])
        },
        rec.clone(),
    )
    .await
    .unwrap();
    let events = rec.0.lock().unwrap().clone();
    for l in &img.platforms[0].layers {
        let d = &l.descriptor.digest;
        let mine: Vec<&crate::Event> = events
            .iter()
            .filter(|e| match e {
                crate::Event::BlobStarted { digest, .. }
                | crate::Event::BlobProgress { digest, .. }
                | crate::Event::BlobDone { digest, .. }
                | crate::Event::BlobCached { digest, .. } => digest == d,
                _ => false,
            })
            .collect();
        let starts = mine
            .iter()
            .filter(|e| matches!(e, crate::Event::BlobStarted { .. }))
            .count();
        let ends = mine
            .iter()
            .filter(|e| matches!(e, crate::Event::BlobDone { .. }))
            .count();
        assert_eq!((starts, ends), (1, 1), "{mine:?}");
        let held: Vec<u64> = mine
            .iter()
            .filter_map(|e| match e {
                crate::Event::BlobProgress { held, .. } => Some(*held),
                _ => None,
            })
            .collect();
        assert!(held.windows(2).all(|w| w[0] <= w[1]), "{held:?}");
        assert!(held.iter().all(|&h| h <= l.descriptor.size), "{held:?}");
        assert!(matches!(mine.last(), Some(crate::Event::BlobDone { .. })));
    }
}

/// A destination that holds nothing, counts the puts in flight, and fails the put of one
/// blob while the others wait long.
struct SlowDest {
    fail: Option<Digest>,
    in_flight: AtomicUsize,
    most: AtomicUsize,
    finished: AtomicUsize,
    dropped: AtomicUsize,
    manifests: AtomicUsize,
}

impl SlowDest {
    fn new(fail: Option<Digest>) -> SlowDest {
        SlowDest {
            fail,
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            manifests: AtomicUsize::new(0),
        }
    }
}

struct InFlight<'a>(&'a SlowDest);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl ImageDestination for SlowDest {
    async fn has_blob(&self, _: &Digest) -> Result<bool, CopyError> {
        Ok(false)
    }

    async fn put_blob(
        &self,
        body: Arc<SendBody>,
        _: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(Digest, u64), CopyError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let _guard = InFlight(self);
        let d = body.known_digest().cloned().unwrap();
        if self.fail.as_ref() == Some(&d) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            return Err(CopyError::Task("refused".into()));
        }
        let wait = if self.fail.is_some() { 10_000 } else { 30 };
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok((d, body.size().unwrap()))
    }

    async fn put_manifest(&self, _: &str, _: &str, b: Vec<u8>) -> Result<Digest, CopyError> {
        self.manifests.fetch_add(1, Ordering::SeqCst);
        Ok(Digest::sha256_of(&b))
    }
}

/// An image of `n` small blobs sent as they are (a config and `n - 1` layers).
fn many(src: &mut MemSource, n: usize) -> CopyImage<Digest> {
    let mut blobs: Vec<CopyBlob<Digest>> = (0..n)
        .map(|i| {
            let bytes = format!("blob {i}").into_bytes();
            let d = Descriptor::new(
                media::OCI_LAYER_GZIP,
                Digest::sha256_of(&bytes),
                bytes.len() as u64,
            );
            src.blobs.insert(d.digest.clone(), bytes);
            CopyBlob {
                at: d.digest.clone(),
                descriptor: d,
                diff_id: None,
            }
        })
        .collect();
    let config = blobs.remove(0);
    CopyImage {
        name: "many".into(),
        index: None,
        nested: Vec::new(),
        platforms: vec![CopyPlatform {
            platform: None,
            manifest: None,
            config,
            layers: blobs,
        }],
    }
}

#[tokio::test]
async fn no_more_blobs_than_jobs_are_sent_at_once() {
    let mut src = MemSource::default();
    let img = many(&mut src, 8);
    let dest = Arc::new(SlowDest::new(None));
    let o = SendOptions {
        jobs: 3,
        compress: false,
        ..opts(&["v1"])
    };
    send_image(Arc::new(src), &img, dest.clone(), &o, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(dest.finished.load(Ordering::SeqCst), 8);
    assert_eq!(
        dest.most.load(Ordering::SeqCst),
        3,
        "-j 3 is used, not exceeded"
    );
    assert_eq!(dest.manifests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_first_failed_blob_stops_the_others_and_no_manifest_is_stored() {
    let mut src = MemSource::default();
    let img = many(&mut src, 6);
    let failing = img.platforms[0].layers[2].descriptor.digest.clone();
    let dest = Arc::new(SlowDest::new(Some(failing)));
    let o = SendOptions {
        jobs: 4,
        compress: false,
        ..opts(&["v1"])
    };
    let started = std::time::Instant::now();
    let err = send_image(Arc::new(src), &img, dest.clone(), &o, Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CopyError::Task(ref m) if m == "refused"),
        "{err:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the others were waited for"
    );
    // Aborted tasks are dropped on the runtime shortly after the set is.
    for _ in 0..100 {
        if dest.in_flight.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        dest.in_flight.load(Ordering::SeqCst),
        0,
        "uploads left running"
    );
    assert_eq!(dest.finished.load(Ordering::SeqCst), 0);
    assert_eq!(dest.manifests.load(Ordering::SeqCst), 0);
}
