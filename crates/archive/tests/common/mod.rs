//! Helpers for the reader tests: images made in memory, and tars written byte by byte (so a
//! test can write what no well-behaved writer would: `..` paths, escaping links).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};

use ferry_archive::{ArchiveImage, BlobReader, ImageParts};
use ferry_core::{media, Descriptor, Digest, Platform, Reference};

/// Blobs in memory, as the store would hand them out.
#[derive(Default)]
pub struct Mem(pub HashMap<Digest, Vec<u8>>);

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

impl Mem {
    pub fn put(&mut self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let d = Digest::sha256_of(bytes);
        self.0.insert(d.clone(), bytes.to_vec());
        Descriptor::new(media_type, d, bytes.len() as u64)
    }
}

/// A layer: a small tar holding one file, and its gzip form.
pub struct Layer {
    pub tar: Vec<u8>,
    pub gz: Vec<u8>,
    pub diff_id: Digest,
}

pub fn layer(seed: &str) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    let data = format!("content of {seed}\n").repeat(50);
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    b.append_data(&mut h, format!("{seed}.txt"), data.as_bytes())
        .unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    Layer {
        diff_id: Digest::sha256_of(&tar),
        gz: gz.finish().unwrap(),
        tar,
    }
}

pub fn config_json(arch: &str, diff_ids: &[&Digest]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/bin"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        ids.join(",")
    )
    .into_bytes()
}

pub fn manifest_json(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config,
        "layers": layers,
    }))
    .unwrap()
}

/// One platform's image put into `mem`: gzip layers, an OCI config and manifest.
pub fn parts(mem: &mut Mem, arch: &str, layers: &[&Layer]) -> ImageParts {
    let diff_ids: Vec<&Digest> = layers.iter().map(|l| &l.diff_id).collect();
    let config = mem.put(media::OCI_CONFIG, &config_json(arch, &diff_ids));
    let layers: Vec<Descriptor> = layers
        .iter()
        .map(|l| mem.put(media::OCI_LAYER_GZIP, &l.gz))
        .collect();
    let manifest = mem.put(media::OCI_MANIFEST, &manifest_json(&config, &layers));
    ImageParts {
        manifest,
        config,
        layers,
        platform: Some(Platform::new("linux", arch, None)),
    }
}

pub fn single(name: &str, parts: ImageParts) -> ArchiveImage {
    ArchiveImage::single(name.parse::<Reference>().unwrap(), parts)
}

/// A multi-platform image: an OCI index over `platforms`.
pub fn multi(mem: &mut Mem, name: &str, platforms: Vec<ImageParts>) -> ArchiveImage {
    let entries: Vec<Descriptor> = platforms
        .iter()
        .map(|p| {
            let mut d = p.manifest.clone();
            d.platform = p.platform.clone();
            d
        })
        .collect();
    let index = mem.put(
        media::OCI_INDEX,
        &serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": entries,
        }))
        .unwrap(),
    );
    let mut manifests = vec![index.clone()];
    manifests.extend(platforms.iter().map(|p| p.manifest.clone()));
    ArchiveImage {
        name: name.parse().unwrap(),
        root: index,
        manifests,
        images: platforms,
        docker_image: Some(0),
        index: None,
    }
}

/// A tar entry, written as given (no path checks).
pub enum E {
    File(String, Vec<u8>),
    Dir(String),
    Sym(String, String),
    Hard(String, String),
}

pub fn file(name: &str, data: impl Into<Vec<u8>>) -> E {
    E::File(name.to_string(), data.into())
}

pub fn sym(name: &str, target: &str) -> E {
    E::Sym(name.to_string(), target.to_string())
}

/// A ustar archive of `entries`, with the end-of-archive blocks. Names are copied raw into
/// the header (up to 100 bytes), so unsafe ones are written as they are.
pub fn tar_bytes(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let (name, data, kind, link): (&str, &[u8], tar::EntryType, &str) = match e {
            E::File(n, d) => (n, d, tar::EntryType::Regular, ""),
            E::Dir(n) => (n, &[], tar::EntryType::Directory, ""),
            E::Sym(n, t) => (n, &[], tar::EntryType::Symlink, t),
            E::Hard(n, t) => (n, &[], tar::EntryType::Link, t),
        };
        assert!(name.len() <= 100 && link.len() <= 100, "{name} is too long");
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

pub fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The tar of an archive written by ferry's default writer.
pub fn ferry_default(mem: &Mem, images: &[ArchiveImage]) -> Vec<u8> {
    let mut out = Vec::new();
    ferry_archive::Plan::new(images)
        .write_tar(mem, &mut out)
        .unwrap();
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 1).unwrap()
}

/// Write `bytes` into a new file of `dir` and return its path.
pub fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Every byte of a blob through `open_blob`, and the same through `file_region` when there
/// is one.
pub fn read_blob(a: &ferry_archive::SourceArchive, loc: &ferry_archive::BlobLocation) -> Vec<u8> {
    let mut out = Vec::new();
    a.open_blob(loc, 0).unwrap().read_to_end(&mut out).unwrap();
    if let Some((path, start, len)) = a.file_region(loc) {
        let all = std::fs::read(path).unwrap();
        assert_eq!(&all[start as usize..(start + len) as usize], &out[..]);
    }
    out
}
