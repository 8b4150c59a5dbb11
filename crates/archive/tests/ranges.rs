//! Random access into planned archives: every range's segments, with blob parts read from
//! the blobs, are exactly those bytes of `write_tar`'s output.

use std::collections::HashMap;
use std::io::{self, Read};

use ferry_archive::{ArchiveImage, BlobReader, ImageParts, Plan, Segment};
use ferry_core::{media, Descriptor, Digest, Reference};
use proptest::prelude::*;
use sha2::Digest as _;

#[derive(Default)]
struct Mem(HashMap<Digest, Vec<u8>>);

impl BlobReader for Mem {
    fn open(&self, d: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let b = self.0.get(d).cloned().ok_or(io::ErrorKind::NotFound)?;
        Ok(Box::new(io::Cursor::new(b)))
    }
}

impl Mem {
    /// A blob under sha256, or under sha512 (whose 141-byte entry name needs a GNU
    /// long-name header).
    fn add(&mut self, media_type: &str, bytes: Vec<u8>, sha512: bool) -> Descriptor {
        let d: Digest = if sha512 {
            format!("sha512:{}", hex::encode(sha2::Sha512::digest(&bytes)))
                .parse()
                .unwrap()
        } else {
            Digest::sha256_of(&bytes)
        };
        let size = bytes.len() as u64;
        self.0.insert(d.clone(), bytes);
        Descriptor::new(media_type, d, size)
    }

    /// Reassemble segments: blob parts sliced from the blobs.
    fn assemble(&self, segments: impl Iterator<Item = Segment<'static>>) -> Vec<u8> {
        let mut out = Vec::new();
        for s in segments {
            assert!(!s.is_empty(), "an empty segment: {s:?}");
            match s {
                Segment::Bytes(b) => out.extend_from_slice(&b),
                Segment::Zeros(n) => out.resize(out.len() + n as usize, 0),
                Segment::Blob {
                    digest,
                    offset,
                    len,
                } => {
                    let b = &self.0[&digest];
                    out.extend_from_slice(&b[offset as usize..(offset + len) as usize]);
                }
            }
        }
        out
    }
}

/// An image description proptest draws: a name, layers (as indexes into a shared pool of
/// blob contents, so images share blobs), and whether its blobs use sha512.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    layers: Vec<usize>,
    sha512: bool,
}

fn pool() -> Vec<Vec<u8>> {
    // Sizes around block boundaries, empty included.
    [0usize, 1, 511, 512, 513, 1024, 3000]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|k| (k * 31 + i * 7) as u8).collect())
        .collect()
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::sample::select(vec![
            "alpine:3.20",
            "ghcr.io/org/app:1",
            "registry.example.com:5000/a/very/deeply/nested/repository/name/that/goes/on:tag",
            "busybox",
        ]),
        prop::collection::vec(0..7usize, 0..4),
        any::<bool>(),
    )
        .prop_map(|(name, layers, sha512)| Spec {
            name: name.to_string(),
            layers,
            sha512,
        })
}

fn build(specs: &[Spec]) -> (Mem, Plan) {
    let mut mem = Mem::default();
    let pool = pool();
    let images: Vec<ArchiveImage> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let config = mem.add(
                media::OCI_CONFIG,
                format!("{{\"n\":{i}}}").into_bytes(),
                s.sha512,
            );
            let layers = s
                .layers
                .iter()
                .map(|&l| mem.add(media::OCI_LAYER_GZIP, pool[l].clone(), s.sha512))
                .collect();
            let manifest = mem.add(
                media::OCI_MANIFEST,
                format!("manifest {i} of {}", s.name).into_bytes(),
                false,
            );
            ArchiveImage::single(
                s.name.parse::<Reference>().unwrap(),
                ImageParts {
                    manifest,
                    config,
                    layers,
                    platform: None,
                },
            )
        })
        .collect();
    (mem, Plan::new(&images))
}

fn tar_of(mem: &Mem, plan: &Plan) -> Vec<u8> {
    let mut out = Vec::new();
    plan.write_tar(mem, &mut out).unwrap();
    out
}

fn segs(plan: &Plan, start: u64, len: u64) -> impl Iterator<Item = Segment<'static>> + '_ {
    plan.segments(start, len).map(Segment::into_owned)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_range_of_a_planned_tar_reassembles_to_write_tars_bytes(
        specs in prop::collection::vec(spec(), 0..4),
        ranges in prop::collection::vec((any::<u64>(), any::<u64>()), 1..24),
    ) {
        let (mem, plan) = build(&specs);
        let tar = tar_of(&mem, &plan);
        let total = tar.len() as u64;
        prop_assert_eq!(mem.assemble(segs(&plan, 0, total)), tar.clone());
        for (a, b) in ranges {
            // Mostly inside the archive, sometimes past its end.
            let start = a % (total + 600);
            let len = b % (total + 600 - start.min(total));
            let end = (start + len).min(total);
            let want = if start < total { &tar[start as usize..end as usize] } else { &[][..] };
            prop_assert_eq!(&mem.assemble(segs(&plan, start, len))[..], want,
                "range {}+{} of {}", start, len, total);
            // blobs_in names exactly the blobs whose parts the range holds.
            let mut from_segments: Vec<Digest> = plan
                .segments(start, len)
                .filter_map(|s| match s { Segment::Blob { digest, .. } => Some(digest), _ => None })
                .collect();
            from_segments.dedup();
            let named: Vec<Digest> = plan.blobs_in(start, len).into_iter().cloned().collect();
            prop_assert_eq!(named, from_segments);
        }
    }

    #[test]
    fn the_combined_crc_of_a_planned_tar_is_its_direct_crc(
        specs in prop::collection::vec(spec(), 0..4),
    ) {
        let (mem, plan) = build(&specs);
        let tar = tar_of(&mem, &plan);
        let crcs: HashMap<Digest, u32> =
            mem.0.iter().map(|(d, b)| (d.clone(), crc32fast::hash(b))).collect();
        prop_assert_eq!(plan.crc32(|d| crcs.get(d).copied()), Some(crc32fast::hash(&tar)));
    }
}

#[test]
fn a_crc_needs_every_blobs_crc() {
    let spec = Spec {
        name: "alpine:3.20".into(),
        layers: vec![3, 4],
        sha512: false,
    };
    let (mem, plan) = build(&[spec]);
    let some: Vec<&Digest> = plan.blobs_in(0, plan.len());
    assert_eq!(some.len(), 4, "manifest, config and two layers");
    let missing = some[3].clone();
    assert_eq!(
        plan.crc32(|d| (*d != missing).then(|| crc32fast::hash(&mem.0[d]))),
        None
    );
}

#[test]
fn the_etag_changes_with_any_byte_and_only_then() {
    let spec = |name: &str, layers: Vec<usize>| Spec {
        name: name.into(),
        layers,
        sha512: false,
    };
    let (_, a) = build(&[spec("alpine:3.20", vec![1, 2])]);
    let (_, same) = build(&[spec("alpine:3.20", vec![1, 2])]);
    let (_, other_name) = build(&[spec("alpine:3.21", vec![1, 2])]);
    let (_, other_layer) = build(&[spec("alpine:3.20", vec![1, 3])]);
    let (_, other_order) = build(&[spec("alpine:3.20", vec![2, 1])]);
    let tag = a.etag();
    assert!(
        tag.starts_with("\"ferry-tar-") && tag.ends_with('"'),
        "{tag}"
    );
    assert_eq!(tag.len(), "\"ferry-tar-\"".len() + 64);
    assert_eq!(tag, same.etag());
    for b in [other_name, other_layer, other_order] {
        assert_ne!(tag, b.etag());
    }
}

#[test]
fn ranges_past_the_end_and_in_the_end_blocks() {
    let (mem, plan) = build(&[Spec {
        name: "busybox".into(),
        layers: vec![2],
        sha512: true,
    }]);
    let tar = tar_of(&mem, &plan);
    let n = plan.len();
    assert_eq!(plan.segments(n, 10).count(), 0);
    assert_eq!(plan.segments(n + 5, 10).count(), 0);
    assert_eq!(plan.segments(3, 0).count(), 0);
    assert!(plan.blobs_in(n, 10).is_empty());
    assert_eq!(
        plan.segments(n - 1500, 2000).collect::<Vec<_>>().last(),
        Some(&Segment::Zeros(1024))
    );
    assert_eq!(
        mem.assemble(segs(&plan, n - 1500, u64::MAX)),
        &tar[(n - 1500) as usize..]
    );
    // An empty range inside a blob needs no blob.
    let (_, body, _) = plan.blob_regions()[0].clone();
    assert!(plan.blobs_in(body + 1, 0).is_empty());
    assert_eq!(plan.blobs_in(body + 1, 1).len(), 1);
}
