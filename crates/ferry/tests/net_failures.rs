//! `ferry pull` (the binary) when the network or the registry misbehaves: how fast it gives
//! up, what it shows while retrying, and the exact sentences, exit codes and hints it ends
//! with.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferry_core::media;
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault, TokenField};
use ferry_testkit::image::{sized_image, TestImage};

const REPO: &str = "lib/app";

async fn registry(seed: u64, auth: FakeAuth) -> (TestImage, FakeRegistry) {
    let img = sized_image(seed, 1, 20_000);
    let reg = fake_registry(auth, REPO, &[("v1", &img)]).await;
    (img, reg)
}

/// `ferry pull -q HOST/lib/app:v1 -o OUT EXTRA..` in a fresh directory; the output must not
/// exist afterwards unless the pull succeeded.
async fn pull(reg_host: &str, extra: &[&str]) -> (std::process::Output, Duration) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let image = format!("{reg_host}/{REPO}:v1");
    let mut args = vec!["-q", image.as_str()];
    args.extend_from_slice(extra);
    let start = Instant::now();
    let r = pull_to(&work.path().join("cache"), &args, &out).await;
    let took = start.elapsed();
    if !r.status.success() {
        assert!(!out.exists(), "a failed pull left {}", out.display());
    }
    (r, took)
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_exits_5_at_once_in_one_sentence() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let host = format!("127.0.0.1:{port}");
    let (r, took) = pull(&host, &[]).await;
    // The code aims at well under 2 s (skopeo: 0.05 s); the bound is generous for CI.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(r.status.code(), Some(5), "{}", stderr(&r));
    assert_eq!(
        stderr(&r),
        format!(
            "error: fetching the manifest of {host}/{REPO}:v1\n  caused by: cannot reach the registry {host} (http://{host}/v2/): Connection refused (os error 111)\nhint: check the registry address and your connection (and HTTPS_PROXY / HTTP_PROXY / NO_PROXY)\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_never_answers_gives_up_after_the_timeout_flag() {
    let (_img, reg) = registry(301, FakeAuth::None).await;
    reg.add_fault(Fault::HangPing);
    let (r, took) = pull(&reg.host(), &["--timeout", "1"]).await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(r.status.code(), Some(5), "{}", stderr(&r));
    let host = reg.host();
    assert_eq!(
        stderr(&r),
        format!(
            "error: fetching the manifest of {host}/{REPO}:v1\n  caused by: cannot reach the registry {host} (http://{host}/v2/): no answer within 1 s (--timeout)\nhint: check the registry address and your connection (and HTTPS_PROXY / HTTP_PROXY / NO_PROXY)\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_missing_credentials_get_different_hints() {
    let refused = "hint: the registry refused the username and password (or stored credential) given: check them, and that the account may pull this repository\n";
    let missing = "hint: give credentials with --username and --password-stdin, or store them in ~/.docker/config.json (docker login / podman login)\n";
    for auth in [
        basic_auth("alice", "s3cret"),
        bearer_auth(Some(("alice", "s3cret")), TokenField::Token, None),
    ] {
        let (_img, reg) = registry(302, auth.clone()).await;
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("app.tar");
        let image = format!("{}/{REPO}:v1", reg.host());
        let cache = work.path().join("cache");
        let args = pull_args(&image, &out, &["--username", "alice", "--password-stdin"]);
        let c = ferry_cmd(&cache, &args);
        let r = run_cmd_with_stdin(c, b"wrong\n").await;
        assert_eq!(r.status.code(), Some(4), "{auth:?}: {}", stderr(&r));
        let err = stderr(&r);
        assert!(err.ends_with(refused), "{auth:?}: {err}");
        assert!(
            err.contains("refused the credentials given for it"),
            "{err}"
        );
        assert!(!err.contains("wrong"), "the password leaks: {err}");

        let r = pull_to(&cache, &["-q", &image], &out).await;
        assert_eq!(r.status.code(), Some(4), "{auth:?}: {}", stderr(&r));
        assert!(stderr(&r).ends_with(missing), "{auth:?}: {}", stderr(&r));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_without_the_registry_api_is_not_blamed_on_the_repository_name() {
    let (_img, reg) = registry(303, FakeAuth::None).await;
    reg.add_fault(Fault::PingStatus { status: 404 });
    let (r, _) = pull(&reg.host(), &[]).await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    let host = reg.host();
    assert_eq!(
        stderr(&r),
        format!(
            "error: fetching the manifest of {host}/{REPO}:v1\n  caused by: http://{host}/v2/ returned 404: {host} does not serve the registry API (/v2/)\nhint: check the registry address (host[:port]): something answers there, but not the registry API\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_realm_answering_404_is_not_blamed_on_the_repository_name() {
    let (_img, reg) = registry(304, bearer_auth(None, TokenField::Token, None)).await;
    reg.add_fault(Fault::TokenStatus { status: 404 });
    let (r, _) = pull(&reg.host(), &[]).await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    let host = reg.host();
    assert_eq!(
        stderr(&r),
        format!(
            "error: fetching the manifest of {host}/{REPO}:v1\n  caused by: the token service of {host} failed\n  caused by: GET http://{host}/token?… returned 404 (UNAVAILABLE: injected token service status)\nhint: the token service the registry names in its challenge does not work; the registry (or a proxy rewriting its answers) is misconfigured\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_loop_is_not_called_a_network_failure() {
    let (_img, reg) = registry(305, FakeAuth::None).await;
    reg.add_fault(Fault::RedirectLoop);
    let (r, took) = pull(&reg.host(), &[]).await;
    assert!(took < Duration::from_secs(5), "retried: {took:?}");
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    let host = reg.host();
    assert_eq!(
        stderr(&r),
        format!(
            "error: fetching the manifest of {host}/{REPO}:v1\n  caused by: GET http://{host}/v2/{REPO}/manifests/v1 was redirected too many times (a redirect loop)\nhint: the registry (or a proxy in front of it) redirects in a loop; check the registry address\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_longer_than_max_wait_fails_at_once_saying_how_long() {
    let (img, reg) = registry(306, FakeAuth::None).await;
    reg.add_fault(Fault::TooManyRequests {
        times: 10,
        retry_after_secs: 600,
    });
    let (r, took) = pull(&reg.host(), &["--max-wait", "30"]).await;
    assert!(took < Duration::from_secs(5), "waited: {took:?}");
    assert_eq!(r.status.code(), Some(5), "{}", stderr(&r));
    let err = stderr(&r);
    // Blobs download in parallel: the error names whichever failed first.
    let named = img.blobs().any(|b| {
        err.ends_with(&format!(
            "GET http://{}/v2/{REPO}/blobs/{} returned 429: the registry asks to wait 10 min before trying again, longer than the 30 s allowed (--max-wait)\nhint: the registry is rate limiting; try again later, or wait longer with --max-wait SECS\n",
            reg.host(),
            b.digest
        ))
    });
    assert!(named, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_are_shown_on_stderr_as_they_happen_unless_quiet() {
    let (img, reg) = registry(307, FakeAuth::None).await;
    reg.add_fault(Fault::ServerError { times: 1 });
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let image = format!("{}/{REPO}:v1", reg.host());
    let r = pull_to(&work.path().join("cache"), &[&image], &out).await;
    assert_ok(&r);
    let err = stderr(&r);
    let retries: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("retrying in "))
        .collect();
    assert_eq!(retries.len(), 1, "{err}");
    // Blobs download in parallel: the 503 meets whichever asks first.
    let announced = img.blobs().any(|b| {
        retries[0].ends_with(&format!(
            " (attempt 2 of 6): GET http://{}/v2/{REPO}/blobs/{} returned 503 (UNAVAILABLE: injected server error)",
            reg.host(),
            b.digest
        ))
    });
    assert!(announced, "{err}");

    reg.add_fault(Fault::ServerError { times: 1 });
    let quiet = work.path().join("quiet.tar");
    let r = pull_to(&work.path().join("cache2"), &["-q", &image], &quiet).await;
    assert_ok(&r);
    assert_eq!(stderr(&r), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_is_not_json_is_reported_once() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.put_manifest_raw(
        REPO,
        "v1",
        media::OCI_MANIFEST,
        b"{not json".to_vec().into(),
    );
    let (r, _) = pull(&reg.host(), &[]).await;
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert_eq!(
        stderr(&r),
        format!(
            "error: fetching the manifest of {}/{REPO}:v1\n  caused by: the manifest is not valid JSON: key must be a string at line 1 column 2\n",
            reg.host()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_repository_behind_token_auth_is_not_called_refused_credentials() {
    let (_img, reg) = registry(
        303,
        bearer_auth(Some(("alice", "s3cret")), TokenField::Token, None),
    )
    .await;
    // As Docker Hub: valid credentials, a repository that does not exist, and a 401.
    reg.add_fault(Fault::UnknownReposUnauthorized);
    let host = reg.host();
    let pull_as_alice = |image: String, password: &'static [u8]| {
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("app.tar");
        let args = pull_args(&image, &out, &["--username", "alice", "--password-stdin"]);
        let c = ferry_cmd(&work.path().join("cache"), &args);
        async move {
            let r = run_cmd_with_stdin(c, password).await;
            assert!(!out.exists());
            drop(work);
            r
        }
    };
    let r = pull_as_alice(format!("{host}/lib/typo:v1"), b"s3cret\n").await;
    assert_eq!(r.status.code(), Some(4), "{}", stderr(&r));
    assert_eq!(
        stderr(&r),
        format!(
            "error: fetching the manifest of {host}/lib/typo:v1\n  caused by: the account is not authorised for lib/typo on {host}, or lib/typo does not exist (GET http://{host}/v2/lib/typo/manifests/v1 returned 401)\nhint: the credentials were accepted, but not for this repository: check its name (Docker Hub answers 'unauthorized' for one that does not exist), and that the account may pull it\n"
        )
    );

    // A wrong password is still refused credentials: the token service says so.
    let r = pull_as_alice(format!("{host}/lib/typo:v1"), b"wrong\n").await;
    assert_eq!(r.status.code(), Some(4), "{}", stderr(&r));
    assert_eq!(
        stderr(&r),
        format!(
            "error: fetching the manifest of {host}/lib/typo:v1\n  caused by: {host} refused the credentials given for it (GET http://{host}/token?… returned 401)\nhint: the registry refused the username and password (or stored credential) given: check them, and that the account may pull this repository\n"
        )
    );
}
