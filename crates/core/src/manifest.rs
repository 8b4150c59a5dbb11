//! The manifest model: OCI image manifests and indexes, Docker schema 2 manifests and
//! manifest lists. Only the fields ferry acts on are modelled; the registry's raw bytes are
//! always kept beside the parsed form, because they are what the digest covers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media;
use crate::platform::Platform;

/// Why manifest bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("Docker image manifest schema 1 ({0}) is not supported; it was deprecated in 2017 — push the image again with a current client to get a schema 2 or OCI manifest")]
    Schema1(String),
    #[error("unsupported manifest media type {0:?} (ferry reads OCI and Docker schema 2 manifests and indexes)")]
    UnsupportedMediaType(String),
    #[error(
        "the manifest has neither 'layers' nor 'manifests'; it is not an image manifest or index"
    )]
    Unrecognised,
    #[error("the manifest is malformed: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// A content descriptor: what a manifest says about a blob or another manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            urls: None,
            annotations: None,
        }
    }
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

impl IndexManifest {
    /// The platforms of the index's image entries, without attestation entries
    /// (`unknown/unknown`) and without duplicates.
    pub fn platforms(&self) -> Vec<Platform> {
        let mut out: Vec<Platform> = Vec::new();
        for d in &self.manifests {
            if let Some(p) = &d.platform {
                if p.os != "unknown" && !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
        out
    }

    /// The entry for `wanted`, chosen as docker chooses.
    pub fn select(&self, wanted: &Platform) -> Option<&Descriptor> {
        wanted.choose(&self.manifests, |d| d.platform.as_ref())
    }
}

/// A parsed manifest of either kind. Few exist at once, so the size difference between the
/// variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(IndexManifest),
}

impl Manifest {
    /// Parse manifest bytes. `content_type` is the registry's Content-Type header, used when
    /// the document does not name its own media type.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            schema_version: Option<u32>,
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            layers: Option<serde_json::Value>,
            fs_layers: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty());
        let declared = probe.media_type.as_deref().or(content_type);
        if probe.schema_version == Some(1)
            || probe.fs_layers.is_some()
            || matches!(
                declared,
                Some(media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED)
            )
        {
            return Err(ManifestError::Schema1(
                declared.unwrap_or(media::DOCKER_SCHEMA1).to_string(),
            ));
        }
        let is_index = match probe.media_type.as_deref() {
            Some(mt) if media::is_index(mt) => true,
            Some(mt) if media::is_image_manifest(mt) => false,
            Some(mt) => return Err(ManifestError::UnsupportedMediaType(mt.to_string())),
            None if probe.manifests.is_some() => true,
            None if probe.layers.is_some() => false,
            None => return Err(ManifestError::Unrecognised),
        };
        if is_index {
            serde_json::from_slice(bytes)
                .map(Manifest::Index)
                .map_err(ManifestError::Malformed)
        } else {
            serde_json::from_slice(bytes)
                .map(Manifest::Image)
                .map_err(ManifestError::Malformed)
        }
    }

    /// The media type the manifest carries, or the default for its kind.
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Image(m) => m.media_type.as_deref().unwrap_or(media::OCI_MANIFEST),
            Manifest::Index(i) => i.media_type.as_deref().unwrap_or(media::OCI_INDEX),
        }
    }
}

/// The part of an image configuration ferry reads: the layers' uncompressed digests (needed
/// for docker's legacy layout) and the creation time.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, ManifestError> {
        serde_json::from_slice(bytes).map_err(ManifestError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMG: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
      "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":3,"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":5,"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]}"#;

    #[test]
    fn parses_docker_schema2() {
        let Manifest::Image(m) = Manifest::parse(IMG.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.config.size, 3);
    }

    #[test]
    fn parses_index_without_media_type_and_selects() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"{d}","platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"{d}","platform":{{"os":"linux","architecture":"arm64","variant":"v8","features":["x"]}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"{d}","platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#
        );
        let Manifest::Index(i) = Manifest::parse(idx.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(i.platforms().len(), 2);
        let arm = i.select(&"linux/arm64".parse().unwrap()).unwrap();
        assert_eq!(
            arm.platform.as_ref().unwrap().variant.as_deref(),
            Some("v8")
        );
        assert!(i.select(&"linux/s390x".parse().unwrap()).is_none());
    }

    #[test]
    fn schema1_and_garbage_are_refused_clearly() {
        let s1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = Manifest::parse(s1.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("schema 1") && err.contains("not supported"),
            "{err}"
        );
        assert!(Manifest::parse(b"nope", None)
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        assert!(Manifest::parse(b"{}", None).is_err());
        let bad_digest = IMG.replace("sha256:e3b0", "sha256:zzzz");
        assert!(Manifest::parse(bad_digest.as_bytes(), None).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = Manifest::parse(&bytes, None);
            let _ = ImageConfig::parse(&bytes);
        }

        #[test]
        fn mutated_manifests_parse_or_fail_cleanly(pos in 0usize..600, byte in proptest::prelude::any::<u8>()) {
            let mut b = IMG.as_bytes().to_vec();
            let i = pos % b.len();
            b[i] = byte;
            match Manifest::parse(&b, Some("application/vnd.docker.distribution.manifest.v2+json")) {
                Ok(_) => {}
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
