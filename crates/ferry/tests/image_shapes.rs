//! `ferry pull` of the image shapes real registries serve beyond a plain image or index:
//! `name:tag@digest`, an index pulled by digest, signed schema 1, foreign layers, indexes
//! without platforms or nested in each other, OCI artifacts, `--all-platforms` without a
//! loadable image, an image named twice, zstd layers in the legacy format, and an image of
//! another platform than this machine's. Against the in-process fake registry; podman reads
//! the archive back where it is installed.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use ferry_core::{media, Digest, Platform};
use ferry_testkit::fake::{FakeAuth, FakeRegistry};
use ferry_testkit::image::{
    artifact, entry_of, entry_of_index, foreign_layer_image, random_image, random_index, raw_index,
    sized_image, zstd_image, Blob, ImageSpec, TestImage, TestIndex,
};
use serde_json::{json, Value};

const REPO: &str = "lib/app";
const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

async fn registry() -> FakeRegistry {
    FakeRegistry::start(FakeAuth::None).await
}

/// Put every blob of `img` and its manifest (under `tag`, and its digest) into [`REPO`].
fn push(reg: &FakeRegistry, tag: &str, img: &TestImage) {
    reg.push_image(REPO, tag, img);
}

/// Put an index's bytes under `tag` (and its digest); its images must be pushed already.
fn push_raw_index(reg: &FakeRegistry, tag: &str, idx: &TestIndex) {
    reg.put_manifest_raw(REPO, tag, &idx.media_type, idx.bytes.clone());
}

/// `ferry pull ARGS.. -o OUT` (not quiet: warnings and the summary go to stderr).
async fn pull(cache: &Path, args: &[&str], out: &Path) -> Output {
    pull_to(cache, args, out).await
}

fn archive_json(path: &Path, name: &str) -> Value {
    let entries = tar_map(&std::fs::read(path).expect("archive"));
    let data = entries
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not in {}", path.display()));
    serde_json::from_slice(data).expect("json entry")
}

fn warnings(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_at_digest_keeps_the_tag_when_the_tag_names_that_digest() {
    let img = sized_image(601, 1, 2000);
    let reg = registry().await;
    push(&reg, "v1", &img);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let reference = format!("{}/{REPO}:v1@{}", reg.host(), img.manifest_digest);
    let r = pull(&work.path().join("cache"), &[&reference], &out).await;
    assert_ok(&r);
    assert!(warnings(&r).is_empty(), "{}", stderr(&r));
    let m = archive_json(&out, "manifest.json");
    assert_eq!(
        m[0]["RepoTags"],
        json!([format!("{}/{REPO}:v1", reg.host())])
    );
    let idx = archive_json(&out, "index.json");
    let ann = &idx["manifests"][0]["annotations"];
    assert_eq!(ann["org.opencontainers.image.ref.name"], "v1");
    assert_eq!(
        idx["manifests"][0]["digest"],
        img.manifest_digest.to_string()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_at_digest_checks_the_tag_with_a_head_not_a_get() {
    let img = sized_image(606, 1, 2000);
    let reg = registry().await;
    push(&reg, "v1", &img);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let reference = format!("{}/{REPO}:v1@{}", reg.host(), img.manifest_digest);
    let r = pull(&work.path().join("cache"), &[&reference], &out).await;
    assert_ok(&r);
    // Docker Hub counts manifest GETs against the pull rate limit; the tag costs none.
    let tag_path = format!("/v2/{REPO}/manifests/v1");
    let methods: Vec<String> = reg
        .requests()
        .into_iter()
        .filter(|q| q.path == tag_path)
        .map(|q| q.method)
        .collect();
    assert_eq!(methods, vec!["HEAD"]);
    assert_eq!(
        archive_json(&out, "manifest.json")[0]["RepoTags"],
        json!([format!("{}/{REPO}:v1", reg.host())])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_at_digest_drops_a_tag_that_names_another_image_and_warns() {
    let tagged = sized_image(602, 1, 2000);
    let wanted = sized_image(603, 1, 2000);
    let reg = registry().await;
    push(&reg, "v1", &tagged);
    push(&reg, "other", &wanted);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let reference = format!("{}/{REPO}:v1@{}", reg.host(), wanted.manifest_digest);
    let r = pull(&work.path().join("cache"), &[&reference], &out).await;
    assert_ok(&r);
    let name = format!("{}/{REPO}", reg.host());
    assert_eq!(
        warnings(&r),
        vec![format!(
            "warning: {name}@{d} is pulled by its digest without the tag :v1, which does not name {d} (the tag names {} now)",
            tagged.manifest_digest,
            d = wanted.manifest_digest
        )]
    );
    // The digest's content, under no tag: a loader must not retag `v1` to it.
    let m = archive_json(&out, "manifest.json");
    assert_eq!(m[0]["RepoTags"], json!([]), "{m}");
    assert_eq!(m[0]["Config"], blob_name(&wanted.config.digest));
    let idx = archive_json(&out, "index.json");
    let ann = &idx["manifests"][0]["annotations"];
    assert!(
        ann.get("org.opencontainers.image.ref.name").is_none(),
        "{idx}"
    );
    assert_eq!(
        ann["io.containerd.image.name"],
        format!("{name}@{}", wanted.manifest_digest)
    );
    if let Some(podman) = ferry_testkit::real::Podman::new() {
        let (load, names) = podman_load(&podman, &out);
        assert!(
            !names.iter().any(|n| n.ends_with(":v1")),
            "podman tagged the image v1: {load}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_at_digest_with_an_unknown_tag_is_pulled_untagged() {
    let img = sized_image(604, 1, 2000);
    let reg = registry().await;
    push(&reg, "v1", &img);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let reference = format!("{}/{REPO}:gone@{}", reg.host(), img.manifest_digest);
    let r = pull(&work.path().join("cache"), &[&reference], &out).await;
    assert_ok(&r);
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "{}", stderr(&r));
    assert!(
        w[0].ends_with("(the registry does not know that tag)"),
        "{w:?}"
    );
    assert_eq!(
        archive_json(&out, "manifest.json")[0]["RepoTags"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn index_pulled_by_digest_records_the_index_digest_in_index_json_and_the_summary() {
    let platforms = [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ];
    let idx = random_index(605, &platforms, false);
    let reg = registry().await;
    reg.push_index(REPO, "multi", &idx);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let reference = format!("{}/{REPO}@{}", reg.host(), idx.digest);
    let r = pull(
        &work.path().join("cache"),
        &["--platform", "linux/arm64", &reference],
        &out,
    )
    .await;
    assert_ok(&r);
    let arm = &idx.images[1];
    let index = archive_json(&out, "index.json");
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], arm.manifest_digest.to_string());
    assert_eq!(
        entry["annotations"][ferry_archive::INDEX_DIGEST_ANNOTATION],
        idx.digest.to_string()
    );
    let summary = format!("→ sha256:{} (linux/arm64/v8)", idx.digest.short());
    assert!(stderr(&r).contains(&summary), "{}", stderr(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_schema1_by_digest_is_refused_as_schema1_not_as_a_digest_mismatch() {
    // A signed schema 1 manifest's digest covers its payload without the signatures, so the
    // bytes served never hash to the digest asked for.
    let payload = br#"{"schemaVersion":1,"name":"lib/app","tag":"old","architecture":"amd64","fsLayers":[],"history":[]}"#;
    let signed = br#"{"schemaVersion":1,"name":"lib/app","tag":"old","architecture":"amd64","fsLayers":[],"history":[],"signatures":[{"header":{"alg":"ES256"},"signature":"c2ln","protected":"e30"}]}"#;
    let payload_digest = Digest::sha256_of(payload);
    let reg = registry().await;
    reg.put_manifest_raw(
        REPO,
        &payload_digest.to_string(),
        media::DOCKER_SCHEMA1_SIGNED,
        signed.to_vec().into(),
    );
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("old.tar");
    let reference = format!("{}/{REPO}@{payload_digest}", reg.host());
    let r = pull(&work.path().join("cache"), &["-q", &reference], &out).await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    let err = stderr(&r);
    assert!(
        err.contains(
            "Docker image manifest schema 1 (application/vnd.docker.distribution.manifest.v1+prettyjws) is not supported"
        ),
        "{err}"
    );
    assert!(!err.contains("does not match"), "{err}");
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_layer_missing_from_the_registry_is_refused_naming_the_layer() {
    let url = "https://go.microsoft.invalid/layer.tar.gz";
    let (img, foreign) = foreign_layer_image(606, url);
    let reg = registry().await;
    for b in img.blobs().filter(|b| b.digest != foreign.digest) {
        reg.put_blob(REPO, b.digest.clone(), b.bytes.clone());
    }
    reg.put_manifest_raw(REPO, "win", &img.manifest_media_type, img.manifest.clone());
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("win.tar");
    let reference = format!("{}/{REPO}:win", reg.host());
    let r = pull(&work.path().join("cache"), &["-q", &reference], &out).await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    let first = stderr(&r).lines().next().unwrap_or_default().to_string();
    assert_eq!(
        first,
        format!(
            "error: {}/{REPO}:win has a foreign layer {} ({}) that its registry does not hold; ferry does not fetch foreign layers from the addresses a manifest names ({url})",
            reg.host(),
            foreign.digest,
            media::DOCKER_FOREIGN_LAYER_GZIP
        )
    );
    assert!(!stderr(&r).contains("hint:"), "{}", stderr(&r));
    // Refused before any layer was downloaded.
    assert!(img.layers.iter().all(|l| reg.blob_gets(&l.digest) == 0));
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_layer_the_registry_holds_is_pulled_like_any_layer() {
    let (img, _) = foreign_layer_image(607, "https://go.microsoft.invalid/layer.tar.gz");
    let reg = registry().await;
    push(&reg, "win", &img);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("win.tar");
    let reference = format!("{}/{REPO}:win", reg.host());
    let r = pull(&work.path().join("cache"), &["-q", &reference], &out).await;
    assert_ok(&r);
    let entries = tar_map(&std::fs::read(&out).unwrap());
    for l in &img.layers {
        assert_eq!(entries[&blob_name(&l.digest)], l.bytes.to_vec());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn index_whose_only_entry_has_no_platform_is_pulled() {
    let img = sized_image(608, 1, 2000);
    let idx = raw_index(media::OCI_INDEX, vec![entry_of(&img, None)], vec![]);
    let reg = registry().await;
    push(&reg, "inner", &img);
    push_raw_index(&reg, "oras", &idx);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let reference = format!("{}/{REPO}:oras", reg.host());
    let r = pull(&work.path().join("cache"), &["-q", &reference], &out).await;
    assert_ok(&r);
    let index = archive_json(&out, "index.json");
    assert_eq!(
        index["manifests"][0]["digest"],
        img.manifest_digest.to_string()
    );
    assert_eq!(
        archive_json(&out, "manifest.json")[0]["Config"],
        blob_name(&img.config.digest)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn index_without_platforms_says_it_lists_no_platforms() {
    let a = sized_image(609, 1, 1000);
    let b = sized_image(610, 1, 1000);
    let reg = registry().await;
    push(&reg, "a", &a);
    push(&reg, "b", &b);
    let two = raw_index(
        media::OCI_INDEX,
        vec![entry_of(&a, None), entry_of(&b, None)],
        vec![],
    );
    let empty = raw_index(media::OCI_INDEX, vec![], vec![]);
    push_raw_index(&reg, "two", &two);
    push_raw_index(&reg, "empty", &empty);
    let work = tempfile::tempdir().unwrap();
    for tag in ["two", "empty"] {
        let out = work.path().join(format!("{tag}.tar"));
        let reference = format!("{}/{REPO}:{tag}", reg.host());
        let r = pull(
            &work.path().join("cache"),
            &["-q", "--platform", "linux/amd64", &reference],
            &out,
        )
        .await;
        assert_eq!(r.status.code(), Some(3), "{}", stderr(&r));
        let first = stderr(&r).lines().next().unwrap_or_default().to_string();
        assert_eq!(
            first,
            format!("error: {reference} has no image for linux/amd64; it lists no platforms")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_indexes_are_walked_to_the_wanted_platform() {
    let platforms = [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ];
    let inner = random_index(611, &platforms, false);
    let reg = registry().await;
    reg.push_index(REPO, "inner", &inner);
    let outer = raw_index(media::OCI_INDEX, vec![entry_of_index(&inner)], vec![]);
    push_raw_index(&reg, "outer", &outer);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let reference = format!("{}/{REPO}:outer", reg.host());

    let out = work.path().join("arm.tar");
    let r = pull(
        &cache,
        &["-q", "--platform", "linux/arm64", &reference],
        &out,
    )
    .await;
    assert_ok(&r);
    let index = archive_json(&out, "index.json");
    assert_eq!(
        index["manifests"][0]["digest"],
        inner.images[1].manifest_digest.to_string()
    );

    // Every platform: the layout holds the outer index, the nested one and both images.
    let layout = work.path().join("all");
    let r = pull(
        &cache,
        &["-q", "--all-platforms", "--format", "oci", &reference],
        &layout,
    )
    .await;
    assert_ok(&r);
    for d in [&outer.digest, &inner.digest]
        .into_iter()
        .chain(inner.images.iter().map(|i| &i.manifest_digest))
    {
        assert!(layout.join(blob_name(d)).is_file(), "{d} missing");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn indexes_nested_too_deep_are_refused() {
    let img = sized_image(612, 1, 1000);
    let reg = registry().await;
    push(&reg, "img", &img);
    let mut idx = raw_index(
        media::OCI_INDEX,
        vec![entry_of(&img, Some(&Platform::new("linux", "amd64", None)))],
        vec![],
    );
    push_raw_index(&reg, "level1", &idx);
    for level in 2..=5 {
        idx = raw_index(media::OCI_INDEX, vec![entry_of_index(&idx)], vec![]);
        push_raw_index(&reg, &format!("level{level}"), &idx);
    }
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    // Four levels are walked ...
    let ok = format!("{}/{REPO}:level4", reg.host());
    let r = pull(
        &cache,
        &["-q", "--platform", "linux/amd64", &ok],
        &work.path().join("4.tar"),
    )
    .await;
    assert_ok(&r);
    // ... five are not.
    let deep = format!("{}/{REPO}:level5", reg.host());
    let r = pull(
        &cache,
        &["-q", "--platform", "linux/amd64", &deep],
        &work.path().join("5.tar"),
    )
    .await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(
        stderr(&r).starts_with(&format!(
            "error: {deep}: indexes nest more than 4 deep; ferry stops there"
        )),
        "{}",
        stderr(&r)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_chart_is_refused_for_docker_formats_and_kept_with_format_oci() {
    let chart = artifact(613, HELM_CONFIG, None, HELM_CHART);
    let reg = registry().await;
    push(&reg, "chart", &chart);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let reference = format!("{}/{REPO}:chart", reg.host());
    for format in [None, Some("legacy")] {
        let out = work.path().join("chart.tar");
        let mut args = vec!["-q", reference.as_str()];
        if let Some(f) = format {
            args.extend(["--format", f]);
        }
        let r = pull(&cache, &args, &out).await;
        assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
        assert_eq!(
            stderr(&r).lines().next().unwrap_or_default(),
            format!("error: {reference} is an OCI artifact ({HELM_CONFIG}), not a container image; use --format oci to keep it")
        );
        assert!(!out.exists());
    }
    let layout = work.path().join("chart");
    let r = pull(&cache, &["-q", "--format", "oci", &reference], &layout).await;
    assert_ok(&r);
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        chart.manifest_digest.to_string()
    );
    assert!(!layout.join("manifest.json").exists());
    for b in chart.blobs() {
        assert_eq!(
            std::fs::read(layout.join(blob_name(&b.digest))).unwrap(),
            b.bytes.to_vec()
        );
    }
    assert_eq!(
        std::fs::read(layout.join(blob_name(&chart.manifest_digest))).unwrap(),
        chart.manifest.to_vec()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn artifact_with_artifact_type_is_refused_naming_that_type() {
    let sbom = artifact(
        614,
        media::OCI_EMPTY,
        Some("application/spdx+json"),
        "application/spdx+json",
    );
    let reg = registry().await;
    push(&reg, "sbom", &sbom);
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/{REPO}:sbom", reg.host());
    let r = pull(
        &work.path().join("cache"),
        &["-q", &reference],
        &work.path().join("s.tar"),
    )
    .await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("is an OCI artifact (application/spdx+json), not a container image"),
        "{}",
        stderr(&r)
    );
}

/// An index of only BuildKit-style attestations (`unknown/unknown`) and an artifact.
fn attestation_only_index(reg: &FakeRegistry) -> TestIndex {
    let att = random_image(&ImageSpec {
        seed: 615,
        layers: 1,
        layer_size: 500,
        ..ImageSpec::default()
    });
    let sig = artifact(
        616,
        media::OCI_EMPTY,
        Some("application/vnd.dev.cosign.artifact.sig.v1+json"),
        "application/vnd.dev.cosign.simplesigning.v1+json",
    );
    push(reg, "att", &att);
    push(reg, "sig", &sig);
    raw_index(
        media::OCI_INDEX,
        vec![
            entry_of(&att, Some(&Platform::new("unknown", "unknown", None))),
            entry_of(&sig, None),
        ],
        vec![att, sig],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn all_platforms_without_a_loadable_image_is_refused_for_the_default_archive() {
    let reg = registry().await;
    let idx = attestation_only_index(&reg);
    push_raw_index(&reg, "nothing", &idx);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let reference = format!("{}/{REPO}:nothing", reg.host());
    let out = work.path().join("nothing.tar");
    let r = pull(&cache, &["-q", "--all-platforms", &reference], &out).await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert_eq!(
        stderr(&r).lines().next().unwrap_or_default(),
        format!("error: {reference} holds no container image docker could load (only attestations or artifacts); use --format oci to keep it")
    );
    assert!(!out.exists());

    // An OCI layout may hold it, with a warning.
    let layout = work.path().join("layout");
    let r = pull(
        &cache,
        &["--all-platforms", "--format", "oci", &reference],
        &layout,
    )
    .await;
    assert_ok(&r);
    assert_eq!(
        warnings(&r),
        vec![format!(
            "warning: {reference} holds no container image (only attestations or artifacts)"
        )]
    );
    assert!(layout.join(blob_name(&idx.digest)).is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_image_given_twice_is_listed_once_with_a_warning() {
    let img = sized_image(617, 1, 2000);
    let reg = registry().await;
    push(&reg, "v1", &img);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("two.tar");
    let reference = format!("{}/{REPO}:v1", reg.host());
    let r = pull(&work.path().join("cache"), &[&reference, &reference], &out).await;
    assert_ok(&r);
    assert_eq!(
        warnings(&r),
        vec![format!(
            "warning: {reference} is given more than once; it is pulled once"
        )]
    );
    let m = archive_json(&out, "manifest.json");
    assert_eq!(m.as_array().map(Vec::len), Some(1), "{m}");
    let index = archive_json(&out, "index.json");
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "{index}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_format_unpacks_zstd_layers_checked_against_diff_ids() {
    let img = zstd_image(&ImageSpec {
        seed: 618,
        layers: 2,
        layer_size: 3000,
        ..ImageSpec::default()
    });
    assert!(img
        .layers
        .iter()
        .all(|l| l.media_type == media::OCI_LAYER_ZSTD));
    let reg = registry().await;
    push(&reg, "zstd", &img);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("legacy.tar");
    let reference = format!("{}/{REPO}:zstd", reg.host());
    let r = pull(
        &work.path().join("cache"),
        &["-q", "--format", "legacy", &reference],
        &out,
    )
    .await;
    assert_ok(&r);
    let entries = tar_map(&std::fs::read(&out).unwrap());
    let m: Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    let layers: Vec<String> = m[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers.len(), 2);
    for (path, diff_id) in layers.iter().zip(&img.diff_ids) {
        assert_eq!(
            format!("sha256:{}", sha256_hex(&entries[path])),
            diff_id.to_string()
        );
    }
    if let Some(ids) = podman_diff_ids(&out) {
        assert_eq!(ids, digests(&img.diff_ids));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_of_another_platform_pulled_without_platform_warns() {
    // An architecture no test machine has.
    let other = Platform::new("linux", "s390x", None);
    let img = random_image(&ImageSpec {
        seed: 619,
        layers: 1,
        layer_size: 1000,
        platform: other.clone(),
        ..ImageSpec::default()
    });
    let reg = registry().await;
    push(&reg, "s390x", &img);
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/{REPO}:s390x", reg.host());
    let r = pull(
        &work.path().join("cache"),
        &[&reference],
        &work.path().join("o.tar"),
    )
    .await;
    assert_ok(&r);
    assert_eq!(
        warnings(&r),
        vec![format!(
            "warning: {reference} is linux/s390x only; it will not run on this {} machine without emulation",
            Platform::host()
        )]
    );
    // Asked for explicitly, it is an error as before.
    let r = pull(
        &work.path().join("cache"),
        &[
            "-q",
            "--platform",
            &Platform::host().to_string(),
            &reference,
        ],
        &work.path().join("p.tar"),
    )
    .await;
    assert_eq!(r.status.code(), Some(3), "{}", stderr(&r));
    // The host's own image gives no warning.
    let own = sized_image(620, 1, 1000);
    push(&reg, "own", &own);
    let own_ref = format!("{}/{REPO}:own", reg.host());
    let r = pull(
        &work.path().join("cache"),
        &[&own_ref],
        &work.path().join("own.tar"),
    )
    .await;
    assert_ok(&r);
    if Platform::host() == Platform::new("linux", "amd64", None) {
        assert!(warnings(&r).is_empty(), "{}", stderr(&r));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_references_resolving_to_the_same_name_and_manifest_are_listed_once() {
    let img = sized_image(621, 1, 1000);
    let reg = registry().await;
    push(&reg, "v1", &img);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("two.tar");
    let by_digest = format!("{}/{REPO}@{}", reg.host(), img.manifest_digest);
    // The tag is unknown, so this one too is named by its digest alone.
    let stale_tag = format!("{}/{REPO}:gone@{}", reg.host(), img.manifest_digest);
    let r = pull(&work.path().join("cache"), &[&by_digest, &stale_tag], &out).await;
    assert_ok(&r);
    let w = warnings(&r);
    assert_eq!(w.len(), 2, "{}", stderr(&r));
    assert_eq!(
        w[1],
        format!(
            "warning: {}/{REPO}:gone is the same image as an earlier argument; it is listed once",
            reg.host()
        )
    );
    let index = archive_json(&out, "index.json");
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "{index}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn all_platforms_without_this_machines_platform_gives_docker_the_first_image_with_a_warning()
{
    let platforms = [
        Platform::new("linux", "s390x", None),
        Platform::new("linux", "ppc64le", None),
    ];
    let idx = random_index(622, &platforms, false);
    let reg = registry().await;
    reg.push_index(REPO, "far", &idx);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("far.tar");
    let reference = format!("{}/{REPO}:far", reg.host());
    let r = pull(
        &work.path().join("cache"),
        &["--all-platforms", &reference],
        &out,
    )
    .await;
    assert_ok(&r);
    assert_eq!(
        warnings(&r),
        vec![format!(
            "warning: {reference} has no image for {}; docker will load its linux/s390x image, which needs emulation here",
            Platform::host()
        )]
    );
    let m = archive_json(&out, "manifest.json");
    assert_eq!(m.as_array().map(Vec::len), Some(1), "{m}");
    assert_eq!(m[0]["Config"], blob_name(&idx.images[0].config.digest));
}

/// The manifest GETs the registry has answered so far, by the reference in their path.
fn manifest_gets(reg: &FakeRegistry) -> Vec<String> {
    reg.requests()
        .into_iter()
        .filter(|q| q.method == "GET")
        .filter_map(|q| q.path.split_once("/manifests/").map(|(_, r)| r.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nested_index_listed_many_times_is_fetched_once() {
    // top lists `middle` 20 times, which lists `inner` 20 times: without a record of what
    // was fetched, that is 1 + 20 + 400 index fetches.
    let platforms = [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ];
    let inner = random_index(623, &platforms, false);
    let reg = registry().await;
    reg.push_index(REPO, "inner", &inner);
    let middle = raw_index(media::OCI_INDEX, vec![entry_of_index(&inner); 20], vec![]);
    push_raw_index(&reg, "middle", &middle);
    let top = raw_index(media::OCI_INDEX, vec![entry_of_index(&middle); 20], vec![]);
    push_raw_index(&reg, "top", &top);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let reference = format!("{}/{REPO}:top", reg.host());
    let r = pull(
        &cache,
        &["-q", "--platform", "linux/arm64", &reference],
        &work.path().join("arm.tar"),
    )
    .await;
    assert_ok(&r);
    assert_eq!(
        manifest_gets(&reg),
        vec![
            "top".to_string(),
            middle.digest.to_string(),
            inner.digest.to_string(),
            inner.images[1].manifest_digest.to_string(),
        ]
    );
    assert_eq!(
        archive_json(&work.path().join("arm.tar"), "index.json")["manifests"][0]["digest"],
        inner.images[1].manifest_digest.to_string()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_indexes_of_another_platform_are_not_fetched() {
    let amd64 = Platform::new("linux", "amd64", None);
    let arm64 = Platform::new("linux", "arm64", Some("v8"));
    let for_amd = random_index(624, std::slice::from_ref(&amd64), false);
    let for_arm = random_index(625, std::slice::from_ref(&arm64), false);
    let reg = registry().await;
    reg.push_index(REPO, "amd", &for_amd);
    reg.push_index(REPO, "arm", &for_arm);
    let entry = |idx: &TestIndex, p: &Platform| {
        let mut e = entry_of_index(idx);
        e["platform"] = json!({"os": p.os, "architecture": p.architecture});
        e
    };
    let top = raw_index(
        media::OCI_INDEX,
        vec![entry(&for_arm, &arm64), entry(&for_amd, &amd64)],
        vec![],
    );
    push_raw_index(&reg, "top", &top);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let reference = format!("{}/{REPO}:top", reg.host());
    let r = pull(
        &cache,
        &["-q", "--platform", "linux/amd64", &reference],
        &work.path().join("amd.tar"),
    )
    .await;
    assert_ok(&r);
    assert_eq!(
        manifest_gets(&reg),
        vec![
            "top".to_string(),
            for_amd.digest.to_string(),
            for_amd.images[0].manifest_digest.to_string(),
        ]
    );
    // A platform none matches: nothing nested is fetched, and the error still lists what
    // the index has.
    let before = manifest_gets(&reg).len();
    let r = pull(
        &cache,
        &["-q", "--platform", "linux/s390x", &reference],
        &work.path().join("s390x.tar"),
    )
    .await;
    assert_eq!(r.status.code(), Some(3), "{}", stderr(&r));
    assert_eq!(
        stderr(&r).lines().next().unwrap_or_default(),
        format!(
            "error: {reference} has no image for linux/s390x; it has: linux/arm64, linux/amd64"
        )
    );
    assert_eq!(manifest_gets(&reg)[before..], ["top".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_needing_more_than_1000_manifest_fetches_is_refused() {
    let img = sized_image(626, 1, 500);
    let reg = registry().await;
    push(&reg, "img", &img);
    let amd64 = Platform::new("linux", "amd64", None);
    // 1,000 distinct nested indexes (an annotation tells them apart), each of one image.
    let mut entries = Vec::new();
    for n in 0..1000 {
        let mut e = entry_of(&img, Some(&amd64));
        e["annotations"] = json!({ "n": n.to_string() });
        let nested = raw_index(media::OCI_INDEX, vec![e], vec![]);
        push_raw_index(&reg, &format!("n{n}"), &nested);
        entries.push(entry_of_index(&nested));
    }
    let top = raw_index(media::OCI_INDEX, entries, vec![]);
    push_raw_index(&reg, "wide", &top);
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/{REPO}:wide", reg.host());
    let out = work.path().join("wide.tar");
    let r = pull(
        &work.path().join("cache"),
        &["-q", "--platform", "linux/amd64", &reference],
        &out,
    )
    .await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert_eq!(
        stderr(&r).lines().next().unwrap_or_default(),
        format!("error: {reference}: resolving it would fetch more than 1000 manifests (its indexes and the images they list); ferry stops there")
    );
    assert_eq!(manifest_gets(&reg).len(), 1000);
    assert!(!out.exists());
}

const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// A signature as classic cosign pushes it (`sha256-<digest>.sig`): an OCI manifest without
/// `artifactType`, an image config with empty `os` and `architecture`, and one
/// simplesigning layer.
fn cosign_signature(signed: &Digest) -> TestImage {
    let blob = |media_type: &str, bytes: Vec<u8>| Blob {
        digest: Digest::sha256_of(&bytes),
        media_type: media_type.to_string(),
        bytes: bytes.into(),
    };
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": REPO},
            "image": {"docker-manifest-digest": signed.to_string()},
            "type": "cosign container image signature"
        },
        "optional": null
    });
    let layer = blob(SIMPLESIGNING, serde_json::to_vec(&payload).unwrap());
    let config = json!({
        "architecture": "", "os": "", "created": "0001-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest.to_string()]},
        "config": {}
    });
    let config = blob(media::OCI_CONFIG, serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest.to_string(), "size": config.size()},
        "layers": [{
            "mediaType": SIMPLESIGNING, "digest": layer.digest.to_string(), "size": layer.size(),
            "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="}
        }]
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    TestImage {
        manifest_digest: Digest::sha256_of(&bytes),
        manifest: bytes.into(),
        manifest_media_type: media::OCI_MANIFEST.to_string(),
        config,
        layers: vec![layer],
        diff_ids: Vec::new(),
        platform: Platform::new("", "", None),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn classic_cosign_signature_is_refused_for_the_default_archive_and_kept_with_format_oci() {
    let simplesigning = SIMPLESIGNING;
    let signed = sized_image(627, 1, 500);
    let sig = cosign_signature(&signed.manifest_digest);
    let reg = registry().await;
    let tag = format!("sha256-{}.sig", signed.manifest_digest.hex());
    push(&reg, &tag, &sig);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let reference = format!("{}/{REPO}:{tag}", reg.host());
    let out = work.path().join("sig.tar");
    let r = pull(&cache, &["-q", &reference], &out).await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert_eq!(
        stderr(&r).lines().next().unwrap_or_default(),
        format!("error: {reference} is an OCI artifact ({simplesigning}), not a container image; use --format oci to keep it")
    );
    assert!(!out.exists());
    let layout = work.path().join("sig");
    let r = pull(&cache, &["--format", "oci", &reference], &layout).await;
    assert_ok(&r);
    // Not taken for an image of another platform (its config says os "" and arch "").
    assert!(warnings(&r).is_empty(), "{}", stderr(&r));
    for b in sig.blobs() {
        assert_eq!(
            std::fs::read(layout.join(blob_name(&b.digest))).unwrap(),
            b.bytes.to_vec()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platformless_image_beside_a_nested_index_of_another_platform_is_not_taken() {
    let arm64 = Platform::new("linux", "arm64", Some("v8"));
    let for_arm = random_index(627, std::slice::from_ref(&arm64), false);
    let loose = sized_image(628, 1, 300);
    let reg = registry().await;
    reg.push_index(REPO, "arm", &for_arm);
    push(&reg, "loose", &loose);
    let mut nested = entry_of_index(&for_arm);
    nested["platform"] = json!({"os": "linux", "architecture": "arm64"});
    let top = raw_index(
        media::OCI_INDEX,
        vec![nested, entry_of(&loose, None)],
        vec![],
    );
    push_raw_index(&reg, "top", &top);
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/{REPO}:top", reg.host());
    let r = pull(
        &work.path().join("cache"),
        &["-q", "--platform", "linux/amd64", &reference],
        &work.path().join("amd.tar"),
    )
    .await;
    // Not "the only entry": the index holds arm64 images too, so amd64 is simply missing.
    assert_eq!(r.status.code(), Some(3), "{}", stderr(&r));
    assert_eq!(
        stderr(&r).lines().next().unwrap_or_default(),
        format!("error: {reference} has no image for linux/amd64; it has: linux/arm64")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nested_index_labelled_without_variant_is_searched_for_any_variant() {
    let armv6 = Platform::new("linux", "arm", Some("v6"));
    let for_arm = random_index(629, std::slice::from_ref(&armv6), false);
    let reg = registry().await;
    reg.push_index(REPO, "arm", &for_arm);
    let mut nested = entry_of_index(&for_arm);
    // `linux/arm` alone reads as arm/v7; the index inside holds arm/v6.
    nested["platform"] = json!({"os": "linux", "architecture": "arm"});
    let top = raw_index(media::OCI_INDEX, vec![nested], vec![]);
    push_raw_index(&reg, "top", &top);
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/{REPO}:top", reg.host());
    let r = pull(
        &work.path().join("cache"),
        &["-q", "--platform", "linux/arm/v6", &reference],
        &work.path().join("v6.tar"),
    )
    .await;
    assert_ok(&r);
    assert!(
        manifest_gets(&reg).contains(&for_arm.images[0].manifest_digest.to_string()),
        "{:?}",
        manifest_gets(&reg)
    );
}
