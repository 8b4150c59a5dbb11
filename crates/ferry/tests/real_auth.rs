//! `ferry pull` from a real docker-registry that wants credentials: htpasswd (HTTP Basic) and
//! token auth (real RS256 JWTs that distribution verifies), with credentials from
//! `--password-stdin`, docker's `config.json` and podman's `auth.json` (written by a real
//! `podman login`). Every successful archive is loaded by a real loader and checked.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use ferry_testkit::image::{sized_image, TestImage};
use ferry_testkit::real::{self, Podman, RealRegistry, RegistryAuth};

const USER: &str = "ferry-user";
const PASS: &str = "s3cret:with-colon";

fn htpasswd() -> RegistryAuth {
    RegistryAuth::Htpasswd {
        user: USER.into(),
        pass: PASS.into(),
    }
}

fn token() -> RegistryAuth {
    RegistryAuth::Token {
        user: USER.into(),
        pass: PASS.into(),
    }
}

/// A two-layer image of about 50 kB a layer.
fn image(seed: u64) -> TestImage {
    sized_image(seed, 2, 50_000)
}

/// A registry in `auth` mode holding `image(seed)` as `private/app:v1`; `None` when the tools
/// are missing (outside CI).
fn registry_with_image(auth: RegistryAuth, seed: u64) -> Option<(RealRegistry, TestImage)> {
    let reg = RealRegistry::start(auth)?;
    real::tool("skopeo")?;
    let img = image(seed);
    push_with_skopeo(&reg, "private/app:v1", &img, Some((USER, PASS)));
    Some((reg, img))
}

/// A work directory (the pull's cache goes in it), the archive `app.tar` in it, and the
/// reference of `private/app:v1` in `reg`.
fn work_for(reg: &RealRegistry) -> (tempfile::TempDir, PathBuf, String) {
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("app.tar");
    let reference = format!("{}/private/app:v1", reg.host);
    (work, archive, reference)
}

/// `ferry pull -q REFERENCE -o ARCHIVE --username USER --password-stdin` with `password` on
/// standard input and the cache in `work`.
fn pull_with_password_stdin(
    work: &Path,
    reference: &str,
    archive: &Path,
    password: &[u8],
) -> Output {
    let args = pull_args(
        reference,
        archive,
        &["--username", USER, "--password-stdin"],
    );
    run_with_stdin(ferry_cmd(&work.join("cache"), &args), password)
}

/// A docker config directory `docker-config` in `work` whose `config.json` is `config`.
fn docker_config_dir(work: &Path, config: &[u8]) -> PathBuf {
    let dir = work.join("docker-config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

/// `ferry pull -q REFERENCE -o ARCHIVE` with `cache`, and `key` set to `value` in its
/// environment.
fn pull_with_env(cache: &Path, reference: &str, archive: &Path, key: &str, value: &Path) -> Output {
    ferry_cmd(cache, &pull_args(reference, archive, &[]))
        .env(key, value)
        .output()
        .expect("running ferry")
}

/// Load `archive` in podman and check the image is `name` with `img`'s layers.
fn assert_podman_loads(archive: &Path, name: &str, img: &TestImage) {
    let Some(podman) = Podman::new() else { return };
    let (_, names) = podman_load(&podman, archive);
    assert!(
        names.iter().any(|n| n == name),
        "podman loaded {names:?}, expected {name}"
    );
    let inspect = podman.inspect(name).expect("podman image inspect");
    let layers: Vec<String> = inspect["RootFS"]["Layers"]
        .as_array()
        .expect("RootFS.Layers")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(layers, digests(&img.diff_ids), "podman loaded other layers");
    assert_eq!(
        inspect["Digest"].as_str(),
        Some(img.manifest_digest.to_string().as_str()),
        "podman's image digest is not the registry's manifest digest: {inspect}"
    );
}

/// No credentials: exit 4 with a hint on how to give them.
fn assert_auth_failure(out: &std::process::Output, archive: &Path) {
    assert_auth_failure_hint(out, archive, "--username");
}

/// Wrong credentials: exit 4 with a hint that they were refused, not the "give credentials"
/// one.
fn assert_credentials_refused(out: &std::process::Output, archive: &Path) {
    assert_auth_failure_hint(out, archive, "refused the username and password");
    assert!(!stderr(out).contains("--username"), "{}", stderr(out));
}

fn assert_auth_failure_hint(out: &std::process::Output, archive: &Path, hint: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(4),
        "expected exit code 4 (authentication failed); stderr:\n{err}"
    );
    assert!(err.contains("error:"), "no error line on stderr:\n{err}");
    assert!(
        err.contains("hint:") && err.contains(hint),
        "no hint about credentials ({hint}) on stderr:\n{err}"
    );
    assert!(
        !err.contains(PASS),
        "stderr must never show the password:\n{err}"
    );
    assert!(
        !archive.exists(),
        "a failed pull left {}",
        archive.display()
    );
    let parent = archive.parent().expect("parent");
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .expect("read_dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("ferry-tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary outputs left: {leftovers:?}"
    );
}

#[test]
fn htpasswd_password_stdin_pull_loads_in_podman() {
    let Some((reg, img)) = registry_with_image(htpasswd(), 101) else {
        return;
    };
    let (work, archive, reference) = work_for(&reg);
    let password = format!("{PASS}\n");
    let out = pull_with_password_stdin(work.path(), &reference, &archive, password.as_bytes());
    assert_ok(&out);
    assert!(
        !stderr(&out).contains(PASS),
        "stderr shows the password:\n{}",
        stderr(&out)
    );
    assert_podman_loads(&archive, &reference, &img);
}

#[test]
fn htpasswd_password_on_the_command_line_works_with_a_warning() {
    let Some((reg, img)) = registry_with_image(htpasswd(), 111) else {
        return;
    };
    let (work, archive, reference) = work_for(&reg);
    let out = ferry(
        &work.path().join("cache"),
        &[
            "pull",
            &reference,
            "-o",
            archive.to_str().unwrap(),
            "--username",
            USER,
            "--password",
            PASS,
        ],
    );
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("warning") && err.contains("--password-stdin"),
        "no warning about a visible password:\n{err}"
    );
    assert_podman_loads(&archive, &reference, &img);
}

#[test]
fn htpasswd_without_credentials_exits_4_with_a_hint() {
    let Some((reg, _img)) = registry_with_image(htpasswd(), 102) else {
        return;
    };
    let (work, archive, reference) = work_for(&reg);
    let out = ferry(
        &work.path().join("cache"),
        &pull_args(&reference, &archive, &[]),
    );
    assert_auth_failure(&out, &archive);
}

#[test]
fn htpasswd_wrong_password_exits_4() {
    let Some((reg, _img)) = registry_with_image(htpasswd(), 103) else {
        return;
    };
    let (work, archive, reference) = work_for(&reg);
    let out = pull_with_password_stdin(work.path(), &reference, &archive, b"not-the-password\n");
    assert_credentials_refused(&out, &archive);
    assert!(!stderr(&out).contains("not-the-password"));
}

#[test]
fn htpasswd_credentials_from_docker_config_json() {
    let Some((reg, img)) = registry_with_image(htpasswd(), 104) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "auths": {
            "other.example.com": { "auth": base64_std(b"someone:else") },
            reg.host.clone(): { "auth": base64_std(format!("{USER}:{PASS}").as_bytes()) },
        }
    });
    let docker_config =
        docker_config_dir(work.path(), &serde_json::to_vec_pretty(&config).unwrap());
    let archive = work.path().join("app.tar");
    let reference = format!("{}/private/app:v1", reg.host);
    let cache = work.path().join("cache");
    let out = pull_with_env(
        &cache,
        &reference,
        &archive,
        "DOCKER_CONFIG",
        &docker_config,
    );
    assert_ok(&out);
    assert_podman_loads(&archive, &reference, &img);

    // The same config with a wrong password is an authentication failure, not a silent
    // anonymous pull.
    let config = serde_json::json!({
        "auths": { reg.host.clone(): { "auth": base64_std(format!("{USER}:wrong").as_bytes()) } }
    });
    let docker_config = docker_config_dir(work.path(), &serde_json::to_vec(&config).unwrap());
    let archive2 = work.path().join("app2.tar");
    let cache2 = work.path().join("cache2");
    let out = pull_with_env(
        &cache2,
        &reference,
        &archive2,
        "DOCKER_CONFIG",
        &docker_config,
    );
    assert_credentials_refused(&out, &archive2);
}

#[test]
fn htpasswd_credentials_from_podman_login_auth_json() {
    let Some((reg, img)) = registry_with_image(htpasswd(), 105) else {
        return;
    };
    let Some(podman) = Podman::new() else { return };
    // A real `podman login` writes the auth.json ($REGISTRY_AUTH_FILE of the private podman).
    podman
        .run(&[
            "login",
            "--tls-verify=false",
            "--username",
            USER,
            "--password",
            PASS,
            &reg.host,
        ])
        .unwrap_or_else(|e| panic!("podman login: {e}\nregistry log:\n{}", reg.log()));
    let auth_json = podman.dir.join("auth.json");
    let text = std::fs::read_to_string(&auth_json).expect("podman login wrote auth.json");
    assert!(text.contains(&reg.host), "auth.json: {text}");

    let (work, archive, reference) = work_for(&reg);
    let cache = work.path().join("cache");
    let out = pull_with_env(
        &cache,
        &reference,
        &archive,
        "REGISTRY_AUTH_FILE",
        &auth_json,
    );
    assert_ok(&out);
    assert_podman_loads(&archive, &reference, &img);
}

#[test]
fn token_auth_with_credentials_pulls_and_imports_in_containerd() {
    let Some((reg, img)) = registry_with_image(token(), 106) else {
        return;
    };
    let before = reg.token_requests();
    let (work, archive, reference) = work_for(&reg);
    let password = format!("{PASS}\n");
    let out = pull_with_password_stdin(work.path(), &reference, &archive, password.as_bytes());
    assert_ok(&out);
    assert!(
        reg.token_requests() > before,
        "ferry got no token from the token server ({} before, {} after)",
        before,
        reg.token_requests()
    );
    // The registry verified the JWTs: it served the blobs to ferry.
    let log = reg.log();
    assert!(
        log.contains(&format!("/v2/private/app/blobs/{}", img.layers[0].digest)),
        "the registry log shows no layer download:\n{log}"
    );

    if let Some(images) = containerd_images(&archive) {
        assert_ctr_has(&images, &reference, &img.manifest_digest);
    }
    assert_podman_loads(&archive, &reference, &img);
}

#[test]
fn token_auth_from_docker_config_json() {
    let Some((reg, img)) = registry_with_image(token(), 107) else {
        return;
    };
    let before = reg.token_requests();
    let work = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "auths": { format!("http://{}", reg.host): { "auth": base64_std(format!("{USER}:{PASS}").as_bytes()) } }
    });
    let docker_config = docker_config_dir(work.path(), &serde_json::to_vec(&config).unwrap());
    let archive = work.path().join("app.tar");
    let reference = format!("{}/private/app:v1", reg.host);
    let cache = work.path().join("cache");
    let out = pull_with_env(
        &cache,
        &reference,
        &archive,
        "DOCKER_CONFIG",
        &docker_config,
    );
    assert_ok(&out);
    assert!(reg.token_requests() > before, "no token was issued");
    assert_podman_loads(&archive, &reference, &img);
}

#[test]
fn token_auth_without_or_with_wrong_credentials_exits_4() {
    let Some((reg, _img)) = registry_with_image(token(), 108) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/private/app:v1", reg.host);

    let archive = work.path().join("anon.tar");
    let out = ferry(
        &work.path().join("cache"),
        &pull_args(&reference, &archive, &[]),
    );
    assert_auth_failure(&out, &archive);

    let archive = work.path().join("wrong.tar");
    let out = pull_with_password_stdin(work.path(), &reference, &archive, b"nope\n");
    assert_credentials_refused(&out, &archive);
}

/// Two repositories in one pull: each needs its own token scope, and distribution refuses a
/// token for one repository on the other. Both images end up in the archive and in podman.
#[test]
fn token_auth_two_repositories_in_one_pull() {
    let Some((reg, a)) = registry_with_image(token(), 109) else {
        return;
    };
    let b = image(110);
    push_with_skopeo(&reg, "private/other:v2", &b, Some((USER, PASS)));
    let before = reg.token_requests();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("both.tar");
    let ra = format!("{}/private/app:v1", reg.host);
    let rb = format!("{}/private/other:v2", reg.host);
    let out = run_with_stdin(
        ferry_cmd(
            &work.path().join("cache"),
            &[
                "pull",
                "-q",
                "--username",
                USER,
                "--password-stdin",
                &ra,
                &rb,
                "-o",
                archive.to_str().unwrap(),
            ],
        ),
        PASS.as_bytes(),
    );
    assert_ok(&out);
    assert!(
        reg.token_requests() >= before + 2,
        "expected a token per repository, got {}",
        reg.token_requests() - before
    );
    let Some(podman) = Podman::new() else { return };
    let (_, names) = podman_load(&podman, &archive);
    for (r, img) in [(&ra, &a), (&rb, &b)] {
        assert!(names.contains(r), "podman loaded {names:?}");
        assert_podman_has(&podman, r, img);
    }
}
