//! `ferry tags`, `ferry catalog` and `ferry digest`: lists that span several pages, a
//! catalog the registry does not offer, the digest of an image, of an index and of one of
//! its platforms — against the in-process fake registry, then against a real
//! docker-registry, whose answers must agree with what skopeo pushed and reports.

mod common;

use std::process::{Output, Stdio};

use common::*;
use ferry_core::Platform;
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::{random_image, random_index, ImageSpec};
use ferry_testkit::real::{self, RealRegistry, RegistryAuth};

async fn ferry_run(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().expect("tempdir");
    run(cache.path(), &s(args)).await
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn stdout_json(out: &Output) -> Vec<String> {
    serde_json::from_slice(&out.stdout).expect("stdout is a JSON array of strings")
}

fn small_image(seed: u64) -> ferry_testkit::image::TestImage {
    random_image(&ImageSpec {
        seed,
        layers: 1,
        ..Default::default()
    })
}

fn platforms() -> Vec<Platform> {
    vec![
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_follow_every_page_of_the_list() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let img = small_image(1);
    let mut want: Vec<String> = (0..8).map(|i| format!("v{i}")).collect();
    for t in &want {
        reg.push_image("team/app", t, &img);
    }
    reg.add_fault(Fault::PageSize { n: 3 });
    want.sort();
    let repo = format!("{}/team/app", reg.host());

    let out = ferry_run(&["tags", &repo]).await;
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), want);
    let pages = reg
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/tags/list"))
        .count();
    assert_eq!(pages, 3, "8 tags in pages of 3");

    let out = ferry_run(&["tags", "--json", &repo]).await;
    assert_ok(&out);
    assert_eq!(stdout_json(&out), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_refuses_a_reference_with_a_tag_or_digest() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let digest = small_image(2).manifest_digest;
    for r in [
        format!("{}/team/app:v1", reg.host()),
        format!("{}/team/app@{digest}", reg.host()),
    ] {
        let out = ferry_run(&["tags", &r]).await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("takes a repository"), "{err}");
        assert!(
            err.contains(&format!("ferry tags {}/team/app", reg.host())),
            "{err}"
        );
    }
    assert!(
        reg.requests().is_empty(),
        "nothing is asked of the registry"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_of_an_unknown_repository_is_not_found() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let out = ferry_run(&["tags", &format!("{}/no/such", reg.host())]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("listing the tags of"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_follows_every_page() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let img = small_image(3);
    let want: Vec<String> = ["a/one", "a/two", "b", "c/d/e", "z"]
        .iter()
        .map(|r| r.to_string())
        .collect();
    for r in &want {
        reg.push_image(r, "v1", &img);
    }
    reg.add_fault(Fault::PageSize { n: 2 });

    let out = ferry_run(&["catalog", &reg.host()]).await;
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), want);
    let pages = reg
        .requests()
        .iter()
        .filter(|r| r.path == "/v2/_catalog")
        .count();
    assert_eq!(pages, 3, "5 repositories in pages of 2");

    let out = ferry_run(&["catalog", "--json", &reg.host()]).await;
    assert_ok(&out);
    assert_eq!(stdout_json(&out), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_not_offered_is_said_plainly_with_a_hint() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.add_fault(Fault::NoCatalog);
    let out = ferry_run(&["catalog", &reg.host()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{} does not offer a catalog of its repositories",
            reg.host()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: ") && err.contains("ferry tags"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_refuses_what_is_not_a_registry_address() {
    for bad in ["team/app", "127.0.0.1:5000/x", "host:port"] {
        let out = ferry_run(&["catalog", bad]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is not a registry address"),
            "{}",
            stderr(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_of_an_image_comes_from_a_head() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let img = small_image(4);
    reg.push_image("team/app", "v1", &img);
    let out = ferry_run(&["digest", &format!("{}/team/app:v1", reg.host())]).await;
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), [img.manifest_digest.to_string()]);
    let manifest_requests: Vec<_> = reg
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/manifests/"))
        .map(|r| r.method)
        .collect();
    assert_eq!(manifest_requests, ["HEAD"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_without_the_header_falls_back_to_the_manifest() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let img = small_image(5);
    reg.push_image("team/app", "v1", &img);
    reg.add_fault(Fault::NoDigestHeader);
    let out = ferry_run(&["digest", &format!("{}/team/app:v1", reg.host())]).await;
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), [img.manifest_digest.to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_of_an_index_and_of_one_platform() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let idx = random_index(6, &platforms(), false);
    reg.push_index("team/multi", "v1", &idx);
    let r = format!("{}/team/multi:v1", reg.host());

    let out = ferry_run(&["digest", &r]).await;
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), [idx.digest.to_string()]);

    let arm = idx
        .images
        .iter()
        .find(|i| i.platform.architecture == "arm64")
        .expect("an arm64 image");
    let out = ferry_run(&["digest", "--platform", "linux/arm64", &r]).await;
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), [arm.manifest_digest.to_string()]);

    let out = ferry_run(&["digest", "--platform", "linux/s390x", &r]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("has no image for linux/s390x"), "{err}");
    assert!(err.contains("linux/amd64"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_of_a_missing_tag_is_not_found() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.push_image("team/app", "v1", &small_image(7));
    let out = ferry_run(&["digest", &format!("{}/team/app:nope", reg.host())]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_quietly_with_exit_141() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.push_image("team/app", "v1", &small_image(10));
    let cache = tempfile::tempdir().expect("tempdir");
    let repo = format!("{}/team/app", reg.host());
    let mut c = ferry_cmd(cache.path(), &["tags", &repo]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = c.spawn().expect("spawn ferry");
        // Closed before ferry writes: it writes only after the registry answered.
        drop(child.stdout.take());
        child.wait_with_output().expect("ferry output")
    })
    .await
    .expect("ferry task");
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "",
        "a closed stdout is not an error to explain"
    );
}

// ---- Against a real docker-registry ----

fn skopeo_digest(reg: &RealRegistry, repo_tag: &str) -> String {
    let v = real::skopeo_inspect(
        &format!("docker://{}/{repo_tag}", reg.host),
        &["--tls-verify=false"],
    )
    .expect("skopeo inspect");
    v["Digest"].as_str().expect("Digest").to_string()
}

#[test]
fn real_registry_tags_catalog_and_digests_agree_with_what_was_pushed() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    if real::tool("skopeo").is_none() {
        return;
    }
    let cache = tempfile::tempdir().expect("tempdir");
    let img = small_image(8);
    push_with_skopeo(&reg, "list/app:v1", &img, None);
    push_with_skopeo(&reg, "list/app:v2", &img, None);
    let idx = random_index(9, &platforms(), false);
    push_index_with_skopeo(&reg, "list/multi:v1", &idx, None);

    let out = ferry(cache.path(), &["tags", &format!("{}/list/app", reg.host)]);
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), ["v1", "v2"]);

    let out = ferry(cache.path(), &["catalog", "--json", &reg.host]);
    assert_ok(&out);
    assert_eq!(stdout_json(&out), ["list/app", "list/multi"]);

    let out = ferry(
        cache.path(),
        &["digest", &format!("{}/list/app:v2", reg.host)],
    );
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), [skopeo_digest(&reg, "list/app:v2")]);
    assert_eq!(stdout_lines(&out), [img.manifest_digest.to_string()]);

    let out = ferry(
        cache.path(),
        &["digest", &format!("{}/list/multi:v1", reg.host)],
    );
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), [skopeo_digest(&reg, "list/multi:v1")]);
    assert_eq!(stdout_lines(&out), [idx.digest.to_string()]);

    let out = ferry(
        cache.path(),
        &[
            "digest",
            "--platform",
            "linux/amd64",
            &format!("{}/list/multi:v1", reg.host),
        ],
    );
    assert_ok(&out);
    let amd = idx
        .images
        .iter()
        .find(|i| i.platform.architecture == "amd64")
        .expect("an amd64 image");
    assert_eq!(stdout_lines(&out), [amd.manifest_digest.to_string()]);
}
