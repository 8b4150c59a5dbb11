//! The write side of the fake registry: blob upload sessions (POST with or without a mount,
//! PATCH with and without `Content-Range`, status GET, PUT `?digest=` verified, cancel),
//! manifest PUT (by tag or digest, its blobs checked) and DELETE, with the upload faults
//! (bodies cut after N bytes, PATCH refused, sessions forgotten, mounts refused).

use axum::body::Body;
use axum::extract::{Query, Request};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use ferry_core::Digest;
use futures_util::StreamExt;

use super::auth::{self, Scope};
use super::handlers::{error, set_header};
use super::{lock, Fault, Shared};

/// An upload session: the repository and the bytes received so far.
#[derive(Debug)]
pub(crate) struct Upload {
    pub(crate) repo: String,
    pub(crate) data: Vec<u8>,
}

/// What a write request addresses.
pub(crate) enum WriteTarget {
    /// `POST /v2/<name>/blobs/uploads/`.
    Start { name: String },
    /// `/v2/<name>/blobs/uploads/<id>`.
    Session { name: String, id: String },
    /// `PUT`/`DELETE /v2/<name>/manifests/<reference>`.
    Manifest { name: String, reference: String },
}

/// The write target of `method path`, if it is one.
pub(crate) fn write_target(method: &Method, path: &str) -> Option<WriteTarget> {
    let rest = path.strip_prefix("/v2/")?;
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        if name.is_empty() {
            return None;
        }
        return Some(if id.is_empty() {
            WriteTarget::Start {
                name: name.to_string(),
            }
        } else {
            WriteTarget::Session {
                name: name.to_string(),
                id: id.to_string(),
            }
        });
    }
    if rest.ends_with("/blobs/uploads") {
        return Some(WriteTarget::Start {
            name: rest.trim_end_matches("/blobs/uploads").to_string(),
        });
    }
    if *method == Method::PUT || *method == Method::DELETE {
        let (name, reference) = rest.rsplit_once("/manifests/")?;
        if !name.is_empty() && !reference.is_empty() && !reference.contains('/') {
            return Some(WriteTarget::Manifest {
                name: name.to_string(),
                reference: reference.to_string(),
            });
        }
    }
    None
}

/// Serve a write request (its body is read here).
pub(crate) async fn handle(state: &Shared, target: WriteTarget, req: Request) -> Response {
    let name = match &target {
        WriteTarget::Start { name }
        | WriteTarget::Session { name, .. }
        | WriteTarget::Manifest { name, .. } => name.clone(),
    };
    {
        let mut st = lock(state);
        let scope =
            if *req.method() == Method::DELETE && matches!(target, WriteTarget::Manifest { .. }) {
                Scope::Delete(&name)
            } else {
                Scope::Push(&name)
            };
        if let Err(resp) = auth::check(&mut st, req.headers(), scope) {
            return resp;
        }
    }
    let query = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let param = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let method = req.method().clone();
    match (target, method) {
        (WriteTarget::Start { name }, Method::POST) => {
            // A token without pull on the source gets a session, not a mount, as Docker
            // Hub answers.
            let from = param("from").filter(|f| auth::may_pull(&lock(state), req.headers(), f));
            start(state, &name, param("mount"), from)
        }
        (WriteTarget::Session { name, id }, m) => {
            if let Some(resp) = forgotten(state, &id) {
                return resp;
            }
            let hang = lock(state)
                .faults
                .iter()
                .any(|f| matches!(f, Fault::HangUploads));
            if hang && matches!(m, Method::PATCH | Method::PUT) {
                std::future::pending::<()>().await;
            }
            let no_status = lock(state)
                .faults
                .iter()
                .any(|f| matches!(f, Fault::NoUploadStatus));
            match m {
                Method::GET if no_status => unsupported(),
                Method::GET => status(state, &name, &id),
                Method::PATCH => patch(state, &name, &id, req).await,
                Method::PUT => put(state, &name, &id, param("digest"), req).await,
                Method::DELETE => {
                    lock(state).uploads.remove(&id);
                    empty(StatusCode::NO_CONTENT)
                }
                _ => unsupported(),
            }
        }
        (WriteTarget::Manifest { name, reference }, Method::PUT) => {
            put_manifest(state, &name, &reference, req).await
        }
        (WriteTarget::Manifest { name, reference }, Method::DELETE) => {
            delete_manifest(state, &name, &reference)
        }
        _ => unsupported(),
    }
}

fn unsupported() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "the operation is unsupported",
    )
}

fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

fn upload_unknown() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        "blob upload unknown to registry",
    )
}

/// [`Fault::ForgetUploads`]: the session is dropped and said to be unknown.
fn forgotten(state: &Shared, id: &str) -> Option<Response> {
    let mut st = lock(state);
    let forget = st.faults.iter_mut().any(|f| match f {
        Fault::ForgetUploads { times } if *times > 0 => {
            *times -= 1;
            true
        }
        _ => false,
    });
    if forget {
        st.uploads.remove(id);
    }
    if forget || !st.uploads.contains_key(id) {
        return Some(upload_unknown());
    }
    None
}

/// The answer naming session `id` and how much it holds.
fn session_response(status: StatusCode, name: &str, id: &str, held: usize) -> Response {
    let mut resp = empty(status);
    // Relative, with a query the client must keep (as distribution's `_state`).
    set_header(
        &mut resp,
        "location",
        &format!("/v2/{name}/blobs/uploads/{id}?_state={held}"),
    );
    set_header(&mut resp, "range", &format!("0-{}", held.saturating_sub(1)));
    set_header(&mut resp, "docker-upload-uuid", id);
    set_header(&mut resp, "content-length", "0");
    resp
}

fn start(state: &Shared, name: &str, mount: Option<String>, from: Option<String>) -> Response {
    let mut st = lock(state);
    if let (Some(mount), Some(from)) = (mount, from) {
        let refuse = st.faults.iter().any(|f| matches!(f, Fault::RefuseMounts));
        let found = mount.parse::<Digest>().ok().and_then(|d| {
            let bytes = st.repos.get(&from)?.blobs.get(&d)?.clone();
            Some((d, bytes))
        });
        if let (false, Some((digest, bytes))) = (refuse, found) {
            st.repos
                .entry(name.to_string())
                .or_default()
                .blobs
                .insert(digest.clone(), bytes);
            st.mounts += 1;
            let mut resp = empty(StatusCode::CREATED);
            set_header(&mut resp, "location", &format!("/v2/{name}/blobs/{digest}"));
            set_header(&mut resp, "docker-content-digest", &digest.to_string());
            set_header(&mut resp, "content-length", "0");
            return resp;
        }
    }
    st.next_upload += 1;
    let id = format!("upload-{}", st.next_upload);
    st.uploads.insert(
        id.clone(),
        Upload {
            repo: name.to_string(),
            data: Vec::new(),
        },
    );
    session_response(StatusCode::ACCEPTED, name, &id, 0)
}

fn status(state: &Shared, name: &str, id: &str) -> Response {
    let st = lock(state);
    let held = st.uploads.get(id).map_or(0, |u| u.data.len());
    session_response(StatusCode::NO_CONTENT, name, id, held)
}

/// Read a request body, keeping at most what [`Fault::CutUpload`] lets through. Returns the
/// bytes kept and whether the body was cut.
async fn read_body(state: &Shared, req: Request) -> (Vec<u8>, bool) {
    let cut_at = {
        let mut st = lock(state);
        st.faults.iter_mut().find_map(|f| match f {
            Fault::CutUpload { after, times } if *times > 0 => {
                *times -= 1;
                Some(*after)
            }
            _ => None,
        })
    };
    let mut stream = req.into_body().into_data_stream();
    let mut kept = Vec::new();
    while let Some(frame) = stream.next().await {
        let Ok(frame) = frame else {
            // The client hung up: keep what arrived, as a registry does.
            return (kept, true);
        };
        let take = match cut_at {
            Some(limit) => frame
                .len()
                .min(limit.saturating_sub(kept.len() as u64) as usize),
            None => frame.len(),
        };
        kept.extend_from_slice(&frame[..take]);
        lock(state).upload_bytes += take as u64;
        if cut_at.is_some_and(|limit| kept.len() as u64 >= limit) {
            return (kept, true);
        }
    }
    (kept, false)
}

/// The answer to a body cut by [`Fault::CutUpload`]: a 500 on a connection that closes.
fn cut_response() -> Response {
    let mut resp = error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        "injected: the upload body was cut",
    );
    set_header(&mut resp, "connection", "close");
    resp
}

async fn patch(state: &Shared, name: &str, id: &str, req: Request) -> Response {
    if lock(state)
        .faults
        .iter()
        .any(|f| matches!(f, Fault::RejectPatch))
    {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "chunked uploads are not supported",
        );
    }
    let range = req
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let held = lock(state).uploads.get(id).map_or(0, |u| u.data.len());
    if let Some(range) = range {
        let start = range
            .trim_start_matches("bytes ")
            .split_once('-')
            .and_then(|(s, _)| s.trim().parse::<usize>().ok());
        if start != Some(held) {
            let mut resp = session_response(StatusCode::RANGE_NOT_SATISFIABLE, name, id, held);
            *resp.body_mut() = Body::from(
                r#"{"errors":[{"code":"RANGE_INVALID","message":"invalid content range"}]}"#,
            );
            return resp;
        }
    }
    let (bytes, cut) = read_body(state, req).await;
    let held = {
        let mut st = lock(state);
        let Some(u) = st.uploads.get_mut(id) else {
            return upload_unknown();
        };
        u.data.extend_from_slice(&bytes);
        u.data.len()
    };
    if cut {
        return cut_response();
    }
    session_response(StatusCode::ACCEPTED, name, id, held)
}

async fn put(
    state: &Shared,
    name: &str,
    id: &str,
    digest: Option<String>,
    req: Request,
) -> Response {
    let Some(digest) = digest.and_then(|d| d.parse::<Digest>().ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "the PUT names no valid digest",
        );
    };
    let (bytes, cut) = read_body(state, req).await;
    let slow = lock(state).faults.iter().find_map(|f| match f {
        Fault::SlowCommit { ms } => Some(*ms),
        _ => None,
    });
    if let (Some(ms), false) = (slow, cut) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let mut st = lock(state);
    let Some(u) = st.uploads.get_mut(id) else {
        return upload_unknown();
    };
    u.data.extend_from_slice(&bytes);
    if cut {
        return cut_response();
    }
    if Digest::sha256_of(&u.data) != digest {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "provided digest did not match uploaded content",
        );
    }
    let Some(u) = st.uploads.remove(id) else {
        return upload_unknown();
    };
    st.repos
        .entry(u.repo)
        .or_default()
        .blobs
        .insert(digest.clone(), Bytes::from(u.data));
    let mut resp = empty(StatusCode::CREATED);
    set_header(&mut resp, "location", &format!("/v2/{name}/blobs/{digest}"));
    set_header(&mut resp, "docker-content-digest", &digest.to_string());
    set_header(&mut resp, "content-length", "0");
    resp
}

/// The digests a manifest refers to: (blobs, child manifests).
fn references(bytes: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let digest = |d: &serde_json::Value| d.get("digest")?.as_str().map(str::to_string);
    let list = |key: &str| -> Vec<String> {
        v.get(key)
            .and_then(|l| l.as_array())
            .map(|l| l.iter().filter_map(digest).collect())
            .unwrap_or_default()
    };
    let mut blobs = list("layers");
    if let Some(c) = v.get("config").and_then(digest) {
        blobs.push(c);
    }
    Some((blobs, list("manifests")))
}

async fn put_manifest(state: &Shared, name: &str, reference: &str, req: Request) -> Response {
    let media_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (bytes, cut) = read_body(state, req).await;
    if cut {
        return cut_response();
    }
    let digest = Digest::sha256_of(&bytes);
    if reference.contains(':') && reference != digest.to_string() {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "the manifest does not match the digest it is pushed as",
        );
    }
    let Some((blobs, children)) = references(&bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "manifest invalid",
        );
    };
    let mut st = lock(state);
    let repo = st.repos.entry(name.to_string()).or_default();
    let missing_blob = blobs.iter().find(|b| {
        b.parse::<Digest>()
            .map_or(true, |d| !repo.blobs.contains_key(&d))
    });
    if let Some(b) = missing_blob {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            &format!("blob unknown to registry: {b}"),
        );
    }
    if let Some(m) = children.iter().find(|m| !repo.manifests.contains_key(*m)) {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            &format!("manifest unknown to registry: {m}"),
        );
    }
    let entry = (media_type, Bytes::from(bytes));
    if !reference.contains(':') {
        repo.tags.insert(reference.to_string());
        repo.manifests.insert(reference.to_string(), entry.clone());
    }
    repo.manifests.insert(digest.to_string(), entry);
    let mut resp = empty(StatusCode::CREATED);
    set_header(
        &mut resp,
        "location",
        &format!("/v2/{name}/manifests/{digest}"),
    );
    set_header(&mut resp, "docker-content-digest", &digest.to_string());
    set_header(&mut resp, "content-length", "0");
    resp
}

fn delete_manifest(state: &Shared, name: &str, reference: &str) -> Response {
    let mut st = lock(state);
    if !st.deletes_enabled {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "The operation is unsupported.",
        );
    }
    let Some(repo) = st.repos.get_mut(name) else {
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository unknown");
    };
    if repo.manifests.remove(reference).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        );
    }
    let digest = reference.to_string();
    let tags: Vec<String> = repo
        .tags
        .iter()
        .filter(|t| {
            repo.manifests
                .get(*t)
                .is_some_and(|(_, b)| Digest::sha256_of(b).to_string() == digest)
        })
        .cloned()
        .collect();
    for t in tags {
        repo.tags.remove(&t);
        repo.manifests.remove(&t);
    }
    empty(StatusCode::ACCEPTED)
}
