//! How `ferry pull` behaves as a process and towards its output: closed pipes, signals,
//! output locations checked before anything is fetched, `--force`, declared sizes against
//! free space, and a full disk.

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use ferry_core::Digest;
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::{sized_image, TestImage};

const REPO: &str = "lib/app";

async fn registry_with(images: &[(&str, &TestImage)]) -> FakeRegistry {
    fake_registry(FakeAuth::None, REPO, images).await
}

/// Wait for `child` at most `limit`; kill it and fail past that.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("waiting for ferry") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferry still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_all(r: Option<impl std::io::Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// Names in `dir` that look like ferry's temporary or set-aside outputs.
fn leftovers(dir: &Path) -> Vec<String> {
    dir_names(dir)
        .into_iter()
        .filter(|n| n.contains(".ferry-"))
        .collect()
}

/// A tmpfs mounted for one test, unmounted when dropped; `None` where mounting is not
/// allowed (not root, or no CAP_SYS_ADMIN), and the test that needs it is skipped — except
/// under `CI=true`, where it fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // CI runs as root: there a test that cannot mount must fail, not pass unchecked.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot mount a tmpfs under CI=true (the tests run as root there)"
            );
            eprintln!("skipped: cannot mount a tmpfs here");
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn help_documents_the_signal_and_pipe_exit_codes_and_the_output_flags() {
    let work = tempfile::tempdir().unwrap();
    let o = ferry(work.path(), &["pull", "--help"]);
    assert_ok(&o);
    let help = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "129  stopped by SIGHUP",
        "130  interrupted (Ctrl-C, SIGINT)",
        "141  standard output closed before the archive was complete",
        "143  stopped by SIGTERM",
        "--force",
        "--max-size <SIZE>",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_stderr_never_panics() {
    let img = sized_image(601, 2, 20_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let good = format!("{}/{REPO}:v1", reg.host());
    let missing = format!("{}/{REPO}:nope", reg.host());
    let out = work.path().join("x.tar");
    let out = out.to_str().unwrap();
    // Progress lines, an error with its hint, -v log lines: each written into a closed pipe.
    let cases: [(&[&str], i32); 4] = [
        (&["pull", &good, "-o", out], 0),
        (&["pull", &missing, "-o", "y.tar"], 3),
        (&["pull", "-v", &good, "-o", "-"], 0),
        (&["pull", "-vv", "--force", &good, "-o", out], 0),
    ];
    for (args, code) in cases {
        let mut c = ferry_cmd(&cache, args);
        c.current_dir(work.path())
            .stdout(if args.contains(&"-") {
                Stdio::from(std::fs::File::create(work.path().join("stdout.tar")).unwrap())
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        let status = tokio::task::spawn_blocking(move || {
            let mut child = c.spawn().expect("spawn ferry");
            // Close the read end before ferry writes anything: it writes only after talking
            // to the registry.
            drop(child.stderr.take());
            wait_bounded(&mut child, Duration::from_secs(20))
        })
        .await
        .unwrap();
        assert_eq!(status.code(), Some(code), "{args:?}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_stdout_stops_the_pull_at_once_with_exit_141() {
    let img = sized_image(602, 2, 2_000_000);
    let reg = registry_with(&[("v1", &img)]).await;
    // The second layer alone would take a minute: a pull that goes on after its reader left
    // shows up as a timeout here.
    let slow = img.layers[1].clone();
    reg.add_fault(Fault::ThrottleBlob {
        digest: slow.digest.clone(),
        bytes_per_sec: 32 * 1024,
    });
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let image = format!("{}/{REPO}:v1", reg.host());
    let mut c = ferry_cmd(&cache, &["pull", &image, "-o", "-"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let (status, err, elapsed) = tokio::task::spawn_blocking(move || {
        let mut child = c.spawn().expect("spawn ferry");
        let mut stdout = child.stdout.take().unwrap();
        let mut head = [0u8; 1000];
        stdout.read_exact(&mut head).expect("the first 1000 bytes");
        // `| head -c 1000`: the reader goes away.
        drop(stdout);
        let closed = Instant::now();
        let status = wait_bounded(&mut child, Duration::from_secs(15));
        (status, read_all(child.stderr.take()), closed.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(141), "{err}");
    assert!(
        elapsed < Duration::from_secs(5),
        "ferry went on for {elapsed:?}"
    );
    assert!(
        !err.contains("error:"),
        "a closed stdout is not an error to explain: {err}"
    );
    // The download in flight was cancelled: nothing more is sent once ferry is gone, and
    // far less than the slow layer was.
    let sent = reg.body_bytes_sent();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reg.body_bytes_sent(), sent, "the registry kept sending");
    let whole: u64 = img.blobs().map(|b| b.size()).sum();
    eprintln!("stopped {elapsed:?} after stdout closed; {sent} of {whole} blob bytes sent");
    assert!(
        sent < whole - slow.size() / 2,
        "{sent} of {whole} bytes were sent"
    );
}

/// Start a throttled pull in `work`, wait until a layer download is under way, send
/// `signal`, and return the exit code and stderr.
async fn pull_and_signal(
    reg: &FakeRegistry,
    img: &TestImage,
    work: &Path,
    extra: &[&str],
    signal: &str,
) -> (Option<i32>, String) {
    let cache = work.join("cache");
    let image = format!("{}/{REPO}:v1", reg.host());
    let before = reg.blob_gets(&img.layers[0].digest);
    let mut args = vec!["pull", &image];
    args.extend_from_slice(extra);
    let mut cmd = tokio::process::Command::from(ferry_cmd(&cache, &args));
    cmd.current_dir(work)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn ferry");
    let pid = child.id().expect("pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reg.blob_gets(&img.layers[0].digest) == before {
        assert!(Instant::now() < deadline, "the layer download never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let o = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("ferry did not stop on the signal")
        .unwrap();
    (o.status.code(), stderr(&o))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_sighup_remove_temp_outputs_of_every_format_and_exit_143_129() {
    let img = sized_image(603, 1, 1_000_000);
    let reg = registry_with(&[("v1", &img)]).await;
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 200_000,
    });
    let work = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str, i32); 3] = [
        (&["-o", "a.tar"], "TERM", 143),
        (&["--format", "oci", "-o", "layout"], "HUP", 129),
        (&["--format", "legacy", "-o", "l.tar"], "TERM", 143),
    ];
    for (extra, signal, code) in cases {
        let (got, err) = pull_and_signal(&reg, &img, work.path(), extra, signal).await;
        assert_eq!(got, Some(code), "{extra:?} SIG{signal}: {err}");
        assert!(
            err.contains(&format!(
                "interrupted by SIG{signal}; downloaded data is kept in the cache"
            )),
            "{err}"
        );
        assert_eq!(
            dir_names(work.path()),
            vec!["cache".to_string()],
            "{extra:?} SIG{signal} left output behind"
        );
        // What had arrived is kept for the next run to resume from.
        let held = std::fs::read_dir(work.path().join("cache/ingest"))
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .contains(img.layers[0].digest.hex())
            })
            .map(|e| e.metadata().unwrap().len())
            .max()
            .unwrap_or(0);
        assert!(
            held > 0,
            "{extra:?} SIG{signal}: nothing of the layer was kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_acted_on_while_the_command_blocks_reading_a_password() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let mut cmd = tokio::process::Command::from(ferry_cmd(
        &cache,
        &["pull", "-u", "me", "--password-stdin", "localhost:1/app:1"],
    ));
    // Standard input stays open and empty: the password read blocks.
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ferry");
    // Held until ferry has exited: `wait_with_output` would close it, and an end of input
    // racing the signal reads as an empty password.
    let stdin = child.stdin.take();
    let pid = child.id().expect("pid");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let k = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let o = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .expect("ferry ignored SIGTERM while blocked")
        .unwrap();
    drop(stdin);
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn temp_outputs_of_dead_runs_are_removed_by_the_next_run_in_that_directory() {
    let img = sized_image(604, 1, 10_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let dir = work.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    // Above any pid_max: never a live process.
    let dead = 4_000_000_000u32;
    std::fs::write(dir.join(format!(".other.tar.ferry-tmp-{dead}")), b"x").unwrap();
    let layout_tmp = dir.join(format!(".layout.ferry-tmp-{dead}"));
    std::fs::create_dir_all(layout_tmp.join("blobs/sha256")).unwrap();
    // A layout a killed `--force` run had moved aside, and whose replacement never came.
    let aside = dir.join(format!(".kept.ferry-old-{dead}"));
    std::fs::create_dir(&aside).unwrap();
    std::fs::write(aside.join("oci-layout"), b"{}").unwrap();
    // A live run's temporary file is not ours to remove, whatever its PID says (pid 1 here:
    // alive in this namespace, but it could be a pull in another container): its lock is
    // held, here by this test process.
    let live = dir.join(".busy.tar.ferry-tmp-1");
    std::fs::write(&live, b"x").unwrap();
    let held = std::fs::File::open(&live).unwrap();
    held.try_lock().unwrap();
    // One whose PID is alive but whose lock is free is a dead run's (PID reuse).
    std::fs::write(dir.join(".reused.tar.ferry-tmp-1"), b"x").unwrap();
    // Symlinks planted at temporary names: removed, never followed.
    let (file_target, dir_target) = (work.path().join("precious"), work.path().join("vault"));
    std::fs::write(&file_target, b"keep").unwrap();
    std::fs::create_dir(&dir_target).unwrap();
    std::fs::write(dir_target.join("f"), b"keep").unwrap();
    std::os::unix::fs::symlink(&file_target, dir.join(format!(".l.tar.ferry-tmp-{dead}"))).unwrap();
    std::os::unix::fs::symlink(&dir_target, dir.join(format!(".ld.ferry-tmp-{dead}"))).unwrap();
    let o = pull_to(
        &cache,
        &["-q", &format!("{}/{REPO}:v1", reg.host())],
        &dir.join("new.tar"),
    )
    .await;
    assert_ok(&o);
    assert_eq!(
        dir_names(&dir),
        vec![".busy.tar.ferry-tmp-1", "kept", "new.tar"],
        "stale temporary outputs were left"
    );
    assert!(dir.join("kept/oci-layout").is_file());
    assert_eq!(std::fs::read(&file_target).unwrap(), b"keep");
    assert_eq!(std::fs::read(dir_target.join("f")).unwrap(), b"keep");
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_follows_the_interrupted_line() {
    // Many small, slow layers: downloads finish all the time, right up to the signal and
    // while the runtime winds down after it.
    // (Half a second each, a few at a time: the pull lasts seconds, the signal comes early.)
    let img = sized_image(605, 24, 4_000);
    let reg = registry_with(&[("v1", &img)]).await;
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 8_000,
    });
    let work = tempfile::tempdir().unwrap();
    for (i, extra) in [["-o", "a.tar"], ["--format", "legacy"]].iter().enumerate() {
        let w = work.path().join(i.to_string());
        std::fs::create_dir(&w).unwrap();
        let mut extra = extra.to_vec();
        if extra[0] == "--format" {
            extra.extend(["-o", "l.tar"]);
        }
        let (code, err) = pull_and_signal(&reg, &img, &w, &extra, "TERM").await;
        assert_eq!(code, Some(143), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("interrupted by SIGTERM; downloaded data is kept in the cache"),
            "lines follow the interruption message:\n{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_is_noticed_while_the_writer_waits_for_a_slow_blob() {
    use tokio::io::AsyncReadExt as _;
    let img = sized_image(606, 2, 1_500_000);
    let reg = registry_with(&[("v1", &img)]).await;
    // The second layer would take most of a minute. The writer copies the first out, then
    // waits for the second, writing nothing, so no write of its own can fail.
    let slow = img.layers[1].clone();
    reg.add_fault(Fault::ThrottleBlob {
        digest: slow.digest.clone(),
        bytes_per_sec: 32 * 1024,
    });
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let image = format!("{}/{REPO}:v1", reg.host());
    let mut c = tokio::process::Command::from(ferry_cmd(&cache, &["pull", &image, "-o", "-"]));
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn ferry");
    let mut stdout = child.stdout.take().unwrap();
    // Read all that comes until the writer stalls on the slow layer, then go away.
    let (mut got, mut buf) = (0usize, vec![0u8; 1 << 16]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "the output never stalled");
        match tokio::time::timeout(Duration::from_millis(700), stdout.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("the archive ended: the slow layer was not slow"),
            Ok(Ok(n)) => got += n,
            Ok(Err(e)) => panic!("reading ferry's output: {e}"),
            Err(_) if got > 0 => break,
            Err(_) => {}
        }
    }
    drop(stdout);
    let closed = Instant::now();
    let o = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("ferry went on after its reader left")
        .unwrap();
    let (elapsed, err) = (closed.elapsed(), stderr(&o));
    assert_eq!(o.status.code(), Some(141), "{err}");
    assert!(!err.contains("error:"), "{err}");
    assert!(
        elapsed < Duration::from_secs(3),
        "ferry went on for {elapsed:?} after its reader left"
    );
    let sent = reg.body_bytes_sent();
    let fast = img.layers[0].size() + img.config.size();
    eprintln!("{got} bytes read; stopped {elapsed:?} after stdout closed; {sent} blob bytes sent");
    assert!(
        sent < fast + slow.size() / 4,
        "{sent} bytes were sent, the slow layer's {} nearly whole",
        slow.size()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn output_problems_exit_2_naming_the_users_path_before_anything_is_fetched() {
    let img = sized_image(605, 1, 10_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let w = work.path();
    let image = format!("{}/{REPO}:v1", reg.host());
    std::fs::write(w.join("exists.tar"), b"old").unwrap();
    std::fs::create_dir(w.join("adir")).unwrap();
    let long = "a".repeat(240) + ".tar";
    let p = |name: &str| w.join(name).display().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            s(&["-o", &p("nope/out.tar")]),
            format!(
                "error: cannot write {}: the directory {} does not exist\n",
                p("nope/out.tar"),
                p("nope")
            ),
        ),
        (
            s(&["-o", &p(&long)]),
            format!(
                "error: cannot write {}: its name is 244 bytes long; this file system allows 255, and ferry needs 22 of them for the temporary name it writes under\n",
                p(&long)
            ),
        ),
        (
            s(&["-o", &p("exists.tar")]),
            format!(
                "error: cannot write {}: the file already exists\nhint: add --force to replace it, or choose another -o\n",
                p("exists.tar")
            ),
        ),
        (
            s(&["--format", "legacy", "-o", &p("exists.tar")]),
            format!(
                "error: cannot write {}: the file already exists\n",
                p("exists.tar")
            ),
        ),
        (
            s(&["-o", &p("adir")]),
            format!("error: {} is a directory; the archive needs a file name", p("adir")),
        ),
        (
            s(&["--format", "oci", "--force", "-o", &p("adir")]),
            format!(
                "error: cannot write {}: it exists and is not an OCI layout; --format oci writes a new directory\n",
                p("adir")
            ),
        ),
    ];
    for (extra, expected) in cases {
        let mut args = s(&["pull", &image]);
        args.extend(extra.iter().cloned());
        let o = run(&cache, &args).await;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(
            err.starts_with(&expected),
            "{extra:?}: expected {expected:?}, got {err}"
        );
        assert!(!err.contains(".ferry-tmp"), "{err}");
    }
    assert!(
        reg.requests().is_empty(),
        "the registry was asked: {:?}",
        reg.requests()
    );
    assert_eq!(std::fs::read(w.join("exists.tar")).unwrap(), b"old");
    assert!(leftovers(w).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_output_directory_exits_2_before_anything_is_fetched() {
    let img = sized_image(606, 1, 10_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let ro = work.path().join("ro");
    let Some(_mount) = Tmpfs::mount(&ro, "ro,size=1m") else {
        return;
    };
    let out = ro.join("a.tar");
    let o = pull_to(
        &work.path().join("cache"),
        &[&format!("{}/{REPO}:v1", reg.host())],
        &out,
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!(
            "error: cannot write {}: the directory {} is on a read-only file system\n",
            out.display(),
            ro.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(reg.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn long_references_get_a_shortened_default_name_that_fits() {
    let img = sized_image(607, 1, 10_000);
    let repo = format!("{}/{}", "a".repeat(100), "b".repeat(100));
    let tag = "t".repeat(100);
    let reg = fake_registry(FakeAuth::None, &repo, &[(&tag, &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let image = format!("{}/{repo}:{tag}", reg.host());
    for format in ["archive", "oci"] {
        let o = run_in(
            &work.path().join("cache"),
            &s(&["pull", "-q", "--format", format, &image]),
            Some(&cwd),
        )
        .await;
        assert_ok(&o);
    }
    let names = dir_names(&cwd);
    assert_eq!(names.len(), 2, "{names:?}");
    let prefix = format!("{}_{}", reg.host().replace(':', "_"), "a".repeat(50));
    for n in &names {
        assert!(n.len() <= 255 - 22, "{n} is {} bytes", n.len());
        assert!(n.starts_with(&prefix), "{n}");
    }
    assert!(names.iter().any(|n| n.ends_with(".tar")));
    assert!(cwd
        .join(names.iter().find(|n| !n.ends_with(".tar")).unwrap())
        .join("oci-layout")
        .is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn force_replaces_an_existing_output_in_every_format() {
    let one = sized_image(608, 1, 10_000);
    let two = sized_image(609, 1, 10_000);
    let reg = registry_with(&[("one", &one), ("two", &two)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let r1 = format!("{}/{REPO}:one", reg.host());
    let r2 = format!("{}/{REPO}:two", reg.host());
    for (format, name) in [("archive", "a.tar"), ("legacy", "l.tar"), ("oci", "layout")] {
        let out = work.path().join(name);
        let o = pull_to(&cache, &["-q", "--format", format, &r1], &out).await;
        assert_ok(&o);
        let o = pull_to(&cache, &["-q", "--format", format, &r2], &out).await;
        assert_eq!(o.status.code(), Some(2), "{format}: {}", stderr(&o));
        assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
        let o = pull_to(&cache, &["-q", "--force", "--format", format, &r2], &out).await;
        assert_ok(&o);
        // The second image's config is there now (and, for the layout, only its).
        let has = |img: &TestImage| {
            if format == "oci" {
                out.join(blob_name(&img.config.digest)).is_file()
            } else {
                let needle = if format == "legacy" {
                    format!("{}.json", img.config.digest.hex())
                } else {
                    blob_name(&img.config.digest)
                };
                tar_files(&out).iter().any(|(n, _)| *n == needle)
            }
        };
        assert!(has(&two), "{format}: not replaced");
        assert!(!has(&one), "{format}: the old output is still there");
    }
    assert!(
        leftovers(work.path()).is_empty(),
        "{:?}",
        leftovers(work.path())
    );
}

/// An image manifest declaring `sizes` for its layers (which the registry does not hold).
fn hostile_manifest(reg: &FakeRegistry, tag: &str, sizes: &[u64]) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = Digest::sha256_of(config);
    reg.put_blob(REPO, config_digest.clone(), Bytes::from_static(config));
    let layers: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": Digest::sha256_of(format!("{tag} {i}").as_bytes()).to_string(),
                "size": size,
            })
        })
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layers,
    });
    reg.put_manifest_raw(
        REPO,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        Bytes::from(serde_json::to_vec(&m).unwrap()),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_sizes_beyond_free_space_or_max_size_are_refused_before_the_output_exists() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    hostile_manifest(&reg, "huge", &[1 << 60]);
    hostile_manifest(&reg, "wraps", &[1 << 63, 1 << 63]);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let out = work.path().join("h.tar");
    let huge = format!("{}/{REPO}:huge", reg.host());
    let wraps = format!("{}/{REPO}:wraps", reg.host());
    let cases: [(&[&str], String); 4] = [
        (
            &[&huge],
            format!(
                "error: the image needs 2.00 EiB on the file system of {} (for the output and the cache), which has ",
                work.path().display()
            ),
        ),
        (
            &["--max-size", "1G", &huge],
            "error: the image declares 1.00 EiB, more than --max-size 1.00 GiB\n".into(),
        ),
        (
            &[&wraps],
            "error: the image's manifests declare sizes that add up to more than 16 EiB\n".into(),
        ),
        (
            &["--format", "oci", &huge],
            "error: the image needs 2.00 EiB on the file system of".into(),
        ),
    ];
    for (args, expected) in cases {
        let o = pull_to(&cache, args, &out).await;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        let first_error = &err[err.find("error:").unwrap_or(0)..];
        assert!(
            first_error.starts_with(&expected),
            "{args:?}: expected {expected:?} in {err}"
        );
    }
    // The sum is shown saturated, never wrapped to a small size.
    let o = pull_to(&cache, &[&wraps], &out).await;
    assert!(stderr(&o).contains("3 blobs, 16.00 EiB"), "{}", stderr(&o));
    assert_eq!(dir_names(work.path()), vec!["cache".to_string()]);
    // The small config may be read (for the platform check); no layer is asked for.
    let layers: Vec<String> = [("huge", 0), ("wraps", 0), ("wraps", 1)]
        .iter()
        .map(|(tag, i)| Digest::sha256_of(format!("{tag} {i}").as_bytes()).to_string())
        .collect();
    assert!(
        !reg.requests()
            .iter()
            .any(|r| layers.iter().any(|l| r.path.ends_with(l.as_str()))),
        "a layer was fetched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_on_the_output_names_the_output_not_a_blob() {
    let img = sized_image(610, 1, 3_000_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let small = work.path().join("small");
    let Some(_mount) = Tmpfs::mount(&small, "size=1m") else {
        return;
    };
    let image = format!("{}/{REPO}:v1", reg.host());
    for format in ["archive", "legacy", "oci"] {
        let cache = work.path().join(format!("cache-{format}"));
        let out = small.join("out");
        // --max-size stands in for the free-space check, which would refuse this early.
        let o = pull_to(
            &cache,
            &["-q", "--max-size", "1G", "--format", format, &image],
            &out,
        )
        .await;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{format}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: cannot write {}: the disk is full\n",
                out.display()
            )),
            "{format}: {err}"
        );
        assert!(
            err.contains("hint: free some space or choose another -o"),
            "{err}"
        );
        assert!(
            dir_names(&small).is_empty(),
            "{format}: {:?}",
            dir_names(&small)
        );
    }
    // The cache's disk full instead: named as the cache, with its own hint.
    let cache = small.join("cache");
    let out = work.path().join("elsewhere.tar");
    let o = pull_to(&cache, &["-q", "--max-size", "1G", &image], &out).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!(
            "error: cannot write to the cache {}: the disk is full\nhint: free some space, or use a cache elsewhere with --cache-dir\n",
            cache.display()
        )),
        "{err}"
    );
    assert!(!out.exists());
    // Standard output on a full device.
    let mut c = ferry_cmd(
        &work.path().join("cache-archive"),
        &["pull", "-q", &image, "-o", "-"],
    );
    c.stdout(Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    ));
    let o = run_cmd(c).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(
            "error: cannot write the archive to standard output: no space left on device\n"
        ),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_that_appears_during_the_pull_is_kept_without_force() {
    let img = sized_image(611, 1, 400_000);
    let reg = registry_with(&[("v1", &img)]).await;
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 400_000,
    });
    let work = tempfile::tempdir().unwrap();
    let image = format!("{}/{REPO}:v1", reg.host());
    for format in ["archive", "legacy"] {
        let cache = work.path().join(format!("cache-{format}"));
        let out = work.path().join(format!("{format}.tar"));
        let mut cmd = tokio::process::Command::from(ferry_cmd(
            &cache,
            &[
                "pull",
                "-q",
                "--format",
                format,
                &image,
                "-o",
                out.to_str().unwrap(),
            ],
        ));
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn ferry");
        let before = reg.blob_gets(&img.layers[0].digest);
        let deadline = Instant::now() + Duration::from_secs(10);
        while reg.blob_gets(&img.layers[0].digest) == before {
            assert!(Instant::now() < deadline, "the layer download never began");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Another program writes the same name meanwhile.
        std::fs::write(&out, b"someone else's").unwrap();
        let o = child.wait_with_output().await.unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{format}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: cannot write {}: it was created by something else while the image was pulled\n",
                out.display()
            )),
            "{format}: {err}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"someone else's");
    }
    assert!(
        leftovers(work.path()).is_empty(),
        "{:?}",
        leftovers(work.path())
    );
}
