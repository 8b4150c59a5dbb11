//! `ferry-core` is ferry's shared vocabulary and depends on no other ferry crate, no network
//! and no filesystem: image [`Reference`]s with Docker Hub normalising, content [`Digest`]s
//! and the [`Verifier`] every blob byte passes through, media types, the [`Manifest`] model
//! (OCI and Docker schema 2, images and indexes) and [`Platform`] selection.
//!
//! ```
//! use ferry_core::Reference;
//! let r: Reference = "alpine:3.20".parse().unwrap();
//! assert_eq!(r.to_string(), "docker.io/library/alpine:3.20");
//! assert_eq!(r.api_host(), "registry-1.docker.io");
//! assert_eq!(r.familiar(), "alpine:3.20");
//! ```

pub mod digest;
pub mod manifest;
pub mod media;
pub mod platform;
pub mod reference;
pub mod verify;

pub use digest::{Algorithm, Digest, DigestError};
pub use manifest::{Descriptor, ImageManifest, IndexManifest, Manifest, ManifestError};
pub use platform::{Platform, PlatformError};
pub use reference::{Reference, ReferenceError};
pub use verify::{ResumableWrite, Verifier, VerifyError, VerifyingReader};

/// The most a manifest or an image config may hold (distribution, podman and skopeo use the
/// same limit); anything larger is refused rather than read into memory.
pub const MAX_SMALL_BLOB: u64 = 4 * 1024 * 1024;

/// How a refusal over [`MAX_SMALL_BLOB`] ends, after "… is N bytes; ".
pub const MAX_SMALL_BLOB_RULE: &str = "a manifest or image config may hold at most 4 MiB";

const _: () = assert!(MAX_SMALL_BLOB == 4 << 20, "MAX_SMALL_BLOB_RULE says 4 MiB");
