//! An index of a tar file's entries by path: headers only, the bodies are never read here.
//! Paths are checked (no `..`, nothing absolute), links are resolved inside the archive and
//! refused when they escape it or loop.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use super::error::ReadError;

/// How many links one lookup may follow (Linux's `MAXSYMLINKS`).
const MAX_HOPS: u32 = 40;
const BLOCK: u64 = 512;
/// The longest entry path or link target, and the longest path a lookup may build (Linux's
/// `PATH_MAX`): no image archive names a blob with more.
pub(crate) const MAX_PATH: usize = 4096;
/// How many entries an archive may hold: an image archive has a few per layer, and the
/// index is held in memory.
pub(crate) const MAX_ENTRIES: usize = 100_000;
/// How many bytes of paths link resolution may look up: at open, for all links together
/// (a few per layer in real archives); then per lookup. Without it a hostile archive of
/// many links with long targets costs hours of hashing.
const LINK_WORK_AT_OPEN: u64 = 64 << 20;
const LINK_WORK_PER_LOOKUP: u64 = 1 << 20;

/// The most a GNU long name, long link or PAX header may hold. The `tar` crate reads them
/// whole into memory; real ones are a path or a few attributes.
const MAX_EXTENSION: u64 = 1 << 20;

/// The archive file for the `tar` crate, which seeks over every body and reads only
/// headers and header extensions (GNU long names, PAX): more than one extension's worth
/// read between two seeks is an extension over [`MAX_EXTENSION`], refused before it is
/// held in memory.
struct Capped<'a> {
    file: &'a File,
    since_seek: u64,
}

impl Read for Capped<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = (MAX_EXTENSION + BLOCK).saturating_sub(self.since_seek);
        if room == 0 && !buf.is_empty() {
            return Err(io::Error::other(
                "a GNU long name or PAX header holds more than 1 MiB",
            ));
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        self.since_seek += n as u64;
        Ok(n)
    }
}

impl Seek for Capped<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.since_seek = 0;
        self.file.seek(pos)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// A regular file: its body's offset in the tar and its length.
    File {
        start: u64,
        len: u64,
    },
    Dir,
    /// Target as written, relative to the link's directory.
    Symlink(String),
    /// Target relative to the archive's root.
    Hardlink(String),
    /// Devices, fifos: never image content.
    Other,
}

pub(crate) struct TarIndex {
    nodes: HashMap<String, Node>,
}

/// `path` as a clean relative path: `./a//b/` is `a/b`. `..` or a leading `/` is refused.
pub(crate) fn clean(entry: &str) -> Result<String, ReadError> {
    let unsafe_path = |reason| ReadError::UnsafePath {
        entry: entry.to_string(),
        reason,
    };
    if entry.starts_with('/') {
        return Err(unsafe_path("absolute"));
    }
    let mut parts = Vec::new();
    for c in entry.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(unsafe_path("it contains '..'")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

impl TarIndex {
    /// Index the tar `file` of `file_len` bytes. Fails on a corrupt or truncated tar, an
    /// unsafe entry path, or a link that escapes or loops.
    /// `shown` names the file in messages.
    pub(crate) fn build(file: &File, file_len: u64, shown: &str) -> Result<TarIndex, ReadError> {
        let mut nodes = HashMap::new();
        let mut f = file;
        f.seek(SeekFrom::Start(0)).map_err(|source| ReadError::Io {
            context: "reading the archive".into(),
            source,
        })?;
        let mut ar = tar::Archive::new(Capped {
            file,
            since_seek: 0,
        });
        let mut last: Option<String> = None;
        let corrupt = |last: &Option<String>, e: std::io::Error| match last {
            // Not even one good header: not a tar at all.
            None => ReadError::NotAnArchive {
                path: shown.to_string(),
            },
            Some(l) => ReadError::CorruptTar {
                at: format!("the entry after {l}"),
                reason: e.to_string(),
            },
        };
        let mut end = 0u64;
        let entries = ar.entries_with_seek().map_err(|e| corrupt(&last, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| corrupt(&last, e))?;
            let raw = entry.path_bytes();
            let name = String::from_utf8(raw.into_owned()).map_err(|_| ReadError::Unsupported {
                entry: format!("after {}", last.as_deref().unwrap_or("the start")),
                reason: "its name is not UTF-8".into(),
            })?;
            if nodes.len() >= MAX_ENTRIES {
                return Err(ReadError::TooManyEntries {
                    entry: name,
                    max: MAX_ENTRIES,
                });
            }
            if name.len() > MAX_PATH {
                return Err(ReadError::UnsafePath {
                    entry: name,
                    reason: "longer than 4096 bytes",
                });
            }
            let path = clean(&name)?;
            let start = entry.raw_file_position();
            let len = entry.size();
            let body_end =
                start.saturating_add(len.checked_next_multiple_of(BLOCK).unwrap_or(u64::MAX));
            end = end.max(body_end);
            use tar::EntryType as T;
            let link = || -> Result<String, ReadError> {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ReadError::Malformed {
                        entry: name.clone(),
                        reason: "a link without a target".into(),
                    })?;
                if target.len() > MAX_PATH {
                    return Err(ReadError::Unsupported {
                        entry: name.clone(),
                        reason: "its link target is longer than 4096 bytes".into(),
                    });
                }
                String::from_utf8(target.into_owned()).map_err(|_| ReadError::Unsupported {
                    entry: name.clone(),
                    reason: "its link target is not UTF-8".into(),
                })
            };
            let node = match entry.header().entry_type() {
                T::Regular | T::Continuous => {
                    if start.checked_add(len).is_none_or(|e| e > file_len) {
                        return Err(ReadError::Truncated {
                            entry: name,
                            needed: start.saturating_add(len),
                            have: file_len,
                        });
                    }
                    Node::File { start, len }
                }
                T::Directory => Node::Dir,
                T::Symlink => Node::Symlink(link()?),
                T::Link => Node::Hardlink(link()?),
                T::GNUSparse => {
                    return Err(ReadError::Unsupported {
                        entry: name,
                        reason: "sparse files are not image content".into(),
                    })
                }
                _ => Node::Other,
            };
            if !path.is_empty() {
                nodes.insert(path, node);
            }
            last = Some(name);
        }
        let last = last.unwrap_or_else(|| "the archive".into());
        // The tar reader stops quietly at the end of the file; a tar that ends without its
        // end-of-archive block was cut short.
        if end.saturating_add(BLOCK) > file_len {
            return Err(ReadError::Truncated {
                entry: last,
                needed: end.saturating_add(BLOCK),
                have: file_len,
            });
        }
        let index = TarIndex { nodes };
        let mut work = LINK_WORK_AT_OPEN;
        for (path, node) in &index.nodes {
            if matches!(node, Node::Symlink(_) | Node::Hardlink(_)) {
                index.resolve(path, &mut work)?;
            }
        }
        Ok(index)
    }

    /// The file `path` names, links followed; `None` when there is no such entry.
    /// Returns the entry's real path, body offset and length.
    pub(crate) fn file(&self, path: &str) -> Result<Option<(String, u64, u64)>, ReadError> {
        let real = self.resolve(path, &mut LINK_WORK_PER_LOOKUP.clone())?;
        match self.nodes.get(&real) {
            None => Ok(None),
            Some(Node::File { start, len }) => Ok(Some((real, *start, *len))),
            Some(_) => Err(ReadError::NotAFile {
                entry: path.to_string(),
            }),
        }
    }

    /// `path` with every link along it followed, as a clean path inside the archive. Each
    /// step's path is looked up, and its length taken from `work`.
    fn resolve<'a>(&'a self, path: &'a str, work: &mut u64) -> Result<String, ReadError> {
        let mut todo: Vec<&'a str> = path.split('/').rev().collect();
        // The path so far, and where each of its components starts (to drop the last).
        let mut here = String::new();
        let mut starts: Vec<usize> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match c {
                "" | "." => continue,
                ".." => {
                    let Some(start) = starts.pop() else {
                        return Err(ReadError::LinkEscapes {
                            entry: path.to_string(),
                            target: "..".into(),
                        });
                    };
                    here.truncate(start.saturating_sub(1));
                    continue;
                }
                _ => {
                    if !here.is_empty() {
                        here.push('/');
                    }
                    starts.push(here.len());
                    here.push_str(c);
                }
            }
            if here.len() > MAX_PATH {
                return Err(ReadError::UnsafePath {
                    entry: path.to_string(),
                    reason: "its links lead to a path longer than 4096 bytes",
                });
            }
            *work = work
                .checked_sub(here.len() as u64)
                .ok_or_else(|| ReadError::TooManyLinks {
                    entry: path.to_string(),
                })?;
            let (target, relative) = match self.nodes.get(here.as_str()) {
                Some(Node::Symlink(t)) => (t, true),
                Some(Node::Hardlink(t)) => (t, false),
                _ => continue,
            };
            hops += 1;
            if hops > MAX_HOPS {
                return Err(ReadError::LinkLoop {
                    entry: path.to_string(),
                    hops: MAX_HOPS,
                });
            }
            if target.starts_with('/') {
                return Err(ReadError::LinkEscapes {
                    entry: here,
                    target: target.clone(),
                });
            }
            let link = here.clone();
            // The link's own component goes: a symlink is relative to its directory, a
            // hardlink to the archive's root.
            let start = starts.pop().unwrap_or(0);
            here.truncate(start.saturating_sub(1));
            if !relative {
                here.clear();
                starts.clear();
            }
            // A relative link's `..` may climb to the root but not past it.
            let mut depth = starts.len();
            for part in target.split('/') {
                match part {
                    "" | "." => {}
                    ".." if depth == 0 => {
                        return Err(ReadError::LinkEscapes {
                            entry: link,
                            target: target.clone(),
                        })
                    }
                    ".." => depth -= 1,
                    _ => depth += 1,
                }
            }
            todo.extend(target.split('/').rev());
        }
        Ok(here)
    }
}
