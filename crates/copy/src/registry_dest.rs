//! A repository of a registry as a destination. Blobs are checked with a HEAD, mounted from
//! another repository of the same registry that this run knows holds them, else uploaded
//! (monolithic or chunked, resumed after a cut: the registry client's work).

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use ferry_core::Digest;
use ferry_registry::{ByteStream, Client, Pushed, UploadBody, UploadOptions};

use crate::seam::ImageDestination;
use crate::{CopyError, SendBody};

/// Which repositories of one registry hold which blobs, as far as ferry knows: filled by
/// every destination that stores or finds a blob, read to choose where to mount from. With
/// a directory (under the cache), what earlier runs learnt is kept too, as containers/image
/// keeps blob locations: a push to a second repository then mounts what the first received.
#[derive(Debug, Default, Clone)]
pub struct MountHints {
    held: Arc<Mutex<HashMap<Digest, Vec<String>>>>,
    dir: Option<std::path::PathBuf>,
}

impl MountHints {
    /// Hints kept for registry `host` under `root` (the cache's root) as well as in memory.
    pub fn kept_under(root: &std::path::Path, host: &str) -> MountHints {
        // A host name with a port is a safe file name once the colon is replaced.
        let name: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        MountHints {
            held: Arc::default(),
            dir: Some(root.join("locations").join(name)),
        }
    }

    fn file(&self, digest: &Digest) -> Option<std::path::PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{}-{}", digest.algorithm().as_str(), digest.hex())))
    }

    /// Note that `repo` holds `digest`.
    pub fn note(&self, digest: &Digest, repo: &str) {
        if let Ok(mut h) = self.held.lock() {
            let repos = h.entry(digest.clone()).or_default();
            if repos.iter().any(|r| r == repo) {
                return;
            }
            repos.push(repo.to_string());
        }
        // Only hints: a failure to keep one costs an upload next time, nothing else.
        if let Some(f) = self.file(digest) {
            let mut repos = read_lines(&f);
            if !repos.iter().any(|r| r == repo) {
                repos.push(repo.to_string());
                // The most recent few: a mount is tried from each in turn.
                let keep = repos.split_off(repos.len().saturating_sub(MAX_KEPT));
                let _ = write_atomic(&f, &keep.join("\n"));
            }
        }
    }

    fn holders(&self, digest: &Digest, except: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .held
            .lock()
            .map(|h| h.get(digest).cloned().unwrap_or_default())
            .unwrap_or_default();
        if let Some(f) = self.file(digest) {
            for r in read_lines(&f).into_iter().rev() {
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
        out.retain(|r| r != except);
        out.truncate(MAX_KEPT);
        out
    }
}

/// How many repositories are remembered (and tried) per blob.
const MAX_KEPT: usize = 4;

/// The repositories a hint file names. Only lines that are repository names are kept: a
/// damaged or forged file can then at worst make a mount be tried from a repository that
/// does not hold the blob, which fails, and the blob is uploaded.
fn read_lines(f: &std::path::Path) -> Vec<String> {
    crate::private::read(f)
        .map(|t| {
            t.lines()
                .filter(|l| is_repository_name(l))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The distribution spec's repository name: lowercase path components of `[a-z0-9]`
/// separated by `.`, `_`, `__`, `-`, joined by `/` (checked loosely: the characters and no
/// empty component).
fn is_repository_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        })
}

fn write_atomic(f: &std::path::Path, text: &str) -> io::Result<()> {
    crate::private::write(f, text)
}

/// One repository of one registry.
pub struct RegistryDestination {
    pub client: Client,
    /// The registry's API host (`Reference::api_host`).
    pub host: String,
    pub repo: String,
    /// Bodies of known size up to this go in one request; larger ones in chunks of it.
    pub chunk_size: u64,
    /// Shared by every destination on the same registry in this run.
    pub hints: MountHints,
}

impl RegistryDestination {
    fn err(&self, what: String) -> impl FnOnce(ferry_registry::RegistryError) -> CopyError {
        move |source| CopyError::Destination { what, source }
    }
}

impl ImageDestination for RegistryDestination {
    async fn has_blob(&self, digest: &Digest) -> Result<bool, CopyError> {
        let held = self
            .client
            .blob_exists(&self.host, &self.repo, digest)
            .await
            .map_err(self.err(format!(
                "asking {}/{} for blob {digest}",
                self.host, self.repo
            )))?
            .is_some();
        if held {
            self.hints.note(digest, &self.repo);
        }
        Ok(held)
    }

    async fn reuse_blob(&self, digest: &Digest) -> Result<bool, CopyError> {
        for from in self.hints.holders(digest, &self.repo) {
            // A hint is only a hint: a mount that fails (the source repository is gone, the
            // account may not read it) leaves the blob to be uploaded, and the upload says
            // what is really wrong, if anything.
            let mounted = match self
                .client
                .try_mount(&self.host, &self.repo, &from, digest)
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(%digest, from, "mount failed: {e}");
                    false
                }
            };
            if mounted {
                tracing::debug!(%digest, from, "mounted");
                self.hints.note(digest, &self.repo);
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn put_blob(
        &self,
        body: Arc<SendBody>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(Digest, u64), CopyError> {
        let mount_from = body
            .known_digest()
            .map(|d| self.hints.holders(d, &self.repo))
            .unwrap_or_default();
        let opts = UploadOptions {
            chunk_size: self.chunk_size,
            mount_from,
        };
        let name = body.describe();
        let upload = Upload(body);
        let (digest, size, how) = self
            .client
            .push_blob(&self.host, &self.repo, &upload, &opts, progress)
            .await
            .map_err(self.err(format!("uploading {name} to {}/{}", self.host, self.repo)))?;
        if let Pushed::Mounted { from } = &how {
            tracing::debug!(%digest, from, "mounted");
        }
        self.hints.note(&digest, &self.repo);
        Ok((digest, size))
    }

    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Digest, CopyError> {
        self.client
            .put_manifest(
                &self.host,
                &self.repo,
                reference,
                media_type,
                Bytes::from(bytes),
            )
            .await
            .map_err(self.err(format!(
                "storing the manifest {}/{}:{reference}",
                self.host, self.repo
            )))
    }
}

/// How much is read from a body at a time.
const BLOCK: usize = 256 * 1024;

/// A [`SendBody`] as the registry client takes it: a stream of blocks read off the async
/// threads.
struct Upload(Arc<SendBody>);

impl UploadBody for Upload {
    fn size(&self) -> Option<u64> {
        self.0.size()
    }

    fn known_digest(&self) -> Option<Digest> {
        self.0.known_digest().cloned()
    }

    fn open(&self, offset: u64) -> io::Result<ByteStream> {
        let reader = self.0.open(offset)?;
        let left = self.0.size().map(|s| s.saturating_sub(offset));
        let stream = futures_util::stream::unfold(Some((reader, left)), |state| async move {
            let (reader, left) = state?;
            let read = tokio::task::spawn_blocking(move || block(reader, left)).await;
            match read {
                Err(e) => Some((Err(io::Error::other(e.to_string())), None)),
                Ok(Err(e)) => Some((Err(e), None)),
                Ok(Ok(None)) => None,
                Ok(Ok(Some((bytes, reader, left)))) => Some((Ok(bytes), Some((reader, left)))),
            }
        });
        Ok(Box::pin(stream))
    }

    fn finished(&self) -> Option<(Digest, u64)> {
        // A blob sent as it is knows both up front: the client must not read it once more
        // to learn them (the pass that sends it checks them anyway).
        self.0
            .finished()
            .or_else(|| self.0.known_digest().cloned().zip(self.0.size()))
    }
}

type Reader = Box<dyn Read + Send>;

/// The next block of `reader`, `None` at its end. When the block is the last of a body of
/// known size, the reader is read once more, to its end, so its checks (digest, diff_id)
/// run before the last block is handed over: a client that stops reading at the declared
/// length still never sends a blob that fails them.
#[allow(clippy::type_complexity)]
fn block(
    mut reader: Reader,
    left: Option<u64>,
) -> io::Result<Option<(Bytes, Reader, Option<u64>)>> {
    let mut buf = vec![0u8; BLOCK];
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if n == 0 {
        return Ok(None);
    }
    buf.truncate(n);
    let left = left.map(|l| l.saturating_sub(n as u64));
    if left == Some(0) {
        let mut extra = [0u8; 1];
        if reader.read(&mut extra)? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the blob is longer than its descriptor declares",
            ));
        }
    }
    Ok(Some((Bytes::from(buf), reader, left)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_keep_only_repository_names() {
        let root = tempfile::tempdir().unwrap();
        let hints = MountHints::kept_under(root.path(), "127.0.0.1:5000");
        let d = Digest::sha256_of(b"blob");
        hints.note(&d, "team/app");
        let f = hints.file(&d).unwrap();
        let forged = "team/app\n../x\nrepo?mount=1&from=y\nUpper\n\nother/app\n";
        write_atomic(&f, forged).unwrap();
        let fresh = MountHints::kept_under(root.path(), "127.0.0.1:5000");
        assert_eq!(fresh.holders(&d, "mine"), vec!["other/app", "team/app"]);
    }
}
