//! `ferry login` and `ferry logout` against a real docker-registry (htpasswd and token auth),
//! with skopeo reading what ferry wrote and ferry reading what skopeo wrote, and a fake
//! docker credential helper for `credsStore` / `credHelpers`.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::terminal::Terminal;
use common::*;
use ferry_testkit::image::sized_image;
use ferry_testkit::real::{self, RealRegistry, RegistryAuth};

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

/// A registry in `auth` mode holding a small image as `private/app:v1`; `None` when the
/// tools are missing (outside CI).
fn registry(auth: RegistryAuth, seed: u64) -> Option<RealRegistry> {
    let reg = RealRegistry::start(auth)?;
    real::tool("skopeo")?;
    push_with_skopeo(
        &reg,
        "private/app:v1",
        &sized_image(seed, 1, 5_000),
        Some((USER, PASS)),
    );
    Some(reg)
}

/// `ferry ARGS` with `password` on stdin, the cache in `work`.
fn ferry_stdin(work: &Path, args: &[&str], password: &str, env: &[(&str, &Path)]) -> Output {
    let mut c = ferry_cmd(&work.join("cache"), args);
    for (k, v) in env {
        c.env(k, v);
    }
    run_with_stdin(c, format!("{password}\n").as_bytes())
}

fn login_args<'a>(host: &'a str, authfile: &'a Path) -> Vec<&'a str> {
    vec![
        "login",
        "--username",
        USER,
        "--password-stdin",
        "--authfile",
        authfile.to_str().unwrap(),
        host,
    ]
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn assert_no_password(out: &Output) {
    let all = format!("{}{}", stdout(out), stderr(out));
    assert!(!all.contains(PASS), "the password was printed:\n{all}");
}

/// `skopeo inspect --authfile FILE docker://HOST/private/app:v1`.
fn skopeo_with_authfile(host: &str, authfile: &Path) -> Result<serde_json::Value, String> {
    real::skopeo_inspect(
        &format!("docker://{host}/private/app:v1"),
        &[
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
        ],
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A pull of `private/app:v1` with `key=value` in ferry's environment (and `extra_env`).
fn pull_with(work: &Path, host: &str, env: &[(&str, &Path)]) -> Output {
    let archive = work.join(format!("app-{}.tar", rand_suffix()));
    let reference = format!("{host}/private/app:v1");
    let mut c = ferry_cmd(&work.join("cache"), &pull_args(&reference, &archive, &[]));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running ferry")
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A config file with settings ferry knows nothing about, an entry for another registry,
/// and a stale entry for `host` under another spelling.
fn busy_config(host: &str) -> String {
    format!(
        "{{\n\t\"proxies\": {{\"default\": {{\"httpProxy\": \"http://proxy.example:3128\"}}}},\n\t\"auths\": {{\n\t\t\"other.example.com\": {{\"auth\": \"{}\"}},\n\t\t\"http://{host}\": {{\"auth\": \"{}\"}}\n\t}},\n\t\"HttpHeaders\": {{\"X-Meta-Team\": \"infra\"}},\n\t\"x-tool-setting\": [1, {{\"nested\": true}}]\n}}",
        base64_std(b"someone:else"),
        base64_std(b"stale:password"),
    )
}

#[test]
fn htpasswd_login_is_read_by_skopeo_and_logout_removes_only_that_entry() {
    let Some(reg) = registry(htpasswd(), 201) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let authfile = work.path().join("auth.json");
    std::fs::write(&authfile, busy_config(&reg.host)).unwrap();
    assert!(
        skopeo_with_authfile(&reg.host, &authfile).is_err(),
        "the stale entry already worked"
    );

    let out = ferry_stdin(work.path(), &login_args(&reg.host, &authfile), PASS, &[]);
    assert_ok(&out);
    assert_no_password(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "Login succeeded for {} (stored in {})\n",
            reg.host,
            authfile.display()
        )
    );
    assert!(
        stderr(&out).contains("warning: the password is stored unencrypted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(&authfile), 0o600);
    skopeo_with_authfile(&reg.host, &authfile).expect("skopeo reads ferry's login");

    // The entry replaced the stale spelling in place; everything else is as it was.
    let text = std::fs::read_to_string(&authfile).unwrap();
    let entry = format!(
        "\"{}\": {{\n\t\t\t\"auth\": \"{}\"\n\t\t}}",
        reg.host,
        base64_std(format!("{USER}:{PASS}").as_bytes())
    );
    assert_eq!(
        text,
        busy_config(&reg.host).replace(
            &format!(
                "\"http://{}\": {{\"auth\": \"{}\"}}",
                reg.host,
                base64_std(b"stale:password")
            ),
            &entry
        )
    );

    let out = ferry(
        &work.path().join("cache"),
        &[
            "logout",
            "--authfile",
            authfile.to_str().unwrap(),
            &reg.host,
        ],
    );
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "Removed login credentials for {} (from {})\n",
            reg.host,
            authfile.display()
        )
    );
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&authfile).unwrap()).unwrap();
    let mut want: serde_json::Value = serde_json::from_str(&busy_config(&reg.host)).unwrap();
    want["auths"]
        .as_object_mut()
        .unwrap()
        .remove(&format!("http://{}", reg.host));
    assert_eq!(after, want);
    let text = std::fs::read_to_string(&authfile).unwrap();
    assert!(
        text.contains("\"other.example.com\": {\"auth\": \"c29tZW9uZTplbHNl\"}")
            && text.contains("\"HttpHeaders\": {\"X-Meta-Team\": \"infra\"}"),
        "other entries changed their text:\n{text}"
    );
    assert!(skopeo_with_authfile(&reg.host, &authfile).is_err());

    // Logging out again: nothing to remove, said plainly, and not a failure (as docker).
    let out = ferry(
        &work.path().join("cache"),
        &[
            "logout",
            "--authfile",
            authfile.to_str().unwrap(),
            &reg.host,
        ],
    );
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "Not logged in to {}: {} holds no credentials for it\n",
            reg.host,
            authfile.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&authfile).unwrap(), text);
}

#[test]
fn token_login_into_docker_config_is_read_by_skopeo_and_ferry_pull() {
    let Some(reg) = registry(token(), 202) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let docker_config = work.path().join("docker");
    let before = reg.token_requests();
    let mut c = ferry_cmd(
        &work.path().join("cache"),
        &["login", "-u", USER, "--password-stdin", &reg.host],
    );
    // No --authfile and no REGISTRY_AUTH_FILE: docker's config.json, as docker login.
    c.env("DOCKER_CONFIG", &docker_config)
        .env_remove("REGISTRY_AUTH_FILE");
    let out = run_with_stdin(c, format!("{PASS}\n").as_bytes());
    assert_ok(&out);
    assert_no_password(&out);
    let config = docker_config.join("config.json");
    assert_eq!(
        stdout(&out),
        format!(
            "Login succeeded for {} (stored in {})\n",
            reg.host,
            config.display()
        )
    );
    assert!(
        reg.token_requests() > before,
        "the token service was not asked"
    );
    assert_eq!(mode(&config), 0o600);
    assert_eq!(
        std::fs::metadata(&docker_config)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    skopeo_with_authfile(&reg.host, &config).expect("skopeo reads ferry's login");
    assert_ok(&pull_with(
        work.path(),
        &reg.host,
        &[("DOCKER_CONFIG", &docker_config)],
    ));
}

#[test]
fn skopeo_login_is_read_by_ferry_pull_and_removed_by_ferry_logout() {
    let Some(reg) = registry(htpasswd(), 203) else {
        return;
    };
    let Some(skopeo) = real::tool("skopeo") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let authfile = work.path().join("auth.json");
    let mut c = Command::new(skopeo);
    c.args([
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile.to_str().unwrap(),
        "-u",
        USER,
        "--password-stdin",
        &reg.host,
    ]);
    let out = run_with_stdin(c, format!("{PASS}\n").as_bytes());
    assert!(out.status.success(), "skopeo login: {}", stderr(&out));
    let out = pull_with(work.path(), &reg.host, &[("REGISTRY_AUTH_FILE", &authfile)]);
    assert_ok(&out);

    let out = ferry(
        &work.path().join("cache"),
        &[
            "logout",
            "--authfile",
            authfile.to_str().unwrap(),
            &reg.host,
        ],
    );
    assert_ok(&out);
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&authfile).unwrap()).unwrap();
    assert_eq!(after, serde_json::json!({"auths": {}}));
    let out = pull_with(work.path(), &reg.host, &[("REGISTRY_AUTH_FILE", &authfile)]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[test]
fn a_refused_login_exits_4_and_writes_nothing() {
    for auth in [htpasswd(), token()] {
        let Some(reg) = RealRegistry::start(auth) else {
            return;
        };
        let work = tempfile::tempdir().unwrap();
        // No file: none is created.
        let missing = work.path().join("new/auth.json");
        let out = ferry_stdin(
            work.path(),
            &login_args(&reg.host, &missing),
            "wrong-pw",
            &[],
        );
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "error: login to {} failed; nothing was stored",
                reg.host
            )) && err.contains("refused the credentials")
                && err.contains("hint: check the username and password"),
            "{err}"
        );
        assert!(!err.contains("wrong-pw"), "{err}");
        assert!(!missing.exists() && !missing.parent().unwrap().exists());
        assert_eq!(stdout(&out), "");

        // An existing file: byte for byte the same.
        let authfile = work.path().join("auth.json");
        std::fs::write(&authfile, busy_config(&reg.host)).unwrap();
        let out = ferry_stdin(
            work.path(),
            &login_args(&reg.host, &authfile),
            "wrong-pw",
            &[],
        );
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(&authfile).unwrap(),
            busy_config(&reg.host)
        );
        let names: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("ferry-tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
}

/// A docker credential helper `docker-credential-ferrytest` in a directory of its own,
/// keeping each server's credential in a file under `store`.
fn fake_helper(dir: &Path, store: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(store).unwrap();
    let script = format!(
        r#"#!/bin/sh
d='{}'
key() {{ printf %s "$1" | tr '/:' '__'; }}
case "$1" in
store)
  cat > "$d/incoming"
  url=$(sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p' "$d/incoming")
  mv "$d/incoming" "$d/$(key "$url")" ;;
get|erase)
  read -r url
  f="$d/$(key "$url")"
  if [ ! -f "$f" ]; then echo "credentials not found in native keychain"; exit 1; fi
  if [ "$1" = get ]; then cat "$f"; else rm "$f"; fi ;;
*) echo "unknown operation"; exit 1 ;;
esac
"#,
        store.display()
    );
    let helper = bin.join("docker-credential-ferrytest");
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn path_with(bin: &Path) -> PathBuf {
    PathBuf::from(format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    ))
}

/// Login, pull and logout through the helper `config` names for the registry.
fn helper_round_trip(reg: &RealRegistry, config: serde_json::Value) {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("helper-store");
    let bin = fake_helper(work.path(), &store);
    let path = path_with(&bin);
    let docker_config = work.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    let config_file = docker_config.join("config.json");
    std::fs::write(&config_file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let env: [(&str, &Path); 2] = [("DOCKER_CONFIG", &docker_config), ("PATH", &path)];

    let mut c = ferry_cmd(
        &work.path().join("cache"),
        &["login", "-u", USER, "--password-stdin", &reg.host],
    );
    c.env_remove("REGISTRY_AUTH_FILE");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = run_with_stdin(c, format!("{PASS}\n").as_bytes());
    assert_ok(&out);
    assert_no_password(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "Login succeeded for {} (stored in credential helper ferrytest)\n",
            reg.host
        )
    );
    assert!(!stderr(&out).contains("unencrypted"), "{}", stderr(&out));
    let kept = std::fs::read(store.join(reg.host.replace(':', "_"))).expect("the helper stored it");
    let kept: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    assert_eq!(
        kept,
        serde_json::json!({"ServerURL": reg.host, "Username": USER, "Secret": PASS})
    );
    // The file records the login as docker does (an empty entry), and holds no secret.
    let text = std::fs::read_to_string(&config_file).unwrap();
    assert!(
        !text.contains(&base64_std(format!("{USER}:{PASS}").as_bytes())),
        "{text}"
    );
    let mut want = config.clone();
    want["auths"] = serde_json::json!({ reg.host.clone(): {} });
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        want
    );

    // ferry pull finds the credential through the helper.
    let out = pull_with(work.path(), &reg.host, &env);
    assert_ok(&out);

    let mut c = ferry_cmd(&work.path().join("cache"), &["logout", &reg.host]);
    c.env_remove("REGISTRY_AUTH_FILE");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "Removed login credentials for {} (from credential helper ferrytest)\n",
            reg.host
        )
    );
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0);
    let mut want = config;
    want["auths"] = serde_json::json!({});
    let text = std::fs::read_to_string(&config_file).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        want
    );
}

#[test]
fn credential_helper_from_creds_store_keeps_the_password() {
    let Some(reg) = registry(htpasswd(), 204) else {
        return;
    };
    helper_round_trip(
        &reg,
        serde_json::json!({"credsStore": "ferrytest", "proxies": {"default": {"noProxy": "*.local"}}}),
    );
}

#[test]
fn credential_helper_from_cred_helpers_keeps_the_password() {
    let Some(reg) = registry(htpasswd(), 205) else {
        return;
    };
    helper_round_trip(
        &reg,
        serde_json::json!({"credHelpers": {reg.host.clone(): "ferrytest", "gcr.io": "gcloud"}}),
    );
}

#[test]
fn a_credentials_file_that_cannot_be_updated_fails_before_the_password_is_read() {
    let work = tempfile::tempdir().unwrap();
    let authfile = work.path().join("auth.json");
    std::fs::write(&authfile, "{\"auths\": [\"not\", \"an object\"]}").unwrap();
    // Nothing listens on port 9: the file is checked before any connection. Standard input
    // is empty: had the password been read first, that would be the error.
    let c = ferry_cmd(
        &work.path().join("cache"),
        &login_args("127.0.0.1:9", &authfile),
    );
    let out = run_with_stdin(c, b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{} cannot be updated: its 'auths' is not a JSON object",
            authfile.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_registry_name_with_a_repository_is_refused() {
    let work = tempfile::tempdir().unwrap();
    for bad in ["127.0.0.1:5000/team/app", "not a host", "justaname"] {
        let out = ferry(&work.path().join("cache"), &["logout", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is not a registry address"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn files_ferry_reads_besides_the_one_written_are_named() {
    let Some(reg) = RealRegistry::start(htpasswd()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let run = work.path().join("run");
    std::fs::create_dir_all(run.join("containers")).unwrap();
    let podman_file = run.join("containers/auth.json");
    let entry = format!(
        "{{\"auths\": {{\"{}\": {{\"auth\": \"{}\"}}}}}}",
        reg.host,
        base64_std(b"old:creds")
    );
    std::fs::write(&podman_file, &entry).unwrap();
    let docker_config = work.path().join("docker");
    let env = |c: &mut Command| {
        c.env("DOCKER_CONFIG", &docker_config)
            .env("XDG_RUNTIME_DIR", &run)
            .env_remove("REGISTRY_AUTH_FILE");
    };
    let mut c = ferry_cmd(
        &work.path().join("cache"),
        &["login", "-u", USER, "--password-stdin", &reg.host],
    );
    env(&mut c);
    let out = run_with_stdin(c, format!("{PASS}\n").as_bytes());
    assert_ok(&out);
    assert!(
        stderr(&out).contains(&format!(
            "note: {} also holds credentials for {}, and ferry reads that file first",
            podman_file.display(),
            reg.host
        )),
        "{}",
        stderr(&out)
    );
    let mut c = ferry_cmd(&work.path().join("cache"), &["logout", &reg.host]);
    env(&mut c);
    let out = c.output().unwrap();
    assert_ok(&out);
    assert!(
        stderr(&out).contains(&format!(
            "note: {} still holds credentials for {}, and ferry reads that file too",
            podman_file.display(),
            reg.host
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&podman_file).unwrap(), entry);
}

/// `ferry login REGISTRY` on a terminal asks for the username (echoed, as docker) and the
/// password (not echoed).
#[tokio::test(flavor = "multi_thread")]
async fn login_on_a_terminal_prompts_and_does_not_echo_the_password() {
    // `script` (util-linux) gives ferry a real terminal.
    let Some(script) = real::tool("script") else {
        return;
    };
    let reg = ferry_testkit::fake::FakeRegistry::start(basic_auth("alice", "tty-pw-42")).await;
    let work = tempfile::tempdir().unwrap();
    let authfile = work.path().join("auth.json");
    let cmdline = format!(
        "{} login --authfile {} {}",
        env!("CARGO_BIN_EXE_ferry"),
        authfile.display(),
        reg.host()
    );
    let none = work.path().join("none");
    let (screen, status) = tokio::task::spawn_blocking(move || {
        let mut t = Terminal::start(
            &script,
            &cmdline,
            &[
                ("DOCKER_CONFIG", &none),
                ("REGISTRY_AUTH_FILE", &none.join("auth.json")),
            ],
        );
        t.wait_for("Username: ");
        t.type_keys(b"alice\r");
        t.wait_for("Password for alice:");
        t.type_secret(b"tty-pw-42\r");
        t.wait_for("Login succeeded");
        t.finish()
    })
    .await
    .unwrap();
    assert!(
        status.success(),
        "ferry login failed on a terminal:\n{screen}"
    );
    assert!(
        !screen.contains("tty-pw-42"),
        "the password was echoed:\n{screen}"
    );
    let text = std::fs::read_to_string(work.path().join("auth.json")).unwrap();
    assert!(text.contains(&base64_std(b"alice:tty-pw-42")), "{text}");
}

/// A helper that fails and prints what it was given (the secret among it): the error
/// names the helper and leaves its message out, and the file is not touched.
#[test]
fn a_failing_helper_is_reported_without_the_secret() {
    let Some(reg) = RealRegistry::start(htpasswd()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-ferryleaky");
    std::fs::write(
        &helper,
        "#!/bin/sh\necho \"cannot store: $(cat)\"\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let authfile = work.path().join("auth.json");
    let config = "{\"credsStore\": \"ferryleaky\"}";
    std::fs::write(&authfile, config).unwrap();
    let path = path_with(&bin);
    let out = ferry_stdin(
        work.path(),
        &login_args(&reg.host, &authfile),
        PASS,
        &[("PATH", &path)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_no_password(&out);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "credential helper docker-credential-ferryleaky failed for {}: store failed (exit status: 1): (its message is left out: it holds the secret)",
            reg.host
        )) && err.contains("accepted the credentials, but storing them failed"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&authfile).unwrap(), config);
}

/// Docker Hub's names are one registry: logging out of any removes each spelling of it.
#[test]
fn docker_hub_names_are_one_registry() {
    let work = tempfile::tempdir().unwrap();
    let authfile = work.path().join("auth.json");
    for name in [
        "index.docker.io",
        "docker.io",
        "https://index.docker.io/v1/",
        "registry-1.docker.io",
    ] {
        std::fs::write(
            &authfile,
            "{\"auths\": {\"https://index.docker.io/v1/\": {\"auth\": \"YTpi\"}, \"docker.io\": {\"auth\": \"Yzpk\"}, \"docker.io/team\": {\"auth\": \"ZTpm\"}, \"ghcr.io\": {}}}",
        )
        .unwrap();
        let out = ferry(
            &work.path().join("cache"),
            &["logout", "--authfile", authfile.to_str().unwrap(), name],
        );
        assert_ok(&out);
        assert!(
            stdout(&out).starts_with("Removed login credentials for docker.io "),
            "{name}: {}",
            stdout(&out)
        );
        let after: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&authfile).unwrap()).unwrap();
        assert_eq!(
            after,
            serde_json::json!({"auths": {"docker.io/team": {"auth": "ZTpm"}, "ghcr.io": {}}}),
            "{name}"
        );
    }
}

/// `--password-stdin` drops one line ending (`\n` or `\r\n`), as docker does, and nothing
/// else: spaces at either end belong to the password.
#[tokio::test(flavor = "multi_thread")]
async fn password_stdin_loses_the_line_ending_and_nothing_else() {
    let pass = "  pw with spaces  ";
    let reg = ferry_testkit::fake::FakeRegistry::start(basic_auth("alice", pass)).await;
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();
    let authfile = work.path().join("auth.json");
    let out = {
        let (work, authfile, host) = (work.path().to_path_buf(), authfile.clone(), host.clone());
        tokio::task::spawn_blocking(move || {
            let c = ferry_cmd(
                &work.join("cache"),
                &[
                    "login",
                    "-u",
                    "alice",
                    "--password-stdin",
                    "--authfile",
                    authfile.to_str().unwrap(),
                    &host,
                ],
            );
            run_with_stdin(c, format!("{pass}\r\n").as_bytes())
        })
        .await
        .unwrap()
    };
    assert_ok(&out);
    let text = std::fs::read_to_string(&authfile).unwrap();
    assert!(
        text.contains(&base64_std(format!("alice:{pass}").as_bytes())),
        "{text}"
    );
}

/// An empty password is refused before anything is asked of the registry or written, from
/// standard input and from `--password` alike.
#[test]
fn an_empty_password_is_refused_and_nothing_is_written() {
    let work = tempfile::tempdir().unwrap();
    let authfile = work.path().join("auth.json");
    let args = login_args("127.0.0.1:9", &authfile);
    for stdin in ["\n", "\r\n", ""] {
        let c = ferry_cmd(&work.path().join("cache"), &args);
        let out = run_with_stdin(c, stdin.as_bytes());
        assert_eq!(out.status.code(), Some(2), "{stdin:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--password-stdin got an empty password"),
            "{}",
            stderr(&out)
        );
    }
    let out = ferry(
        &work.path().join("cache"),
        &[
            "login",
            "-u",
            USER,
            "--password",
            "",
            "--authfile",
            authfile.to_str().unwrap(),
            "127.0.0.1:9",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--password is empty"),
        "{}",
        stderr(&out)
    );
    assert!(!authfile.exists());
}

/// Docker Hub in podman's `auth.json` goes under `docker.io`, the key skopeo and podman
/// write and the only one their logout removes; in docker's `config.json` under
/// `https://index.docker.io/v1/`, the only key docker reads. (The store is used directly:
/// a login to Docker Hub would need the network.)
#[test]
fn docker_hub_is_stored_under_the_key_each_files_tool_uses() {
    let Some(skopeo) = real::tool("skopeo") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let authfile = work.path().join("auth.json");
    ferry_registry::CredentialStore::at(&authfile)
        .store("docker.io", "hubuser", "hub-pw")
        .unwrap();
    let text = std::fs::read_to_string(&authfile).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"auths": {"docker.io": {"auth": base64_std(b"hubuser:hub-pw")}}})
    );
    let skopeo_says = |args: &[&str]| {
        let out = Command::new(&skopeo)
            .args(args)
            .args(["--authfile", authfile.to_str().unwrap(), "docker.io"])
            .output()
            .unwrap();
        (
            out.status.success(),
            stdout(&out).trim().to_string(),
            stderr(&out),
        )
    };
    let (ok, user, err) = skopeo_says(&["login", "--get-login"]);
    assert!(ok && user == "hubuser", "{user} {err}");
    let (ok, _, err) = skopeo_says(&["logout"]);
    assert!(ok, "skopeo logout did not find ferry's entry: {err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&authfile).unwrap()).unwrap();
    assert_eq!(v, serde_json::json!({"auths": {}}));

    let config = work.path().join("docker/config.json");
    ferry_registry::CredentialStore::at(&config)
        .store("registry-1.docker.io", "hubuser", "hub-pw")
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"auths": {"https://index.docker.io/v1/": {"auth": base64_std(b"hubuser:hub-pw")}}})
    );
}
