//! The `.tar.zip` wrapper: real unzippers accept it (zip64 included, on sparse files so no
//! 4 GiB is written), it holds exactly `write_tar`'s bytes, and its ranges reassemble.

#[path = "plans/mod.rs"]
mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{build, spec, tar_of, Mem, Spec};
use ferry_archive::{ArchiveImage, ImageParts, Plan, Segment, ZipError, ZipPlan};
use ferry_core::{media, Descriptor, Digest, Reference};
use proptest::prelude::*;

/// `name` on PATH; `None` (skip) when missing, a failure under CI=true.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "required tool `{name}` is not installed (CI=true, so this is a failure, not a skip)"
        );
        eprintln!("skipping: tool `{name}` is not installed");
    }
    found
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn crcs(mem: &Mem) -> HashMap<Digest, u32> {
    mem.0
        .iter()
        .map(|(d, b)| (d.clone(), crc32fast::hash(b)))
        .collect()
}

fn zip_bytes(mem: &Mem, zip: &ZipPlan, crc: u32) -> Vec<u8> {
    mem.assemble(
        zip.segments(0, zip.len(), Some(crc))
            .unwrap()
            .map(Segment::into_owned),
    )
}

fn two_images() -> (Mem, Plan) {
    build(&[
        Spec {
            name: "alpine:3.20".into(),
            layers: vec![1, 3, 6],
            sha512: false,
        },
        Spec {
            name: "ghcr.io/org/app:1".into(),
            layers: vec![6, 0, 2],
            sha512: true,
        },
    ])
}

/// Python's zipfile: check the CRC (reading every byte) unless the mode is `info`, describe
/// the one entry on stderr, and with `read` print its bytes.
const PY_READ: &str = r#"
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
if sys.argv[2] != "info":
    assert z.testzip() is None, "a CRC does not match"
[i] = z.infolist()
sys.stderr.write(repr((i.filename, i.compress_type, i.flag_bits, i.date_time, i.file_size, oct(i.external_attr >> 16))))
if sys.argv[2] == "read":
    sys.stdout.buffer.write(z.read(i))
"#;

#[test]
fn a_small_zip_unzips_to_write_tars_bytes_in_unzip_and_python() {
    let (mem, plan) = two_images();
    let tar = tar_of(&mem, &plan);
    let zip = ZipPlan::new(plan.clone(), "alpine:3.20.tar").unwrap();
    assert!(!zip.is_zip64());
    let crc = plan.crc32(|d| crcs(&mem).get(d).copied()).unwrap();
    let bytes = zip_bytes(&mem, &zip, crc);
    assert_eq!(bytes.len() as u64, zip.len(), "the planned length is exact");
    assert_eq!(
        &bytes[zip.tar_start() as usize..zip.tail_start() as usize],
        &tar[..]
    );
    assert!(
        !bytes.windows(4).any(|w| w == [0x50, 0x4b, 0x06, 0x06]),
        "no zip64 record in a small zip"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar.zip");
    std::fs::write(&path, &bytes).unwrap();
    if let Some(unzip) = tool("unzip") {
        let out = run(Command::new(&unzip).arg("-t").arg(&path));
        assert!(String::from_utf8_lossy(&out).contains("No errors detected"));
        let out = run(Command::new(&unzip)
            .arg("-p")
            .arg(&path)
            .arg("alpine:3.20.tar"));
        assert!(out == tar, "unzip -p gives write_tar's bytes");
    }
    if let Some(py) = tool("python3") {
        run(Command::new(&py).args(["-m", "zipfile", "-t"]).arg(&path));
        let out = Command::new(&py)
            .args(["-c", PY_READ])
            .arg(&path)
            .arg("read")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "('alpine:3.20.tar', 0, 8, (1980, 1, 1, 0, 0, 0), {}, '0o100644')",
                tar.len()
            )
        );
        assert!(out.stdout == tar, "python reads write_tar's bytes");
    }
    if let Some(bsdtar) = tool("bsdtar") {
        // From the file (libarchive's seeking reader, led by the central directory).
        let out = run(Command::new(&bsdtar)
            .arg("-xOf")
            .arg(&path)
            .arg("alpine:3.20.tar"));
        assert!(out == tar, "bsdtar -xOf gives write_tar's bytes");
        // From a pipe (its streaming reader, led by the local header and data descriptor).
        let out = run(Command::new("sh").arg("-c").arg(format!(
            "{} -xOf - < {}",
            bsdtar.display(),
            path.display()
        )));
        assert!(out == tar, "bsdtar reading a pipe gives write_tar's bytes");
    }
}

#[test]
fn the_zip_is_deterministic_and_its_etag_follows_its_bytes() {
    let (mem, plan) = two_images();
    let crc = plan.crc32(|d| crcs(&mem).get(d).copied()).unwrap();
    let a = ZipPlan::new(plan.clone(), "a.tar").unwrap();
    let again = ZipPlan::new(two_images().1, "a.tar").unwrap();
    assert_eq!(zip_bytes(&mem, &a, crc), zip_bytes(&mem, &again, crc));
    assert_eq!(a.etag(), again.etag());
    assert!(a.etag().starts_with("\"ferry-zip-"), "{}", a.etag());
    assert_ne!(a.etag(), plan.etag(), "the zip and the tar differ");
    assert_ne!(a.etag(), ZipPlan::new(plan, "b.tar").unwrap().etag());
}

#[test]
fn the_first_bytes_need_no_crc_and_the_tail_does() {
    let (mem, plan) = two_images();
    let zip = ZipPlan::new(plan.clone(), "x.tar").unwrap();
    let tail = zip.tail_start();
    let crc = plan.crc32(|d| crcs(&mem).get(d).copied()).unwrap();
    let full = zip_bytes(&mem, &zip, crc);
    let early = mem.assemble(
        zip.segments(0, tail, None)
            .unwrap()
            .map(Segment::into_owned),
    );
    assert_eq!(&early[..], &full[..tail as usize]);
    assert_eq!(
        zip.segments(tail - 1, 2, None).unwrap_err(),
        ZipError::NeedsCrc { tail_start: tail }
    );
    assert_eq!(
        zip.segments(tail - 1, 2, None).unwrap_err().to_string(),
        format!("bytes from {tail} on hold the tar's CRC-32, which is not known yet")
    );
    assert_eq!(zip.segments(zip.len(), 0, None).unwrap().count(), 0);
    // The tail needs every blob (for their CRCs); the local header none.
    assert_eq!(
        zip.blobs_in(tail, 1).len(),
        plan.blobs_in(0, plan.len()).len()
    );
    assert!(zip.blobs_in(0, zip.tar_start()).is_empty());
}

#[test]
fn names_that_could_escape_the_unzip_directory_are_refused() {
    for (name, reason) in [
        ("", "it is empty"),
        ("/etc/x.tar", "an absolute path"),
        ("a/../../x.tar", "a `..` component"),
        ("..", "a `..` component"),
        ("a\\b.tar", "backslashes"),
    ] {
        let e = ZipPlan::new(Plan::new(&[]), name).unwrap_err();
        assert!(e.to_string().contains(reason), "{name:?}: {e}");
    }
    ZipPlan::new(Plan::new(&[]), "ghcr.io/o/r:t.tar").unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_range_of_a_planned_zip_reassembles(
        specs in prop::collection::vec(spec(), 0..3),
        ranges in prop::collection::vec((any::<u64>(), any::<u64>()), 1..16),
    ) {
        let (mem, plan) = build(&specs);
        let tar = tar_of(&mem, &plan);
        let crc = plan.crc32(|d| crcs(&mem).get(d).copied()).unwrap();
        let zip = ZipPlan::new(plan, "img.tar").unwrap();
        let full = zip_bytes(&mem, &zip, crc);
        prop_assert_eq!(&full[zip.tar_start() as usize..zip.tail_start() as usize], &tar[..]);
        let total = zip.len();
        for (a, b) in ranges {
            let start = a % (total + 100);
            let len = b % (total + 100 - start.min(total));
            let end = (start + len).min(total);
            let want = if start < total { &full[start as usize..end as usize] } else { &[][..] };
            let got = mem.assemble(zip.segments(start, len, Some(crc)).unwrap().map(Segment::into_owned));
            prop_assert_eq!(&got[..], want, "range {}+{} of {}", start, len, total);
        }
    }
}

// --- zip64, on sparse files -------------------------------------------------------------

/// The CRC-32 of `n` zero bytes, by combining 1 MiB pieces (no 4 GiB is hashed).
fn crc_of_zeros(n: u64) -> u32 {
    const MIB: u64 = 1 << 20;
    let piece = crc32fast::hash(&vec![0u8; MIB as usize]);
    let mut h = crc32fast::Hasher::new();
    for _ in 0..n / MIB {
        h.combine(&crc32fast::Hasher::new_with_initial_len(piece, MIB));
    }
    h.update(&vec![0u8; (n % MIB) as usize]);
    h.finalize()
}

/// One image whose layer is `size` zero bytes; no blob store holds it.
fn big_plan(size: u64) -> (Mem, Plan, Digest) {
    let mut mem = Mem::default();
    let config = mem.add(media::OCI_CONFIG, b"{}".to_vec(), false);
    let manifest = mem.add(media::OCI_MANIFEST, b"big manifest".to_vec(), false);
    let layer = Digest::sha256_of(format!("{size} zeros").as_bytes());
    let img = ArchiveImage::single(
        "big:1".parse::<Reference>().unwrap(),
        ImageParts {
            manifest,
            config,
            layers: vec![Descriptor::new(media::OCI_LAYER_GZIP, layer.clone(), size)],
            platform: None,
        },
    );
    (mem, Plan::new(&[img]), layer)
}

/// Write the zip into a sparse file: generated bytes at their offsets, the zero blob left
/// as a hole. Disk use stays a few KiB.
fn write_sparse(zip: &ZipPlan, mem: &Mem, zeros: &Digest, crc: u32, path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(zip.len()).unwrap();
    let mut pos = 0u64;
    for s in zip.segments(0, zip.len(), Some(crc)).unwrap() {
        let n = s.len();
        match s {
            Segment::Bytes(b) => f.write_all_at(&b, pos).unwrap(),
            Segment::Zeros(_) => {}
            Segment::Blob { digest, .. } if &digest == zeros => {}
            Segment::Blob {
                digest,
                offset,
                len,
            } => {
                let b = &mem.0[&digest][offset as usize..(offset + len) as usize];
                f.write_all_at(b, pos).unwrap();
            }
        }
        pos += n;
    }
    assert_eq!(pos, zip.len());
}

fn crc_of(mem: &Mem, plan: &Plan, zeros: &Digest, size: u64) -> u32 {
    let small = crcs(mem);
    let big = crc_of_zeros(size);
    plan.crc32(|d| {
        if d == zeros {
            Some(big)
        } else {
            small.get(d).copied()
        }
    })
    .unwrap()
}

/// Python's zipfile (reading every byte: the combined CRC is checked; `unzip -t` does the
/// same but takes three times as long) and `unzip -Z` (structure and sizes) on a zip of a tar of 4 GiB and more.
#[test]
fn a_tar_over_4_gib_gets_zip64_records_that_unzip_and_python_accept() {
    let size = 1u64 << 32;
    let (mem, plan, zeros) = big_plan(size);
    let zip = ZipPlan::new(plan.clone(), "big:1.tar").unwrap();
    assert!(zip.is_zip64());
    let crc = crc_of(&mem, &plan, &zeros, size);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tar.zip");
    write_sparse(&zip, &mem, &zeros, crc, &path);
    check_with_tools(&path, "big:1.tar", plan.len(), true);
}

/// A tar just under 4 GiB needs no zip64 entry, but with a long name the central directory
/// starts past 0xFFFFFFFF: only the zip64 end records are written, and readers accept it.
#[test]
fn a_central_directory_past_4_gib_alone_gets_the_zip64_end_records() {
    let (_, probe, _) = big_plan(0);
    let size = (1u64 << 32) - 512 - probe.len();
    let (mem, plan, zeros) = big_plan(size);
    assert_eq!(plan.len(), (1 << 32) - 512);
    let name = format!("{}.tar", "n".repeat(470));
    let zip = ZipPlan::new(plan.clone(), &name).unwrap();
    assert!(zip.is_zip64(), "the central directory starts past 4 GiB");
    assert_eq!(zip.tar_start(), 30 + name.len() as u64, "no zip64 extra");
    let crc = crc_of(&mem, &plan, &zeros, size);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.tar.zip");
    write_sparse(&zip, &mem, &zeros, crc, &path);
    // Structure only: reading the 4 GiB again would double the test's time.
    check_with_tools(&path, &name, plan.len(), false);
}

fn check_with_tools(path: &Path, name: &str, tar_len: u64, read_all: bool) {
    if let Some(bsdtar) = tool("bsdtar") {
        let listed = run(Command::new(&bsdtar).arg("-tvf").arg(path));
        let listed = String::from_utf8_lossy(&listed);
        assert!(
            listed.contains(&format!(" {tar_len} ")) && listed.contains(name),
            "{listed}"
        );
    }
    if let Some(unzip) = tool("unzip") {
        let listed = run(Command::new(&unzip).arg("-Z").arg("-l").arg(path));
        let listed = String::from_utf8_lossy(&listed);
        assert!(listed.contains(&format!(" {tar_len} ")), "{listed}");
    }
    if let Some(py) = tool("python3") {
        let out = Command::new(&py)
            .args(["-c", PY_READ])
            .arg(path)
            .arg(if read_all { "test" } else { "info" })
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("('{name}', 0, 8, (1980, 1, 1, 0, 0, 0), {tar_len}, '0o100644')")
        );
    }
}

#[test]
fn a_non_ascii_name_is_marked_utf8() {
    let (mem, plan) = two_images();
    let crc = plan.crc32(|d| crcs(&mem).get(d).copied()).unwrap();
    let tar_len = plan.len();
    let zip = ZipPlan::new(plan, "café.tar").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.zip");
    std::fs::write(&path, zip_bytes(&mem, &zip, crc)).unwrap();
    if let Some(py) = tool("python3") {
        let out = Command::new(&py)
            .args(["-c", PY_READ])
            .arg(&path)
            .arg("test")
            .env("PYTHONIOENCODING", "utf-8")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Flags: bit 3 (data descriptor) and bit 11 (UTF-8 name).
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("('café.tar', 0, 2056, (1980, 1, 1, 0, 0, 0), {tar_len}, '0o100644')")
        );
    }
}
