//! Where a pull writes, checked before anything is fetched: the directory exists and is
//! writable, the name (and the hidden temporary name it is built under) fits the file
//! system, an existing output is replaced only with `--force`, and — once the manifests are
//! known — the image fits in the free space. Also the temporary names themselves, and what
//! dead runs left under them.

use std::ffi::OsStr;
use std::fs::{File, TryLockError};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use indicatif::HumanBytes;
use rustix::fs::{Access, RenameFlags};

use ferry_core::{Digest, Reference};
use ferry_store::Store;

use crate::cli::{Format, PullArgs};
use crate::exit;

pub(crate) enum Output {
    Stdout,
    Path(PathBuf),
}

/// What a temporary name adds to the output's: `.` before, `.ferry-tmp-<pid>` after (a pid
/// has at most 10 digits).
const TEMP_OVERHEAD: usize = 1 + ".ferry-tmp-".len() + 10;
const TEMP_MARK: &str = ".ferry-tmp-";
/// Where `--force` keeps an OCI layout it replaces until the new one is complete.
const OLD_MARK: &str = ".ferry-old-";
/// The longest file name when the file system does not say.
const DEFAULT_NAME_MAX: usize = 255;

/// Decide and check the output for `args`: every problem with the location is found here,
/// before a byte is fetched, and named by the user's path.
pub(crate) fn output_for(args: &PullArgs, refs: &[Reference]) -> anyhow::Result<Output> {
    let out = match &args.output {
        Some(p) if p.as_os_str() == "-" => {
            if args.format == Format::Oci {
                return Err(exit::usage(
                    "--format oci writes a directory and cannot go to standard output",
                    Some("use the default archive format with -o -"),
                ));
            }
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
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
            let ext = if args.format == Format::Oci {
                ""
            } else {
                ".tar"
            };
            let max = name_max(Path::new(".")).saturating_sub(TEMP_OVERHEAD);
            PathBuf::from(default_name(&refs[0].file_stem(), ext, max))
        }
    };
    check_location(&out, args.format, args.force)?;
    Ok(Output::Path(out))
}

/// `stem + ext`, or, when that is longer than `max` bytes, a readable prefix of `stem` and a
/// short hash of all of it (so two long references still get different names).
pub(crate) fn default_name(stem: &str, ext: &str, max: usize) -> String {
    let full = format!("{stem}{ext}");
    if full.len() <= max {
        return full;
    }
    let hash = Digest::sha256_of(stem.as_bytes()).hex()[..12].to_string();
    let mut keep = max.saturating_sub(ext.len() + 1 + hash.len());
    while !stem.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}-{hash}{ext}", &stem[..keep])
}

fn check_location(out: &Path, format: Format, force: bool) -> anyhow::Result<()> {
    let shown = out.display();
    let Some(name) = out.file_name() else {
        return Err(exit::usage(
            format!("{shown} does not name a file"),
            Some("give -o a file name, e.g. -o image.tar"),
        ));
    };
    let dir = parent_dir(out);
    let refuse = |why: String, hint: &str| {
        Err(exit::usage(
            format!("cannot write {shown}: {why}"),
            Some(hint),
        ))
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return refuse(
                format!("{} is not a directory", dir.display()),
                "choose another -o",
            )
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return refuse(
                format!("the directory {} does not exist", dir.display()),
                "create it first, or choose another -o",
            )
        }
        Err(e) => return refuse(format!("{}: {e}", dir.display()), "choose another -o"),
    }
    if let Err(e) = rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK) {
        let why = if e == rustix::io::Errno::ROFS {
            "is on a read-only file system"
        } else {
            "is not writable"
        };
        return refuse(
            format!("the directory {} {why}", dir.display()),
            "choose another -o",
        );
    }
    let max = name_max(dir);
    if name.len() + TEMP_OVERHEAD > max {
        return refuse(
            format!(
                "its name is {} bytes long; this file system allows {max}, and ferry needs {TEMP_OVERHEAD} of them for the temporary name it writes under",
                name.len()
            ),
            "choose a shorter -o",
        );
    }
    let Ok(existing) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    if format == Format::Oci {
        if !existing.is_dir() || !out.join("oci-layout").is_file() {
            return refuse(
                "it exists and is not an OCI layout; --format oci writes a new directory".into(),
                "remove it or choose another -o",
            );
        }
        if !force {
            return refuse(
                "an OCI layout is already there".into(),
                "add --force to replace it, or choose another -o",
            );
        }
    } else if existing.is_dir() {
        return Err(exit::usage(
            format!("{shown} is a directory; the archive needs a file name"),
            None,
        ));
    } else if !force {
        return refuse(
            "the file already exists".into(),
            "add --force to replace it, or choose another -o",
        );
    }
    Ok(())
}

/// The directory an output goes into (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn name_max(dir: &Path) -> usize {
    rustix::fs::statvfs(dir)
        .ok()
        .and_then(|s| usize::try_from(s.f_namemax).ok())
        .filter(|n| *n > TEMP_OVERHEAD)
        .unwrap_or(DEFAULT_NAME_MAX)
}

/// Refuse an image that cannot fit, before the output is created: its declared size
/// (`archive_len`) against `--max-size` when given, otherwise against the free space of the
/// output's file system and of the cache's (the blobs it lacks), counted together when they
/// are the same file system.
pub(crate) fn check_space(
    archive_len: Option<u64>,
    missing: u64,
    output: &Output,
    store: &Store,
    max_size: Option<u64>,
) -> anyhow::Result<()> {
    let too_big = |msg: String, hint: &str| -> anyhow::Result<()> {
        Err(exit::UserError {
            message: msg,
            hint: Some(hint.into()),
            code: exit::GENERAL,
        }
        .into())
    };
    let Some(len) = archive_len else {
        return too_big(
            "the image's manifests declare sizes that add up to more than 16 EiB".into(),
            "the registry serves a broken or hostile manifest",
        );
    };
    if let Some(limit) = max_size {
        if len > limit {
            return too_big(
                format!(
                    "the image declares {}, more than --max-size {}",
                    HumanBytes(len),
                    HumanBytes(limit)
                ),
                "raise --max-size if the image really is that large",
            );
        }
        return Ok(());
    }
    let cache = store.root();
    let mut needs = vec![(
        cache.to_path_buf(),
        missing,
        format!("the cache {}", cache.display()),
    )];
    if let Output::Path(p) = output {
        let dir = parent_dir(p);
        if same_fs(cache, dir) {
            // One file system holds both: it must hold the sum.
            needs = vec![(
                dir.to_path_buf(),
                missing.saturating_add(len),
                format!("{} (for the output and the cache)", dir.display()),
            )];
        } else {
            needs.push((dir.to_path_buf(), len, dir.display().to_string()));
        }
    }
    for (dir, need, what) in needs {
        let Some(free) = free_space(&dir) else {
            continue;
        };
        if need > free {
            return too_big(
                format!(
                    "the image needs {} on the file system of {what}, which has {} free",
                    HumanBytes(need),
                    HumanBytes(free)
                ),
                "free some space, write elsewhere (-o, --cache-dir), or give --max-size to skip this check",
            );
        }
    }
    Ok(())
}

fn same_fs(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => false,
    }
}

/// Bytes an unprivileged writer may still use on `dir`'s file system.
fn free_space(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Whether `e` is a full disk, and then the one sentence that says which: the output's file
/// system (`output`, `None` for standard output) or the cache's. Call it before removing a
/// failed output, whose space would hide which file system filled up.
pub(crate) fn disk_full(
    e: &anyhow::Error,
    output: Option<&Path>,
    cache: &Path,
) -> Option<anyhow::Error> {
    let full = e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|io| {
            io.kind() == io::ErrorKind::StorageFull
                || io.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
        })
    });
    if !full {
        return None;
    }
    // The full file system is the one with (next to) nothing left.
    let nearly_empty = |dir: &Path| free_space(dir).is_some_and(|f| f < 1 << 20);
    let (message, hint) = match output {
        Some(p) if nearly_empty(parent_dir(p)) || !nearly_empty(cache) => (
            format!("cannot write {}: the disk is full", p.display()),
            "free some space or choose another -o; what was downloaded is kept in the cache, run the same command again to resume",
        ),
        None if !nearly_empty(cache) => (
            "cannot write the archive to standard output: no space left on device".to_string(),
            "free some space where the output goes; what was downloaded is kept in the cache",
        ),
        _ => (
            format!("cannot write to the cache {}: the disk is full", cache.display()),
            "free some space, or use a cache elsewhere with --cache-dir",
        ),
    };
    Some(
        exit::UserError {
            message,
            hint: Some(hint.into()),
            code: exit::GENERAL,
        }
        .into(),
    )
}

/// Rename the finished `tmp` to `path`. Without `force` an output that appeared while the
/// image was pulled (another run's, say) is kept, and this fails: the check before the
/// pull is not enough on its own.
pub(crate) fn put_in_place(tmp: &Path, path: &Path, force: bool) -> anyhow::Result<()> {
    let moving = || format!("moving the finished archive to {}", path.display());
    if force {
        return std::fs::rename(tmp, path).map_err(|e| anyhow::Error::new(e).context(moving()));
    }
    let cwd = rustix::fs::CWD;
    match rustix::fs::renameat_with(cwd, tmp, cwd, path, RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::EXIST) => {}
        // A file system without RENAME_NOREPLACE: check, then rename (a small window).
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) if !path.exists() => {
            return std::fs::rename(tmp, path).map_err(|e| anyhow::Error::new(e).context(moving()));
        }
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
        Err(e) => return Err(anyhow::Error::new(io::Error::from(e)).context(moving())),
    }
    Err(exit::usage(
        format!(
            "cannot write {}: it was created by something else while the image was pulled",
            path.display()
        ),
        Some("add --force to replace it, or choose another -o"),
    ))
}

/// The temporary name an output is built under, beside it so the rename is atomic.
pub(crate) fn temp_name(path: &Path) -> PathBuf {
    marked_name(path, TEMP_MARK, std::process::id())
}

/// Where `--force` moves an OCI layout aside while its replacement is written.
pub(crate) fn old_name(path: &Path) -> PathBuf {
    marked_name(path, OLD_MARK, std::process::id())
}

fn marked_name(path: &Path, mark: &str, pid: u32) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "output".into());
    path.with_file_name(format!(".{name}{mark}{pid}"))
}

/// Create the temporary file `tmp` for writing: new (never an existing file, never through
/// a symlink planted at its predictable name) and locked (an exclusive `flock`) for as long as
/// the returned file is open.
pub(crate) fn create_temp_file(tmp: &Path) -> io::Result<File> {
    let f = File::options()
        .write(true)
        .create_new(true)
        .custom_flags(NOFOLLOW)
        .open(tmp)
        .map_err(|e| taken(tmp, e))?;
    hold(f, tmp)
}

/// Lock the temporary output `tmp` this run has just created (a file or a directory), so a
/// concurrent run's [`remove_stale_temps`] leaves it alone; held while the returned file is
/// open. An exclusive `flock` on the open file is what tells a live writer from a dead one:
/// the kernel drops it when its holder dies, whichever PID namespace it ran in.
#[cfg(test)]
pub(crate) fn lock_temp(tmp: &Path) -> io::Result<File> {
    let f = File::options()
        .read(true)
        .custom_flags(NOFOLLOW)
        .open(tmp)?;
    hold(f, tmp)
}

/// Lock the existing OCI layout `path` before `--force` moves it aside, so no other run's
/// cleanup puts it back while this one replaces it; held while the returned file is open.
pub(crate) fn lock_old_layout(path: &Path) -> io::Result<File> {
    let f = File::open(path)?;
    match f.try_lock() {
        Ok(()) | Err(TryLockError::Error(_)) => Ok(f),
        Err(TryLockError::WouldBlock) => Err(io::Error::other(format!(
            "another ferry run is replacing {}",
            path.display()
        ))),
    }
}

const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

fn hold(f: File, tmp: &Path) -> io::Result<File> {
    let busy = || {
        io::Error::other(format!(
            "another ferry run removed or holds {}, the temporary name this run writes under",
            tmp.display()
        ))
    };
    match f.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(busy()),
        // A file system without locks (some network and FUSE ones): written unlocked, and
        // cleanup there asks whether the PID lives instead.
        Err(TryLockError::Error(_)) => {}
    }
    // Removed by another run's cleanup between its creation and the lock: not ours to fill.
    if f.metadata()?.nlink() == 0 {
        return Err(busy());
    }
    Ok(f)
}

pub(crate) fn taken(tmp: &Path, e: io::Error) -> io::Error {
    if e.kind() != io::ErrorKind::AlreadyExists {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!(
            "its temporary name {} is already taken (by a pull running in another container, or by something planted there); remove it if no pull is running",
            tmp.display()
        ),
    )
}

/// Clean up after killed earlier runs (SIGKILL, power loss) in `path`'s directory: remove
/// every `.NAME.ferry-tmp-PID`, and put back every OCI layout a `--force` left aside as
/// `.NAME.ferry-old-PID` (or remove it if NAME was replaced after all). Only names whose
/// lock nobody holds are touched: a concurrent pull keeps its files, even one in another
/// PID namespace (a shared output directory in containers) or one that reuses a dead
/// run's PID. A symlink at such a name is removed, never followed.
pub(crate) fn remove_stale_temps(path: &Path) {
    let dir = parent_dir(path);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some((base, mark, pid)) = marked_entry(&file_name) else {
            continue;
        };
        let p = entry.path();
        // Held until it is gone or back in place.
        let Some(_lock) = abandoned(&p, pid) else {
            continue;
        };
        if mark == OLD_MARK {
            let original = dir.join(base);
            if !original.exists() && std::fs::rename(&p, &original).is_ok() {
                continue;
            }
        }
        let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
    }
}

/// `Some` when nobody holds `p`'s lock, with the lock now taken (none for a symlink, which
/// no run makes); `None` while a live run holds it, or when it cannot be told. Where the
/// file system has no locks, `pid` is asked instead: gone from `/proc`, or this process's
/// own (which has made no such name yet), means abandoned.
fn abandoned(p: &Path, pid: u32) -> Option<Option<File>> {
    if std::fs::symlink_metadata(p).ok()?.file_type().is_symlink() {
        return Some(None);
    }
    let f = File::options()
        .read(true)
        .custom_flags(NOFOLLOW)
        .open(p)
        .ok()?;
    match f.try_lock() {
        Ok(()) => Some(Some(f)),
        Err(TryLockError::WouldBlock) => None,
        Err(TryLockError::Error(_)) => {
            let dead = pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists();
            dead.then_some(None)
        }
    }
}

/// `(NAME, mark, PID)` for `.NAME<mark>PID`.
fn marked_entry(file_name: &OsStr) -> Option<(&OsStr, &'static str, u32)> {
    let name = std::str::from_utf8(file_name.as_bytes()).ok()?;
    let rest = name.strip_prefix('.')?;
    for mark in [TEMP_MARK, OLD_MARK] {
        let Some((base, pid)) = rest.rsplit_once(mark) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if base.is_empty() {
            continue;
        }
        return Some((OsStr::new(&name[1..1 + base.len()]), mark, pid));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_default_names_keep_a_prefix_and_a_hash() {
        let stem = format!("registry.example_{}_v1", "a".repeat(300));
        let name = default_name(&stem, ".tar", 255 - TEMP_OVERHEAD);
        assert_eq!(name.len(), 255 - TEMP_OVERHEAD);
        assert!(name.starts_with("registry.example_aaaa"), "{name}");
        assert!(name.ends_with(".tar"));
        let other = default_name(&format!("{stem}x"), ".tar", 255 - TEMP_OVERHEAD);
        assert_ne!(name, other, "two long references got one name");
        assert_eq!(default_name("alpine_3.20", ".tar", 233), "alpine_3.20.tar");
        // Multi-byte characters are never cut in half.
        let wide = default_name(&"é".repeat(200), "", 101);
        assert!(wide.len() <= 101, "{wide}");
    }

    #[test]
    fn marked_names_are_recognised() {
        let n = |s: &str| marked_entry(OsStr::new(s)).map(|(b, m, _)| (b.to_owned(), m));
        assert_eq!(n(".a.tar.ferry-tmp-12"), Some(("a.tar".into(), TEMP_MARK)));
        assert_eq!(n(".lay.ferry-old-7"), Some(("lay".into(), OLD_MARK)));
        assert_eq!(n("a.ferry-tmp-12"), None);
        assert_eq!(n(".a.ferry-tmp-12x"), None);
        assert_eq!(n("..ferry-tmp-12"), None);
    }

    #[test]
    fn a_locked_temp_survives_cleanup_and_an_unlocked_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img.tar");
        // Another run's, whatever its PID says: its lock is held (here by another open file
        // description, as another process would).
        let busy = dir.path().join(".busy.tar.ferry-tmp-1");
        let held = create_temp_file(&busy).unwrap();
        let busy_dir = dir.path().join(".lay.ferry-tmp-1");
        std::fs::create_dir(&busy_dir).unwrap();
        let held_dir = lock_temp(&busy_dir).unwrap();
        // A dead run's: its PID may even be a live process now (PID reuse).
        let dead = dir
            .path()
            .join(format!(".dead.tar.ferry-tmp-{}", std::process::id()));
        std::fs::write(&dead, b"x").unwrap();
        let dead_dir = dir.path().join(".deadlay.ferry-tmp-1");
        std::fs::create_dir_all(dead_dir.join("blobs")).unwrap();
        remove_stale_temps(&out);
        assert!(
            busy.exists() && busy_dir.exists(),
            "a held temp was removed"
        );
        assert!(
            !dead.exists() && !dead_dir.exists(),
            "a dead run's temp was kept"
        );
        drop((held, held_dir));
        remove_stale_temps(&out);
        assert!(!busy.exists() && !busy_dir.exists());
    }

    #[test]
    fn a_symlink_at_the_temp_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let tmp = temp_name(&dir.path().join("img.tar"));
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        let e = create_temp_file(&tmp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("is already taken"), "{e}");
        // The next run's cleanup removes the link, not what it points to.
        remove_stale_temps(&dir.path().join("img.tar"));
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "the link was kept"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        let f = create_temp_file(&tmp).unwrap();
        drop(f);
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }
}
