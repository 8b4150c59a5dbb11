//! Unit tests of the readers' parts; whole archives are tested in crates/archive/tests/read*.rs.

use super::tarindex::clean;
use super::*;

#[test]
fn source_archive_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<SourceArchive>();
    shared::<SourceImage>();
}

#[test]
fn clean_paths_drop_dots_and_slashes_and_refuse_escapes() {
    assert_eq!(clean("./blobs//sha256/x/").unwrap(), "blobs/sha256/x");
    assert_eq!(clean("manifest.json").unwrap(), "manifest.json");
    assert_eq!(clean("./").unwrap(), "");
    for bad in ["../x", "a/../b", "/abs", "a/.."] {
        assert!(
            matches!(clean(bad), Err(ReadError::UnsafePath { .. })),
            "{bad}"
        );
    }
}

#[test]
fn compression_is_sniffed_from_magic_bytes() {
    assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
    assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
    assert_eq!(sniff(b"ustar"), Compression::None);
    assert_eq!(sniff(&[0x28, 0xb5]), Compression::None);
    assert_eq!(sniff(&[]), Compression::None);
}

#[test]
fn names_give_digests_only_in_the_shapes_tools_write() {
    let hex = "a".repeat(64);
    let d = |s: &str| formats::named_digest(s).map(|d| d.to_string());
    assert_eq!(
        d(&format!("blobs/sha256/{hex}")),
        Some(format!("sha256:{hex}"))
    );
    assert_eq!(d(&format!("{hex}.json")), Some(format!("sha256:{hex}")));
    assert_eq!(d(&format!("./{hex}.tar")), Some(format!("sha256:{hex}")));
    assert_eq!(d(&format!("{hex}/layer.tar")), None);
    assert_eq!(d("blobs/sha256/short"), None);
    assert_eq!(d("config.json"), None);
}
