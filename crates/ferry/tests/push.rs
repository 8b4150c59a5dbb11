//! `ferry push` against a real docker-registry: round trips that keep digests, archives of
//! other tools, compressed-on-the-way layers, skips and mounts, and damaged archives that
//! must fail before any tag is written.

mod common;

use std::path::Path;

use common::*;
use ferry_core::media;
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::{random_image, random_index, ImageSpec, TestImage};
use ferry_testkit::real::{self, RealRegistry, RegistryAuth};

fn registry() -> Option<RealRegistry> {
    let reg = RealRegistry::start(RegistryAuth::Anonymous)?;
    real::tool("skopeo")?;
    Some(reg)
}

fn image(seed: u64) -> TestImage {
    random_image(&ImageSpec {
        seed,
        layers: 3,
        layer_size: 200_000,
        ..Default::default()
    })
}

/// `ferry push -q ARGS..`; stdout is the digest.
fn push(cache: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["push", "-q"];
    all.extend_from_slice(args);
    ferry(cache, &all)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The digest a tag names (`ferry digest`), `None` when the registry lacks it.
fn digest_of(cache: &Path, reference: &str) -> Option<String> {
    let out = ferry(cache, &["digest", reference]);
    out.status.success().then(|| stdout(&out))
}

fn inspect(target: &str, extra: &[&str]) -> serde_json::Value {
    let mut all = vec!["--tls-verify=false"];
    all.extend_from_slice(extra);
    real::skopeo_inspect(target, &all).unwrap_or_else(|e| panic!("skopeo inspect {target}: {e}"))
}

/// Request lines of the registry's log that upload blob bytes (PATCH, or a PUT with a body
/// to an upload session): docker-registry logs every request it serves.
fn blob_uploads(reg: &RealRegistry) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains("/blobs/uploads/") && (l.contains("PATCH") || l.contains("\"PUT")))
        .count()
}

#[test]
fn pulled_then_pushed_image_keeps_its_digest_and_pulls_back_identical() {
    let Some(reg) = registry() else { return };
    let img = image(701);
    push_with_skopeo(&reg, "src/app:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let first = work.path().join("first.tar");
    assert_ok(&pull_quiet(
        &cache,
        &[&format!("{}/src/app:v1", reg.host)],
        &first,
    ));

    let digestfile = work.path().join("digest");
    let out = push(
        &cache,
        &[
            first.to_str().unwrap(),
            &format!("{}/dst/app:v1", reg.host),
            "--tag",
            "extra",
            "--digestfile",
            digestfile.to_str().unwrap(),
        ],
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), img.manifest_digest.to_string());
    assert_eq!(
        std::fs::read_to_string(&digestfile).unwrap().trim(),
        img.manifest_digest.to_string()
    );
    for tag in ["v1", "extra"] {
        assert_eq!(
            digest_of(&cache, &format!("{}/dst/app:{tag}", reg.host)),
            Some(img.manifest_digest.to_string()),
            "{tag}"
        );
    }
    let second = work.path().join("second.tar");
    assert_ok(&pull_quiet(
        &work.path().join("cache2"),
        &[&format!("{}/dst/app:v1", reg.host)],
        &second,
    ));
    // The same manifest and blobs; only the recorded name differs.
    let a = tar_files(&first);
    let b = tar_files(&second);
    let blobs = |f: &[(String, Vec<u8>)]| {
        f.iter()
            .filter(|(n, _)| n.starts_with("blobs/"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(blobs(&a), blobs(&b));
}

#[test]
fn a_second_push_skips_every_blob_and_another_repository_mounts_them() {
    let Some(reg) = registry() else { return };
    let img = image(702);
    push_with_skopeo(&reg, "src/app:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("a.tar");
    assert_ok(&pull_quiet(
        &cache,
        &[&format!("{}/src/app:v1", reg.host)],
        &archive,
    ));
    let a = archive.to_str().unwrap();

    let before = blob_uploads(&reg);
    let out = ferry(&cache, &["push", a, &format!("{}/src/app:v2", reg.host)]);
    assert_ok(&out);
    assert_eq!(
        blob_uploads(&reg),
        before,
        "every blob was held: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("nothing to upload"),
        "{}",
        stderr(&out)
    );

    // Another repository: what the first push stored is remembered in the cache, so the
    // blobs are mounted from src/app, not sent.
    let out = ferry(&cache, &["push", a, &format!("{}/other/app:v1", reg.host)]);
    assert_ok(&out);
    assert_eq!(
        blob_uploads(&reg),
        before,
        "mounted, not uploaded:\n{}",
        reg.log()
    );
    assert_eq!(
        stderr(&out).matches(" mounted (").count(),
        4,
        "{}",
        stderr(&out)
    );
    // A cache that knows nothing uploads: the count above is not blind.
    let out = ferry(
        &work.path().join("fresh"),
        &["push", a, &format!("{}/third/app:v1", reg.host)],
    );
    assert_ok(&out);
    assert_eq!(blob_uploads(&reg), before + 4, "{}", reg.log());
}

#[test]
fn copy_within_one_registry_mounts_every_blob_and_keeps_the_digest() {
    let Some(reg) = registry() else { return };
    let img = image(703);
    push_with_skopeo(&reg, "src/app:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let before = blob_uploads(&reg);
    let out = ferry(
        &work.path().join("cache"),
        &[
            "copy",
            "-q",
            &format!("docker://{}/src/app:v1", reg.host),
            &format!("docker://{}/copied/app:v1", reg.host),
        ],
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), img.manifest_digest.to_string());
    assert_eq!(
        blob_uploads(&reg),
        before,
        "mounted, not uploaded:\n{}",
        reg.log()
    );
    // No layer was downloaded either.
    for l in &img.layers {
        let p = work.path().join("cache").join(blob_name(&l.digest));
        assert!(!p.exists(), "{} was downloaded", l.digest);
    }
}

#[test]
fn all_platforms_archive_pushes_its_index_byte_for_byte() {
    let Some(reg) = registry() else { return };
    let plats: Vec<ferry_core::Platform> = ["linux/amd64", "linux/arm64"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let idx = random_index(704, &plats, false);
    push_index_with_skopeo(&reg, "src/multi:v1", &idx, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("multi.tar");
    assert_ok(&pull_quiet(
        &cache,
        &["--all-platforms", &format!("{}/src/multi:v1", reg.host)],
        &archive,
    ));
    let a = archive.to_str().unwrap();
    let out = push(
        &cache,
        &["--all-platforms", a, &format!("{}/dst/multi:v1", reg.host)],
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), idx.digest.to_string());
    // One platform alone: that platform's manifest, as it was.
    let out = push(
        &cache,
        &[
            "--platform",
            "linux/arm64",
            a,
            &format!("{}/dst/one:v1", reg.host),
        ],
    );
    assert_ok(&out);
    assert_eq!(stdout(&out), idx.images[1].manifest_digest.to_string());
    // Pulled back whole, the archive holds the same blobs.
    let back = work.path().join("back.tar");
    assert_ok(&pull_quiet(
        &work.path().join("cache2"),
        &["--all-platforms", &format!("{}/dst/multi:v1", reg.host)],
        &back,
    ));
    let blobs = |p: &Path| {
        tar_files(p)
            .into_iter()
            .filter(|(n, _)| n.starts_with("blobs/"))
            .collect::<Vec<_>>()
    };
    assert_eq!(blobs(&archive), blobs(&back));
}

#[test]
fn legacy_archive_pushes_with_layers_compressed_and_config_diff_ids_matching() {
    let Some(reg) = registry() else { return };
    let img = image(705);
    push_with_skopeo(&reg, "src/legacy:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("legacy.tar");
    assert_ok(&pull_quiet(
        &cache,
        &["--format", "legacy", &format!("{}/src/legacy:v1", reg.host)],
        &archive,
    ));
    let target = format!("{}/dst/legacy:v1", reg.host);
    let out = push(&cache, &[archive.to_str().unwrap(), &target]);
    assert_ok(&out);
    let digest = stdout(&out);
    let docker = format!("docker://{target}");
    let raw = inspect(&docker, &["--raw"]);
    assert_eq!(raw["mediaType"], media::DOCKER_MANIFEST);
    assert_eq!(
        raw["config"]["digest"],
        img.config.digest.to_string(),
        "the config as it was"
    );
    for l in raw["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], media::DOCKER_LAYER_GZIP);
    }
    let config = inspect(&docker, &["--config"]);
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!(digests(&img.diff_ids))
    );
    // skopeo reads every layer back and checks it against its digest.
    let copy = work.path().join("copy");
    real::skopeo_copy(
        &docker,
        &format!("oci:{}", copy.display()),
        &["--src-tls-verify=false"],
    )
    .expect("skopeo copy of the pushed image");

    // Pushed again (to another tag), nothing is compressed or sent again: the cache
    // remembers what each layer compressed to, and the registry has it.
    let before = blob_uploads(&reg);
    let out = push(
        &cache,
        &[
            archive.to_str().unwrap(),
            &format!("{}/dst/legacy:v2", reg.host),
        ],
    );
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        digest,
        "the same bytes make the same manifest"
    );
    assert_eq!(blob_uploads(&reg), before);
    // A target without a tag takes the image's own (v1, from the archive).
    let out = push(
        &cache,
        &[archive.to_str().unwrap(), &format!("{}/untagged", reg.host)],
    );
    assert_ok(&out);
    assert_eq!(
        digest_of(&cache, &format!("{}/untagged:v1", reg.host)),
        Some(digest)
    );
}

/// Flip one byte `at` bytes into the content of archive entry `name`.
fn damage_entry(archive: &Path, name: &str, at: u64) {
    let bytes = std::fs::read(archive).unwrap();
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut offset = None;
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            offset = Some(e.raw_file_position());
        }
    }
    let pos = (offset.unwrap_or_else(|| panic!("no {name} in the archive")) + at) as usize;
    let mut bytes = bytes;
    bytes[pos] ^= 0x55;
    std::fs::write(archive, bytes).unwrap();
}

#[test]
fn a_damaged_layer_fails_the_push_and_no_tag_is_written() {
    let Some(reg) = registry() else { return };
    let img = image(706);
    push_with_skopeo(&reg, "src/bad:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    for (format, n) in [("archive", 0), ("legacy", 1)] {
        let archive = work.path().join(format!("{format}.tar"));
        assert_ok(&pull_quiet(
            &cache,
            &["--format", format, &format!("{}/src/bad:v1", reg.host)],
            &archive,
        ));
        let entry = match format {
            "archive" => blob_name(&img.layers[1].digest),
            _ => {
                let files = tar_files(&archive);
                let m = tar_json(&files, "manifest.json");
                m[0]["Layers"][1].as_str().unwrap().to_string()
            }
        };
        damage_entry(&archive, &entry, 1000);
        let target = format!("{}/dst/bad{n}:v1", reg.host);
        let out = ferry(
            &work.path().join("fresh"),
            &["push", "-q", archive.to_str().unwrap(), &target],
        );
        assert_eq!(out.status.code(), Some(6), "{format}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("is damaged: what it holds does not match its manifest and config"),
            "{err}"
        );
        let cause = match format {
            "archive" => "does not match its digest",
            _ => "but the image config's diff_ids say",
        };
        assert!(err.contains(cause), "{format}: {err}");
        assert!(err.contains("no manifest was stored"), "{err}");
        assert_eq!(
            digest_of(&cache, &target),
            None,
            "{format}: the tag must not exist"
        );
    }
}

#[test]
fn a_manifest_naming_a_missing_blob_fails_before_anything_is_pushed() {
    let Some(reg) = registry() else { return };
    let img = image(707);
    push_with_skopeo(&reg, "src/missing:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let layout = work.path().join("layout");
    assert_ok(&pull_quiet(
        &cache,
        &["--format", "oci", &format!("{}/src/missing:v1", reg.host)],
        &layout,
    ));
    std::fs::remove_file(layout.join(blob_name(&img.layers[0].digest))).unwrap();
    let target = format!("{}/dst/missing:v1", reg.host);
    let before = blob_uploads(&reg);
    let out = push(&cache, &[layout.to_str().unwrap(), &target]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&img.layers[0].digest.hex()[..12]),
        "{}",
        stderr(&out)
    );
    assert_eq!(blob_uploads(&reg), before);
    assert_eq!(digest_of(&cache, &target), None);
}

#[test]
fn podman_and_skopeo_archives_push_and_read_back_with_matching_diff_ids() {
    let Some(reg) = registry() else { return };
    let Some(podman) = real::Podman::new() else {
        return;
    };
    let img = image(708);
    push_with_skopeo(&reg, "src/tools:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let src = format!("docker://{}/src/tools:v1", reg.host);
    let skopeo_archive = work.path().join("skopeo.tar");
    real::skopeo_copy(
        &src,
        &format!("docker-archive:{}:src/tools:v1", skopeo_archive.display()),
        &["--src-tls-verify=false"],
    )
    .expect("skopeo copy to docker-archive");
    let auth = podman.dir.join("auth.json");
    std::fs::write(&auth, "{}").unwrap();
    podman
        .run(&["pull", "--tls-verify=false", &src])
        .expect("podman pull");
    let name = format!("{}/src/tools:v1", reg.host);
    let mut archives = vec![("skopeo", skopeo_archive)];
    for format in ["docker-archive", "oci-archive"] {
        let path = work.path().join(format!("podman-{format}.tar"));
        podman
            .run(&[
                "save",
                "--format",
                format,
                "-o",
                path.to_str().unwrap(),
                &name,
            ])
            .expect("podman save");
        archives.push((format, path));
    }
    for (what, archive) in archives {
        let target = format!("{}/dst/{what}:v1", reg.host);
        let out = push(&cache, &[archive.to_str().unwrap(), &target]);
        assert_ok(&out);
        let docker = format!("docker://{target}");
        let config = inspect(&docker, &["--config"]);
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!(digests(&img.diff_ids)),
            "{what}"
        );
        // podman pulls it (every layer checked against its digest and diff_id).
        podman
            .run(&["pull", "--tls-verify=false", &docker])
            .unwrap_or_else(|e| panic!("podman pull of what {what} pushed: {e}"));
    }
}

#[test]
fn all_pushes_each_image_to_its_own_name_and_image_chooses_one() {
    let Some(reg) = registry() else { return };
    let (one, two) = (image(709), image(710));
    push_with_skopeo(&reg, "src/one:v1", &one, None);
    push_with_skopeo(&reg, "src/two:v2", &two, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("both.tar");
    assert_ok(&pull_quiet(
        &cache,
        &[
            &format!("{}/src/one:v1", reg.host),
            &format!("{}/src/two:v2", reg.host),
        ],
        &archive,
    ));
    let a = archive.to_str().unwrap();
    // Two images and no choice: refused, listing them.
    let out = push(&cache, &[a, &format!("{}/x/y:1", reg.host)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("choose one with --image"),
        "{}",
        stderr(&out)
    );

    let out = push(&cache, &["--all", a, &format!("{}/mirror", reg.host)]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "{h}/mirror/src/one@{}\n{h}/mirror/src/two@{}",
            one.manifest_digest,
            two.manifest_digest,
            h = reg.host
        )
    );
    assert_eq!(
        digest_of(&cache, &format!("{}/mirror/src/two:v2", reg.host)),
        Some(two.manifest_digest.to_string())
    );

    // Small chunks: the second image in PATCH requests of 64 KiB, read back intact.
    // (A fresh cache: one that knows where the blobs are would mount them.)
    let patches = |reg: &RealRegistry| reg.log().matches("\"PATCH ").count();
    let before = patches(&reg);
    let out = push(
        &work.path().join("fresh"),
        &[
            "--image",
            "1",
            "--chunk-size",
            "64K",
            a,
            &format!("{}/chunked/two:v2", reg.host),
        ],
    );
    assert_ok(&out);
    let big: u64 = two.layers.iter().map(|l| l.size() / 65536).sum();
    assert!(patches(&reg) - before >= big as usize, "{}", reg.log());
    assert_eq!(stdout(&out), two.manifest_digest.to_string());
    let copy = work.path().join("copy");
    real::skopeo_copy(
        &format!("docker://{}/chunked/two:v2", reg.host),
        &format!("oci:{}", copy.display()),
        &["--src-tls-verify=false"],
    )
    .expect("skopeo reads every blob back");
}

/// An image of one layer big enough to be cut mid-way.
fn big_image(seed: u64) -> TestImage {
    random_image(&ImageSpec {
        seed,
        layers: 1,
        layer_size: 1_500_000,
        ..Default::default()
    })
}

/// Whether an upload was answered 500 (the cut) and its session asked where it stood.
fn was_cut(reg: &FakeRegistry) -> bool {
    let r = reg.requests();
    let uploads = |m: &str| {
        r.iter()
            .filter(|q| q.method == m && q.path.contains("/blobs/uploads/"))
            .collect::<Vec<_>>()
    };
    uploads("PATCH")
        .iter()
        .chain(&uploads("PUT"))
        .any(|q| q.status == 500)
        && !uploads("GET").is_empty()
}

async fn pull_from(reg: &FakeRegistry, cache: &Path, extra: &[&str], out: &Path) {
    let mut args = vec!["pull", "-q"];
    args.extend_from_slice(extra);
    let reference = format!("{}/src/app:v1", reg.host());
    args.extend([reference.as_str(), "-o", out.to_str().unwrap()]);
    let out = run(cache, &s(&args)).await;
    assert_ok(&out);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cut_mid_blob_resumes_from_the_registrys_offset() {
    let img = big_image(720);
    let reg = fake_registry(FakeAuth::None, "src/app", &[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a.tar");
    pull_from(&reg, &work.path().join("cache"), &[], &archive).await;

    // The config's body comes first (-j 1) and is too short to cut; the layer's is cut.
    reg.add_fault(Fault::CutUpload {
        after: 400_000,
        times: 2,
    });
    let before = reg.upload_bytes();
    // A fresh cache: one that knows where the blobs are would mount them.
    let target = format!("{}/dst/app:v1", reg.host());
    let out = run(
        &work.path().join("fresh"),
        &s(&[
            "push",
            "-q",
            "-j",
            "1",
            "--chunk-size",
            "1M",
            archive.to_str().unwrap(),
            &target,
        ]),
    )
    .await;
    assert_ok(&out);
    assert_eq!(stdout(&out), img.manifest_digest.to_string());
    for b in img.blobs() {
        assert_eq!(
            reg.blob("dst/app", &b.digest).as_deref(),
            Some(&b.bytes[..])
        );
    }
    assert!(was_cut(&reg), "{:?}", reg.requests());
    // Nothing was sent twice: the bytes kept before the cut were not sent again.
    let blobs: u64 = img.blobs().map(|b| b.size()).sum();
    assert_eq!(
        reg.upload_bytes() - before,
        blobs + img.manifest.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_compressed_on_the_way_resumes_after_a_cut_with_the_same_bytes() {
    let img = big_image(721);
    let reg = fake_registry(FakeAuth::None, "src/app", &[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("legacy.tar");
    pull_from(
        &reg,
        &work.path().join("cache"),
        &["--format", "legacy"],
        &archive,
    )
    .await;

    reg.add_fault(Fault::CutUpload {
        after: 100_000,
        times: 2,
    });
    let before = reg.upload_bytes();
    let target = format!("{}/dst/app:v1", reg.host());
    let out = run(
        &work.path().join("fresh"),
        &s(&[
            "push",
            "-q",
            "-j",
            "1",
            "--chunk-size",
            "256K",
            archive.to_str().unwrap(),
            &target,
        ]),
    )
    .await;
    assert_ok(&out);
    let (_, manifest) = reg.manifest("dst/app", "v1").expect("the tag exists");
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = &m["layers"][0];
    assert_eq!(layer["mediaType"], media::DOCKER_LAYER_GZIP);
    let digest: ferry_core::Digest = layer["digest"].as_str().unwrap().parse().unwrap();
    let blob = reg.blob("dst/app", &digest).expect("the layer is held");
    assert_eq!(layer["size"], blob.len() as u64);
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&blob[..]), &mut tar).unwrap();
    assert_eq!(ferry_core::Digest::sha256_of(&tar), img.diff_ids[0]);
    assert!(was_cut(&reg), "{:?}", reg.requests());
    // The compressed bytes after the cut continued the ones before it: nothing twice.
    assert_eq!(
        reg.upload_bytes() - before,
        blob.len() as u64 + img.config.size() + manifest.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_refuses_chunks_gets_whole_blobs() {
    let img = big_image(722);
    let reg = fake_registry(FakeAuth::None, "src/app", &[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a.tar");
    pull_from(&reg, &work.path().join("cache"), &[], &archive).await;
    reg.add_fault(Fault::RejectPatch);
    let target = format!("{}/dst/app:v1", reg.host());
    let out = run(
        &work.path().join("fresh"),
        &s(&[
            "push",
            "-q",
            "--chunk-size",
            "64K",
            archive.to_str().unwrap(),
            &target,
        ]),
    )
    .await;
    assert_ok(&out);
    assert_eq!(stdout(&out), img.manifest_digest.to_string());
    assert!(
        reg.requests()
            .iter()
            .any(|q| q.method == "PATCH" && q.status == 405),
        "a chunk was tried and refused first"
    );
    for b in img.blobs() {
        assert_eq!(
            reg.blob("dst/app", &b.digest).as_deref(),
            Some(&b.bytes[..])
        );
    }
}

#[test]
fn a_gzip_wrapped_archive_pushes_and_an_unknown_image_name_is_not_found() {
    let Some(reg) = registry() else { return };
    let img = image(711);
    push_with_skopeo(&reg, "src/wrapped:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("a.tar");
    assert_ok(&pull_quiet(
        &cache,
        &[&format!("{}/src/wrapped:v1", reg.host)],
        &archive,
    ));
    let wrapped = work.path().join("a.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&wrapped).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut std::fs::File::open(&archive).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    let w = wrapped.to_str().unwrap();
    let out = push(&cache, &[w, &format!("{}/dst/wrapped:v1", reg.host)]);
    assert_ok(&out);
    assert_eq!(stdout(&out), img.manifest_digest.to_string());

    let out = push(
        &cache,
        &["--image", "nosuch:1", w, &format!("{}/dst/x:1", reg.host)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds no image \"nosuch:1\""),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platform_asked_for_that_a_single_image_archive_lacks_is_refused() {
    let img = image(723);
    let reg = fake_registry(FakeAuth::None, "src/app", &[("v1", &img)]).await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a.tar");
    pull_from(&reg, &work.path().join("cache"), &[], &archive).await;
    let other = if img.platform.architecture == "s390x" {
        "linux/ppc64le"
    } else {
        "linux/s390x"
    };
    let target = format!("{}/dst/app:v1", reg.host());
    let out = run(
        &work.path().join("cache"),
        &s(&[
            "push",
            "-q",
            "--platform",
            other,
            archive.to_str().unwrap(),
            &target,
        ]),
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("is an image for {}, not {other}", img.platform)),
        "{}",
        stderr(&out)
    );
    assert!(reg.manifest("dst/app", "v1").is_none());
}

#[test]
fn push_and_copy_with_credentials_on_token_and_htpasswd_registries() {
    const USER: &str = "pusher";
    const PASS: &str = "p4ss:word";
    for auth in [
        RegistryAuth::Htpasswd {
            user: USER.into(),
            pass: PASS.into(),
        },
        RegistryAuth::Token {
            user: USER.into(),
            pass: PASS.into(),
        },
    ] {
        let Some(reg) = RealRegistry::start(auth.clone()) else {
            return;
        };
        if real::tool("skopeo").is_none() {
            return;
        }
        let img = image(712);
        push_with_skopeo(&reg, "src/private:v1", &img, Some((USER, PASS)));
        let work = tempfile::tempdir().unwrap();
        let cache = work.path().join("cache");
        let archive = work.path().join("a.tar");
        let creds = ["--username", USER, "--password-stdin"];
        let mut pull = vec!["pull", "-q", "-o", archive.to_str().unwrap()];
        pull.extend(creds);
        let src = format!("{}/src/private:v1", reg.host);
        pull.push(&src);
        assert_ok(&run_with_stdin(ferry_cmd(&cache, &pull), PASS.as_bytes()));

        // Without credentials: refused (exit 4), nothing stored.
        let dst = format!("{}/dst/private:v1", reg.host);
        let out = push(&cache, &[archive.to_str().unwrap(), &dst]);
        assert_eq!(out.status.code(), Some(4), "{auth:?}: {}", stderr(&out));

        let mut args = vec!["push", "-q"];
        args.extend(creds);
        args.extend([archive.to_str().unwrap(), dst.as_str()]);
        let out = run_with_stdin(ferry_cmd(&cache, &args), PASS.as_bytes());
        assert_ok(&out);
        assert_eq!(stdout(&out), img.manifest_digest.to_string());
        assert!(!stderr(&out).contains(PASS));

        // A copy within the registry mounts with a token that also reads the source.
        let mut args = vec!["copy", "-q"];
        args.extend(creds);
        let (from, to) = (
            format!("docker://{dst}"),
            format!("docker://{}/third/private:v1", reg.host),
        );
        args.extend([from.as_str(), to.as_str()]);
        let out = run_with_stdin(ferry_cmd(&cache, &args), PASS.as_bytes());
        assert_ok(&out);
        assert_eq!(stdout(&out), img.manifest_digest.to_string(), "{auth:?}");
    }
}

#[test]
fn an_oci_layout_with_uncompressed_layers_pushes_with_an_oci_manifest_naming_gzip_layers() {
    // What docker save writes from Docker 25 on: an OCI layout, layers as plain tars.
    let Some(reg) = registry() else { return };
    let img = image(713);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let tars: Vec<Vec<u8>> = img
        .layers
        .iter()
        .map(|l| {
            let mut t = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&l.bytes[..]), &mut t)
                .unwrap();
            t
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": img.config.digest.to_string(), "size": img.config.size()},
        "layers": tars.iter().map(|t| serde_json::json!({
            "mediaType": media::OCI_LAYER_TAR,
            "digest": real::sha256_digest(t),
            "size": t.len(),
        })).collect::<Vec<_>>(),
        "annotations": {"org.example.kept": "yes"},
    }))
    .unwrap();
    let mut blobs: Vec<(String, &[u8])> =
        vec![(img.config.digest.to_string(), &img.config.bytes[..])];
    blobs.extend(tars.iter().map(|t| (real::sha256_digest(t), &t[..])));
    real::write_oci_layout(&layout, media::OCI_MANIFEST, &manifest, &blobs).unwrap();

    let target = format!("{}/dst/docker25:v1", reg.host);
    let out = push(
        &work.path().join("cache"),
        &[layout.to_str().unwrap(), &target],
    );
    assert_ok(&out);
    let docker = format!("docker://{target}");
    let raw = inspect(&docker, &["--raw"]);
    assert_eq!(raw["mediaType"], media::OCI_MANIFEST);
    assert_eq!(raw["annotations"]["org.example.kept"], "yes");
    for l in raw["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], media::OCI_LAYER_GZIP);
    }
    let config = inspect(&docker, &["--config"]);
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!(digests(&img.diff_ids))
    );
    let copy = work.path().join("copy");
    real::skopeo_copy(
        &docker,
        &format!("oci:{}", copy.display()),
        &["--src-tls-verify=false"],
    )
    .expect("skopeo reads every layer back");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_with_an_attestation_pushes_whole_and_keeps_its_digest() {
    use ferry_testkit::image::{artifact, entry_of, raw_index};
    let img = image(724);
    let att = artifact(725, media::OCI_CONFIG, None, "application/vnd.in-toto+json");
    let unknown: ferry_core::Platform = "unknown/unknown".parse().unwrap();
    let idx = raw_index(
        media::OCI_INDEX,
        vec![
            entry_of(&img, Some(&img.platform)),
            entry_of(&att, Some(&unknown)),
        ],
        vec![img.clone(), att.clone()],
    );
    let reg = FakeRegistry::start(FakeAuth::None).await;
    reg.push_index("src/app", "v1", &idx);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a.tar");
    pull_from(
        &reg,
        &work.path().join("cache"),
        &["--all-platforms"],
        &archive,
    )
    .await;
    let target = format!("{}/dst/app:v1", reg.host());
    let out = run(
        &work.path().join("fresh"),
        &s(&[
            "push",
            "-q",
            "--all-platforms",
            archive.to_str().unwrap(),
            &target,
        ]),
    )
    .await;
    assert_ok(&out);
    assert_eq!(stdout(&out), idx.digest.to_string());
    let (_, stored) = reg.manifest("dst/app", "v1").unwrap();
    assert_eq!(&stored[..], &idx.bytes[..]);
    assert!(reg
        .manifest("dst/app", &att.manifest_digest.to_string())
        .is_some());
    assert_eq!(
        reg.blob("dst/app", &att.layers[0].digest).as_deref(),
        Some(&att.layers[0].bytes[..])
    );
}
