//! `ferry pull --mirror`, `--no-mirror`, the user config file, `FERRY_SERVER` and
//! `--server`: a real `docker-registry` as a registry-API mirror, fake registries as failing
//! mirrors and as upstreams, an in-process `ferry serve` whose `/v2/` answers 404 for the
//! archive path, and the cutting proxy between client and server.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use ferry_testkit::cutter::{CutPlan, Cutter};
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::{derived_image, sized_image, TestImage};
use ferry_testkit::real::{self, RealRegistry, RegistryAuth};

const REPO: &str = "lib/app";

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A real docker-registry holding `images` as `REPO:tag` (None outside CI without it).
fn real_mirror(images: &[(&str, &TestImage)]) -> Option<RealRegistry> {
    let reg = RealRegistry::start(RegistryAuth::Anonymous)?;
    real::tool("skopeo")?;
    for (tag, img) in images {
        push_with_skopeo(&reg, &format!("{REPO}:{tag}"), img, None);
    }
    Some(reg)
}

/// The sha256 blob entries of a tar archive.
fn archive_blobs(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in ar.entries().unwrap() {
        let p = e.unwrap().path().unwrap().to_string_lossy().to_string();
        if let Some(h) = p.strip_prefix("blobs/sha256/") {
            out.push(format!("sha256:{h}"));
        }
    }
    out
}

fn assert_holds(path: &Path, img: &TestImage) {
    let blobs = archive_blobs(path);
    for d in std::iter::once(&img.manifest_digest).chain(img.blobs().map(|b| &b.digest)) {
        assert!(blobs.contains(&d.to_string()), "{d} missing from {blobs:?}");
    }
}

/// A ferry command with a private config home (no user config file unless written there)
/// and no FERRY_SERVER from the environment.
fn cmd(cache: &Path, args: &[&str]) -> std::process::Command {
    let mut c = ferry_cmd(cache, args);
    c.env("XDG_CONFIG_HOME", cache.join("config-home"))
        .env_remove("FERRY_SERVER")
        .env_remove("FERRY_SERVER_TOKEN")
        .env_remove("FERRY_CONFIG");
    c
}

#[tokio::test]
async fn a_mirror_serves_an_unreachable_registry_and_no_mirror_ignores_it() {
    let img = sized_image(11, 2, 40_000);
    let Some(mirror) = real_mirror(&[("v1", &img)]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = format!("127.0.0.1:{}", closed_port());
    let image = format!("{registry}/{REPO}:v1");
    let out = dir.path().join("a.tar");
    let rule = format!("{registry}={}", mirror.host);
    let o = run_cmd(cmd(
        dir.path(),
        &[
            "pull",
            "-q",
            &image,
            "--mirror",
            &rule,
            "-o",
            out.to_str().unwrap(),
        ],
    ))
    .await;
    assert_ok(&o);
    assert_holds(&out, &img);
    assert_eq!(stderr(&o), "", "a working mirror is silent with -q");
    // The same through a rule for every registry.
    let out2 = dir.path().join("b.tar");
    let o = run_cmd(cmd(
        dir.path(),
        &[
            "pull",
            "-q",
            &image,
            "--mirror",
            &mirror.url(),
            "-o",
            out2.to_str().unwrap(),
        ],
    ))
    .await;
    assert_ok(&o);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    // --no-mirror goes to the registry itself, which is not there. The config file's
    // mirrors are ignored too.
    let home = dir.path().join("config-home").join("ferry");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!("[mirrors]\n\"{registry}\" = [\"{}\"]\n", mirror.url()),
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let mut c = cmd(
        fresh.path(),
        &[
            "pull",
            "-q",
            &image,
            "--no-mirror",
            "-o",
            dir.path().join("c.tar").to_str().unwrap(),
        ],
    );
    c.env("XDG_CONFIG_HOME", dir.path().join("config-home"));
    let o = run_cmd(c).await;
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("cannot reach the registry {registry}")),
        "{}",
        stderr(&o)
    );
    // Without --no-mirror the config file's mirror is used.
    let mut c = cmd(
        fresh.path(),
        &[
            "pull",
            "-q",
            &image,
            "-o",
            dir.path().join("d.tar").to_str().unwrap(),
        ],
    );
    c.env("XDG_CONFIG_HOME", dir.path().join("config-home"));
    let o = run_cmd(c).await;
    assert_ok(&o);
    assert_holds(&dir.path().join("d.tar"), &img);
}

#[tokio::test]
async fn a_failing_mirror_falls_back_to_the_next_and_then_the_registry_saying_so() {
    let img = sized_image(12, 1, 30_000);
    let registry = FakeRegistry::start(FakeAuth::None).await;
    registry.push_image(REPO, "v1", &img);
    let broken = FakeRegistry::start(FakeAuth::None).await;
    broken.add_fault(Fault::PingStatus { status: 500 });
    let down = format!("127.0.0.1:{}", closed_port());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.tar");
    let image = format!("{}/{REPO}:v1", registry.host());
    let o = run_cmd(cmd(
        dir.path(),
        &[
            "pull",
            "-q",
            &image,
            "--mirror",
            &broken.host(),
            "--mirror",
            &format!("{}=http://{down}", registry.host()),
            "-o",
            out.to_str().unwrap(),
        ],
    ))
    .await;
    assert_ok(&o);
    assert_holds(&out, &img);
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!(
            "warning: mirror http://{b} failed for {r}/{REPO}: GET http://{b}/v2/ returned 500",
            b = broken.host(),
            r = registry.host()
        )) && lines[0].ends_with(&format!("; trying mirror http://{down}")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "warning: mirror http://{down} failed for {}/{REPO}: cannot reach",
            registry.host()
        )) && lines[1].ends_with(&format!("; trying {} itself", registry.host())),
        "{err}"
    );
}

#[tokio::test]
async fn a_malformed_config_file_is_a_usage_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferry.toml");
    std::fs::write(
        &file,
        "server = \"http://x\"\n[mirrors]\n\"docker.io\" = 5\n",
    )
    .unwrap();
    let o = run_cmd(cmd(
        dir.path(),
        &[
            "pull",
            "alpine",
            "--config",
            file.to_str().unwrap(),
            "-o",
            dir.path().join("x.tar").to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!(
            "error: the config file {} is not valid: line 3: ",
            file.display()
        )),
        "{}",
        stderr(&o)
    );
}

/// An in-process `ferry serve` fetching from `allow` (fake registries), whose `/v2/`
/// answers 404 whatever the server build offers: the archive path of `--server`.
async fn archive_server(
    allow: &[String],
    tokens: &[&str],
) -> (std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferry_server::Config::new(dir.path().join("cache"));
    cfg.policy.allow_private = allow
        .iter()
        .map(|h| ferry_server::HostPort::parse(h).unwrap())
        .collect();
    cfg.client.max_attempts = 3;
    cfg.client.base_backoff = Duration::from_millis(10);
    cfg.client.credential_files = ferry_registry::CredentialFiles::default();
    cfg.tokens = tokens.iter().map(|t| t.to_string()).collect();
    let state = ferry_server::State::new(cfg).unwrap();
    let not_found = || async { axum::http::StatusCode::NOT_FOUND };
    let app = axum::Router::new()
        .route("/v2", axum::routing::any(not_found))
        .route("/v2/", axum::routing::any(not_found))
        .route("/v2/{*rest}", axum::routing::any(not_found))
        .fallback_service(ferry_server::app(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, dir)
}

#[tokio::test]
async fn server_without_mirror_api_is_pulled_as_an_archive_through_cuts() {
    let img = sized_image(13, 3, 400_000);
    let registry = FakeRegistry::start(FakeAuth::None).await;
    registry.push_image(REPO, "v1", &img);
    let (server, _sdir) = archive_server(&[registry.host()], &[]).await;
    let cutter = Cutter::start(
        server,
        Some(CutPlan {
            seed: 42,
            min_bytes: 50_000,
            max_bytes: 250_000,
            cuts: 4,
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let image = format!("{}/{REPO}:v1", registry.host());
    let direct = dir.path().join("direct.tar");
    let o = run_cmd(cmd(
        &dir.path().join("c1"),
        &[
            "pull",
            "-q",
            "--platform",
            "linux/amd64",
            &image,
            "-o",
            direct.to_str().unwrap(),
        ],
    ))
    .await;
    assert_ok(&o);
    let out = dir.path().join("via.tar");
    let url = format!("http://{}", cutter.host());
    let o = run_cmd(cmd(
        &dir.path().join("c2"),
        &[
            "pull",
            "--server",
            &url,
            "--platform",
            "linux/amd64",
            &image,
            "-o",
            out.to_str().unwrap(),
        ],
    ))
    .await;
    assert_ok(&o);
    assert_eq!(cutter.cuts_done(), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("retrying the download at byte"),
        "{}",
        stderr(&o)
    );
    let want = std::fs::read(&direct).unwrap();
    assert!(
        std::fs::read(&out).unwrap() == want,
        "the output differs from a direct pull"
    );
    // What crossed the link: the archive (about the image's size) once, plus what each cut
    // made the client ask again.
    let resent = cutter.down_bytes().saturating_sub(want.len() as u64);
    assert!(resent < 4 * (1 << 20), "{resent} bytes resent over 4 cuts");
    assert!(
        cutter.down_bytes() < img.blobs().map(|b| b.size()).sum::<u64>() + 4 * (1 << 20),
        "{}",
        cutter.down_bytes()
    );
    // The partial download is gone after the import.
    let left = std::fs::read_dir(dir.path().join("c2").join("server-downloads"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

/// Bytes of the partial archive downloads under `cache`.
fn partial_len(cache: &Path) -> u64 {
    std::fs::read_dir(cache.join("server-downloads"))
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "partial"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
}

/// Run ferry with `args` through `counter` slowed down, SIGKILL it once it holds 300 kB of
/// the archive, and lift the slowdown; the bytes it had.
async fn kill_midway(cache: &Path, args: &[&str], counter: &Cutter) -> u64 {
    counter.set_rate(400_000);
    let mut child = cmd(cache, args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while partial_len(cache) < 300_000 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no download progress"
        );
        if child.try_wait().unwrap().is_some() {
            let o = child.wait_with_output().unwrap();
            panic!("ferry ended before the kill: {}", stderr(&o));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    counter.set_rate(0);
    partial_len(cache)
}

#[tokio::test]
async fn a_killed_archive_download_resumes_on_the_next_run() {
    let img = sized_image(14, 2, 600_000);
    let registry = FakeRegistry::start(FakeAuth::None).await;
    registry.push_image(REPO, "v1", &img);
    let (server, _sdir) = archive_server(&[registry.host()], &[]).await;
    let counter = Cutter::start(server, None).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let image = format!("{}/{REPO}:v1", registry.host());
    let out = dir.path().join("via.tar");
    let url = format!("http://{}", counter.host());
    let args = [
        "pull",
        "--server",
        &url,
        &image,
        "-o",
        out.to_str().unwrap(),
    ];
    let had = kill_midway(&cache, &args, &counter).await;
    assert!(had >= 300_000);
    let o = run_cmd(cmd(&cache, &args)).await;
    assert_ok(&o);
    assert!(
        stderr(&o).contains(&format!("resuming the download of {image} at byte {had}")),
        "{}",
        stderr(&o)
    );
    assert_holds(&out, &img);
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(
        counter.down_bytes() < size + (1 << 20),
        "{} bytes crossed for a {size}-byte archive (the first run had {had})",
        counter.down_bytes()
    );
}

#[tokio::test]
async fn a_partial_archive_whose_etag_changed_is_downloaded_again() {
    let img = sized_image(18, 2, 600_000);
    let registry = FakeRegistry::start(FakeAuth::None).await;
    registry.push_image(REPO, "v1", &img);
    let (server, _sdir) = archive_server(&[registry.host()], &[]).await;
    let counter = Cutter::start(server, None).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let image = format!("{}/{REPO}:v1", registry.host());
    let out = dir.path().join("via.tar");
    let url = format!("http://{}", counter.host());
    let args = [
        "pull",
        "--server",
        &url,
        &image,
        "-o",
        out.to_str().unwrap(),
    ];
    kill_midway(&cache, &args, &counter).await;
    // As if the server now served other bytes under the name: the kept ETag no longer
    // matches, and the kept bytes (spoilt here) must not be used.
    for e in std::fs::read_dir(cache.join("server-downloads"))
        .unwrap()
        .flatten()
    {
        let p = e.path();
        match p.extension().and_then(|x| x.to_str()) {
            Some("etag") => std::fs::write(&p, "\"other\"").unwrap(),
            Some("partial") => {
                let mut b = std::fs::read(&p).unwrap();
                b[1000] ^= 0xff;
                std::fs::write(&p, b).unwrap();
            }
            _ => {}
        }
    }
    let o = run_cmd(cmd(&cache, &args)).await;
    assert_ok(&o);
    assert!(
        stderr(&o).contains(&format!(
            "the server's archive of {image} changed; downloading it from the start"
        )),
        "{}",
        stderr(&o)
    );
    assert_holds(&out, &img);
}

#[tokio::test]
async fn the_server_token_is_sent_and_never_printed() {
    let img = sized_image(19, 1, 20_000);
    let registry = FakeRegistry::start(FakeAuth::None).await;
    registry.push_image(REPO, "v1", &img);
    let (server, _sdir) = archive_server(&[registry.host()], &["s3cret-token"]).await;
    let dir = tempfile::tempdir().unwrap();
    let image = format!("{}/{REPO}:v1", registry.host());
    let out = dir.path().join("via.tar");
    let url = format!("http://{server}");
    let args = [
        "pull",
        "--server",
        &url,
        &image,
        "-o",
        out.to_str().unwrap(),
    ];
    let o = run_cmd(cmd(dir.path(), &args)).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("hint: give the server's token with --server-token or FERRY_SERVER_TOKEN"),
        "{}",
        stderr(&o)
    );
    let mut c = cmd(dir.path(), &args);
    c.env("FERRY_SERVER_TOKEN", "s3cret-token");
    let o = run_cmd(c).await;
    assert_ok(&o);
    assert_holds(&out, &img);
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    std::fs::remove_file(&out).unwrap();
    let mut c = cmd(dir.path(), &args);
    c.env("FERRY_SERVER_TOKEN", "wrong-token");
    let o = run_cmd(c).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(!stderr(&o).contains("wrong-token"), "{}", stderr(&o));
}

#[tokio::test]
async fn a_server_mirror_pull_completes_through_cuts() {
    let img = sized_image(20, 3, 300_000);
    let Some(mirror) = real_mirror(&[("v1", &img)]) else {
        return;
    };
    let cutter = Cutter::start(
        mirror.host.parse().unwrap(),
        Some(CutPlan {
            seed: 9,
            min_bytes: 50_000,
            max_bytes: 200_000,
            cuts: 3,
        }),
    )
    .await;
    let registry = format!("127.0.0.1:{}", closed_port());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.tar");
    let url = format!("http://{}", cutter.host());
    let image = format!("{registry}/{REPO}:v1");
    let o = run_cmd(cmd(
        dir.path(),
        &[
            "pull",
            "--server",
            &url,
            &image,
            "-o",
            out.to_str().unwrap(),
        ],
    ))
    .await;
    assert_ok(&o);
    assert_eq!(cutter.cuts_done(), 3, "{}", stderr(&o));
    assert_holds(&out, &img);
    let blobs: u64 = img.blobs().map(|b| b.size()).sum();
    let resent = cutter.down_bytes().saturating_sub(blobs);
    assert!(resent < 3 * (1 << 20), "{resent} bytes resent over 3 cuts");
}

#[tokio::test]
async fn a_server_with_the_registry_api_moves_only_missing_blobs() {
    let base = sized_image(15, 2, 300_000);
    let second = derived_image(&base, 16);
    let Some(mirror) = real_mirror(&[("base", &base), ("second", &second)]) else {
        return;
    };
    // The registry the images are named by is not reachable: --server means the registries
    // are never asked.
    let registry = format!("127.0.0.1:{}", closed_port());
    let counter = Cutter::start(mirror.host.parse().unwrap(), None).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}", counter.host());
    let pull = |tag: &str, out: &Path| {
        let mut c = cmd(
            dir.path(),
            &[
                "pull",
                "-q",
                &format!("{registry}/{REPO}:{tag}"),
                "-o",
                out.to_str().unwrap(),
            ],
        );
        c.env("FERRY_SERVER", &url);
        c
    };
    let a = dir.path().join("a.tar");
    let o = run_cmd(pull("base", &a)).await;
    assert_ok(&o);
    assert_holds(&a, &base);
    counter.reset_counts();
    let b = dir.path().join("b.tar");
    let o = run_cmd(pull("second", &b)).await;
    assert_ok(&o);
    assert_holds(&b, &second);
    let new_bytes: u64 =
        second.layers[1].size() + second.config.size() + second.manifest.len() as u64;
    assert!(
        counter.down_bytes() < new_bytes + 64 * 1024,
        "{} bytes crossed; the new blobs are {new_bytes}",
        counter.down_bytes()
    );
    assert!(counter.down_bytes() >= new_bytes);
}

#[tokio::test]
async fn config_server_and_env_server_are_used_and_no_mirror_bypasses_them() {
    let img = sized_image(17, 1, 20_000);
    let Some(mirror) = real_mirror(&[("v1", &img)]) else {
        return;
    };
    let registry = format!("127.0.0.1:{}", closed_port());
    let image = format!("{registry}/{REPO}:v1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferry.toml");
    std::fs::write(&file, format!("server = \"{}\"\n", mirror.url())).unwrap();
    let out = dir.path().join("a.tar");
    let o = run_cmd(cmd(
        dir.path(),
        &[
            "pull",
            "-q",
            &image,
            "--config",
            file.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    ))
    .await;
    assert_ok(&o);
    assert_holds(&out, &img);
    // FERRY_SERVER wins over the file; an unreachable one fails clearly, without asking
    // the registry.
    let gone = format!("http://127.0.0.1:{}", closed_port());
    let mut c = cmd(
        dir.path(),
        &[
            "pull",
            "-q",
            &image,
            "--config",
            file.to_str().unwrap(),
            "-o",
            dir.path().join("b.tar").to_str().unwrap(),
        ],
    );
    c.env("FERRY_SERVER", &gone);
    let o = run_cmd(c).await;
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!("error: cannot reach the server {gone} (")),
        "{}",
        stderr(&o)
    );
    // A --mirror flag sets FERRY_SERVER aside.
    let mirror_url = mirror.url();
    let mut c = cmd(
        dir.path(),
        &[
            "pull",
            "-q",
            &image,
            "--mirror",
            &mirror_url,
            "-o",
            dir.path().join("m.tar").to_str().unwrap(),
        ],
    );
    c.env("FERRY_SERVER", &gone);
    let o = run_cmd(c).await;
    assert_ok(&o);
    // --no-mirror: neither the server nor the file; the registry itself (unreachable here).
    let mut c = cmd(
        dir.path(),
        &[
            "pull",
            "-q",
            &image,
            "--no-mirror",
            "-o",
            dir.path().join("c.tar").to_str().unwrap(),
        ],
    );
    c.env("FERRY_SERVER", mirror.url());
    let o = run_cmd(c).await;
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("cannot reach the registry {registry}")),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn the_server_token_is_the_basic_password_of_a_server_mirror() {
    let img = sized_image(21, 1, 20_000);
    let Some(mirror) = RealRegistry::start(RegistryAuth::Htpasswd {
        user: "ferry".into(),
        pass: "tok-123".into(),
    }) else {
        return;
    };
    if real::tool("skopeo").is_none() {
        return;
    }
    push_with_skopeo(
        &mirror,
        &format!("{REPO}:v1"),
        &img,
        Some(("ferry", "tok-123")),
    );
    let registry = format!("127.0.0.1:{}", closed_port());
    let image = format!("{registry}/{REPO}:v1");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.tar");
    let url = mirror.url();
    let args = [
        "pull",
        "-q",
        "--server",
        &url,
        &image,
        "-o",
        out.to_str().unwrap(),
    ];
    let o = run_cmd(cmd(dir.path(), &args)).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!("error: the server {url} refused the pull: GET {url}/v2/{REPO}/manifests/v1?… returned 401")),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o)
            .ends_with("hint: give the server's token with --server-token or FERRY_SERVER_TOKEN\n"),
        "{}",
        stderr(&o)
    );
    let mut c = cmd(dir.path(), &args);
    c.env("FERRY_SERVER_TOKEN", "tok-123");
    let o = run_cmd(c).await;
    assert_ok(&o);
    assert_holds(&out, &img);
    assert!(!stderr(&o).contains("tok-123"));
}

#[tokio::test]
async fn a_ferry_serve_wanting_a_token_is_pulled_from_with_it() {
    let img = sized_image(22, 1, 30_000);
    let registry = FakeRegistry::start(FakeAuth::None).await;
    registry.push_image(REPO, "v1", &img);
    // The server as `ferry serve` runs it (whatever it answers at /v2/).
    let sdir = tempfile::tempdir().unwrap();
    let mut cfg = ferry_server::Config::new(sdir.path().join("cache"));
    cfg.policy.allow_private = vec![ferry_server::HostPort::parse(&registry.host()).unwrap()];
    cfg.client.credential_files = ferry_registry::CredentialFiles::default();
    cfg.tokens = vec!["tk-77".into()];
    let state = ferry_server::State::new(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ferry_server::serve(
        listener,
        state,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let dir = tempfile::tempdir().unwrap();
    let image = format!("{}/{REPO}:v1", registry.host());
    let out = dir.path().join("a.tar");
    let args = [
        "pull",
        "-q",
        "--server",
        &url,
        &image,
        "-o",
        out.to_str().unwrap(),
    ];
    let o = run_cmd(cmd(dir.path(), &args)).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .ends_with("hint: give the server's token with --server-token or FERRY_SERVER_TOKEN\n"),
        "{}",
        stderr(&o)
    );
    let mut c = cmd(dir.path(), &args);
    c.env("FERRY_SERVER_TOKEN", "tk-77");
    let o = run_cmd(c).await;
    assert_ok(&o);
    assert_holds(&out, &img);
}
