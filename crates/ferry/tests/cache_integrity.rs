//! The cache is not trusted blindly: `ferry pull` against the fake registry with a cache
//! that was damaged, planted with links, or contradicted by a manifest (issue 6, "Data
//! integrity").

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;
use ferry_core::{media, Digest};
use ferry_testkit::fake::{FakeAuth, FakeRegistry, LoggedRequest};
use ferry_testkit::image::{sized_image, TestImage};
use serde_json::{json, Value};

const REPO: &str = "lib/app";

async fn registry_with(images: &[(&str, &TestImage)]) -> FakeRegistry {
    fake_registry(FakeAuth::None, REPO, images).await
}

fn cached(cache: &Path, d: &Digest) -> PathBuf {
    cache.join("blobs/sha256").join(d.hex())
}

/// Flip one byte in the middle of a cached blob, keeping its size.
fn damage(path: &Path) {
    let mut b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let i = b.len() / 2;
    b[i] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

fn blob_gets(reg: &FakeRegistry, d: &Digest) -> Vec<LoggedRequest> {
    let p = format!("/v2/{REPO}/blobs/{d}");
    reg.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == p)
        .collect()
}

/// Every blob of the default archive at `path` matches its name, and `img` is all there.
fn check_archive(path: &Path, img: &TestImage) {
    let entries = tar_map(&std::fs::read(path).unwrap());
    for (name, data) in &entries {
        if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(sha256_hex(data), hex, "{name} does not verify");
        }
    }
    for b in img.blobs() {
        assert_eq!(entries[&blob_name(&b.digest)], b.bytes.to_vec());
    }
    assert_eq!(
        entries[&blob_name(&img.manifest_digest)],
        img.manifest.to_vec()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_cached_layer_is_fetched_again_into_the_archive() {
    let img = sized_image(601, 2, 300_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let image = format!("{}/{REPO}:v1", reg.host());
    assert_ok(&pull_to(&cache, &[&image], &work.path().join("a.tar")).await);
    let bad = &img.layers[1];
    damage(&cached(&cache, &bad.digest));

    let out = work.path().join("b.tar");
    let r = pull_to(&cache, &[&image], &out).await;
    assert_ok(&r);
    check_archive(&out, &img);
    assert!(
        stderr(&r).contains(&format!(
            "warning: the cached copy of blob {} is damaged (its content hashes to sha256:",
            bad.digest
        )),
        "{}",
        stderr(&r)
    );
    assert!(
        stderr(&r).contains("it was removed from the cache; downloading it again"),
        "{}",
        stderr(&r)
    );
    assert_eq!(blob_gets(&reg, &bad.digest).len(), 2, "fetched again once");
    assert_eq!(blob_gets(&reg, &img.layers[0].digest).len(), 1);
    assert_eq!(
        sha256_hex(&std::fs::read(cached(&cache, &bad.digest)).unwrap()),
        bad.digest.hex(),
        "the cache holds the good copy again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_cached_layer_is_fetched_again_before_it_is_streamed() {
    let img = sized_image(602, 2, 300_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let image = format!("{}/{REPO}:v1", reg.host());
    let first = work.path().join("a.tar");
    assert_ok(&pull_to(&cache, &[&image], &first).await);
    let bad = &img.layers[0];
    damage(&cached(&cache, &bad.digest));

    let r = run(&cache, &s(&["pull", &image, "-o", "-"])).await;
    assert_ok(&r);
    let err = stderr(&r);
    assert!(
        err.contains(&format!(
            "warning: the cached copy of blob {} is damaged (its content hashes to sha256:",
            bad.digest
        )) && err.contains("it was removed from the cache; downloading it again"),
        "{err}"
    );
    // The whole archive, byte for byte what the first pull wrote (archives are
    // deterministic): no damaged byte went out before the damage was found.
    assert!(
        r.stdout == std::fs::read(&first).unwrap(),
        "the stream differs from the archive"
    );
    assert_eq!(
        tar_map(&r.stdout)[&blob_name(&bad.digest)],
        bad.bytes.to_vec()
    );
    assert_eq!(blob_gets(&reg, &bad.digest).len(), 2, "fetched again once");
    assert_eq!(blob_gets(&reg, &img.layers[1].digest).len(), 1);
    assert_eq!(
        sha256_hex(&std::fs::read(cached(&cache, &bad.digest)).unwrap()),
        bad.digest.hex(),
        "the cache holds the good copy again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_cached_blobs_are_fetched_again_for_legacy_and_oci_outputs() {
    let img = sized_image(603, 2, 200_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let image = format!("{}/{REPO}:v1", reg.host());
    assert_ok(&pull_to(&cache, &[&image], &work.path().join("a.tar")).await);
    let bad = &img.layers[1];

    // Legacy: the layer is unpacked to scratch before any of it is written.
    damage(&cached(&cache, &bad.digest));
    damage(&cached(&cache, &img.config.digest));
    let out = work.path().join("legacy.tar");
    let r = pull_to(&cache, &["--format", "legacy", &image], &out).await;
    assert_ok(&r);
    let err = stderr(&r);
    for d in [&bad.digest, &img.config.digest] {
        assert!(
            err.contains(&format!("warning: the cached copy of blob {d} is damaged")),
            "{err}"
        );
    }
    let files = tar_files(&out);
    let layer_tars: Vec<String> = files
        .iter()
        .filter(|(n, _)| n.ends_with("/layer.tar"))
        .map(|(_, b)| format!("sha256:{}", sha256_hex(b)))
        .collect();
    assert_eq!(layer_tars, digests(&img.diff_ids));
    assert_eq!(blob_gets(&reg, &bad.digest).len(), 2);
    assert_eq!(blob_gets(&reg, &img.config.digest).len(), 2);

    // An OCI layout: the blob's file is written again.
    damage(&cached(&cache, &bad.digest));
    let dir = work.path().join("layout");
    let r = pull_to(&cache, &["--format", "oci", &image], &dir).await;
    assert_ok(&r);
    assert!(stderr(&r).contains("is damaged"), "{}", stderr(&r));
    for b in img.blobs() {
        let held = std::fs::read(dir.join(blob_name(&b.digest))).unwrap();
        assert_eq!(held, b.bytes.to_vec(), "{}", b.digest);
    }
    assert_eq!(blob_gets(&reg, &bad.digest).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_cached_manifest_and_config_are_replaced() {
    let img = sized_image(604, 1, 50_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let image = format!("{}/{REPO}:v1", reg.host());
    assert_ok(&pull_to(&cache, &[&image], &work.path().join("a.tar")).await);
    damage(&cached(&cache, &img.manifest_digest));
    damage(&cached(&cache, &img.config.digest));
    let out = work.path().join("b.tar");
    let r = pull_to(&cache, &[&image], &out).await;
    assert_ok(&r);
    check_archive(&out, &img);
    assert_eq!(
        std::fs::read(cached(&cache, &img.manifest_digest)).unwrap(),
        img.manifest.to_vec()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_declaring_a_wrong_size_keeps_the_cached_blob() {
    let img = sized_image(605, 1, 50_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    assert_ok(
        &pull_to(
            &cache,
            &[&format!("{}/{REPO}:v1", reg.host())],
            &work.path().join("a.tar"),
        )
        .await,
    );
    // The same layer, declared one byte short.
    let layer = &img.layers[0];
    let mut m: Value = serde_json::from_slice(&img.manifest).unwrap();
    m["layers"][0]["size"] = json!(layer.size() - 1);
    reg.put_manifest_raw(
        REPO,
        "liar",
        &img.manifest_media_type,
        serde_json::to_vec(&m).unwrap().into(),
    );
    let out = work.path().join("liar.tar");
    let r = pull_to(
        &cache,
        &["-q", &format!("{}/{REPO}:liar", reg.host())],
        &out,
    )
    .await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert_eq!(
        stderr(&r),
        format!(
            "error: refusing the manifest of {}/{REPO}:liar\n  caused by: it declares {} bytes for blob {}, but the verified copy in the cache holds {}\n",
            reg.host(),
            layer.size() - 1,
            layer.digest,
            layer.size()
        )
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::metadata(cached(&cache, &layer.digest))
            .unwrap()
            .len(),
        layer.size(),
        "the verified blob was removed"
    );
    let before = blob_gets(&reg, &layer.digest).len();
    assert_ok(
        &pull_to(
            &cache,
            &["-q", &format!("{}/{REPO}:v1", reg.host())],
            &work.path().join("c.tar"),
        )
        .await,
    );
    assert_eq!(blob_gets(&reg, &layer.digest).len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_cut_short_by_a_crash_is_fetched_again() {
    let img = sized_image(610, 1, 100_000);
    let layer = &img.layers[0];
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let image = format!("{}/{REPO}:v1", reg.host());
    assert_ok(&pull_to(&cache, &["-q", &image], &work.path().join("a.tar")).await);
    // What an unsynced rename can leave after a machine crash: the name, part of the bytes.
    let path = cached(&cache, &layer.digest);
    let held = std::fs::read(&path).unwrap();
    std::fs::write(&path, &held[..held.len() / 3]).unwrap();
    let out = work.path().join("b.tar");
    assert_ok(&pull_to(&cache, &["-q", &image], &out).await);
    check_archive(&out, &img);
    assert_eq!(blob_gets(&reg, &layer.digest).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn symlink_planted_at_a_partial_is_refused_and_its_target_untouched() {
    let img = sized_image(606, 1, 50_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    std::fs::create_dir_all(cache.join("ingest")).unwrap();
    let victim = work.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let partial = cache
        .join("ingest")
        .join(format!("sha256-{}.partial", img.layers[0].digest.hex()));
    symlink(&victim, &partial).unwrap();
    let out = work.path().join("a.tar");
    let r = pull_to(&cache, &["-q", &format!("{}/{REPO}:v1", reg.host())], &out).await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    let err = stderr(&r);
    assert!(
        err.contains(&format!(
            "refusing the cache entry {}: it is a symbolic link",
            partial.display()
        )),
        "{err}"
    );
    assert!(err.contains("hint: ferry follows no links"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!cached(&cache, &img.layers[0].digest).exists());
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn symlinked_blobs_directory_is_refused() {
    let img = sized_image(607, 1, 5_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let elsewhere = work.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    symlink(&elsewhere, cache.join("blobs")).unwrap();
    let r = pull_to(
        &cache,
        &["-q", &format!("{}/{REPO}:v1", reg.host())],
        &work.path().join("a.tar"),
    )
    .await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(
        stderr(&r).contains(&format!(
            "refusing the cache entry {}: it is a symbolic link, not the cache's own directory",
            cache.join("blobs").display()
        )),
        "{}",
        stderr(&r)
    );
    assert!(dir_names(&elsewhere).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_partial_is_downloaded_again_from_byte_0() {
    let img = sized_image(608, 1, 400_000);
    let layer = &img.layers[0];
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let image = format!("{}/{REPO}:v1", reg.host());
    let partial = cache
        .join("ingest")
        .join(format!("sha256-{}.partial", layer.digest.hex()));
    // Half the layer, one byte of it wrong: what a damaged partial file holds.
    let mut half = layer.bytes[..layer.bytes.len() / 2].to_vec();
    half[1000] ^= 1;
    std::fs::create_dir_all(cache.join("ingest")).unwrap();

    // Into a default archive (each download writes its region directly).
    std::fs::write(&partial, &half).unwrap();
    let out = work.path().join("a.tar");
    let r = pull_to(&cache, &[&image], &out).await;
    assert_ok(&r);
    check_archive(&out, &img);
    let err = stderr(&r);
    assert!(
        err.contains(&format!(
            "warning: blob {} did not verify after resuming from bytes kept by an earlier run; downloading it again from the start\n",
            layer.digest
        )),
        "{err}"
    );
    let gets = blob_gets(&reg, &layer.digest);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes={}-", half.len()).as_str())
    );
    assert_eq!(gets[1].range, None, "the retry starts from byte 0");

    // The same through the writer path (standard output).
    std::fs::remove_file(cached(&cache, &layer.digest)).unwrap();
    std::fs::write(&partial, &half).unwrap();
    let r = run(&cache, &s(&["pull", "-q", &image, "-o", "-"])).await;
    assert_ok(&r);
    assert_eq!(
        tar_map(&r.stdout)[&blob_name(&layer.digest)],
        layer.bytes.to_vec()
    );
    let gets = &blob_gets(&reg, &layer.digest)[2..];
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[1].range, None);
}

/// An image whose config is `config_size` bytes of valid JSON.
fn image_with_config(seed: u64, config_size: usize) -> (Vec<u8>, Vec<u8>, TestImage) {
    let base = sized_image(seed, 1, 5_000);
    let mut cfg: Value = serde_json::from_slice(&base.config.bytes).unwrap();
    cfg["padding"] = json!("");
    let pad = config_size - serde_json::to_vec(&cfg).unwrap().len();
    cfg["padding"] = json!("x".repeat(pad));
    let cfg = serde_json::to_vec(&cfg).unwrap();
    assert_eq!(cfg.len(), config_size);
    let mut m: Value = serde_json::from_slice(&base.manifest).unwrap();
    m["config"]["digest"] = json!(Digest::sha256_of(&cfg).to_string());
    m["config"]["size"] = json!(cfg.len());
    (serde_json::to_vec(&m).unwrap(), cfg, base)
}

#[tokio::test(flavor = "multi_thread")]
async fn config_over_4_mib_is_refused_when_it_must_be_read() {
    let (manifest, cfg, base) = image_with_config(609, 5 * 1024 * 1024);
    let cfg_digest = Digest::sha256_of(&cfg);
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.put_blob(REPO, cfg_digest.clone(), cfg.into());
    for l in &base.layers {
        reg.put_blob(REPO, l.digest.clone(), l.bytes.clone());
    }
    reg.put_manifest_raw(REPO, "big", media::OCI_MANIFEST, manifest.into());
    let image = format!("{}/{REPO}:big", reg.host());
    let work = tempfile::tempdir().unwrap();
    let want = format!(
        "blob {cfg_digest} is 5242880 bytes; a manifest or image config may hold at most 4 MiB"
    );
    for extra in [
        &["--platform", "linux/amd64"][..],
        &["--format", "legacy"][..],
    ] {
        let out = work.path().join("x.tar");
        let mut args = vec!["-q"];
        args.extend_from_slice(extra);
        args.push(&image);
        let r = pull_to(&work.path().join("cache"), &args, &out).await;
        assert_eq!(r.status.code(), Some(1), "{extra:?}: {}", stderr(&r));
        assert!(stderr(&r).contains(&want), "{extra:?}: {}", stderr(&r));
        assert!(!out.exists());
    }
    // The default archive copies the config without reading it: no limit applies.
    let out = work.path().join("y.tar");
    assert_ok(&pull_to(&work.path().join("cache"), &["-q", &image], &out).await);
}
