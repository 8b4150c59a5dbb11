//! `ferry pull`: registry → cache → archive.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use ferry_archive::BlobReader;
use ferry_archive::{ArchiveImage, Plan};
use ferry_copy::{Arrivals, ArrivingReader, DirectArchive, PullOptions};
use ferry_core::{Platform, Reference};
use ferry_store::Store;

use crate::cli::{Format, PullArgs};
use crate::exit;
use crate::progress::Reporter;

enum Output {
    Stdout,
    Path(PathBuf),
}

pub async fn run(args: PullArgs) -> anyhow::Result<()> {
    let refs = args
        .images
        .iter()
        .map(|s| s.parse::<Reference>())
        .collect::<Result<Vec<_>, _>>()?;
    let (platform, explicit) = match &args.platform {
        Some(p) => (
            p.parse::<Platform>()
                .map_err(|e| exit::usage(e.to_string(), None))?,
            true,
        ),
        None => (Platform::host(), false),
    };
    if args.all_platforms && args.format == Format::Legacy {
        return Err(exit::usage(
            "--all-platforms cannot go in the legacy format, which holds one platform per image",
            Some("use --format oci or the default archive"),
        ));
    }
    let mut registries: Vec<String> = refs.iter().map(|r| r.registry().to_string()).collect();
    registries.sort();
    registries.dedup();
    if args.net.username.is_some() && registries.len() > 1 {
        // One password must never travel to a registry it was not meant for.
        return Err(exit::usage(
            format!("--username applies to one registry, but these images come from {}", registries.join(", ")),
            Some("pull them in separate runs, or store each registry's credentials in ~/.docker/config.json"),
        ));
    }
    let output = output_for(&args, &refs)?;
    let cache = match &args.cache_dir {
        Some(d) => d.clone(),
        None => dirs::cache_dir().map(|d| d.join("ferry")).ok_or_else(|| {
            exit::usage(
                "cannot tell where the cache directory should be",
                Some("give one with --cache-dir DIR"),
            )
        })?,
    };
    let store =
        Store::open(&cache).with_context(|| format!("opening the cache at {}", cache.display()))?;
    let client = super::client(&args.net, &registries, args.quiet)?;
    let opts = PullOptions {
        platform,
        platform_explicit: explicit,
        all_platforms: args.all_platforms,
        jobs: args.jobs as usize,
        keep_artifacts: args.format == Format::Oci,
    };
    let reporter = Arc::new(Reporter::new(args.quiet));
    let images = ferry_copy::resolve_all(&client, &store, &refs, &opts, reporter.as_ref()).await?;
    if let (Output::Path(path), Format::Archive) = (&output, args.format) {
        write_direct(&client, &store, &images, opts.jobs, reporter.clone(), path).await?;
        reporter.finish_downloads();
        reporter.line(&format!("wrote {}", path.display()));
        return Ok(());
    }
    // The writer starts at once and copies each blob as soon as it is verified, while later
    // blobs still download; the archive's order is fixed, so nothing waits for the end.
    let arrivals = Arrivals::new(reporter.clone());
    let reader = ArrivingReader {
        store: store.clone(),
        arrivals: arrivals.clone(),
    };
    let (format, scratch, plan_images) = (args.format, store.root().join("ingest"), images.clone());
    let writer = tokio::task::spawn_blocking(move || {
        write_output(&plan_images, &reader, &scratch, format, &output)
    });
    let fetched =
        ferry_copy::fetch_blobs(&client, &store, &images, opts.jobs, arrivals.clone(), None).await;
    if let Err(e) = fetched {
        arrivals.fail();
        let _ = writer.await;
        return Err(e.into());
    }
    let written = writer.await.context("the writer task failed")??;
    reporter.finish_downloads();
    if let Some(path) = written {
        reporter.line(&format!("wrote {}", path.display()));
    }
    Ok(())
}

/// The default archive to a file: laid out in advance, each download written straight into
/// its place (and into the cache), the rest copied from the cache, then renamed into place.
async fn write_direct(
    client: &ferry_registry::Client,
    store: &Store,
    images: &[ArchiveImage],
    jobs: usize,
    progress: Arc<Reporter>,
    path: &Path,
) -> anyhow::Result<()> {
    let tmp = temp_name(path);
    remove_stale_temps(path);
    super::track_temp(tmp.clone());
    let result = async {
        let (plan, t) = (Plan::new(images), tmp.clone());
        let out = tokio::task::spawn_blocking(move || DirectArchive::create(&t, &plan))
            .await
            .context("the writer task failed")??;
        ferry_copy::fetch_blobs(client, store, images, jobs, progress, Some(out.clone())).await?;
        let (o, s) = (out, store.clone());
        tokio::task::spawn_blocking(move || o.fill_rest(&s))
            .await
            .context("the writer task failed")?
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("moving the finished archive to {}", path.display()))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    super::untrack_temp(&tmp);
    result
}

fn output_for(args: &PullArgs, refs: &[Reference]) -> anyhow::Result<Output> {
    let out = match &args.output {
        Some(p) if p.as_os_str() == "-" => {
            if args.format == Format::Oci {
                return Err(exit::usage(
                    "--format oci writes a directory and cannot go to standard output",
                    Some("use the default archive format with -o -"),
                ));
            }
            if std::io::stdout().is_terminal() {
                return Err(exit::usage(
                    "refusing to write an archive to a terminal",
                    Some("redirect it: ferry pull IMAGE -o - > file.tar, or | docker load"),
                ));
            }
            return Ok(Output::Stdout);
        }
        Some(p) => p.clone(),
        None => {
            if refs.len() > 1 {
                return Err(exit::usage(
                    "several images need an output name",
                    Some("add -o FILE, e.g. -o images.tar"),
                ));
            }
            let stem = refs[0].file_stem();
            PathBuf::from(match args.format {
                Format::Oci => stem,
                _ => format!("{stem}.tar"),
            })
        }
    };
    if args.format == Format::Oci {
        if out.exists() {
            return Err(exit::usage(
                format!(
                    "{} already exists; an OCI layout is written to a new directory",
                    out.display()
                ),
                Some("remove it or choose another -o"),
            ));
        }
    } else if out.is_dir() {
        return Err(exit::usage(
            format!(
                "{} is a directory; the archive needs a file name",
                out.display()
            ),
            None,
        ));
    }
    Ok(Output::Path(out))
}

/// Write the output; `Some(path)` when a file or directory was made.
fn write_output(
    images: &[ArchiveImage],
    blobs: &dyn BlobReader,
    scratch: &Path,
    format: Format,
    output: &Output,
) -> anyhow::Result<Option<PathBuf>> {
    match output {
        Output::Stdout => {
            let stdout = std::io::stdout();
            let w = BufWriter::with_capacity(1 << 20, stdout.lock());
            write_tar(images, blobs, scratch, format, w)?;
            Ok(None)
        }
        Output::Path(path) if format == Format::Oci => {
            remove_stale_temps(path);
            super::track_temp(temp_name(path));
            let r = Plan::new(images).write_dir(blobs, path);
            super::untrack_temp(&temp_name(path));
            r?;
            Ok(Some(path.clone()))
        }
        Output::Path(path) => {
            let tmp = temp_name(path);
            remove_stale_temps(path);
            super::track_temp(tmp.clone());
            let result = (|| -> anyhow::Result<()> {
                let f =
                    File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
                let mut w = BufWriter::with_capacity(1 << 20, f);
                write_tar(images, blobs, scratch, format, &mut w)?;
                // Complete before it is renamed into place; not fsynced, as docker save and
                // skopeo do not: the cost is a second write of the whole image to disk.
                w.into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, path).with_context(|| {
                    format!("moving the finished archive to {}", path.display())
                })?;
                Ok(())
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            super::untrack_temp(&tmp);
            result?;
            Ok(Some(path.clone()))
        }
    }
}

fn write_tar(
    images: &[ArchiveImage],
    blobs: &dyn BlobReader,
    scratch: &Path,
    format: Format,
    mut w: impl Write,
) -> anyhow::Result<()> {
    match format {
        Format::Legacy => ferry_archive::write_legacy(images, blobs, scratch, &mut w)?,
        _ => Plan::new(images).write_tar(blobs, &mut w)?,
    }
    w.flush()?;
    Ok(())
}

/// The temporary name an output is built under, beside it so the rename is atomic.
fn temp_name(path: &Path) -> PathBuf {
    temp_name_for(path, std::process::id())
}

fn temp_name_for(path: &Path, pid: u32) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "output".into());
    path.with_file_name(format!(".{name}.ferry-tmp-{pid}"))
}

/// Remove what a killed earlier run (SIGKILL, power loss) left under this output's temporary
/// name. Only names of processes that no longer exist (or of an earlier holder of this
/// process's pid) are touched, so a concurrent pull to the same output keeps its file.
fn remove_stale_temps(path: &Path) {
    let Some(dir) = path.parent().map(|d| {
        if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        }
    }) else {
        return;
    };
    let Some(prefix) = temp_name_for(path, 0)
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches('0').to_string())
    else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // Our own pid can only be a dead process's that had it before us: this runs before
        // this process creates its temporary output.
        if pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists() {
            let p = entry.path();
            let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
        }
    }
}
