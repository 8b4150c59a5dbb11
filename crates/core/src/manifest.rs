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
    /// OCI 1.1: the artifact type of the manifest this descriptor points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
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
            artifact_type: None,
        }
    }

    /// Whether this entry of an index points at another index (a nested index).
    pub fn is_index(&self) -> bool {
        media::is_index(&self.media_type)
    }

    /// Whether this is an attestation or other non-image entry that BuildKit marks with the
    /// platform `unknown/unknown`.
    pub fn is_attestation(&self) -> bool {
        self.platform.as_ref().is_some_and(|p| p.os == "unknown")
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
    /// OCI 1.1: set on artifacts (SBOMs, signatures, oras pushes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl ImageManifest {
    /// What the manifest holds when it is not a container image: its `artifactType`; else
    /// its config's media type when that is not an image config (a Helm chart's
    /// `application/vnd.cncf.helm.config.v1+json`); else the media type of its first layer
    /// that is not an image layer (a classic cosign signature has an image config and an
    /// `application/vnd.dev.cosign.simplesigning.v1+json` layer, a BuildKit attestation an
    /// `application/vnd.in-toto+json` one). `None` for a container image.
    pub fn artifact_kind(&self) -> Option<&str> {
        if let Some(t) = &self.artifact_type {
            return Some(t);
        }
        if !media::is_image_config(&self.config.media_type) {
            return Some(&self.config.media_type);
        }
        self.layers
            .iter()
            .map(|l| l.media_type.as_str())
            .find(|t| !media::is_image_layer(t))
    }
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
        platforms_of(&self.manifests)
    }

    /// The entry for `wanted`, chosen as [`select_entry`] chooses.
    pub fn select(&self, wanted: &Platform) -> Option<&Descriptor> {
        select_entry(&self.manifests, wanted)
    }
}

/// The platforms of `entries`, without attestation entries (`unknown/unknown`) and without
/// duplicates.
pub fn platforms_of(entries: &[Descriptor]) -> Vec<Platform> {
    let mut out: Vec<Platform> = Vec::new();
    for d in entries {
        if let Some(p) = &d.platform {
            if p.os != "unknown" && !out.contains(p) {
                out.push(p.clone());
            }
        }
    }
    out
}

/// The entry of an index (nested indexes already expanded) for `wanted`: the best platform
/// match as docker chooses; failing that, as containerd does, the one entry without a
/// `platform` when it is the index's only entry (attestations aside) — oras-made indexes and
/// the referrers fallback list no platforms. The caller checks that entry's config.
pub fn select_entry<'a>(entries: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    if let Some(d) = wanted.choose(entries, |d| d.platform.as_ref()) {
        return Some(d);
    }
    match entries
        .iter()
        .filter(|d| !d.is_attestation())
        .collect::<Vec<_>>()
        .as_slice()
    {
        [only] if only.platform.is_none() => Some(only),
        _ => None,
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
        let probe: Probe = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        probe.refuse_schema1(content_type)?;
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

    /// Refuse a Docker schema 1 manifest, before anything else is done with its bytes. A
    /// signed schema 1 manifest's digest covers its JWS payload only, not the bytes served,
    /// so verifying it first would report a digest mismatch instead of what it is.
    /// Bytes that are not schema 1 (or not JSON) pass; [`Manifest::parse`] judges them.
    pub fn refuse_schema1(bytes: &[u8], content_type: Option<&str>) -> Result<(), ManifestError> {
        match serde_json::from_slice::<Probe>(bytes) {
            Ok(probe) => probe.refuse_schema1(content_type),
            Err(_) if media_type_of(content_type).is_some_and(is_schema1_type) => Err(
                ManifestError::Schema1(media_type_of(content_type).unwrap_or_default().into()),
            ),
            Err(_) => Ok(()),
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

/// The fields that tell what kind of manifest a document is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
    fs_layers: Option<serde_json::Value>,
}

impl Probe {
    fn refuse_schema1(&self, content_type: Option<&str>) -> Result<(), ManifestError> {
        let declared = self.media_type.as_deref().or(media_type_of(content_type));
        if self.schema_version == Some(1)
            || self.fs_layers.is_some()
            || declared.is_some_and(is_schema1_type)
        {
            return Err(ManifestError::Schema1(
                declared.unwrap_or(media::DOCKER_SCHEMA1).to_string(),
            ));
        }
        Ok(())
    }
}

/// A Content-Type header's media type, without parameters.
fn media_type_of(content_type: Option<&str>) -> Option<&str> {
    content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty())
}

fn is_schema1_type(media_type: &str) -> bool {
    matches!(
        media_type,
        media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED
    )
}

/// The part of an image configuration ferry reads: the layers' uncompressed digests (needed
/// for docker's legacy layout), the creation time, the platform, and what `ferry inspect`
/// shows.
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
    /// The Docker version that built the image, when it says.
    #[serde(default)]
    pub docker_version: Option<String>,
    /// How a container of the image runs (environment, entrypoint, labels).
    #[serde(default)]
    pub config: Option<RunConfig>,
}

/// The `config` object of an image configuration: the defaults a container starts with.
/// Any field may be absent or `null`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
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

    #[test]
    fn an_index_entry_without_platform_is_chosen_only_when_it_is_the_only_one() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let entry = |platform: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"{d}"{platform}}}"#
            )
        };
        let attestation = entry(r#","platform":{"os":"unknown","architecture":"unknown"}"#);
        let parse = |entries: &[String]| {
            let idx = format!(
                r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
                entries.join(",")
            );
            let Manifest::Index(i) = Manifest::parse(idx.as_bytes(), None).unwrap() else {
                panic!()
            };
            i
        };
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let one = parse(&[entry(""), attestation.clone()]);
        assert!(one.select(&amd64).is_some_and(|e| e.platform.is_none()));
        assert!(one.platforms().is_empty());
        assert!(parse(&[entry(""), entry("")]).select(&amd64).is_none());
        assert!(parse(&[]).select(&amd64).is_none());
        let arm = parse(&[
            entry(""),
            entry(r#","platform":{"os":"linux","architecture":"arm64"}"#),
        ]);
        assert!(arm.select(&amd64).is_none());
    }

    #[test]
    fn signed_schema1_is_recognised_from_its_bytes_or_its_content_type() {
        let signed = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[],"signatures":[{"protected":"e30"}]}"#;
        let e = Manifest::refuse_schema1(signed, None).unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        let e =
            Manifest::refuse_schema1(b"not json", Some(media::DOCKER_SCHEMA1_SIGNED)).unwrap_err();
        assert!(e.to_string().contains(media::DOCKER_SCHEMA1_SIGNED), "{e}");
        assert!(Manifest::refuse_schema1(IMG.as_bytes(), None).is_ok());
        assert!(Manifest::refuse_schema1(b"not json", None).is_ok());
    }

    #[test]
    fn artifacts_are_told_from_images_by_artifact_type_or_config_type() {
        let Manifest::Image(image) = Manifest::parse(IMG.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(image.artifact_kind(), None);
        let helm = IMG.replace(
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.cncf.helm.config.v1+json",
        );
        let Manifest::Image(helm) = Manifest::parse(helm.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(
            helm.artifact_kind(),
            Some("application/vnd.cncf.helm.config.v1+json")
        );
        let typed = IMG.replace(
            r#""schemaVersion":2,"#,
            r#""schemaVersion":2,"artifactType":"application/spdx+json","#,
        );
        let Manifest::Image(typed) = Manifest::parse(typed.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(typed.artifact_kind(), Some("application/spdx+json"));
    }

    #[test]
    fn image_config_reads_run_settings_and_tolerates_nulls() {
        let c = ImageConfig::parse(
            br#"{"os":"linux","architecture":"arm64","docker_version":"24.0.7",
                "config":{"Env":["A=1"],"Entrypoint":null,"Cmd":["sh"],"Labels":{"k":"v"}}}"#,
        )
        .unwrap();
        let run = c.config.unwrap();
        assert_eq!(c.docker_version.as_deref(), Some("24.0.7"));
        assert_eq!(run.env, Some(vec!["A=1".to_string()]));
        assert_eq!(run.entrypoint, None);
        assert_eq!(run.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(run.labels.unwrap()["k"], "v");
        let bare = ImageConfig::parse(br#"{"config":{"Labels":null}}"#).unwrap();
        assert!(bare.config.unwrap().labels.is_none());
    }

    #[test]
    fn a_manifest_with_an_image_config_but_a_non_image_layer_is_an_artifact() {
        let with_layers = |layers: &[&str]| {
            let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
            let layers: Vec<String> = layers
                .iter()
                .map(|t| format!(r#"{{"mediaType":"{t}","size":5,"digest":"{d}"}}"#))
                .collect();
            let doc = format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":3,"digest":"{d}"}},"layers":[{}]}}"#,
                media::OCI_MANIFEST,
                media::OCI_CONFIG,
                layers.join(",")
            );
            let Manifest::Image(m) = Manifest::parse(doc.as_bytes(), None).unwrap() else {
                panic!()
            };
            m
        };
        // A classic cosign `.sig` manifest: image config, no artifactType.
        let cosign = "application/vnd.dev.cosign.simplesigning.v1+json";
        assert_eq!(with_layers(&[cosign]).artifact_kind(), Some(cosign));
        // A BuildKit attestation manifest.
        let in_toto = "application/vnd.in-toto+json";
        assert_eq!(
            with_layers(&[media::OCI_LAYER_GZIP, in_toto]).artifact_kind(),
            Some(in_toto)
        );
        // Every image layer kind, and no layers at all, leave an image.
        assert_eq!(
            with_layers(&[
                media::OCI_LAYER_TAR,
                media::OCI_LAYER_GZIP,
                media::OCI_LAYER_ZSTD,
                media::OCI_LAYER_NONDISTRIBUTABLE_GZIP,
                media::DOCKER_LAYER_GZIP,
                media::DOCKER_FOREIGN_LAYER_GZIP,
            ])
            .artifact_kind(),
            None
        );
        assert_eq!(with_layers(&[]).artifact_kind(), None);
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
