//! `ferry delete IMAGE@DIGEST`: a manifest deleted where the registry allows it, a clear
//! refusal where it does not, and a tag-only reference refused before any request — against
//! the fake registry, then a real docker-registry with deletes on and off.

mod common;

use std::process::Output;

use common::*;
use ferry_testkit::fake::{FakeAuth, FakeRegistry};
use ferry_testkit::image::{random_image, ImageSpec, TestImage};
use ferry_testkit::real::{self, RealRegistry, RegistryAuth};

async fn ferry_run(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().expect("tempdir");
    run(cache.path(), &s(args)).await
}

fn image(seed: u64) -> TestImage {
    random_image(&ImageSpec {
        seed,
        layers: 1,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_by_digest_removes_the_manifest_and_its_tags() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let img = image(1);
    reg.push_image("team/app", "v1", &img);
    reg.enable_deletes();
    let target = format!("{}/team/app@{}", reg.host(), img.manifest_digest);
    let out = ferry_run(&["delete", &target]).await;
    assert_ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("deleted {target}\n")
    );
    assert!(reg
        .manifest("team/app", &img.manifest_digest.to_string())
        .is_none());
    assert!(reg.manifest("team/app", "v1").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_refuses_a_tag_and_points_at_ferry_digest() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.push_image("team/app", "v1", &image(2));
    reg.enable_deletes();
    let target = format!("{}/team/app:v1", reg.host());
    let out = ferry_run(&["delete", &target]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "ferry delete takes IMAGE@DIGEST: {target:?} names no digest"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "find the digest with: ferry digest {target}; then: ferry delete {}/team/app@DIGEST",
            reg.host()
        )),
        "{err}"
    );
    assert!(
        reg.requests().is_empty(),
        "nothing is asked of the registry"
    );
    assert!(reg.manifest("team/app", "v1").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_where_the_registry_does_not_allow_it_says_so() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let img = image(3);
    reg.push_image("team/app", "v1", &img);
    let target = format!("{}/team/app@{}", reg.host(), img.manifest_digest);
    let out = ferry_run(&["delete", &target]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "error: deleting {target}\n  caused by: {} does not allow deleting manifests (docker-registry allows it with REGISTRY_STORAGE_DELETE_ENABLED=true): DELETE http://{}/v2/team/app/manifests/{} returned 405 (UNSUPPORTED",
            reg.host(),
            reg.host(),
            img.manifest_digest
        )),
        "{err}"
    );
    assert!(reg.manifest("team/app", "v1").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_of_an_unknown_digest_is_not_found() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.push_image("team/app", "v1", &image(4));
    reg.enable_deletes();
    let target = format!("{}/team/app@{}", reg.host(), image(5).manifest_digest);
    let out = ferry_run(&["delete", &target]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_against_a_real_registry_with_deletes_on_and_off() {
    for deletes in [true, false] {
        let Some(reg) = RealRegistry::start_with(RegistryAuth::Anonymous, deletes) else {
            return;
        };
        if real::tool("skopeo").is_none() {
            return;
        }
        let img = image(6);
        push_with_skopeo(&reg, "real/app:v1", &img, None);
        let target = format!("{}/real/app@{}", reg.host, img.manifest_digest);
        let out = ferry_run(&["delete", &target]).await;
        let after = ferry_run(&["digest", &format!("{}/real/app:v1", reg.host)]).await;
        if deletes {
            assert_ok(&out);
            assert_eq!(after.status.code(), Some(3), "{}", stderr(&after));
        } else {
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            assert!(
                stderr(&out).contains("does not allow deleting manifests"),
                "{}",
                stderr(&out)
            );
            assert_ok(&after);
        }
    }
}
