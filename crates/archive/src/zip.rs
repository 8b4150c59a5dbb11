//! The zip wrapper DockerImageSave v1 clients download (`{image}.tar.zip`): one STORED
//! (uncompressed) entry holding ferry's tar, with the same random access as the tar.
//!
//! Layout (APPNOTE.TXT 6.3): local file header, the tar, data descriptor, central directory
//! header, [zip64 end of central directory record and locator], end of central directory
//! record. Every length is known from the plan, so the zip's exact length is known before
//! a byte exists.
//!
//! The one thing not known up front is the CRC-32 of the tar, which needs every blob. The
//! local header therefore sets general purpose bit 3 and carries zeros for the CRC and
//! sizes (APPNOTE 4.4.4); the CRC comes after the data in a data descriptor and again in
//! the central directory. Everything before [`ZipPlan::tail_start`] can leave at once; only
//! the tail (a few hundred bytes) waits for the CRC, which [`Plan::crc32`] combines from the
//! blobs' CRCs without reading the tar again.
//!
//! Zip64 is used only where a 32-bit field would overflow: the entry's records (zip64
//! extra fields, 8-byte sizes in the data descriptor) when the tar is 0xFFFFFFFF bytes or
//! more; the zip64 end records when the central directory starts at 0xFFFFFFFF or later.
//! The two conditions are independent: a tar just under 4 GiB with a long name needs the
//! second only.
//!
//! Determinism: the entry's modification time is fixed at 1980-01-01 00:00:00 (DOS time 0,
//! date 0x0021, the earliest a zip can say; the tar's own entries say 1970), no extended
//! timestamp field, Unix mode 0644, "version made by" Unix. Same plan and name, same bytes.

use std::borrow::Cow;

use ferry_core::Digest;

use crate::ranges::{etag_of, Segment, Segments};
use crate::Plan;

const LOCAL_SIG: u32 = 0x0403_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const END_SIG: u32 = 0x0605_4b50;
/// A 32-bit field holding this says "see the zip64 field".
const MAX32: u64 = 0xFFFF_FFFF;
/// Bit 3: CRC and sizes follow the data in a data descriptor.
const FLAG_DESCRIPTOR: u16 = 1 << 3;
/// Bit 11: the name is UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
/// 1980-01-01 in DOS date format: (year - 1980) << 9 | month << 5 | day.
const DOS_DATE: u16 = 1 << 5 | 1;
const DOS_TIME: u16 = 0;
/// "Version made by" high byte 3: Unix, so the external attributes carry a Unix mode.
const MADE_BY_UNIX: u16 = 3 << 8;
/// Regular file, 0644, in the high half of the external attributes.
const UNIX_MODE: u32 = 0o100_644 << 16;
const LOCAL_FIXED: u64 = 30;
const CENTRAL_FIXED: u64 = 46;
const ZIP64_EXTRA: u64 = 20;
const ZIP64_END_LEN: u64 = 56 + 20;
const END_LEN: u64 = 22;

/// Why a zip cannot be planned or a range of it produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZipError {
    #[error("the sizes the manifests declare add up to more than 16 EiB")]
    TooLarge,
    #[error("{name:?} cannot name a zip entry: {reason}")]
    BadName { name: String, reason: &'static str },
    /// The range reaches the zip's tail, which holds the tar's CRC-32: known only once
    /// every blob's CRC is (see [`Plan::crc32`]).
    #[error("bytes from {tail_start} on hold the tar's CRC-32, which is not known yet")]
    NeedsCrc { tail_start: u64 },
}

/// A planned zip of one tar: its exact length, its bytes by range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipPlan {
    tar: Plan,
    tar_len: u64,
    name: String,
    /// The local file header, which needs nothing but the name and the zip64 choice.
    head: Vec<u8>,
    zip64_entry: bool,
    zip64_end: bool,
    len: u64,
}

impl ZipPlan {
    /// Plan a zip holding `tar` as the entry `name` (`alpine:latest.tar`; slashes make
    /// directories when unzipped). A name that could escape the directory it is unzipped
    /// into (absolute, `..`, backslashes, NUL) is refused.
    pub fn new(tar: Plan, name: &str) -> Result<ZipPlan, ZipError> {
        check_name(name)?;
        let tar_len = tar.checked_len().ok_or(ZipError::TooLarge)?;
        let zip64_entry = tar_len >= MAX32;
        let mut head = Vec::with_capacity(LOCAL_FIXED as usize + name.len() + 20);
        put32(&mut head, LOCAL_SIG);
        put16(&mut head, version_needed(zip64_entry));
        put16(&mut head, flags(name));
        put16(&mut head, 0); // stored
        put16(&mut head, DOS_TIME);
        put16(&mut head, DOS_DATE);
        // CRC and sizes: zero with bit 3 (APPNOTE 4.4.4); they follow the data.
        put32(&mut head, 0);
        put32(&mut head, 0);
        put32(&mut head, 0);
        put16(&mut head, name.len() as u16);
        put16(&mut head, if zip64_entry { ZIP64_EXTRA as u16 } else { 0 });
        head.extend_from_slice(name.as_bytes());
        if zip64_entry {
            // Its presence tells readers the data descriptor holds 8-byte sizes; the sizes
            // themselves are zero here, as bit 3 wants.
            put16(&mut head, 1);
            put16(&mut head, 16);
            put64(&mut head, 0);
            put64(&mut head, 0);
        }
        let central_at = (head.len() as u64)
            .checked_add(tar_len)
            .and_then(|n| n.checked_add(descriptor_len(zip64_entry)))
            .ok_or(ZipError::TooLarge)?;
        let zip64_end = central_at >= MAX32;
        let mut plan = ZipPlan {
            tar,
            tar_len,
            name: name.to_string(),
            head,
            zip64_entry,
            zip64_end,
            len: 0,
        };
        plan.len = central_at
            .checked_add(plan.tail_len() - descriptor_len(zip64_entry))
            .ok_or(ZipError::TooLarge)?;
        Ok(plan)
    }

    /// The tar the zip holds.
    pub fn tar(&self) -> &Plan {
        &self.tar
    }

    /// The zip's exact length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether any zip64 record is written (only when a 32-bit field would overflow).
    pub fn is_zip64(&self) -> bool {
        self.zip64_end
    }

    /// Where the tar starts in the zip (the local header's length).
    pub fn tar_start(&self) -> u64 {
        self.head.len() as u64
    }

    /// The first byte that depends on the tar's CRC-32 (the data descriptor's start): every
    /// byte before it can be sent before any blob's CRC is known.
    pub fn tail_start(&self) -> u64 {
        self.tar_start() + self.tar_len
    }

    /// The segments of bytes `[start, start + len)` of the zip, clipped to its length.
    /// `crc` is the tar's CRC-32 ([`Plan::crc32`]); it may be `None` for a range that ends
    /// before [`tail_start`](Self::tail_start), and [`ZipError::NeedsCrc`] says when it
    /// may not.
    pub fn segments(
        &self,
        start: u64,
        len: u64,
        crc: Option<u32>,
    ) -> Result<ZipSegments<'_>, ZipError> {
        let end = start.saturating_add(len).min(self.len);
        let start = start.min(end);
        let tail_start = self.tail_start();
        let crc = match crc {
            Some(c) => c,
            None if start >= end || end <= tail_start => 0,
            None => return Err(ZipError::NeedsCrc { tail_start }),
        };
        Ok(self.segments_with(start, end, crc))
    }

    /// The blobs bytes `[start, start + len)` of the zip need (the tail needs them all:
    /// their CRCs, for the tar's).
    pub fn blobs_in(&self, start: u64, len: u64) -> Vec<&Digest> {
        let end = start.saturating_add(len).min(self.len);
        let start = start.min(end);
        if start >= end {
            return Vec::new();
        }
        if end > self.tail_start() {
            return self.tar.blobs_in(0, self.tar_len);
        }
        let (a, b) = self.tar_range(start, end);
        self.tar.blobs_in(a, b - a)
    }

    /// A strong ETag for the zip, like [`Plan::etag`]: the SHA-256 of the zip's skeleton
    /// with the CRC left at zero. The CRC is a function of the tar's bytes, which the
    /// skeleton already fixes, so the tag needs no blob and still means "these bytes".
    pub fn etag(&self) -> String {
        etag_of("ferry-zip", self.segments_with(0, self.len, 0))
    }

    fn segments_with(&self, start: u64, end: u64, crc: u32) -> ZipSegments<'_> {
        let head_len = self.tar_start();
        let tail_start = self.tail_start();
        let head = (start < end && start < head_len).then(|| {
            let to = end.min(head_len) as usize;
            Segment::Bytes(Cow::Borrowed(&self.head[start as usize..to]))
        });
        let (a, b) = self.tar_range(start, end);
        let tail = (start < end && end > tail_start).then(|| {
            let t = self.tail(crc);
            let from = (start.max(tail_start) - tail_start) as usize;
            let to = (end - tail_start) as usize;
            Segment::Bytes(Cow::Owned(t[from..to].to_vec()))
        });
        ZipSegments {
            head,
            tar: self.tar.segments(a, b - a),
            tail,
        }
    }

    /// `[start, end)` of the zip as a range of the tar (empty when they do not meet).
    fn tar_range(&self, start: u64, end: u64) -> (u64, u64) {
        let off = self.tar_start();
        let a = start.saturating_sub(off).min(self.tar_len);
        let b = end.saturating_sub(off).min(self.tar_len);
        (a, b.max(a))
    }

    fn tail_len(&self) -> u64 {
        let extra = if self.zip64_entry { ZIP64_EXTRA } else { 0 };
        descriptor_len(self.zip64_entry)
            + CENTRAL_FIXED
            + self.name.len() as u64
            + extra
            + if self.zip64_end { ZIP64_END_LEN } else { 0 }
            + END_LEN
    }

    /// Data descriptor, central directory and end records.
    fn tail(&self, crc: u32) -> Vec<u8> {
        let mut t = Vec::with_capacity(self.tail_len() as usize);
        let size32 = if self.zip64_entry {
            MAX32 as u32
        } else {
            self.tar_len as u32
        };
        put32(&mut t, DESCRIPTOR_SIG);
        put32(&mut t, crc);
        if self.zip64_entry {
            put64(&mut t, self.tar_len);
            put64(&mut t, self.tar_len);
        } else {
            put32(&mut t, size32);
            put32(&mut t, size32);
        }
        let central_at = self.tail_start() + t.len() as u64;
        let version = version_needed(self.zip64_entry);
        put32(&mut t, CENTRAL_SIG);
        put16(&mut t, MADE_BY_UNIX | version);
        put16(&mut t, version);
        put16(&mut t, flags(&self.name));
        put16(&mut t, 0);
        put16(&mut t, DOS_TIME);
        put16(&mut t, DOS_DATE);
        put32(&mut t, crc);
        put32(&mut t, size32);
        put32(&mut t, size32);
        put16(&mut t, self.name.len() as u16);
        put16(
            &mut t,
            if self.zip64_entry {
                ZIP64_EXTRA as u16
            } else {
                0
            },
        );
        put16(&mut t, 0); // comment
        put16(&mut t, 0); // disk
        put16(&mut t, 0); // internal attributes
        put32(&mut t, UNIX_MODE);
        put32(&mut t, 0); // the local header is at 0
        t.extend_from_slice(self.name.as_bytes());
        if self.zip64_entry {
            // Only the fields whose 32-bit slots hold 0xFFFFFFFF, in the fixed order.
            put16(&mut t, 1);
            put16(&mut t, 16);
            put64(&mut t, self.tar_len);
            put64(&mut t, self.tar_len);
        }
        let central_len = self.tail_start() + t.len() as u64 - central_at;
        if self.zip64_end {
            let record_at = self.tail_start() + t.len() as u64;
            put32(&mut t, ZIP64_END_SIG);
            put64(&mut t, 44); // the record's size after this field
            put16(&mut t, MADE_BY_UNIX | 45);
            put16(&mut t, 45);
            put32(&mut t, 0);
            put32(&mut t, 0);
            put64(&mut t, 1);
            put64(&mut t, 1);
            put64(&mut t, central_len);
            put64(&mut t, central_at);
            put32(&mut t, ZIP64_LOCATOR_SIG);
            put32(&mut t, 0);
            put64(&mut t, record_at);
            put32(&mut t, 1);
        }
        put32(&mut t, END_SIG);
        put16(&mut t, 0);
        put16(&mut t, 0);
        put16(&mut t, 1);
        put16(&mut t, 1);
        put32(&mut t, central_len as u32);
        put32(&mut t, central_at.min(MAX32) as u32);
        put16(&mut t, 0);
        debug_assert_eq!(t.len() as u64, self.tail_len());
        t
    }
}

/// The segments of one byte range of a planned zip; see [`ZipPlan::segments`].
#[derive(Debug, Clone)]
pub struct ZipSegments<'a> {
    head: Option<Segment<'a>>,
    tar: Segments<'a>,
    tail: Option<Segment<'a>>,
}

impl<'a> Iterator for ZipSegments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        self.head
            .take()
            .or_else(|| self.tar.next())
            .or_else(|| self.tail.take())
    }
}

fn check_name(name: &str) -> Result<(), ZipError> {
    let bad = |reason| {
        Err(ZipError::BadName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > u16::MAX as usize {
        return bad("zip names hold at most 65535 bytes");
    }
    if name.starts_with('/') {
        return bad("an absolute path would unzip outside the current directory");
    }
    if name.contains('\\') || name.contains('\0') {
        return bad("backslashes and NUL are not allowed");
    }
    if name.split('/').any(|c| c == "..") {
        return bad("a `..` component would unzip outside the current directory");
    }
    Ok(())
}

fn version_needed(zip64: bool) -> u16 {
    if zip64 {
        45
    } else {
        20
    }
}

fn flags(name: &str) -> u16 {
    FLAG_DESCRIPTOR | if name.is_ascii() { 0 } else { FLAG_UTF8 }
}

fn descriptor_len(zip64: bool) -> u64 {
    if zip64 {
        24
    } else {
        16
    }
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}
