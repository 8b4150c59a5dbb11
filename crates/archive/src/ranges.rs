//! Random access into a planned archive that may not exist yet: any byte range of
//! [`Plan::write_tar`]'s output maps onto [`Segment`]s, bytes ferry generates (headers,
//! metadata, padding) or parts of blobs. A server answers `Range` requests from them while
//! blobs are still arriving, reading only the blobs the range needs.

use std::borrow::Cow;

use sha2::Digest as _;

use ferry_core::Digest;

use crate::plan::{EntryBody, Plan};
use crate::tarfmt;

/// A piece of an archive's bytes. Concatenating the segments of a range, with each
/// [`Segment::Blob`] read from its blob, gives exactly that range of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Bytes ferry generates: headers, metadata entries' bodies, zip framing.
    Bytes(Cow<'a, [u8]>),
    /// That many zero bytes: tar padding and the end-of-archive blocks.
    Zeros(u64),
    /// `len` bytes of blob `digest` starting at `offset` into the blob. The plan's size for
    /// the blob is trusted: a reader must refuse a blob of another length, as
    /// [`Plan::write_tar`] does.
    Blob {
        digest: Digest,
        offset: u64,
        len: u64,
    },
}

impl Segment<'_> {
    /// How many bytes of the archive the segment covers.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::Zeros(n) => *n,
            Segment::Blob { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same segment owning its bytes, to keep past the plan's borrow (across an await).
    pub fn into_owned(self) -> Segment<'static> {
        match self {
            Segment::Bytes(b) => Segment::Bytes(Cow::Owned(b.into_owned())),
            Segment::Zeros(n) => Segment::Zeros(n),
            Segment::Blob {
                digest,
                offset,
                len,
            } => Segment::Blob {
                digest,
                offset,
                len,
            },
        }
    }
}

/// The segments of one byte range of a planned tar, in order; see [`Plan::segments`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    plan: &'a Plan,
    pos: u64,
    end: u64,
    /// The entry holding `pos`; `entries.len()` for the end-of-archive blocks.
    entry: usize,
}

impl Plan {
    /// The segments of bytes `[start, start + len)` of [`write_tar`](Self::write_tar)'s
    /// output. The range is clipped to the archive: a range past the end yields nothing (an
    /// HTTP server answers 416 before asking). A plan whose
    /// [`checked_len`](Self::checked_len) is `None` yields nothing at all: refuse it first.
    ///
    /// The first entry is found by binary search over the entries' precomputed offsets; the
    /// iterator then allocates only the headers it hands out (at most a few blocks each).
    pub fn segments(&self, start: u64, len: u64) -> Segments<'_> {
        let total = self.checked_len().unwrap_or(0);
        let end = start.saturating_add(len).min(total);
        let start = start.min(end);
        let mut entry = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        if let Some(e) = self.entries.get(entry) {
            if start - self.starts[entry] >= tarfmt::entry_len(&e.name, e.size) {
                // Past the last entry: in the end-of-archive blocks.
                entry += 1;
            }
        }
        Segments {
            plan: self,
            pos: start,
            end,
            entry,
        }
    }

    /// The blobs bytes `[start, start + len)` need, each once, in archive order: what a
    /// server waits for before it can send that range.
    pub fn blobs_in(&self, start: u64, len: u64) -> Vec<&Digest> {
        let s = self.segments(start, len);
        if s.pos >= s.end {
            return Vec::new();
        }
        self.entries
            .iter()
            .zip(&self.starts)
            .skip(s.entry)
            .take_while(|(_, &at)| at < s.end)
            .filter_map(|(e, &at)| match &e.body {
                EntryBody::Blob(d) if e.size > 0 => {
                    let body = at + tarfmt::entry_len(&e.name, 0);
                    (body < s.end && body + e.size > s.pos).then_some(d)
                }
                _ => None,
            })
            .collect()
    }

    /// A strong HTTP entity tag for the tar, quoted as the `ETag` header wants it.
    ///
    /// It is the SHA-256 of the archive's skeleton: every byte ferry generates (headers,
    /// metadata, the lengths of padding) with each blob part replaced by its digest, offset
    /// and length. Blobs are verified against their digests, so the skeleton fixes every
    /// byte: the same tag means the same bytes, whatever the ferry version, and a change to
    /// the framing code changes the tag by itself (no version number to remember to bump).
    pub fn etag(&self) -> String {
        etag_of("ferry-tar", self.segments(0, self.len()))
    }

    /// The CRC-32 (IEEE, as zip uses) of the whole tar, without reading a blob: generated
    /// bytes are hashed here and each blob's CRC-32, from `crc_of_blob` (the server computes
    /// it when it verifies the blob), is combined in. `None` when `crc_of_blob` does not know
    /// one of the blobs, or the plan is too large to write.
    pub fn crc32(&self, mut crc_of_blob: impl FnMut(&Digest) -> Option<u32>) -> Option<u32> {
        let len = self.checked_len()?;
        let mut h = crc32fast::Hasher::new();
        for seg in self.segments(0, len) {
            match seg {
                Segment::Bytes(b) => h.update(&b),
                Segment::Zeros(n) => update_zeros(&mut h, n),
                Segment::Blob {
                    digest,
                    offset,
                    len,
                } => {
                    // The whole blob always comes as one segment when the range is the
                    // whole archive.
                    debug_assert_eq!(offset, 0);
                    h.combine(&crc32fast::Hasher::new_with_initial_len(
                        crc_of_blob(&digest)?,
                        len,
                    ));
                }
            }
        }
        Some(h.finalize())
    }
}

/// Feed `n` zero bytes; only padding and end blocks come here, so `n` is small.
pub(crate) fn update_zeros(h: &mut crc32fast::Hasher, mut n: u64) {
    const Z: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(Z.len() as u64) as usize;
        h.update(&Z[..k]);
        n -= k as u64;
    }
}

/// The quoted SHA-256 of a skeleton under `format`; each segment is tagged and
/// length-prefixed so no two different skeletons hash the same input.
pub(crate) fn etag_of<'a>(format: &str, segments: impl Iterator<Item = Segment<'a>>) -> String {
    let mut h = sha2::Sha256::new();
    h.update(format.as_bytes());
    h.update([0]);
    for seg in segments {
        match seg {
            Segment::Bytes(b) => {
                h.update(b"B");
                h.update((b.len() as u64).to_be_bytes());
                h.update(&b);
            }
            Segment::Zeros(n) => {
                h.update(b"Z");
                h.update(n.to_be_bytes());
            }
            Segment::Blob {
                digest,
                offset,
                len,
            } => {
                let d = digest.to_string();
                h.update(b"D");
                h.update((d.len() as u64).to_be_bytes());
                h.update(d.as_bytes());
                h.update(offset.to_be_bytes());
                h.update(len.to_be_bytes());
            }
        }
    }
    format!("\"{format}-{}\"", hex::encode(h.finalize()))
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        if self.pos >= self.end {
            return None;
        }
        let left = self.end - self.pos;
        let Some(e) = self.plan.entries.get(self.entry) else {
            // The two zero blocks that end the archive.
            self.pos = self.end;
            return Some(Segment::Zeros(left));
        };
        let at = self.pos - self.plan.starts[self.entry];
        let head = tarfmt::entry_len(&e.name, 0);
        let (seg, done) = if at < head {
            let mut h = Vec::with_capacity(head as usize);
            // Writing into a Vec cannot fail.
            let _ = tarfmt::write_header(&mut h, &e.name, e.size, e.body == EntryBody::Dir);
            let to = head.min(at + left) as usize;
            (
                Segment::Bytes(Cow::Owned(h[at as usize..to].to_vec())),
                to as u64,
            )
        } else if at - head < e.size {
            let off = at - head;
            let k = left.min(e.size - off);
            let seg = match &e.body {
                EntryBody::Bytes(b) => {
                    Segment::Bytes(Cow::Borrowed(&b[off as usize..(off + k) as usize]))
                }
                EntryBody::Blob(d) => Segment::Blob {
                    digest: d.clone(),
                    offset: off,
                    len: k,
                },
                // A directory has size 0: this branch is never reached for one.
                EntryBody::Dir => Segment::Zeros(k),
            };
            (seg, at + k)
        } else {
            let end = head + tarfmt::padded(e.size);
            let k = left.min(end - at);
            (Segment::Zeros(k), at + k)
        };
        self.pos = self.plan.starts[self.entry] + done;
        if done == tarfmt::entry_len(&e.name, e.size) {
            self.entry += 1;
        }
        Some(seg)
    }
}
