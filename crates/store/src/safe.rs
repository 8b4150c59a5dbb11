//! Opening cache entries without trusting what else may be on the disk: no symbolic link is
//! followed, nothing but a regular file (or, for the cache's own directories, a real
//! directory) owned by this user is accepted. A cache is written by one user; an entry that
//! is a link or belongs to someone else was planted, and following it would let another user
//! choose which file ferry truncates, overwrites or copies into an archive.

use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::StoreError;

/// The effective uid: the owner of every file this process creates.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn refuse(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Unsafe {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Refuse anything but a regular file owned by this user.
pub(crate) fn check_file(path: &Path, m: &Metadata) -> Result<(), StoreError> {
    if m.file_type().is_symlink() {
        return Err(refuse(path, "it is a symbolic link"));
    }
    if !m.is_file() {
        return Err(refuse(path, "it is not a regular file"));
    }
    check_owner(path, m)
}

fn check_owner(path: &Path, m: &Metadata) -> Result<(), StoreError> {
    let me = euid();
    if m.uid() != me {
        return Err(refuse(
            path,
            format!(
                "it is owned by uid {}, not by this user (uid {me})",
                m.uid()
            ),
        ));
    }
    Ok(())
}

/// The metadata of a cache entry without following a link; `None` when it does not exist.
pub(crate) fn entry(path: &Path) -> Result<Option<Metadata>, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) => {
            check_file(path, &m)?;
            Ok(Some(m))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path)(e)),
    }
}

/// Open options that never follow a final symbolic link (`ELOOP` instead) and never block
/// on a FIFO planted in place of a file (`O_NONBLOCK` changes nothing for regular files).
pub(crate) fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32);
    o
}

/// Open `path` with `opts` (from [`options`]) and check what was opened.
pub(crate) fn open(path: &Path, opts: &OpenOptions) -> Result<File, StoreError> {
    let f = opts.open(path).map_err(|e| {
        if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
            refuse(path, "it is a symbolic link")
        } else {
            StoreError::io(path)(e)
        }
    })?;
    let m = f.metadata().map_err(StoreError::io(path))?;
    check_file(path, &m)?;
    Ok(f)
}

/// Open an existing cache file for reading.
pub(crate) fn open_read(path: &Path) -> Result<File, StoreError> {
    open(path, options().read(true))
}

/// Create the cache directory `path` (mode 0700) if needed and check it: a real directory,
/// not a link to one, owned by this user. `own` directories (ferry's `blobs/` and `ingest/`)
/// that others may write to are closed to them; the root is the user's choice and kept as is
/// (it may be a link, e.g. to another disk).
pub(crate) fn ensure_dir(path: &Path, own: bool) -> Result<(), StoreError> {
    let created = DirBuilder::new().recursive(!own).mode(0o700).create(path);
    match created {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::io(path)(e)),
    }
    let m = if own {
        fs::symlink_metadata(path)
    } else {
        fs::metadata(path)
    }
    .map_err(StoreError::io(path))?;
    if m.file_type().is_symlink() {
        return Err(refuse(
            path,
            "it is a symbolic link, not the cache's own directory",
        ));
    }
    if !m.is_dir() {
        return Err(refuse(path, "it is not a directory"));
    }
    check_owner(path, &m)?;
    if own && m.mode() & 0o022 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(StoreError::io(path))?;
    }
    Ok(())
}

/// Whether `f` (an open file) is still the file at `path`: before removing a bad blob, so a
/// good copy another process put there meanwhile is not removed with it.
pub(crate) fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
