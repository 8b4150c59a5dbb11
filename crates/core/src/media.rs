//! Media types of the OCI image spec and Docker's image manifest v2 schema 2.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const OCI_LAYER_NONDISTRIBUTABLE_TAR: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NONDISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_NONDISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// The empty JSON `{}` descriptor OCI artifacts without a config point at.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header for manifest requests: every kind ferry understands.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// How a layer's bytes are compressed, judged from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type declares. Unknown types are treated as gzip when they
/// say so, otherwise as uncompressed; readers sniff the magic bytes anyway.
pub fn layer_compression(media_type: &str) -> Compression {
    if media_type.ends_with("gzip") {
        Compression::Gzip
    } else if media_type.ends_with("zstd") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Whether `media_type` is an image index or manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether `media_type` is a single-image manifest.
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Whether `media_type` is an image configuration (what docker, podman and containerd can
/// run). A manifest whose config is anything else is an artifact (a Helm chart, an SBOM, a
/// signature).
pub fn is_image_config(media_type: &str) -> bool {
    media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}

/// Layer media types other than OCI's that docker and containerd unpack: Docker's
/// uncompressed, gzip, zstd and foreign layers (the uncompressed and zstd ones are
/// containerd's names; Docker's schema 2 spec names only the gzip pair).
const DOCKER_LAYER_TYPES: [&str; 5] = [
    "application/vnd.docker.image.rootfs.diff.tar",
    DOCKER_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    DOCKER_FOREIGN_LAYER_GZIP,
];

/// Whether `media_type` is a filesystem layer a container runtime unpacks: an OCI or Docker
/// tar, plain or compressed with gzip or zstd, foreign or non-distributable ones included.
/// A manifest with any other layer (a cosign signature's `simplesigning` payload, an
/// attestation's in-toto statement, a Helm chart) is an artifact even when its config is an
/// image config.
pub fn is_image_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_LAYER_TAR
            | OCI_LAYER_GZIP
            | OCI_LAYER_ZSTD
            | OCI_LAYER_NONDISTRIBUTABLE_TAR
            | OCI_LAYER_NONDISTRIBUTABLE_GZIP
            | OCI_LAYER_NONDISTRIBUTABLE_ZSTD
    ) || DOCKER_LAYER_TYPES.contains(&media_type)
}

/// Whether `media_type` marks a layer its publisher may not redistribute: Docker's foreign
/// layers (Windows base layers) and OCI's deprecated non-distributable ones. Registries
/// usually do not hold them; the descriptor's `urls` say where they live.
pub fn is_foreign_layer(media_type: &str) -> bool {
    media_type == DOCKER_FOREIGN_LAYER_GZIP
        || media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_layers_are_the_tar_types_and_nothing_else() {
        for t in [
            OCI_LAYER_TAR,
            OCI_LAYER_GZIP,
            OCI_LAYER_ZSTD,
            OCI_LAYER_NONDISTRIBUTABLE_GZIP,
            DOCKER_LAYER_GZIP,
            DOCKER_FOREIGN_LAYER_GZIP,
            "application/vnd.docker.image.rootfs.diff.tar",
        ] {
            assert!(is_image_layer(t), "{t}");
        }
        for t in [
            "application/vnd.dev.cosign.simplesigning.v1+json",
            "application/vnd.in-toto+json",
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            OCI_EMPTY,
            OCI_CONFIG,
            "",
        ] {
            assert!(!is_image_layer(t), "{t}");
        }
    }
}
