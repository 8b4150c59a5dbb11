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
