//! `ferry copy` between real registries and archives, with skopeo's location syntax.

mod common;

use std::path::Path;

use common::*;
use ferry_testkit::image::{random_image, random_index, ImageSpec, TestImage};
use ferry_testkit::real::{self, RealRegistry, RegistryAuth};

fn registry() -> Option<RealRegistry> {
    let reg = RealRegistry::start(RegistryAuth::Anonymous)?;
    real::tool("skopeo")?;
    Some(reg)
}

fn image(seed: u64) -> TestImage {
    random_image(&ImageSpec {
        seed,
        layers: 2,
        layer_size: 150_000,
        ..Default::default()
    })
}

fn copy(cache: &Path, src: &str, dst: &str, extra: &[&str]) -> std::process::Output {
    let mut all = vec!["copy", "-q"];
    all.extend_from_slice(extra);
    all.extend([src, dst]);
    ferry(cache, &all)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn layers_of(target: &str) -> Vec<String> {
    let v = real::skopeo_inspect(target, &["--tls-verify=false"])
        .unwrap_or_else(|e| panic!("skopeo inspect {target}: {e}"));
    v["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn copy_between_two_registries_keeps_the_digest_and_streams_through_the_cache() {
    let Some(a) = registry() else { return };
    let Some(b) = registry() else { return };
    let img = image(801);
    push_with_skopeo(&a, "team/app:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let out = copy(
        &cache,
        &format!("docker://{}/team/app:v1", a.host),
        &format!("docker://{}/mirror/app:v1", b.host),
        &[],
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), img.manifest_digest.to_string());
    assert_eq!(
        layers_of(&format!("docker://{}/mirror/app:v1", b.host)),
        layer_digests(&img)
    );
    // Every blob went through the verified cache.
    for l in &img.layers {
        assert!(cache.join(blob_name(&l.digest)).exists());
    }
}

#[test]
fn copy_of_every_platform_between_registries_keeps_the_index() {
    let Some(a) = registry() else { return };
    let Some(b) = registry() else { return };
    let plats: Vec<ferry_core::Platform> = ["linux/amd64", "linux/arm64"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let idx = random_index(802, &plats, true);
    push_index_with_skopeo(&a, "team/multi:v1", &idx, None);
    let work = tempfile::tempdir().unwrap();
    let out = copy(
        &work.path().join("cache"),
        &format!("docker://{}/team/multi:v1", a.host),
        &format!("docker://{}/team/multi:v1", b.host),
        &["--all-platforms"],
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), idx.digest.to_string());
    let raw = real::skopeo_inspect(
        &format!("docker://{}/team/multi:v1", b.host),
        &["--tls-verify=false", "--raw"],
    )
    .unwrap();
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(2));
}

#[test]
fn copy_from_a_registry_writes_oci_layouts_and_archives_skopeo_reads() {
    let Some(reg) = registry() else { return };
    let img = image(803);
    push_with_skopeo(&reg, "team/app:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let src = format!("docker://{}/team/app:v1", reg.host);
    let layout = work.path().join("layout");
    let oci_archive = work.path().join("oci.tar");
    let docker_archive = work.path().join("docker.tar");
    for (dst, read_as) in [
        (
            format!("oci:{}", layout.display()),
            format!("oci:{}", layout.display()),
        ),
        (
            format!("oci-archive:{}", oci_archive.display()),
            format!("oci-archive:{}", oci_archive.display()),
        ),
        (
            format!("docker-archive:{}", docker_archive.display()),
            format!("docker-archive:{}", docker_archive.display()),
        ),
    ] {
        let out = copy(&cache, &src, &dst, &[]);
        assert_ok(&out);
        let config = skopeo_config(&read_as);
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!(digests(&img.diff_ids)),
            "{dst}"
        );
    }
}

#[test]
fn copy_from_archives_to_a_registry_names_the_image_by_location() {
    let Some(reg) = registry() else { return };
    let img = image(804);
    push_with_skopeo(&reg, "team/app:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("app.tar");
    assert_ok(&pull_quiet(
        &cache,
        &[&format!("{}/team/app:v1", reg.host)],
        &archive,
    ));
    let skopeo_archive = work.path().join("skopeo.tar");
    real::skopeo_copy(
        &format!("docker://{}/team/app:v1", reg.host),
        &format!("docker-archive:{}:named/app:v7", skopeo_archive.display()),
        &["--src-tls-verify=false"],
    )
    .unwrap();
    for (src, tag) in [
        (archive.display().to_string(), "a"),
        (format!("docker-archive:{}", archive.display()), "b"),
        (format!("oci-archive:{}", archive.display()), "c"),
        (
            format!("docker-archive:{}:named/app:v7", skopeo_archive.display()),
            "d",
        ),
    ] {
        let dst = format!("docker://{}/copied/app:{tag}", reg.host);
        let out = copy(&cache, &src, &dst, &[]);
        assert_ok(&out);
        assert_eq!(layers_of(&dst), layer_digests(&img), "{src}");
    }
    let out = copy(
        &cache,
        &format!("docker-archive:{}:no/such:image", skopeo_archive.display()),
        &format!("docker://{}/copied/app:e", reg.host),
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds no image \"no/such:image\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn copy_refuses_locations_it_cannot_use_with_a_clear_message() {
    let work = tempfile::tempdir().unwrap();
    let out = copy(work.path(), "docker-daemon:alpine:3.20", "oci:x", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("docker-daemon: locations are not supported"),
        "{}",
        stderr(&out)
    );
    let out = copy(work.path(), "docker://127.0.0.1:1/a:1", "docker://127.0.0.1:1/b@sha256:0000000000000000000000000000000000000000000000000000000000000000", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("names a digest"), "{}", stderr(&out));
}

#[test]
fn copy_between_archives_checks_every_layer_and_writes_what_loaders_read() {
    let Some(reg) = registry() else { return };
    let img = image(805);
    push_with_skopeo(&reg, "team/app:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("app.tar");
    let legacy = work.path().join("legacy.tar");
    let reference = format!("{}/team/app:v1", reg.host);
    assert_ok(&pull_quiet(&cache, &[&reference], &archive));
    assert_ok(&pull_quiet(
        &cache,
        &["--format", "legacy", &reference],
        &legacy,
    ));
    let diff_ids = serde_json::json!(digests(&img.diff_ids));

    // ferry's archive to an OCI layout: the same manifest, byte for byte.
    let layout = work.path().join("layout");
    let out = copy(
        &cache,
        archive.to_str().unwrap(),
        &format!("oci:{}", layout.display()),
        &[],
    );
    assert_ok(&out);
    let raw = real::skopeo_inspect(&format!("oci:{}", layout.display()), &["--raw"]).unwrap();
    assert_eq!(raw["config"]["digest"], img.config.digest.to_string());
    assert_eq!(
        layers_of(&format!("oci:{}", layout.display())),
        layer_digests(&img)
    );

    // An archive without manifests to a docker archive, named anew: the layers as they are
    // (uncompressed) under a made OCI manifest; skopeo reads it and pushes it.
    let out_tar = work.path().join("renamed.tar");
    let out = copy(
        &cache,
        &format!("docker-archive:{}", legacy.display()),
        &format!("docker-archive:{}:renamed/app:v2", out_tar.display()),
        &[],
    );
    assert_ok(&out);
    let target = format!("docker-archive:{}", out_tar.display());
    assert_eq!(skopeo_config(&target)["rootfs"]["diff_ids"], diff_ids);
    let manifest = tar_json(&tar_files(&out_tar), "manifest.json");
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["renamed/app:v2"])
    );
    real::skopeo_copy(
        &target,
        &format!("docker://{}/from/legacy:v1", reg.host),
        &["--dest-tls-verify=false"],
    )
    .expect("skopeo pushes what the copy wrote");

    // A damaged layer: the copy fails and leaves no output.
    let files = tar_files(&legacy);
    let m = tar_json(&files, "manifest.json");
    let entry = m[0]["Layers"][0].as_str().unwrap().to_string();
    let bytes = std::fs::read(&legacy).unwrap();
    let mut ar = tar::Archive::new(&bytes[..]);
    let pos = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some(entry.as_str()))
        .map(|e| e.raw_file_position())
        .unwrap();
    let mut bytes = bytes;
    bytes[pos as usize + 700] ^= 0x21;
    std::fs::write(&legacy, bytes).unwrap();
    let bad_out = work.path().join("bad-layout");
    let out = copy(
        &cache,
        legacy.to_str().unwrap(),
        &format!("oci:{}", bad_out.display()),
        &[],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not match its digest"),
        "{}",
        stderr(&out)
    );
    assert!(!bad_out.exists(), "no output is left behind");
}

#[test]
fn copy_from_a_registry_records_the_name_the_destination_gives() {
    let Some(reg) = registry() else { return };
    let img = image(806);
    push_with_skopeo(&reg, "team/app:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let src = format!("docker://{}/team/app:v1", reg.host);
    let tar = work.path().join("named.tar");
    let out = copy(
        &cache,
        &src,
        &format!("docker-archive:{}:renamed/app:v9", tar.display()),
        &[],
    );
    assert_ok(&out);
    let manifest = tar_json(&tar_files(&tar), "manifest.json");
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["renamed/app:v9"])
    );
    let layout = work.path().join("layout");
    let out = copy(
        &cache,
        &src,
        &format!("oci:{}:mytag", layout.display()),
        &[],
    );
    assert_ok(&out);
    assert_eq!(
        layers_of(&format!("oci:{}:mytag", layout.display())),
        layer_digests(&img)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_of_every_platform_keeps_a_nested_index_and_the_top_digest() {
    use ferry_testkit::fake::{FakeAuth, FakeRegistry};
    use ferry_testkit::image::{entry_of, entry_of_index, raw_index};
    let (amd, arm) = (image(807), image(808));
    let arm64: ferry_core::Platform = "linux/arm64".parse().unwrap();
    let inner = raw_index(
        ferry_core::media::OCI_INDEX,
        vec![entry_of(&arm, Some(&arm64))],
        vec![arm.clone()],
    );
    let outer = raw_index(
        ferry_core::media::OCI_INDEX,
        vec![entry_of(&amd, Some(&amd.platform)), entry_of_index(&inner)],
        vec![amd.clone()],
    );
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.push_index("src/app", "inner", &inner);
    reg.push_index("src/app", "v1", &outer);
    let work = tempfile::tempdir().unwrap();
    let out = run(
        &work.path().join("cache"),
        &s(&[
            "copy",
            "-q",
            "--all-platforms",
            &format!("docker://{}/src/app:v1", reg.host()),
            &format!("docker://{}/dst/app:v1", reg.host()),
        ]),
    )
    .await;
    assert_ok(&out);
    assert_eq!(stdout(&out), outer.digest.to_string());
    let (_, top) = reg.manifest("dst/app", "v1").unwrap();
    assert_eq!(&top[..], &outer.bytes[..]);
    assert!(reg.manifest("dst/app", &inner.digest.to_string()).is_some());
    assert!(reg
        .manifest("dst/app", &arm.manifest_digest.to_string())
        .is_some());
    for b in arm.blobs().chain(amd.blobs()) {
        assert!(reg.blob("dst/app", &b.digest).is_some(), "{}", b.digest);
    }
}
