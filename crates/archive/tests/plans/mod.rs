//! Shared by the range and zip tests: in-memory blobs and random plans.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read};

use ferry_archive::{ArchiveImage, BlobReader, ImageParts, Plan, Segment};
use ferry_core::{media, Descriptor, Digest, Reference};
use proptest::prelude::*;
use sha2::Digest as _;

#[derive(Default)]
pub struct Mem(pub HashMap<Digest, Vec<u8>>);

impl BlobReader for Mem {
    fn open(&self, d: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let b = self.0.get(d).cloned().ok_or(io::ErrorKind::NotFound)?;
        Ok(Box::new(io::Cursor::new(b)))
    }
}

impl Mem {
    /// A blob under sha256, or under sha512 (whose 141-byte entry name needs a GNU
    /// long-name header).
    pub fn add(&mut self, media_type: &str, bytes: Vec<u8>, sha512: bool) -> Descriptor {
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
    pub fn assemble(&self, segments: impl Iterator<Item = Segment<'static>>) -> Vec<u8> {
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
pub struct Spec {
    pub name: String,
    pub layers: Vec<usize>,
    pub sha512: bool,
}

pub fn pool() -> Vec<Vec<u8>> {
    // Sizes around block boundaries, empty included.
    [0usize, 1, 511, 512, 513, 1024, 3000]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|k| (k * 31 + i * 7) as u8).collect())
        .collect()
}

pub fn spec() -> impl Strategy<Value = Spec> {
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

pub fn build(specs: &[Spec]) -> (Mem, Plan) {
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

pub fn tar_of(mem: &Mem, plan: &Plan) -> Vec<u8> {
    let mut out = Vec::new();
    plan.write_tar(mem, &mut out).unwrap();
    out
}
