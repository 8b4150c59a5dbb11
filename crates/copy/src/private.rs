//! The small files ferry keeps beside the cache (what layers compressed to, where blobs were
//! seen), read and written by the store's rules: directories 0700, a real directory owned
//! by this user, never a symbolic link followed, only a regular file owned by this user
//! read, every write atomic (a temporary file renamed into place). These files steer which
//! blob a manifest names, so one planted by another user must never be believed.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::OFlags;

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Most such a file may hold: each is one line or a few.
const MAX_LEN: u64 = 64 * 1024;

/// Create `dir` (and its parents under the cache root) mode 0700 and check it is a real
/// directory owned by this user.
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = fs::symlink_metadata(dir)?;
    if !m.is_dir() || m.uid() != euid() {
        return Err(io::Error::other(format!(
            "{} is not a directory of this user",
            dir.display()
        )));
    }
    // One of ours that others may write to (made under a permissive umask) is closed to
    // them, as the store does for its own directories.
    if m.mode() & 0o022 != 0 {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The text of `path`, or `None` when it is missing, is not a regular file of this user in a
/// private directory of this user, or is too long.
pub(crate) fn read(path: &Path) -> Option<String> {
    let dir = path.parent()?;
    let dm = fs::symlink_metadata(dir).ok()?;
    if !dm.is_dir() || dm.uid() != euid() || dm.mode() & 0o022 != 0 {
        return None;
    }
    let f = OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .ok()?;
    let m = f.metadata().ok()?;
    if !m.is_file() || m.uid() != euid() || m.len() > MAX_LEN {
        return None;
    }
    let mut text = String::new();
    f.take(MAX_LEN).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Write `text` to `path` atomically, in a private directory.
pub(crate) fn write(path: &Path, text: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    ensure_dir(dir)?;
    // NamedTempFile creates its file 0600 with O_EXCL; the rename replaces a link planted at
    // `path` instead of writing through it.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_link_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("kept");
        ensure_dir(&d).unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "sha256:forged 1\n").unwrap();
        std::os::unix::fs::symlink(&target, d.join("entry")).unwrap();
        assert_eq!(read(&d.join("entry")), None);
        write(&d.join("entry"), "real\n").unwrap();
        assert_eq!(read(&d.join("entry")).as_deref(), Some("real\n"));
        assert_eq!(fs::read_to_string(&target).unwrap(), "sha256:forged 1\n");
    }

    #[test]
    fn a_directory_others_may_write_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("kept");
        write(&d.join("entry"), "x\n").unwrap();
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(read(&d.join("entry")), None);
        // Ours, so closed again by the next write.
        write(&d.join("entry"), "y\n").unwrap();
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        assert_eq!(read(&d.join("entry")).as_deref(), Some("y\n"));
        // A link in place of the directory is refused.
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();
        assert!(write(&linked.join("entry"), "z\n").is_err());
        assert!(!elsewhere.join("entry").exists());
    }
}
