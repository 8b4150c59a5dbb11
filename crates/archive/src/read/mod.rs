//! Readers: every image archive a user is likely to hold, opened as a [`SourceArchive`].
//!
//! At open the archive is indexed (tar headers only, never a layer body), every manifest
//! and config is read and verified against its digest, and every blob a manifest names is
//! found with the size it declares. Layer contents are not hashed here (that would read
//! gigabytes twice): whoever streams them verifies digest and diff_id on the way.
//!
//! A gzip- or zstd-wrapped archive (told by its magic bytes, not its name) is decompressed
//! once into an unnamed temporary file in the caller's spool directory, then read like a
//! plain tar.

mod error;
mod formats;
mod tarindex;

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_core::media::Compression;
use ferry_core::{Descriptor, Digest, Platform, MAX_SMALL_BLOB, MAX_SMALL_BLOB_RULE};

use error::io_ctx;
pub use error::ReadError;
use tarindex::TarIndex;

/// What kind of archive was opened, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// An OCI image layout directory (`skopeo copy … oci:DIR`, umoci, `ferry pull --format oci`).
    OciLayoutDir,
    /// An OCI layout in a tar, without docker's `manifest.json` (`podman save --format
    /// oci-archive`, skopeo's `oci-archive:`).
    OciArchive,
    /// An OCI layout and docker's `manifest.json` in one tar: ferry's default archive,
    /// `docker save` from Docker 25 on.
    DockerOci,
    /// docker's `manifest.json` without an OCI layout, no manifests: `docker save` from
    /// Docker 1.10–24, `ferry pull --format legacy`, podman's and skopeo's `docker-archive`.
    DockerArchive,
}

impl fmt::Display for ArchiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArchiveKind::OciLayoutDir => "an OCI layout directory",
            ArchiveKind::OciArchive => "an OCI archive (oci-archive)",
            ArchiveKind::DockerOci => "a docker archive with an OCI layout (ferry's default format, docker save from Docker 25)",
            ArchiveKind::DockerArchive => "a docker archive (docker save up to Docker 24, docker-archive, ferry's legacy format)",
        })
    }
}

/// Where a blob's stored bytes are: `len` bytes from `start` of an archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLocation {
    entry: String,
    start: u64,
    len: u64,
}

impl BlobLocation {
    /// The archive entry (links followed) or, for a layout directory, the path inside it.
    pub fn entry(&self) -> &str {
        &self.entry
    }

    /// The stored length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A manifest or config: exact stored bytes, verified against `descriptor` at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub descriptor: Descriptor,
    pub bytes: Vec<u8>,
    pub location: BlobLocation,
}

/// A layer as stored. Only its size is checked at open; the bytes are verified while they
/// are streamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLayer {
    pub location: BlobLocation,
    /// Media type, digest and size of the stored bytes: the manifest's descriptor; for an
    /// archive without manifests, digest = `diff_id` and an uncompressed media type (or,
    /// for a compressed layer stored under `blobs/<alg>/<hex>`, that digest).
    pub descriptor: Descriptor,
    /// Of the stored bytes, sniffed from their first bytes.
    pub compression: Compression,
    /// The config's `rootfs.diff_ids` entry (for an artifact whose config has none, the
    /// stored digest).
    pub diff_id: Digest,
}

/// One image manifest's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformImage {
    pub platform: Option<Platform>,
    /// Exact bytes; `None` for archives without manifests (docker save 1.10–24, podman's and
    /// skopeo's docker-archive): the pusher makes one.
    pub manifest: Option<StoredBlob>,
    pub config: StoredBlob,
    pub layers: Vec<SourceLayer>,
}

/// One image of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceImage {
    /// As recorded: `RepoTags`, the `io.containerd.image.name` / `org.opencontainers.image.ref.name`
    /// annotations, `repositories`.
    pub names: Vec<String>,
    /// The top manifest as stored (an index or an image manifest), when the archive has one.
    pub root: Option<StoredBlob>,
    /// One per image manifest (several under an index), in the index's order.
    pub platforms: Vec<PlatformImage>,
}

impl SourceImage {
    /// How the image is called in messages: its first name, or its root digest.
    pub fn label(&self) -> String {
        if let Some(n) = self.names.first() {
            return n.clone();
        }
        if let Some(r) = &self.root {
            return r.descriptor.digest.to_string();
        }
        match self.platforms.first() {
            Some(p) => format!("config {}", p.config.descriptor.digest),
            None => "(unnamed)".into(),
        }
    }
}

/// Where the archive's bytes live.
enum Backing {
    /// A tar file. `path` is `None` when it is an unnamed spool file (a decompressed wrapper).
    Tar {
        file: Arc<File>,
        path: Option<PathBuf>,
        index: TarIndex,
    },
    /// An OCI layout directory (canonical path).
    Dir { root: PathBuf },
}

/// An opened archive. `Send + Sync`: blobs may be opened from several threads at once.
pub struct SourceArchive {
    kind: ArchiveKind,
    wrapper: Compression,
    backing: Backing,
    images: Vec<SourceImage>,
}

impl fmt::Debug for SourceArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceArchive")
            .field("kind", &self.kind)
            .field("wrapper", &self.wrapper)
            .field("images", &self.images)
            .finish()
    }
}

/// The compression its first bytes show.
pub(crate) fn sniff(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

impl SourceArchive {
    /// Open `path`: a tar file (plain, or wrapped in gzip or zstd, told by magic bytes not
    /// by name) or an OCI layout directory. A wrapped archive is decompressed once into an
    /// unnamed temporary file in `spool_dir`. Everything but layer contents is checked here.
    pub fn open(path: &Path, spool_dir: &Path) -> Result<SourceArchive, ReadError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(io_ctx(format!("opening {shown}")))?;
        if meta.is_dir() {
            let root = path
                .canonicalize()
                .map_err(io_ctx(format!("opening {shown}")))?;
            if !root.join("index.json").exists() {
                return Err(ReadError::NotAnArchive { path: shown });
            }
            let backing = Backing::Dir { root };
            let images = formats::read_oci(&formats::Budgeted::new(&backing))?;
            return Ok(SourceArchive {
                kind: ArchiveKind::OciLayoutDir,
                wrapper: Compression::None,
                backing,
                images,
            });
        }
        let mut file = File::open(path).map_err(io_ctx(format!("opening {shown}")))?;
        let mut head = [0u8; 4];
        let n = read_head(&mut file, &mut head).map_err(io_ctx(format!("reading {shown}")))?;
        let wrapper = sniff(&head[..n]);
        // A pipe (`<(zcat …)`, /dev/stdin) cannot be read at random: spooled like a wrapper.
        let (file, named) = match wrapper {
            Compression::None if meta.is_file() => (file, Some(path.to_path_buf())),
            c => (spool(&head[..n], file, c, spool_dir, &shown)?, None),
        };
        let len = file
            .metadata()
            .map_err(io_ctx(format!("reading {shown}")))?
            .len();
        if len < 512 {
            return Err(ReadError::NotAnArchive { path: shown });
        }
        let index = TarIndex::build(&file, len, &shown)?;
        let backing = Backing::Tar {
            file: Arc::new(file),
            path: named,
            index,
        };
        let (kind, images) = formats::read_tar(&backing)?;
        Ok(SourceArchive {
            kind,
            wrapper,
            backing,
            images,
        })
    }

    pub fn kind(&self) -> ArchiveKind {
        self.kind
    }

    /// The compression the archive file was wrapped in (`None` for a plain tar or a directory).
    pub fn wrapper(&self) -> Compression {
        self.wrapper
    }

    pub fn images(&self) -> &[SourceImage] {
        &self.images
    }

    /// The image `wanted` names (one of its recorded names, the same reference spelled
    /// another way — `alpine:3.20` for `docker.io/library/alpine:3.20` — or its position
    /// from 0), or with `None` the only image; several images and no choice is an error
    /// listing them.
    pub fn select(&self, wanted: Option<&str>) -> Result<&SourceImage, ReadError> {
        let available = || {
            self.images
                .iter()
                .enumerate()
                .map(|(i, img)| format!("{i}: {}", img.label()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(wanted) = wanted else {
            return match self.images.as_slice() {
                [] => Err(ReadError::NoImages),
                [only] => Ok(only),
                _ => Err(ReadError::Ambiguous {
                    available: available(),
                }),
            };
        };
        if let Some(img) = self
            .images
            .iter()
            .find(|img| img.names.iter().any(|n| n == wanted))
        {
            return Ok(img);
        }
        if let Ok(i) = wanted.parse::<usize>() {
            if let Some(img) = self.images.get(i) {
                return Ok(img);
            }
        }
        if let Ok(r) = wanted.parse::<ferry_core::Reference>() {
            let same = |n: &String| n.parse::<ferry_core::Reference>().is_ok_and(|m| m == r);
            if let Some(img) = self.images.iter().find(|img| img.names.iter().any(same)) {
                return Ok(img);
            }
        }
        Err(ReadError::NoSuchImage {
            wanted: wanted.to_string(),
            available: available(),
        })
    }

    /// The stored bytes of a blob, from `offset` to its end.
    pub fn open_blob(&self, loc: &BlobLocation, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let remaining = loc.len.checked_sub(offset).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "offset {offset} is past the end of {} ({} bytes)",
                    loc.entry, loc.len
                ),
            )
        })?;
        match &self.backing {
            Backing::Tar { file, .. } => Ok(Box::new(Region {
                file: Arc::clone(file),
                entry: loc.entry.clone(),
                pos: loc.start + offset,
                left: remaining,
            })),
            Backing::Dir { root } => {
                let mut f = File::open(root.join(&loc.entry))?;
                f.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(f.take(remaining)))
            }
        }
    }

    /// `(file, start, len)` when the blob is a contiguous region of a named file on disk (an
    /// uncompressed tar or a layout directory), so an uploader can stream it directly.
    /// `None` for a decompressed (spooled) archive.
    pub fn file_region(&self, loc: &BlobLocation) -> Option<(PathBuf, u64, u64)> {
        match &self.backing {
            Backing::Tar { path, .. } => Some((path.clone()?, loc.start, loc.len)),
            Backing::Dir { root } => Some((root.join(&loc.entry), 0, loc.len)),
        }
    }
}

fn read_head(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copy `head` then the rest of `file`, decompressed as `wrapper` says, into an unnamed
/// temporary file in `spool_dir`.
fn spool(
    head: &[u8],
    file: File,
    wrapper: Compression,
    spool_dir: &Path,
    shown: &str,
) -> Result<File, ReadError> {
    let what = match wrapper {
        Compression::Gzip => "decompressing",
        Compression::Zstd => "decompressing",
        Compression::None => "copying",
    };
    let ctx = format!("{what} {shown} into {}", spool_dir.display());
    let mut out = tempfile::tempfile_in(spool_dir).map_err(io_ctx(ctx.clone()))?;
    let input = io::BufReader::with_capacity(1 << 20, io::Cursor::new(head.to_vec()).chain(file));
    let mut reader: Box<dyn Read> = match wrapper {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(io_ctx(ctx.clone()))?)
        }
        Compression::None => Box::new(input),
    };
    io::copy(&mut reader, &mut out).map_err(io_ctx(ctx))?;
    Ok(out)
}

/// A region of a shared file, read with positional reads so readers do not share a cursor.
struct Region {
    file: Arc<File>,
    /// For messages.
    entry: String,
    pos: u64,
    left: u64,
}

impl Read for Region {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ended inside {}", self.entry),
            ));
        }
        self.pos += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

impl Backing {
    /// Find `entry` (a clean path), which `wanted_by` names.
    fn locate(&self, entry: &str, wanted_by: &str) -> Result<BlobLocation, ReadError> {
        let missing = || ReadError::Missing {
            entry: entry.to_string(),
            wanted_by: wanted_by.to_string(),
        };
        let entry = tarindex::clean(entry)?;
        match self {
            Backing::Tar { index, .. } => {
                let (entry, start, len) = index.file(&entry)?.ok_or_else(missing)?;
                Ok(BlobLocation { entry, start, len })
            }
            Backing::Dir { root } => {
                let path = root.join(&entry);
                let real = match path.canonicalize() {
                    Ok(p) => p,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
                    Err(e) => return Err(io_ctx(format!("opening {}", path.display()))(e)),
                };
                if !real.starts_with(root) {
                    return Err(ReadError::LinkEscapes {
                        entry,
                        target: real.display().to_string(),
                    });
                }
                let meta = std::fs::metadata(&real)
                    .map_err(io_ctx(format!("opening {}", path.display())))?;
                if !meta.is_file() {
                    return Err(ReadError::NotAFile { entry });
                }
                // Later opens use the path the links led to, not the links again: a link
                // swapped after open cannot lead elsewhere.
                let real = real
                    .strip_prefix(root)
                    .ok()
                    .and_then(|p| p.to_str())
                    .ok_or_else(|| ReadError::Unsupported {
                        entry: entry.clone(),
                        reason: "the path its links lead to is not UTF-8".into(),
                    })?;
                Ok(BlobLocation {
                    entry: real.to_string(),
                    start: 0,
                    len: meta.len(),
                })
            }
        }
    }

    /// Whether `entry` exists (links followed).
    fn has(&self, entry: &str) -> bool {
        self.locate(entry, "").is_ok()
    }

    fn read_at_most(&self, loc: &BlobLocation, n: u64) -> io::Result<Vec<u8>> {
        let n = n.min(loc.len);
        let mut out = Vec::with_capacity(n as usize);
        match self {
            Backing::Tar { file, .. } => {
                Region {
                    file: Arc::clone(file),
                    entry: loc.entry.clone(),
                    pos: loc.start,
                    left: n,
                }
                .read_to_end(&mut out)?;
            }
            Backing::Dir { root } => {
                File::open(root.join(&loc.entry))?
                    .take(n)
                    .read_to_end(&mut out)?;
            }
        }
        if (out.len() as u64) < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} is shorter than it was", loc.entry),
            ));
        }
        Ok(out)
    }

    /// A small file whole: refused unread when it is over [`MAX_SMALL_BLOB`].
    fn read_small(&self, loc: &BlobLocation) -> Result<Vec<u8>, ReadError> {
        if loc.len > MAX_SMALL_BLOB {
            return Err(ReadError::TooBig {
                entry: loc.entry.clone(),
                size: loc.len,
                rule: MAX_SMALL_BLOB_RULE,
            });
        }
        self.read_at_most(loc, loc.len)
            .map_err(io_ctx(format!("reading {}", loc.entry)))
    }
}

#[cfg(test)]
mod tests;
