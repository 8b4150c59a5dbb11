//! `ferry push`: archive → registry. The archive is opened (everything but layer contents
//! checked), the image chosen, and the copy engine sends it: layers checked while they
//! stream, uncompressed ones compressed on the way, manifests last.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use ferry_archive::{SourceArchive, SourceImage};
use ferry_copy::{
    ArchiveSource, CompressedMemo, MountHints, PlatformChoice, RegistryDestination, SendOptions,
};
use ferry_core::{Platform, Reference};
use ferry_registry::Client;
use ferry_store::Store;

use crate::cli::PushArgs;
use crate::exit;
use crate::progress::Reporter;

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let choice = platform_choice(args.platform.as_deref(), args.all_platforms)?;
    let store = open_cache(args.cache_dir.as_deref())?;
    let archive = open_archive(&args.source, &store).await?;
    let targets = if args.all {
        all_targets(&args.target, archive.images(), &args.tags)?
    } else {
        let image = archive.select(args.image.as_deref())?;
        vec![(
            image.clone(),
            single_target(&args.target, image, &args.tags)?,
        )]
    };
    let registry = targets[0].1.reference.registry().to_string();
    let client = super::client(&args.net, &[registry], args.quiet)?;
    let hints = MountHints::kept_under(store.root(), targets[0].1.reference.api_host());
    let sender = Sender {
        client,
        store,
        chunk_size: args.chunk_size,
        jobs: args.jobs as usize,
        hints,
        compress: true,
    };
    let source = Arc::new(ArchiveSource { archive });
    let reporter = Arc::new(Reporter::for_upload(args.quiet));
    reporter.expect_images(targets.len());
    let (mut lines, mut done) = (Vec::new(), Vec::new());
    for (image, target) in &targets {
        let copy = ferry_copy::archive_image(image, &choice)?;
        let sent = sender
            .send(source.clone(), &copy, target, reporter.clone())
            .await?;
        done.push(format!("pushed {} ({})", target.shown(), sent.digest));
        lines.push(if args.all {
            format!("{}@{}", target.reference.name(), sent.digest)
        } else {
            sent.digest.to_string()
        });
    }
    reporter.finish_downloads();
    for line in &done {
        reporter.line(line);
    }
    finish(&lines, args.digestfile.as_deref())
}

/// Print the pushed digests and write them to `--digestfile`.
pub(crate) fn finish(lines: &[String], digestfile: Option<&Path>) -> anyhow::Result<()> {
    if let Some(f) = digestfile {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(f, text).with_context(|| format!("writing {}", f.display()))?;
    }
    super::print_lines(lines, false)
}

/// Where one image goes: its repository and the tags it is stored under.
pub(crate) struct Target {
    pub reference: Reference,
    pub tags: Vec<String>,
}

impl Target {
    /// `registry/repo:tag` and any further `:tag`s.
    pub(crate) fn shown(&self) -> String {
        let tags: Vec<String> = self.tags.iter().map(|t| format!(":{t}")).collect();
        format!("{}{}", self.reference.name(), tags.join(", "))
    }
}

/// Sends images to registries; one per command, shared by every image it pushes so mounts
/// can use what the earlier ones stored.
pub(crate) struct Sender {
    pub client: Client,
    pub store: Store,
    pub chunk_size: Option<u64>,
    pub jobs: usize,
    pub hints: MountHints,
    /// Compress uncompressed layers (a push); a copy between registries sends every blob
    /// as it is.
    pub compress: bool,
}

impl Sender {
    pub(crate) async fn send<S: ferry_copy::ImageSource>(
        &self,
        source: Arc<S>,
        image: &ferry_copy::CopyImage<S::Location>,
        target: &Target,
        reporter: Arc<Reporter>,
    ) -> anyhow::Result<ferry_copy::Sent> {
        let dest = Arc::new(RegistryDestination {
            client: self.client.clone(),
            host: target.reference.api_host().to_string(),
            repo: target.reference.repository().to_string(),
            chunk_size: self
                .chunk_size
                .unwrap_or(ferry_registry::DEFAULT_CHUNK_SIZE),
            hints: self.hints.clone(),
        });
        let opts = SendOptions {
            jobs: self.jobs,
            tags: target.tags.clone(),
            memo: Some(Arc::new(CompressedMemo::under(self.store.root()))),
            compress: self.compress,
        };
        let sent = ferry_copy::send_image(source, image, dest, &opts, reporter)
            .await
            .with_context(|| format!("pushing to {}", target.reference.name()))?;
        Ok(sent)
    }
}

pub(crate) fn platform_choice(
    platform: Option<&str>,
    all_platforms: bool,
) -> anyhow::Result<PlatformChoice> {
    Ok(match (platform, all_platforms) {
        (_, true) => PlatformChoice::All,
        (Some(p), false) => PlatformChoice::One {
            platform: p
                .parse::<Platform>()
                .map_err(|e| exit::usage(e.to_string(), None))?,
            explicit: true,
        },
        (None, false) => PlatformChoice::One {
            platform: Platform::host(),
            explicit: false,
        },
    })
}

/// The blob cache: the default one, or `--cache-dir`.
pub(crate) fn open_cache(dir: Option<&Path>) -> anyhow::Result<Store> {
    let cache: PathBuf = match dir {
        Some(d) => d.to_path_buf(),
        None => dirs::cache_dir().map(|d| d.join("ferry")).ok_or_else(|| {
            exit::usage(
                "cannot tell where the cache directory should be",
                Some("give one with --cache-dir DIR"),
            )
        })?,
    };
    Store::open(&cache).with_context(|| format!("opening the cache at {}", cache.display()))
}

/// Open an archive (off the async threads: a compressed one is decompressed first).
pub(crate) async fn open_archive(path: &Path, store: &Store) -> anyhow::Result<SourceArchive> {
    let spool = store.root().join("ingest");
    std::fs::create_dir_all(&spool).with_context(|| format!("creating {}", spool.display()))?;
    let p = path.to_path_buf();
    let archive = tokio::task::spawn_blocking(move || SourceArchive::open(&p, &spool))
        .await
        .context("the archive reader failed")?
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(archive)
}

/// The tag an image is known by in the archive, if any.
fn own_tag(image: &SourceImage) -> Option<String> {
    image
        .names
        .iter()
        .filter_map(|n| n.parse::<Reference>().ok())
        .find_map(|r| r.tag().map(str::to_string))
}

fn with_extra(first: String, extra: &[String]) -> anyhow::Result<Vec<String>> {
    let mut tags = vec![first];
    for t in extra {
        // A tag is checked the way a reference's is: by parsing one.
        format!("x:{t}")
            .parse::<Reference>()
            .map_err(|e| exit::usage(format!("--tag {t:?} is not a valid tag: {e}"), None))?;
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    Ok(tags)
}

/// `TARGET` for one image: its tag, else the image's own, else `latest`.
pub(crate) fn single_target(
    target: &str,
    image: &SourceImage,
    extra: &[String],
) -> anyhow::Result<Target> {
    let reference: Reference = target.parse()?;
    if reference.digest().is_some() {
        return Err(exit::usage(
            format!("{target} names a digest; a push stores the image under a tag"),
            Some("give a repository and tag, e.g. registry.local/app:1"),
        ));
    }
    // The parser fills in `latest`: whether TARGET names a tag is read from the text.
    let name = target.split('@').next().unwrap_or(target);
    let explicit = name[name.rfind('/').map_or(0, |i| i + 1)..].contains(':');
    let tag = match reference.tag() {
        Some(t) if explicit => t.to_string(),
        _ => own_tag(image).unwrap_or_else(|| "latest".into()),
    };
    let tags = with_extra(tag.clone(), extra)?;
    Ok(Target {
        reference: reference.with_tag(&tag)?,
        tags,
    })
}

/// `--all`: each image to its own name under `target` (a registry and optional prefix).
fn all_targets(
    target: &str,
    images: &[SourceImage],
    extra: &[String],
) -> anyhow::Result<Vec<(SourceImage, Target)>> {
    let base = target.trim_end_matches('/');
    if base.contains('@')
        || base
            .rsplit('/')
            .next()
            .is_some_and(|l| l.contains(':') && base.contains('/'))
    {
        return Err(exit::usage(
            format!("with --all, TARGET is a registry and optional prefix, not {target}"),
            Some("e.g. ferry push --all saved.tar registry.local:5000/mirror"),
        ));
    }
    let mut out = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let Some(name) = image.names.iter().find_map(|n| n.parse::<Reference>().ok()) else {
            return Err(exit::usage(
                format!("image {i} of the archive has no name to push it under"),
                Some(&format!(
                    "push it alone: ferry push --image {i} ARCHIVE REGISTRY/REPOSITORY:TAG"
                )),
            ));
        };
        // docker.io's `library/` is docker's own prefix, not part of the image's name.
        let path = match name.registry() {
            "docker.io" => name
                .repository()
                .strip_prefix("library/")
                .unwrap_or(name.repository())
                .to_string(),
            _ => name.repository().to_string(),
        };
        let tag = name.tag().unwrap_or("latest").to_string();
        let reference: Reference = format!("{base}/{path}:{tag}").parse()?;
        let tags = with_extra(tag, extra)?;
        out.push((image.clone(), Target { reference, tags }));
    }
    if out.is_empty() {
        return Err(ferry_archive::ReadError::NoImages.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(names: &[&str]) -> SourceImage {
        SourceImage {
            names: names.iter().map(|n| n.to_string()).collect(),
            root: None,
            platforms: Vec::new(),
        }
    }

    #[test]
    fn a_target_without_a_tag_takes_the_images_own_then_latest() {
        let img = named(&["docker.io/library/alpine:3.20"]);
        let t = single_target("reg.lan:5000/mirror/alpine", &img, &[]).unwrap();
        assert_eq!(t.tags, ["3.20"]);
        assert_eq!(t.reference.to_string(), "reg.lan:5000/mirror/alpine:3.20");
        let t = single_target("reg.lan:5000/mirror/alpine:edge", &img, &["x".into()]).unwrap();
        assert_eq!(t.tags, ["edge", "x"]);
        let t = single_target("reg.lan:5000/a", &named(&[]), &[]).unwrap();
        assert_eq!(t.tags, ["latest"]);
        assert!(single_target("reg.lan:5000/a", &img, &["bad tag".into()]).is_err());
        let digest = "reg.lan:5000/a@sha256:0000000000000000000000000000000000000000000000000000000000000000";
        assert!(single_target(digest, &img, &[]).is_err());
    }

    #[test]
    fn all_puts_each_image_under_the_prefix_by_its_own_name() {
        let images = [
            named(&["docker.io/library/alpine:3.20"]),
            named(&["ghcr.io/org/app:1"]),
            named(&["busybox"]),
        ];
        let t = all_targets("reg.lan:5000/mirror/", &images, &[]).unwrap();
        let refs: Vec<String> = t.iter().map(|(_, t)| t.reference.to_string()).collect();
        assert_eq!(
            refs,
            [
                "reg.lan:5000/mirror/alpine:3.20",
                "reg.lan:5000/mirror/org/app:1",
                "reg.lan:5000/mirror/busybox:latest",
            ]
        );
        assert!(all_targets("reg.lan:5000/mirror:1", &images, &[]).is_err());
        assert!(all_targets("reg.lan:5000", &[named(&[])], &[]).is_err());
    }
}
