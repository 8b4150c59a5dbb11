//! The two sources: an archive read by `ferry_archive` ([`ArchiveSource`]), and a registry
//! read through the verified store ([`RegistrySource`]: each blob fetched into the cache when
//! it is to be sent, then streamed from there — never a whole image in memory).

use std::io::{self, Read};

use ferry_archive::{BlobLocation, SourceArchive, SourceImage};
use ferry_core::media::{self, Compression};
use ferry_core::{Descriptor, Digest, Platform, Reference};
use ferry_registry::Client;
use ferry_store::Store;

use crate::seam::{CopyBlob, CopyImage, CopyPlatform, ImageSource, SourceManifest};
use crate::{ArchiveImage, CopyError, Progress};

/// Which platforms of a multi-platform image to copy.
#[derive(Debug, Clone)]
pub enum PlatformChoice {
    /// The whole index.
    All,
    /// One platform's image. `explicit`: asked for by the user (then an image of another
    /// platform is an error, not a fallback).
    One { platform: Platform, explicit: bool },
}

/// An opened archive as a source.
pub struct ArchiveSource {
    pub archive: SourceArchive,
}

impl ImageSource for ArchiveSource {
    type Location = BlobLocation;

    fn open_blob(&self, at: &BlobLocation) -> io::Result<Box<dyn Read + Send>> {
        self.archive.open_blob(at, 0)
    }
}

/// What to copy of `image`, an image of an archive.
pub fn archive_image(
    image: &SourceImage,
    choice: &PlatformChoice,
) -> Result<CopyImage<BlobLocation>, CopyError> {
    let name = image.label();
    let platform = |p: &ferry_archive::PlatformImage| {
        let layers = p
            .layers
            .iter()
            .map(|l| {
                // Without a manifest, the media type is a guess; the bytes say how they are
                // stored.
                let mut descriptor = l.descriptor.clone();
                if p.manifest.is_none() {
                    descriptor.media_type = match l.compression {
                        Compression::Gzip => media::DOCKER_LAYER_GZIP,
                        Compression::Zstd => media::OCI_LAYER_ZSTD,
                        Compression::None => media::OCI_LAYER_TAR,
                    }
                    .to_string();
                }
                CopyBlob {
                    descriptor,
                    at: l.location.clone(),
                    diff_id: Some(l.diff_id.clone()),
                }
            })
            .collect();
        CopyPlatform {
            platform: p.platform.clone(),
            manifest: p.manifest.as_ref().map(|m| SourceManifest {
                media_type: m.descriptor.media_type.clone(),
                bytes: m.bytes.clone(),
            }),
            config: CopyBlob {
                descriptor: p.config.descriptor.clone(),
                at: p.config.location.clone(),
                diff_id: None,
            },
            layers,
        }
    };
    let index = image
        .root
        .as_ref()
        .filter(|r| media::is_index(&r.descriptor.media_type));
    let Some(index) = index else {
        let Some(p) = image.platforms.first() else {
            return Err(CopyError::BadSource {
                image: name,
                reason: "it holds no image".into(),
            });
        };
        // A single image names its platform in its config: one asked for explicitly must
        // match, as for a pull.
        if let PlatformChoice::One {
            platform: want,
            explicit: true,
        } = choice
        {
            if let Some(actual) = config_platform(&p.config.bytes) {
                if !want.matches(&actual) {
                    return Err(CopyError::WrongPlatform {
                        reference: name,
                        wanted: want.clone(),
                        actual: actual.to_string(),
                    });
                }
            }
        }
        return Ok(CopyImage {
            name,
            index: None,
            nested: Vec::new(),
            platforms: vec![platform(p)],
        });
    };
    match choice {
        PlatformChoice::All => Ok(CopyImage {
            name,
            nested: Vec::new(),
            index: Some(SourceManifest {
                media_type: index.descriptor.media_type.clone(),
                bytes: index.bytes.clone(),
            }),
            platforms: image.platforms.iter().map(platform).collect(),
        }),
        PlatformChoice::One { platform: want, .. } => {
            let images: Vec<&ferry_archive::PlatformImage> = image
                .platforms
                .iter()
                .filter(|p| p.platform.as_ref().is_none_or(|q| q.os != "unknown"))
                .collect();
            let chosen = images
                .iter()
                .find(|p| p.platform.as_ref().is_some_and(|q| want.matches(q)))
                .or(match images.as_slice() {
                    [only] if only.platform.is_none() => Some(only),
                    _ => None,
                });
            let Some(p) = chosen else {
                return Err(CopyError::NoPlatform {
                    reference: name,
                    wanted: want.clone(),
                    available: images.iter().filter_map(|p| p.platform.clone()).collect(),
                });
            };
            Ok(CopyImage {
                name,
                index: None,
                nested: Vec::new(),
                platforms: vec![platform(p)],
            })
        }
    }
}

/// The platform an image config names, when it names one.
fn config_platform(config: &[u8]) -> Option<Platform> {
    let c = ferry_core::manifest::ImageConfig::parse(config).ok()?;
    Some(Platform::new(
        c.os.as_deref()?,
        c.architecture.as_deref()?,
        c.variant.as_deref(),
    ))
}

/// A registry as a source, through the store: a blob is fetched (verified, resumable) into
/// the cache only when it is to be sent, so blobs the destination has or mounts are never
/// downloaded.
pub struct RegistrySource {
    pub client: Client,
    pub store: Store,
    pub reference: Reference,
}

impl ImageSource for RegistrySource {
    type Location = Digest;

    fn open_blob(&self, at: &Digest) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(
            self.store.open_blob(at).map_err(io::Error::other)?,
        ))
    }

    async fn prepare(
        &self,
        _at: &Digest,
        d: &Descriptor,
        progress: &dyn Progress,
    ) -> Result<(), CopyError> {
        crate::engine::download_one(
            &self.client,
            &self.store,
            &self.reference,
            d,
            progress,
            None,
        )
        .await
    }
}

/// What to copy of `image`, resolved from a registry into `store` (its manifests are there).
pub fn registry_image(store: &Store, image: &ArchiveImage) -> Result<CopyImage<Digest>, CopyError> {
    let read = |d: &Descriptor| -> Result<SourceManifest, CopyError> {
        Ok(SourceManifest {
            media_type: d.media_type.clone(),
            bytes: store
                .read_small(&d.digest)
                .map_err(|source| CopyError::Store {
                    digest: d.digest.clone(),
                    source,
                })?,
        })
    };
    let blob = |d: &Descriptor| CopyBlob {
        descriptor: d.clone(),
        at: d.digest.clone(),
        diff_id: None,
    };
    let index = if media::is_index(&image.root.media_type) {
        Some(read(&image.root)?)
    } else {
        None
    };
    let nested = image
        .manifests
        .iter()
        .filter(|d| d.is_index() && d.digest != image.root.digest)
        .map(read)
        .collect::<Result<Vec<_>, CopyError>>()?;
    let platforms = image
        .images
        .iter()
        .map(|p| {
            Ok(CopyPlatform {
                platform: p.platform.clone(),
                manifest: Some(read(&p.manifest)?),
                config: blob(&p.config),
                layers: p.layers.iter().map(blob).collect(),
            })
        })
        .collect::<Result<Vec<_>, CopyError>>()?;
    Ok(CopyImage {
        name: image.name.familiar(),
        index,
        nested,
        platforms,
    })
}
