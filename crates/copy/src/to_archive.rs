//! An archive's image as the archive writers take it: [`ArchiveImage`]s and a
//! [`BlobReader`] that checks every blob while the writer copies it (digest and size, and a
//! layer's diff_id), so an archive copied from a damaged one fails instead of being written.
//! An image without manifests (docker save before Docker 25) gets an OCI manifest naming its
//! layers as they are stored, uncompressed: deterministic, and loadable by docker, podman and
//! containerd.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

use ferry_archive::{ArchiveImage, BlobLocation, BlobReader, ImageParts};
use ferry_core::media::{self, Compression};
use ferry_core::{Descriptor, Digest, ImageManifest, Platform, Reference};

use crate::seam::{CopyBlob, CopyImage, ImageSource};
use crate::{ArchiveSource, CopyError, OpenBlob, SendBody};

/// Blobs of one archive for a writer; see the module documentation.
pub struct ArchiveBlobs {
    source: Arc<ArchiveSource>,
    /// Manifests and configs, whole (verified when the archive was opened, or made here).
    small: HashMap<Digest, Vec<u8>>,
    layers: HashMap<Digest, CopyBlob<BlobLocation>>,
}

struct At {
    source: Arc<ArchiveSource>,
    at: BlobLocation,
}

impl OpenBlob for At {
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        self.source.open_blob(&self.at)
    }
}

impl BlobReader for ArchiveBlobs {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        if let Some(b) = self.small.get(digest) {
            return Ok(Box::new(io::Cursor::new(b.clone())));
        }
        let Some(l) = self.layers.get(digest) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the archive has no blob {digest}"),
            ));
        };
        let at = Arc::new(At {
            source: self.source.clone(),
            at: l.at.clone(),
        });
        // The checks end the stream with an error instead of its end.
        SendBody::verbatim(l.descriptor.clone(), l.diff_id.clone(), at).open(0)
    }
}

fn oci_type(d: &Descriptor) -> String {
    match media::layer_compression(&d.media_type) {
        Compression::Gzip => media::OCI_LAYER_GZIP.into(),
        Compression::Zstd => media::OCI_LAYER_ZSTD.into(),
        Compression::None => d.media_type.clone(),
    }
}

/// `image` (from [`crate::archive_image`]) as `name` for an archive writer.
pub fn archive_output(
    source: Arc<ArchiveSource>,
    image: &CopyImage<BlobLocation>,
    name: Reference,
) -> Result<(ArchiveImage, ArchiveBlobs), CopyError> {
    let mut small = HashMap::new();
    let mut layers = HashMap::new();
    let mut parts = Vec::new();
    for p in &image.platforms {
        let (media_type, bytes) = match &p.manifest {
            Some(m) => (m.media_type.clone(), m.bytes.clone()),
            None => {
                let m = ImageManifest {
                    schema_version: 2,
                    media_type: Some(media::OCI_MANIFEST.into()),
                    config: Descriptor::new(
                        media::OCI_CONFIG,
                        p.config.descriptor.digest.clone(),
                        p.config.descriptor.size,
                    ),
                    layers: p
                        .layers
                        .iter()
                        .map(|l| {
                            Descriptor::new(
                                &oci_type(&l.descriptor),
                                l.descriptor.digest.clone(),
                                l.descriptor.size,
                            )
                        })
                        .collect(),
                    artifact_type: None,
                };
                let bytes = serde_json::to_vec(&m).map_err(|e| CopyError::BadSource {
                    image: image.name.clone(),
                    reason: e.to_string(),
                })?;
                (media::OCI_MANIFEST.to_string(), bytes)
            }
        };
        let manifest = Descriptor {
            platform: p.platform.clone(),
            ..Descriptor::new(&media_type, Digest::sha256_of(&bytes), bytes.len() as u64)
        };
        small.insert(manifest.digest.clone(), bytes);
        // Read again from the archive, so checked again: no more than its declared size,
        // and its digest (the writer copies these bytes as they are).
        let mut config_bytes = Vec::new();
        source
            .open_blob(&p.config.at)
            .and_then(|r| {
                r.take(p.config.descriptor.size.saturating_add(1))
                    .read_to_end(&mut config_bytes)
            })
            .map_err(|e| CopyError::Source {
                what: format!("reading the config of {}", image.name),
                source: e,
            })?;
        let mut check = ferry_core::verify::Verifier::new(
            p.config.descriptor.digest.clone(),
            Some(p.config.descriptor.size),
        );
        check
            .update(&config_bytes)
            .and_then(|()| check.finish())
            .map_err(|e| CopyError::Content {
                image: image.name.clone(),
                source: e.into(),
            })?;
        small.insert(p.config.descriptor.digest.clone(), config_bytes);
        for l in &p.layers {
            layers.insert(l.descriptor.digest.clone(), l.clone());
        }
        // As the manifest names them (a made manifest uses OCI types).
        let named = |l: &CopyBlob<BlobLocation>| match p.manifest {
            Some(_) => l.descriptor.clone(),
            None => Descriptor {
                media_type: oci_type(&l.descriptor),
                ..l.descriptor.clone()
            },
        };
        parts.push(ImageParts {
            manifest,
            config: p.config.descriptor.clone(),
            layers: p.layers.iter().map(named).collect(),
            platform: p.platform.clone(),
        });
    }
    let host = Platform::host();
    let loadable = |i: &usize| {
        parts[*i]
            .platform
            .as_ref()
            .is_none_or(|p| p.os != "unknown")
    };
    let docker_image = (0..parts.len())
        .filter(loadable)
        .find(|&i| parts[i].platform.as_ref().is_some_and(|p| host.matches(p)))
        .or_else(|| (0..parts.len()).find(loadable));
    let out = match &image.index {
        Some(index) => {
            let root = Descriptor::new(&index.media_type, index.digest(), index.bytes.len() as u64);
            small.insert(root.digest.clone(), index.bytes.clone());
            let mut manifests = vec![root.clone()];
            manifests.extend(parts.iter().map(|p| p.manifest.clone()));
            ArchiveImage {
                name,
                root,
                manifests,
                images: parts,
                docker_image,
                index: None,
            }
        }
        None => {
            let Some(one) = parts.pop() else {
                return Err(CopyError::BadSource {
                    image: image.name.clone(),
                    reason: "it holds no image".into(),
                });
            };
            ArchiveImage::single(name, one)
        }
    };
    Ok((
        out,
        ArchiveBlobs {
            source,
            small,
            layers,
        },
    ))
}
