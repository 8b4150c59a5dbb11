//! `ferry serve` against a real docker-registry: the archives of `/image`, `/download/….tar`,
//! the unzipped `.tar.zip` and `/dl` are read by skopeo with the registry's digests, and the
//! one from `/image` loads in podman with the image's diff ids.

mod common;

use common::*;
use ferry_testkit::image::{random_image, ImageSpec, TestImage};
use ferry_testkit::real::{self, Podman, RealRegistry, RegistryAuth};

fn push(reg: &RealRegistry, repo_tag: &str, img: &TestImage) {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let blobs: Vec<(String, &[u8])> = img
        .blobs()
        .map(|b| (b.digest.to_string(), &b.bytes[..]))
        .collect();
    real::write_oci_layout(&layout, &img.manifest_media_type, &img.manifest, &blobs).unwrap();
    real::push_oci_layout(&reg.host, repo_tag, &layout, None).expect("skopeo push");
}

/// skopeo's view of a docker archive: (its layer list, the config's diff ids).
fn skopeo_docker_archive(path: &std::path::Path) -> (serde_json::Value, serde_json::Value) {
    let target = format!("docker-archive:{}", path.display());
    let info = real::skopeo_inspect(&target, &[]).unwrap_or_else(|e| panic!("{target}: {e}"));
    let config = real::skopeo_inspect(&target, &["--config"]).unwrap();
    (info["Layers"].clone(), config["rootfs"]["diff_ids"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archives_from_every_endpoint_load_with_the_registry_digests() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    if real::tool("skopeo").is_none() {
        return;
    }
    let img = random_image(&ImageSpec {
        seed: 51,
        layers: 3,
        layer_size: 200_000,
        ..Default::default()
    });
    push(&reg, "served/app:v1", &img);
    let srv = start(&[&reg.host], |_| {}).await;
    let name = format!("{}/served/app:v1", reg.host);
    let layers: Vec<String> = img.layers.iter().map(|b| b.digest.to_string()).collect();
    let diff_ids: Vec<String> = img.diff_ids.iter().map(ToString::to_string).collect();
    let dir = tempfile::tempdir().unwrap();

    let mut tars = Vec::new();
    for (what, path) in [
        ("image", format!("/image?name={name}")),
        ("download", format!("/download/{name}.tar")),
        ("dl", format!("/dl?myimage={name}")),
    ] {
        let (status, _, body) = get(&format!("{}{path}", srv.base), &[]).await;
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&body));
        let f = dir.path().join(format!("{what}.tar"));
        std::fs::write(&f, &body).unwrap();
        tars.push(f);
    }
    // The zip, unzipped.
    let (status, _, zip) = get(&format!("{}/download/{name}.tar.zip", srv.base), &[]).await;
    assert_eq!(status, 200);
    let zpath = dir.path().join("a.zip");
    std::fs::write(&zpath, &zip).unwrap();
    let unzipped = dir.path().join("unzipped.tar");
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); open(sys.argv[2],'wb').write(z.read(z.infolist()[0]))"])
        .arg(&zpath)
        .arg(&unzipped)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tars.push(unzipped);

    // The same archive from every endpoint: what podman loads below, it loads from each.
    let first = std::fs::read(&tars[0]).unwrap();
    for t in &tars[1..] {
        assert!(
            std::fs::read(t).unwrap() == first,
            "{} differs",
            t.display()
        );
    }
    for t in &tars {
        // As a docker archive skopeo names layers by their uncompressed digests.
        let (l, d) = skopeo_docker_archive(t);
        assert_eq!(l, serde_json::json!(diff_ids), "{}", t.display());
        assert_eq!(d, serde_json::json!(diff_ids), "{}", t.display());
        // The same file is an OCI layout holding the registry's manifest and blobs.
        let oci = real::skopeo_inspect(&format!("oci-archive:{}", t.display()), &[]).unwrap();
        assert_eq!(
            oci["Digest"],
            img.manifest_digest.to_string(),
            "{}",
            t.display()
        );
        assert_eq!(oci["Layers"], serde_json::json!(layers), "{}", t.display());
    }
    let Some(podman) = Podman::new() else { return };
    let loaded = podman.load(&tars[0]).expect("podman load");
    let names = Podman::loaded_names(&loaded);
    assert_eq!(names, vec![name.clone()], "{loaded}");
    let inspect = podman.inspect(&name).expect("podman inspect");
    assert_eq!(inspect["RootFS"]["Layers"], serde_json::json!(diff_ids));
}

/// `curl` killed halfway, then `curl -C -`, and `wget -c` after a cut: byte-identical to a
/// one-shot download of an image that was not cached when the first one started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_and_wget_resume_a_cut_download_byte_identical() {
    let (Some(curl), Some(wget)) = (real::tool("curl"), real::tool("wget")) else {
        return;
    };
    let img = ferry_testkit::image::sized_image(52, 2, 2_000_000);
    let fake = ferry_testkit::fake::FakeRegistry::start(ferry_testkit::fake::FakeAuth::None).await;
    fake.push_image("resume/img", "v1", &img);
    // About 4 s for the whole image: the first curl is killed long before that.
    fake.add_fault(ferry_testkit::fake::Fault::Throttle {
        bytes_per_sec: 500_000,
    });
    let srv = start(&[&fake.host()], |_| {}).await;
    let url = format!("{}/image?name={}/resume/img:v1", srv.base, fake.host());
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("part.tar");
    // The first curl reads slowly and is killed well before the end.
    let mut first = std::process::Command::new(&curl)
        .args(["-sS", "--noproxy", "*", "-o"])
        .arg(&part)
        .arg(&url)
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    first.kill().unwrap();
    let _ = first.wait();
    let cut = std::fs::metadata(&part).unwrap().len();
    assert!(cut > 0, "curl got nothing before it was killed");
    let out = std::process::Command::new(&curl)
        .args(["-sS", "--fail", "--noproxy", "*", "-C", "-", "-o"])
        .arg(&part)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fake.clear_faults();
    let (_, _, whole) = get(&url, &[]).await;
    let resumed = std::fs::read(&part).unwrap();
    assert!(cut < whole.len() as u64, "the first curl was not cut");
    assert!(
        resumed == whole,
        "curl -C - differs from a one-shot download"
    );
    // wget -c over a file cut at half.
    let wpart = dir.path().join("w.tar");
    std::fs::write(&wpart, &whole[..whole.len() / 2]).unwrap();
    let out = std::process::Command::new(&wget)
        .args(["-q", "--no-proxy", "-c", "-O"])
        .arg(&wpart)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&wpart).unwrap() == whole, "wget -c differs");
}

/// An index and its images into a real registry as `repo_tag`, through an OCI layout and
/// `skopeo copy --all`.
fn push_index(reg: &RealRegistry, repo_tag: &str, idx: &ferry_testkit::image::TestIndex) {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let put = |digest: &ferry_core::Digest, bytes: &[u8]| {
        let d = layout.join("blobs/sha256");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(digest.hex()), bytes).unwrap();
    };
    for img in &idx.images {
        for b in img.blobs() {
            put(&b.digest, &b.bytes);
        }
        put(&img.manifest_digest, &img.manifest);
    }
    put(&idx.digest, &idx.bytes);
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": idx.media_type, "digest": idx.digest.to_string(), "size": idx.bytes.len()}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    real::skopeo_copy(
        &format!("oci:{}", layout.display()),
        &format!("docker://{}/{repo_tag}", reg.host),
        &["--all", "--dest-tls-verify=false"],
    )
    .expect("skopeo copy --all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multi_arch_index_lists_its_platforms_and_arm64_is_chosen_by_arch() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    if real::tool("skopeo").is_none() {
        return;
    }
    let plats = [
        ferry_core::Platform::new("linux", "amd64", None),
        ferry_core::Platform::new("linux", "arm64", Some("v8")),
    ];
    let idx = ferry_testkit::image::random_index(53, &plats, false);
    push_index(&reg, "multi/app:v1", &idx);
    let srv = start(&[&reg.host], |_| {}).await;
    let name = format!("{}/multi/app:v1", reg.host);
    let (status, _, body) = get(&format!("{}/platforms?name={name}", srv.base), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["digest"], idx.digest.to_string());
    assert_eq!(
        v["platforms"],
        serde_json::json!([
            {"os": "linux", "architecture": "amd64", "variant": null},
            {"os": "linux", "architecture": "arm64", "variant": "v8"},
        ])
    );
    let (status, _, tar) = get(&format!("{}/image?name={name}&arch=arm64", srv.base), &[]).await;
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("arm.tar");
    std::fs::write(&f, &tar).unwrap();
    let config =
        real::skopeo_inspect(&format!("docker-archive:{}", f.display()), &["--config"]).unwrap();
    assert_eq!(config["architecture"], "arm64");
    let arm = &idx.images[1];
    let diff_ids: Vec<String> = arm.diff_ids.iter().map(ToString::to_string).collect();
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
}
