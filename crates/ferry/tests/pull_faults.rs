//! `ferry pull` (the binary) against the in-process fake registry with faults injected:
//! killed and resumed downloads, cache reuse, bad content, platforms, schema 1, and
//! authentication from flags and from docker's config.json.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferry_core::{media, Digest, Platform};
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault, LoggedRequest, TokenField};
use ferry_testkit::image::{derived_image, random_index, sized_image, TestImage};
use serde_json::{json, Value};

const REPO: &str = "lib/app";

/// Run ferry with extra environment and optional stdin, off the async threads.
async fn run_with(
    cache: &Path,
    args: &[String],
    env: &[(&str, PathBuf)],
    stdin: Option<&str>,
) -> Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = ferry_cmd(cache, &a);
    for (k, v) in env {
        c.env(k, v);
    }
    match stdin {
        Some(input) => run_cmd_with_stdin(c, input.as_bytes()).await,
        None => run_cmd(c).await,
    }
}

/// A fake registry without auth holding each `(tag, image)` in [`REPO`].
async fn registry_with(images: &[(&str, &TestImage)]) -> FakeRegistry {
    fake_registry(FakeAuth::None, REPO, images).await
}

/// Check a default archive holds exactly `img` (docker manifest.json and OCI index), every
/// blob verifying.
fn check_archive(path: &Path, img: &TestImage) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let entries = tar_map(&bytes);
    for (name, data) in &entries {
        if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(sha256_hex(data), hex, "{name} does not verify");
        }
    }
    let m: Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    assert_eq!(m.as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m[0]["Config"], blob_name(&img.config.digest));
    let layers: Vec<String> = img.layers.iter().map(|l| blob_name(&l.digest)).collect();
    assert_eq!(m[0]["Layers"], json!(layers));
    let idx: Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    assert_eq!(
        idx["manifests"][0]["digest"],
        img.manifest_digest.to_string()
    );
    for b in img.blobs() {
        assert_eq!(entries[&blob_name(&b.digest)], b.bytes.to_vec());
    }
    assert_eq!(
        entries[&blob_name(&img.manifest_digest)],
        img.manifest.to_vec()
    );
}

fn blob_requests(reg: &FakeRegistry, d: &Digest) -> Vec<LoggedRequest> {
    let p = format!("/v2/{REPO}/blobs/{d}");
    reg.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == p)
        .collect()
}

fn partials(cache: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(cache.join("ingest"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_pull_resumes_with_range_and_writes_a_correct_archive() {
    let img = sized_image(101, 1, 2_000_000);
    let layer = &img.layers[0];
    let reg = registry_with(&[("v1", &img)]).await;
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 200_000,
    });
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let out = work.path().join("out").join("app.tar");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let image_ref = format!("{}/{REPO}:v1", reg.host());
    let args = ["pull", &image_ref, "-o", out.to_str().unwrap()];
    let mut cmd = tokio::process::Command::from(ferry_cmd(&cache, &args));
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn ferry");
    let deadline = Instant::now() + Duration::from_secs(30);
    let layer_partial = cache
        .join("ingest")
        .join(format!("sha256-{}.partial", layer.digest.hex()));
    loop {
        let held = std::fs::metadata(&layer_partial)
            .map(|m| m.len())
            .unwrap_or(0);
        if held > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ferry ended before the layer was half down"
        );
        assert!(Instant::now() < deadline, "no partial file appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.unwrap();
    assert!(!status.success());
    let held = std::fs::metadata(&layer_partial).unwrap().len();
    assert!(held > 0 && held < layer.size(), "held {held}");
    assert!(!out.exists(), "the output appeared after a kill");
    for name in dir_names(out.parent().unwrap()) {
        assert!(
            name.contains(".ferry-tmp"),
            "unexpected file {name} in the output directory"
        );
    }
    assert!(!cache.join("blobs/sha256").join(layer.digest.hex()).exists());

    reg.clear_faults();
    let before = reg.requests().len();
    let second = run(&cache, &s(&args)).await;
    assert_ok(&second);
    let p = format!("/v2/{REPO}/blobs/{}", layer.digest);
    let first_get = reg.requests()[before..]
        .iter()
        .find(|r| r.method == "GET" && r.path == p)
        .cloned()
        .expect("the second run fetched the rest of the layer");
    assert_eq!(
        first_get.range.as_deref(),
        Some(format!("bytes={held}-").as_str()),
        "{first_get:?}"
    );
    assert_eq!(first_get.status, 206);
    assert!(
        stderr(&second).contains("resuming at"),
        "{}",
        stderr(&second)
    );
    check_archive(&out, &img);
    assert!(partials(&cache).is_empty(), "{:?}", partials(&cache));
    assert_eq!(
        dir_names(out.parent().unwrap()),
        vec!["app.tar".to_string()],
        "temporary files were left beside the output"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_pull_exits_130_and_leaves_no_output() {
    let img = sized_image(102, 1, 1_000_000);
    let reg = registry_with(&[("v1", &img)]).await;
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 200_000,
    });
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let out = work.path().join("app.tar");
    let image_ref = format!("{}/{REPO}:v1", reg.host());
    let mut cmd = tokio::process::Command::from(ferry_cmd(
        &cache,
        &["pull", &image_ref, "-o", out.to_str().unwrap()],
    ));
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn ferry");
    let pid = child.id().expect("pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reg.blob_gets(&img.layers[0].digest) == 0 {
        assert!(Instant::now() < deadline, "the layer download never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let o = child.wait_with_output().await.unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    assert!(!out.exists());
    assert_eq!(dir_names(work.path()), vec!["cache".to_string()]);
    // What arrived before the interruption is kept, and the next run continues from it.
    let held = partials(&cache)
        .into_iter()
        .find(|(p, _)| p.to_string_lossy().contains(img.layers[0].digest.hex()))
        .map(|(_, n)| n)
        .unwrap_or(0);
    assert!(held > 0, "nothing of the interrupted layer was kept");
    reg.clear_faults();
    let before = reg.requests().len();
    let o = pull_to(&cache, &[&image_ref], &out).await;
    assert_ok(&o);
    check_archive(&out, &img);
    let p = format!("/v2/{REPO}/blobs/{}", img.layers[0].digest);
    let first = reg.requests()[before..]
        .iter()
        .find(|r| r.path == p)
        .cloned()
        .unwrap();
    assert_eq!(first.range, Some(format!("bytes={held}-")));
}

#[tokio::test(flavor = "multi_thread")]
async fn second_image_sharing_layers_downloads_only_the_new_ones() {
    let base = sized_image(103, 2, 50_000);
    let app = derived_image(&base, 104);
    let reg = registry_with(&[("base", &base), ("app", &app)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let o1 = work.path().join("base.tar");
    let o2 = work.path().join("app.tar");
    let r = pull_to(&cache, &[&format!("{}/{REPO}:base", reg.host())], &o1).await;
    assert_ok(&r);
    check_archive(&o1, &base);
    let r = pull_to(&cache, &[&format!("{}/{REPO}:app", reg.host())], &o2).await;
    assert_ok(&r);
    check_archive(&o2, &app);
    assert_eq!(
        reg.blob_gets(&base.layers[0].digest),
        1,
        "shared layer fetched again"
    );
    assert_eq!(reg.blob_gets(&base.layers[1].digest), 1);
    assert_eq!(reg.blob_gets(&app.layers[1].digest), 1);
    assert_eq!(reg.blob_gets(&app.config.digest), 1);
    let err = stderr(&r);
    assert!(
        err.contains(&format!("{} cached", base.layers[0].digest.short())),
        "{err}"
    );
    // A third pull of the same image fetches no blob at all.
    let before = reg.requests().len();
    let r = pull_to(
        &cache,
        &["--force", &format!("{}/{REPO}:app", reg.host())],
        &o2,
    )
    .await;
    assert_ok(&r);
    assert!(
        !reg.requests()[before..]
            .iter()
            .any(|q| q.path.contains("/blobs/")),
        "a cached image touched blobs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_digest_exits_6_naming_the_blob_and_writes_nothing() {
    let img = sized_image(105, 2, 20_000);
    let bad = &img.layers[1];
    let reg = registry_with(&[("v1", &img)]).await;
    reg.add_fault(Fault::WrongDigest {
        digest: bad.digest.clone(),
    });
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let out = work.path().join("app.tar");
    let r = pull_to(&cache, &[&format!("{}/{REPO}:v1", reg.host())], &out).await;
    assert_eq!(r.status.code(), Some(6), "{}", stderr(&r));
    let err = stderr(&r);
    assert!(err.contains(&bad.digest.to_string()), "{err}");
    assert!(err.contains("does not match"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(!out.exists());
    assert_eq!(dir_names(work.path()), vec!["cache".to_string()]);
    assert!(!cache.join("blobs/sha256").join(bad.digest.hex()).exists());
    assert!(partials(&cache)
        .iter()
        .all(|(p, _)| !p.to_string_lossy().contains(bad.digest.hex())));
}

fn platforms() -> Vec<Platform> {
    vec![
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_platform_exits_3_listing_the_available_ones() {
    let idx = random_index(106, &platforms(), false);
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.push_index(REPO, "multi", &idx);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("x.tar");
    let r = pull_to(
        &work.path().join("cache"),
        &[
            "--platform",
            "linux/s390x",
            &format!("{}/{REPO}:multi", reg.host()),
        ],
        &out,
    )
    .await;
    assert_eq!(r.status.code(), Some(3), "{}", stderr(&r));
    let err = stderr(&r);
    assert!(err.contains("linux/s390x"), "{err}");
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64/v8"),
        "{err}"
    );
    assert!(err.contains("--platform"), "the hint is missing: {err}");
    assert!(!out.exists());
    for img in &idx.images {
        for b in img.blobs() {
            assert_eq!(reg.blob_gets(&b.digest), 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn platform_flag_selects_the_matching_child() {
    let idx = random_index(107, &platforms(), true);
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.push_index(REPO, "multi", &idx);
    let work = tempfile::tempdir().unwrap();
    for (flag, want, other) in [("linux/arm64", 1, 0), ("linux/amd64", 0, 1)] {
        let out = work.path().join(format!("{}.tar", flag.replace('/', "_")));
        let r = pull_to(
            &work.path().join(format!("cache-{want}")),
            &["--platform", flag, &format!("{}/{REPO}:multi", reg.host())],
            &out,
        )
        .await;
        assert_ok(&r);
        check_archive(&out, &idx.images[want]);
        let entries = tar_map(&std::fs::read(&out).unwrap());
        for b in idx.images[other].blobs() {
            assert!(!entries.contains_key(&blob_name(&b.digest)));
        }
        let index: Value = serde_json::from_slice(&entries["index.json"]).unwrap();
        let p = &index["manifests"][0]["platform"];
        assert_eq!(p["architecture"], idx.images[want].platform.architecture);
    }
    // Each run fetched only its own child's layers.
    for img in &idx.images {
        for l in &img.layers {
            assert_eq!(reg.blob_gets(&l.digest), 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn all_platforms_oci_layout_holds_the_index_and_every_child() {
    let idx = random_index(108, &platforms(), false);
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.push_index(REPO, "multi", &idx);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("layout");
    let r = pull_to(
        &work.path().join("cache"),
        &[
            "--all-platforms",
            "--format",
            "oci",
            &format!("{}/{REPO}:multi", reg.host()),
        ],
        &out,
    )
    .await;
    assert_ok(&r);
    let layout: Value =
        serde_json::from_slice(&std::fs::read(out.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let top = &index["manifests"];
    assert_eq!(top.as_array().unwrap().len(), 1, "{index}");
    assert_eq!(top[0]["digest"], idx.digest.to_string());
    assert_eq!(top[0]["mediaType"], media::OCI_INDEX);
    let read_blob = |d: &str| -> Vec<u8> {
        let hex = d.strip_prefix("sha256:").unwrap();
        let b = std::fs::read(out.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(sha256_hex(&b), hex, "blob {d} does not verify");
        b
    };
    let stored_index: Value = serde_json::from_slice(&read_blob(&idx.digest.to_string())).unwrap();
    let children = stored_index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    for (child, img) in children.iter().zip(&idx.images) {
        let m: Value =
            serde_json::from_slice(&read_blob(child["digest"].as_str().unwrap())).unwrap();
        read_blob(m["config"]["digest"].as_str().unwrap());
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), img.layers.len());
        for (l, want) in layers.iter().zip(&img.layers) {
            assert_eq!(
                read_blob(l["digest"].as_str().unwrap()),
                want.bytes.to_vec()
            );
        }
    }
    // Exactly the blobs of the index: 1 index + 2 × (manifest + config + 2 layers).
    assert_eq!(dir_names(&out.join("blobs/sha256")).len(), 1 + 2 * 4);
    assert!(!out.join("manifest.json").exists());
    assert_eq!(
        dir_names(work.path()),
        vec!["cache".to_string(), "layout".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema1_image_fails_with_a_clear_sentence() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.put_manifest_raw(
        REPO,
        "old",
        media::DOCKER_SCHEMA1_SIGNED,
        br#"{"schemaVersion":1,"name":"lib/app","tag":"old","fsLayers":[],"history":[]}"#
            .to_vec()
            .into(),
    );
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("old.tar");
    let r = pull_to(
        &work.path().join("cache"),
        &[&format!("{}/{REPO}:old", reg.host())],
        &out,
    )
    .await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    let err = stderr(&r);
    assert!(
        err.contains("schema 1") && err.contains("not supported"),
        "{err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_without_credentials_exits_4_with_a_hint() {
    let img = sized_image(109, 1, 2_000);
    for auth in [
        basic_auth("u", "p"),
        bearer_auth(Some(("u", "p")), TokenField::Token, None),
    ] {
        let reg = fake_registry(auth.clone(), REPO, &[("v1", &img)]).await;
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("app.tar");
        let r = pull_to(
            &work.path().join("cache"),
            &[&format!("{}/{REPO}:v1", reg.host())],
            &out,
        )
        .await;
        assert_eq!(r.status.code(), Some(4), "{auth:?}: {}", stderr(&r));
        let err = stderr(&r);
        assert!(err.contains("hint:") && err.contains("--username"), "{err}");
        assert!(!out.exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn username_and_password_stdin_work_against_basic_and_bearer() {
    let img = sized_image(110, 1, 5_000);
    for auth in [
        basic_auth("alice", "pa ss:word"),
        bearer_auth(
            Some(("alice", "pa ss:word")),
            TokenField::AccessToken,
            Some(120),
        ),
    ] {
        let reg = fake_registry(auth.clone(), REPO, &[("v1", &img)]).await;
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("app.tar");
        let args = s(&[
            "pull",
            "--username",
            "alice",
            "--password-stdin",
            &format!("{}/{REPO}:v1", reg.host()),
            "-o",
            out.to_str().unwrap(),
        ]);
        let r = run_with(&work.path().join("cache"), &args, &[], Some("pa ss:word\n")).await;
        assert_ok(&r);
        check_archive(&out, &img);
        assert!(!stderr(&r).contains("pa ss:word"), "the password leaked");
        // A wrong password is an authentication failure.
        let out2 = work.path().join("app2.tar");
        let mut args2 = args.clone();
        *args2.last_mut().unwrap() = out2.to_str().unwrap().to_string();
        let r = run_with(&work.path().join("cache2"), &args2, &[], Some("wrong\n")).await;
        assert_eq!(r.status.code(), Some(4), "{auth:?}: {}", stderr(&r));
        assert!(!out2.exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_from_docker_config_json_are_used() {
    let img = sized_image(111, 1, 5_000);
    for auth in [
        basic_auth("carol", "hunter2"),
        bearer_auth(Some(("carol", "hunter2")), TokenField::Both, None),
    ] {
        let reg = fake_registry(auth.clone(), REPO, &[("v1", &img)]).await;
        let work = tempfile::tempdir().unwrap();
        let docker_dir = work.path().join("docker");
        std::fs::create_dir_all(&docker_dir).unwrap();
        let token = base64_std(b"carol:hunter2");
        std::fs::write(
            docker_dir.join("config.json"),
            serde_json::to_vec(&json!({"auths": {reg.host(): {"auth": token}}})).unwrap(),
        )
        .unwrap();
        let out = work.path().join("app.tar");
        let r = run_with(
            &work.path().join("cache"),
            &s(&[
                "pull",
                &format!("{}/{REPO}:v1", reg.host()),
                "-o",
                out.to_str().unwrap(),
            ]),
            &[("DOCKER_CONFIG", docker_dir.clone())],
            None,
        )
        .await;
        assert_ok(&r);
        check_archive(&out, &img);
        let authed = reg
            .requests()
            .iter()
            .filter(|q| {
                q.authorization
                    .as_deref()
                    .is_some_and(|a| a.starts_with("Basic "))
            })
            .count();
        assert!(
            authed > 0,
            "{auth:?}: the stored credentials were never sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_blob_faults_are_ridden_out_by_the_binary() {
    let img = sized_image(112, 2, 100_000);
    let reg = registry_with(&[("v1", &img)]).await;
    reg.add_fault(Fault::ServerError { times: 1 });
    reg.add_fault(Fault::DropAfter {
        digest: Some(img.layers[0].digest.clone()),
        after: 30_000,
        times: 1,
    });
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let r = pull_to(
        &work.path().join("cache"),
        &["-j", "1", &format!("{}/{REPO}:v1", reg.host())],
        &out,
    )
    .await;
    assert_ok(&r);
    check_archive(&out, &img);
    let gets = blob_requests(&reg, &img.layers[0].digest);
    assert!(
        gets.iter()
            .any(|g| g.range.as_deref() == Some("bytes=30000-") && g.status == 206),
        "{gets:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_platform_refuses_a_single_platform_image_of_another() {
    let img = sized_image(113, 1, 5_000); // linux/amd64
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let r = format!("{}/{REPO}:v1", reg.host());
    let o = pull_to(
        &work.path().join("cache"),
        &["--platform", "linux/arm64", &r],
        &out,
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("is an image for linux/amd64, not linux/arm64"),
        "{err}"
    );
    assert!(!out.exists());
    assert_eq!(
        reg.blob_gets(&img.layers[0].digest),
        0,
        "layers of the wrong platform were fetched"
    );
    let o = pull_to(
        &work.path().join("cache"),
        &["--platform", "linux/amd64", &r],
        &out,
    )
    .await;
    assert_ok(&o);
    check_archive(&out, &img);
    // The config fetched to check the platform stays in the cache for the next run.
    assert_eq!(reg.blob_gets(&img.config.digest), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_expiring_during_parallel_downloads_are_renewed() {
    let img = sized_image(114, 6, 60_000);
    let auth = bearer_auth(None, TokenField::Token, None);
    let reg = fake_registry(auth, REPO, &[("v1", &img)]).await;
    // More uses than parallel downloads, fewer than the requests of the whole pull.
    reg.add_fault(Fault::ExpireTokensAfter { requests: 8 });
    reg.add_fault(Fault::DropAfter {
        digest: None,
        after: 20_000,
        times: 6,
    });
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let o = pull_to(
        &work.path().join("cache"),
        &["-j", "6", &format!("{}/{REPO}:v1", reg.host())],
        &out,
    )
    .await;
    assert_ok(&o);
    check_archive(&out, &img);
    let unauthorized = reg
        .requests()
        .iter()
        .filter(|r| r.status == 401 && r.path.contains("/blobs/"))
        .count();
    assert!(unauthorized > 0, "no token expired during the pull");
    assert!(reg.tokens_issued() >= 2, "no new token was fetched");
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_auth_file_wins_and_a_broken_auth_entry_is_named() {
    let img = sized_image(115, 1, 3_000);
    let reg = fake_registry(basic_auth("dave", "right"), REPO, &[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let docker_dir = work.path().join("docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    let write = |path: &Path, auth: &str| {
        std::fs::write(
            path,
            serde_json::to_vec(&json!({"auths": {reg.host(): {"auth": auth}}})).unwrap(),
        )
        .unwrap()
    };
    let podman = work.path().join("auth.json");
    write(&podman, &base64_std(b"dave:right"));
    write(&docker_dir.join("config.json"), &base64_std(b"dave:wrong"));
    let out = work.path().join("app.tar");
    let args = s(&[
        "pull",
        &format!("{}/{REPO}:v1", reg.host()),
        "-o",
        out.to_str().unwrap(),
    ]);
    let env = [
        ("DOCKER_CONFIG", docker_dir.clone()),
        ("REGISTRY_AUTH_FILE", podman.clone()),
    ];
    let o = run_with(&work.path().join("cache"), &args, &env, None).await;
    assert_ok(&o);
    check_archive(&out, &img);

    std::fs::remove_file(&out).unwrap();
    write(&podman, "%%% not base64");
    let o = run_with(&work.path().join("cache2"), &args, &env, None).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not base64") && err.contains("auth.json"),
        "{err}"
    );
    assert!(!out.exists());
}

/// The default archive is filled in place while blobs download; a server that ignores
/// `Range` makes a blob start over, and its place in the archive must end up holding the
/// restarted bytes — the same archive a clean pull writes, byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn restarted_blob_rewrites_its_place_in_the_archive() {
    let img = sized_image(120, 2, 300_000);
    let clean_reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let clean = work.path().join("clean.tar");
    let r = pull_to(
        &work.path().join("c1"),
        &[&format!("{}/{REPO}:v1", clean_reg.host())],
        &clean,
    )
    .await;
    assert_ok(&r);

    let reg = registry_with(&[("v1", &img)]).await;
    reg.add_fault(Fault::NoRange);
    reg.add_fault(Fault::DropAfter {
        digest: Some(img.layers[1].digest.clone()),
        after: 100_000,
        times: 1,
    });
    let faulty = work.path().join("faulty.tar");
    let r = pull_to(
        &work.path().join("c2"),
        &["-j", "1", &format!("{}/{REPO}:v1", reg.host())],
        &faulty,
    )
    .await;
    assert_ok(&r);
    let gets = blob_requests(&reg, &img.layers[1].digest);
    assert!(
        gets.iter()
            .any(|g| g.range.as_deref() == Some("bytes=100000-") && g.status == 200),
        "{gets:?}"
    );
    check_archive(&faulty, &img);
    // Names differ by registry port, so compare everything but index.json and manifest.json.
    let (a, b) = (
        tar_map(&std::fs::read(&clean).unwrap()),
        tar_map(&std::fs::read(&faulty).unwrap()),
    );
    for (name, data) in &a {
        if name.starts_with("blobs/") {
            assert_eq!(
                Some(data),
                b.get(name),
                "{name} differs after a restarted download"
            );
        }
    }
}
