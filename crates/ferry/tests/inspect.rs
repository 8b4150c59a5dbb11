//! `ferry inspect`: the human view, `--platform` on an index, `--raw` and `--config` byte
//! for byte, a config that does not match its digest (exit 6), and `--json` agreeing with
//! the real `skopeo inspect` against a real docker-registry.

mod common;

use bytes::Bytes;
use common::*;
use ferry_core::{media, Digest, Platform};
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::{random_image, random_index, Blob, ImageSpec, TestImage};
use ferry_testkit::real::{self, RealRegistry, RegistryAuth};
use serde_json::{json, Value};

const REPO: &str = "lib/app";

/// `img` with its config replaced by `config` (and its manifest rebuilt to point at it).
fn with_config(img: &TestImage, config: Value) -> TestImage {
    let bytes = serde_json::to_vec(&config).unwrap();
    let config = Blob {
        digest: Digest::sha256_of(&bytes),
        media_type: img.config.media_type.clone(),
        bytes: Bytes::from(bytes),
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": img.manifest_media_type,
        "config": {"mediaType": config.media_type, "digest": config.digest.to_string(), "size": config.size()},
        "layers": img.layers.iter().map(|l| json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size(),
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec_pretty(&manifest).unwrap();
    TestImage {
        manifest_digest: Digest::sha256_of(&manifest),
        manifest: Bytes::from(manifest),
        config,
        ..img.clone()
    }
}

/// A small image with an environment, an entrypoint and labels in its config.
fn rich_image(seed: u64) -> TestImage {
    let img = random_image(&ImageSpec {
        seed,
        layers: 2,
        layer_size: 3000,
        ..Default::default()
    });
    let diff_ids: Vec<String> = img.diff_ids.iter().map(ToString::to_string).collect();
    with_config(
        &img,
        json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-05-06T07:08:09.123456789Z",
            "config": {
                "Env": ["PATH=/usr/bin:/bin", "GREETING=hello world"],
                "Entrypoint": ["/bin/app"],
                "Cmd": ["--serve"],
                "Labels": {"org.opencontainers.image.title": "app", "evil": "a\u{1b}[2Jb"},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }),
    )
}

async fn inspect(args: &[&str]) -> std::process::Output {
    let work = tempfile::tempdir().unwrap();
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    run_cmd(ferry_cmd(work.path(), &all)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn human_output_shows_config_and_layers_with_remote_text_sanitised() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let img = rich_image(701);
    reg.push_image(REPO, "v1", &img);
    let r = inspect(&[&format!("{}/{REPO}:v1", reg.host())]).await;
    assert_ok(&r);
    let out = String::from_utf8(r.stdout).unwrap();
    assert!(out.contains(&img.manifest_digest.to_string()), "{out}");
    assert!(out.contains(media::OCI_MANIFEST), "{out}");
    assert!(out.contains("Platform:   linux/amd64"), "{out}");
    assert!(out.contains("GREETING=hello world"), "{out}");
    assert!(out.contains(r#"Entrypoint: ["/bin/app"]"#), "{out}");
    assert!(out.contains("org.opencontainers.image.title=app"), "{out}");
    assert!(
        !out.contains('\x1b'),
        "an escape reached the terminal: {out}"
    );
    assert!(out.contains("evil=a\\x1b[2Jb"), "{out}");
    for l in &img.layers {
        assert!(out.contains(&l.digest.to_string()), "{out}");
    }
    let total: u64 = img.blobs().map(Blob::size).sum();
    assert!(out.contains(&format!("({total} bytes")), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn index_with_platform_shows_the_chosen_image_and_raw_gives_its_manifest() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let platforms = [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ];
    let idx = random_index(702, &platforms, false);
    reg.push_index(REPO, "multi", &idx);
    let reference = format!("{}/{REPO}:multi", reg.host());
    let arm = &idx.images[1];

    let r = inspect(&["--platform", "linux/arm64/v8", &reference]).await;
    assert_ok(&r);
    let out = String::from_utf8(r.stdout).unwrap();
    assert!(out.contains(&idx.digest.to_string()), "{out}");
    assert!(out.contains("linux/amd64"), "{out}");
    assert!(
        out.contains(&format!("{}  <- chosen", arm.manifest_digest)),
        "{out}"
    );
    assert!(out.contains("Platform:   linux/arm64/v8"), "{out}");
    assert!(out.contains(&arm.layers[0].digest.to_string()), "{out}");

    // --raw: the index as served; with --platform, the platform's manifest as served.
    let r = inspect(&["--raw", &reference]).await;
    assert_ok(&r);
    assert_eq!(r.stdout, &idx.bytes[..]);
    let r = inspect(&["--raw", "--platform", "linux/arm64/v8", &reference]).await;
    assert_ok(&r);
    assert_eq!(r.stdout, &arm.manifest[..]);

    // --config: the chosen image's config bytes as served.
    let r = inspect(&["--config", "--platform", "linux/arm64", &reference]).await;
    assert_ok(&r);
    assert_eq!(r.stdout, &arm.config.bytes[..]);

    // A platform the index lacks: not found.
    let r = inspect(&["--json", "--platform", "linux/s390x", &reference]).await;
    assert_eq!(r.status.code(), Some(3), "{}", stderr(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_with_a_wrong_digest_exits_6() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let img = rich_image(703);
    reg.push_image(REPO, "v1", &img);
    // Same size, other bytes, under the declared digest.
    let mut bad = img.config.bytes.to_vec();
    bad[0] ^= 0x20;
    reg.put_blob(REPO, img.config.digest.clone(), Bytes::from(bad));
    let reference = format!("{}/{REPO}:v1", reg.host());
    for mode in ["--config", "--json"] {
        let r = inspect(&[mode, &reference]).await;
        assert_eq!(r.status.code(), Some(6), "{mode}: {}", stderr(&r));
        assert!(r.stdout.is_empty(), "{mode}: unverified bytes were printed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn config_download_cut_short_resumes_and_notices_stay_off_stdout() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let img = rich_image(705);
    reg.push_image(REPO, "v1", &img);
    reg.add_fault(Fault::DropAfter {
        digest: Some(img.config.digest.clone()),
        after: 10,
        times: 1,
    });
    let r = inspect(&["--config", &format!("{}/{REPO}:v1", reg.host())]).await;
    assert_ok(&r);
    assert_eq!(r.stdout, &img.config.bytes[..]);
    assert_eq!(reg.blob_gets(&img.config.digest), 2);
    assert!(
        stderr(&r).contains("retry"),
        "no retry notice: {}",
        stderr(&r)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_that_does_not_exist_is_read_as_an_archive_and_refused() {
    let r = inspect(&["./image.tar"]).await;
    assert_eq!(r.status.code(), Some(2));
    assert!(stderr(&r).contains("reading ./image.tar"), "{}", stderr(&r));
}

#[test]
fn json_agrees_with_skopeo_inspect_on_a_real_registry() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    if real::tool("skopeo").is_none() {
        return;
    }
    let img = rich_image(704);
    push_with_skopeo(&reg, "insp/app:v1", &img, None);
    let reference = format!("{}/insp/app:v1", reg.host);
    let theirs = real::skopeo_inspect(&format!("docker://{reference}"), &["--tls-verify=false"])
        .unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().unwrap();
    let r = ferry(work.path(), &["inspect", "--json", &reference]);
    assert_ok(&r);
    let ours: Value = serde_json::from_slice(&r.stdout).unwrap();
    for key in [
        "Name",
        "Digest",
        "Architecture",
        "Os",
        "Layers",
        "Env",
        "Labels",
        "Created",
        "DockerVersion",
        "RepoTags",
    ] {
        assert_eq!(
            ours[key], theirs[key],
            "{key}: ours {ours}\ntheirs {theirs}"
        );
    }
    assert_eq!(ours["Digest"], json!(img.manifest_digest.to_string()));
    // Some skopeo releases (1.9.3 here) print no LayersData; where it is printed, it agrees.
    if let Some(theirs) = theirs["LayersData"].as_array() {
        let ours = ours["LayersData"].as_array().expect("LayersData");
        assert_eq!(ours.len(), theirs.len());
        for (o, t) in ours.iter().zip(theirs) {
            for k in ["MIMEType", "Digest", "Size"] {
                assert_eq!(o[k], t[k], "LayersData {k}");
            }
        }
    }
}
