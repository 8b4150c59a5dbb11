//! What uncompressed layers compressed to: a small file per layer under the cache, so a
//! second push of the same archive asks the registry for the compressed digest (a HEAD)
//! instead of compressing the layer again to learn it. The compression is deterministic
//! (see [`crate::SendBody`]), so the answer holds until ferry's gzip settings change; the
//! directory's name carries them.

use std::io;
use std::path::{Path, PathBuf};

use ferry_core::Digest;

/// The diff_id → compressed digest memo; see the module documentation.
#[derive(Debug, Clone)]
pub struct CompressedMemo {
    dir: PathBuf,
}

impl CompressedMemo {
    /// The memo kept under `root` (the store's root).
    pub fn under(root: &Path) -> CompressedMemo {
        CompressedMemo {
            dir: root.join("compressed").join(crate::body::GZIP_SETTINGS),
        }
    }

    fn path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(format!(
            "{}-{}",
            diff_id.algorithm().as_str(),
            diff_id.hex()
        ))
    }

    /// The digest and size `diff_id` compressed to, if remembered. A damaged entry is as
    /// good as none: the registry is asked for that digest, and it can only say no.
    pub fn get(&self, diff_id: &Digest) -> Option<(Digest, u64)> {
        let text = std::fs::read_to_string(self.path(diff_id)).ok()?;
        let (digest, size) = text.trim().split_once(' ')?;
        Some((digest.parse().ok()?, size.parse().ok()?))
    }

    /// Remember that `diff_id` compressed to `digest` of `size` bytes (written atomically).
    pub fn put(&self, diff_id: &Digest, digest: &Digest, size: u64) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::fs::write(tmp.path(), format!("{digest} {size}\n"))?;
        tmp.persist(self.path(diff_id)).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_remembers_what_a_layer_compressed_to() {
        let dir = tempfile::tempdir().unwrap();
        let memo = CompressedMemo::under(dir.path());
        let (diff, gz) = (Digest::sha256_of(b"tar"), Digest::sha256_of(b"gz"));
        assert_eq!(memo.get(&diff), None);
        memo.put(&diff, &gz, 42).unwrap();
        assert_eq!(memo.get(&diff), Some((gz, 42)));
    }
}
