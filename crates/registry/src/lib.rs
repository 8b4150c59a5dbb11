//! `ferry-registry` is ferry's own thin client for the OCI distribution API (Docker Registry
//! HTTP API v2), on `reqwest`: it pings `/v2/` and answers the `WWW-Authenticate` challenge
//! (Bearer tokens per scope, refreshed when they expire, or Basic), finds credentials the way
//! docker and podman do, fetches manifests (verified against their digest) and streams blobs
//! into a [`ferry_core::ResumableWrite`] with retries, backoff, `Retry-After` and `Range`
//! resume. It uploads too ([`Client::push_blob`]: cross-repository mount, one PUT for small
//! blobs, PATCH chunks streamed from a re-openable [`UploadBody`] and resumed from the
//! registry's offset), puts and deletes manifests, and asks for typed token [`Scopes`].
//! A registry that cannot be reached on first contact fails at once; small requests
//! have a deadline and blob bodies a minimum throughput; every retry is announced through
//! [`ClientOptions::on_retry`]. Reads may go to mirrors first ([`mirror`]: `?ns=`, in
//! order, falling back with a notice). Errors are a typed [`RegistryError`] with `is_not_found()` /
//! `is_retryable()`, each rendering as one sentence.
//!
//! ```no_run
//! # async fn f() -> Result<(), ferry_registry::RegistryError> {
//! let client = ferry_registry::Client::new(Default::default())?;
//! let r: ferry_core::Reference = "alpine:3.20".parse().unwrap();
//! let m = client.manifest(&r).await?;
//! println!("{} {}", m.media_type, m.digest);
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod body;
pub mod challenge;
mod chunks;
mod client;
pub mod credentials;
pub mod credentials_store;
pub mod error;
mod guard;
mod login;
mod manifest_write;
pub mod mirror;
mod mount;
mod patch;
mod refusal;
mod scope;
mod upload;

pub use api::{FetchedManifest, ProgressFn};
pub use body::{ByteStream, BytesBody, FileBody, UploadBody};
pub use client::{Client, ClientOptions, RetryHook, RetryNotice};
pub use credentials::{Credential, CredentialError, CredentialFiles};
pub use credentials_store::{CredentialStore, StoredIn};
pub use error::{RegistryError, RegistryErrorCode};
pub use guard::AddressGuard;
pub use login::LoginCheck;
pub use mirror::{MirrorHook, MirrorNotice, MirrorRule};
pub use scope::{Scope, Scopes};
pub use upload::{Pushed, UploadOptions, DEFAULT_CHUNK_SIZE};
