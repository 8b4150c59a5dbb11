//! Docker's legacy save layout (docker 1.10–24): `<id>/layer.tar` uncompressed, `<id>/json`,
//! `<id>/VERSION`, `<config>.json`, `manifest.json` and `repositories`, for loaders that
//! cannot read compressed layers. gzip and zstd layers are unpacked alike, each checked
//! against its `diff_id`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde_json::json;
use sha2::Digest as _;

use ferry_core::manifest::ImageConfig;
use ferry_core::media::{layer_compression, Compression};
use ferry_core::Digest;

use crate::tarfmt;
use crate::{ArchiveError, ArchiveImage, BlobReader};

fn io_ctx(context: String) -> impl FnOnce(io::Error) -> ArchiveError {
    move |source| ArchiveError::Io { context, source }
}

fn put(out: &mut dyn Write, name: &str, data: &[u8]) -> Result<(), ArchiveError> {
    let ctx = || format!("writing {name}");
    tarfmt::write_header(out, name, data.len() as u64, false).map_err(io_ctx(ctx()))?;
    out.write_all(data).map_err(io_ctx(ctx()))?;
    tarfmt::write_padding(out, data.len() as u64).map_err(io_ctx(ctx()))
}

/// Write the legacy layout of the docker-loadable image of each of `images` to `out`.
/// Layers are decompressed into `scratch` (a directory on the same disk) one at a time and
/// checked against the config's `diff_ids` before they are written.
pub fn write_legacy(
    images: &[ArchiveImage],
    blobs: &dyn BlobReader,
    scratch: &Path,
    mut out: impl Write,
) -> Result<(), ArchiveError> {
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut written = std::collections::HashSet::new();
    for img in images {
        let Some(parts) = img.docker_image.and_then(|i| img.images.get(i)) else {
            continue;
        };
        let cfg_bytes = blobs
            .read_small(&parts.config.digest)
            .map_err(io_ctx(format!("reading config {}", parts.config.digest)))?;
        let cfg = ImageConfig::parse(&cfg_bytes).map_err(|e| ArchiveError::BadConfig {
            digest: parts.config.digest.clone(),
            reason: e.to_string(),
        })?;
        let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != parts.layers.len() {
            return Err(ArchiveError::BadConfig {
                digest: parts.config.digest.clone(),
                reason: format!(
                    "it lists {} diff_ids for {} layers",
                    diff_ids.len(),
                    parts.layers.len()
                ),
            });
        }
        let cfg_name = format!("{}.json", parts.config.digest.hex());
        if written.insert(cfg_name.clone()) {
            put(&mut out, &cfg_name, &cfg_bytes)?;
        }
        let mut parent: Option<String> = None;
        let mut layer_paths = Vec::new();
        for (layer, diff_id) in parts.layers.iter().zip(&diff_ids) {
            // A chain id: the same layer stack gives the same id, as docker's v1 ids do.
            let id = match &parent {
                None => diff_id.hex().to_string(),
                Some(p) => hex::encode(sha2::Sha256::digest(format!("{p} {diff_id}").as_bytes())),
            };
            let dir = format!("{id}/");
            if written.insert(dir.clone()) {
                tarfmt::write_header(&mut out, &dir, 0, true)
                    .map_err(io_ctx(format!("writing {dir}")))?;
                put(&mut out, &format!("{id}/VERSION"), b"1.0")?;
                let mut v1 = json!({"id": id, "created": "1970-01-01T00:00:00Z", "os": cfg.os.clone().unwrap_or_else(|| "linux".into())});
                if let Some(p) = &parent {
                    v1["parent"] = json!(p);
                }
                put(
                    &mut out,
                    &format!("{id}/json"),
                    &serde_json::to_vec(&v1).unwrap_or_default(),
                )?;
                write_layer(
                    blobs,
                    layer,
                    diff_id,
                    scratch,
                    &format!("{id}/layer.tar"),
                    &mut out,
                )?;
            }
            layer_paths.push(format!("{id}/layer.tar"));
            parent = Some(id);
        }
        let tags = img.repo_tags();
        if let (Some(tag), Some(top)) = (img.name.tag(), &parent) {
            repositories
                .entry(img.name.familiar_name())
                .or_default()
                .insert(tag.to_string(), top.clone());
        }
        manifest.push(json!({"Config": cfg_name, "RepoTags": tags, "Layers": layer_paths}));
    }
    put(
        &mut out,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap_or_default(),
    )?;
    put(
        &mut out,
        "repositories",
        &serde_json::to_vec(&repositories).unwrap_or_default(),
    )?;
    tarfmt::write_end(&mut out).map_err(io_ctx("finishing the archive".into()))?;
    out.flush().map_err(io_ctx("finishing the archive".into()))
}

fn write_layer(
    blobs: &dyn BlobReader,
    layer: &ferry_core::Descriptor,
    diff_id: &Digest,
    scratch: &Path,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), ArchiveError> {
    let ctx = || format!("unpacking layer {}", layer.digest);
    let raw = BufReader::new(blobs.open(&layer.digest).map_err(io_ctx(ctx()))?);
    let mut reader: Box<dyn Read> =
        match sniff(layer_compression(&layer.media_type), blobs, &layer.digest)? {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Compression::None => Box::new(raw),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(io_ctx(ctx()))?)
            }
        };
    let mut tmp = tempfile_in(scratch).map_err(io_ctx(ctx()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(io_ctx(ctx()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(io_ctx(ctx()))?;
        size += n as u64;
    }
    let actual: Digest = format!("sha256:{}", hex::encode(hasher.finalize()))
        .parse()
        .map_err(|e| io_ctx(ctx())(io::Error::other(e)))?;
    if &actual != diff_id {
        return Err(ArchiveError::DiffIdMismatch {
            digest: layer.digest.clone(),
            expected: diff_id.clone(),
            actual,
        });
    }
    tmp.seek(SeekFrom::Start(0)).map_err(io_ctx(ctx()))?;
    tarfmt::write_header(out, name, size, false).map_err(io_ctx(ctx()))?;
    let copied = io::copy(&mut Read::take(&mut tmp, size), out).map_err(io_ctx(ctx()))?;
    if copied != size {
        return Err(io_ctx(ctx())(io::Error::other(
            "the unpacked layer changed while it was copied",
        )));
    }
    tarfmt::write_padding(out, size).map_err(io_ctx(ctx()))
}

/// The media type may lie (or be a generic one); the magic bytes do not.
fn sniff(
    declared: Compression,
    blobs: &dyn BlobReader,
    d: &Digest,
) -> Result<Compression, ArchiveError> {
    let mut head = [0u8; 4];
    let mut r = blobs
        .open(d)
        .map_err(io_ctx(format!("reading layer {d}")))?;
    let n = r
        .read(&mut head)
        .map_err(io_ctx(format!("reading layer {d}")))?;
    Ok(match &head[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ if n < 4 => declared,
        _ => Compression::None,
    })
}

/// An unnamed scratch file that disappears when closed.
fn tempfile_in(dir: &Path) -> io::Result<File> {
    tempfile::tempfile_in(dir)
}
