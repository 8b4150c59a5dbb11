//! The tar framing ferry writes: ustar headers with fixed fields (mode, owner, time), GNU
//! long-name entries only for names over 100 bytes, two zero blocks at the end.

use std::io::{self, Write};

pub const BLOCK: u64 = 512;

/// `len` rounded up to whole blocks (saturating: a size that large is refused by the plan).
pub fn padded(len: u64) -> u64 {
    len.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// Bytes an entry of `name` and `size` takes in the archive, headers and padding included.
pub fn entry_len(name: &str, size: u64) -> u64 {
    let long = if name.len() > 100 {
        BLOCK + padded(name.len() as u64 + 1)
    } else {
        0
    };
    long + BLOCK + padded(size)
}

/// Write the header(s) of a regular file or directory.
pub fn write_header(out: &mut dyn Write, name: &str, size: u64, dir: bool) -> io::Result<()> {
    if name.len() > 100 {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        fixed(&mut h, name.len() as u64 + 1, 0o644);
        if let Some(g) = h.as_gnu_mut() {
            g.name[..13].copy_from_slice(b"././@LongLink");
        }
        h.set_cksum();
        out.write_all(h.as_bytes())?;
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        data.resize(padded(data.len() as u64) as usize, 0);
        out.write_all(&data)?;
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    fixed(&mut h, size, if dir { 0o755 } else { 0o644 });
    let short = &name.as_bytes()[..name.len().min(100)];
    if let Some(u) = h.as_ustar_mut() {
        u.name = [0; 100];
        u.name[..short.len()].copy_from_slice(short);
    }
    h.set_cksum();
    out.write_all(h.as_bytes())
}

fn fixed(h: &mut tar::Header, size: u64, mode: u32) {
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
}

/// Zero padding after `size` bytes of content.
pub fn write_padding(out: &mut dyn Write, size: u64) -> io::Result<()> {
    let pad = (padded(size) - size) as usize;
    out.write_all(&[0u8; BLOCK as usize][..pad])
}

pub fn write_end(out: &mut dyn Write) -> io::Result<()> {
    out.write_all(&[0u8; 2 * BLOCK as usize])
}
