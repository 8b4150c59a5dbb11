//! Random but valid test images: real gzip-compressed tar layers with seeded pseudo-random
//! content, a proper image config, and OCI or Docker schema 2 manifests and indexes.
//! Everything is deterministic: the same spec always yields identical bytes.

use std::io::Write;

use bytes::Bytes;
use ferry_core::{media, Digest, Platform};
use serde_json::{json, Value};

/// One blob of an image: its digest, media type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

impl Blob {
    fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            digest: Digest::sha256_of(&bytes),
            media_type: media_type.to_string(),
            bytes: Bytes::from(bytes),
        }
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// A complete single-platform image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestImage {
    pub manifest: Bytes,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// sha256 of each layer's uncompressed tar, in layer order.
    pub diff_ids: Vec<Digest>,
    pub platform: Platform,
}

impl TestImage {
    /// The config and the layers: every blob the manifest references.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

/// What [`random_image`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub seed: u64,
    pub layers: usize,
    /// Approximate uncompressed bytes of random content per layer.
    pub layer_size: usize,
    /// Docker schema 2 media types instead of OCI ones.
    pub docker_media_types: bool,
    pub platform: Platform,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            seed: 1,
            layers: 2,
            layer_size: 4096,
            docker_media_types: false,
            platform: Platform::new("linux", "amd64", None),
        }
    }
}

/// An image index (OCI) or manifest list (Docker) with its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestIndex {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
    pub images: Vec<TestImage>,
}

/// A small deterministic pseudo-random generator (splitmix64), so that image bytes never
/// depend on a `rand` version.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const CREATED: &str = "2024-01-01T00:00:00Z";

fn tar_header(path: &str, size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_704_067_200);
    // Names are short ASCII, so setting them cannot fail.
    h.set_path(path).expect("short tar path");
    h.set_cksum();
    h
}

/// Build layer `index` of an image: an uncompressed tar with a directory, a random binary
/// file and a small text file. Returns (tar bytes, gzip bytes).
fn build_layer(rng: &mut SplitMix, seed: u64, index: usize, size: usize) -> (Vec<u8>, Vec<u8>) {
    let dir = format!("ferry-test/layer-{index}/");
    let mut random = vec![0u8; size];
    rng.fill(&mut random);
    let text = format!(
        "ferry-testkit seed {seed} layer {index} token {:016x}\n",
        rng.next_u64()
    );

    let mut builder = tar::Builder::new(Vec::new());
    let entries: [(String, &[u8], tar::EntryType, u32); 3] = [
        (dir.clone(), &[], tar::EntryType::Directory, 0o755),
        (
            format!("{dir}random.bin"),
            &random,
            tar::EntryType::Regular,
            0o644,
        ),
        (
            format!("{dir}info.txt"),
            text.as_bytes(),
            tar::EntryType::Regular,
            0o644,
        ),
    ];
    for (path, data, kind, mode) in entries {
        let header = tar_header(&path, data.len() as u64, kind, mode);
        builder
            .append(&header, data)
            .expect("writing tar to memory");
    }
    let tar = builder.into_inner().expect("finishing tar in memory");

    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip to memory");
    let gzip = gz.finish().expect("gzip to memory");
    (tar, gzip)
}

fn platform_json(p: &Platform) -> Value {
    serde_json::to_value(p).expect("platform serialises")
}

/// An image manifest of `manifest_type` referencing `config` and `layers`.
fn manifest_json(manifest_type: &str, config: &Blob, layers: &[Blob]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": { "mediaType": config.media_type, "digest": config.digest.to_string(), "size": config.size() },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size(),
        })).collect::<Vec<_>>(),
    })
}

/// Build a random but valid image from `spec`.
pub fn random_image(spec: &ImageSpec) -> TestImage {
    let mut rng = SplitMix(spec.seed ^ 0x5EED_F0E7_7E57_0001);
    let (manifest_type, config_type, layer_type) = if spec.docker_media_types {
        (
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP,
        )
    } else {
        (
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            media::OCI_LAYER_GZIP,
        )
    };

    let mut layers = Vec::with_capacity(spec.layers);
    let mut diff_ids = Vec::with_capacity(spec.layers);
    for i in 0..spec.layers {
        let (tar, gzip) = build_layer(&mut rng, spec.seed, i, spec.layer_size);
        diff_ids.push(Digest::sha256_of(&tar));
        layers.push(Blob::new(layer_type, gzip));
    }

    let p = &spec.platform;
    let mut config = json!({
        "architecture": p.architecture,
        "os": p.os,
        "created": CREATED,
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
        "history": (0..spec.layers).map(|i| json!({
            "created": CREATED,
            "created_by": format!("ferry-testkit seed {} layer {i}", spec.seed),
        })).collect::<Vec<_>>(),
    });
    if let Some(v) = &p.variant {
        config["variant"] = json!(v);
    }
    let config = Blob::new(
        config_type,
        serde_json::to_vec(&config).expect("config serialises"),
    );

    let manifest = serde_json::to_vec_pretty(&manifest_json(manifest_type, &config, &layers))
        .expect("manifest serialises");
    TestImage {
        manifest_digest: Digest::sha256_of(&manifest),
        manifest: Bytes::from(manifest),
        manifest_media_type: manifest_type.to_string(),
        config,
        layers,
        diff_ids,
        platform: spec.platform.clone(),
    }
}

/// A random OCI image for linux/amd64 with `layers` layers of about `layer_size` bytes of
/// random content each: [`random_image`] with every other field of [`ImageSpec`] at its
/// default.
pub fn sized_image(seed: u64, layers: usize, layer_size: usize) -> TestImage {
    random_image(&ImageSpec {
        seed,
        layers,
        layer_size,
        ..ImageSpec::default()
    })
}

/// An image built on `base`, as a `FROM base` would make it: `base`'s first layer under one
/// new layer of its own (about 30 kB, seeded by `seed`), with an OCI manifest and a config for
/// `base`'s platform. The two images share that first layer blob, so pulling both shows
/// whether a shared blob is fetched and stored once.
///
/// Panics if `base` has no layers.
pub fn derived_image(base: &TestImage, seed: u64) -> TestImage {
    let own = sized_image(seed, 1, 30_000);
    let layers = vec![base.layers[0].clone(), own.layers[0].clone()];
    let diff_ids = vec![base.diff_ids[0].clone(), own.diff_ids[0].clone()];
    let p = &base.platform;
    let mut config = json!({
        "architecture": p.architecture,
        "os": p.os,
        "created": "2024-02-02T00:00:00Z",
        "config": { "Cmd": ["/bin/true"] },
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "history": [{ "created_by": "shared" }, { "created_by": "own" }],
    });
    if let Some(v) = &p.variant {
        config["variant"] = json!(v);
    }
    let config = Blob::new(
        media::OCI_CONFIG,
        serde_json::to_vec(&config).expect("config serialises"),
    );
    let manifest = serde_json::to_vec(&manifest_json(media::OCI_MANIFEST, &config, &layers))
        .expect("manifest serialises");
    TestImage {
        manifest_digest: Digest::sha256_of(&manifest),
        manifest: Bytes::from(manifest),
        manifest_media_type: media::OCI_MANIFEST.to_string(),
        config,
        layers,
        diff_ids,
        platform: base.platform.clone(),
    }
}

/// Build an index (OCI) or manifest list (Docker) with one random two-layer image per
/// platform, each image seeded from `seed` and its position.
pub fn random_index(seed: u64, platforms: &[Platform], docker_media_types: bool) -> TestIndex {
    let images: Vec<TestImage> = platforms
        .iter()
        .enumerate()
        .map(|(i, p)| {
            random_image(&ImageSpec {
                seed: seed.wrapping_mul(1_000_003).wrapping_add(i as u64 + 1),
                layers: 2,
                layer_size: 4096,
                docker_media_types,
                platform: p.clone(),
            })
        })
        .collect();
    let media_type = if docker_media_types {
        media::DOCKER_MANIFEST_LIST
    } else {
        media::OCI_INDEX
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": images.iter().map(|img| json!({
            "mediaType": img.manifest_media_type,
            "digest": img.manifest_digest.to_string(),
            "size": img.manifest.len(),
            "platform": platform_json(&img.platform),
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&index).expect("index serialises");
    TestIndex {
        digest: Digest::sha256_of(&bytes),
        bytes: Bytes::from(bytes),
        media_type: media_type.to_string(),
        images,
    }
}

/// `img` with new layers (and the diff_ids the config already lists): a fresh manifest of
/// the same media type over the same config.
fn with_layers(img: &TestImage, layers: Vec<Blob>) -> TestImage {
    let manifest = serde_json::to_vec_pretty(&manifest_json(
        &img.manifest_media_type,
        &img.config,
        &layers,
    ))
    .expect("manifest serialises");
    TestImage {
        manifest_digest: Digest::sha256_of(&manifest),
        manifest: Bytes::from(manifest),
        layers,
        ..img.clone()
    }
}

/// [`random_image`] of `spec` (OCI media types) with every layer compressed with zstd
/// (`application/vnd.oci.image.layer.v1.tar+zstd`) instead of gzip: same tars, same diff_ids.
pub fn zstd_image(spec: &ImageSpec) -> TestImage {
    use std::io::Read;
    let img = random_image(&ImageSpec {
        docker_media_types: false,
        ..spec.clone()
    });
    let layers = img
        .layers
        .iter()
        .map(|l| {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(&l.bytes[..])
                .read_to_end(&mut tar)
                .expect("gunzip own layer");
            Blob::new(
                media::OCI_LAYER_ZSTD,
                zstd::encode_all(&tar[..], 3).expect("zstd to memory"),
            )
        })
        .collect();
    with_layers(&img, layers)
}

/// An image whose last layer is "foreign" (Windows base layers are the real case): a Docker
/// schema 2 manifest listing it as `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`
/// with `urls`, as a registry that does not hold it serves it. The returned blob is the
/// foreign layer's content (also the last entry of `layers`); a test decides where it lives.
pub fn foreign_layer_image(seed: u64, url: &str) -> (TestImage, Blob) {
    let img = random_image(&ImageSpec {
        seed,
        layers: 2,
        docker_media_types: true,
        ..ImageSpec::default()
    });
    let mut foreign = img.layers[1].clone();
    foreign.media_type = media::DOCKER_FOREIGN_LAYER_GZIP.to_string();
    let mut manifest = manifest_json(&img.manifest_media_type, &img.config, &img.layers);
    manifest["layers"][1]["mediaType"] = json!(foreign.media_type);
    manifest["layers"][1]["urls"] = json!([url]);
    let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    let image = TestImage {
        manifest_digest: Digest::sha256_of(&bytes),
        manifest: Bytes::from(bytes),
        layers: vec![img.layers[0].clone(), foreign.clone()],
        ..img
    };
    (image, foreign)
}

/// An OCI artifact as oras or helm pushes it: an OCI manifest whose config has
/// `config_media_type` (for a Helm chart `application/vnd.cncf.helm.config.v1+json`; the
/// empty descriptor `application/vnd.oci.empty.v1+json` when `artifact_type` is set) and one
/// layer of `layer_media_type`. Its `platform` is meaningless (linux/amd64).
pub fn artifact(
    seed: u64,
    config_media_type: &str,
    artifact_type: Option<&str>,
    layer_media_type: &str,
) -> TestImage {
    let config_bytes = if config_media_type == "application/vnd.oci.empty.v1+json" {
        b"{}".to_vec()
    } else {
        serde_json::to_vec(
            &json!({"name": format!("chart-{seed}"), "version": "0.1.0", "apiVersion": "v2"}),
        )
        .expect("config serialises")
    };
    let config = Blob::new(config_media_type, config_bytes);
    let payload = format!("ferry-testkit artifact {seed}\n").repeat(64);
    let layer = Blob::new(layer_media_type, payload.into_bytes());
    let mut manifest = manifest_json(media::OCI_MANIFEST, &config, std::slice::from_ref(&layer));
    if let Some(t) = artifact_type {
        manifest["artifactType"] = json!(t);
    }
    let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    TestImage {
        manifest_digest: Digest::sha256_of(&bytes),
        manifest: Bytes::from(bytes),
        manifest_media_type: media::OCI_MANIFEST.to_string(),
        config,
        layers: vec![layer],
        diff_ids: Vec::new(),
        platform: Platform::new("linux", "amd64", None),
    }
}

/// An OCI index (or Docker list) over arbitrary entries, for shapes [`random_index`] does not
/// make: entries without `platform`, nested indexes, artifacts. `entries` are descriptor
/// objects as they appear in `manifests`; `images` is only carried along for the caller.
pub fn raw_index(media_type: &str, entries: Vec<Value>, images: Vec<TestImage>) -> TestIndex {
    let index = json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": entries });
    let bytes = serde_json::to_vec_pretty(&index).expect("index serialises");
    TestIndex {
        digest: Digest::sha256_of(&bytes),
        bytes: Bytes::from(bytes),
        media_type: media_type.to_string(),
        images,
    }
}

/// The descriptor of `img`'s manifest as an index lists it, with `platform` when given.
pub fn entry_of(img: &TestImage, platform: Option<&Platform>) -> Value {
    let mut e = json!({
        "mediaType": img.manifest_media_type,
        "digest": img.manifest_digest.to_string(),
        "size": img.manifest.len(),
    });
    if let Some(p) = platform {
        e["platform"] = platform_json(p);
    }
    e
}

/// The descriptor of the index `idx` as an outer index lists it (no platform).
pub fn entry_of_index(idx: &TestIndex) -> Value {
    json!({
        "mediaType": idx.media_type,
        "digest": idx.digest.to_string(),
        "size": idx.bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn layers_unpack_and_match_diff_ids() {
        let img = random_image(&ImageSpec::default());
        for (layer, diff_id) in img.layers.iter().zip(&img.diff_ids) {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(&layer.bytes[..])
                .read_to_end(&mut tar)
                .unwrap();
            assert_eq!(&Digest::sha256_of(&tar), diff_id);
            let mut archive = tar::Archive::new(&tar[..]);
            let names: Vec<String> = archive
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 3);
            assert!(layer.bytes.len() > 4096, "random content is incompressible");
        }
    }
}
