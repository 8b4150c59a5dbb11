//! TLS and proxies, end to end: `ferry pull` (the binary) against the fake registry behind a
//! TLS front ([`TlsFront`]) and a forward proxy ([`Proxy`]) that routes `registry.test` to
//! them, so a non-loopback registry name can be used without DNS.
//!
//! What is designed (see `ClientOptions` and `Client::ping`):
//! - a non-loopback registry is reached over https only, verified against the system roots
//!   plus `--ca-cert` files; an untrusted certificate fails with exit code 5 and a message
//!   that names `--ca-cert` and `--insecure`;
//! - `--insecure` accepts any certificate and falls back to plain http;
//! - loopback registries (localhost, 127.0.0.0/8, [::1]) are reached over plain http only;
//! - `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` from the environment are honoured.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use ferry_testkit::fake::{FakeAuth, FakeRegistry};
use ferry_testkit::image::{sized_image, TestImage};
use ferry_testkit::proxy::Proxy;
use ferry_testkit::tls::TlsFront;

const REPO: &str = "team/app";
const TAG: &str = "v1";
const IMAGE: &str = "registry.test/team/app:v1";

/// A fake registry holding `team/app:v1`.
async fn fake_with_image(auth: FakeAuth) -> (FakeRegistry, TestImage) {
    let img = sized_image(11, 2, 8192);
    let fake = fake_registry(auth, REPO, &[(TAG, &img)]).await;
    (fake, img)
}

fn addr(host: &str) -> SocketAddr {
    host.parse().expect("fake registry address")
}

/// `ferry` with a clean proxy environment; `env` is then applied on top.
fn cmd(cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = ferry_cmd(cache, args);
    for v in ["NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn assert_code(out: &Output, code: i32) {
    // Shown by the test harness only when a test fails (or with --nocapture).
    eprintln!(
        "ferry exited {:?}; stderr:\n{}",
        out.status.code(),
        stderr(out)
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// The default archive holds a docker `manifest.json` naming `tag` with the image's layers,
/// and an OCI `index.json` and `oci-layout`.
fn assert_archive(archive: &Path, tag: &str, img: &TestImage) {
    let entries = tar_list(&std::fs::read(archive).expect("reading the archive"));
    let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
    let json = |name: &str| -> Option<serde_json::Value> {
        let (_, _, data) = entries.iter().rev().find(|(n, _, _)| n == name)?;
        Some(serde_json::from_slice(data).expect("entry is JSON"))
    };
    assert!(names.contains(&"oci-layout"), "no oci-layout in {names:?}");
    let manifest = json("manifest.json").unwrap_or_else(|| panic!("no manifest.json in {names:?}"));
    let index = json("index.json").unwrap_or_else(|| panic!("no index.json in {names:?}"));
    let entry = &manifest[0];
    assert_eq!(entry["RepoTags"], serde_json::json!([tag]), "{manifest}");
    assert_eq!(
        entry["Layers"].as_array().map(Vec::len),
        Some(img.layers.len()),
        "{manifest}"
    );
    let digests: Vec<&str> = index["manifests"]
        .as_array()
        .expect("index.manifests")
        .iter()
        .filter_map(|m| m["digest"].as_str())
        .collect();
    assert!(
        digests.contains(&img.manifest_digest.to_string().as_str()),
        "index.json {index} lacks {}",
        img.manifest_digest
    );
}

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn cache(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("cache-{name}"))
    }
    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.tar"))
    }
}

/// Whether `f` holds within 2 s. ferry gives up on first contact at once, so it can exit
/// before the front has counted the handshake it broke off.
async fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

// ---- TLS registry on a non-loopback name, through HTTPS_PROXY ----

#[tokio::test(flavor = "multi_thread")]
async fn tls_registry_via_https_proxy_needs_ca_cert_or_insecure() {
    let (fake, img) = fake_with_image(FakeAuth::None).await;
    let front = TlsFront::start(addr(&fake.host())).await;
    let proxy = Proxy::start(&[("registry.test:443", front.addr())]).await;
    let url = proxy.url();
    let env = [("HTTPS_PROXY", url.as_str())];
    let w = Work::new();

    // Not trusted: refused, with a hint, and nothing reached the registry.
    let out = run_cmd(cmd(
        &w.cache("untrusted"),
        &pull_args(IMAGE, &w.out("untrusted"), &[]),
        &env,
    ))
    .await;
    assert_code(&out, 5);
    let err = stderr(&out);
    assert!(err.contains("not trusted"), "stderr: {err}");
    assert!(err.contains("--ca-cert"), "stderr: {err}");
    assert!(!w.out("untrusted").exists(), "an archive was written");
    assert!(
        eventually(|| front.failed_handshakes() >= 1).await,
        "no refused handshake"
    );
    assert_eq!(front.handshakes(), 0, "a handshake completed");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert!(
        proxy
            .seen()
            .iter()
            .all(|s| s == "CONNECT registry.test:443"),
        "{:?}",
        proxy.seen()
    );
    assert!(proxy.count("registry.test:443") >= 1);

    // --ca-cert with the CA: trusted.
    let ca = front.ca_pem_path().to_str().expect("utf-8").to_string();
    let out = run_cmd(cmd(
        &w.cache("ca"),
        &pull_args(IMAGE, &w.out("ca"), &["--ca-cert", &ca]),
        &env,
    ))
    .await;
    assert_ok(&out);
    assert_archive(&w.out("ca"), IMAGE, &img);
    assert!(front.handshakes() >= 1);
    assert!(
        fake.requests().iter().any(|r| r.path == "/v2/"),
        "{:?}",
        fake.requests()
    );

    // --insecure: accepted without verification.
    let before = fake.requests().len();
    let out = run_cmd(cmd(
        &w.cache("insecure"),
        &pull_args(IMAGE, &w.out("insecure"), &["--insecure"]),
        &env,
    ))
    .await;
    assert_ok(&out);
    assert_archive(&w.out("insecure"), IMAGE, &img);
    assert!(fake.requests().len() > before, "--insecure pulled nothing");

    // Every byte went through the proxy as a tunnel to registry.test:443.
    let seen = proxy.seen();
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(
        seen.iter().all(|s| s == "CONNECT registry.test:443"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_certificate_is_refused_unless_trusted_or_insecure() {
    let (fake, img) = fake_with_image(FakeAuth::None).await;
    let front = TlsFront::start_self_signed(addr(&fake.host())).await;
    let proxy = Proxy::start(&[("registry.test:443", front.addr())]).await;
    let url = proxy.url();
    let env = [("HTTPS_PROXY", url.as_str())];
    let w = Work::new();

    let out = run_cmd(cmd(
        &w.cache("a"),
        &pull_args(IMAGE, &w.out("a"), &[]),
        &env,
    ))
    .await;
    assert_code(&out, 5);
    let err = stderr(&out);
    assert!(
        err.contains("not trusted") && err.contains("--ca-cert") && err.contains("--insecure"),
        "stderr: {err}"
    );
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // The self-signed certificate itself, given as the CA.
    let cert = front.cert_pem_path().to_str().expect("utf-8").to_string();
    let out = run_cmd(cmd(
        &w.cache("b"),
        &pull_args(IMAGE, &w.out("b"), &["--ca-cert", &cert]),
        &env,
    ))
    .await;
    assert_ok(&out);
    assert_archive(&w.out("b"), IMAGE, &img);

    let out = run_cmd(cmd(
        &w.cache("c"),
        &pull_args(IMAGE, &w.out("c"), &["--insecure"]),
        &env,
    ))
    .await;
    assert_ok(&out);
    assert_archive(&w.out("c"), IMAGE, &img);
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_cert_that_is_not_pem_is_a_usage_error() {
    let w = Work::new();
    let bad = w.dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let out = run_cmd(cmd(
        &w.cache("x"),
        &pull_args(IMAGE, &w.out("x"), &["--ca-cert", bad.to_str().unwrap()]),
        &[],
    ))
    .await;
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("bad.pem holds no PEM certificate"),
        "{}",
        stderr(&out)
    );
    let missing = w.dir.path().join("missing.pem");
    let out = run_cmd(cmd(
        &w.cache("x"),
        &pull_args(
            IMAGE,
            &w.out("x"),
            &["--ca-cert", missing.to_str().unwrap()],
        ),
        &[],
    ))
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.pem"), "{}", stderr(&out));
}

// ---- NO_PROXY ----

#[tokio::test(flavor = "multi_thread")]
async fn no_proxy_bypasses_the_proxy() {
    let (fake, _img) = fake_with_image(FakeAuth::None).await;
    let front = TlsFront::start(addr(&fake.host())).await;
    let proxy = Proxy::start(&[("registry.test:443", front.addr())]).await;
    let url = proxy.url();
    let ca = front.ca_pem_path().to_str().expect("utf-8").to_string();
    let w = Work::new();

    // With the proxy this pull works (see above); NO_PROXY makes ferry go direct, where
    // `registry.test` does not resolve.
    let out = run_cmd(cmd(
        &w.cache("a"),
        &pull_args(IMAGE, &w.out("a"), &["--ca-cert", &ca]),
        &[("HTTPS_PROXY", &url), ("NO_PROXY", "registry.test")],
    ))
    .await;
    assert_code(&out, 5);
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
    assert!(fake.requests().is_empty());
    let err = stderr(&out);
    assert!(err.contains("registry.test"), "stderr: {err}");
    assert!(
        err.contains("NO_PROXY"),
        "the hint should name NO_PROXY: {err}"
    );
}

// ---- Plain HTTP registry on a non-loopback name, through HTTP_PROXY ----

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_registry_needs_insecure() {
    let (fake, img) = fake_with_image(FakeAuth::None).await;
    let proxy = Proxy::start(&[("registry.test:5000", addr(&fake.host()))]).await;
    let url = proxy.url();
    let image = "registry.test:5000/team/app:v1";
    let w = Work::new();

    // Only HTTP_PROXY: https (the only scheme without --insecure) goes direct and fails; the
    // proxy never sees a plain http request.
    let out = run_cmd(cmd(
        &w.cache("a"),
        &pull_args(image, &w.out("a"), &[]),
        &[("HTTP_PROXY", &url)],
    ))
    .await;
    assert_code(&out, 5);
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
    assert!(fake.requests().is_empty());

    // Both proxies (the usual setup): the https attempt reaches the plain-http registry, which
    // cannot speak TLS; ferry says so instead of falling back to http.
    let both = [("HTTP_PROXY", url.as_str()), ("HTTPS_PROXY", url.as_str())];
    let out = run_cmd(cmd(
        &w.cache("b"),
        &pull_args(image, &w.out("b"), &[]),
        &both,
    ))
    .await;
    assert_code(&out, 5);
    let err = stderr(&out);
    assert!(err.contains("--insecure"), "stderr: {err}");
    assert!(
        proxy
            .seen()
            .iter()
            .all(|s| s == "CONNECT registry.test:5000"),
        "{:?}",
        proxy.seen()
    );
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // --insecure: https fails, http through HTTP_PROXY works.
    let out = run_cmd(cmd(
        &w.cache("c"),
        &pull_args(image, &w.out("c"), &["--insecure"]),
        &both,
    ))
    .await;
    assert_ok(&out);
    assert_archive(&w.out("c"), image, &img);
    assert!(
        proxy.seen().iter().any(|s| s == "GET registry.test:5000"),
        "{:?}",
        proxy.seen()
    );
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.uri == "http://registry.test:5000/v2/"),
        "{:?}",
        proxy.requests()
    );

    // --insecure with only HTTP_PROXY: https goes direct (and fails to resolve), http goes
    // through the proxy.
    let before = proxy.seen().len();
    let out = run_cmd(cmd(
        &w.cache("d"),
        &pull_args(image, &w.out("d"), &["--insecure"]),
        &[("HTTP_PROXY", &url)],
    ))
    .await;
    assert_ok(&out);
    assert_archive(&w.out("d"), image, &img);
    let seen = proxy.seen();
    assert!(
        seen[before..].iter().all(|s| s == "GET registry.test:5000"),
        "{seen:?}"
    );
}

// ---- Loopback over TLS ----

/// Loopback registries are spoken to in plain http without flags (as docker assumes); given
/// `--ca-cert` or `--insecure`, ferry tries TLS first, so a TLS-only registry on 127.0.0.1 is
/// reachable the way docker reaches its implicit localhost "insecure registry".
#[tokio::test(flavor = "multi_thread")]
async fn loopback_tls_registry_needs_ca_cert_or_insecure() {
    let (fake, img) = fake_with_image(FakeAuth::None).await;
    let front = TlsFront::start(addr(&fake.host())).await;
    let image = format!("{}/team/app:v1", front.addr());
    let ca = front.ca_pem_path().to_str().expect("utf-8").to_string();
    let w = Work::new();

    let out = run_cmd(cmd(
        &w.cache("plain"),
        &pull_args(&image, &w.out("plain"), &[]),
        &[],
    ))
    .await;
    assert_code(&out, 5);
    assert_eq!(
        front.handshakes(),
        0,
        "without flags ferry spoke TLS to a loopback registry"
    );
    assert!(
        eventually(|| front.failed_handshakes() >= 1).await,
        "ferry never connected to the front"
    );
    assert!(fake.requests().is_empty());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("http://{}/v2/", front.addr())),
        "stderr: {err}"
    );

    let out = run_cmd(cmd(
        &w.cache("a"),
        &pull_args(&image, &w.out("a"), &["--ca-cert", &ca]),
        &[],
    ))
    .await;
    assert_code(&out, 0);
    assert!(
        front.handshakes() >= 1,
        "--ca-cert did not make ferry speak TLS"
    );
    assert_archive(&w.out("a"), &image, &img);

    let out = run_cmd(cmd(
        &w.cache("b"),
        &pull_args(&image, &w.out("b"), &["--insecure"]),
        &[],
    ))
    .await;
    assert_code(&out, 0);
    assert_archive(&w.out("b"), &image, &img);
}

// ---- Secrets stay out of stderr ----

const PASSWORD: &str = "s3cr3t-pw";
/// base64("u:s3cr3t-pw"), the Basic credential.
const BASIC: &str = "dTpzM2NyM3QtcHc=";

fn assert_no_secrets(err: &str, tokens: &[String]) {
    assert!(!err.contains(PASSWORD), "the password leaked: {err}");
    assert!(!err.contains(BASIC), "the Basic credential leaked: {err}");
    for t in tokens {
        assert!(!err.contains(t.as_str()), "a token leaked ({t}): {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_pulls_do_not_print_credentials_or_tokens() {
    // Bearer: right credentials, a missing tag (the token is issued and used, then 404).
    let (fake, _img) = fake_with_image(FakeAuth::Bearer {
        credentials: Some(("u".into(), PASSWORD.into())),
        token_field: ferry_testkit::fake::TokenField::Token,
        expires_in: None,
    })
    .await;
    let w = Work::new();
    let image = format!("{}/team/app:missing", fake.host());
    let out_m = w.out("m");
    for verbosity in [None, Some("-vv")] {
        let mut args = pull_args(&image, &out_m, &["--username", "u", "--password-stdin"]);
        args.extend(verbosity);
        let out = run_cmd_with_stdin(cmd(&w.cache("m"), &args, &[]), b"s3cr3t-pw\n").await;
        assert_code(&out, 3);
        let tokens: Vec<String> = fake
            .requests()
            .iter()
            .filter_map(|r| r.authorization.as_deref())
            .filter_map(|a| a.strip_prefix("Bearer "))
            .map(str::to_string)
            .collect();
        assert!(
            !tokens.is_empty(),
            "no token was used: {:?}",
            fake.requests()
        );
        assert_no_secrets(&stderr(&out), &tokens);
    }

    // Basic: wrong password (the registry wants another one).
    let (fake, _img) = fake_with_image(FakeAuth::Basic {
        user: "u".into(),
        pass: "other".into(),
    })
    .await;
    let image = format!("{}/team/app:v1", fake.host());
    let out_b = w.out("b");
    for verbosity in [None, Some("-vv")] {
        let mut args = pull_args(&image, &out_b, &["--username", "u", "--password-stdin"]);
        args.extend(verbosity);
        let out = run_cmd_with_stdin(cmd(&w.cache("b"), &args, &[]), b"s3cr3t-pw\n").await;
        assert_code(&out, 4);
        assert_no_secrets(&stderr(&out), &[]);
    }

    // Through a proxy whose URL carries credentials, to an untrusted TLS registry: neither
    // the registry password nor the proxy's appears.
    let (fake, _img) = fake_with_image(FakeAuth::None).await;
    let front = TlsFront::start(addr(&fake.host())).await;
    let proxy = Proxy::start(&[("registry.test:443", front.addr())]).await;
    let url = format!("http://pu:proxy-pw-9f2@{}", proxy.addr());
    let out_t = w.out("t");
    let args = pull_args(
        IMAGE,
        &out_t,
        &["-vv", "--username", "u", "--password-stdin"],
    );
    let out = run_cmd_with_stdin(
        cmd(&w.cache("t"), &args, &[("HTTPS_PROXY", &url)]),
        b"s3cr3t-pw\n",
    )
    .await;
    assert_code(&out, 5);
    assert_no_secrets(&stderr(&out), &["proxy-pw-9f2".into()]);
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));
    assert_eq!(proxy.count("registry.test:443"), 1, "{:?}", proxy.seen());
}
