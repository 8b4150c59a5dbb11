//! `--username` without a password source asks on the terminal, without echo.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferry_testkit::image::sized_image;
use ferry_testkit::real;

#[tokio::test(flavor = "multi_thread")]
async fn password_prompt_on_a_terminal_does_not_echo() {
    // `script` (util-linux) gives ferry a real terminal.
    let Some(script) = real::tool("script") else {
        return;
    };
    let img = sized_image(130, 1, 5_000);
    let reg = fake_registry(
        basic_auth("alice", "s3cret-pw"),
        "team/app",
        &[("v1", &img)],
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app.tar");
    let cmdline = format!(
        "{} pull -u alice {}/team/app:v1 -o {}",
        env!("CARGO_BIN_EXE_ferry"),
        reg.host(),
        out.display()
    );
    let cache = work.path().join("cache");
    let (screen, status) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(script)
            .args(["-qec", &cmdline, "/dev/null"])
            .env("FERRY_CACHE_DIR", &cache)
            .env("DOCKER_CONFIG", cache.join("none"))
            .env("REGISTRY_AUTH_FILE", cache.join("none.json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running script");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut screen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Type only once the prompt is up (echo is off by then).
        while !String::from_utf8_lossy(&screen).contains("Password for alice:") {
            assert!(
                Instant::now() < deadline,
                "no prompt: {}",
                String::from_utf8_lossy(&screen)
            );
            if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
                screen.extend(chunk);
            }
        }
        // rpassword prints the prompt a moment before it turns echo off: a person never
        // types inside that window, a test must not either.
        std::thread::sleep(Duration::from_millis(200));
        stdin
            .write_all(b"s3cret-pw\r")
            .expect("typing the password");
        let status = loop {
            if let Some(s) = child.try_wait().expect("waiting") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "ferry did not finish: {}",
                String::from_utf8_lossy(&screen)
            );
            if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
                screen.extend(chunk);
            }
        };
        drop(stdin);
        let _ = reader.join();
        while let Ok(chunk) = rx.try_recv() {
            screen.extend(chunk);
        }
        (String::from_utf8_lossy(&screen).to_string(), status)
    })
    .await
    .unwrap();
    assert!(status.success(), "ferry failed on a terminal:\n{screen}");
    assert!(
        !screen.contains("s3cret-pw"),
        "the password was echoed:\n{screen}"
    );
    assert!(out.exists(), "no archive:\n{screen}");
    assert!(reg.requests().iter().any(|r| r
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic "))));
}
