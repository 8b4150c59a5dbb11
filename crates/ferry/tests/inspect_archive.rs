//! `ferry inspect` of archives: the same fields as for the registry image they came from,
//! `--raw` and `--config` byte for byte, archives without manifests, several platforms.

mod common;

use std::path::Path;

use common::*;
use ferry_testkit::image::{random_image, random_index, ImageSpec, TestImage};
use ferry_testkit::real::{self, RealRegistry, RegistryAuth};
use serde_json::Value;

fn registry() -> Option<RealRegistry> {
    let reg = RealRegistry::start(RegistryAuth::Anonymous)?;
    real::tool("skopeo")?;
    Some(reg)
}

fn image(seed: u64) -> TestImage {
    random_image(&ImageSpec {
        seed,
        layers: 2,
        layer_size: 50_000,
        ..Default::default()
    })
}

fn inspect(cache: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    ferry(cache, &all)
}

fn json(out: &std::process::Output) -> Value {
    assert_ok(out);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_archive_shows_what_its_registry_image_shows() {
    let Some(reg) = registry() else { return };
    let img = image(901);
    push_with_skopeo(&reg, "team/app:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let reference = format!("{}/team/app:v1", reg.host);
    let archive = work.path().join("app.tar");
    assert_ok(&pull_quiet(&cache, &[&reference], &archive));
    let a = archive.to_str().unwrap();

    let from_registry = json(&inspect(&cache, &["--json", &reference]));
    for location in [
        a.to_string(),
        format!("docker-archive:{a}"),
        format!("oci-archive:{a}"),
    ] {
        let from_archive = json(&inspect(&cache, &["--json", &location]));
        for key in [
            "Digest",
            "Layers",
            "LayersData",
            "Architecture",
            "Os",
            "Env",
            "Created",
        ] {
            assert_eq!(from_archive[key], from_registry[key], "{location}: {key}");
        }
    }
    let raw = inspect(&cache, &["--raw", a]);
    assert_ok(&raw);
    assert_eq!(raw.stdout, img.manifest.to_vec());
    let config = inspect(&cache, &["--config", a]);
    assert_ok(&config);
    assert_eq!(config.stdout, img.config.bytes.to_vec());
    let human = inspect(&cache, &[a]);
    assert_ok(&human);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains(&format!("Digest:     {}", img.manifest_digest)),
        "{text}"
    );
    for l in &img.layers {
        assert!(text.contains(&l.digest.to_string()), "{text}");
    }
}

#[test]
fn a_legacy_archive_has_a_config_but_no_manifest_to_show() {
    let Some(reg) = registry() else { return };
    let img = image(902);
    push_with_skopeo(&reg, "team/old:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("old.tar");
    assert_ok(&pull_quiet(
        &cache,
        &["--format", "legacy", &format!("{}/team/old:v1", reg.host)],
        &archive,
    ));
    let a = archive.to_str().unwrap();
    let config = inspect(&cache, &["--config", a]);
    assert_ok(&config);
    assert_eq!(config.stdout, img.config.bytes.to_vec());
    let raw = inspect(&cache, &["--raw", a]);
    assert_eq!(raw.status.code(), Some(2));
    assert!(
        stderr(&raw).contains("holds no manifest"),
        "{}",
        stderr(&raw)
    );
    let j = json(&inspect(&cache, &["--json", a]));
    // The layers as stored: uncompressed, so named by their diff_ids.
    assert_eq!(j["Layers"], serde_json::json!(digests(&img.diff_ids)));
    assert!(j.get("Digest").is_none(), "{j}");
}

#[test]
fn a_multi_platform_archive_lists_its_platforms_and_shows_the_one_asked_for() {
    let Some(reg) = registry() else { return };
    let plats: Vec<ferry_core::Platform> = ["linux/amd64", "linux/arm64"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let idx = random_index(903, &plats, false);
    push_index_with_skopeo(&reg, "team/multi:v1", &idx, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("multi.tar");
    assert_ok(&pull_quiet(
        &cache,
        &["--all-platforms", &format!("{}/team/multi:v1", reg.host)],
        &archive,
    ));
    let a = archive.to_str().unwrap();
    let raw = inspect(&cache, &["--raw", a]);
    assert_ok(&raw);
    assert_eq!(raw.stdout, idx.bytes.to_vec(), "the index as stored");
    let raw = inspect(&cache, &["--raw", "--platform", "linux/arm64", a]);
    assert_ok(&raw);
    assert_eq!(raw.stdout, idx.images[1].manifest.to_vec());
    let human = inspect(&cache, &["--platform", "linux/arm64", a]);
    assert_ok(&human);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("Platforms:"), "{text}");
    assert!(
        text.contains(&format!("{}  <- chosen", idx.images[1].manifest_digest)),
        "{text}"
    );
    let none = inspect(&cache, &["--json", "--platform", "linux/s390x", a]);
    assert_eq!(none.status.code(), Some(3), "{}", stderr(&none));
}
