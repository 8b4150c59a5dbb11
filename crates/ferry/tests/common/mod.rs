//! Helpers shared by ferry's end-to-end tests: running the binary, putting test images into
//! a real registry, and checking archives with the real loaders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferry_testkit::image::TestImage;
use ferry_testkit::real;

/// Run `ferry` with `args`, a private cache and no credentials from the environment.
pub fn ferry(cache: &Path, args: &[&str]) -> Output {
    ferry_cmd(cache, args).output().expect("running ferry")
}

pub fn ferry_cmd(cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args(args)
        .env("FERRY_CACHE_DIR", cache)
        .env("DOCKER_CONFIG", cache.join("no-docker-config"))
        .env("REGISTRY_AUTH_FILE", cache.join("no-auth.json"))
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("http_proxy")
        .stdin(Stdio::null());
    c
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "ferry failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Put `img` into a real registry as `repo:tag` with skopeo (from an OCI layout).
pub fn push_with_skopeo(
    reg: &real::RealRegistry,
    repo_tag: &str,
    img: &TestImage,
    creds: Option<(&str, &str)>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("layout");
    let blobs: Vec<(String, &[u8])> = img
        .blobs()
        .map(|b| (b.digest.to_string(), &b.bytes[..]))
        .collect();
    real::write_oci_layout(&layout, &img.manifest_media_type, &img.manifest, &blobs)
        .expect("writing the layout");
    real::push_oci_layout(&reg.host, repo_tag, &layout, creds).expect("skopeo push");
}

/// Load `archive` with podman and return the loaded image's diff ids.
pub fn podman_diff_ids(archive: &Path) -> Option<Vec<String>> {
    let podman = real::Podman::new()?;
    let out = podman
        .load(archive)
        .unwrap_or_else(|e| panic!("podman load {}: {e}", archive.display()));
    let names = real::Podman::loaded_names(&out);
    let name = names
        .first()
        .unwrap_or_else(|| panic!("podman loaded no named image: {out}"));
    let inspect = podman.inspect(name).expect("podman image inspect");
    Some(
        inspect["RootFS"]["Layers"]
            .as_array()
            .expect("RootFS.Layers")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
    )
}

/// Import `archive` into a containerd started for the test; returns (name, digest) pairs.
pub fn containerd_images(archive: &Path) -> Option<Vec<(String, String)>> {
    let ctrd = real::Containerd::start()?;
    ctrd.import(archive, &[])
        .unwrap_or_else(|e| panic!("ctr import {}: {e}\n{}", archive.display(), ctrd.log()));
    Some(ctrd.images().expect("ctr images ls"))
}

/// Read `archive` with skopeo through `transport` (`docker-archive` or `oci-archive`) and copy
/// it into an OCI directory; returns the layer digests skopeo reports.
pub fn skopeo_layers(transport: &str, archive: &Path) -> Option<Vec<String>> {
    real::tool("skopeo")?;
    let target = format!("{transport}:{}", archive.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = format!("oci:{}", dir.path().join("copy").display());
    real::skopeo_copy(&target, &dest, &[]).unwrap_or_else(|e| panic!("skopeo copy {target}: {e}"));
    let v = real::skopeo_inspect(&target, &[])
        .unwrap_or_else(|e| panic!("skopeo inspect {target}: {e}"));
    Some(
        v["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_string())
            .collect(),
    )
}

pub fn digests(list: &[ferry_core::Digest]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

pub fn tmp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

// ---- Helpers for real_auth.rs, real_platforms.rs and real_formats.rs ----

/// Put a multi-platform image (an OCI index or a Docker manifest list, with every child
/// image) into a real registry as `repo:tag`: an OCI layout whose `index.json` points at the
/// index blob, copied with `skopeo copy --all`, which pushes the children by digest and then
/// the index byte for byte.
pub fn push_index_with_skopeo(
    reg: &real::RealRegistry,
    repo_tag: &str,
    idx: &ferry_testkit::image::TestIndex,
    creds: Option<(&str, &str)>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("layout");
    let mut blobs: Vec<(String, &[u8])> = Vec::new();
    for img in &idx.images {
        blobs.push((img.manifest_digest.to_string(), &img.manifest[..]));
        blobs.extend(img.blobs().map(|b| (b.digest.to_string(), &b.bytes[..])));
    }
    real::write_oci_layout(&layout, &idx.media_type, &idx.bytes, &blobs)
        .expect("writing the layout");
    let creds_arg = creds.map(|(u, p)| format!("--dest-creds={u}:{p}"));
    let mut extra = vec!["--all", "--dest-tls-verify=false"];
    if let Some(c) = &creds_arg {
        extra.push(c);
    }
    real::skopeo_copy(
        &format!("oci:{}", layout.display()),
        &format!("docker://{}/{repo_tag}", reg.host),
        &extra,
    )
    .unwrap_or_else(|e| {
        panic!(
            "skopeo push of the index: {e}\nregistry log:\n{}",
            reg.log()
        )
    });
}

/// Run a prepared ferry command with `input` written to its standard input.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ferry");
    {
        let mut stdin = child.stdin.take().expect("ferry's stdin");
        stdin.write_all(input).expect("writing ferry's stdin");
    }
    child.wait_with_output().expect("waiting for ferry")
}

/// Every regular file of the tar at `path` (name → bytes), in archive order.
pub fn tar_files(path: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut a = tar::Archive::new(f);
    let mut out = Vec::new();
    for e in a.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = e.path().expect("entry path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("reading a tar entry");
        out.push((name, data));
    }
    out
}

/// The file `name` of a tar read by [`tar_files`], parsed as JSON.
pub fn tar_json(files: &[(String, Vec<u8>)], name: &str) -> serde_json::Value {
    let (_, data) = files
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("the archive has no {name}"));
    serde_json::from_slice(data).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// Standard base64 (with padding), as docker's config.json `auth` entries use.
pub fn base64_std(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// sha256 digest (`sha256:<hex>`) of `data`.
pub fn sha256_of(data: &[u8]) -> String {
    real::sha256_digest(data)
}
