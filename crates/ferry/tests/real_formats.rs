//! `ferry pull` output formats and image kinds against a real docker-registry: the legacy
//! docker layout, the OCI layout directory, several images in one archive, Docker schema 2
//! media types, and digest-pinned references — each read back by podman, containerd and
//! skopeo, with the loaded layers checked against the registry's.

mod common;

use common::*;
use ferry_core::media;
use ferry_testkit::image::{derived_image, random_image, ImageSpec, TestImage};
use ferry_testkit::real::{self, Podman, RealRegistry, RegistryAuth};

fn registry() -> Option<RealRegistry> {
    let reg = RealRegistry::start(RegistryAuth::Anonymous)?;
    real::tool("skopeo")?;
    Some(reg)
}

fn spec(seed: u64) -> ImageSpec {
    ImageSpec {
        seed,
        layers: 3,
        layer_size: 60_000,
        ..Default::default()
    }
}

/// `podman pull TARGET` (e.g. `docker-archive:PATH[:NAME]`, to read one side of an archive).
fn podman_pull(podman: &Podman, target: &str) {
    // podman pull insists that its REGISTRY_AUTH_FILE exists.
    let auth = podman.dir.join("auth.json");
    if !auth.exists() {
        std::fs::write(&auth, "{}").expect("write auth.json");
    }
    podman
        .run(&["pull", target])
        .unwrap_or_else(|e| panic!("podman pull {target}: {e}"));
}

/// skopeo reads `target`'s config with `img`'s diff ids.
fn assert_skopeo_config_diff_ids(target: &str, img: &TestImage) {
    assert_eq!(
        skopeo_config(target)["rootfs"]["diff_ids"],
        serde_json::json!(digests(&img.diff_ids))
    );
}

#[test]
fn legacy_format_loads_in_podman_with_matching_diff_ids() {
    let Some(reg) = registry() else { return };
    // Layers of a few MB, so unpacking streams through more than one buffer.
    let img = random_image(&ImageSpec {
        layer_size: 3_000_000,
        ..spec(301)
    });
    push_with_skopeo(&reg, "fmt/legacy:v1", &img, None);
    let reference = format!("{}/fmt/legacy:v1", reg.host);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("legacy.tar");
    let out = pull_quiet(
        &work.path().join("cache"),
        &["--format", "legacy", &reference],
        &archive,
    );
    assert_ok(&out);

    // The layout itself: uncompressed `<id>/layer.tar`s whose sha256 are the diff ids.
    let files = tar_files(&archive);
    assert!(
        files.iter().all(|(n, _)| !n.starts_with("blobs/")),
        "the legacy layout has no blobs/"
    );
    let manifest = tar_json(&files, "manifest.json");
    assert_eq!(manifest.as_array().map(Vec::len), Some(1), "{manifest}");
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!([reference]));
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    assert_eq!(layers.len(), img.layers.len());
    for (path, diff_id) in layers.iter().zip(&img.diff_ids) {
        let path = path.as_str().unwrap();
        assert!(path.ends_with("/layer.tar"), "{path}");
        let (_, data) = files.iter().find(|(n, _)| n == path).expect("layer entry");
        assert_eq!(sha256_of(data), diff_id.to_string(), "{path}");
    }
    let config = tar_json(&files, manifest[0]["Config"].as_str().unwrap());
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!(digests(&img.diff_ids))
    );
    let repositories = tar_json(&files, "repositories");
    assert!(
        repositories[format!("{}/fmt/legacy", reg.host)]["v1"].is_string(),
        "repositories: {repositories}"
    );

    if let Some(podman) = Podman::new() {
        let (_, names) = podman_load(&podman, &archive);
        assert!(names.contains(&reference), "podman loaded {names:?}");
        assert_podman_has(&podman, &reference, &img);
    }
    if let Some((ctrd, images)) = containerd_import(&archive, &[]) {
        let (_, digest) = images
            .iter()
            .find(|(n, _)| n == &reference)
            .unwrap_or_else(|| panic!("containerd has {images:?}"));
        // containerd made a manifest of the uncompressed layers: they are the diff ids, and
        // the config is the registry's, byte for byte.
        let out = ctrd
            .ctr()
            .args(["content", "get", digest])
            .output()
            .expect("ctr content get");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest JSON");
        assert_eq!(m["config"]["digest"], img.config.digest.to_string(), "{m}");
        let layers: Vec<&str> = m["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(layers, digests(&img.diff_ids), "{m}");
    }
    assert_skopeo_config_diff_ids(&format!("docker-archive:{}", archive.display()), &img);
}

#[test]
fn oci_format_directory_is_read_by_skopeo_and_round_trips() {
    let Some(reg) = registry() else { return };
    let img = random_image(&spec(302));
    push_with_skopeo(&reg, "fmt/oci:v1", &img, None);
    let reference = format!("{}/fmt/oci:v1", reg.host);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let out = pull_quiet(
        &work.path().join("cache"),
        &["--format", "oci", &reference],
        &dir,
    );
    assert_ok(&out);
    assert!(dir.join("oci-layout").is_file());
    assert!(!dir.join("manifest.json").exists());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        img.manifest_digest.to_string()
    );
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );

    let oci = format!("oci:{}", dir.display());
    let info = real::skopeo_inspect(&oci, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        info["Digest"].as_str(),
        Some(img.manifest_digest.to_string().as_str())
    );
    assert_eq!(info["Layers"], serde_json::json!(layer_digests(&img)));
    // By its ref name too.
    let info = real::skopeo_inspect(&format!("{oci}:v1"), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info["Layers"], serde_json::json!(layer_digests(&img)));

    // skopeo copies it into another layout and back into the registry unchanged.
    let other = work.path().join("other");
    real::skopeo_copy(&oci, &format!("oci:{}", other.display()), &[])
        .unwrap_or_else(|e| panic!("skopeo copy: {e}"));
    for l in &img.layers {
        let got = std::fs::read(other.join("blobs/sha256").join(l.digest.hex())).unwrap();
        assert_eq!(sha256_of(&got), l.digest.to_string());
    }
    real::skopeo_copy(
        &oci,
        &format!("docker://{}/fmt/copy:v1", reg.host),
        &["--dest-tls-verify=false"],
    )
    .unwrap_or_else(|e| panic!("skopeo copy to the registry: {e}"));
    let back = real::skopeo_inspect(
        &format!("docker://{}/fmt/copy:v1", reg.host),
        &["--tls-verify=false"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        back["Digest"].as_str(),
        Some(img.manifest_digest.to_string().as_str()),
        "the image changed on the way through the OCI layout: {back}"
    );
}

#[test]
fn two_images_in_one_archive_load_in_podman_and_containerd() {
    let Some(reg) = registry() else { return };
    let a = random_image(&spec(303));
    let b = derived_image(&a, 304);
    push_with_skopeo(&reg, "multi/a:v1", &a, None);
    push_with_skopeo(&reg, "multi/b:v2", &b, None);
    let ra = format!("{}/multi/a:v1", reg.host);
    let rb = format!("{}/multi/b:v2", reg.host);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("both.tar");
    let out = pull_quiet(&work.path().join("cache"), &[&ra, &rb], &archive);
    assert_ok(&out);

    let files = tar_files(&archive);
    let shared = blob_name(&a.layers[0].digest);
    assert_eq!(
        files.iter().filter(|(n, _)| n == &shared).count(),
        1,
        "the shared layer is stored once"
    );
    let docker = tar_json(&files, "manifest.json");
    assert_eq!(
        docker
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["RepoTags"][0].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec![ra.as_str(), rb.as_str()]
    );
    let index = tar_json(&files, "index.json");
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["io.containerd.image.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, vec![ra.as_str(), rb.as_str()]);

    if let Some(podman) = Podman::new() {
        let (out, loaded) = podman_load(&podman, &archive);
        assert!(
            loaded.contains(&ra) && loaded.contains(&rb),
            "podman loaded {loaded:?}:\n{out}"
        );
        assert_podman_has(&podman, &ra, &a);
        assert_podman_has(&podman, &rb, &b);
    }
    if let Some(images) = containerd_images(&archive) {
        assert_ctr_has(&images, &ra, &a.manifest_digest);
        assert_ctr_has(&images, &rb, &b.manifest_digest);
    }
    // The docker side on its own: podman takes each image out of it by name.
    if let Some(podman) = Podman::new() {
        for (r, img) in [(&ra, &a), (&rb, &b)] {
            let target = format!("docker-archive:{}:{r}", archive.display());
            podman_pull(&podman, &target);
            assert_podman_has(&podman, r, img);
        }
    }
    // skopeo picks either image out of the docker side by name.
    for (r, img) in [(&ra, &a), (&rb, &b)] {
        assert_skopeo_config_diff_ids(&format!("docker-archive:{}:{r}", archive.display()), img);
    }
}

#[test]
fn docker_media_types_load_in_podman_and_containerd() {
    let Some(reg) = registry() else { return };
    let img = random_image(&ImageSpec {
        docker_media_types: true,
        ..spec(305)
    });
    assert_eq!(img.manifest_media_type, media::DOCKER_MANIFEST);
    push_with_skopeo(&reg, "fmt/docker:v1", &img, None);
    let reference = format!("{}/fmt/docker:v1", reg.host);
    // The registry holds the schema 2 manifest as pushed.
    let raw = real::skopeo_inspect(
        &format!("docker://{reference}"),
        &["--tls-verify=false", "--raw"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(raw["mediaType"], media::DOCKER_MANIFEST);

    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("docker.tar");
    let out = pull_quiet(&work.path().join("cache"), &[&reference], &archive);
    assert_ok(&out);
    let files = tar_files(&archive);
    let index = tar_json(&files, "index.json");
    assert_eq!(index["manifests"][0]["mediaType"], media::DOCKER_MANIFEST);
    assert_eq!(
        index["manifests"][0]["digest"],
        img.manifest_digest.to_string()
    );
    let stored = files
        .iter()
        .find(|(n, _)| n == &blob_name(&img.manifest_digest))
        .expect("the manifest blob");
    assert_eq!(
        stored.1,
        img.manifest.to_vec(),
        "the manifest is byte-identical"
    );

    if let Some(podman) = Podman::new() {
        let (out, names) = podman_load(&podman, &archive);
        assert!(names.contains(&reference), "podman load: {out}");
        assert_podman_has(&podman, &reference, &img);
    }
    // The docker side of the archive on its own (podman load prefers the OCI side).
    if let Some(podman) = Podman::new() {
        let target = format!("docker-archive:{}", archive.display());
        podman_pull(&podman, &target);
        assert_podman_has(&podman, &reference, &img);
    }
    if let Some(images) = containerd_images(&archive) {
        assert_ctr_has(&images, &reference, &img.manifest_digest);
    }
    if let Some(layers) = skopeo_layers("oci-archive", &archive) {
        assert_eq!(layers, layer_digests(&img));
    }
    if let Some(layers) = skopeo_layers("docker-archive", &archive) {
        assert_eq!(layers.len(), img.layers.len());
    }
}

#[test]
fn digest_pinned_references_fetch_the_digest() {
    let Some(reg) = registry() else { return };
    let v1 = random_image(&spec(306));
    let v2 = random_image(&spec(307));
    push_with_skopeo(&reg, "pin/app:v1", &v1, None);
    push_with_skopeo(&reg, "pin/app:v2", &v2, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");

    // Digest only: the image v2 points at, named by repository and digest.
    let by_digest = format!("{}/pin/app@{}", reg.host, v2.manifest_digest);
    let archive = work.path().join("digest.tar");
    let out = pull_quiet(&cache, &[&by_digest], &archive);
    assert_ok(&out);
    let files = tar_files(&archive);
    let index = tar_json(&files, "index.json");
    assert_eq!(
        index["manifests"][0]["digest"],
        v2.manifest_digest.to_string()
    );
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        by_digest.as_str()
    );
    let docker = tar_json(&files, "manifest.json");
    assert_eq!(docker[0]["Config"], blob_name(&v2.config.digest));
    if let Some(podman) = Podman::new() {
        let (out, names) = podman_load(&podman, &archive);
        assert_eq!(names, vec![by_digest.clone()], "podman load: {out}");
        assert_podman_has(&podman, &by_digest, &v2);
    }
    if let Some(images) = containerd_images(&archive) {
        assert_ctr_has(&images, &by_digest, &v2.manifest_digest);
    }

    // Tag and digest: the digest wins (v1's tag, v2's digest → v2); the tag names another
    // image, so it is left out (as docker does) and the image is named by its digest.
    let both = format!("{}/pin/app:v1@{}", reg.host, v2.manifest_digest);
    let named = format!("{}/pin/app@{}", reg.host, v2.manifest_digest);
    let archive = work.path().join("tag-digest.tar");
    let out = pull_quiet(&work.path().join("cache2"), &[&both], &archive);
    assert_ok(&out);
    let files = tar_files(&archive);
    let index = tar_json(&files, "index.json");
    assert_eq!(
        index["manifests"][0]["digest"],
        v2.manifest_digest.to_string(),
        "the tag won over the digest"
    );
    let layers = real::skopeo_inspect(&format!("oci-archive:{}", archive.display()), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(layers["Layers"], serde_json::json!(layer_digests(&v2)));
    if let Some(podman) = Podman::new() {
        let (out, names) = podman_load(&podman, &archive);
        assert!(names.contains(&named), "podman load: {out}");
        assert_podman_has(&podman, &named, &v2);
    }
    if let Some(images) = containerd_images(&archive) {
        assert_ctr_has(&images, &named, &v2.manifest_digest);
    }

    // A digest the repository does not have is "not found".
    let missing = format!(
        "{}/pin/app@sha256:{}",
        reg.host,
        sha256_hex(b"no such manifest")
    );
    let archive = work.path().join("missing.tar");
    let out = pull_quiet(&cache, &[&missing], &archive);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{}", stderr(&out));
    assert!(!archive.exists());
}

/// The legacy layout with two images that share a layer: the shared `<id>/` is written once
/// and podman loads both with their own diff ids.
#[test]
fn legacy_format_two_images_sharing_a_layer() {
    let Some(reg) = registry() else { return };
    let a = random_image(&spec(308));
    let b = derived_image(&a, 309);
    push_with_skopeo(&reg, "leg/a:v1", &a, None);
    push_with_skopeo(&reg, "leg/b:v1", &b, None);
    let ra = format!("{}/leg/a:v1", reg.host);
    let rb = format!("{}/leg/b:v1", reg.host);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("legacy-both.tar");
    let out = pull_quiet(
        &work.path().join("cache"),
        &["--format", "legacy", &ra, &rb],
        &archive,
    );
    assert_ok(&out);
    let files = tar_files(&archive);
    let manifest = tar_json(&files, "manifest.json");
    assert_eq!(manifest.as_array().map(Vec::len), Some(2), "{manifest}");
    assert_eq!(
        manifest[0]["Layers"][0], manifest[1]["Layers"][0],
        "the shared layer has one id"
    );
    let first = manifest[0]["Layers"][0].as_str().unwrap();
    assert_eq!(files.iter().filter(|(n, _)| n == first).count(), 1);
    assert_eq!(
        files
            .iter()
            .filter(|(n, _)| n.ends_with("/layer.tar"))
            .count(),
        a.layers.len() + 1
    );

    if let Some(podman) = Podman::new() {
        let (_, names) = podman_load(&podman, &archive);
        assert!(
            names.contains(&ra) && names.contains(&rb),
            "podman loaded {names:?}"
        );
        assert_podman_has(&podman, &ra, &a);
        assert_podman_has(&podman, &rb, &b);
    }
    if let Some(images) = containerd_images(&archive) {
        for r in [&ra, &rb] {
            assert!(
                images.iter().any(|(n, _)| n == r),
                "containerd has {images:?}"
            );
        }
    }
}

/// One image under two tags, plus another image, in the default archive and as an OCI
/// layout: every name reaches podman and containerd, and skopeo picks images out of the
/// layout by tag.
#[test]
fn one_image_under_two_tags_and_oci_layout_with_several_images() {
    let Some(reg) = registry() else { return };
    let a = random_image(&spec(310));
    let b = random_image(&spec(311));
    push_with_skopeo(&reg, "tags/a:v1", &a, None);
    push_with_skopeo(&reg, "tags/a:stable", &a, None);
    push_with_skopeo(&reg, "tags/b:v2", &b, None);
    let r1 = format!("{}/tags/a:v1", reg.host);
    let r2 = format!("{}/tags/a:stable", reg.host);
    let rb = format!("{}/tags/b:v2", reg.host);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("three.tar");
    let out = pull_quiet(&cache, &[&r1, &r2, &rb], &archive);
    assert_ok(&out);
    let files = tar_files(&archive);
    for l in a.layers.iter().chain(&b.layers) {
        let name = blob_name(&l.digest);
        assert_eq!(
            files.iter().filter(|(n, _)| n == &name).count(),
            1,
            "{name}"
        );
    }
    if let Some(podman) = Podman::new() {
        let (out, names) = podman_load(&podman, &archive);
        for r in [&r1, &r2, &rb] {
            assert!(names.contains(r), "podman loaded {names:?}:\n{out}");
        }
        assert_podman_has(&podman, &r1, &a);
        assert_podman_has(&podman, &r2, &a);
        assert_podman_has(&podman, &rb, &b);
    }
    if let Some(images) = containerd_images(&archive) {
        assert_ctr_has(&images, &r1, &a.manifest_digest);
        assert_ctr_has(&images, &r2, &a.manifest_digest);
        assert_ctr_has(&images, &rb, &b.manifest_digest);
    }

    let dir = work.path().join("layout");
    let out = pull_quiet(&cache, &["--format", "oci", &r1, &rb], &dir);
    assert_ok(&out);
    for (tag, img) in [("v1", &a), ("v2", &b)] {
        let target = format!("oci:{}:{tag}", dir.display());
        let info = real::skopeo_inspect(&target, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            info["Digest"].as_str(),
            Some(img.manifest_digest.to_string().as_str()),
            "{target}: {info}"
        );
        assert_eq!(info["Layers"], serde_json::json!(layer_digests(img)));
        let copy = work.path().join(format!("copy-{tag}"));
        real::skopeo_copy(&target, &format!("oci:{}", copy.display()), &[])
            .unwrap_or_else(|e| panic!("skopeo copy {target}: {e}"));
    }
}
