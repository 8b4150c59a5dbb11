use std::collections::HashMap;
use std::io::{self, Read};

use ferry_core::{media, Descriptor, Digest, Reference};

use crate::{ArchiveImage, BlobReader, ImageParts, Plan};

struct Mem(HashMap<Digest, Vec<u8>>);

impl BlobReader for Mem {
    fn open(&self, d: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let b = self
            .0
            .get(d)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, d.to_string()))?;
        Ok(Box::new(io::Cursor::new(b)))
    }
}

fn blob(mem: &mut Mem, media_type: &str, bytes: &[u8]) -> Descriptor {
    let d = Digest::sha256_of(bytes);
    mem.0.insert(d.clone(), bytes.to_vec());
    Descriptor::new(media_type, d, bytes.len() as u64)
}

fn image(mem: &mut Mem, name: &str, layers: &[&[u8]]) -> ArchiveImage {
    let config = blob(
        mem,
        media::OCI_CONFIG,
        format!("{{\"n\":\"{name}\"}}").as_bytes(),
    );
    let layers: Vec<Descriptor> = layers
        .iter()
        .map(|l| blob(mem, media::OCI_LAYER_GZIP, l))
        .collect();
    let manifest = blob(
        mem,
        media::OCI_MANIFEST,
        format!("manifest of {name}").as_bytes(),
    );
    ArchiveImage::single(
        name.parse::<Reference>().unwrap(),
        ImageParts {
            manifest,
            config,
            layers,
            platform: None,
        },
    )
}

fn entries(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

#[test]
fn planned_length_is_the_written_length_and_output_is_deterministic() {
    let mut mem = Mem(HashMap::new());
    let shared: &[u8] = &[7u8; 1000];
    let a = image(&mut mem, "alpine:3.20", &[shared, b"top-a"]);
    let b = image(&mut mem, "ghcr.io/org/app:1", &[shared, &[1u8; 513]]);
    let plan = Plan::new(&[a.clone(), b.clone()]);
    let mut out = Vec::new();
    plan.write_tar(&mem, &mut out).unwrap();
    assert_eq!(out.len() as u64, plan.len());
    assert_eq!(out.len() % 512, 0);
    let mut again = Vec::new();
    Plan::new(&[a, b]).write_tar(&mem, &mut again).unwrap();
    assert_eq!(out, again, "the archive is a pure function of its images");

    let list = entries(&out);
    let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[..3], &["oci-layout", "index.json", "manifest.json"]);
    let shared_name = format!("blobs/sha256/{}", Digest::sha256_of(shared).hex());
    assert_eq!(
        names.iter().filter(|n| **n == shared_name).count(),
        1,
        "a shared blob is stored once"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&list[2].1).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "alpine:3.20");
    assert_eq!(manifest[1]["RepoTags"][0], "ghcr.io/org/app:1");
    let index: serde_json::Value = serde_json::from_slice(&list[1].1).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "docker.io/library/alpine:3.20"
    );
    assert_eq!(
        index["manifests"][1]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    for (name, data) in &list {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            if !hex.is_empty() {
                assert_eq!(
                    Digest::sha256_of(data).hex(),
                    hex,
                    "{name} holds other content"
                );
            }
        }
    }
}

#[test]
fn sha512_blobs_get_long_names_that_tar_readers_understand() {
    let mut mem = Mem(HashMap::new());
    let mut img = image(&mut mem, "x:1", &[b"layer"]);
    let data = b"sha512 layer".to_vec();
    let hex = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha512::digest(&data))
    };
    let d: Digest = format!("sha512:{hex}").parse().unwrap();
    mem.0.insert(d.clone(), data.clone());
    img.images[0]
        .layers
        .push(Descriptor::new(media::OCI_LAYER_GZIP, d, data.len() as u64));
    let plan = Plan::new(&[img]);
    let mut out = Vec::new();
    plan.write_tar(&mem, &mut out).unwrap();
    assert_eq!(out.len() as u64, plan.len());
    let list = entries(&out);
    let long = list
        .iter()
        .find(|(n, _)| n.len() > 13 && n.starts_with("blobs/sha512/"))
        .expect("the sha512 blob");
    assert_eq!(long.0.len(), "blobs/sha512/".len() + 128);
    assert_eq!(long.1, data);
}

#[test]
fn a_store_blob_of_the_wrong_length_is_an_error_not_a_bad_archive() {
    let mut mem = Mem(HashMap::new());
    let img = image(&mut mem, "x:1", &[b"layer"]);
    let d = img.images[0].layers[0].digest.clone();
    mem.0.insert(d, b"layer but longer".to_vec());
    let err = Plan::new(&[img])
        .write_tar(&mem, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 5"), "{err}");
}

#[test]
fn skeleton_plus_blob_regions_is_the_streamed_archive() {
    use std::os::unix::fs::FileExt;
    let mut mem = Mem(HashMap::new());
    let a = image(&mut mem, "alpine:3.20", &[&[3u8; 700], b"x"]);
    let plan = Plan::new(&[a]);
    let mut streamed = Vec::new();
    plan.write_tar(&mem, &mut streamed).unwrap();
    let f = tempfile::tempfile().unwrap();
    plan.write_skeleton(&f).unwrap();
    for (d, offset, size) in plan.blob_regions() {
        let data = &mem.0[&d];
        assert_eq!(data.len() as u64, size);
        f.write_all_at(data, offset).unwrap();
    }
    let mut direct = Vec::new();
    let mut f2 = f;
    std::io::Seek::seek(&mut f2, std::io::SeekFrom::Start(0)).unwrap();
    f2.read_to_end(&mut direct).unwrap();
    assert_eq!(direct, streamed);
}

/// An image whose manifest declares `sizes` for its layers (the bytes are never read).
fn declared(sizes: &[u64]) -> ArchiveImage {
    let mut mem = Mem(HashMap::new());
    let mut img = image(&mut mem, "hostile:1", &[]);
    img.images[0].layers = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let d = Digest::sha256_of(format!("layer {i}").as_bytes());
            Descriptor::new(media::OCI_LAYER_GZIP, d, *s)
        })
        .collect();
    img
}

#[test]
fn declared_sizes_that_overflow_are_refused_not_wrapped() {
    // Two layers of 2^63 bytes: a wrapping sum made this image look tiny.
    let plan = Plan::new(&[declared(&[1 << 63, 1 << 63])]);
    assert_eq!(plan.checked_len(), None);
    assert_eq!(plan.len(), u64::MAX);
    let f = tempfile::tempfile().unwrap();
    let e = plan.write_skeleton(&f).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the sizes the manifests declare add up to more than 16 EiB"
    );
    assert_eq!(f.metadata().unwrap().len(), 0, "the file was sized anyway");
    // A single size too close to u64::MAX to be padded to whole blocks.
    let plan = Plan::new(&[declared(&[u64::MAX - 3])]);
    assert_eq!(plan.checked_len(), None);
    // Must not trap (test builds check overflow) nor wrap to a small offset.
    let regions = plan.blob_regions();
    assert!(regions.iter().all(|(_, off, _)| *off > 1024), "{regions:?}");
}

#[test]
fn large_declared_sizes_sum_exactly() {
    let tib = 1u64 << 40;
    let plan = Plan::new(&[declared(&[tib, tib + 1])]);
    let len = plan.checked_len().unwrap();
    assert!(len > 2 * tib + 1 && len < 2 * tib + 64 * 1024, "{len}");
    let regions = plan.blob_regions();
    let (_, last_off, last_size) = regions.last().unwrap();
    // The last blob ends at the archive's end, less its padding and the two end blocks.
    assert_eq!(last_off + last_size + 511 + 1024, len);
}

/// A one-layer image whose layer is `tar` compressed with zstd and whose config lists
/// `diff_id`.
fn zstd_image(mem: &mut Mem, tar: &[u8], diff_id: &Digest) -> ArchiveImage {
    let mut img = image(mem, "z:1", &[]);
    let layer = blob(
        mem,
        media::OCI_LAYER_ZSTD,
        &zstd::encode_all(tar, 3).unwrap(),
    );
    let config = blob(
        mem,
        media::OCI_CONFIG,
        format!(r#"{{"os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#)
            .as_bytes(),
    );
    img.images[0].config = config;
    img.images[0].layers = vec![layer];
    img
}

#[test]
fn legacy_unpacks_zstd_layers_and_checks_their_diff_ids() {
    let tar = [9u8; 3000];
    let mut mem = Mem(HashMap::new());
    let good = zstd_image(&mut mem, &tar, &Digest::sha256_of(&tar));
    let scratch = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    crate::write_legacy(&[good], &mem, scratch.path(), &mut out).unwrap();
    let list = entries(&out);
    let layer = list
        .iter()
        .find(|(n, _)| n.ends_with("/layer.tar"))
        .expect("a layer.tar");
    assert_eq!(layer.1, tar.to_vec());

    let wrong = Digest::sha256_of(b"something else");
    let bad = zstd_image(&mut mem, &tar, &wrong);
    let err = crate::write_legacy(&[bad], &mem, scratch.path(), &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("but the image config says its content is {wrong}")),
        "{err}"
    );
}

#[test]
fn a_small_blob_over_the_limit_is_refused_in_the_shared_words() {
    let mut mem = Mem(HashMap::new());
    let d = blob(
        &mut mem,
        media::OCI_CONFIG,
        &vec![b'x'; ferry_core::MAX_SMALL_BLOB as usize + 10],
    )
    .digest;
    let err = mem.read_small(&d).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(
        err.to_string(),
        format!(
            "blob {d} is 4194305 bytes or more; a manifest or image config may hold at most 4 MiB"
        )
    );
}
