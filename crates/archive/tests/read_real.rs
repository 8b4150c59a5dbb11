//! The readers against archives made by the real tools: skopeo's `docker-archive:`,
//! `oci-archive:` and `oci:`, podman save in both formats. The source is an OCI layout
//! written by ferry's own writer. Under `CI=true` a missing tool fails the test.

mod common;

use std::io::Read;
use std::path::Path;

use common::*;
use ferry_archive::{ArchiveKind, SourceArchive, SourceImage};
use ferry_core::media::Compression;
use ferry_core::Digest;
use ferry_testkit::real::{self, Podman};

/// An OCI layout with one two-layer image `example.com/app:1` (ref.name `1`).
fn layout(dir: &Path) -> (Vec<Layer>, ferry_archive::ImageParts) {
    let mut mem = Mem::default();
    let layers = vec![layer("real-base"), layer("real-top")];
    let p = parts(&mut mem, "amd64", &[&layers[0], &layers[1]]);
    ferry_archive::Plan::new(&[single("example.com/app:1", p.clone())])
        .write_dir(&mem, &dir.with_extension("tmp"), dir)
        .unwrap();
    (layers, p)
}

/// Every layer's content, decompressed as sniffed, hashes to its diff_id, and the config
/// is the source's.
fn assert_layers_match(a: &SourceArchive, img: &SourceImage, layers: &[Layer]) {
    let [plat] = img.platforms.as_slice() else {
        panic!("{img:?}")
    };
    assert_eq!(plat.layers.len(), layers.len());
    for (got, want) in plat.layers.iter().zip(layers) {
        assert_eq!(got.diff_id, want.diff_id);
        let raw = read_blob(a, &got.location);
        assert_eq!(Digest::sha256_of(&raw), got.descriptor.digest);
        let mut content = Vec::new();
        match got.compression {
            Compression::Gzip => {
                flate2::read::MultiGzDecoder::new(&raw[..])
                    .read_to_end(&mut content)
                    .unwrap();
            }
            Compression::Zstd => content = zstd::stream::decode_all(&raw[..]).unwrap(),
            Compression::None => content = raw,
        }
        assert_eq!(Digest::sha256_of(&content), want.diff_id);
    }
}

#[test]
fn skopeo_docker_archive_oci_archive_and_oci_dir_read() {
    if real::tool("skopeo").is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let (layers, parts) = layout(&src);
    let from = format!("oci:{}:1", src.display());

    let docker = work.path().join("docker.tar");
    real::skopeo_copy(
        &from,
        &format!("docker-archive:{}:example.com/app:1", docker.display()),
        &[],
    )
    .unwrap();
    let a = SourceArchive::open(&docker, work.path()).unwrap();
    assert_eq!(a.kind(), ArchiveKind::DockerArchive);
    let img = a.select(Some("example.com/app:1")).unwrap();
    assert!(img.root.is_none() && img.platforms[0].manifest.is_none());
    assert!(img.platforms[0]
        .layers
        .iter()
        .all(|l| l.compression == Compression::None));
    assert_eq!(
        img.platforms[0].config.descriptor.digest,
        parts.config.digest
    );
    assert_layers_match(&a, img, &layers);

    let oci = work.path().join("oci.tar");
    real::skopeo_copy(&from, &format!("oci-archive:{}:v1", oci.display()), &[]).unwrap();
    let a = SourceArchive::open(&oci, work.path()).unwrap();
    assert_eq!(a.kind(), ArchiveKind::OciArchive);
    let img = a.select(Some("v1")).unwrap();
    assert_eq!(
        img.root.as_ref().unwrap().descriptor.digest,
        parts.manifest.digest,
        "copied byte for byte"
    );
    assert_layers_match(&a, img, &layers);

    let dir = work.path().join("copy");
    real::skopeo_copy(&from, &format!("oci:{}:v2", dir.display()), &[]).unwrap();
    let a = SourceArchive::open(&dir, work.path()).unwrap();
    assert_eq!(a.kind(), ArchiveKind::OciLayoutDir);
    assert_layers_match(&a, a.select(None).unwrap(), &layers);
}

#[test]
fn podman_save_docker_archive_and_oci_archive_read() {
    let Some(podman) = Podman::new() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    // Into podman's storage from ferry's legacy archive (docker save's layout).
    let mut mem = Mem::default();
    let layers = vec![layer("podman-base"), layer("podman-top")];
    let p = parts(&mut mem, "amd64", &[&layers[0], &layers[1]]);
    let legacy = work.path().join("legacy.tar");
    let out = std::fs::File::create(&legacy).unwrap();
    ferry_archive::write_legacy(&[single("example.com/app:1", p)], &mem, work.path(), out).unwrap();
    podman.load(&legacy).unwrap();

    let docker = work.path().join("podman-docker.tar");
    podman
        .run(&["save", "-o", docker.to_str().unwrap(), "example.com/app:1"])
        .unwrap();
    let a = SourceArchive::open(&docker, work.path()).unwrap();
    assert_eq!(a.kind(), ArchiveKind::DockerArchive);
    let img = a.select(None).unwrap();
    assert_eq!(img.names, vec!["example.com/app:1"]);
    assert_layers_match(&a, img, &layers);

    let oci = work.path().join("podman-oci.tar");
    podman
        .run(&[
            "save",
            "--format",
            "oci-archive",
            "-o",
            oci.to_str().unwrap(),
            "example.com/app:1",
        ])
        .unwrap();
    let a = SourceArchive::open(&oci, work.path()).unwrap();
    assert_eq!(a.kind(), ArchiveKind::OciArchive);
    let img = a.select(None).unwrap();
    assert!(
        img.names.iter().any(|n| n.contains("app")),
        "{:?}",
        img.names
    );
    assert_layers_match(&a, img, &layers);
}

#[test]
fn umoci_layout_with_two_tags_reads_both_images() {
    let Some(umoci) = real::tool("umoci") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let lay = work.path().join("lay");
    let lay_s = lay.to_str().unwrap();
    let f = write(work.path(), "f", b"hello from umoci\n");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&umoci)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umoci {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["init", "--layout", lay_s]);
    run(&["new", "--image", &format!("{lay_s}:empty")]);
    run(&["new", "--image", &format!("{lay_s}:one")]);
    run(&[
        "insert",
        "--image",
        &format!("{lay_s}:one"),
        f.to_str().unwrap(),
        "/f",
    ]);
    let a = SourceArchive::open(&lay, work.path()).unwrap();
    assert_eq!(a.kind(), ArchiveKind::OciLayoutDir);
    assert_eq!(a.images().len(), 2);
    assert!(a.select(Some("empty")).unwrap().platforms[0]
        .layers
        .is_empty());
    let one = &a.select(Some("one")).unwrap().platforms[0];
    assert_eq!(one.layers.len(), 1);
    let l = &one.layers[0];
    assert_eq!(l.compression, Compression::Gzip);
    let raw = read_blob(&a, &l.location);
    let mut content = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut content)
        .unwrap();
    assert_eq!(Digest::sha256_of(&content), l.diff_id);
    let e = a.select(None).unwrap_err().to_string();
    assert!(
        e.ends_with("0: empty, 1: one") || e.ends_with("0: one, 1: empty"),
        "{e}"
    );
}

#[test]
fn podman_save_of_two_images_reads_both() {
    let Some(podman) = Podman::new() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let mut mem = Mem::default();
    let shared = layer("shared");
    let (a1, b1) = (layer("only-a"), layer("only-b"));
    let pa = parts(&mut mem, "amd64", &[&shared, &a1]);
    let pb = parts(&mut mem, "amd64", &[&shared, &b1]);
    let legacy = work.path().join("legacy.tar");
    let out = std::fs::File::create(&legacy).unwrap();
    ferry_archive::write_legacy(
        &[single("example.com/a:1", pa), single("example.com/b:2", pb)],
        &mem,
        work.path(),
        out,
    )
    .unwrap();
    podman.load(&legacy).unwrap();
    let both = work.path().join("both.tar");
    podman
        .run(&[
            "save",
            "-m",
            "-o",
            both.to_str().unwrap(),
            "example.com/a:1",
            "example.com/b:2",
        ])
        .unwrap();
    let a = SourceArchive::open(&both, work.path()).unwrap();
    assert_eq!(a.kind(), ArchiveKind::DockerArchive);
    let ia = a.select(Some("example.com/a:1")).unwrap();
    let ib = a.select(Some("example.com/b:2")).unwrap();
    assert_layers_match(&a, ia, &[shared, a1]);
    assert_eq!(
        ia.platforms[0].layers[0].location, ib.platforms[0].layers[0].location,
        "stored once"
    );
    assert_layers_match(&a, ib, &[layer("shared"), b1]);
}
