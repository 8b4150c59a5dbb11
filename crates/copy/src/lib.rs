//! `ferry-copy` is the one copy engine. It resolves references to manifests (choosing the
//! platform from an index the way docker does), works out which blobs the store lacks,
//! downloads those in parallel through the registry client into the store — each one
//! verified, resumable, reported as progress events — and hands back the [`ArchiveImage`]s
//! an archive writer needs.
//!
//! The send side copies an image from an [`ImageSource`] (an archive, or a registry through
//! the store) to an [`ImageDestination`] (a registry repository): [`send_image`] takes every
//! blob through one pipeline — held? mountable? else sent, checked while it streams, an
//! uncompressed layer gzip-compressed on the way — and stores the manifests last, so a
//! failure never leaves a tag naming a broken image. `ferry push` and `ferry copy` are
//! this; `ferry pull` is the download side above.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let client = ferry_registry::Client::new(Default::default())?;
//! let store = ferry_store::Store::open("/tmp/cache")?;
//! let refs = vec!["alpine:3.20".parse()?];
//! let opts = ferry_copy::PullOptions::default();
//! let images = ferry_copy::pull(&client, &store, &refs, &opts, Arc::new(ferry_copy::NoProgress)).await?;
//! # Ok(()) }
//! ```

// `CopyError` is large because it keeps the registry's whole error (method, URL, codes);
// it travels only on the failure path, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod arrivals;
mod body;
mod direct;
mod engine;
mod memo;
mod private;
mod progress;
mod registry_dest;
mod seam;
mod sources;
mod to_archive;
mod transfer;

use ferry_core::{Digest, Platform};

pub use arrivals::{Arrivals, ArrivingReader};
pub use body::{ContentError, OpenBlob, SendBody};
pub use direct::DirectArchive;
pub use engine::{fetch_blobs, pull, resolve_all};
pub use ferry_archive::{ArchiveImage, ImageParts};
pub use memo::CompressedMemo;
pub use progress::{Event, NoProgress, Progress};
pub use registry_dest::{MountHints, RegistryDestination};
pub use seam::{CopyBlob, CopyImage, CopyPlatform, ImageDestination, ImageSource, SourceManifest};
pub use sources::{archive_image, registry_image, ArchiveSource, PlatformChoice, RegistrySource};
pub use to_archive::{archive_output, ArchiveBlobs};
pub use transfer::{send_image, SendOptions, Sent};

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to take from an index; the machine's own by default.
    pub platform: Platform,
    /// Whether `platform` was asked for explicitly (then a single-platform image of another
    /// platform is an error, not a warning).
    pub platform_explicit: bool,
    /// Keep the whole index, every platform.
    pub all_platforms: bool,
    /// Blobs downloaded at once.
    pub jobs: usize,
    /// Whether OCI artifacts (Helm charts, SBOMs, signatures: manifests that are not
    /// container images) may be pulled. An OCI layout holds any manifest; docker's archive
    /// formats cannot, so the default is to refuse them.
    pub keep_artifacts: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            platform_explicit: false,
            all_platforms: false,
            jobs: 4,
            keep_artifacts: false,
        }
    }
}

/// Why a copy failed. Each variant names the image or blob involved.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("fetching the manifest of {reference}")]
    Manifest {
        reference: String,
        #[source]
        source: ferry_registry::RegistryError,
    },
    #[error("downloading blob {digest} of {reference}")]
    Blob {
        reference: String,
        digest: Digest,
        #[source]
        source: ferry_registry::RegistryError,
    },
    #[error("{reference} has no image for {wanted}; {}", platform_list(available))]
    NoPlatform {
        reference: String,
        wanted: Platform,
        available: Vec<Platform>,
    },
    #[error("{reference} is an image for {actual}, not {wanted}")]
    WrongPlatform {
        reference: String,
        wanted: Platform,
        actual: String,
    },
    #[error("{reference}: the manifest lists {kind} {digest}, which is not what an image manifest may hold there")]
    Unexpected {
        reference: String,
        kind: &'static str,
        digest: Digest,
    },
    #[error("{reference} is an OCI artifact ({kind}), not a container image; use --format oci to keep it")]
    Artifact { reference: String, kind: String },
    #[error("{reference} holds no container image docker could load (only attestations or artifacts); use --format oci to keep it")]
    NothingLoadable { reference: String },
    #[error("{reference} has a foreign layer {digest} ({media_type}) that its registry does not hold; ferry does not fetch foreign layers from the addresses a manifest names{}", url.as_deref().map(|u| format!(" ({u})")).unwrap_or_default())]
    ForeignLayer {
        reference: String,
        digest: Digest,
        media_type: String,
        url: Option<String>,
    },
    #[error("{reference}: indexes nest more than {depth} deep; ferry stops there")]
    NestedTooDeep { reference: String, depth: usize },
    #[error("{reference}: resolving it would fetch more than {limit} manifests (its indexes and the images they list); ferry stops there")]
    TooManyManifests { reference: String, limit: usize },
    #[error("caching blob {digest}")]
    Store {
        digest: Digest,
        #[source]
        source: ferry_store::StoreError,
    },
    #[error("writing blob {digest} into the output")]
    Output {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("a download task failed: {0}")]
    Task(String),
    /// A manifest that contradicts verified content in the cache (a blob's size).
    #[error("refusing the manifest of {reference}")]
    BadManifest {
        reference: String,
        #[source]
        source: ferry_store::StoreError,
    },
    /// A blob whose content is not what the image says: found while it was sent, before
    /// any manifest was stored.
    #[error("{image} is damaged: what it holds does not match its manifest and config")]
    Content {
        image: String,
        #[source]
        source: ContentError,
    },
    /// An image the source describes in a way ferry cannot store.
    #[error("{image} cannot be copied: {reason}")]
    BadSource { image: String, reason: String },
    /// The destination refused or failed a request.
    #[error("{what}")]
    Destination {
        what: String,
        #[source]
        source: ferry_registry::RegistryError,
    },
    /// The source could not be read.
    #[error("{what}")]
    Source {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// "it has: a, b", or "it lists no platforms" rather than an empty list.
fn platform_list(available: &[Platform]) -> String {
    if available.is_empty() {
        return "it lists no platforms".into();
    }
    let names: Vec<String> = available.iter().map(ToString::to_string).collect();
    format!("it has: {}", names.join(", "))
}

#[cfg(test)]
mod transfer_tests;
