//! Smoke tests for `ferry_testkit::real`: real docker-registry in each auth mode, skopeo push/
//! inspect/copy, podman load and containerd import of a skopeo-made docker-archive.

use std::io::Write;

use ferry_testkit::real::{
    self, push_oci_layout, sha256_digest, skopeo_copy, skopeo_inspect, write_oci_layout,
    Containerd, Podman, RealRegistry, RegistryAuth,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A one-layer OCI image built by hand: (manifest bytes, config digest, diff id, blobs).
struct Img {
    manifest: Vec<u8>,
    diff_id: String,
    blobs: Vec<(String, Vec<u8>)>,
}

fn tiny_image(content: &str) -> Img {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        let data = content.as_bytes();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", data).unwrap();
        b.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let diff_id = sha256_digest(&tar_bytes);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "ferry-testkit real_smoke"}],
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256_digest(&layer),
            "size": layer.len(),
        }],
    }))
    .unwrap();
    Img {
        manifest,
        diff_id,
        blobs: vec![
            (sha256_digest(&config), config),
            (sha256_digest(&layer), layer),
        ],
    }
}

fn layout_of(img: &Img) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let blobs: Vec<(&str, &[u8])> = img
        .blobs
        .iter()
        .map(|(d, b)| (d.as_str(), b.as_slice()))
        .collect();
    write_oci_layout(dir.path(), OCI_MANIFEST, &img.manifest, &blobs).unwrap();
    dir
}

#[test]
fn anonymous_push_inspect_then_podman_and_containerd() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    if real::tool("skopeo").is_none() {
        return;
    }
    let img = tiny_image("hello from ferry\n");
    let layout = layout_of(&img);
    push_oci_layout(&reg.host, "smoke/anon:v1", layout.path(), None)
        .unwrap_or_else(|e| panic!("push: {e}\nregistry log:\n{}", reg.log()));
    let target = format!("docker://{}/smoke/anon:v1", reg.host);
    let info = skopeo_inspect(&target, &["--tls-verify=false"]).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1, "{info}");
    let raw = skopeo_inspect(&target, &["--tls-verify=false", "--raw"]).unwrap();
    assert_eq!(
        serde_json::to_vec(&raw).unwrap(),
        img.manifest,
        "manifest round-trips byte for byte"
    );

    // skopeo docker-archive -> podman load / containerd import.
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("x.tar");
    skopeo_copy(
        &target,
        &format!("docker-archive:{}:smoke/anon:v1", archive.display()),
        &["--src-tls-verify=false"],
    )
    .unwrap();

    if let Some(podman) = Podman::new() {
        let loaded = podman.load(&archive).unwrap();
        assert!(
            loaded.contains("smoke/anon:v1"),
            "podman load said: {loaded}"
        );
        let images = podman.images().unwrap();
        assert_eq!(images.as_array().map(Vec::len), Some(1), "{images}");
        assert_eq!(Podman::loaded_names(&loaded), ["docker.io/smoke/anon:v1"]);
        let inspect = podman.inspect("docker.io/smoke/anon:v1").unwrap();
        assert_eq!(
            inspect["RootFS"]["Layers"],
            serde_json::json!([img.diff_id]),
            "{inspect}"
        );
    }

    if let Some(ctrd) = Containerd::start() {
        ctrd.import(&archive, &[])
            .unwrap_or_else(|e| panic!("import: {e}\nlog:\n{}", ctrd.log()));
        let images = ctrd.images().unwrap();
        assert!(
            images
                .iter()
                .any(|(name, digest)| name == "docker.io/smoke/anon:v1"
                    && digest.starts_with("sha256:")),
            "ctr images ls: {images:?}"
        );
    }
}

fn check_auth_mode(auth: RegistryAuth, user: &str, pass: &str) -> Option<RealRegistry> {
    let reg = RealRegistry::start(auth)?;
    real::tool("skopeo")?;
    let img = tiny_image(&format!("secret for {user}\n"));
    let layout = layout_of(&img);
    let err = push_oci_layout(&reg.host, "smoke/auth:v1", layout.path(), None).unwrap_err();
    assert!(!err.is_empty());
    push_oci_layout(
        &reg.host,
        "smoke/auth:v1",
        layout.path(),
        Some((user, "wrong")),
    )
    .unwrap_err();
    push_oci_layout(
        &reg.host,
        "smoke/auth:v1",
        layout.path(),
        Some((user, pass)),
    )
    .unwrap_or_else(|e| panic!("push: {e}\nregistry log:\n{}", reg.log()));
    let target = format!("docker://{}/smoke/auth:v1", reg.host);
    let err = skopeo_inspect(&target, &["--tls-verify=false"]).unwrap_err();
    assert!(
        err.contains("unauthorized") || err.contains("401") || err.contains("authentication"),
        "{err}"
    );
    let creds = format!("--creds={user}:{pass}");
    let info = skopeo_inspect(&target, &["--tls-verify=false", &creds]).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1, "{info}");
    Some(reg)
}

#[test]
fn htpasswd_requires_credentials() {
    let auth = RegistryAuth::Htpasswd {
        user: "alice".into(),
        pass: "s3cret".into(),
    };
    let Some(reg) = check_auth_mode(auth, "alice", "s3cret") else {
        return;
    };
    assert_eq!(real::http_get(&reg.host, "/v2/", &[]).unwrap().0, 401);
    let basic = format!("Basic {}", b64("alice:s3cret"));
    assert_eq!(
        real::http_get(&reg.host, "/v2/", &[("Authorization", &basic)])
            .unwrap()
            .0,
        200
    );
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn token_auth_issues_jwts_the_registry_accepts() {
    let auth = RegistryAuth::Token {
        user: "bob".into(),
        pass: "t0ken".into(),
    };
    let Some(reg) = check_auth_mode(auth, "bob", "t0ken") else {
        return;
    };
    assert!(reg.token_requests() > 0);

    // By hand: challenge -> Basic-auth'd token fetch -> Bearer GET /v2/ answers 200.
    let (status, headers, _) = real::http_get(&reg.host, "/v2/", &[]).unwrap();
    assert_eq!(status, 401);
    let challenge = headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.clone())
        .unwrap();
    let realm = reg.realm.clone().unwrap();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(&realm),
        "{challenge}"
    );
    let token_host = realm
        .trim_start_matches("http://")
        .trim_end_matches("/token")
        .to_string();
    let path = format!(
        "/token?service={}&scope=repository:smoke/auth:pull",
        reg.service
    );
    let (st, _, _) = real::http_get(&token_host, &path, &[]).unwrap();
    assert_eq!(st, 401, "anonymous token requests are refused");
    let basic = format!("Basic {}", b64("bob:t0ken"));
    let before = reg.token_requests();
    let (st, _, body) = real::http_get(&token_host, &path, &[("Authorization", &basic)]).unwrap();
    assert_eq!(st, 200);
    assert_eq!(reg.token_requests(), before + 1);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bearer = format!("Bearer {}", v["token"].as_str().unwrap());
    let (st, _, _) = real::http_get(&reg.host, "/v2/", &[("Authorization", &bearer)]).unwrap();
    assert_eq!(st, 200, "registry log:\n{}", reg.log());
    let (st, _, body) = real::http_get(
        &reg.host,
        "/v2/smoke/auth/tags/list",
        &[("Authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
}
