//! The `/v2/` mirror in front of a real docker-registry, used by real clients with their
//! usual mirror settings: skopeo (with and without a token), podman with a registries.conf
//! mirror, and containerd's `ctr` with a hosts.toml mirror. Each gets the digests a direct
//! pull gets, and the blobs went through the mirror (they are in its cache).

mod common;

use common::*;
use ferry_testkit::image::{random_image, ImageSpec, TestImage};
use ferry_testkit::real::{self, Containerd, Podman, RealRegistry, RegistryAuth};

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

fn image(seed: u64) -> TestImage {
    random_image(&ImageSpec {
        seed,
        layers: 3,
        layer_size: 300_000,
        ..Default::default()
    })
}

/// The manifest digest an OCI layout's index names.
fn layout_digest(dir: &std::path::Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn assert_cached(srv: &Server, img: &TestImage) {
    for b in img.blobs() {
        assert!(
            srv.state.store().contains(&b.digest),
            "blob {} did not go through the mirror",
            b.digest
        );
    }
}

/// A mirror whose unprefixed names are `reg`'s.
async fn mirror(reg: &RealRegistry, tokens: &[&str]) -> Server {
    let host = reg.host.clone();
    let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    start(&[&reg.host], move |c| {
        c.mirror_of = host;
        c.tokens = tokens;
    })
    .await
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skopeo_copies_through_the_mirror_with_the_registry_digests() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    if real::tool("skopeo").is_none() {
        return;
    }
    let img = image(71);
    push(&reg, "served/app:v1", &img);
    let srv = mirror(&reg, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (direct, through) = (dir.path().join("direct"), dir.path().join("through"));
    let src_direct = format!("docker://{}/served/app:v1", reg.host);
    let src_mirror = format!("docker://{}/served/app:v1", srv.addr);
    let (d, t) = (direct.clone(), through.clone());
    blocking(move || {
        real::skopeo_copy(
            &src_direct,
            &format!("oci:{}", d.display()),
            &["--src-tls-verify=false"],
        )
        .expect("direct copy");
        real::skopeo_copy(
            &src_mirror,
            &format!("oci:{}", t.display()),
            &["--src-tls-verify=false"],
        )
        .expect("copy through the mirror");
    })
    .await
    .unwrap();
    assert_eq!(layout_digest(&through), layout_digest(&direct));
    assert_eq!(layout_digest(&through), img.manifest_digest.to_string());
    for b in img.blobs() {
        let p = through.join("blobs/sha256").join(b.digest.hex());
        assert!(
            std::fs::read(&p).unwrap() == b.bytes.to_vec(),
            "{}",
            b.digest
        );
    }
    assert_cached(&srv, &img);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skopeo_needs_the_token_when_the_mirror_has_tokens() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    if real::tool("skopeo").is_none() {
        return;
    }
    let img = image(72);
    push(&reg, "served/app:v1", &img);
    let srv = mirror(&reg, &["t0ken"]).await;
    let src = format!("docker://{}/served/app:v1", srv.addr);
    let dir = tempfile::tempdir().unwrap();
    let (without, with) = (dir.path().join("without"), dir.path().join("with"));
    let (s, w, wo) = (src.clone(), with.clone(), without.clone());
    let (refused, ok) = blocking(move || {
        let refused = real::skopeo_copy(
            &s,
            &format!("oci:{}", wo.display()),
            &["--src-tls-verify=false"],
        );
        let ok = real::skopeo_copy(
            &s,
            &format!("oci:{}", w.display()),
            &["--src-tls-verify=false", "--src-creds", "anyone:t0ken"],
        );
        (refused, ok)
    })
    .await
    .unwrap();
    let err = refused.expect_err("a copy without the token worked");
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
    ok.expect("copy with the token");
    assert_eq!(layout_digest(&with), img.manifest_digest.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn podman_pulls_through_a_registries_conf_mirror() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let Some(podman) = Podman::new() else {
        return;
    };
    let img = image(73);
    push(&reg, "served/app:v1", &img);
    let srv = mirror(&reg, &[]).await;
    std::fs::write(
        podman.dir.join("registries.conf"),
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            reg.host, srv.addr
        ),
    )
    .unwrap();
    // `podman pull` insists on reading the auth file it is pointed at.
    std::fs::write(podman.dir.join("auth.json"), "{}").unwrap();
    let name = format!("{}/served/app:v1", reg.host);
    let n = name.clone();
    let inspect = blocking(move || {
        podman.run(&["pull", &n]).expect("podman pull");
        podman.inspect(&n).expect("podman inspect")
    })
    .await
    .unwrap();
    let info = if inspect.is_array() {
        &inspect[0]
    } else {
        &inspect
    };
    assert_eq!(info["Digest"], img.manifest_digest.to_string());
    let diff_ids: Vec<String> = img.diff_ids.iter().map(ToString::to_string).collect();
    assert_eq!(info["RootFS"]["Layers"], serde_json::json!(diff_ids));
    assert_cached(&srv, &img);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctr_pulls_through_a_hosts_toml_mirror() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let Some(ctrd) = Containerd::start() else {
        return;
    };
    let img = image(74);
    push(&reg, "served/app:v1", &img);
    let srv = mirror(&reg, &[]).await;
    let hosts = tempfile::tempdir().unwrap();
    let d = hosts.path().join(&reg.host);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host, srv.addr
        ),
    )
    .unwrap();
    let name = format!("{}/served/app:v1", reg.host);
    let (n, hd) = (name.clone(), hosts.path().to_path_buf());
    let images = blocking(move || {
        // Bounded: a ctr that hangs fails the test instead of holding it.
        let c = ctrd.ctr();
        let out = std::process::Command::new("timeout")
            .arg("120")
            .arg(c.get_program())
            .args(c.get_args())
            .args(["images", "pull", "--snapshotter", "native", "--hosts-dir"])
            .arg(&hd)
            .arg(&n)
            .output()
            .expect("ctr");
        assert!(
            out.status.success(),
            "ctr images pull: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        ctrd.images().expect("ctr images ls")
    })
    .await
    .unwrap();
    let got = images
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} not in {images:?}"));
    assert_eq!(got.1, img.manifest_digest.to_string());
    assert_cached(&srv, &img);
}
