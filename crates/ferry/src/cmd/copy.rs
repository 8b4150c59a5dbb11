//! `ferry copy SRC DST` with skopeo's location syntax. Three uses of the one engine:
//! registry → registry (blobs through the verified cache, mounted within one registry),
//! archive → registry (a push), registry → archive (a pull).

use std::path::PathBuf;
use std::sync::Arc;

use ferry_copy::{MountHints, PullOptions, RegistrySource};
use ferry_core::{Platform, Reference};

use super::push::{self, Sender, Target};
use crate::cli::{CopyArgs, Format, PullArgs};
use crate::exit;
use crate::progress::Reporter;

/// A place images are copied from or to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    Registry(Reference),
    /// An archive or layout: which kind it must be written as, and the image named in it.
    Archive {
        path: PathBuf,
        kind: ArchiveKind,
        name: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArchiveKind {
    DockerArchive,
    Oci,
    OciArchive,
    /// A bare path: ferry's archive.
    Ferry,
}

impl std::str::FromStr for Location {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Location> {
        if let Some(r) = s.strip_prefix("docker://") {
            return Ok(Location::Registry(r.parse()?));
        }
        let typed = [
            ("docker-archive:", ArchiveKind::DockerArchive),
            ("oci-archive:", ArchiveKind::OciArchive),
            ("oci:", ArchiveKind::Oci),
        ];
        for (prefix, kind) in typed {
            if let Some(rest) = s.strip_prefix(prefix) {
                // skopeo's syntax: the path, then an optional `:name`.
                let (path, name) = match rest.split_once(':') {
                    // skopeo cannot name a path with a colon at all; ferry takes the whole
                    // of it as the path when that exists and the part before the colon does
                    // not (an existing source, e.g. `docker-archive:/tmp/a:b.tar`).
                    Some((p, _))
                        if !std::path::Path::new(p).exists()
                            && std::path::Path::new(rest).exists() =>
                    {
                        (rest, None)
                    }
                    Some((p, n)) if !n.is_empty() => (p, Some(n.to_string())),
                    Some((p, _)) => (p, None),
                    None => (rest, None),
                };
                if path.is_empty() {
                    return Err(exit::usage(format!("{s} names no path"), None));
                }
                return Ok(Location::Archive {
                    path: path.into(),
                    kind,
                    name,
                });
            }
        }
        if let Some((scheme, _)) = s.split_once(':') {
            let known = [
                "containers-storage",
                "dir",
                "docker-daemon",
                "ostree",
                "sif",
            ];
            if scheme == "docker" && !std::path::Path::new(s).exists() {
                return Err(exit::usage(
                    format!("{s} is not a location"),
                    Some("a registry image is docker://REF, e.g. docker://alpine:3.20"),
                ));
            }
            if known.contains(&scheme) {
                return Err(exit::usage(
                    format!("{scheme}: locations are not supported"),
                    Some("use docker://, docker-archive:, oci:, oci-archive: or a path"),
                ));
            }
        }
        Ok(Location::Archive {
            path: s.into(),
            kind: ArchiveKind::Ferry,
            name: None,
        })
    }
}

pub async fn run(args: CopyArgs) -> anyhow::Result<()> {
    let src: Location = args.source.parse()?;
    let dst: Location = args.destination.parse()?;
    match (src, dst) {
        (Location::Registry(from), Location::Registry(to)) => {
            registry_to_registry(&args, from, to).await
        }
        (Location::Archive { path, name, .. }, Location::Registry(to)) => {
            archive_to_registry(&args, path, name, to).await
        }
        (Location::Registry(from), Location::Archive { path, kind, name }) => {
            registry_to_archive(args, from, path, kind, name).await
        }
        (
            Location::Archive {
                path: from,
                name: from_name,
                ..
            },
            Location::Archive { path, kind, name },
        ) => archive_to_archive(args, from, from_name, path, kind, name).await,
    }
}

fn check_target(to: &Reference) -> anyhow::Result<()> {
    if to.digest().is_some() {
        return Err(exit::usage(
            format!(
                "{} names a digest; a copy stores the image under a tag",
                to.familiar()
            ),
            Some("give a repository and tag, e.g. docker://registry.local/app:1"),
        ));
    }
    Ok(())
}

async fn registry_to_registry(
    args: &CopyArgs,
    from: Reference,
    to: Reference,
) -> anyhow::Result<()> {
    check_target(&to)?;
    let mut registries = vec![from.registry().to_string(), to.registry().to_string()];
    registries.dedup();
    if args.net.username.is_some() && registries.len() > 1 {
        // One password must never travel to a registry it was not meant for.
        return Err(exit::usage(
            format!("--username applies to one registry, but this copy uses {}", registries.join(" and ")),
            Some("store each registry's credentials in ~/.docker/config.json (ferry login, docker login)"),
        ));
    }
    let store = push::open_cache(args.cache_dir.as_deref())?;
    let client = super::client(&args.net, &registries, args.quiet)?;
    let (platform, explicit) = match &args.platform {
        Some(p) => (
            p.parse::<Platform>()
                .map_err(|e| exit::usage(e.to_string(), None))?,
            true,
        ),
        None => (Platform::host(), false),
    };
    let opts = PullOptions {
        platform,
        platform_explicit: explicit,
        all_platforms: args.all_platforms,
        jobs: args.jobs as usize,
        // A registry holds any manifest: artifacts are copied like images.
        keep_artifacts: true,
    };
    let reporter = Arc::new(Reporter::for_upload(args.quiet));
    let images = ferry_copy::resolve_all(
        &client,
        &store,
        std::slice::from_ref(&from),
        &opts,
        &ferry_copy::NoProgress,
    )
    .await?;
    let Some(image) = images.first() else {
        anyhow::bail!("{} resolved to no image", from.familiar());
    };
    let copy = ferry_copy::registry_image(&store, image)?;
    let hints = MountHints::kept_under(store.root(), to.api_host());
    if from.registry() == to.registry() {
        // Within one registry every blob is mounted from the source repository: no byte
        // of a layer travels.
        for p in &copy.platforms {
            for b in std::iter::once(&p.config).chain(&p.layers) {
                hints.note(&b.descriptor.digest, from.repository());
            }
        }
    }
    // As skopeo: a destination without a tag is `latest`.
    let tag = to.tag().unwrap_or("latest").to_string();
    let target = Target {
        reference: to.with_tag(&tag)?,
        tags: vec![tag],
    };
    let sender = Sender {
        client: client.clone(),
        store: store.clone(),
        chunk_size: args.chunk_size,
        jobs: args.jobs as usize,
        hints,
        compress: false,
    };
    let source = Arc::new(RegistrySource {
        client,
        store,
        reference: from.clone(),
    });
    let sent = sender
        .send(source, &copy, &target, reporter.clone())
        .await?;
    reporter.finish_downloads();
    reporter.line(&format!(
        "copied {} to {}",
        from.familiar(),
        target.reference.familiar()
    ));
    push::finish(&[sent.digest.to_string()], args.digestfile.as_deref())
}

async fn archive_to_registry(
    args: &CopyArgs,
    path: PathBuf,
    name: Option<String>,
    to: Reference,
) -> anyhow::Result<()> {
    check_target(&to)?;
    let choice = push::platform_choice(args.platform.as_deref(), args.all_platforms)?;
    let store = push::open_cache(args.cache_dir.as_deref())?;
    let archive = push::open_archive(&path, &store).await?;
    let image = archive.select(name.as_deref())?.clone();
    let target = push::single_target(&to.to_string(), &image, &[])?;
    let client = super::client(&args.net, &[to.registry().to_string()], args.quiet)?;
    let hints = MountHints::kept_under(store.root(), to.api_host());
    let sender = Sender {
        client,
        store,
        chunk_size: args.chunk_size,
        jobs: args.jobs as usize,
        hints,
        compress: true,
    };
    let reporter = Arc::new(Reporter::for_upload(args.quiet));
    let copy = ferry_copy::archive_image(&image, &choice)?;
    let source = Arc::new(ferry_copy::ArchiveSource { archive });
    let sent = sender
        .send(source, &copy, &target, reporter.clone())
        .await?;
    reporter.finish_downloads();
    reporter.line(&format!(
        "copied {} to {}",
        path.display(),
        target.reference.familiar()
    ));
    push::finish(&[sent.digest.to_string()], args.digestfile.as_deref())
}

async fn registry_to_archive(
    args: CopyArgs,
    from: Reference,
    path: PathBuf,
    kind: ArchiveKind,
    name: Option<String>,
) -> anyhow::Result<()> {
    // oci:DIR:TAG names a tag (of the source's name); the other locations a reference.
    let record_as = match name {
        Some(tag) if kind == ArchiveKind::Oci => Some(from.with_tag(&tag)?),
        Some(n) => Some(n.parse::<Reference>()?),
        None => None,
    };
    if args.digestfile.is_some() {
        return Err(exit::usage(
            "--digestfile applies to registry destinations",
            None,
        ));
    }
    // ferry's archive is at once a docker-archive and an oci-archive.
    let format = match kind {
        ArchiveKind::Oci => Format::Oci,
        ArchiveKind::DockerArchive | ArchiveKind::OciArchive | ArchiveKind::Ferry => {
            Format::Archive
        }
    };
    super::pull::run(PullArgs {
        images: vec![from.to_string()],
        output: Some(path),
        format,
        platform: args.platform,
        all_platforms: args.all_platforms,
        jobs: args.jobs,
        cache_dir: args.cache_dir,
        quiet: args.quiet,
        force: args.force,
        max_size: None,
        net: args.net,
        // ferry copy does not take mirrors (yet): its registry reads go to the registry.
        mirror: no_mirrors(),
        record_as,
    })
    .await
}

/// Archive to archive: the image read (and checked while it is copied) and written by the
/// writers `ferry pull` uses.
async fn archive_to_archive(
    args: CopyArgs,
    from: PathBuf,
    from_name: Option<String>,
    path: PathBuf,
    kind: ArchiveKind,
    name: Option<String>,
) -> anyhow::Result<()> {
    if args.digestfile.is_some() {
        return Err(exit::usage(
            "--digestfile applies to registry destinations",
            None,
        ));
    }
    let choice = push::platform_choice(args.platform.as_deref(), args.all_platforms)?;
    let store = push::open_cache(args.cache_dir.as_deref())?;
    let format = match kind {
        ArchiveKind::Oci => Format::Oci,
        _ => Format::Archive,
    };
    let quiet = args.quiet;
    // Checked before anything is read, as a pull does.
    let output = super::output::output_for(
        &PullArgs {
            images: Vec::new(),
            output: Some(path.clone()),
            format,
            platform: None,
            all_platforms: false,
            jobs: args.jobs,
            cache_dir: None,
            quiet,
            force: args.force,
            max_size: None,
            net: args.net,
            mirror: no_mirrors(),
            record_as: None,
        },
        &[],
    )?;
    let archive = push::open_archive(&from, &store).await?;
    let image = archive.select(from_name.as_deref())?.clone();
    let own = image.names.iter().find_map(|n| n.parse::<Reference>().ok());
    let reference = match (name, own) {
        // oci:DIR:TAG names a tag; the other locations a reference.
        (Some(tag), Some(own)) if kind == ArchiveKind::Oci => own.with_tag(&tag)?,
        (Some(n), _) => n.parse::<Reference>()?,
        (None, Some(own)) => own,
        (None, None) => {
            return Err(exit::usage(
                format!("the image in {} has no name to record", from.display()),
                Some("name it in the destination, e.g. docker-archive:OUT.tar:app:1"),
            ))
        }
    };
    let copy = ferry_copy::archive_image(&image, &choice)?;
    let source = Arc::new(ferry_copy::ArchiveSource { archive });
    let (img, blobs) = ferry_copy::archive_output(source, &copy, reference)?;
    let scratch = store.root().join("ingest");
    let cache = store.root().to_path_buf();
    let force = args.force;
    let written = tokio::task::spawn_blocking(move || {
        super::pull::write_output(&[img], &blobs, &scratch, format, &output, &cache, force)
    })
    .await??;
    if let (Some(p), false) = (written, quiet) {
        crate::progress::notice(&format!("wrote {}", p.display()));
    }
    Ok(())
}

fn no_mirrors() -> crate::cli::MirrorArgs {
    crate::cli::MirrorArgs {
        no_mirror: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_follow_skopeo_syntax() {
        let l = |s: &str| s.parse::<Location>().unwrap();
        assert_eq!(
            l("docker://127.0.0.1:5000/a/b:1"),
            Location::Registry("127.0.0.1:5000/a/b:1".parse().unwrap())
        );
        assert_eq!(
            l("docker-archive:/tmp/x.tar:alpine:3.20"),
            Location::Archive {
                path: "/tmp/x.tar".into(),
                kind: ArchiveKind::DockerArchive,
                name: Some("alpine:3.20".into())
            }
        );
        assert_eq!(
            l("oci:dir"),
            Location::Archive {
                path: "dir".into(),
                kind: ArchiveKind::Oci,
                name: None
            }
        );
        assert_eq!(
            l("oci-archive:a.tar:v1"),
            Location::Archive {
                path: "a.tar".into(),
                kind: ArchiveKind::OciArchive,
                name: Some("v1".into())
            }
        );
        assert_eq!(
            l("./x.tar"),
            Location::Archive {
                path: "./x.tar".into(),
                kind: ArchiveKind::Ferry,
                name: None
            }
        );
        assert!("docker-daemon:alpine".parse::<Location>().is_err());
        assert!("oci:".parse::<Location>().is_err());
        let e = "docker:alpine".parse::<Location>().unwrap_err();
        assert_eq!(e.to_string(), "docker:alpine is not a location");
    }

    #[test]
    fn an_existing_archive_whose_path_has_a_colon_is_found_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a:b.tar");
        std::fs::write(&file, b"").unwrap();
        let text = format!("docker-archive:{}", file.display());
        assert_eq!(
            text.parse::<Location>().unwrap(),
            Location::Archive {
                path: file.clone(),
                kind: ArchiveKind::DockerArchive,
                name: None
            }
        );
        // A destination that does not exist yet: skopeo's reading, path then name.
        let out = format!("oci-archive:{}:v1", dir.path().join("new.tar").display());
        assert_eq!(
            out.parse::<Location>().unwrap(),
            Location::Archive {
                path: dir.path().join("new.tar"),
                kind: ArchiveKind::OciArchive,
                name: Some("v1".into())
            }
        );
    }
}
