//! An in-process fake OCI distribution registry with fault injection.
//!
//! [`FakeRegistry::start`] binds `127.0.0.1:0` and serves `/v2/`, manifests, blobs (with
//! `Range`), tag lists and the catalog, optionally behind Basic or Bearer auth; and the
//! write side: blob uploads (mount, chunked, monolithic), manifest PUT and DELETE (once
//! [`FakeRegistry::enable_deletes`]). Faults ([`Fault`]) can be added and cleared at any
//! time; every request is logged.

mod auth;
mod blobs;
mod handlers;
mod uploads;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ferry_core::Digest;
use tokio::task::JoinHandle;

use crate::image::{TestImage, TestIndex};

/// Which JSON field(s) the token endpoint puts the token in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenField {
    Token,
    AccessToken,
    Both,
}

/// How the fake registry authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeAuth {
    None,
    /// `401` with `WWW-Authenticate: Basic realm="fake"` unless these credentials are sent.
    Basic {
        user: String,
        pass: String,
    },
    /// Docker token auth: a `Bearer` challenge pointing at the fake's own `/token` endpoint,
    /// which checks these Basic credentials if set and hands out anonymous tokens otherwise.
    Bearer {
        credentials: Option<(String, String)>,
        token_field: TokenField,
        expires_in: Option<u64>,
    },
}

/// A fault the fake registry injects into its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Send the headers and `after` bytes of the body, then abort the connection, for the
    /// first `times` blob GETs of `digest` (or of any blob when `None`).
    DropAfter {
        digest: Option<Digest>,
        after: u64,
        times: usize,
    },
    /// Always serve this blob with one byte flipped (same length).
    WrongDigest { digest: Digest },
    /// Ignore `Range` headers: always 200 with the full body.
    NoRange,
    /// Answer the first `times` blob GETs with 429 and `Retry-After`.
    TooManyRequests { times: usize, retry_after_secs: u64 },
    /// Answer the first `times` blob GETs with 503.
    ServerError { times: usize },
    /// In Bearer mode, each token stops working after it has authorized `requests` requests.
    ExpireTokensAfter { requests: usize },
    /// Send blob bodies in small chunks at this rate.
    Throttle { bytes_per_sec: u64 },
    /// Answer blob GETs with 307 to a second listener at `http://localhost:<port2>/...`,
    /// which serves the bytes without auth and records whether `Authorization` arrived.
    RedirectBlobs,
    /// With `RedirectBlobs`: the redirect target answers 401 with a Bearer challenge whose
    /// realm is on the redirect listener itself — a client must not send credentials there.
    RedirectTargetChallenges,
    /// Answer every blob `Range` request with the whole blob as a 206 whose `Content-Range`
    /// starts at 0, whatever offset was asked for.
    ContentRangeFromZero,
    /// Spell `Content-Range` of 206 answers `bytes=START-END/TOTAL` (a `Range` header's
    /// syntax) instead of `bytes START-END/TOTAL`.
    ContentRangeBytesEquals,
    /// The `/v2/` ping answers with this status (404: not a registry's API address).
    PingStatus { status: u16 },
    /// The `/v2/` ping accepts the request and never answers.
    HangPing,
    /// The token endpoint answers every request with this status.
    TokenStatus { status: u16 },
    /// The token endpoint waits this long before answering.
    SlowTokens { millis: u64 },
    /// Manifest bodies are sent at this rate (after prompt headers).
    TrickleManifests { bytes_per_sec: u64 },
    /// Manifest GETs are redirected (307) to themselves, for ever.
    RedirectLoop,
    /// Send this one blob's body in small chunks at this rate (others at full speed).
    ThrottleBlob { digest: Digest, bytes_per_sec: u64 },
    /// Answer every manifest request with `status` and a distribution-spec error body holding
    /// `code` and `message`, which may be any text (escape sequences included).
    ManifestError {
        status: u16,
        code: String,
        message: String,
    },
    /// Answer with `status` and prompt headers, then send the error body (a few hundred
    /// bytes) at this rate: the `/v2/` ping when `on_ping`, else every manifest request.
    TrickleErrorBody {
        status: u16,
        bytes_per_sec: u64,
        on_ping: bool,
    },
    /// In Bearer mode, as Docker Hub does: the token endpoint grants no access to a
    /// repository the fake does not hold, even to valid credentials, so the registry answers
    /// 401 (not 404) for it.
    UnknownReposUnauthorized,
    /// Manifest answers (GET and HEAD) carry no `Docker-Content-Digest` header.
    NoDigestHeader,
    /// Tag lists and the catalog hold at most `n` entries a page, whatever `n` the client
    /// asks for (registries may send fewer), with a `Link` to the next page.
    PageSize { n: usize },
    /// `/v2/_catalog` answers 404 `UNSUPPORTED`, as registries that do not offer it do.
    NoCatalog,
    /// The first `times` upload bodies (PATCH, PUT) are cut after `after` bytes: those bytes
    /// are kept in the session, as a registry does, and the request is answered 500 on a
    /// connection that closes.
    CutUpload { after: u64, times: usize },
    /// PATCH on an upload session answers 405 `UNSUPPORTED`: chunked uploads are refused.
    RejectPatch,
    /// The next `times` requests on an upload session find it forgotten: the session is
    /// dropped and answered 404 `BLOB_UPLOAD_UNKNOWN`.
    ForgetUploads { times: usize },
    /// A POST with `?mount=&from=` opens an upload session (202) instead of mounting.
    RefuseMounts,
    /// In Bearer mode, the token endpoint grants only `pull`, whatever actions are asked:
    /// the credentials are good, the account may not write.
    PullOnlyTokens,
    /// PATCH and PUT on upload sessions are accepted and never answered (nor their bodies
    /// read).
    HangUploads,
    /// The commit of an upload (a `PUT ?digest=`, with the whole blob or after chunks)
    /// takes `ms` before it is done and answered, as a registry re-reading or copying a
    /// large blob does.
    SlowCommit { ms: u64 },
    /// A GET on an upload session (its status) answers 405 `UNSUPPORTED`, as registries
    /// without that endpoint do.
    NoUploadStatus,
}

/// One request the fake saw (on either listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    /// The request's `Content-Range` (upload chunks).
    pub content_range: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Repo {
    /// Manifests by tag and by digest string: (media type, bytes).
    pub(crate) manifests: HashMap<String, (String, Bytes)>,
    pub(crate) tags: BTreeSet<String>,
    pub(crate) blobs: HashMap<Digest, Bytes>,
}

#[derive(Debug)]
pub(crate) struct Token {
    pub(crate) scopes: Vec<String>,
    pub(crate) uses: usize,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) auth: FakeAuth,
    pub(crate) addr: SocketAddr,
    pub(crate) redirect_addr: SocketAddr,
    pub(crate) repos: BTreeMap<String, Repo>,
    pub(crate) faults: Vec<Fault>,
    pub(crate) log: Vec<LoggedRequest>,
    pub(crate) blob_gets: HashMap<Digest, usize>,
    pub(crate) tokens: HashMap<String, Token>,
    pub(crate) tokens_issued: usize,
    pub(crate) redirect_saw_authorization: bool,
    /// Blob body bytes handed to the connections of the main listener so far.
    pub(crate) body_bytes: Arc<AtomicU64>,
    /// Upload sessions by id.
    pub(crate) uploads: HashMap<String, uploads::Upload>,
    pub(crate) next_upload: u64,
    /// Upload body bytes received and kept (PATCH and PUT bodies, manifests included).
    pub(crate) upload_bytes: u64,
    /// Cross-repository mounts done.
    pub(crate) mounts: usize,
    pub(crate) deletes_enabled: bool,
}

pub(crate) type Shared = Arc<Mutex<State>>;

pub(crate) fn lock(s: &Shared) -> MutexGuard<'_, State> {
    // A panicking test thread must not wedge the fake for everyone else.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fake registry. Its servers are stopped when it is dropped.
pub struct FakeRegistry {
    state: Shared,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeRegistry {
    /// Start the registry (and its redirect listener) on loopback.
    pub async fn start(auth: FakeAuth) -> FakeRegistry {
        let main = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake registry");
        let redirect = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake redirect listener");
        let state: Shared = Arc::new(Mutex::new(State {
            auth,
            addr: main.local_addr().expect("local addr"),
            redirect_addr: redirect.local_addr().expect("local addr"),
            repos: BTreeMap::new(),
            faults: Vec::new(),
            log: Vec::new(),
            blob_gets: HashMap::new(),
            tokens: HashMap::new(),
            tokens_issued: 0,
            redirect_saw_authorization: false,
            body_bytes: Arc::new(AtomicU64::new(0)),
            uploads: HashMap::new(),
            next_upload: 0,
            upload_bytes: 0,
            mounts: 0,
            deletes_enabled: false,
        }));
        let main_app = handlers::main_router(state.clone());
        let redirect_app = handlers::redirect_router(state.clone());
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(main, main_app).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(redirect, redirect_app).await;
            }),
        ];
        FakeRegistry { state, tasks }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        lock(&self.state).addr.to_string()
    }

    /// `localhost:<port2>`: where [`Fault::RedirectBlobs`] sends blob GETs.
    pub fn redirect_host(&self) -> String {
        format!("localhost:{}", lock(&self.state).redirect_addr.port())
    }

    /// Store an image's manifest (by tag and by digest), config and layers.
    pub fn push_image(&self, repo: &str, tag: &str, img: &TestImage) {
        for blob in img.blobs() {
            self.put_blob(repo, blob.digest.clone(), blob.bytes.clone());
        }
        self.put_manifest(
            repo,
            Some(tag),
            &img.manifest_media_type,
            img.manifest.clone(),
        );
    }

    /// Store an index (by tag and by digest) and all of its images (by digest).
    pub fn push_index(&self, repo: &str, tag: &str, idx: &TestIndex) {
        for img in &idx.images {
            for blob in img.blobs() {
                self.put_blob(repo, blob.digest.clone(), blob.bytes.clone());
            }
            self.put_manifest(repo, None, &img.manifest_media_type, img.manifest.clone());
        }
        self.put_manifest(repo, Some(tag), &idx.media_type, idx.bytes.clone());
    }

    /// Store arbitrary manifest bytes under `tag` (and their sha256 digest) with any media type.
    pub fn put_manifest_raw(&self, repo: &str, tag: &str, media_type: &str, bytes: Bytes) {
        self.put_manifest(repo, Some(tag), media_type, bytes);
    }

    /// Store a blob under `digest` (which need not match the bytes).
    pub fn put_blob(&self, repo: &str, digest: Digest, bytes: Bytes) {
        lock(&self.state)
            .repos
            .entry(repo.to_string())
            .or_default()
            .blobs
            .insert(digest, bytes);
    }

    fn put_manifest(&self, repo: &str, tag: Option<&str>, media_type: &str, bytes: Bytes) {
        let digest = Digest::sha256_of(&bytes).to_string();
        let mut st = lock(&self.state);
        let r = st.repos.entry(repo.to_string()).or_default();
        let entry = (media_type.to_string(), bytes);
        if let Some(tag) = tag {
            r.tags.insert(tag.to_string());
            r.manifests.insert(tag.to_string(), entry.clone());
        }
        r.manifests.insert(digest, entry);
    }

    pub fn add_fault(&self, f: Fault) {
        lock(&self.state).faults.push(f);
    }

    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    /// Every request so far, in order of completion of their headers.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.state).log.clone()
    }

    /// How many blob GETs for `digest` reached the registry (any status).
    pub fn blob_gets(&self, digest: &Digest) -> usize {
        lock(&self.state)
            .blob_gets
            .get(digest)
            .copied()
            .unwrap_or(0)
    }

    /// Whether any request to the redirect listener carried an `Authorization` header.
    pub fn redirect_saw_authorization(&self) -> bool {
        lock(&self.state).redirect_saw_authorization
    }

    /// Blob body bytes sent so far on the main listener (a body stops being counted when
    /// its client hangs up).
    pub fn body_bytes_sent(&self) -> u64 {
        lock(&self.state).body_bytes.load(Ordering::Relaxed)
    }

    pub fn tokens_issued(&self) -> usize {
        lock(&self.state).tokens_issued
    }

    /// Upload body bytes the registry received and kept so far (blob chunks and manifests).
    pub fn upload_bytes(&self) -> u64 {
        lock(&self.state).upload_bytes
    }

    /// Cross-repository mounts done so far.
    pub fn mounts(&self) -> usize {
        lock(&self.state).mounts
    }

    /// Upload sessions open now.
    pub fn open_uploads(&self) -> usize {
        lock(&self.state).uploads.len()
    }

    /// Allow manifest DELETE (refused with 405 `UNSUPPORTED` until then, as docker-registry
    /// does without `REGISTRY_STORAGE_DELETE_ENABLED`).
    pub fn enable_deletes(&self) {
        lock(&self.state).deletes_enabled = true;
    }

    /// The blob `digest` of `repo`, if held.
    pub fn blob(&self, repo: &str, digest: &Digest) -> Option<Bytes> {
        lock(&self.state)
            .repos
            .get(repo)?
            .blobs
            .get(digest)
            .cloned()
    }

    /// Manifest `reference` (tag or digest) of `repo`: (media type, bytes).
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Bytes)> {
        lock(&self.state)
            .repos
            .get(repo)?
            .manifests
            .get(reference)
            .cloned()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
