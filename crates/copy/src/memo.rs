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

    /// The digest and size `diff_id` compressed to, if remembered. An entry is written only
    /// after a pass that checked the layer's content against `diff_id` and the registry
    /// accepted the compressed digest, and it is read only from a private directory of this
    /// user (see `crate::private`): a damaged entry names a digest the registry does not
    /// hold (then the layer is compressed and sent as if there were none); a forged one
    /// would take write access to the user's cache, which the blobs there already trust.
    pub fn get(&self, diff_id: &Digest) -> Option<(Digest, u64)> {
        let text = crate::private::read(&self.path(diff_id))?;
        let (digest, size) = text.trim().split_once(' ')?;
        Some((digest.parse().ok()?, size.parse().ok()?))
    }

    /// Remember that `diff_id` compressed to `digest` of `size` bytes (written atomically,
    /// in a directory of mode 0700).
    pub fn put(&self, diff_id: &Digest, digest: &Digest, size: u64) -> io::Result<()> {
        crate::private::write(&self.path(diff_id), &format!("{digest} {size}\n"))
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
