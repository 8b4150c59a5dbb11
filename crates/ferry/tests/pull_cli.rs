//! `ferry pull`'s command-line behaviour: refusing bad input cleanly, output names, the
//! archive formats and their exact bytes, streaming, progress and help output.

mod common;

use common::*;
use ferry_testkit::fake::{FakeAuth, FakeRegistry};
use ferry_testkit::image::{derived_image, random_image, sized_image, ImageSpec, TestImage};
use serde_json::{json, Value};

const REPO: &str = "lib/app";

async fn registry_with(images: &[(&str, &TestImage)]) -> FakeRegistry {
    fake_registry(FakeAuth::None, REPO, images).await
}

#[test]
fn malformed_references_exit_2_naming_the_problem_and_touch_nothing() {
    let long = format!("{}/app:v1", "a".repeat(260));
    let cases: [(&str, &str); 7] = [
        ("Alpine:3.20", "must be lowercase"),
        ("library//alpine", "empty path component"),
        ("alpine/", "empty path component"),
        ("alpine@sha256:abc", "64 lowercase hex characters"),
        ("alpine@md5:0123", "not supported"),
        (&long, "over the limit of 255"),
        ("alpine:-bad", "tag \"-bad\" is invalid"),
    ];
    for (reference, sentence) in cases {
        let work = tempfile::tempdir().unwrap();
        let cache = work.path().join("cache");
        let cwd = work.path().join("cwd");
        std::fs::create_dir(&cwd).unwrap();
        let o = ferry_cmd(&cache, &["pull", reference])
            .current_dir(&cwd)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{reference}: {err}");
        assert!(err.starts_with("error: "), "{reference}: {err}");
        assert!(
            err.contains(sentence),
            "{reference}: expected {sentence:?} in {err}"
        );
        assert!(err.contains("hint:"), "{reference}: {err}");
        assert!(o.stdout.is_empty());
        assert!(
            dir_names(&cwd).is_empty(),
            "{reference} created {:?}",
            dir_names(&cwd)
        );
        assert!(!cache.exists(), "{reference} created the cache");
    }
}

#[test]
fn empty_reference_and_bad_flags_exit_2() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let cases: [(&[&str], &str); 6] = [
        (&["pull", ""], "empty"),
        (&["pull", "a", "b"], "several images need an output name"),
        (
            &["pull", "--format", "oci", "-o", "-", "a"],
            "cannot go to standard output",
        ),
        (
            &[
                "pull",
                "--all-platforms",
                "--format",
                "legacy",
                "-o",
                "x.tar",
                "a",
            ],
            "legacy",
        ),
        (&["pull", "--platform", "linux", "a"], "os/arch"),
        (
            &["pull", "--platform", "linux/amd64", "--all-platforms", "a"],
            "cannot be used with",
        ),
    ];
    for (args, sentence) in cases {
        let o = ferry_cmd(&cache, args)
            .current_dir(work.path())
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(sentence),
            "{args:?}: expected {sentence:?} in {err}"
        );
        assert!(!cache.exists(), "{args:?} created the cache");
    }
    assert_eq!(dir_names(work.path()), Vec::<String>::new());
    // An OCI layout is never written over an existing path; an archive never onto a directory.
    std::fs::create_dir(work.path().join("there")).unwrap();
    for fmt in ["oci", "archive"] {
        let o = ferry_cmd(&cache, &["pull", "--format", fmt, "-o", "there", "a"])
            .current_dir(work.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("there"), "{}", stderr(&o));
    }
}

#[test]
fn help_mentions_exit_codes() {
    let work = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["pull", "--help"][..]] {
        let o = ferry(work.path(), args);
        assert_ok(&o);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Exit codes"), "{args:?}: {text}");
        for line in ["2 ", "3 ", "4 ", "5 ", "6 ", "130"] {
            assert!(
                text.contains(line),
                "{args:?} lacks exit code {line}: {text}"
            );
        }
        assert!(text.contains("content did not match its digest"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn default_output_is_named_after_the_image_in_the_current_dir() {
    let img = sized_image(201, 2, 10_000);
    let reg = registry_with(&[("v1.2", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let o = run_in(
        &work.path().join("cache"),
        &s(&["pull", &format!("{}/{REPO}:v1.2", reg.host())]),
        Some(&cwd),
    )
    .await;
    assert_ok(&o);
    let port = reg.host().rsplit(':').next().unwrap().to_string();
    let want = format!("127.0.0.1_{port}_lib_app_v1.2.tar");
    assert_eq!(dir_names(&cwd), vec![want.clone()]);
    let entries = tar_map(&std::fs::read(cwd.join(&want)).unwrap());
    assert_eq!(
        entries[&blob_name(&img.layers[1].digest)],
        img.layers[1].bytes.to_vec()
    );
    assert!(
        stderr(&o).contains(&format!("wrote {want}")),
        "{}",
        stderr(&o)
    );

    // By digest only: the stem carries the short digest.
    let o = run_in(
        &work.path().join("cache"),
        &s(&[
            "pull",
            &format!("{}/{REPO}@{}", reg.host(), img.manifest_digest),
        ]),
        Some(&cwd),
    )
    .await;
    assert_ok(&o);
    let want2 = format!(
        "127.0.0.1_{port}_lib_app_{}.tar",
        img.manifest_digest.short()
    );
    assert!(dir_names(&cwd).contains(&want2), "{:?}", dir_names(&cwd));
}

#[tokio::test(flavor = "multi_thread")]
async fn same_image_twice_with_fresh_caches_gives_identical_archives() {
    let img = sized_image(202, 3, 20_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let mut archives = Vec::new();
    for (i, fmt) in [(0, "archive"), (1, "archive"), (2, "legacy"), (3, "legacy")] {
        let out = work.path().join(format!("{i}.tar"));
        let image = format!("{}/{REPO}:v1", reg.host());
        let cache = work.path().join(format!("cache{i}"));
        let o = pull_to(&cache, &["--format", fmt, &image], &out).await;
        assert_ok(&o);
        archives.push(std::fs::read(&out).unwrap());
    }
    assert!(
        archives[0] == archives[1],
        "the default archive differs between pulls"
    );
    assert!(
        archives[2] == archives[3],
        "the legacy archive differs between pulls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_images_share_blobs_stored_once() {
    let base = sized_image(203, 2, 30_000);
    let app = derived_image(&base, 204);
    let reg = registry_with(&[("base", &base), ("app", &app)]).await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("both.tar");
    let (base_ref, app_ref) = (
        format!("{}/{REPO}:base", reg.host()),
        format!("{}/{REPO}:app", reg.host()),
    );
    let o = pull_to(&work.path().join("cache"), &[&base_ref, &app_ref], &out).await;
    assert_ok(&o);
    assert_eq!(
        reg.blob_gets(&base.layers[0].digest),
        1,
        "the shared layer came twice"
    );
    let bytes = std::fs::read(&out).unwrap();
    let list = tar_list(&bytes);
    let entries = tar_map(&bytes); // panics on a duplicate name
    for (name, dir, data) in &list {
        if let (Some(hex), false) = (name.strip_prefix("blobs/sha256/"), dir) {
            assert_eq!(&sha256_hex(data), hex, "{name} does not verify");
        }
    }
    let blobs = list
        .iter()
        .filter(|(n, d, _)| !d && n.starts_with("blobs/"))
        .count();
    // 2 manifests + 2 configs + 3 distinct layers.
    assert_eq!(blobs, 7);
    let m: Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    let m = m.as_array().unwrap();
    assert_eq!(m.len(), 2);
    let host = reg.host();
    for (entry, (tag, img)) in m.iter().zip([("base", &base), ("app", &app)]) {
        assert_eq!(entry["RepoTags"], json!([format!("{host}/{REPO}:{tag}")]));
        assert_eq!(entry["Config"], blob_name(&img.config.digest));
        let layers: Vec<String> = img.layers.iter().map(|l| blob_name(&l.digest)).collect();
        assert_eq!(entry["Layers"], json!(layers));
    }
    let idx: Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    let names: Vec<&str> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["annotations"]["io.containerd.image.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        vec![format!("{host}/{REPO}:base"), format!("{host}/{REPO}:app")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_output_is_a_tar_identical_to_the_file() {
    let img = sized_image(205, 2, 20_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let file = work.path().join("app.tar");
    let r = format!("{}/{REPO}:v1", reg.host());
    let o = pull_to(&cache, &[&r], &file).await;
    assert_ok(&o);
    let o = run(&cache, &s(&["pull", &r, "-o", "-"])).await;
    assert_ok(&o);
    assert!(
        o.stdout == std::fs::read(&file).unwrap(),
        "stdout differs from the file"
    );
    let entries = tar_map(&o.stdout);
    assert!(entries.contains_key("manifest.json") && entries.contains_key("oci-layout"));
    assert!(!stderr(&o).contains("wrote"), "{}", stderr(&o));
    // Legacy goes to stdout too.
    let o = run(&cache, &s(&["pull", "--format", "legacy", &r, "-o", "-"])).await;
    assert_ok(&o);
    assert!(tar_map(&o.stdout).contains_key("repositories"));
    assert_eq!(
        dir_names(work.path()),
        vec!["app.tar".to_string(), "cache".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_format_writes_a_valid_layout_directory() {
    let img = sized_image(206, 2, 20_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("layout");
    let image = format!("{}/{REPO}:v1", reg.host());
    let o = pull_to(
        &work.path().join("cache"),
        &["--format", "oci", &image],
        &out,
    )
    .await;
    assert_ok(&o);
    let layout: Value =
        serde_json::from_slice(&std::fs::read(out.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout, json!({"imageLayoutVersion": "1.0.0"}));
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let ms = index["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0]["digest"], img.manifest_digest.to_string());
    assert_eq!(ms[0]["size"], img.manifest.len());
    assert_eq!(ms[0]["mediaType"], img.manifest_media_type);
    assert_eq!(
        ms[0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    let names = dir_names(&out.join("blobs/sha256"));
    assert_eq!(names.len(), 4, "{names:?}");
    for n in &names {
        let b = std::fs::read(out.join("blobs/sha256").join(n)).unwrap();
        assert_eq!(&sha256_hex(&b), n, "blob {n} does not verify");
    }
    for b in img.blobs() {
        assert!(names.contains(&b.digest.hex().to_string()));
    }
    assert_eq!(dir_names(&out), vec!["blobs", "index.json", "oci-layout"]);
    assert_eq!(dir_names(work.path()), vec!["cache", "layout"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_format_has_uncompressed_layers_matching_the_diff_ids() {
    let img = random_image(&ImageSpec {
        seed: 207,
        layers: 3,
        layer_size: 20_000,
        docker_media_types: true,
        ..ImageSpec::default()
    });
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("legacy.tar");
    let image = format!("{}/{REPO}:v1", reg.host());
    let o = pull_to(
        &work.path().join("cache"),
        &["--format", "legacy", &image],
        &out,
    )
    .await;
    assert_ok(&o);
    let entries = tar_map(&std::fs::read(&out).unwrap());
    let m: Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    let m = m.as_array().unwrap();
    assert_eq!(m.len(), 1);
    let cfg_name = format!("{}.json", img.config.digest.hex());
    assert_eq!(m[0]["Config"], cfg_name);
    assert_eq!(entries[&cfg_name], img.config.bytes.to_vec());
    assert_eq!(
        m[0]["RepoTags"],
        json!([format!("{}/{REPO}:v1", reg.host())])
    );
    let layers = m[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let mut ids = Vec::new();
    for (l, diff_id) in layers.iter().zip(&img.diff_ids) {
        let name = l.as_str().unwrap();
        let id = name.strip_suffix("/layer.tar").expect("<id>/layer.tar");
        assert_eq!(id.len(), 64);
        assert_eq!(sha256_hex(&entries[name]), diff_id.hex(), "{name}");
        let v1: Value = serde_json::from_slice(&entries[&format!("{id}/json")]).unwrap();
        assert_eq!(v1["id"], id);
        assert_eq!(v1["parent"].as_str(), ids.last().map(String::as_str));
        assert_eq!(entries[&format!("{id}/VERSION")], b"1.0".to_vec());
        ids.push(id.to_string());
    }
    let repos: Value = serde_json::from_slice(&entries["repositories"]).unwrap();
    assert_eq!(repos[format!("{}/{REPO}", reg.host())]["v1"], ids[2]);
    assert!(!entries.keys().any(|k| k.starts_with("blobs/")));
}

/// Sum of headers, padded contents and the two end blocks, from the raw header blocks.
fn tar_framed_len(bytes: &[u8]) -> u64 {
    let mut pos = 0usize;
    loop {
        let h = &bytes[pos..pos + 512];
        if h.iter().all(|&b| b == 0) {
            let end = &bytes[pos..];
            assert_eq!(end.len(), 1024, "data after the end blocks");
            assert!(end.iter().all(|&b| b == 0), "end blocks are not zero");
            return (pos + 1024) as u64;
        }
        let header = tar::Header::from_byte_slice(h);
        let size = header.entry_size().unwrap() as usize;
        pos += 512 + size.div_ceil(512) * 512;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_length_is_exactly_its_entries_and_end_blocks() {
    let img = sized_image(208, 3, 7_777);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    for fmt in ["archive", "legacy"] {
        let out = work.path().join(format!("{fmt}.tar"));
        let image = format!("{}/{REPO}:v1", reg.host());
        let o = pull_to(&work.path().join("cache"), &["--format", fmt, &image], &out).await;
        assert_ok(&o);
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        assert_eq!(tar_framed_len(&bytes), bytes.len() as u64, "{fmt}");
        // Fixed header fields: owner root, time 0.
        let mut a = tar::Archive::new(&bytes[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 0);
            assert_eq!(e.header().uid().unwrap(), 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_prints_nothing_on_success() {
    let img = sized_image(209, 2, 10_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("a.tar");
    let image = format!("{}/{REPO}:v1", reg.host());
    let o = pull_to(&work.path().join("cache"), &["-q", &image], &out).await;
    assert_ok(&o);
    assert_eq!(stderr(&o), "");
    assert!(o.stdout.is_empty());
    assert!(out.is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_off_a_terminal_is_plain_lines() {
    let img = sized_image(210, 2, 10_000);
    let reg = registry_with(&[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let out = work.path().join("a.tar");
    let r = format!("{}/{REPO}:v1", reg.host());
    let o = pull_to(&cache, &[&r], &out).await;
    assert_ok(&o);
    let err = stderr(&o);
    assert!(
        !err.contains('\x1b') && !err.contains('\r'),
        "terminal codes: {err:?}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{r} → sha256:{}", img.manifest_digest.short()))
            && lines[0].contains("3 blobs"),
        "{err}"
    );
    for b in img.blobs() {
        assert!(
            err.contains(&format!("{} downloading", b.digest.short())),
            "{err}"
        );
        assert!(err.contains(&format!("{} done", b.digest.short())), "{err}");
    }
    assert_eq!(
        lines.last().copied(),
        Some(format!("wrote {}", out.display()).as_str())
    );
    // Again, everything cached.
    let o = pull_to(&cache, &["--force", &r], &out).await;
    assert_ok(&o);
    let err = stderr(&o);
    assert_eq!(err.matches(" cached (").count(), 3, "{err}");
    assert!(!err.contains("downloading"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn password_on_the_command_line_warns() {
    let img = sized_image(211, 1, 2_000);
    let reg = fake_registry(basic_auth("u", "pw"), REPO, &[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let out = work.path().join("a.tar");
    let image = format!("{}/{REPO}:v1", reg.host());
    let o = pull_to(&cache, &["-u", "u", "-p", "pw", &image], &out).await;
    assert_ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("warning:") && err.contains("--password-stdin"),
        "{err}"
    );
    assert!(out.is_file());
    // --username without any password source and no terminal: a usage error.
    let o = pull_to(&cache, &["--force", "-u", "u", &image], &out).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--password-stdin"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_password_on_stdin_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let mut c = ferry_cmd(
        &work.path().join("cache"),
        &[
            "pull",
            "-u",
            "u",
            "--password-stdin",
            "127.0.0.1:1/x:y",
            "-o",
            "a.tar",
        ],
    );
    c.current_dir(work.path());
    let o = run_with_stdin(c, b"\n");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("empty password"), "{}", stderr(&o));
    assert!(!work.path().join("a.tar").exists());
}
