//! `ferry inspect` of an archive or OCI layout: the same fields, `--json`, `--raw` and
//! `--config` as for an image in a registry, read from the archive (its manifests and
//! configs are verified when it is opened; no layer is read).

use std::fmt::Write as _;
use std::path::Path;

use ferry_archive::{PlatformImage, SourceArchive, SourceImage};
use ferry_core::manifest::ImageConfig;
use ferry_core::{media, ImageManifest, Platform};

use super::inspect::{field, image_block, skopeo_json, write_stdout};
use crate::cli::InspectArgs;
use crate::exit::{self, UserError};
use crate::sanitize::clean;

/// Inspect the image `name` (or `--image`) of the archive at `path`.
pub(super) async fn run(args: &InspectArgs, path: &Path, name: Option<&str>) -> anyhow::Result<()> {
    let wanted = match &args.platform {
        Some(p) => Some(
            p.parse::<Platform>()
                .map_err(|e| exit::usage(e.to_string(), None))?,
        ),
        None => None,
    };
    // A compressed archive is decompressed into an unnamed temporary file, gone on exit.
    let (p, spool) = (path.to_path_buf(), std::env::temp_dir());
    let archive = tokio::task::spawn_blocking(move || SourceArchive::open(&p, &spool))
        .await?
        .map_err(|e| anyhow::Error::new(e).context(format!("reading {}", path.display())))?;
    let image = archive.select(name.or(args.archive_image.as_deref()))?;
    let index = image
        .root
        .as_ref()
        .filter(|r| media::is_index(&r.descriptor.media_type));
    if args.raw && wanted.is_none() {
        if let Some(root) = &image.root {
            return write_stdout(&root.bytes);
        }
    }
    let platform = wanted.clone().unwrap_or_else(Platform::host);
    let chosen = choose(image, &platform);
    let Some(chosen) = chosen else {
        if args.json || args.config || args.raw {
            return Err(no_platform(image, &platform));
        }
        let mut out = header(path, image);
        platforms_block(&mut out, image, None);
        let _ = writeln!(
            out,
            "No image for {platform} in this index: choose one with --platform."
        );
        return write_stdout(out.as_bytes());
    };
    if args.raw {
        return match &chosen.manifest {
            Some(m) => write_stdout(&m.bytes),
            None => Err(UserError {
                message: format!(
                    "{} holds no manifest: {} has none (they were added in Docker 25)",
                    path.display(),
                    archive.kind()
                ),
                hint: Some("--config shows the image config it holds".into()),
                code: exit::USAGE,
            }
            .into()),
        };
    }
    if args.config {
        return write_stdout(&chosen.config.bytes);
    }
    let config = if media::is_image_config(&chosen.config.descriptor.media_type)
        || chosen.manifest.is_none()
    {
        ImageConfig::parse(&chosen.config.bytes).map_err(|e| {
            anyhow::anyhow!(
                "reading the image config {}: {e}",
                chosen.config.descriptor.digest
            )
        })?
    } else {
        ImageConfig::default()
    };
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: chosen
            .manifest
            .as_ref()
            .map(|m| m.descriptor.media_type.clone()),
        config: chosen.config.descriptor.clone(),
        layers: chosen.layers.iter().map(|l| l.descriptor.clone()).collect(),
        artifact_type: None,
    };
    let digest = image.root.as_ref().map(|r| r.descriptor.digest.clone());
    if args.json {
        let name = image.names.first().cloned().unwrap_or_default();
        let mut bytes = serde_json::to_vec_pretty(&skopeo_json(
            name,
            digest.as_ref(),
            &manifest,
            &config,
            image.names.clone(),
        ))?;
        bytes.push(b'\n');
        return write_stdout(&bytes);
    }
    let mut out = header(path, image);
    if index.is_some() {
        platforms_block(
            &mut out,
            image,
            chosen.manifest.as_ref().map(|m| &m.descriptor.digest),
        );
        if let Some(m) = &chosen.manifest {
            field(&mut out, "Image", &m.descriptor.digest.to_string());
            field(&mut out, "Media type", &m.descriptor.media_type);
        }
    }
    image_block(&mut out, &manifest, &config);
    write_stdout(out.as_bytes())
}

/// The platform image to show: the only one, or the one for `platform`.
fn choose<'a>(image: &'a SourceImage, platform: &Platform) -> Option<&'a PlatformImage> {
    let images: Vec<&PlatformImage> = image
        .platforms
        .iter()
        .filter(|p| p.platform.as_ref().is_none_or(|q| q.os != "unknown"))
        .collect();
    if let [only] = images.as_slice() {
        if image
            .root
            .as_ref()
            .is_none_or(|r| !media::is_index(&r.descriptor.media_type))
        {
            return Some(only);
        }
    }
    images
        .iter()
        .copied()
        .find(|p| p.platform.as_ref().is_some_and(|q| platform.matches(q)))
        .or(match images.as_slice() {
            [only] if only.platform.is_none() => Some(*only),
            _ => None,
        })
}

fn no_platform(image: &SourceImage, platform: &Platform) -> anyhow::Error {
    let available: Vec<String> = image
        .platforms
        .iter()
        .filter_map(|p| p.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(ToString::to_string)
        .collect();
    UserError {
        message: format!(
            "the image has no {platform} variant (it has: {})",
            available.join(", ")
        ),
        hint: Some("choose one with --platform os/arch[/variant]".into()),
        code: exit::NOT_FOUND,
    }
    .into()
}

fn header(path: &Path, image: &SourceImage) -> String {
    let mut out = String::new();
    field(&mut out, "Archive", &path.display().to_string());
    if !image.names.is_empty() {
        field(&mut out, "Name", &image.names.join(", "));
    }
    match &image.root {
        Some(r) => {
            field(&mut out, "Digest", &r.descriptor.digest.to_string());
            field(&mut out, "Media type", &r.descriptor.media_type);
        }
        None => field(
            &mut out,
            "Digest",
            "(none: the archive holds no manifest; push makes one)",
        ),
    }
    out
}

fn platforms_block(out: &mut String, image: &SourceImage, chosen: Option<&ferry_core::Digest>) {
    let _ = writeln!(out, "Platforms:");
    for p in &image.platforms {
        let name = match &p.platform {
            Some(q) if q.os == "unknown" => format!("{q} (attestation)"),
            Some(q) => q.to_string(),
            None => "(none)".to_string(),
        };
        let digest = p.manifest.as_ref().map(|m| &m.descriptor.digest);
        let mark = if digest.is_some() && digest == chosen {
            "  <- chosen"
        } else {
            ""
        };
        let shown = digest.map(ToString::to_string).unwrap_or_default();
        let _ = writeln!(out, "  {:<24} {shown}{mark}", clean(&name));
    }
}
