//! `ferry serve` as a process: its start line, configuration from flags, env and TOML, and
//! a graceful stop on SIGTERM that lets a download in flight finish and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::sized_image;
use ferry_testkit::real::http_get;

/// Start `ferry serve ARGS --listen 127.0.0.1:0`; the child and the address it logged.
fn serve(cache: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Child, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--cache-dir"])
        .arg(cache)
        .args(args)
        .env("DOCKER_CONFIG", cache.join("no-docker"))
        .env("REGISTRY_AUTH_FILE", cache.join("no-auth.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("ferry serve");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    // Drain the rest so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while err.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
    });
    let addr = line
        .strip_prefix("ferry serve: listening on ")
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("start line: {line:?}"))
        .to_string();
    (child, addr, line)
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("ferry serve did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn serve_logs_its_address_and_page_and_stops_on_sigterm_with_0() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, line) = serve(dir.path(), &[], &[]);
    assert_eq!(
        line.trim_end(),
        format!("ferry serve: listening on {addr}; page: http://{addr}/")
    );
    let (status, _, body) = http_get(&addr, "/health", &[]).unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"OK"[..]));
    sigterm(&child);
    let s = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(s.code(), Some(0));
}

#[test]
fn flags_win_over_env_which_wins_over_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, "token = [\"from-file\"]\nmax-image-size = \"1K\"\n").unwrap();
    let cfg = file.to_str().unwrap();
    // The file alone: its token guards the server.
    let (mut child, addr, _) = serve(dir.path(), &["--config", cfg], &[]);
    let (status, _, _) = http_get(
        &addr,
        "/image?name=a%20b",
        &[("Authorization", "Bearer from-file")],
    )
    .unwrap();
    assert_eq!(status, 400);
    let _ = child.kill();
    let _ = child.wait();
    // The env var replaces the file's token; the flag replaces the env var's.
    let (mut child, addr, _) = serve(
        dir.path(),
        &["--config", cfg],
        &[("FERRY_SERVE_TOKEN", "from-env")],
    );
    let (status, _, _) = http_get(
        &addr,
        "/image?name=a%20b",
        &[("Authorization", "Bearer from-file")],
    )
    .unwrap();
    assert_eq!(status, 401);
    let (status, _, _) = http_get(&addr, "/image?name=a%20b&token=from-env", &[]).unwrap();
    assert_eq!(status, 400);
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, addr, _) = serve(
        dir.path(),
        &["--config", cfg, "--token", "from-flag"],
        &[("FERRY_SERVE_TOKEN", "from-env")],
    );
    let (status, _, _) = http_get(&addr, "/image?name=a%20b&token=from-env", &[]).unwrap();
    assert_eq!(status, 401);
    let (status, _, _) = http_get(&addr, "/image?name=a%20b&token=from-flag", &[]).unwrap();
    assert_eq!(status, 400);
    let _ = child.kill();
    let _ = child.wait();
    // An unknown key is refused with the file's name.
    std::fs::write(&file, "listen-on = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config", cfg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the configuration {cfg} is not valid: unknown field `listen-on`"
        )),
        "{err}"
    );
}

#[test]
fn sigterm_lets_a_download_in_flight_finish() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let img = sized_image(41, 2, 800_000);
    let fake = rt.block_on(FakeRegistry::start(FakeAuth::None));
    fake.push_image("slow/img", "v1", &img);
    fake.add_fault(Fault::Throttle {
        bytes_per_sec: 400_000,
    });
    let dir = tempfile::tempdir().unwrap();
    let host = fake.host();
    let (mut child, addr, _) = serve(dir.path(), &["--allow-private", &host], &[]);
    let path = format!("/image?name={host}/slow/img:v1");
    let a2 = addr.clone();
    let download = std::thread::spawn(move || http_get(&a2, &path, &[]));
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    let (status, headers, body) = download.join().unwrap().expect("the download");
    assert_eq!(status, 200);
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    assert_eq!(body.len(), len, "the download was cut by the stop");
    let s = wait_exit(&mut child, Duration::from_secs(15));
    assert_eq!(s.code(), Some(0));
}

#[test]
fn after_sigkill_mid_fetch_a_restart_serves_a_complete_verified_image() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let img = sized_image(42, 2, 800_000);
    let fake = rt.block_on(FakeRegistry::start(FakeAuth::None));
    fake.push_image("crash/img", "v1", &img);
    fake.add_fault(Fault::Throttle {
        bytes_per_sec: 400_000,
    });
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let host = fake.host();
    let path = format!("/image?name={host}/crash/img:v1");
    let (mut child, addr, _) = serve(&cache, &["--allow-private", &host], &[]);
    let (a2, p2) = (addr.clone(), path.clone());
    let cut = std::thread::spawn(move || http_get(&a2, &p2, &[]));
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    let _ = child.wait();
    let _ = cut.join();
    // Damage what the killed server had committed: the config, whole since resolution.
    let store = ferry_store::Store::open(&cache).unwrap();
    let config = store.blob_path(&img.config.digest);
    let mut bytes = std::fs::read(&config).expect("the config was cached");
    bytes[0] ^= 0xff;
    std::fs::write(&config, &bytes).unwrap();
    fake.clear_faults();
    let (mut child, addr, _) = serve(&cache, &["--allow-private", &host], &[]);
    let (status, _, body) = http_get(&addr, &path, &[]).unwrap();
    assert_eq!(status, 200);
    let mut a = tar::Archive::new(&body[..]);
    let mut found = 0;
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().to_string();
        if let Some(b) = img
            .blobs()
            .find(|b| name == format!("blobs/sha256/{}", b.digest.hex()))
        {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut got).unwrap();
            assert!(got == b.bytes.to_vec(), "{name} differs");
            found += 1;
        }
    }
    assert_eq!(found, img.blobs().count());
    sigterm(&child);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
}

#[test]
fn upstream_credentials_come_from_the_config_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let img = sized_image(43, 1, 10_000);
    let fake = rt.block_on(FakeRegistry::start(FakeAuth::Basic {
        user: "bot".into(),
        pass: "s3cret".into(),
    }));
    fake.push_image("locked/img", "v1", &img);
    let dir = tempfile::tempdir().unwrap();
    let host = fake.host();
    let file = dir.path().join("serve.toml");
    std::fs::write(
        &file,
        format!("allow-private = [\"{host}\"]\n[registries.\"{host}\"]\nusername = \"bot\"\npassword = \"s3cret\"\n"),
    )
    .unwrap();
    let (mut child, addr, _) = serve(dir.path(), &["--config", file.to_str().unwrap()], &[]);
    let (status, _, body) =
        http_get(&addr, &format!("/image?name={host}/locked/img:v1"), &[]).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn tag_ttl_is_a_flag_an_env_var_and_a_config_key() {
    let help = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--tag-ttl <DUR>"), "{help}");
    assert!(help.contains("FERRY_SERVE_TAG_TTL"), "{help}");
    // A bad value is refused wherever it comes from, naming the option.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--tag-ttl", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tag-ttl"));
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve"])
        .env("FERRY_SERVE_TAG_TTL", "10x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tag-ttl"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, "tag-ttl = \"soon\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config", file.to_str().unwrap()])
        .env_remove("FERRY_SERVE_TAG_TTL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tag-ttl: \"soon\" is not a duration"), "{err}");
    // It reaches the server: a tag is asked again once its answer is older than the TTL,
    // and not before (the file's 1h loses to the flag's 1s).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let img = sized_image(44, 1, 1_000);
    let fake = rt.block_on(FakeRegistry::start(FakeAuth::None));
    fake.push_image("ttl/img", "v1", &img);
    let host = fake.host();
    let manifest_gets = || {
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/manifests/"))
            .count()
    };
    let path = format!("/platforms?name={host}/ttl/img:v1");
    std::fs::write(&file, "tag-ttl = \"1h\"\n").unwrap();
    let cfg = file.to_str().unwrap();
    let (mut child, addr, _) = serve(
        dir.path(),
        &["--config", cfg, "--allow-private", &host],
        &[],
    );
    for _ in 0..2 {
        assert_eq!(http_get(&addr, &path, &[]).unwrap().0, 200);
    }
    assert_eq!(manifest_gets(), 1);
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, addr, _) = serve(
        dir.path(),
        &["--config", cfg, "--allow-private", &host, "--tag-ttl", "1s"],
        &[],
    );
    assert_eq!(http_get(&addr, &path, &[]).unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(http_get(&addr, &path, &[]).unwrap().0, 200);
    assert_eq!(manifest_gets(), 3);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_server_never_goes_through_an_environment_proxy() {
    // A proxy would make the private-address guard see only the proxy's address.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let img = sized_image(43, 1, 1_000);
    let fake = rt.block_on(FakeRegistry::start(FakeAuth::None));
    fake.push_image("proxy/img", "v1", &img);
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    proxy.set_nonblocking(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = fake.host();
    let mut env = Vec::new();
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        env.push((k, proxy_url.as_str()));
    }
    env.push(("NO_PROXY", ""));
    env.push(("no_proxy", ""));
    let (mut child, addr, _) = serve(dir.path(), &["--allow-private", &host], &env);
    // Through the proxy (which never answers) the request would hang and time out.
    let (status, _, body) = http_get(&addr, &format!("/platforms?name={host}/proxy/img:v1"), &[])
        .unwrap_or((0, Vec::new(), Vec::new()));
    let _ = child.kill();
    let _ = child.wait();
    let mut connections = 0;
    while proxy.accept().is_ok() {
        connections += 1;
    }
    assert_eq!(connections, 0, "the server connected to the proxy");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn min_rate_is_a_flag_an_env_var_and_a_config_key() {
    let help = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--min-rate <SIZE>"), "{help}");
    assert!(help.contains("FERRY_SERVE_MIN_RATE"), "{help}");
    // A bad value is refused wherever it comes from, naming the option.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--min-rate", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--min-rate"));
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve"])
        .env("FERRY_SERVE_MIN_RATE", "1Q")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--min-rate"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, "min-rate = \"fast\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config", file.to_str().unwrap()])
        .env_remove("FERRY_SERVE_MIN_RATE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("min-rate: unknown unit \"fast\""), "{err}");
    // A good value in the file is accepted: the server starts and answers.
    std::fs::write(&file, "min-rate = \"2K\"\n").unwrap();
    let (mut child, addr, _) = serve(dir.path(), &["--config", file.to_str().unwrap()], &[]);
    assert_eq!(http_get(&addr, "/health", &[]).unwrap().0, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn client_tokens_never_reach_the_log() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let img = sized_image(45, 1, 1_000);
    let fake = rt.block_on(FakeRegistry::start(FakeAuth::None));
    fake.push_image("logs/img", "v1", &img);
    let host = fake.host();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cache-dir"])
        .arg(dir.path())
        .args(["--allow-private", &host, "--token", "s3cret-t0ken"])
        .env("FERRY_LOG", "debug")
        .env("DOCKER_CONFIG", dir.path().join("no-docker"))
        .env("REGISTRY_AUTH_FILE", dir.path().join("no-auth.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no start line");
        if let Some(r) = line.strip_prefix("ferry serve: listening on ") {
            break r.split(';').next().unwrap().to_string();
        }
    };
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        while err.read_line(&mut all).map(|n| n > 0).unwrap_or(false) {}
        all
    });
    let name = format!("{host}/logs/img:v1");
    // In the query, in the header, right and wrong, on every kind of route.
    for path in [
        format!("/image?name={name}&token=s3cret-t0ken"),
        format!("/?name={name}&token=s3cret-t0ken"),
        format!("/platforms?name={name}&token=s3cret-t0kenX"),
        "/metrics?token=s3cret-t0ken".to_string(),
        "/nowhere?token=s3cret-t0ken".to_string(),
    ] {
        http_get(&addr, &path, &[]).unwrap();
    }
    http_get(
        &addr,
        &format!("/image?name={name}"),
        &[("Authorization", "Bearer s3cret-t0ken")],
    )
    .unwrap();
    let (_, _, metrics) = http_get(&addr, "/metrics?token=s3cret-t0ken", &[]).unwrap();
    assert!(!String::from_utf8_lossy(&metrics).contains("s3cret"));
    let _ = child.kill();
    let _ = child.wait();
    let all = log.join().unwrap();
    assert!(all.contains("request"), "nothing was logged: {all}");
    assert!(!all.contains("s3cret"), "{all}");
}

#[test]
fn mirror_of_is_a_flag_an_env_var_and_a_config_key() {
    let help = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--mirror-of <REGISTRY>"), "{help}");
    assert!(help.contains("FERRY_SERVE_MIRROR_OF"), "{help}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, "mirror-of = \"not a host/x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config", file.to_str().unwrap()])
        .env_remove("FERRY_SERVE_MIRROR_OF")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mirror-of: \"not a host/x\" is not HOST or HOST:PORT"),
        "{err}"
    );
    // Unprefixed /v2/ names reach the registry it names, from the file or the env var.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let img = sized_image(45, 1, 1_000);
    let fake = rt.block_on(FakeRegistry::start(FakeAuth::None));
    fake.push_image("team/img", "v1", &img);
    let host = fake.host();
    std::fs::write(&file, format!("mirror-of = \"{host}\"\n")).unwrap();
    let cfg = file.to_str().unwrap();
    let (mut child, addr, _) = serve(
        dir.path(),
        &["--config", cfg, "--allow-private", &host],
        &[],
    );
    let r = http_get(&addr, "/v2/team/img/manifests/v1", &[]).unwrap();
    assert_eq!(r.0, 200);
    assert!(r.2 == img.manifest.to_vec());
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, addr, _) = serve(
        dir.path(),
        &["--allow-private", &host],
        &[("FERRY_SERVE_MIRROR_OF", &host)],
    );
    let r = http_get(&addr, "/v2/team/img/manifests/v1", &[]).unwrap();
    assert_eq!(r.0, 200);
    let _ = child.kill();
    let _ = child.wait();
}
