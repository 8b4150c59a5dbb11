//! The pull path: resolve every reference, then download every missing blob once, in
//! parallel, into the store.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use ferry_core::{Descriptor, Manifest, Reference};
use ferry_registry::{Client, FetchedManifest};
use ferry_store::Store;

use crate::direct::{Cached, DirectArchive, Tee};
use crate::{ArchiveImage, CopyError, Event, ImageParts, Progress, PullOptions};

/// Pull `refs` into `store` and describe them for an archive writer: [`resolve_all`] then
/// [`fetch_blobs`].
pub async fn pull(
    client: &Client,
    store: &Store,
    refs: &[Reference],
    opts: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<Vec<ArchiveImage>, CopyError> {
    let images = resolve_all(client, store, refs, opts, progress.as_ref()).await?;
    fetch_blobs(client, store, &images, opts.jobs, progress, None).await?;
    Ok(images)
}

/// Resolve `refs` to images (manifests fetched, verified and stored; platform chosen). No
/// layer is downloaded yet, but everything an archive plan needs is known. A reference given
/// twice (or two resolving to the same name and manifest) is resolved once, with a warning.
pub async fn resolve_all(
    client: &Client,
    store: &Store,
    refs: &[Reference],
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Vec<ArchiveImage>, CopyError> {
    let mut images: Vec<ArchiveImage> = Vec::new();
    let mut given: Vec<&Reference> = Vec::new();
    for r in refs {
        if given.contains(&r) {
            progress.event(Event::Warning {
                message: format!(
                    "{} is given more than once; it is pulled once",
                    r.familiar()
                ),
            });
            continue;
        }
        given.push(r);
        let image = resolve(client, store, r, opts, progress).await?;
        if images
            .iter()
            .any(|i| i.name == image.name && i.root.digest == image.root.digest)
        {
            progress.event(Event::Warning {
                message: format!(
                    "{} is the same image as an earlier argument; it is listed once",
                    r.familiar()
                ),
            });
            continue;
        }
        images.push(image);
    }
    Ok(images)
}

/// Download every config and layer of `images` that the store lacks, `jobs` at a time, in
/// the order an archive holds them; cached ones are verified again, and a damaged copy is
/// downloaded like a missing one. Blobs shared between the images are fetched once. With
/// `direct`, each download is also written into its place in that output archive (the
/// caller fills in the rest with [`DirectArchive::fill_rest`] afterwards).
pub async fn fetch_blobs(
    client: &Client,
    store: &Store,
    images: &[ArchiveImage],
    jobs: usize,
    progress: Arc<dyn Progress>,
    direct: Option<Arc<DirectArchive>>,
) -> Result<(), CopyError> {
    let mut wanted: Vec<(Reference, Descriptor)> = Vec::new();
    let mut seen = HashSet::new();
    for img in images {
        for p in &img.images {
            for d in std::iter::once(&p.config).chain(&p.layers) {
                if seen.insert(d.digest.clone()) {
                    wanted.push((img.name.clone(), d.clone()));
                }
            }
        }
    }
    download_all(client, store, wanted, jobs.max(1), progress, direct).await
}

async fn fetch_manifest(
    client: &Client,
    store: &Store,
    r: &Reference,
    by: Option<&Descriptor>,
) -> Result<FetchedManifest, CopyError> {
    let err = |source| CopyError::Manifest {
        reference: r.to_string(),
        source,
    };
    let m = match by {
        None => client.manifest(r).await.map_err(err)?,
        Some(d) => client
            .manifest_at(
                r.api_host(),
                r.repository(),
                &d.digest.to_string(),
                Some(&d.digest),
            )
            .await
            .map_err(err)?,
    };
    store
        .put_verified(&m.digest, &m.bytes)
        .map_err(|source| CopyError::Store {
            digest: m.digest.clone(),
            source,
        })?;
    Ok(m)
}

/// How deep indexes may nest (an index of indexes is depth 2). containerd walks them
/// without a limit; a bound keeps a hostile registry from sending ferry round in circles.
const MAX_INDEX_DEPTH: usize = 4;

/// How many manifests resolving one reference may fetch: its own, nested indexes and the
/// images chosen. Real indexes list tens; a 4 MiB index can list some 20,000 entries, and
/// without a bound `--all-platforms` would fetch every one of them.
const MAX_MANIFESTS: usize = 1000;

/// The manifest fetches of one reference's resolution, counted against [`MAX_MANIFESTS`].
struct Fetches<'a> {
    client: &'a Client,
    store: &'a Store,
    r: &'a Reference,
    count: usize,
}

impl<'a> Fetches<'a> {
    fn new(client: &'a Client, store: &'a Store, r: &'a Reference) -> Fetches<'a> {
        Fetches {
            client,
            store,
            r,
            count: 0,
        }
    }

    /// The reference's own manifest (`by` is `None`) or the one `by` describes, fetched,
    /// verified and stored; refused once [`MAX_MANIFESTS`] have been fetched.
    async fn get(&mut self, by: Option<&Descriptor>) -> Result<FetchedManifest, CopyError> {
        if self.count >= MAX_MANIFESTS {
            return Err(CopyError::TooManyManifests {
                reference: self.r.familiar(),
                limit: MAX_MANIFESTS,
            });
        }
        self.count += 1;
        fetch_manifest(self.client, self.store, self.r, by).await
    }
}

/// What walking one reference's nested indexes has met so far.
struct IndexWalk<'a> {
    /// The one platform wanted; `None` with `--all-platforms`.
    wanted: Option<&'a ferry_core::Platform>,
    /// The digests of the indexes fetched (the top one included): each is expanded once.
    seen: HashSet<ferry_core::Digest>,
    /// The nested indexes fetched, in the order met, so an OCI layout can hold them.
    nested: Vec<Descriptor>,
    /// The platforms of nested indexes not fetched because `wanted` cannot match them, for
    /// the list of what the reference has.
    passed_over: Vec<ferry_core::Platform>,
}

/// The image parts of a fetched image manifest. An artifact (see
/// [`ferry_core::ImageManifest::artifact_kind`]) is refused unless `opts.keep_artifacts`.
fn parts_of(
    r: &Reference,
    m: &FetchedManifest,
    platform: Option<ferry_core::Platform>,
    opts: &PullOptions,
) -> Result<ImageParts, CopyError> {
    match &m.manifest {
        Manifest::Image(im) => {
            if let (Some(kind), false) = (im.artifact_kind(), opts.keep_artifacts) {
                return Err(CopyError::Artifact {
                    reference: r.familiar(),
                    kind: kind.to_string(),
                });
            }
            Ok(ImageParts {
                manifest: m.descriptor(),
                config: im.config.clone(),
                layers: im.layers.clone(),
                platform,
            })
        }
        Manifest::Index(_) => Err(CopyError::Unexpected {
            reference: r.to_string(),
            kind: "a nested index",
            digest: m.digest.clone(),
        }),
    }
}

/// Whether a fetched manifest is an artifact rather than a container image (see
/// [`ferry_core::ImageManifest::artifact_kind`]).
fn is_artifact(m: &FetchedManifest) -> bool {
    matches!(&m.manifest, Manifest::Image(im) if im.artifact_kind().is_some())
}

/// The entries of `idx` with nested indexes replaced by their own entries (fetched and
/// stored), to [`MAX_INDEX_DEPTH`]. Entries of a nested index without a platform take the
/// platform its own entry names. A nested index already expanded is not fetched again (its
/// entries are in the list already; digests are verified, so a cycle cannot arise, and
/// this would end one anyway); when one platform is wanted, neither is a nested index whose
/// entry names a platform that cannot match it.
async fn expand_index(
    fetches: &mut Fetches<'_>,
    walk: &mut IndexWalk<'_>,
    idx: &ferry_core::IndexManifest,
    depth: usize,
) -> Result<Vec<Descriptor>, CopyError> {
    let mut out = Vec::new();
    for d in &idx.manifests {
        if !d.is_index() {
            out.push(d.clone());
            continue;
        }
        if let (Some(wanted), Some(p)) = (walk.wanted, &d.platform) {
            // OS and architecture only: a nested index labelled `linux/arm` may hold any
            // arm variant.
            let family = ferry_core::Platform::new(&wanted.os, &wanted.architecture, None);
            if !family.matches(p) {
                walk.passed_over.push(p.clone());
                continue;
            }
        }
        if walk.seen.contains(&d.digest) {
            continue;
        }
        if depth >= MAX_INDEX_DEPTH {
            return Err(CopyError::NestedTooDeep {
                reference: fetches.r.familiar(),
                depth: MAX_INDEX_DEPTH,
            });
        }
        let child = fetches.get(Some(d)).await?;
        walk.seen.insert(child.digest.clone());
        let Manifest::Index(inner) = &child.manifest else {
            // Its descriptor called it an index; what arrived is an image: take it as one.
            out.push(Descriptor {
                platform: d.platform.clone(),
                ..child.descriptor()
            });
            continue;
        };
        walk.nested.push(child.descriptor());
        let entries = Box::pin(expand_index(fetches, walk, inner, depth + 1)).await?;
        out.extend(entries.into_iter().map(|mut e| {
            if e.platform.is_none() {
                e.platform = d.platform.clone();
            }
            e
        }));
    }
    Ok(out)
}

/// The name an image is recorded under. For `name:tag@digest` the digest decides what is
/// pulled; the tag is kept only if the registry's tag names that same manifest (as docker
/// does), else it is dropped with a warning so a loader does not tag the wrong image.
async fn recorded_name(client: &Client, r: &Reference, progress: &dyn Progress) -> Reference {
    let (Some(tag), Some(digest)) = (r.tag(), r.digest()) else {
        return r.clone();
    };
    // A HEAD: the tag's digest is all that is compared, and Docker Hub counts GETs.
    let by_tag = client
        .manifest_digest(r.api_host(), r.repository(), tag)
        .await;
    let why = match by_tag {
        Ok(d) if &d == digest => return r.clone(),
        Ok(d) => format!("the tag names {d} now"),
        Err(e) if e.is_not_found() => "the registry does not know that tag".to_string(),
        Err(e) => format!("the tag could not be checked: {e}"),
    };
    let untagged = r.without_tag();
    progress.event(Event::Warning {
        message: format!(
            "{} is pulled by its digest without the tag :{tag}, which does not name {digest} ({why})",
            untagged.familiar()
        ),
    });
    untagged
}

async fn resolve(
    client: &Client,
    store: &Store,
    r: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<ArchiveImage, CopyError> {
    let mut fetches = Fetches::new(client, store, r);
    let top = fetches.get(None).await?;
    let name = recorded_name(client, r, progress).await;
    // Whether the chosen image's platform is known only from its config, which is then read
    // below: before the summary when a mismatch is an error, after it when only a warning.
    // An artifact kept for an OCI layout has no platform to check.
    let mut check_config = false;
    let image = match &top.manifest {
        Manifest::Image(_) => {
            check_config = !is_artifact(&top);
            ArchiveImage::single(name, parts_of(r, &top, None, opts)?)
        }
        Manifest::Index(idx) => {
            let mut walk = IndexWalk {
                wanted: (!opts.all_platforms).then_some(&opts.platform),
                seen: HashSet::from([top.digest.clone()]),
                nested: Vec::new(),
                passed_over: Vec::new(),
            };
            let entries = expand_index(&mut fetches, &mut walk, idx, 1).await?;
            if opts.all_platforms {
                all_platforms(
                    &mut fetches,
                    name,
                    &top,
                    entries,
                    walk.nested,
                    opts,
                    progress,
                )
                .await?
            } else {
                // The "only entry without a platform" fallback holds only when nothing was
                // passed over: beside a nested index of another platform, a platformless
                // entry is not the index's only image.
                let chosen = match ferry_core::manifest::select_entry(&entries, &opts.platform) {
                    Some(d) if d.platform.is_none() && !walk.passed_over.is_empty() => None,
                    other => other,
                };
                let Some(d) = chosen else {
                    let mut available = ferry_core::manifest::platforms_of(&entries);
                    for p in walk.passed_over {
                        if p.os != "unknown" && !available.contains(&p) {
                            available.push(p);
                        }
                    }
                    return Err(CopyError::NoPlatform {
                        reference: r.familiar(),
                        wanted: opts.platform.clone(),
                        available,
                    });
                };
                let child = fetches.get(Some(d)).await?;
                let parts = parts_of(r, &child, d.platform.clone(), opts)?;
                // Chosen for being the only entry: its config says what it runs on.
                check_config = d.platform.is_none() && !is_artifact(&child);
                ArchiveImage {
                    index: Some(top.descriptor()),
                    ..ArchiveImage::single(name, parts)
                }
            }
        }
    };
    let blobs: Vec<&Descriptor> = image
        .images
        .iter()
        .flat_map(|p| std::iter::once(&p.config).chain(&p.layers))
        .collect();
    check_foreign_layers(client, r, &blobs).await?;
    if check_config && opts.platform_explicit {
        check_image_platform(client, store, r, &image.images[0], opts, progress).await?;
    }
    progress.event(Event::Resolved {
        reference: r.familiar(),
        digest: image.index.as_ref().unwrap_or(&image.root).digest.clone(),
        platform: image
            .images
            .first()
            .and_then(|p| p.platform.as_ref())
            .map(ToString::to_string),
        blobs: blobs.len(),
        bytes: blobs
            .iter()
            .try_fold(0u64, |a, d| a.checked_add(d.size))
            .unwrap_or(u64::MAX),
        contents: blobs.iter().map(|d| (d.digest.clone(), d.size)).collect(),
    });
    if check_config && !opts.platform_explicit {
        check_image_platform(client, store, r, &image.images[0], opts, progress).await?;
    }
    Ok(image)
}

/// Every entry of an index (`--all-platforms`). Docker's `manifest.json` lists one of them:
/// the one for `opts.platform`, else the first loadable image (with a warning). An index
/// with no loadable image at all (only attestations and artifacts) is refused unless
/// artifacts are kept (an OCI layout), where it is only a warning.
async fn all_platforms(
    fetches: &mut Fetches<'_>,
    name: Reference,
    top: &FetchedManifest,
    entries: Vec<Descriptor>,
    nested: Vec<Descriptor>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<ArchiveImage, CopyError> {
    let keep_all = PullOptions {
        keep_artifacts: true,
        ..opts.clone()
    };
    let mut images = Vec::new();
    let mut manifests = vec![top.descriptor()];
    manifests.extend(nested);
    let mut loadable = Vec::new();
    let r = fetches.r;
    for d in &entries {
        let child = fetches.get(Some(d)).await?;
        // Artifacts and attestations ride along in the OCI part; docker never loads them.
        let parts = parts_of(r, &child, d.platform.clone(), &keep_all)?;
        if !is_artifact(&child) && !d.is_attestation() {
            loadable.push(images.len());
        }
        manifests.push(child.descriptor());
        images.push(parts);
    }
    let matching = loadable.iter().copied().find(|&i| {
        images[i]
            .platform
            .as_ref()
            .is_some_and(|p| opts.platform.matches(p))
    });
    let docker_image = match (matching, loadable.first()) {
        (Some(i), _) => Some(i),
        (None, Some(&i)) => {
            if let Some(p) = &images[i].platform {
                progress.event(Event::Warning {
                    message: format!(
                        "{} has no image for {}; docker will load its {p} image, which needs emulation here",
                        r.familiar(),
                        opts.platform
                    ),
                });
            }
            Some(i)
        }
        (None, None) if opts.keep_artifacts => {
            progress.event(Event::Warning {
                message: format!(
                    "{} holds no container image (only attestations or artifacts)",
                    r.familiar()
                ),
            });
            None
        }
        (None, None) => {
            return Err(CopyError::NothingLoadable {
                reference: r.familiar(),
            })
        }
    };
    Ok(ArchiveImage {
        name,
        root: top.descriptor(),
        manifests,
        images,
        docker_image,
        index: None,
    })
}

/// Foreign (non-distributable) layers are usually not in the registry: the manifest names
/// other addresses (Microsoft's, for Windows base layers). ferry fetches only from the
/// registry, so a foreign layer the registry lacks is refused here, before any download,
/// naming the layer — not reported later as a 404. One HEAD per foreign layer; images
/// without them cost nothing.
async fn check_foreign_layers(
    client: &Client,
    r: &Reference,
    blobs: &[&Descriptor],
) -> Result<(), CopyError> {
    for d in blobs
        .iter()
        .filter(|d| ferry_core::media::is_foreign_layer(&d.media_type))
    {
        let held = client
            .blob_exists(r.api_host(), r.repository(), &d.digest)
            .await
            .map_err(|source| CopyError::Blob {
                reference: r.familiar(),
                digest: d.digest.clone(),
                source,
            })?;
        if held.is_none() {
            return Err(CopyError::ForeignLayer {
                reference: r.familiar(),
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                url: d.urls.as_ref().and_then(|u| u.first()).cloned(),
            });
        }
    }
    Ok(())
}

/// A single-platform image names its platform only in its config: fetch that (into the
/// store, where it is wanted anyway). An image of another platform than the one asked for
/// explicitly is refused, as docker does; without `--platform` it is a warning, since the
/// image will not run here without emulation. Artifacts have no platform to check.
async fn check_image_platform(
    client: &Client,
    store: &Store,
    r: &Reference,
    parts: &ImageParts,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<(), CopyError> {
    let config = &parts.config;
    if !ferry_core::media::is_image_config(&config.media_type) {
        return Ok(());
    }
    let store_err = |source| CopyError::Store {
        digest: config.digest.clone(),
        source,
    };
    if config.size > ferry_core::MAX_SMALL_BLOB {
        // Known from the manifest alone: refuse before downloading it when the platform was
        // asked for; otherwise the warning is only a courtesy, and not worth the read.
        if opts.platform_explicit {
            return Err(store_err(ferry_store::StoreError::TooLarge {
                digest: config.digest.clone(),
                size: config.size,
            }));
        }
        return Ok(());
    }
    let mut refetched = false;
    let bytes = loop {
        if !matches!(store.check(&config.digest, config.size), Ok(true)) {
            download_one(client, store, r, config, progress, None).await?;
        }
        match store.read_small(&config.digest) {
            Ok(b) => break b,
            // A damaged cached copy has been removed by the read: fetch it again, once.
            Err(e @ ferry_store::StoreError::Corrupt { .. }) if !refetched => {
                refetched = true;
                progress.event(Event::Warning {
                    message: format!("{e}; downloading it again"),
                });
            }
            Err(e) => return Err(store_err(e)),
        }
    };
    // A config that does not say (or does not parse) is not held against the image.
    let Ok(cfg) = ferry_core::manifest::ImageConfig::parse(&bytes) else {
        return Ok(());
    };
    let (Some(os), Some(arch)) = (cfg.os.as_deref(), cfg.architecture.as_deref()) else {
        return Ok(());
    };
    let actual = ferry_core::Platform::new(os, arch, cfg.variant.as_deref());
    if opts.platform.matches(&actual) {
        return Ok(());
    }
    if !opts.platform_explicit {
        progress.event(Event::Warning {
            message: format!(
                "{} is {actual} only; it will not run on this {} machine without emulation",
                r.familiar(),
                opts.platform
            ),
        });
        return Ok(());
    }
    Err(CopyError::WrongPlatform {
        reference: r.familiar(),
        wanted: opts.platform.clone(),
        actual: actual.to_string(),
    })
}

/// Download (or take from the cache) every blob of `wanted`, `jobs` at a time, in order.
///
/// A cached blob is verified before anything uses it. One bound for `direct` is verified
/// by [`download_one`] in the loop that copies it into its place. Any other is verified
/// here, beside the downloads, before it is announced ([`Event::BlobCached`]): an archive
/// writer ([`crate::ArrivingReader`]) waits for that, so it copies only bytes known to be
/// good, even to a stream it cannot take back. A damaged copy is removed and downloaded
/// like a missing blob.
async fn download_all(
    client: &Client,
    store: &Store,
    wanted: Vec<(Reference, Descriptor)>,
    jobs: usize,
    progress: Arc<dyn Progress>,
    direct: Option<Arc<DirectArchive>>,
) -> Result<(), CopyError> {
    if let Some(arrivals) = progress.arrivals() {
        arrivals.expect(wanted.iter().map(|(_, d)| d.digest.clone()));
    }
    // Off the async threads: a blob whose size looks wrong is hashed to tell why.
    let (s, sizes) = (
        store.clone(),
        wanted
            .iter()
            .map(|(_, d)| (d.digest.clone(), d.size))
            .collect::<Vec<_>>(),
    );
    let checks = tokio::task::spawn_blocking(move || {
        sizes
            .iter()
            .map(|(digest, size)| s.check(digest, *size))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| CopyError::Task(e.to_string()))?;
    let slots = Arc::new(Semaphore::new(jobs));
    let mut set = JoinSet::new();
    for ((r, d), check) in wanted.into_iter().zip(checks) {
        let cached = check.map_err(|source| cache_error(&r, &d, source))?;
        let verify_here = cached
            && direct
                .as_ref()
                .is_none_or(|out| out.region(&d.digest).is_none());
        let (client, store, progress, slots, direct) = (
            client.clone(),
            store.clone(),
            progress.clone(),
            slots.clone(),
            direct.clone(),
        );
        set.spawn(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|e| CopyError::Task(e.to_string()))?;
            if verify_here && verify_cached(&store, &r, &d, progress.as_ref()).await? {
                return Ok(());
            }
            download_one(&client, &store, &r, &d, progress.as_ref(), direct.as_ref()).await
        });
    }
    while let Some(res) = set.join_next().await {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(CopyError::Task(e.to_string())),
        }
    }
    Ok(())
}

/// Hash cached blob `d` and announce it when it matches. `false` when it was damaged: it
/// has been removed (with a warning) and is to be downloaded.
async fn verify_cached(
    store: &Store,
    r: &Reference,
    d: &Descriptor,
    progress: &dyn Progress,
) -> Result<bool, CopyError> {
    let (s, digest, size) = (store.clone(), d.digest.clone(), d.size);
    let verified =
        tokio::task::spawn_blocking(move || s.open_verified(&digest, Some(size))?.verify())
            .await
            .map_err(|e| CopyError::Task(e.to_string()))?;
    match verified {
        Ok(()) => {
            progress.event(Event::BlobCached {
                digest: d.digest.clone(),
                size: d.size,
            });
            Ok(true)
        }
        Err(e @ ferry_store::StoreError::Corrupt { .. }) => {
            progress.event(Event::Warning {
                message: format!("{e}; downloading it again"),
            });
            Ok(false)
        }
        Err(e) => Err(cache_error(r, d, e)),
    }
}

/// A store error about blob `d` of `r`: a manifest that contradicts the cache is the
/// manifest's fault, anything else the cache's.
fn cache_error(r: &Reference, d: &Descriptor, source: ferry_store::StoreError) -> CopyError {
    match source {
        ferry_store::StoreError::SizeMismatch { .. } => CopyError::BadManifest {
            reference: r.familiar(),
            source,
        },
        source => CopyError::Store {
            digest: d.digest.clone(),
            source,
        },
    }
}

/// What one try at a blob came to.
enum Attempt {
    Done,
    /// Worth one more try from byte 0: why (for the user), and the error to report if the
    /// try after this one comes to the same.
    Again {
        why: String,
        error: CopyError,
    },
}

/// Fetch blob `d` into the store (and its place in `direct`), or take it from the cache.
/// Bytes a previous run left that turn out wrong, or a cached copy found damaged while it
/// is copied into `direct`, cost one more download from byte 0 before anything is blamed on
/// the registry.
pub(crate) async fn download_one(
    client: &Client,
    store: &Store,
    r: &Reference,
    d: &Descriptor,
    progress: &dyn Progress,
    direct: Option<&Arc<DirectArchive>>,
) -> Result<(), CopyError> {
    let Attempt::Again { why, .. } =
        download_attempt(client, store, r, d, progress, direct).await?
    else {
        return Ok(());
    };
    progress.event(Event::Warning { message: why });
    // The bad bytes are gone (the partial file or the cached copy), so this one starts
    // from byte 0 and only the registry can make it fail the same way.
    match download_attempt(client, store, r, d, progress, direct).await? {
        Attempt::Done => Ok(()),
        Attempt::Again { error, .. } => Err(error),
    }
}

async fn download_attempt(
    client: &Client,
    store: &Store,
    r: &Reference,
    d: &Descriptor,
    progress: &dyn Progress,
    direct: Option<&Arc<DirectArchive>>,
) -> Result<Attempt, CopyError> {
    let store_err = |source| cache_error(r, d, source);
    let (s, digest, size) = (store.clone(), d.digest.clone(), d.size);
    // Taking the blob's lock may wait for another process; keep that off the async threads.
    let mut ingest = tokio::task::spawn_blocking(move || s.begin(&digest, Some(size)))
        .await
        .map_err(|e| CopyError::Task(e.to_string()))?
        .map_err(store_err)?;
    let region = direct.and_then(|out| out.region(&d.digest).map(|(base, _)| (out, base)));
    if ingest.already_done() {
        // Release the lock before the copy: other processes only read the blob too.
        drop(ingest);
        if let Some((out, _)) = region {
            let (s, digest) = (store.clone(), d.digest.clone());
            let out = out.clone();
            let copied = tokio::task::spawn_blocking(move || out.copy_cached(&s, &digest))
                .await
                .map_err(|e| CopyError::Task(e.to_string()))??;
            if let Cached::Damaged(e) = copied {
                return Ok(Attempt::Again {
                    why: format!("{e}; downloading it again"),
                    error: store_err(e),
                });
            }
        }
        progress.event(Event::BlobCached {
            digest: d.digest.clone(),
            size: d.size,
        });
        return Ok(Attempt::Done);
    }
    let resumed = ingest.offset() > 0;
    progress.event(Event::BlobStarted {
        digest: d.digest.clone(),
        size: d.size,
        held: ingest.offset(),
    });
    let report = |held: u64| {
        progress.event(Event::BlobProgress {
            digest: d.digest.clone(),
            held,
        })
    };
    let fetched = match region {
        None => {
            client
                .blob_into(r.api_host(), r.repository(), d, &mut ingest, &report)
                .await
        }
        Some((out, base)) => {
            let output_err = |source| CopyError::Output {
                digest: d.digest.clone(),
                source,
            };
            // Copying what an earlier run left (up to a whole blob) is file work: keep it off
            // the async workers.
            let (s, digest, o) = (store.clone(), d.digest.clone(), out.clone());
            let (back, copied) = tokio::task::spawn_blocking(move || {
                let copied = ingest
                    .flush()
                    .map(|()| o.copy_partial(&s, &digest, ingest.offset()));
                (ingest, copied)
            })
            .await
            .map_err(|e| CopyError::Task(e.to_string()))?;
            ingest = back;
            copied.map_err(store_err)?.map_err(output_err)?;
            let mut tee = Tee {
                ingest: &mut ingest,
                out: out.as_ref(),
                base,
            };
            client
                .blob_into(r.api_host(), r.repository(), d, &mut tee, &report)
                .await
        }
    };
    if let Err(source) = fetched {
        let _ = ingest.flush();
        return Err(CopyError::Blob {
            reference: r.familiar(),
            digest: d.digest.clone(),
            source,
        });
    }
    let committed = tokio::task::spawn_blocking(move || ingest.commit())
        .await
        .map_err(|e| CopyError::Task(e.to_string()))?;
    match committed {
        Ok(_) => {}
        // The bytes kept from an earlier run may be what was wrong (a damaged partial file);
        // the commit removed them. Only a download from byte 0 that fails is the registry's.
        Err(ferry_store::StoreError::Verify(v)) => {
            let error = CopyError::Blob {
                reference: r.familiar(),
                digest: d.digest.clone(),
                source: ferry_registry::RegistryError::Verify(v),
            };
            if !resumed {
                return Err(error);
            }
            return Ok(Attempt::Again {
                why: format!(
                    "blob {} did not verify after resuming from bytes kept by an earlier run; downloading it again from the start",
                    d.digest
                ),
                error,
            });
        }
        Err(other) => return Err(store_err(other)),
    }
    if let Some((out, _)) = region {
        out.mark_filled(&d.digest);
    }
    progress.event(Event::BlobDone {
        digest: d.digest.clone(),
        size: d.size,
    });
    Ok(Attempt::Done)
}
