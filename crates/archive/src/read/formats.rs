//! The two ways an archive describes its images: an OCI layout's `index.json` (with
//! manifests), and docker's `manifest.json` (configs and layer files, no manifests). When
//! an archive has both (ferry's default, docker save from Docker 25), `index.json` wins: its
//! manifests are the exact bytes, so a pulled-then-pushed image keeps its digest.

use std::cell::Cell;
use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::Digest as _;

use ferry_core::manifest::{ImageConfig, IndexManifest};
use ferry_core::media::{self, Compression};
use ferry_core::{Algorithm, Descriptor, Digest, Manifest, Platform};

use super::error::ReadError;
use super::{
    sniff, ArchiveKind, Backing, BlobLocation, PlatformImage, SourceImage, SourceLayer, StoredBlob,
};
use crate::blob_name;

/// How deep indexes may nest under `index.json` (an index of indexes of manifests is 2).
pub(crate) const MAX_NESTING: usize = 4;

/// How many manifests one `index.json` entry may bring in (as pull's limit per reference):
/// more is a hostile index, not an image.
pub(crate) const MAX_MANIFESTS: usize = 1000;

/// How many bytes of manifests, configs and JSON files opening one archive may read into
/// memory, counting each time one is named: a hostile archive that names one 4 MiB config
/// a thousand times is refused, not held a thousand times over.
pub(crate) const MAX_HELD: u64 = 64 << 20;

/// The archive, with what opening it may still read into memory.
pub(crate) struct Budgeted<'a> {
    b: &'a Backing,
    left: Cell<u64>,
}

impl<'a> Budgeted<'a> {
    pub(crate) fn new(b: &'a Backing) -> Self {
        Budgeted {
            b,
            left: Cell::new(MAX_HELD),
        }
    }

    fn locate(&self, entry: &str, wanted_by: &str) -> Result<BlobLocation, ReadError> {
        self.b.locate(entry, wanted_by)
    }

    fn has(&self, entry: &str) -> bool {
        self.b.has(entry)
    }

    fn read_at_most(&self, loc: &BlobLocation, n: u64) -> std::io::Result<Vec<u8>> {
        self.b.read_at_most(loc, n)
    }

    /// A small file whole, its size taken from the budget.
    fn read_small(&self, loc: &BlobLocation) -> Result<Vec<u8>, ReadError> {
        let left =
            self.left
                .get()
                .checked_sub(loc.len)
                .ok_or_else(|| ReadError::TooMuchMetadata {
                    entry: loc.entry.clone(),
                    max: MAX_HELD,
                })?;
        let bytes = self.b.read_small(loc)?;
        self.left.set(left);
        Ok(bytes)
    }
}

const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";

/// Read the images of a tar archive, telling its kind by the files it holds.
pub(crate) fn read_tar(b: &Backing) -> Result<(ArchiveKind, Vec<SourceImage>), ReadError> {
    let b = &Budgeted::new(b);
    match (b.has("index.json"), b.has("manifest.json")) {
        (true, false) => Ok((ArchiveKind::OciArchive, read_oci(b)?)),
        (true, true) => Ok((ArchiveKind::DockerOci, read_docker_oci(b)?)),
        (false, true) => Ok((ArchiveKind::DockerArchive, read_docker(b)?)),
        (false, false) => Err(ReadError::NoImageIndex),
    }
}

/// An OCI layout with docker's `manifest.json` (ferry's default, docker save from Docker
/// 25). `index.json` gives the exact manifests; `manifest.json` adds its `RepoTags`, and
/// gives the images `index.json` lacks: Docker 25 leaves untagged images (saved by ID or
/// digest) out of `index.json` (moby#47210 until 25.0.3, moby#51389 for several at once).
/// Docker 25.0.0 wrote manifests without their layers (moby#47065): such an archive is read
/// from `manifest.json` alone.
fn read_docker_oci(b: &Budgeted) -> Result<Vec<SourceImage>, ReadError> {
    let entries = docker_entries(b)?;
    let mut images = match read_oci(b) {
        Ok(images) => images,
        Err(ReadError::DiffIdCount { layers: 0, .. }) => return read_docker(b),
        Err(e) => return Err(e),
    };
    let mut unindexed = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let wanted_by = format!("manifest.json (image {i})");
        for path in std::iter::once(&e.config).chain(&e.layers) {
            b.locate(path, &wanted_by)?;
        }
        let config = named_digest(&e.config);
        let owner = images.iter_mut().find(|img| {
            img.platforms
                .iter()
                .any(|p| Some(&p.config.descriptor.digest) == config.as_ref())
        });
        match owner {
            Some(img) => add_names(img, e.repo_tags.iter().flatten()),
            None => unindexed.push(i),
        }
    }
    images.extend(docker_images(b, &entries, &unindexed, &BTreeMap::new())?);
    Ok(images)
}

fn malformed(entry: &str, e: impl std::fmt::Display) -> ReadError {
    ReadError::Malformed {
        entry: entry.to_string(),
        reason: e.to_string(),
    }
}

/// The digest of `bytes` with `algorithm`.
fn digest_of(algorithm: Algorithm, bytes: &[u8]) -> String {
    match algorithm {
        Algorithm::Sha256 => format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))),
        Algorithm::Sha512 => format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes))),
    }
}

/// The blob `d` names, read whole and checked against its size and digest.
fn stored(b: &Budgeted, d: &Descriptor, wanted_by: &str) -> Result<StoredBlob, ReadError> {
    let location = b.locate(&blob_name(&d.digest), wanted_by)?;
    if location.len != d.size {
        return Err(ReadError::SizeMismatch {
            entry: location.entry,
            declared_by: wanted_by.to_string(),
            expected: d.size,
            actual: location.len,
        });
    }
    let bytes = b.read_small(&location)?;
    let actual = digest_of(d.digest.algorithm(), &bytes);
    if actual != d.digest.to_string() {
        return Err(ReadError::DigestMismatch {
            entry: location.entry,
            expected: d.digest.clone(),
            actual,
        });
    }
    Ok(StoredBlob {
        descriptor: d.clone(),
        bytes,
        location,
    })
}

/// The stored compression of a layer, from its first bytes.
fn layer_compression(b: &Budgeted, loc: &BlobLocation) -> Result<Compression, ReadError> {
    let head = b
        .read_at_most(loc, 4)
        .map_err(super::io_ctx(format!("reading {}", loc.entry)))?;
    Ok(sniff(&head))
}

fn platform_of(cfg: &ImageConfig) -> Option<Platform> {
    Some(Platform::new(
        cfg.os.as_deref()?,
        cfg.architecture.as_deref()?,
        cfg.variant.as_deref(),
    ))
}

fn parse_config(blob: &StoredBlob) -> Result<ImageConfig, ReadError> {
    ImageConfig::parse(&blob.bytes).map_err(|e| malformed(&blob.location.entry, e))
}

/// Whether `index.json` is an index with `"manifests": null`.
fn manifests_null(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Nulled {
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Nulled>(bytes).is_ok_and(|n| n.manifests.is_none())
}

/// Add `names` to `img`'s, but none it already has (spelled the same or another way).
fn add_names<'a>(img: &mut SourceImage, names: impl Iterator<Item = &'a String>) {
    for tag in names {
        let parsed = tag.parse::<ferry_core::Reference>().ok();
        let known = img.names.iter().any(|n| {
            n == tag
                || parsed
                    .as_ref()
                    .is_some_and(|p| n.parse().ok().as_ref() == Some(p))
        });
        if !known {
            img.names.push(tag.clone());
        }
    }
}

/// The images of an OCI layout: one per manifest `index.json` names.
pub(crate) fn read_oci(b: &Budgeted) -> Result<Vec<SourceImage>, ReadError> {
    let loc = b.locate("index.json", "the OCI image layout")?;
    let bytes = b.read_small(&loc)?;
    let index: IndexManifest = match Manifest::parse(&bytes, Some(media::OCI_INDEX)) {
        Ok(Manifest::Index(i)) => i,
        // Docker 25.0.0–25.0.2 wrote `"manifests": null` when saving by ID or digest.
        Err(_) if manifests_null(&bytes) => IndexManifest {
            schema_version: 2,
            media_type: None,
            manifests: Vec::new(),
        },
        Ok(Manifest::Image(_)) => {
            return Err(malformed(
                "index.json",
                "it is an image manifest, not an index",
            ))
        }
        Err(e) => return Err(malformed("index.json", e)),
    };
    let mut images = Vec::new();
    for d in &index.manifests {
        let mut names = Vec::new();
        if let Some(ann) = &d.annotations {
            for key in [
                "io.containerd.image.name",
                "org.opencontainers.image.ref.name",
            ] {
                if let Some(n) = ann.get(key) {
                    if !n.is_empty() && !names.contains(n) {
                        names.push(n.clone());
                    }
                }
            }
        }
        // One manifest under several names (docker save writes one entry per tag) is one
        // image with those names.
        if let Some(img) = images.iter_mut().find(|img: &&mut SourceImage| {
            img.root
                .as_ref()
                .is_some_and(|r| r.descriptor.digest == d.digest)
        }) {
            add_names(img, names.iter());
            continue;
        }
        let root = stored(b, d, "index.json")?;
        let mut platforms = Vec::new();
        let mut budget = MAX_MANIFESTS;
        expand(b, &root, d.platform.clone(), 0, &mut budget, &mut platforms)?;
        images.push(SourceImage {
            names,
            root: Some(root),
            platforms,
        });
    }
    Ok(images)
}

/// Add the images under manifest `blob` (itself, or an index's entries) to `out`.
fn expand(
    b: &Budgeted,
    blob: &StoredBlob,
    platform: Option<Platform>,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<PlatformImage>,
) -> Result<(), ReadError> {
    let entry = &blob.location.entry;
    *budget = budget.checked_sub(1).ok_or_else(|| ReadError::TooMany {
        entry: entry.clone(),
        max: MAX_MANIFESTS,
    })?;
    let manifest = Manifest::parse(&blob.bytes, Some(&blob.descriptor.media_type))
        .map_err(|e| malformed(entry, e))?;
    let m = match manifest {
        Manifest::Index(index) => {
            if depth >= MAX_NESTING {
                return Err(ReadError::TooDeep {
                    entry: entry.clone(),
                    max: MAX_NESTING,
                });
            }
            for child in &index.manifests {
                let c = stored(b, child, entry)?;
                expand(b, &c, child.platform.clone(), depth + 1, budget, out)?;
            }
            return Ok(());
        }
        Manifest::Image(m) => m,
    };
    let config = stored(b, &m.config, entry)?;
    let cfg = parse_config(&config)?;
    let diff_ids = cfg.rootfs.as_ref().map(|r| r.diff_ids.clone());
    // An artifact (a Helm chart, an SBOM) has no diff_ids: its layers are not filesystems.
    let diff_ids = match diff_ids {
        None if m.artifact_kind().is_some() => m.layers.iter().map(|l| l.digest.clone()).collect(),
        d => d.unwrap_or_default(),
    };
    if diff_ids.len() != m.layers.len() {
        return Err(ReadError::DiffIdCount {
            entry: config.location.entry,
            layers: m.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut layers = Vec::new();
    for (l, diff_id) in m.layers.iter().zip(diff_ids) {
        let location = b.locate(&blob_name(&l.digest), entry)?;
        if location.len != l.size {
            return Err(ReadError::SizeMismatch {
                entry: location.entry,
                declared_by: entry.clone(),
                expected: l.size,
                actual: location.len,
            });
        }
        let compression = layer_compression(b, &location)?;
        // An uncompressed tar layer is its own diff_id (Docker 25 stores them so).
        let plain_tar = [media::OCI_LAYER_TAR, DOCKER_LAYER_TAR].contains(&l.media_type.as_str());
        if plain_tar && compression == Compression::None && l.digest != diff_id {
            return Err(ReadError::DiffIdMismatch {
                entry: location.entry,
                named: l.digest.clone(),
                diff_id,
            });
        }
        layers.push(SourceLayer {
            compression,
            location,
            descriptor: l.clone(),
            diff_id,
        });
    }
    out.push(PlatformImage {
        platform: platform.or_else(|| platform_of(&cfg)),
        manifest: Some(blob.clone()),
        config,
        layers,
    });
    Ok(())
}

/// One entry of docker's `manifest.json`.
#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn docker_entries(b: &Budgeted) -> Result<Vec<DockerEntry>, ReadError> {
    let loc = b.locate("manifest.json", "a docker archive")?;
    let bytes = b.read_small(&loc)?;
    serde_json::from_slice(&bytes).map_err(|e| malformed("manifest.json", e))
}

/// The digest an entry's name gives: `blobs/<alg>/<hex>`, `<hex>.json` (docker's configs)
/// or `<hex>.tar` (podman's and skopeo's layers).
pub(crate) fn named_digest(entry: &str) -> Option<Digest> {
    let entry = super::tarindex::clean(entry).ok()?;
    if let Some(rest) = entry.strip_prefix("blobs/") {
        let (alg, hex) = rest.split_once('/')?;
        return format!("{alg}:{hex}").parse().ok();
    }
    let hex = entry
        .strip_suffix(".json")
        .or_else(|| entry.strip_suffix(".tar"))?;
    format!("sha256:{hex}").parse().ok()
}

/// The images of a docker archive without an OCI layout: no manifests, configs and layer
/// files named by `manifest.json`.
fn read_docker(b: &Budgeted) -> Result<Vec<SourceImage>, ReadError> {
    let entries = docker_entries(b)?;
    let repositories = repositories(b)?;
    let all: Vec<usize> = (0..entries.len()).collect();
    docker_images(b, &entries, &all, &repositories)
}

/// The images of `manifest.json` entries `which`.
fn docker_images(
    b: &Budgeted,
    entries: &[DockerEntry],
    which: &[usize],
    repositories: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<SourceImage>, ReadError> {
    let mut images = Vec::new();
    for &i in which {
        let e = &entries[i];
        let wanted_by = format!("manifest.json (image {i})");
        let location = b.locate(&e.config, &wanted_by)?;
        let bytes = b.read_small(&location)?;
        let digest = match named_digest(&e.config) {
            Some(named) => {
                let actual = digest_of(named.algorithm(), &bytes);
                if actual != named.to_string() {
                    return Err(ReadError::DigestMismatch {
                        entry: location.entry,
                        expected: named,
                        actual,
                    });
                }
                named
            }
            None => Digest::sha256_of(&bytes),
        };
        let config = StoredBlob {
            descriptor: Descriptor::new(media::DOCKER_CONFIG, digest, bytes.len() as u64),
            bytes,
            location,
        };
        let cfg = parse_config(&config)?;
        let diff_ids = cfg
            .rootfs
            .as_ref()
            .map(|r| r.diff_ids.clone())
            .unwrap_or_default();
        if diff_ids.len() != e.layers.len() {
            return Err(ReadError::DiffIdCount {
                entry: config.location.entry,
                layers: e.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut layers = Vec::new();
        for (path, diff_id) in e.layers.iter().zip(diff_ids) {
            let location = b.locate(path, &wanted_by)?;
            let compression = layer_compression(b, &location)?;
            let named = named_digest(path);
            let (media_type, digest) = match (compression, named) {
                (Compression::None, Some(named)) if named != diff_id => {
                    return Err(ReadError::DiffIdMismatch {
                        entry: location.entry,
                        named,
                        diff_id,
                    })
                }
                (Compression::None, _) => (DOCKER_LAYER_TAR, diff_id.clone()),
                (c, Some(named)) if path.starts_with("blobs/") => (
                    if c == Compression::Gzip {
                        media::DOCKER_LAYER_GZIP
                    } else {
                        DOCKER_LAYER_ZSTD
                    },
                    named,
                ),
                _ => {
                    return Err(ReadError::Unsupported {
                        entry: location.entry,
                        reason: "the layer is compressed but its name does not give its digest"
                            .into(),
                    })
                }
            };
            layers.push(SourceLayer {
                descriptor: Descriptor::new(media_type, digest, location.len),
                location,
                compression,
                diff_id,
            });
        }
        let mut names = e.repo_tags.clone().unwrap_or_default();
        // docker's `repositories` names an image by the id of its top layer's directory.
        let top = e
            .layers
            .last()
            .and_then(|l| super::tarindex::clean(l).ok())
            .and_then(|l| l.split('/').next().map(str::to_string));
        for (repo, tags) in repositories {
            for (tag, id) in tags {
                let name = format!("{repo}:{tag}");
                if top.as_deref() == Some(id.as_str()) && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        images.push(SourceImage {
            names,
            root: None,
            platforms: vec![PlatformImage {
                platform: platform_of(&cfg),
                manifest: None,
                config,
                layers,
            }],
        });
    }
    Ok(images)
}

/// docker's `repositories` file (`{repo: {tag: top layer id}}`), empty when absent.
fn repositories(b: &Budgeted) -> Result<BTreeMap<String, BTreeMap<String, String>>, ReadError> {
    if !b.has("repositories") {
        return Ok(BTreeMap::new());
    }
    let loc = b.locate("repositories", "a docker archive")?;
    let bytes = b.read_small(&loc)?;
    serde_json::from_slice(&bytes).map_err(|e| malformed("repositories", e))
}
