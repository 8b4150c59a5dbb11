//! The readers against every archive format ferry's writers make, and archives built byte
//! by byte as docker writes them.

mod common;

use common::*;
use ferry_archive::{ArchiveKind, SourceArchive};
use ferry_core::media::Compression;
use ferry_core::{media, Digest};
use std::io::Read;

fn open(
    bytes: &[u8],
) -> (
    tempfile::TempDir,
    Result<SourceArchive, ferry_archive::ReadError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "archive", bytes);
    let a = SourceArchive::open(&p, dir.path());
    (dir, a)
}

#[test]
fn ferry_default_archive_reads_back_with_exact_manifest_bytes() {
    let mut mem = Mem::default();
    let (l1, l2) = (layer("base"), layer("app"));
    let p = parts(&mut mem, "amd64", &[&l1, &l2]);
    let img = single("alpine:3.20", p.clone());
    let bytes = ferry_default(&mem, &[img]);
    let (_d, a) = open(&bytes);
    let a = a.unwrap();
    assert_eq!(a.kind(), ArchiveKind::DockerOci);
    assert_eq!(a.wrapper(), Compression::None);
    let [only] = a.images() else {
        panic!("{:?}", a.images())
    };
    assert_eq!(only.names, vec!["docker.io/library/alpine:3.20", "3.20"]);
    let root = only.root.as_ref().unwrap();
    assert_eq!(root.descriptor.digest, p.manifest.digest);
    assert_eq!(root.bytes, mem.0[&p.manifest.digest]);
    let [plat] = only.platforms.as_slice() else {
        panic!()
    };
    assert_eq!(plat.platform.as_ref().unwrap().architecture, "amd64");
    assert_eq!(plat.manifest.as_ref().unwrap().bytes, root.bytes);
    assert_eq!(plat.config.bytes, mem.0[&p.config.digest]);
    assert_eq!(plat.layers.len(), 2);
    for (got, want) in plat.layers.iter().zip([&l1, &l2]) {
        assert_eq!(got.compression, Compression::Gzip);
        assert_eq!(got.diff_id, want.diff_id);
        assert_eq!(got.descriptor.digest, Digest::sha256_of(&want.gz));
        assert_eq!(read_blob(&a, &got.location), want.gz);
        assert!(a.file_region(&got.location).is_some());
    }
    // From an offset: the rest of the bytes.
    let loc = &plat.layers[0].location;
    let mut tail = Vec::new();
    std::io::Read::read_to_end(&mut a.open_blob(loc, 10).unwrap(), &mut tail).unwrap();
    assert_eq!(tail, l1.gz[10..]);
    assert!(a.open_blob(loc, loc.len() + 1).is_err());
    assert_eq!(a.select(None).unwrap(), only);
    assert_eq!(a.select(Some("alpine:3.20")).unwrap(), only);
    assert_eq!(a.select(Some("0")).unwrap(), only);
}

#[test]
fn ferry_all_platforms_archive_reads_the_index_and_each_platform() {
    let mut mem = Mem::default();
    let (l1, l2) = (layer("amd"), layer("arm"));
    let amd = parts(&mut mem, "amd64", &[&l1]);
    let arm = parts(&mut mem, "arm64", &[&l2]);
    let img = multi(
        &mut mem,
        "example.com/app:1",
        vec![amd.clone(), arm.clone()],
    );
    let index = img.root.clone();
    let (_d, a) = open(&ferry_default(&mem, &[img]));
    let a = a.unwrap();
    let [only] = a.images() else { panic!() };
    let root = only.root.as_ref().unwrap();
    assert_eq!(root.descriptor.digest, index.digest);
    assert!(media::is_index(&root.descriptor.media_type));
    let archs: Vec<&str> = only
        .platforms
        .iter()
        .map(|p| p.platform.as_ref().unwrap().architecture.as_str())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    assert_eq!(
        only.platforms[1]
            .manifest
            .as_ref()
            .unwrap()
            .descriptor
            .digest,
        arm.manifest.digest
    );
    assert_eq!(read_blob(&a, &only.platforms[1].layers[0].location), l2.gz);
}

#[test]
fn oci_layout_directory_from_ferry_reads() {
    let mut mem = Mem::default();
    let l1 = layer("x");
    let p = parts(&mut mem, "amd64", &[&l1]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    ferry_archive::Plan::new(&[single("busybox:1", p.clone())])
        .write_dir(&mem, &work.path().join(".tmp"), &dir)
        .unwrap();
    let a = SourceArchive::open(&dir, work.path()).unwrap();
    assert_eq!(a.kind(), ArchiveKind::OciLayoutDir);
    let img = a.select(Some("docker.io/library/busybox:1")).unwrap();
    let layer = &img.platforms[0].layers[0];
    assert_eq!(read_blob(&a, &layer.location), l1.gz);
    let (path, start, len) = a.file_region(&layer.location).unwrap();
    assert!(path.starts_with(dir.canonicalize().unwrap()));
    assert_eq!((start, len), (0, l1.gz.len() as u64));
}

#[test]
fn ferry_legacy_archive_reads_without_manifests() {
    let mut mem = Mem::default();
    let (l1, l2) = (layer("one"), layer("two"));
    let p = parts(&mut mem, "arm64", &[&l1, &l2]);
    let work = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    ferry_archive::write_legacy(
        &[single("alpine:3.20", p.clone())],
        &mem,
        work.path(),
        &mut out,
    )
    .unwrap();
    let (_d, a) = open(&out);
    let a = a.unwrap();
    assert_eq!(a.kind(), ArchiveKind::DockerArchive);
    let [img] = a.images() else { panic!() };
    assert_eq!(img.names, vec!["alpine:3.20"]);
    assert!(img.root.is_none());
    let plat = &img.platforms[0];
    assert!(plat.manifest.is_none());
    assert_eq!(plat.config.descriptor.digest, p.config.digest);
    assert_eq!(plat.platform.as_ref().unwrap().architecture, "arm64");
    for (got, want) in plat.layers.iter().zip([&l1, &l2]) {
        assert_eq!(got.compression, Compression::None);
        assert_eq!(got.descriptor.digest, want.diff_id);
        assert_eq!(
            got.descriptor.media_type,
            "application/vnd.docker.image.rootfs.diff.tar"
        );
        assert_eq!(read_blob(&a, &got.location), want.tar);
    }
}

/// `docker save` of Docker 1.10 to 24 (moby's image/tarexport before v25): per layer a
/// directory named by its v1 id holding `VERSION`, `json` and `layer.tar` (uncompressed);
/// the config as `<config hex>.json`; `manifest.json`; `repositories`. In newer ones (17.x on),
/// a layer already written under another v1 id is a symlink `../<first id>/layer.tar`.
fn docker_legacy_save() -> (Vec<u8>, Layer, Layer, Vec<u8>, Vec<u8>) {
    let (a, b) = (layer("base"), layer("top"));
    let cfg1 = config_json("amd64", &[&a.diff_id, &b.diff_id]);
    let cfg2 = config_json("amd64", &[&b.diff_id]);
    let (c1, c2) = (Digest::sha256_of(&cfg1), Digest::sha256_of(&cfg2));
    let (id_a, id_ab, id_b) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let manifest = format!(
        r#"[{{"Config":"{c1h}.json","RepoTags":["alpine:3.20"],"Layers":["{id_a}/layer.tar","{id_ab}/layer.tar"]}},{{"Config":"{c2h}.json","RepoTags":null,"Layers":["{id_b}/layer.tar"]}}]"#,
        c1h = c1.hex(),
        c2h = c2.hex()
    );
    let repositories =
        format!(r#"{{"alpine":{{"3.20":"{id_ab}"}},"other":{{"latest":"{id_b}"}}}}"#);
    let mut entries = Vec::new();
    for (id, body) in [(&id_a, Some(&a)), (&id_ab, Some(&b)), (&id_b, None)] {
        entries.push(E::Dir(format!("{id}/")));
        entries.push(file(&format!("{id}/VERSION"), "1.0"));
        entries.push(file(&format!("{id}/json"), format!(r#"{{"id":"{id}"}}"#)));
        match body {
            Some(l) => entries.push(file(&format!("{id}/layer.tar"), l.tar.clone())),
            None => entries.push(sym(
                &format!("{id}/layer.tar"),
                &format!("../{id_ab}/layer.tar"),
            )),
        }
    }
    entries.push(file(&format!("{}.json", c1.hex()), cfg1.clone()));
    entries.push(file(&format!("{}.json", c2.hex()), cfg2.clone()));
    entries.push(file("manifest.json", manifest));
    entries.push(file("repositories", repositories));
    (tar_bytes(&entries), a, b, cfg1, cfg2)
}

#[test]
fn docker_save_before_25_reads_with_symlinked_layers_and_repositories() {
    let (bytes, a, b, cfg1, cfg2) = docker_legacy_save();
    let (_d, arch) = open(&bytes);
    let arch = arch.unwrap();
    assert_eq!(arch.kind(), ArchiveKind::DockerArchive);
    let imgs = arch.images();
    assert_eq!(imgs.len(), 2);
    assert_eq!(imgs[0].names, vec!["alpine:3.20"]);
    assert_eq!(imgs[1].names, vec!["other:latest"], "named by repositories");
    assert_eq!(imgs[0].platforms[0].config.bytes, cfg1);
    assert_eq!(imgs[1].platforms[0].config.bytes, cfg2);
    let linked = &imgs[1].platforms[0].layers[0];
    assert_eq!(
        linked.location, imgs[0].platforms[0].layers[1].location,
        "the symlink is followed"
    );
    assert_eq!(read_blob(&arch, &linked.location), b.tar);
    assert_eq!(
        read_blob(&arch, &imgs[0].platforms[0].layers[0].location),
        a.tar
    );
    assert_eq!(linked.diff_id, b.diff_id);
    let e = arch.select(None).unwrap_err().to_string();
    assert_eq!(
        e,
        "the archive holds several images; choose one with --image NAME or --image INDEX (from 0): 0: alpine:3.20, 1: other:latest"
    );
    assert_eq!(arch.select(Some("1")).unwrap(), &imgs[1]);
    assert_eq!(
        arch.select(Some("docker.io/library/alpine:3.20")).unwrap(),
        &imgs[0]
    );
    let e = arch.select(Some("nope:1")).unwrap_err().to_string();
    assert_eq!(
        e,
        "the archive holds no image \"nope:1\"; it holds: 0: alpine:3.20, 1: other:latest"
    );
}

/// `docker save` from Docker 25 on (moby v25 image/tarexport): an OCI layout (`oci-layout`,
/// `index.json` with `io.containerd.image.name` and `org.opencontainers.image.ref.name`
/// annotations, `blobs/sha256/…` with UNCOMPRESSED layers and an OCI manifest) plus the old
/// `manifest.json` whose paths point into `blobs/sha256`, and `repositories`.
fn docker25_save(tags: bool) -> (Vec<u8>, Layer, Vec<u8>, Vec<u8>) {
    let l = layer("d25");
    let cfg = config_json("amd64", &[&l.diff_id]);
    let cfg_d =
        ferry_core::Descriptor::new(media::OCI_CONFIG, Digest::sha256_of(&cfg), cfg.len() as u64);
    let layer_d =
        ferry_core::Descriptor::new(media::OCI_LAYER_TAR, l.diff_id.clone(), l.tar.len() as u64);
    let man = manifest_json(&cfg_d, std::slice::from_ref(&layer_d));
    let man_digest = Digest::sha256_of(&man);
    let ann = if tags {
        r#","annotations":{"io.containerd.image.name":"docker.io/library/hello:1","org.opencontainers.image.ref.name":"1"}"#
    } else {
        ""
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{man_digest}","size":{}{ann}}}]}}"#,
        man.len()
    );
    let manifest_json = format!(
        r#"[{{"Config":"{}","RepoTags":[{}],"Layers":["{}"]}}]"#,
        blob_path(&cfg_d.digest),
        if tags { r#""hello:1","extra:2""# } else { "" },
        blob_path(&l.diff_id)
    );
    let bytes = tar_bytes(&[
        E::Dir("blobs/".into()),
        E::Dir("blobs/sha256/".into()),
        file(&blob_path(&l.diff_id), l.tar.clone()),
        file(&blob_path(&cfg_d.digest), cfg.clone()),
        file(&blob_path(&man_digest), man.clone()),
        file("index.json", index),
        file("manifest.json", manifest_json),
        file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
        file("repositories", r#"{"hello":{"1":"x"}}"#),
    ]);
    (bytes, l, man, cfg)
}

#[test]
fn docker_save_25_reads_the_oci_layout_and_adds_repo_tags() {
    let (bytes, l, man, cfg) = docker25_save(true);
    let (_d, a) = open(&bytes);
    let a = a.unwrap();
    assert_eq!(a.kind(), ArchiveKind::DockerOci);
    let [img] = a.images() else { panic!() };
    // hello:1 is the same reference as docker.io/library/hello:1: not added twice.
    assert_eq!(img.names, vec!["docker.io/library/hello:1", "1", "extra:2"]);
    assert_eq!(img.root.as_ref().unwrap().bytes, man);
    let p = &img.platforms[0];
    assert_eq!(p.config.bytes, cfg);
    assert_eq!(p.layers[0].compression, Compression::None);
    assert_eq!(p.layers[0].descriptor.media_type, media::OCI_LAYER_TAR);
    assert_eq!(read_blob(&a, &p.layers[0].location), l.tar);
    assert_eq!(a.select(Some("extra:2")).unwrap(), img);
}

#[test]
fn docker_save_25_of_an_untagged_image_has_no_names_and_is_chosen_alone() {
    let (bytes, ..) = docker25_save(false);
    let (_d, a) = open(&bytes);
    let a = a.unwrap();
    let img = a.select(None).unwrap();
    assert!(img.names.is_empty());
    assert!(img.label().starts_with("sha256:"));
}

#[test]
fn gzip_and_zstd_wrapped_archives_are_sniffed_and_spooled() {
    let (bytes, _, b, _, _) = docker_legacy_save();
    for (wrapped, want) in [
        (gzip(&bytes), Compression::Gzip),
        (zstd(&bytes), Compression::Zstd),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // Named .tar on purpose: the bytes tell, not the name.
        let p = write(dir.path(), "archive.tar", &wrapped);
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        let a = SourceArchive::open(&p, &spool).unwrap();
        assert_eq!(a.wrapper(), want);
        assert_eq!(a.kind(), ArchiveKind::DockerArchive);
        let loc = &a.images()[1].platforms[0].layers[0].location;
        assert!(a.file_region(loc).is_none(), "the spool file has no name");
        assert_eq!(read_blob(&a, loc), b.tar);
        assert_eq!(
            std::fs::read_dir(&spool).unwrap().count(),
            0,
            "the spool file is unnamed"
        );
    }
}

#[test]
fn blobs_are_read_from_several_threads_at_once() {
    let (bytes, a, b, _, _) = docker_legacy_save();
    let (_d, arch) = open(&bytes);
    let arch = arch.unwrap();
    let layers = &arch.images()[0].platforms[0].layers;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    assert_eq!(read_blob(&arch, &layers[0].location), a.tar);
                    assert_eq!(read_blob(&arch, &layers[1].location), b.tar);
                }
            });
        }
    });
}

#[test]
fn sha512_blobs_under_long_tar_names_are_found_and_verified() {
    use sha2::Digest as _;
    let sha512 = |mem: &mut Mem, media_type: &str, bytes: &[u8]| {
        let d: Digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
            .parse()
            .unwrap();
        mem.0.insert(d.clone(), bytes.to_vec());
        ferry_core::Descriptor::new(media_type, d, bytes.len() as u64)
    };
    let mut mem = Mem::default();
    let l = layer("long");
    let config = sha512(
        &mut mem,
        media::OCI_CONFIG,
        &config_json("amd64", &[&l.diff_id]),
    );
    let layers = vec![sha512(&mut mem, media::OCI_LAYER_GZIP, &l.gz)];
    let manifest = sha512(
        &mut mem,
        media::OCI_MANIFEST,
        &manifest_json(&config, &layers),
    );
    let img = single(
        "x:1",
        ferry_archive::ImageParts {
            manifest: manifest.clone(),
            config,
            layers,
            platform: None,
        },
    );
    let mut bytes = ferry_default(&mem, &[img]);
    let (_d, a) = open(&bytes);
    let a = a.unwrap();
    let p = &a.images()[0].platforms[0];
    assert_eq!(
        p.manifest.as_ref().unwrap().descriptor.digest,
        manifest.digest
    );
    assert_eq!(
        p.layers[0].location.entry().len(),
        "blobs/sha512/".len() + 128
    );
    assert_eq!(read_blob(&a, &p.layers[0].location), l.gz);
    // The manifest's bytes are checked with sha512 too.
    let at = bytes.windows(8).position(|w| w == b"\"layers\"").unwrap();
    bytes[at + 1] = b'L';
    let (_d, e) = open(&bytes);
    let e = e.unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "does not match its digest: expected {}",
            manifest.digest
        )),
        "{e}"
    );
}

#[test]
fn an_archive_read_from_a_pipe_is_spooled() {
    let (bytes, _, b, _, _) = docker_legacy_save();
    for data in [bytes.clone(), gzip(&bytes)] {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, data).unwrap())
        };
        let a = SourceArchive::open(&fifo, dir.path()).unwrap();
        writer.join().unwrap();
        let loc = &a.images()[1].platforms[0].layers[0].location;
        assert!(a.file_region(loc).is_none());
        assert_eq!(read_blob(&a, loc), b.tar);
    }
}

#[test]
fn an_artifact_without_diff_ids_reads_with_its_layer_digests() {
    let mut mem = Mem::default();
    let config = mem.put(media::OCI_EMPTY, b"{}");
    let statement = mem.put("application/vnd.in-toto+json", br#"{"_type":"x"}"#);
    let manifest = mem.put(
        media::OCI_MANIFEST,
        &manifest_json(&config, std::slice::from_ref(&statement)),
    );
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let img = single(
        "example.com/sbom:1",
        ferry_archive::ImageParts {
            manifest,
            config,
            layers: vec![statement.clone()],
            platform: None,
        },
    );
    ferry_archive::Plan::new(&[img])
        .write_dir(&mem, &work.path().join(".tmp"), &dir)
        .unwrap();
    let a = SourceArchive::open(&dir, work.path()).unwrap();
    let p = &a.select(None).unwrap().platforms[0];
    assert_eq!(p.layers[0].diff_id, statement.digest);
    assert!(p.platform.is_none());
}

#[test]
fn a_directory_that_is_no_layout_is_not_an_archive() {
    let work = tempfile::tempdir().unwrap();
    let e = SourceArchive::open(work.path(), work.path())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{} is not an image archive: it is neither a tar file (plain, gzip or zstd) nor an OCI layout directory",
            work.path().display()
        )
    );
}

/// Two images as Docker 25 saves them (uncompressed layers and configs under
/// `blobs/sha256`, `manifest.json` naming both), with `index.json` and the manifests as
/// `index` makes them from (manifest bytes, manifest digest) per image.
fn docker25_two(
    index: impl Fn(&[(Vec<u8>, Digest)]) -> String,
    layerless: bool,
) -> (Vec<u8>, [Layer; 2]) {
    let ls = [layer("d25a"), layer("d25b")];
    let mut entries = vec![file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#)];
    let mut mans = Vec::new();
    let mut items = Vec::new();
    for (i, l) in ls.iter().enumerate() {
        let cfg = config_json(if i == 0 { "amd64" } else { "arm64" }, &[&l.diff_id]);
        let cfg_d = ferry_core::Descriptor::new(
            media::OCI_CONFIG,
            Digest::sha256_of(&cfg),
            cfg.len() as u64,
        );
        let layer_d = ferry_core::Descriptor::new(
            media::OCI_LAYER_TAR,
            l.diff_id.clone(),
            l.tar.len() as u64,
        );
        let man = manifest_json(
            &cfg_d,
            if layerless {
                &[]
            } else {
                std::slice::from_ref(&layer_d)
            },
        );
        let d = Digest::sha256_of(&man);
        entries.push(file(&blob_path(&l.diff_id), l.tar.clone()));
        entries.push(file(&blob_path(&cfg_d.digest), cfg));
        entries.push(file(&blob_path(&d), man.clone()));
        let tags = if i == 0 { r#""hello:1","hello:2""# } else { "" };
        items.push(format!(
            r#"{{"Config":"{}","RepoTags":[{tags}],"Layers":["{}"]}}"#,
            blob_path(&cfg_d.digest),
            blob_path(&l.diff_id)
        ));
        mans.push((man, d));
    }
    entries.push(file("index.json", index(&mans)));
    entries.push(file("manifest.json", format!("[{}]", items.join(","))));
    (tar_bytes(&entries), ls)
}

fn index_entry((man, d): &(Vec<u8>, Digest), tag: Option<&str>) -> String {
    let ann = match tag {
        Some(t) => format!(
            r#","annotations":{{"io.containerd.image.name":"docker.io/library/hello:{t}","org.opencontainers.image.ref.name":"{t}"}}"#
        ),
        None => String::new(),
    };
    format!(
        r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{}{ann}}}"#,
        man.len()
    )
}

fn index_of_entries(entries: &[String]) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    )
}

#[test]
fn docker_save_25_of_an_image_under_two_tags_is_one_image_with_both_names() {
    // Docker writes one index.json entry per tag, both naming the same manifest.
    let (bytes, _) = docker25_two(
        |m| {
            index_of_entries(&[
                index_entry(&m[0], Some("1")),
                index_entry(&m[0], Some("2")),
                index_entry(&m[1], None),
            ])
        },
        false,
    );
    let (_d, a) = open(&bytes);
    let a = a.unwrap();
    let [one, two] = a.images() else {
        panic!("{:?}", a.images())
    };
    assert_eq!(
        one.names,
        vec![
            "docker.io/library/hello:1",
            "1",
            "docker.io/library/hello:2",
            "2"
        ]
    );
    assert!(two.names.is_empty());
    assert_eq!(a.select(Some("hello:2")).unwrap(), one);
}

#[test]
fn docker_save_25_images_left_out_of_index_json_are_read_from_manifest_json() {
    // Untagged images saved by ID or digest are missing from index.json (moby#47210,
    // moby#51389), or index.json says `"manifests": null`.
    for nulled in [false, true] {
        let (bytes, ls) = docker25_two(
            |m| {
                if nulled {
                    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}"#.into()
                } else {
                    index_of_entries(&[index_entry(&m[0], Some("1"))])
                }
            },
            false,
        );
        let (_d, a) = open(&bytes);
        let a = a.unwrap();
        let [one, two] = a.images() else {
            panic!("{:?}", a.images())
        };
        assert_eq!(one.root.is_some(), !nulled);
        assert!(two.root.is_none() && two.platforms[0].manifest.is_none());
        assert!(one.names.iter().any(|n| n == "hello:2"), "{:?}", one.names);
        let p = &two.platforms[0];
        assert_eq!(p.layers[0].diff_id, ls[1].diff_id);
        assert_eq!(read_blob(&a, &p.layers[0].location), ls[1].tar);
    }
}

#[test]
fn docker_save_25_0_0_manifests_without_layers_are_read_from_manifest_json() {
    // moby#47065: Docker 25.0.0 wrote `"layers": []` into the OCI manifests.
    let (bytes, ls) = docker25_two(
        |m| index_of_entries(&[index_entry(&m[0], Some("1")), index_entry(&m[1], None)]),
        true,
    );
    let (_d, a) = open(&bytes);
    let a = a.unwrap();
    let [one, two] = a.images() else {
        panic!("{:?}", a.images())
    };
    assert!(one.root.is_none() && one.platforms[0].manifest.is_none());
    assert_eq!(one.names, vec!["hello:1", "hello:2"]);
    for (img, l) in [one, two].into_iter().zip(&ls) {
        assert_eq!(read_blob(&a, &img.platforms[0].layers[0].location), l.tar);
    }
}

#[test]
fn blob_names_in_pax_headers_and_gnu_long_names_are_the_entry_names() {
    // Go's archive/tar (docker, podman, skopeo) writes a long name into a PAX header and a
    // shortened one into the ustar header; GNU tar writes an `L` entry. The real name wins.
    let mut mem = Mem::default();
    let l = layer("names");
    let p = parts(&mut mem, "amd64", &[&l]);
    let layer_path = blob_path(&p.layers[0].digest);
    let plain = ferry_default(&mem, &[single("x:1", p.clone())]);
    let (_d, a) = open(&plain);
    let a = a.unwrap();
    let loc = a.images()[0].platforms[0].layers[0].location.clone();
    let mut whole = Vec::new();
    a.open_blob(&loc, 0)
        .unwrap()
        .read_to_end(&mut whole)
        .unwrap();
    // Every entry but the layer as it was, then the layer under each kind of long name.
    let mut rest = tar::Archive::new(&plain[..]);
    let mut others = Vec::new();
    for e in rest.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if name != layer_path && e.header().entry_type().is_file() {
            others.push(file(&name, data));
        }
    }
    let mut base = tar_bytes(&others);
    base.truncate(base.len() - 1024);

    // PAX: a `x` entry with `path=`, then a ustar header with a wrong short name.
    let record = {
        let body = format!(" path={layer_path}\n");
        let mut n = body.len() + 1;
        while format!("{n}{body}").len() != n {
            n += 1;
        }
        format!("{n}{body}")
    };
    let mut pax = base.clone();
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders.0/layer").unwrap();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(record.len() as u64);
    h.set_cksum();
    pax.extend_from_slice(h.as_bytes());
    pax.extend_from_slice(record.as_bytes());
    pax.resize(pax.len().next_multiple_of(512), 0);
    let mut h = tar::Header::new_ustar();
    h.set_path("blobs/sha256/short").unwrap();
    h.set_size(whole.len() as u64);
    h.set_cksum();
    pax.extend_from_slice(h.as_bytes());
    pax.extend_from_slice(&whole);
    pax.resize(pax.len().next_multiple_of(512) + 1024, 0);

    // GNU: an `L` entry holding the name (with `./` segments that clean away, to make it
    // long), then a header with the name cut short.
    let mut gnu = base;
    let long = format!("./{}{layer_path}\0", "./".repeat(40));
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(long.len() as u64);
    h.set_cksum();
    gnu.extend_from_slice(h.as_bytes());
    gnu.extend_from_slice(long.as_bytes());
    gnu.resize(gnu.len().next_multiple_of(512), 0);
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..100].copy_from_slice(&long.as_bytes()[..100]);
    h.set_size(whole.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    gnu.extend_from_slice(h.as_bytes());
    gnu.extend_from_slice(&whole);
    gnu.resize(gnu.len().next_multiple_of(512) + 1024, 0);

    for bytes in [pax, gnu] {
        let (_d, a) = open(&bytes);
        let a = a.unwrap();
        let loc = &a.images()[0].platforms[0].layers[0].location;
        assert_eq!(loc.entry(), layer_path);
        assert_eq!(read_blob(&a, loc), whole);
    }
}
