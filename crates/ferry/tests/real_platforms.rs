//! `ferry pull` of multi-platform images (an OCI index and a Docker manifest list with
//! linux/amd64, linux/arm64/v8 and linux/arm/v7) from a real docker-registry: choosing a
//! platform, the host default, a missing platform, and keeping every platform — read back by
//! skopeo, podman and containerd.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ferry_core::Platform;
use ferry_testkit::image::{random_index, TestImage, TestIndex};
use ferry_testkit::real::{self, Containerd, Podman, RealRegistry, RegistryAuth};

fn platforms() -> Vec<Platform> {
    vec![
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
        Platform::new("linux", "arm", Some("v7")),
    ]
}

/// A registry holding a three-platform index as `multi/app:v1`.
fn registry_with_index(seed: u64, docker: bool) -> Option<(RealRegistry, TestIndex, String)> {
    let reg = RealRegistry::start(RegistryAuth::Anonymous)?;
    real::tool("skopeo")?;
    let idx = random_index(seed, &platforms(), docker);
    push_index_with_skopeo(&reg, "multi/app:v1", &idx, None);
    // The registry serves the index exactly as built.
    let raw = real::skopeo_inspect(
        &format!("docker://{}/multi/app:v1", reg.host),
        &["--tls-verify=false", "--raw"],
    )
    .expect("skopeo inspect --raw");
    assert_eq!(
        raw["manifests"].as_array().map(Vec::len),
        Some(3),
        "registry index: {raw}"
    );
    let reference = format!("{}/multi/app:v1", reg.host);
    Some((reg, idx, reference))
}

fn image_for<'a>(idx: &'a TestIndex, arch: &str) -> &'a TestImage {
    idx.images
        .iter()
        .find(|i| i.platform.architecture == arch)
        .unwrap_or_else(|| panic!("no {arch} image in the test index"))
}

/// The single image in a default archive: (index.json's manifest digest, manifest.json's
/// config, the config JSON).
fn archive_image(archive: &Path) -> (String, String, serde_json::Value) {
    let files = tar_files(archive);
    let index = tar_json(&files, "index.json");
    let manifests = index["manifests"].as_array().expect("index manifests");
    assert_eq!(manifests.len(), 1, "index.json: {index}");
    let digest = manifests[0]["digest"].as_str().unwrap().to_string();
    let docker = tar_json(&files, "manifest.json");
    let config_name = docker[0]["Config"].as_str().expect("Config").to_string();
    let config = tar_json(&files, &config_name);
    (digest, config_name, config)
}

/// `--platform linux/arm64` picks the arm64/v8 image: the archive's manifest, config and
/// layers are the arm64 image's, as skopeo (oci-archive and docker-archive) and podman see.
fn check_arm64_pull(docker_types: bool, seed: u64) {
    let Some((_reg, idx, reference)) = registry_with_index(seed, docker_types) else {
        return;
    };
    let arm64 = image_for(&idx, "arm64");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("arm64.tar");
    let out = pull_quiet(
        &work.path().join("cache"),
        &["--platform", "linux/arm64", &reference],
        &archive,
    );
    assert_ok(&out);

    let (digest, config_name, config) = archive_image(&archive);
    assert_eq!(digest, arm64.manifest_digest.to_string());
    assert_eq!(config_name, blob_name(&arm64.config.digest));
    assert_eq!(config["architecture"], "arm64", "config: {config}");
    assert_eq!(config["variant"], "v8", "config: {config}");

    let oci = format!("oci-archive:{}", archive.display());
    let info = real::skopeo_inspect(&oci, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info["Architecture"], "arm64", "skopeo inspect: {info}");
    assert_eq!(info["Os"], "linux", "skopeo inspect: {info}");
    assert_eq!(
        info["Digest"].as_str(),
        Some(arm64.manifest_digest.to_string().as_str()),
        "skopeo inspect: {info}"
    );
    let layers: Vec<String> = info["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers, layer_digests(arm64));
    let cfg = skopeo_config(&oci);
    assert_eq!(cfg["architecture"], "arm64");
    assert_eq!(
        cfg["rootfs"]["diff_ids"],
        serde_json::json!(digests(&arm64.diff_ids))
    );
    let dcfg = skopeo_config(&format!("docker-archive:{}", archive.display()));
    assert_eq!(
        dcfg["architecture"], "arm64",
        "docker-archive config: {dcfg}"
    );

    if let Some(diff_ids) = podman_diff_ids(&archive) {
        assert_eq!(diff_ids, digests(&arm64.diff_ids));
    }
    // containerd imports it for the platform it is for.
    if let Some((ctrd, images)) = containerd_import(&archive, &["--platform", "linux/arm64"]) {
        assert_ctr_has(&images, &reference, &arm64.manifest_digest);
        let ls = ctr_output(&ctrd, &["images", "ls"]);
        assert!(ls.contains("linux/arm64"), "ctr images ls:\n{ls}");
    }
}

#[test]
fn oci_index_platform_arm64_gives_the_arm64_image() {
    check_arm64_pull(false, 201);
}

#[test]
fn docker_manifest_list_platform_arm64_gives_the_arm64_image() {
    check_arm64_pull(true, 202);
}

#[test]
fn arm_v7_is_chosen_by_variant() {
    let Some((_reg, idx, reference)) = registry_with_index(203, false) else {
        return;
    };
    let arm = image_for(&idx, "arm");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("arm.tar");
    let out = pull_quiet(
        &work.path().join("cache"),
        &["--platform", "linux/arm/v7", &reference],
        &archive,
    );
    assert_ok(&out);
    let (digest, _, config) = archive_image(&archive);
    assert_eq!(digest, arm.manifest_digest.to_string());
    assert_eq!(config["architecture"], "arm");
    assert_eq!(config["variant"], "v7");
}

/// Without `--platform` ferry takes this machine's platform, and only that image's blobs are
/// downloaded.
fn check_default_platform(docker_types: bool, seed: u64) {
    let Some((_reg, idx, reference)) = registry_with_index(seed, docker_types) else {
        return;
    };
    let host = Platform::host();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("default.tar");
    let out = pull_quiet(&cache, &[&reference], &archive);
    let Some(want) = idx.images.iter().find(|i| host.matches(&i.platform)) else {
        // A host that is none of the three platforms: not found, listing what there is.
        assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
        return;
    };
    assert_ok(&out);
    let (digest, _, config) = archive_image(&archive);
    assert_eq!(
        digest,
        want.manifest_digest.to_string(),
        "host {host} should get {}",
        want.platform
    );
    assert_eq!(config["architecture"], host.architecture.as_str());
    // Only the chosen image's blobs were fetched.
    for other in idx
        .images
        .iter()
        .filter(|i| i.manifest_digest != want.manifest_digest)
    {
        for l in &other.layers {
            assert!(
                !cache.join("blobs/sha256").join(l.digest.hex()).exists(),
                "layer {} of {} was downloaded too",
                l.digest,
                other.platform
            );
        }
    }
    if let Some(images) = containerd_images(&archive) {
        assert_ctr_has(&images, &reference, &want.manifest_digest);
    }
    if let Some(diff_ids) = podman_diff_ids(&archive) {
        assert_eq!(diff_ids, digests(&want.diff_ids));
    }
}

#[test]
fn oci_index_default_platform_is_the_host() {
    check_default_platform(false, 204);
}

#[test]
fn docker_manifest_list_default_platform_is_the_host() {
    check_default_platform(true, 205);
}

fn check_missing_platform(docker_types: bool, seed: u64) {
    let Some((_reg, _idx, reference)) = registry_with_index(seed, docker_types) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("s390x.tar");
    let out = pull_quiet(
        &work.path().join("cache"),
        &["--platform", "linux/s390x", &reference],
        &archive,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{err}");
    for p in ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"] {
        assert!(err.contains(p), "stderr does not list {p}:\n{err}");
    }
    assert!(err.contains("linux/s390x"), "stderr:\n{err}");
    assert!(err.contains("hint:"), "no hint:\n{err}");
    assert!(!archive.exists());
}

#[test]
fn oci_index_missing_platform_exits_3_listing_the_platforms() {
    check_missing_platform(false, 206);
}

#[test]
fn docker_manifest_list_missing_platform_exits_3_listing_the_platforms() {
    check_missing_platform(true, 207);
}

/// `--all-platforms --format oci`: the layout's index.json points at the registry's index,
/// which lists all three children, every blob is there, and skopeo copies it all.
fn check_all_platforms_oci_dir(docker_types: bool, seed: u64) {
    let Some((_reg, idx, reference)) = registry_with_index(seed, docker_types) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let out = pull_quiet(
        &work.path().join("cache"),
        &["--all-platforms", "--format", "oci", &reference],
        &dir,
    );
    assert_ok(&out);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let top = index["manifests"].as_array().expect("manifests");
    assert_eq!(top.len(), 1, "index.json: {index}");
    assert_eq!(top[0]["digest"], idx.digest.to_string());
    assert_eq!(top[0]["mediaType"], idx.media_type.as_str());
    assert_eq!(
        top[0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    let blob = |d: &str| -> Vec<u8> {
        let hex = d.strip_prefix("sha256:").expect("sha256 digest");
        std::fs::read(dir.join("blobs/sha256").join(hex))
            .unwrap_or_else(|e| panic!("blob {d} is missing: {e}"))
    };
    let index_blob = blob(&idx.digest.to_string());
    assert_eq!(
        index_blob,
        idx.bytes.to_vec(),
        "the index is not byte-identical"
    );
    let children: serde_json::Value = serde_json::from_slice(&index_blob).unwrap();
    let children = children["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 3);
    for img in &idx.images {
        assert_eq!(
            blob(&img.manifest_digest.to_string()),
            img.manifest.to_vec()
        );
        for b in img.blobs() {
            let got = blob(&b.digest.to_string());
            assert_eq!(sha256_of(&got), b.digest.to_string());
        }
    }
    assert!(
        !dir.join("manifest.json").exists(),
        "an OCI layout directory has no docker manifest.json"
    );

    // skopeo reads the whole index and copies every platform.
    let other = work.path().join("other");
    real::skopeo_copy(
        &format!("oci:{}", dir.display()),
        &format!("oci:{}", other.display()),
        &["--all"],
    )
    .unwrap_or_else(|e| panic!("skopeo copy --all: {e}"));
    let raw = real::skopeo_inspect(&format!("oci:{}", other.display()), &["--raw"])
        .unwrap_or_else(|e| panic!("{e}"));
    let copied: Vec<String> = raw["manifests"]
        .as_array()
        .expect("the copy is an index")
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(copied.len(), 3, "skopeo's copy: {raw}");
    if !docker_types {
        // OCI in, OCI out: skopeo keeps every manifest byte for byte. (A Docker list is
        // converted to OCI on the way into an OCI layout, so its digests change.)
        let want: Vec<String> = idx
            .images
            .iter()
            .map(|i| i.manifest_digest.to_string())
            .collect();
        assert_eq!(copied, want);
    }
    for img in &idx.images {
        for l in &img.layers {
            assert!(
                other.join("blobs/sha256").join(l.digest.hex()).is_file(),
                "skopeo did not copy layer {} of {}",
                l.digest,
                img.platform
            );
        }
    }
    // And each platform of the layout is readable on its own.
    let arm64 = image_for(&idx, "arm64");
    let info = real::skopeo_inspect(
        &format!("oci:{}", dir.display()),
        &["--override-arch", "arm64", "--override-variant", "v8"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info["Architecture"], "arm64", "{info}");
    assert_eq!(
        info["Layers"],
        serde_json::json!(layer_digests(arm64)),
        "{info}"
    );
}

#[test]
fn oci_index_all_platforms_oci_dir_is_read_by_skopeo() {
    check_all_platforms_oci_dir(false, 208);
}

#[test]
fn docker_manifest_list_all_platforms_oci_dir_is_read_by_skopeo() {
    check_all_platforms_oci_dir(true, 209);
}

fn ctr_output(ctrd: &Containerd, args: &[&str]) -> String {
    let mut c: Command = ctrd.ctr();
    let out = c.args(args).output().expect("running ctr");
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--all-platforms` default archive: `ctr import --all-platforms` takes the index and every
/// platform's content; docker's manifest.json names the host's image.
fn check_all_platforms_archive(docker_types: bool, seed: u64) {
    let Some((_reg, idx, reference)) = registry_with_index(seed, docker_types) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("all.tar");
    let out = pull_quiet(
        &work.path().join("cache"),
        &["--all-platforms", &reference],
        &archive,
    );
    assert_ok(&out);
    let files = tar_files(&archive);
    let index = tar_json(&files, "index.json");
    assert_eq!(index["manifests"][0]["digest"], idx.digest.to_string());
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        reference.as_str()
    );
    for img in &idx.images {
        for b in img.blobs() {
            let name = blob_name(&b.digest);
            assert!(
                files.iter().any(|(n, _)| n == &name),
                "{name} ({}) missing",
                img.platform
            );
        }
    }

    if let Some((ctrd, images)) = containerd_import(&archive, &["--all-platforms"]) {
        assert_ctr_has(&images, &reference, &idx.digest);
        let content = ctr_output(&ctrd, &["content", "ls", "-q"]);
        for img in &idx.images {
            for d in std::iter::once(&img.manifest_digest).chain(img.blobs().map(|b| &b.digest)) {
                assert!(
                    content.contains(&d.to_string()),
                    "containerd lacks {d} of {}:\n{content}",
                    img.platform
                );
            }
        }
        let ls = ctr_output(&ctrd, &["images", "ls"]);
        for p in ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"] {
            assert!(ls.contains(p), "ctr images ls does not show {p}:\n{ls}");
        }
    }

    // docker's manifest.json names the host's image.
    let host = Platform::host();
    if let Some(want) = idx.images.iter().find(|i| host.matches(&i.platform)) {
        let cfg = skopeo_config(&format!("docker-archive:{}", archive.display()));
        assert_eq!(cfg["architecture"], want.platform.architecture.as_str());
        assert_eq!(
            cfg["rootfs"]["diff_ids"],
            serde_json::json!(digests(&want.diff_ids))
        );
    }

    // The archive still loads in podman, which takes the OCI index for the host.
    if let Some(podman) = Podman::new() {
        let host = Platform::host();
        if let Some(want) = idx.images.iter().find(|i| host.matches(&i.platform)) {
            let (out, names) = podman_load(&podman, &archive);
            let name = names.first().unwrap_or_else(|| panic!("{out}"));
            assert_podman_has(&podman, name, want);
        }
    }
}

#[test]
fn oci_index_all_platforms_archive_imports_in_containerd() {
    check_all_platforms_archive(false, 210);
}

#[test]
fn docker_manifest_list_all_platforms_archive_imports_in_containerd() {
    check_all_platforms_archive(true, 211);
}

/// A single-platform image is what it is: asking for its own platform works, asking
/// explicitly for another one is "not found" (exit 3), as docker does.
#[test]
fn single_platform_image_and_an_explicit_platform() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    if real::tool("skopeo").is_none() {
        return;
    }
    let img = ferry_testkit::image::random_image(&ferry_testkit::image::ImageSpec {
        seed: 212,
        platform: Platform::new("linux", "arm64", Some("v8")),
        ..Default::default()
    });
    push_with_skopeo(&reg, "single/arm:v1", &img, None);
    let reference = format!("{}/single/arm:v1", reg.host);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");

    let archive = work.path().join("arm64.tar");
    let out = pull_quiet(&cache, &["--platform", "linux/arm64", &reference], &archive);
    assert_ok(&out);
    let (digest, _, config) = archive_image(&archive);
    assert_eq!(digest, img.manifest_digest.to_string());
    assert_eq!(config["architecture"], "arm64");

    let archive = work.path().join("amd64.tar");
    let out = pull_quiet(&cache, &["--platform", "linux/amd64", &reference], &archive);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{err}");
    assert!(
        err.contains("linux/arm64"),
        "stderr names the image's platform:\n{err}"
    );
    assert!(!archive.exists());
}

/// `--all-platforms` with an index and a single-platform image in one archive: containerd
/// imports both (the index with every platform), podman loads both through docker's side.
#[test]
fn all_platforms_index_and_single_image_in_one_archive() {
    let Some((reg, idx, ri)) = registry_with_index(213, false) else {
        return;
    };
    let single = ferry_testkit::image::random_image(&ferry_testkit::image::ImageSpec {
        seed: 214,
        platform: Platform::host(),
        ..Default::default()
    });
    push_with_skopeo(&reg, "single/host:v1", &single, None);
    let rs = format!("{}/single/host:v1", reg.host);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("mixed.tar");
    let out = pull_quiet(
        &work.path().join("cache"),
        &["--all-platforms", &ri, &rs],
        &archive,
    );
    assert_ok(&out);
    let host = Platform::host();
    let want = idx.images.iter().find(|i| host.matches(&i.platform));

    if let Some((_, images)) = containerd_import(&archive, &["--all-platforms"]) {
        for (name, digest) in [(&ri, &idx.digest), (&rs, &single.manifest_digest)] {
            assert_ctr_has(&images, name, digest);
        }
    }
    let Some(want) = want else { return };
    if let Some(podman) = Podman::new() {
        let (out, names) = podman_load(&podman, &archive);
        for (name, img) in [(&ri, want), (&rs, &single)] {
            assert!(names.contains(name), "podman loaded {names:?}:\n{out}");
            assert_podman_has(&podman, name, img);
        }
    }
}

/// An index shaped like `docker buildx` makes them: two platforms, each with an attestation
/// manifest (platform unknown/unknown, in-toto layers) beside it.
fn index_with_attestations(seed: u64) -> TestIndex {
    use ferry_core::{media, Digest};
    use ferry_testkit::image::Blob;
    let base = random_index(seed, &platforms()[..2], false);
    let mut images = base.images.clone();
    let mut entries: Vec<serde_json::Value> = Vec::new();
    for img in &base.images {
        entries.push(serde_json::json!({
            "mediaType": img.manifest_media_type,
            "digest": img.manifest_digest.to_string(),
            "size": img.manifest.len(),
            "platform": serde_json::to_value(&img.platform).unwrap(),
        }));
    }
    for img in &base.images {
        let statement = serde_json::to_vec(&serde_json::json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://spdx.dev/Document",
            "subject": [{ "name": "ferry-test", "digest": { "sha256": img.manifest_digest.hex() } }],
            "predicate": { "spdxVersion": "SPDX-2.3" },
        }))
        .unwrap();
        let layer = Blob {
            digest: Digest::sha256_of(&statement),
            media_type: "application/vnd.in-toto+json".into(),
            bytes: statement.into(),
        };
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [layer.digest.to_string()] },
        }))
        .unwrap();
        let config = Blob {
            digest: Digest::sha256_of(&config),
            media_type: media::OCI_CONFIG.into(),
            bytes: config.into(),
        };
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": { "mediaType": config.media_type, "digest": config.digest.to_string(), "size": config.size() },
            "layers": [{
                "mediaType": layer.media_type, "digest": layer.digest.to_string(), "size": layer.size(),
                "annotations": { "in-toto.io/predicate-type": "https://spdx.dev/Document" },
            }],
        }))
        .unwrap();
        let digest = Digest::sha256_of(&manifest);
        entries.push(serde_json::json!({
            "mediaType": media::OCI_MANIFEST,
            "digest": digest.to_string(),
            "size": manifest.len(),
            "annotations": {
                "vnd.docker.reference.digest": img.manifest_digest.to_string(),
                "vnd.docker.reference.type": "attestation-manifest",
            },
            "platform": { "architecture": "unknown", "os": "unknown" },
        }));
        images.push(TestImage {
            manifest: manifest.into(),
            manifest_digest: digest,
            manifest_media_type: media::OCI_MANIFEST.into(),
            config,
            layers: vec![layer.clone()],
            diff_ids: vec![layer.digest.clone()],
            platform: Platform::new("unknown", "unknown", None),
        });
    }
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": entries,
    }))
    .unwrap();
    TestIndex {
        digest: Digest::sha256_of(&bytes),
        bytes: bytes.into(),
        media_type: media::OCI_INDEX.into(),
        images,
    }
}

#[test]
fn buildx_style_index_with_attestations() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    if real::tool("skopeo").is_none() {
        return;
    }
    let idx = index_with_attestations(215);
    push_index_with_skopeo(&reg, "buildx/app:v1", &idx, None);
    let reference = format!("{}/buildx/app:v1", reg.host);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");

    // One platform: the image, not its attestation.
    let archive = work.path().join("arm64.tar");
    let out = pull_quiet(&cache, &["--platform", "linux/arm64", &reference], &archive);
    assert_ok(&out);
    let arm64 = image_for(&idx, "arm64");
    let (digest, _, config) = archive_image(&archive);
    assert_eq!(digest, arm64.manifest_digest.to_string());
    assert_eq!(config["architecture"], "arm64");
    if let Some(diff_ids) = podman_diff_ids(&archive) {
        assert_eq!(diff_ids, digests(&arm64.diff_ids));
    }

    // A missing platform lists the real platforms, not the attestations' unknown/unknown.
    let out = pull_quiet(
        &cache,
        &["--platform", "linux/s390x", &reference],
        &work.path().join("s390x.tar"),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64/v8"),
        "{err}"
    );
    assert!(!err.contains("unknown/unknown"), "{err}");

    // Every platform, attestations included, for containerd and skopeo.
    let archive = work.path().join("all.tar");
    let out = pull_quiet(&cache, &["--all-platforms", &reference], &archive);
    assert_ok(&out);
    if let Some((ctrd, images)) = containerd_import(&archive, &["--all-platforms"]) {
        assert_ctr_has(&images, &reference, &idx.digest);
        let content = ctr_output(&ctrd, &["content", "ls", "-q"]);
        for img in &idx.images {
            for b in img.blobs() {
                assert!(
                    content.contains(&b.digest.to_string()),
                    "{} missing",
                    b.digest
                );
            }
        }
    }
    let other = work.path().join("copy");
    real::skopeo_copy(
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}", other.display()),
        &["--all"],
    )
    .unwrap_or_else(|e| panic!("skopeo copy --all oci-archive: {e}"));
    let raw = real::skopeo_inspect(&format!("oci:{}", other.display()), &["--raw"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(raw["manifests"].as_array().map(Vec::len), Some(4), "{raw}");
    if let Some(podman) = Podman::new() {
        let host = Platform::host();
        if let Some(want) = idx.images.iter().find(|i| host.matches(&i.platform)) {
            let (out, names) = podman_load(&podman, &archive);
            assert!(names.contains(&reference), "{out}");
            assert_podman_has(&podman, &reference, want);
        }
    }
}

/// An index pinned by digest (`repo@sha256:<index>`), one platform taken from it: the archive
/// holds that platform's image, named by the digest of what it holds (a name `repo@X` whose
/// content is not X would be a lie the loaders would keep), and both loaders take it.
#[test]
fn index_pinned_by_digest_with_a_platform() {
    let Some((reg, idx, _)) = registry_with_index(216, false) else {
        return;
    };
    let arm64 = image_for(&idx, "arm64");
    let pinned = format!("{}/multi/app@{}", reg.host, idx.digest);
    let named = format!("{}/multi/app@{}", reg.host, arm64.manifest_digest);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("pinned.tar");
    let out = pull_quiet(
        &work.path().join("cache"),
        &["--platform", "linux/arm64", &pinned],
        &archive,
    );
    assert_ok(&out);
    let (digest, _, config) = archive_image(&archive);
    assert_eq!(digest, arm64.manifest_digest.to_string());
    assert_eq!(config["architecture"], "arm64");
    if let Some(podman) = Podman::new() {
        let (out, names) = podman_load(&podman, &archive);
        assert_eq!(names, vec![named.clone()], "{out}");
        let inspect = podman.inspect(&named).expect("inspect");
        assert_eq!(inspect["Digest"], arm64.manifest_digest.to_string());
        assert_eq!(
            inspect["RootFS"]["Layers"],
            serde_json::json!(digests(&arm64.diff_ids))
        );
    }
    if let Some((_, images)) = containerd_import(&archive, &["--platform", "linux/arm64"]) {
        assert_ctr_has(&images, &named, &arm64.manifest_digest);
    }
}
