//! Bad input: every way an archive can be broken or hostile is refused at open with an
//! error naming the entry at fault.

mod common;

use common::*;
use ferry_archive::{ReadError, SourceArchive};
use ferry_core::{media, Descriptor, Digest};

fn open_err(bytes: &[u8]) -> ReadError {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "archive.tar", bytes);
    SourceArchive::open(&p, dir.path()).expect_err("the archive must be refused")
}

/// The pieces of a one-image OCI archive, to break one at a time.
struct Oci {
    layer: Layer,
    cfg: Vec<u8>,
    man: Vec<u8>,
    index: String,
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor::new(media_type, Digest::sha256_of(bytes), bytes.len() as u64)
}

fn index_of(man: &[u8], media_type: &str) -> String {
    serde_json::to_string(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [descriptor(media_type, man)],
    }))
    .unwrap()
}

impl Oci {
    fn new() -> Oci {
        let layer = layer("l");
        let cfg = config_json("amd64", &[&layer.diff_id]);
        let man = manifest_json(
            &descriptor(media::OCI_CONFIG, &cfg),
            &[descriptor(media::OCI_LAYER_GZIP, &layer.gz)],
        );
        Oci {
            index: index_of(&man, media::OCI_MANIFEST),
            layer,
            cfg,
            man,
        }
    }

    fn entries(&self) -> Vec<E> {
        vec![
            file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
            file("index.json", self.index.clone()),
            file(&blob_path(&Digest::sha256_of(&self.man)), self.man.clone()),
            file(&blob_path(&Digest::sha256_of(&self.cfg)), self.cfg.clone()),
            file(
                &blob_path(&Digest::sha256_of(&self.layer.gz)),
                self.layer.gz.clone(),
            ),
        ]
    }

    fn man_digest(&self) -> Digest {
        Digest::sha256_of(&self.man)
    }

    fn tar(&self) -> Vec<u8> {
        tar_bytes(&self.entries())
    }
}

#[test]
fn the_unbroken_fixture_opens() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "a.tar", &Oci::new().tar());
    let a = SourceArchive::open(&p, dir.path()).unwrap();
    assert_eq!(a.kind(), ferry_archive::ArchiveKind::OciArchive);
    assert_eq!(a.images()[0].platforms[0].layers.len(), 1);
}

#[test]
fn a_truncated_archive_is_refused_wherever_it_is_cut() {
    let full = Oci::new().tar();
    for cut in [
        full.len() - 1024,
        full.len() - 1500,
        full.len() / 2,
        700,
        512,
    ] {
        let e = open_err(&full[..cut]);
        assert!(
            matches!(
                e,
                ReadError::Truncated { .. } | ReadError::CorruptTar { .. }
            ),
            "cut at {cut}: {e:?}"
        );
    }
    let e = open_err(&full[..full.len() / 2]).to_string();
    assert!(e.starts_with("the archive is truncated: "), "{e}");
}

#[test]
fn a_corrupt_header_is_refused_naming_the_entry_before_it() {
    let mut t = Oci::new().tar();
    // The second header (index.json) follows oci-layout's one block of data.
    t[1024 + 3] ^= 0x55;
    let e = open_err(&t).to_string();
    assert_eq!(
        e,
        "the archive is corrupt at the entry after oci-layout: archive header checksum mismatch"
    );
}

#[test]
fn bytes_that_are_no_tar_are_not_an_archive() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "notes.txt", &b"hello world\n".repeat(100));
    let e = SourceArchive::open(&p, dir.path()).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{} is not an image archive: it is neither a tar file (plain, gzip or zstd) nor an OCI layout directory", p.display())
    );
    let small = write(dir.path(), "small", b"tiny");
    assert!(matches!(
        SourceArchive::open(&small, dir.path()),
        Err(ReadError::NotAnArchive { .. })
    ));
    // A gzip stream that is cut off.
    let gz = gzip(&Oci::new().tar());
    let cut = write(dir.path(), "cut.tar.gz", &gz[..gz.len() / 2]);
    let e = SourceArchive::open(&cut, dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("decompressing "), "{e}");
}

#[test]
fn unsafe_entry_paths_are_refused() {
    for (name, reason) in [
        ("../evil", "it contains '..'"),
        ("/etc/evil", "absolute"),
        ("a/../../b", "it contains '..'"),
    ] {
        let mut entries = Oci::new().entries();
        entries.push(file(name, "x"));
        let e = open_err(&tar_bytes(&entries)).to_string();
        assert_eq!(
            e,
            format!("archive entry {name:?} has an unsafe path ({reason}); the archive is refused")
        );
    }
}

#[test]
fn links_that_escape_the_archive_are_refused() {
    for link in [
        sym("x/layer.tar", "../../etc/passwd"),
        sym("x/layer.tar", "/etc/passwd"),
        E::Hard("x/layer.tar".into(), "../outside".into()),
        sym("x", ".."),
    ] {
        let mut entries = Oci::new().entries();
        entries.push(link);
        let e = open_err(&tar_bytes(&entries));
        assert!(matches!(e, ReadError::LinkEscapes { .. }), "{e:?}");
        assert!(e.to_string().contains("outside the archive"), "{e}");
    }
}

#[test]
fn link_loops_are_refused() {
    let mut entries = Oci::new().entries();
    entries.push(sym("a", "b"));
    entries.push(sym("b", "./a"));
    let e = open_err(&tar_bytes(&entries)).to_string();
    assert!(
        e.contains("is a link loop (more than 40 links followed)"),
        "{e}"
    );
}

#[test]
fn a_blob_reached_through_links_inside_the_archive_is_read() {
    // The layer stored under another name, the blob path a symlink through a linked dir.
    let o = Oci::new();
    let layer_path = blob_path(&Digest::sha256_of(&o.layer.gz));
    let mut entries: Vec<E> = o
        .entries()
        .into_iter()
        .filter(|e| !matches!(e, E::File(n, _) if *n == layer_path))
        .collect();
    entries.push(file("store/real/layer", o.layer.gz.clone()));
    entries.push(sym("alias", "store/./real"));
    entries.push(E::Hard(layer_path.clone(), "store/real/layer".into()));
    entries.push(sym("blobs/sha256/dup", "../../alias/layer"));
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "a.tar", &tar_bytes(&entries));
    let a = SourceArchive::open(&p, dir.path()).unwrap();
    let l = &a.images()[0].platforms[0].layers[0];
    assert_eq!(l.location.entry(), "store/real/layer");
    assert_eq!(read_blob(&a, &l.location), o.layer.gz);
}

#[test]
fn a_config_that_does_not_match_its_digest_is_refused() {
    let o = Oci::new();
    let cfg_digest = Digest::sha256_of(&o.cfg);
    let mut tampered = o.cfg.clone();
    let at = tampered.len() - 3;
    tampered[at] = b' ';
    let entries: Vec<E> = o
        .entries()
        .into_iter()
        .map(|e| match e {
            E::File(n, _) if n == blob_path(&cfg_digest) => E::File(n, tampered.clone()),
            e => e,
        })
        .collect();
    let e = open_err(&tar_bytes(&entries)).to_string();
    assert_eq!(
        e,
        format!(
            "archive entry {} does not match its digest: expected {cfg_digest}, got {}",
            blob_path(&cfg_digest),
            Digest::sha256_of(&tampered)
        )
    );
}

#[test]
fn a_manifest_naming_a_missing_blob_is_refused() {
    let o = Oci::new();
    let layer_path = blob_path(&Digest::sha256_of(&o.layer.gz));
    let entries: Vec<E> = o
        .entries()
        .into_iter()
        .filter(|e| !matches!(e, E::File(n, _) if *n == layer_path))
        .collect();
    let e = open_err(&tar_bytes(&entries)).to_string();
    assert_eq!(
        e,
        format!(
            "the archive has no {layer_path}, which {} names",
            blob_path(&Digest::sha256_of(&o.man))
        )
    );
}

#[test]
fn a_blob_whose_size_differs_from_its_descriptor_is_refused() {
    let mut o = Oci::new();
    let mut d = descriptor(media::OCI_LAYER_GZIP, &o.layer.gz);
    d.size += 1;
    o.man = manifest_json(&descriptor(media::OCI_CONFIG, &o.cfg), &[d]);
    o.index = index_of(&o.man, media::OCI_MANIFEST);
    let e = open_err(&o.tar()).to_string();
    assert!(
        e.ends_with(&format!("says {}", o.layer.gz.len() + 1))
            && e.contains(&format!("holds {} bytes", o.layer.gz.len())),
        "{e}"
    );
}

#[test]
fn more_or_fewer_layers_than_diff_ids_are_refused() {
    for diff_ids in [0usize, 2] {
        let mut o = Oci::new();
        let ids: Vec<&Digest> = std::iter::repeat_n(&o.layer.diff_id, diff_ids).collect();
        o.cfg = config_json("amd64", &ids);
        o.man = manifest_json(
            &descriptor(media::OCI_CONFIG, &o.cfg),
            &[descriptor(media::OCI_LAYER_GZIP, &o.layer.gz)],
        );
        o.index = index_of(&o.man, media::OCI_MANIFEST);
        let e = open_err(&o.tar()).to_string();
        assert_eq!(
            e,
            format!(
                "image config {} lists {diff_ids} diff_ids for 1 layers",
                blob_path(&Digest::sha256_of(&o.cfg))
            )
        );
    }
}

#[test]
fn malformed_json_is_refused_naming_the_entry() {
    let mut o = Oci::new();
    o.index = "{not json".into();
    let e = open_err(&o.tar()).to_string();
    assert!(
        e.starts_with("archive entry index.json is malformed: "),
        "{e}"
    );

    let mut o = Oci::new();
    o.man = b"[1,2,3]".to_vec();
    o.index = index_of(&o.man, media::OCI_MANIFEST);
    let e = open_err(&o.tar()).to_string();
    let entry = blob_path(&Digest::sha256_of(&o.man));
    assert!(
        e.starts_with(&format!("archive entry {entry} is malformed: ")),
        "{e}"
    );

    let e = open_err(&tar_bytes(&[file("manifest.json", "[{\"Config\":1}]")])).to_string();
    assert!(
        e.starts_with("archive entry manifest.json is malformed: "),
        "{e}"
    );
    let e = open_err(&tar_bytes(&[file("something", "else")])).to_string();
    assert_eq!(e, "the archive holds neither index.json (an OCI layout) nor manifest.json (docker save): it is not an image archive");
}

#[test]
fn indexes_nested_too_deep_are_refused() {
    let o = Oci::new();
    let mut entries = o.entries();
    let mut top = descriptor(media::OCI_MANIFEST, &o.man);
    for _ in 0..6 {
        let idx = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [top],
        }))
        .unwrap();
        entries.push(file(&blob_path(&Digest::sha256_of(&idx)), idx.clone()));
        top = descriptor(media::OCI_INDEX, &idx);
    }
    entries[1] = file(
        "index.json",
        serde_json::to_string(&serde_json::json!({"schemaVersion": 2, "manifests": [top]}))
            .unwrap(),
    );
    let e = open_err(&tar_bytes(&entries)).to_string();
    assert!(e.ends_with("nests indexes more than 4 deep"), "{e}");
}

#[test]
fn a_config_too_big_for_a_small_blob_is_refused_unread() {
    let l = layer("big");
    let mut cfg = config_json("amd64", &[&l.diff_id]);
    cfg.resize(ferry_core::MAX_SMALL_BLOB as usize + 1, b' ');
    let manifest = r#"[{"Config":"big.json","RepoTags":[],"Layers":["l.tar"]}]"#;
    let e = open_err(&tar_bytes(&[
        file("big.json", cfg),
        file("l.tar", l.tar),
        file("manifest.json", manifest),
    ]))
    .to_string();
    assert_eq!(
        e,
        format!(
            "archive entry big.json is {} bytes; a manifest or image config may hold at most 4 MiB",
            ferry_core::MAX_SMALL_BLOB + 1
        )
    );
}

#[test]
fn docker_archive_naming_missing_or_mismatched_files_is_refused() {
    let l = layer("d");
    let cfg = config_json("amd64", &[&l.diff_id]);
    let cfg_name = format!("{}.json", Digest::sha256_of(&cfg).hex());
    let manifest = |layer: &str| {
        format!(r#"[{{"Config":"{cfg_name}","RepoTags":["a:1"],"Layers":["{layer}"]}}]"#)
    };
    // A layer file that is not there.
    let e = open_err(&tar_bytes(&[
        file(&cfg_name, cfg.clone()),
        file("manifest.json", manifest("x/layer.tar")),
    ]))
    .to_string();
    assert_eq!(
        e,
        "the archive has no x/layer.tar, which manifest.json (image 0) names"
    );
    // A dangling symlink.
    let e = open_err(&tar_bytes(&[
        file(&cfg_name, cfg.clone()),
        sym("x/layer.tar", "../y/layer.tar"),
        file("manifest.json", manifest("x/layer.tar")),
    ]))
    .to_string();
    assert_eq!(
        e,
        "the archive has no x/layer.tar, which manifest.json (image 0) names"
    );
    // A config whose name is not its digest.
    let mut other = cfg.clone();
    other.push(b' ');
    let e = open_err(&tar_bytes(&[
        file(&cfg_name, other),
        file("l.tar", l.tar.clone()),
        file("manifest.json", manifest("l.tar")),
    ]))
    .to_string();
    assert!(
        e.starts_with(&format!(
            "archive entry {cfg_name} does not match its digest"
        )),
        "{e}"
    );
    // An uncompressed layer named after a digest that is not its diff_id.
    let wrong = Digest::sha256_of(b"other");
    let e = open_err(&tar_bytes(&[
        file(&cfg_name, cfg.clone()),
        file(&blob_path(&wrong), l.tar.clone()),
        file("manifest.json", manifest(&blob_path(&wrong))),
    ]))
    .to_string();
    assert_eq!(
        e,
        format!(
            "layer {} is uncompressed and named after digest {wrong}, but the image config says its content is {}",
            blob_path(&wrong),
            l.diff_id
        )
    );
}

#[test]
fn a_layout_directory_whose_blob_links_outside_is_refused() {
    let o = Oci::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    for e in o.entries() {
        if let E::File(n, d) = e {
            std::fs::write(dir.join(n), d).unwrap();
        }
    }
    assert!(SourceArchive::open(&dir, work.path()).is_ok());
    let layer = dir.join(blob_path(&Digest::sha256_of(&o.layer.gz)));
    let outside = work.path().join("outside");
    std::fs::rename(&layer, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &layer).unwrap();
    let e = SourceArchive::open(&dir, work.path()).unwrap_err();
    assert!(matches!(e, ReadError::LinkEscapes { .. }), "{e:?}");
}

#[test]
fn an_index_listing_too_many_manifests_is_refused() {
    let o = Oci::new();
    let mut entries = o.entries();
    let one = descriptor(media::OCI_MANIFEST, &o.man);
    let idx = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_INDEX,
        "manifests": vec![one; 1000],
    }))
    .unwrap();
    entries.push(file(&blob_path(&Digest::sha256_of(&idx)), idx.clone()));
    entries[1] = file("index.json", index_of(&idx, media::OCI_INDEX));
    let e = open_err(&tar_bytes(&entries)).to_string();
    assert_eq!(
        e,
        format!(
            "archive entry {} brings the image past 1000 manifests; the index is refused",
            blob_path(&o.man_digest())
        )
    );
}

#[test]
fn a_manifest_json_beside_an_index_naming_a_missing_file_is_refused() {
    let o = Oci::new();
    let missing = blob_path(&Digest::sha256_of(b"not here"));
    let mut entries = o.entries();
    entries.push(file(
        "manifest.json",
        format!(
            r#"[{{"Config":"{}","RepoTags":["a:1"],"Layers":["{missing}"]}}]"#,
            blob_path(&Digest::sha256_of(&o.cfg))
        ),
    ));
    let e = open_err(&tar_bytes(&entries)).to_string();
    assert_eq!(
        e,
        format!("the archive has no {missing}, which manifest.json (image 0) names")
    );
}

#[test]
fn one_big_config_named_by_many_images_is_refused_not_held_many_times() {
    // 4 MiB of config, named by 20 entries of manifest.json: 80 MiB if each were held.
    let l = layer("amp");
    let mut cfg = config_json("amd64", &[&l.diff_id]);
    cfg.resize(ferry_core::MAX_SMALL_BLOB as usize - 1, b' ');
    let one = r#"{"Config":"c.json","RepoTags":[],"Layers":["l.tar"]}"#;
    let manifest = format!("[{}]", vec![one; 20].join(","));
    let e = open_err(&tar_bytes(&[
        file("c.json", cfg),
        file("l.tar", l.tar),
        file("manifest.json", manifest),
    ]))
    .to_string();
    assert_eq!(
        e,
        "archive entry c.json brings the manifests and configs read past 67108864 bytes; the archive is refused"
    );
}

#[test]
fn many_links_through_long_paths_are_refused_quickly() {
    // `s` and `d/…/d/s` (38 levels, GNU long names) each link 50 `d`s deeper, so a link to
    // `s/s/…/s` builds a path of ~3,800 bytes over 39 hops, each step looked up: ~4 MB of
    // hashing per link. Without a bound on that work, 20,000 such links take hours at open.
    let d50 = vec!["d"; 50].join("/");
    let mut links = tar::Builder::new(Vec::new());
    let mut link = |path: &str, target: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        links.append_link(&mut h, path, target).unwrap();
    };
    let mut level = String::new();
    for _ in 0..38 {
        link(&format!("{level}s"), &d50);
        level = format!("{level}{d50}/");
    }
    let ss = vec!["s"; 38].join("/");
    for i in 0..20_000 {
        link(&format!("l{i}"), &ss);
    }
    let mut bytes = tar_bytes(&Oci::new().entries());
    bytes.truncate(bytes.len() - 1024);
    bytes.extend(links.into_inner().unwrap());
    let started = std::time::Instant::now();
    let e = open_err(&bytes);
    let took = started.elapsed();
    assert!(matches!(e, ReadError::TooManyLinks { .. }), "{e:?}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}

#[test]
fn an_archive_of_too_many_entries_is_refused() {
    let mut entries = Oci::new().entries();
    for i in 0..100_001 {
        entries.push(E::Dir(format!("d{i}")));
    }
    let e = open_err(&tar_bytes(&entries)).to_string();
    assert!(
        e.starts_with("the archive holds more than 100000 entries"),
        "{e}"
    );
}

#[test]
fn an_uncompressed_oci_layer_that_is_not_its_diff_id_is_refused_at_open() {
    let l = layer("plain");
    let other = layer("other");
    let cfg = config_json("amd64", &[&other.diff_id]);
    let ld = descriptor(media::OCI_LAYER_TAR, &l.tar);
    let man = manifest_json(
        &descriptor(media::OCI_CONFIG, &cfg),
        std::slice::from_ref(&ld),
    );
    let e = open_err(&tar_bytes(&[
        file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
        file("index.json", index_of(&man, media::OCI_MANIFEST)),
        file(&blob_path(&Digest::sha256_of(&man)), man.clone()),
        file(&blob_path(&Digest::sha256_of(&cfg)), cfg.clone()),
        file(&blob_path(&ld.digest), l.tar.clone()),
    ]))
    .to_string();
    assert_eq!(
        e,
        format!(
            "layer {} is uncompressed and named after digest {}, but the image config says its content is {}",
            blob_path(&ld.digest),
            ld.digest,
            other.diff_id
        )
    );
}

#[test]
fn a_layout_directory_blob_linked_inside_is_opened_where_the_link_led_at_open() {
    // Swapping the link after open must not lead the reads elsewhere (or to a FIFO).
    let o = Oci::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::create_dir_all(dir.join("store")).unwrap();
    for e in o.entries() {
        if let E::File(n, d) = e {
            std::fs::write(dir.join(n), d).unwrap();
        }
    }
    let layer = dir.join(blob_path(&Digest::sha256_of(&o.layer.gz)));
    std::fs::rename(&layer, dir.join("store/layer")).unwrap();
    std::os::unix::fs::symlink("../../store/layer", &layer).unwrap();
    let a = SourceArchive::open(&dir, work.path()).unwrap();
    let loc = &a.images()[0].platforms[0].layers[0].location;
    assert_eq!(loc.entry(), "store/layer");
    std::fs::remove_file(&layer).unwrap();
    std::os::unix::fs::symlink(work.path().join("elsewhere"), &layer).unwrap();
    assert_eq!(read_blob(&a, loc), o.layer.gz);
}

#[test]
fn a_pax_header_or_long_name_over_1_mib_is_refused_unread() {
    // The tar crate would read it whole into memory: a 2 MiB header in an archive of any
    // size must not cost its size in memory.
    for kind in [tar::EntryType::XHeader, tar::EntryType::GNULongName] {
        let mut bytes = tar_bytes(&Oci::new().entries());
        bytes.truncate(bytes.len() - 1024);
        let body = vec![b'a'; 2 << 20];
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(kind);
        h.set_size(body.len() as u64);
        h.set_cksum();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(&body);
        let mut h = tar::Header::new_gnu();
        h.set_path("x").unwrap();
        h.set_size(0);
        h.set_cksum();
        bytes.extend_from_slice(h.as_bytes());
        bytes.resize(bytes.len() + 1024, 0);
        let e = open_err(&bytes).to_string();
        assert!(
            e.ends_with("a GNU long name or PAX header holds more than 1 MiB"),
            "{e}"
        );
    }
}
