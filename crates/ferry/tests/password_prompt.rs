//! `--username` without a password source asks on the terminal, without echo.

mod common;

use common::terminal::Terminal;
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
        let mut t = Terminal::start(
            &script,
            &cmdline,
            &[
                ("FERRY_CACHE_DIR", &cache),
                ("DOCKER_CONFIG", &cache.join("none")),
                ("REGISTRY_AUTH_FILE", &cache.join("none.json")),
            ],
        );
        // Type only once the prompt is up (echo is off by then).
        t.wait_for("Password for alice:");
        t.type_secret(b"s3cret-pw\r");
        t.finish()
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
