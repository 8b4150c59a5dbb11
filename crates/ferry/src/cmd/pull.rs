//! `ferry pull`: registry → cache → archive.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use ferry_archive::BlobReader;
use ferry_archive::{ArchiveImage, Plan};
use ferry_copy::{Arrivals, ArrivingReader, DirectArchive, PullOptions};
use ferry_core::{Platform, Reference};
use ferry_store::Store;

use super::output::{self, temp_name, Output};
use super::pull_server;
use crate::cli::{Format, PullArgs};
use crate::exit;
use crate::progress::Reporter;

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
    let output = output::output_for(&args, &refs)?;
    if let Output::Path(p) = &output {
        output::remove_stale_temps(p);
    }
    let cache = match &args.cache_dir {
        Some(d) => d.clone(),
        None => dirs::cache_dir().map(|d| d.join("ferry")).ok_or_else(|| {
            exit::usage(
                "cannot tell where the cache directory should be",
                Some("give one with --cache-dir DIR"),
            )
        })?,
    };
    let route = pull_server::route(&args).await?;
    if let pull_server::Route::ServerArchive(server) = &route {
        let [reference] = refs.as_slice() else {
            return Err(exit::usage(
                "this server has no registry mirror, and its archives hold one image each",
                Some("pull the images in separate runs"),
            ));
        };
        return pull_server::pull_archive(&args, server, reference, &platform, output, &cache)
            .await;
    }
    let store =
        Store::open(&cache).with_context(|| format!("opening the cache at {}", cache.display()))?;
    let token = args.mirror.server_token.clone();
    let client = super::client_with(&args.net, &registries, args.quiet, |o| {
        pull_server::apply(&route, token.as_deref(), o)
    })?;
    let opts = PullOptions {
        platform,
        platform_explicit: explicit,
        all_platforms: args.all_platforms,
        jobs: args.jobs as usize,
        keep_artifacts: args.format == Format::Oci,
    };
    let reporter = Arc::new(Reporter::new(args.quiet));
    let mut distinct = refs.iter().map(ToString::to_string).collect::<Vec<_>>();
    distinct.sort();
    distinct.dedup();
    reporter.expect_images(distinct.len());
    let images = ferry_copy::resolve_all(&client, &store, &refs, &opts, reporter.as_ref())
        .await
        .map_err(|e| pull_server::explain(&route, e.into()))?;
    // What the archive records; `images` keeps the references the blobs are fetched from.
    let planned = match (&args.record_as, images.as_slice()) {
        (Some(name), [image]) => vec![ArchiveImage {
            name: name.clone(),
            ..image.clone()
        }],
        _ => images.clone(),
    };
    // The default archive's length stands for every format: the legacy one is larger (its
    // layers are uncompressed), but by an amount nobody knows before decompressing.
    output::check_space(
        Plan::new(&planned).checked_len(),
        missing_bytes(&store, &images),
        &output,
        &store,
        args.max_size,
    )?;
    if let (Output::Path(path), Format::Archive) = (&output, args.format) {
        let force = args.force;
        write_direct(
            &client,
            &store,
            (&images, &planned),
            opts.jobs,
            reporter.clone(),
            path,
            force,
        )
        .await?;
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
    let (format, scratch, plan_images) = (args.format, store.root().join("ingest"), planned);
    let force = args.force;
    let cache = store.root().to_path_buf();
    let out_path = match &output {
        Output::Path(p) => Some(p.clone()),
        Output::Stdout => None,
    };
    let to_stdout = out_path.is_none();
    let mut writer = tokio::task::spawn_blocking(move || {
        write_output(
            &plan_images,
            &reader,
            &scratch,
            format,
            &output,
            &cache,
            force,
        )
    });
    let fetch =
        ferry_copy::fetch_blobs(&client, &store, &images, opts.jobs, arrivals.clone(), None);
    tokio::pin!(fetch);
    let written = tokio::select! {
        // A finished writer wins over a reader that left after the last byte: the archive
        // is complete, and that is a success.
        biased;
        w = &mut writer => {
            let w = w.context("the writer task failed")?;
            if w.is_err() {
                // The writer failed (standard output closed, disk full): returning drops
                // the downloads, which cancels the ones in flight. Finishing them would
                // only fill the cache with an image nobody receives.
                return w.map(|_| ());
            }
            fetch.await?;
            w?
        }
        f = &mut fetch => {
            if let Err(e) = f {
                arrivals.fail();
                let _ = writer.await;
                let e = e.into();
                return Err(output::disk_full(&e, out_path.as_deref(), store.root()).unwrap_or(e));
            }
            writer.await.context("the writer task failed")??
        }
        () = stdout_reader_gone(), if to_stdout => {
            // The writer learns of it only on its next write, which may wait long for a slow
            // blob: stop now, dropping the downloads, and let the waiting writer give up.
            arrivals.fail();
            return Err(exit::StdoutClosed.into());
        }
    };
    reporter.finish_downloads();
    if let Some(path) = written {
        reporter.line(&format!("wrote {}", path.display()));
    }
    Ok(())
}

/// Resolves once the reader of standard output has gone away (a pipe's read end closed, a
/// socket hung up). Checked every 150 ms: a pull into `| head -c 100` stops at once even
/// while the writer waits for a slow blob and writes nothing.
async fn stdout_reader_gone() {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(150));
    loop {
        tick.tick().await;
        if stdout_hung_up() {
            return;
        }
    }
}

/// Whether standard output reports an error or hang-up: what a pipe without readers does.
/// A file or /dev/null never does.
fn stdout_hung_up() -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let out = std::io::stdout();
    let mut fds = [PollFd::new(&out, PollFlags::empty())];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0)
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

/// The default archive to a file: laid out in advance, each download written straight into
/// its place (and into the cache), the rest copied from the cache, then renamed into place.
async fn write_direct(
    client: &ferry_registry::Client,
    store: &Store,
    (images, planned): (&[ArchiveImage], &[ArchiveImage]),
    jobs: usize,
    progress: Arc<Reporter>,
    path: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let tmp = temp_name(path);
    let (plan, t) = (Plan::new(planned), tmp.clone());
    // Locked from its creation until it is in place (see `DirectArchive::create`). A name
    // already taken is not this run's: it is neither tracked nor removed.
    let out = tokio::task::spawn_blocking(move || DirectArchive::create(&t, &plan))
        .await
        .context("the writer task failed")?
        .map_err(|e| match e {
            // Named by the user's path, not the hidden temporary one.
            ferry_archive::ArchiveError::Io { source, .. } => {
                anyhow::Error::new(output::taken(&tmp, source))
                    .context(format!("creating {}", path.display()))
            }
            other => other.into(),
        })
        .map_err(|e| output::disk_full(&e, Some(path), store.root()).unwrap_or(e))?;
    super::track_temp(tmp.clone());
    let result = async {
        ferry_copy::fetch_blobs(client, store, images, jobs, progress, Some(out.clone())).await?;
        let (o, s) = (out.clone(), store.clone());
        tokio::task::spawn_blocking(move || o.fill_rest(&s))
            .await
            .context("the writer task failed")?
            .with_context(|| format!("writing {}", path.display()))?;
        output::put_in_place(&tmp, path, force)
    }
    .await;
    let result = result.map_err(|e| output::disk_full(&e, Some(path), store.root()).unwrap_or(e));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    super::untrack_temp(&tmp);
    // The lock goes with the last handle, once the archive has left its temporary name.
    drop(out);
    result
}

/// Bytes of the images' blobs the cache does not hold yet.
fn missing_bytes(store: &Store, images: &[ArchiveImage]) -> u64 {
    let mut seen = HashSet::new();
    images
        .iter()
        .flat_map(|img| {
            img.manifests.iter().chain(
                img.images
                    .iter()
                    .flat_map(|p| std::iter::once(&p.config).chain(&p.layers)),
            )
        })
        .filter(|d| seen.insert(&d.digest) && !store.contains(&d.digest))
        .fold(0u64, |sum, d| sum.saturating_add(d.size))
}

/// Write the output; `Some(path)` when a file or directory was made. Errors that mean the
/// output cannot take more (standard output closed, disk full) come back as the one
/// sentence that says so.
pub(super) fn write_output(
    images: &[ArchiveImage],
    blobs: &dyn BlobReader,
    scratch: &Path,
    format: Format,
    output: &Output,
    cache: &Path,
    force: bool,
) -> anyhow::Result<Option<PathBuf>> {
    match output {
        Output::Stdout => {
            let stdout = std::io::stdout();
            let w = BufWriter::with_capacity(1 << 20, stdout.lock());
            write_tar(images, blobs, scratch, format, w).map_err(|e| {
                // Only standard output is a pipe here: blobs come from files.
                let closed = e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                });
                if closed {
                    return exit::StdoutClosed.into();
                }
                output::disk_full(&e, None, cache).unwrap_or(e)
            })?;
            Ok(None)
        }
        Output::Path(path) if format == Format::Oci => {
            write_layout(images, blobs, path)
                .map_err(|e| output::disk_full(&e, Some(path), cache).unwrap_or(e))?;
            Ok(Some(path.clone()))
        }
        Output::Path(path) => {
            let tmp = temp_name(path);
            // New, never through a link planted at the predictable name, and locked until it
            // is in place. A name already taken is not this run's: neither tracked nor removed.
            let f = output::create_temp_file(&tmp)
                .with_context(|| format!("creating {}", path.display()))
                .map_err(|e| output::disk_full(&e, Some(path), cache).unwrap_or(e))?;
            super::track_temp(tmp.clone());
            let result = (|| -> anyhow::Result<()> {
                let mut w = BufWriter::with_capacity(1 << 20, f);
                write_tar(images, blobs, scratch, format, &mut w)?;
                // Complete before it is renamed into place; not fsynced, as docker save and
                // skopeo do not: the cost is a second write of the whole image to disk.
                // Kept open, so locked, until it has left the temporary name.
                let _held = w
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("writing {}", path.display()))?;
                output::put_in_place(&tmp, path, force)
            })();
            let result = result.map_err(|e| output::disk_full(&e, Some(path), cache).unwrap_or(e));
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            super::untrack_temp(&tmp);
            result?;
            Ok(Some(path.clone()))
        }
    }
}

/// An OCI layout directory. An existing one (`--force` was checked) is moved aside until
/// the new one is in place, and put back if the pull fails.
fn write_layout(
    images: &[ArchiveImage],
    blobs: &dyn BlobReader,
    path: &Path,
) -> anyhow::Result<()> {
    // Locked before it takes the aside name, and until it is gone or back: another run's
    // cleanup puts back only an aside nobody holds.
    let mut _held = None;
    let aside = if path.exists() {
        _held = Some(
            output::lock_old_layout(path)
                .with_context(|| format!("locking the old {} to move it aside", path.display()))?,
        );
        let old = output::old_name(path);
        std::fs::rename(path, &old)
            .with_context(|| format!("moving the old {} aside", path.display()))?;
        super::track_aside(old.clone(), path.to_path_buf());
        Some(old)
    } else {
        None
    };
    let tmp = temp_name(path);
    super::track_temp(tmp.clone());
    let r = Plan::new(images).write_dir(blobs, &tmp, path);
    super::untrack_temp(&tmp);
    if let Some(old) = aside {
        if r.is_ok() {
            let _ = std::fs::remove_dir_all(&old);
        } else {
            let _ = std::fs::rename(&old, path);
        }
        super::untrack_aside(&old);
    }
    Ok(r?)
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
