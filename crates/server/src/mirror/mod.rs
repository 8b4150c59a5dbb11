//! The pull-through registry mirror under `/v2/`: the read side of the Registry HTTP API
//! (the OCI distribution spec's pull section) in front of upstream registries, with the
//! same cache, limits, metrics and address rules as the archive endpoints. Docker, podman,
//! containerd and skopeo use it with their usual mirror settings.
//!
//! Which upstream: containerd's `?ns=HOST`, else a host as the name's first component
//! (`/v2/ghcr.io/o/r/…`), else `--mirror-of` (default `docker.io`, where `alpine` is
//! `library/alpine`). Every one goes through the [`crate::AddressPolicy`].
//!
//! - [`name`]: paths and names, checked by the spec's grammar; the upstream choice.
//! - [`manifests`], [`blobs`], [`tags`]: the three reads.
//! - [`fetch`]: one upstream fetch per blob, read by every client while it arrives.
//! - [`auth`]: `--token` as a registry asks for it (Basic).
//! - [`error`]: the registry's JSON errors.

pub mod auth;
mod blobs;
mod error;
mod fetch;
mod manifests;
mod name;
mod tags;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};

use ferry_core::{Digest, Manifest, Reference};

pub use error::V2Error;
use name::Object;

use crate::State;

/// The route a `/v2/` response counts under in the metrics (the client's path holds names).
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// Repository-and-digest facts remembered before the table is emptied (each entry ~150
/// bytes; emptied, they are asked of upstream again).
const MAX_KNOWN: usize = 200_000;

/// Tags whose digests are remembered before unused ones go.
const MAX_TAGS: usize = 4096;

type TagSlot = Arc<tokio::sync::Mutex<Option<(Instant, Digest)>>>;

/// The mirror's own state, inside [`State`].
#[derive(Default)]
pub struct Mirror {
    /// By `registry/repository:tag`, each single-flighting its upstream question.
    tags: Mutex<HashMap<String, TagSlot>>,
    /// Which digests (manifests and blobs) each upstream repository has shown, with their
    /// sizes: the mirror serves a cached object to a repository only when this says so.
    known: Mutex<HashMap<(String, Digest), u64>>,
    fetches: fetch::Fetches,
}

impl Mirror {
    fn known(&self, r: &Reference, d: &Digest) -> Option<u64> {
        let k = (r.name(), d.clone());
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&k)
            .copied()
    }

    fn learn(&self, r: &Reference, d: &Digest, size: u64) {
        let mut m = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_KNOWN {
            m.clear();
        }
        m.insert((r.name(), d.clone()), size);
    }

    /// A manifest served for `r`'s repository vouches for itself and what it lists.
    fn learn_manifest(&self, r: &Reference, d: &Digest, bytes: &[u8]) {
        self.learn(r, d, bytes.len() as u64);
        match Manifest::parse(bytes, None) {
            Ok(Manifest::Index(idx)) => {
                for m in &idx.manifests {
                    self.learn(r, &m.digest, m.size);
                }
            }
            Ok(Manifest::Image(im)) => {
                for b in std::iter::once(&im.config).chain(&im.layers) {
                    self.learn(r, &b.digest, b.size);
                }
            }
            Err(_) => {}
        }
    }

    fn tag_slot(&self, r: &Reference) -> TagSlot {
        let mut m = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_TAGS {
            m.retain(|_, v| Arc::strong_count(v) > 1);
        }
        m.entry(format!("{}:{}", r.name(), r.manifest_reference()))
            .or_default()
            .clone()
    }
}

/// Whether `path` is the mirror's.
pub fn is_v2(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

fn route_label(path: &str) -> &'static str {
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    match name::parse(rest).map(|p| p.object) {
        Ok(Object::Manifest(_)) => "v2_manifest",
        Ok(Object::Blob(_)) => "v2_blob",
        Ok(Object::Tags) => "v2_tags",
        Err(_) => "v2",
    }
}

fn labelled(label: &'static str, mut resp: Response) -> Response {
    resp.extensions_mut().insert(RouteLabel(label));
    resp
}

/// `GET /v2/`: the API version check clients start with.
pub async fn ping(req: Request) -> Response {
    let resp = if matches!(*req.method(), Method::GET | Method::HEAD) {
        (
            [
                ("docker-distribution-api-version", "registry/2.0"),
                (header::CONTENT_TYPE.as_str(), "application/json"),
            ],
            "{}",
        )
            .into_response()
    } else {
        V2Error::unsupported().into_response()
    };
    labelled("v2", with_version(resp))
}

fn with_version(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        header::HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// Every `/v2/<name>/…` request.
pub async fn dispatch(AxState(st): AxState<Arc<State>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let label = route_label(&path);
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    // The body is not `Sync`: keep only what the handlers read across their awaits.
    let (parts, _) = req.into_parts();
    let r = handle(&st, &parts, &path, peer).await;
    let resp = match r {
        Ok(resp) => resp,
        Err(e) => {
            if e.status >= 500 {
                st.metrics.upstream_error(e.code.as_str());
            }
            e.into_response()
        }
    };
    labelled(label, with_version(resp))
}

async fn handle(
    st: &Arc<State>,
    req: &axum::http::request::Parts,
    path: &str,
    peer: Option<std::net::IpAddr>,
) -> Result<Response, V2Error> {
    let method = &req.method;
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(V2Error::unsupported());
    }
    let rest = path.strip_prefix("/v2/").unwrap_or_default();
    let p = name::parse(rest)?;
    let q = crate::http::query(req.uri.query());
    let r = name::upstream(
        &p.name,
        q.get("ns").map(String::as_str),
        &st.config.mirror_of,
    )?;
    st.config.policy.check(&r)?;
    let headers = &req.headers;
    match &p.object {
        Object::Manifest(reference) => manifests::serve(st, &r, reference, method, headers).await,
        Object::Blob(d) => blobs::serve(st, &r, d, method, headers, peer).await,
        Object::Tags => tags::serve(st, &r, &p.name, &q).await,
    }
}
