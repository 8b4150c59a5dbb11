//! `ferry pull` against a real docker-registry; every archive is loaded by podman, imported by
//! containerd and read by skopeo, and the loaded layers must be the registry's.

mod common;

use common::*;
use ferry_testkit::image::sized_image;
use ferry_testkit::real::{RealRegistry, RegistryAuth};

#[test]
fn default_archive_loads_in_podman_containerd_and_skopeo() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let img = sized_image(7, 3, 200_000);
    push_with_skopeo(&reg, "team/app:v1", &img, None);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("app.tar");
    let out = ferry(
        &work.path().join("cache"),
        &[
            "pull",
            &format!("{}/team/app:v1", reg.host),
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    assert_ok(&out);

    if let Some(diff_ids) = podman_diff_ids(&archive) {
        assert_eq!(
            diff_ids,
            digests(&img.diff_ids),
            "podman loaded other layers"
        );
    }
    if let Some(images) = containerd_images(&archive) {
        let want = format!("{}/team/app:v1", reg.host);
        assert_ctr_has(&images, &want, &img.manifest_digest);
    }
    if let Some(layers) = skopeo_layers("oci-archive", &archive) {
        assert_eq!(
            layers,
            layer_digests(&img),
            "skopeo oci-archive: layers differ from the registry's"
        );
    }
    if let Some(layers) = skopeo_layers("docker-archive", &archive) {
        assert_eq!(layers.len(), img.layers.len());
    }
}
