//! Request routing of the fake registry: `/v2/` paths (names may contain slashes), manifests,
//! tag lists, the catalog, the token endpoint and the redirect listener; request logging.

use axum::body::Body;
use axum::extract::{Query, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::json;

use super::auth::{self, Scope};
use super::Fault;
use super::{blobs, lock, uploads, LoggedRequest, Shared};

pub(crate) fn main_router(state: Shared) -> Router {
    Router::new().fallback(main_handler).with_state(state)
}

pub(crate) fn redirect_router(state: Shared) -> Router {
    Router::new().fallback(redirect_handler).with_state(state)
}

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn log(state: &Shared, req: &Request, status: StatusCode) {
    let entry = entry(req, status);
    lock(state).log.push(entry);
}

fn entry(req: &Request, status: StatusCode) -> LoggedRequest {
    LoggedRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        range: header_string(req.headers(), header::RANGE),
        authorization: header_string(req.headers(), header::AUTHORIZATION),
        status: status.as_u16(),
        content_range: header_string(req.headers(), header::CONTENT_RANGE),
    }
}

/// A distribution-spec error response: `{"errors":[{"code","message","detail":null}]}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
    json_response(status, &body)
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn set_header(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

async fn main_handler(AxState(state): AxState<Shared>, req: Request) -> Response {
    let path = req.uri().path();
    let (hang, token_delay) = {
        let st = lock(&state);
        let hang = matches!(path, "/v2/" | "/v2")
            && st.faults.iter().any(|f| matches!(f, Fault::HangPing));
        let delay = st.faults.iter().find_map(|f| match f {
            Fault::SlowTokens { millis } if path == "/token" => Some(*millis),
            _ => None,
        });
        (hang, delay)
    };
    if hang {
        std::future::pending::<()>().await;
    }
    if let Some(ms) = token_delay {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if let Some(target) = uploads::write_target(req.method(), path) {
        let mut logged = entry(&req, StatusCode::OK);
        let resp = uploads::handle(&state, target, req).await;
        logged.status = resp.status().as_u16();
        lock(&state).log.push(logged);
        return resp;
    }
    let resp = route(&state, &req);
    log(&state, &req, resp.status());
    resp
}

async fn redirect_handler(AxState(state): AxState<Shared>, req: Request) -> Response {
    if req.headers().contains_key(header::AUTHORIZATION) {
        lock(&state).redirect_saw_authorization = true;
    }
    let challenge = {
        let st = lock(&state);
        st.faults
            .iter()
            .any(|f| matches!(f, Fault::RedirectTargetChallenges))
            .then(|| {
                format!(
                    "Bearer realm=\"http://localhost:{}/token\",service=\"elsewhere\"",
                    st.redirect_addr.port()
                )
            })
    };
    let resp = match challenge {
        Some(c) => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authenticate elsewhere",
            );
            set_header(&mut r, "www-authenticate", &c);
            r
        }
        None => redirect_route(&state, &req),
    };
    log(&state, &req, resp.status());
    resp
}

/// What a `/v2/...` path addresses.
enum Target<'a> {
    Root,
    Catalog,
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Tags { name: &'a str },
    Unknown,
}

fn parse_target(path: &str) -> Target<'_> {
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => return Target::Root,
        Some(rest) => match rest.strip_prefix('/') {
            Some(rest) => rest,
            None => return Target::Unknown,
        },
        None => return Target::Unknown,
    };
    let valid = |name: &str| !name.is_empty() && !name.starts_with('/') && !name.ends_with('/');
    if rest == "_catalog" {
        Target::Catalog
    } else if let Some(name) = rest.strip_suffix("/tags/list").filter(|n| valid(n)) {
        Target::Tags { name }
    } else if let Some((name, reference)) = rest
        .rsplit_once("/manifests/")
        .filter(|(n, r)| valid(n) && !r.is_empty() && !r.contains('/'))
    {
        Target::Manifest { name, reference }
    } else if let Some((name, digest)) = rest
        .rsplit_once("/blobs/")
        .filter(|(n, d)| valid(n) && !d.is_empty() && !d.contains('/'))
    {
        Target::Blob { name, digest }
    } else {
        Target::Unknown
    }
}

fn route(state: &Shared, req: &Request) -> Response {
    let path = req.uri().path();
    if path == "/token" {
        return auth::token_endpoint(state, req);
    }
    let target = parse_target(path);
    if matches!(target, Target::Unknown) {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such endpoint in the fake registry",
        );
    }
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the fake registry is read-only",
        );
    }
    let scope = match &target {
        Target::Root | Target::Unknown => Scope::Root,
        Target::Catalog => Scope::Catalog,
        Target::Manifest { name, .. } | Target::Blob { name, .. } | Target::Tags { name } => {
            Scope::Repo(name)
        }
    };
    let mut st = lock(state);
    if let Target::Blob { digest, .. } = &target {
        // Counted before auth: every blob GET for the digest, whatever its status.
        if let (false, Ok(d)) = (head, digest.parse()) {
            *st.blob_gets.entry(d).or_insert(0) += 1;
        }
    }
    if let Err(resp) = auth::check(&mut st, req.headers(), scope) {
        return resp;
    }
    let trickled = st.faults.iter().find_map(|f| match f {
        Fault::TrickleErrorBody {
            status,
            bytes_per_sec,
            on_ping,
        } if *on_ping == matches!(target, Target::Root)
            && matches!(target, Target::Root | Target::Manifest { .. }) =>
        {
            Some((*status, *bytes_per_sec))
        }
        _ => None,
    });
    if let Some((status, bytes_per_sec)) = trickled {
        return trickled_error(status, bytes_per_sec);
    }
    let ping_status = st.faults.iter().find_map(|f| match f {
        Fault::PingStatus { status } => StatusCode::from_u16(*status).ok(),
        _ => None,
    });
    match target {
        Target::Root if ping_status.is_some() => {
            let status = ping_status.unwrap_or(StatusCode::NOT_FOUND);
            error(status, "NOT_FOUND", "injected /v2/ status")
        }
        Target::Root | Target::Unknown => {
            let mut resp = json_response(StatusCode::OK, &json!({}));
            set_header(&mut resp, "docker-distribution-api-version", "registry/2.0");
            resp
        }
        Target::Catalog => catalog(&st, req),
        Target::Tags { name } => tags(&st, req, name),
        Target::Manifest { name, reference } => manifest(&st, name, reference, head),
        Target::Blob { name, digest } => blobs::serve(&mut st, name, digest, req.headers(), head),
    }
}

/// An error answer whose headers come at once and whose body trickles in.
fn trickled_error(status: u16, bytes_per_sec: u64) -> Response {
    let body = json!({ "errors": [{
        "code": "UNKNOWN",
        "message": format!("injected slow error body {}", ".".repeat(256)),
        "detail": null,
    }] });
    let bytes = bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut resp = Response::new(blobs::stream_body(
        bytes,
        None,
        Some(bytes_per_sec.max(1)),
        None,
    ));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    set_header(&mut resp, "content-type", "application/json");
    resp
}

fn tags(st: &super::State, req: &Request, name: &str) -> Response {
    let Some(repo) = st.repos.get(name) else {
        return error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            &format!("repository {name} is not known"),
        );
    };
    let (all, next) = page(st, req, repo.tags.iter());
    let mut resp = json_response(StatusCode::OK, &json!({ "name": name, "tags": all }));
    if let Some((n, last)) = next {
        set_header(
            &mut resp,
            "link",
            &format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""),
        );
    }
    resp
}

/// One page of `sorted` as `n` and `last` in the query (and [`Fault::PageSize`]) ask, and
/// what the next page's query would be when there is one.
fn page<'a>(
    st: &super::State,
    req: &Request,
    sorted: impl Iterator<Item = &'a String>,
) -> (Vec<&'a String>, Option<(usize, &'a String)>) {
    let query = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let param = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let cap = st.faults.iter().find_map(|f| match f {
        Fault::PageSize { n } => Some(*n),
        _ => None,
    });
    let n: Option<usize> = match (param("n").and_then(|n| n.parse::<usize>().ok()), cap) {
        (Some(n), Some(c)) => Some(n.min(c)),
        (n, c) => n.or(c),
    };
    let last = param("last");
    let mut all: Vec<&String> = sorted
        .filter(|t| last.as_ref().is_none_or(|l| t.as_str() > l.as_str()))
        .collect();
    let more = n.is_some_and(|n| all.len() > n);
    if let Some(n) = n {
        all.truncate(n);
    }
    let next = match (more, n, all.last()) {
        (true, Some(n), Some(last)) => Some((n, *last)),
        _ => None,
    };
    (all, next)
}

fn catalog(st: &super::State, req: &Request) -> Response {
    if st.faults.contains(&Fault::NoCatalog) {
        return error(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "the catalog is not offered here",
        );
    }
    let (repos, next) = page(st, req, st.repos.keys());
    let mut resp = json_response(StatusCode::OK, &json!({ "repositories": repos }));
    if let Some((n, last)) = next {
        set_header(
            &mut resp,
            "link",
            &format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\""),
        );
    }
    resp
}

fn manifest(st: &super::State, name: &str, reference: &str, head: bool) -> Response {
    let injected = st.faults.iter().find_map(|f| match f {
        Fault::ManifestError {
            status,
            code,
            message,
        } => Some((*status, code, message)),
        _ => None,
    });
    if let Some((status, code, message)) = injected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, code, message);
    }
    if !head && st.faults.iter().any(|f| matches!(f, Fault::RedirectLoop)) {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        set_header(
            &mut resp,
            "location",
            &format!("/v2/{name}/manifests/{reference}"),
        );
        return resp;
    }
    let trickle = st.faults.iter().find_map(|f| match f {
        Fault::TrickleManifests { bytes_per_sec } => Some((*bytes_per_sec).max(1)),
        _ => None,
    });
    let found = st.repos.get(name).and_then(|r| r.manifests.get(reference));
    let Some((media_type, bytes)) = found else {
        return error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            &format!("manifest {name}:{reference} is not known"),
        );
    };
    let digest = ferry_core::Digest::sha256_of(bytes);
    let len = bytes.len();
    let mut resp = Response::new(if head {
        Body::empty()
    } else if trickle.is_some() {
        blobs::stream_body(bytes.clone(), None, trickle, None)
    } else {
        Body::from(bytes.clone())
    });
    set_header(&mut resp, "content-type", media_type);
    if !st.faults.iter().any(|f| matches!(f, Fault::NoDigestHeader)) {
        set_header(&mut resp, "docker-content-digest", &digest.to_string());
    }
    set_header(&mut resp, "content-length", &len.to_string());
    set_header(&mut resp, "etag", &format!("\"{digest}\""));
    resp
}

/// The redirect listener serves `/<name>/blobs/<digest>` without auth or faults.
fn redirect_route(state: &Shared, req: &Request) -> Response {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "read-only");
    }
    let path = req.uri().path().trim_start_matches('/');
    let Some((name, digest)) = path.rsplit_once("/blobs/") else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such endpoint on the redirect listener",
        );
    };
    let st = lock(state);
    blobs::serve_plain(&st, name, digest, req.headers(), head)
}
