//! The routes: DockerImageSave v2 (`/image`, `/platforms`, `/health`), DockerImageSave v1
//! (`/pull/…`, `/save/…`, `/download/….tar[.zip]`) and DockerProxy (`/dl`), every archive
//! with exact length, strong ETag, `Range` and `If-Range`, and HEAD.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::json;

use ferry_archive::{ArchiveImage, Plan, ZipPlan};
use ferry_core::{Manifest, Platform};

use crate::reader::Layout;
use crate::{names, ServeError, State};

/// The router over `state`.
pub fn app(state: Arc<State>) -> Router {
    Router::new()
        .route("/", get(crate::page::page))
        .route("/static/{file}", get(crate::page::asset))
        .route("/health", get(|| async { "OK" }))
        .route("/platforms", get(platforms))
        .route("/image", get(image))
        .route("/dl", get(dl))
        .route("/pull/{*image}", get(pull_v1))
        .route("/save/{*image}", get(save_v1))
        .route("/download/{*file}", get(download))
        .route("/metrics", get(metrics))
        .route("/api/pulls", axum::routing::post(crate::api::create))
        .route("/api/pulls/{id}", get(crate::api::status))
        .route("/api/pulls/{id}/events", get(crate::api::events))
        .route("/v2", any(crate::mirror::ping))
        .route("/v2/", any(crate::mirror::ping))
        .route("/v2/{*rest}", any(crate::mirror::dispatch))
        .fallback(|| async { ServeError::NotFound("no such page".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), tokens))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// Count every request by route (the route's pattern, never the client's path) and status.
async fn count(AxState(st): AxState<Arc<State>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let method = req.method().clone();
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let resp = next.run(req).await;
    let route = match resp.extensions().get::<crate::mirror::RouteLabel>() {
        Some(l) => l.0.to_string(),
        None => route,
    };
    st.metrics.request(&route, resp.status().as_u16());
    // The route's pattern, never the path or query: they may hold a ?token=.
    tracing::info!(%method, route, status = resp.status().as_u16(), peer, "request");
    resp
}

/// `GET /metrics`: Prometheus text.
async fn metrics(AxState(st): AxState<Arc<State>>) -> Response {
    let store = st.store().clone();
    let stats = tokio::task::spawn_blocking(move || store.stats().ok())
        .await
        .ok()
        .flatten();
    let body = st.metrics.render(stats, st.jobs_in_flight());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `--token`: every route but `/health` wants `Authorization: Bearer T` or `?token=T`.
async fn tokens(AxState(st): AxState<Arc<State>>, req: Request, next: Next) -> Response {
    // The page checks the token itself once it is asked about an image: the empty form
    // and its script and style hold nothing, and a browser must get them to send a token.
    let path = req.uri().path();
    if crate::mirror::is_v2(path) {
        return crate::mirror::auth::guard(AxState(st), req, next).await;
    }
    if path == "/health" || path == "/" || path.starts_with("/static/") {
        return next.run(req).await;
    }
    if authorized(&st, req.headers(), &query(req.uri().query())) {
        next.run(req).await
    } else {
        let mut resp = ServeError::Unauthorized(
            "this server wants a token: send Authorization: Bearer TOKEN or add ?token=TOKEN"
                .into(),
        )
        .into_response();
        // A 401 names its scheme (RFC 9110, 11.6.1).
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"ferry serve\""),
        );
        resp
    }
}

/// Whether the request carries one of `--token`'s tokens (`Authorization: Bearer T` or
/// `?token=T`); true when the server wants none.
pub(crate) fn authorized(st: &State, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    if st.config.tokens.is_empty() {
        return true;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let given = bearer.or_else(|| query.get("token").cloned());
    given.is_some_and(|g| {
        st.config
            .tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), g.as_bytes()))
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn query(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// What an archive response needs of its request.
pub(crate) struct ReqInfo {
    method: Method,
    headers: HeaderMap,
    /// The client's address (absent when served without the accept loop of [`crate::serve`]).
    peer: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ReqInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ReqInfo {
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            peer: parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        })
    }
}

/// `GET /platforms?name=`: the platforms an image offers.
async fn platforms(
    AxState(st): AxState<Arc<State>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ServeError> {
    let q = query(q.as_deref());
    let r = names::image(q.get("name").map(String::as_str), "name")?;
    let (digest, list) = st.platforms(&r).await?;
    let platforms: Vec<_> = list
        .iter()
        .map(|p| json!({"os": p.os, "architecture": p.architecture, "variant": p.variant}))
        .collect();
    Ok(Json(json!({
        "name": r.familiar(),
        "digest": digest,
        "platforms": platforms,
    }))
    .into_response())
}

/// The platforms `r` offers (an index's, or a single image's own) and its digest, asked
/// of the registry (`State::platforms` caches them).
pub(crate) async fn list_platforms(
    st: &State,
    r: &ferry_core::Reference,
) -> Result<(String, Vec<Platform>), ServeError> {
    st.config.policy.check(r)?;
    let client = st.client_for(r);
    let m = client.manifest(r).await.map_err(|e| {
        ServeError::from_copy(ferry_copy::CopyError::Manifest {
            reference: r.familiar(),
            source: e,
        })
    })?;
    let mut list = Vec::new();
    match &m.manifest {
        Manifest::Index(idx) => {
            for d in &idx.manifests {
                if let Some(p) = &d.platform {
                    if p.os != "unknown" && !list.contains(p) {
                        list.push(p.clone());
                    }
                }
            }
        }
        Manifest::Image(im) => {
            let cfg = client
                .blob_small(r.api_host(), r.repository(), &im.config)
                .await
                .map_err(|e| ServeError::Upstream(crate::error_chain(&e)))?;
            let v: serde_json::Value = serde_json::from_slice(&cfg)
                .map_err(|e| ServeError::Upstream(format!("the image config is not JSON: {e}")))?;
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
            list.push(Platform::new(
                s("os"),
                s("architecture"),
                Some(s("variant")).filter(|x| !x.is_empty()),
            ));
        }
    }
    Ok((m.digest.to_string(), list))
}

/// `GET /image?name=…[&os=&arch=&variant=]`: the default archive.
async fn image(
    AxState(st): AxState<Arc<State>>,
    info: ReqInfo,
    RawQuery(q): RawQuery,
) -> Result<Response, ServeError> {
    let q = query(q.as_deref());
    let name = q.get("name").map(String::as_str);
    let r = names::image(name, "name")?;
    let platform = names::platform(
        q.get("os").map(String::as_str),
        q.get("arch").map(String::as_str),
        q.get("variant").map(String::as_str),
    )?;
    let file = format!("{}.tar", names::file_stem(name.unwrap_or_default()));
    let img = st.resolve(&r, platform.as_ref()).await?;
    tar_response(&st, &info, &img, &file)
}

/// `GET /dl?myimage=busybox` (DockerProxy): the tar.
async fn dl(
    AxState(st): AxState<Arc<State>>,
    info: ReqInfo,
    RawQuery(q): RawQuery,
) -> Result<Response, ServeError> {
    let q = query(q.as_deref());
    let name = q.get("myimage").map(String::as_str);
    let r = names::image(name, "myimage")?;
    let file = format!("{}.tar", names::file_stem(name.unwrap_or_default()));
    let img = st.resolve(&r, None).await?;
    tar_response(&st, &info, &img, &file)
}

/// `GET /download/{image}.tar` and `.tar.zip` (DockerImageSave v1).
async fn download(
    AxState(st): AxState<Arc<State>>,
    info: ReqInfo,
    Path(file): Path<String>,
) -> Result<Response, ServeError> {
    let (name, zip) = if let Some(n) = file.strip_suffix(".tar.zip") {
        (n, true)
    } else if let Some(n) = file.strip_suffix(".tar") {
        (n, false)
    } else {
        return Err(ServeError::NotFound(
            "downloads are /download/IMAGE.tar or /download/IMAGE.tar.zip".into(),
        ));
    };
    let r = names::image(Some(name), "the image in the path")?;
    let img = st.resolve(&r, None).await?;
    let stem = names::file_stem(name);
    if !zip {
        return tar_response(&st, &info, &img, &format!("{stem}.tar"));
    }
    let plan = checked_plan(&st, &img)?;
    let z = ZipPlan::new(plan, &format!("{name}.tar"))
        .map_err(|e| ServeError::BadRequest(e.to_string()))?;
    respond(
        &st,
        &info,
        &img,
        Layout::Zip(z),
        &format!("{stem}.tar.zip"),
        "application/zip",
    )
}

/// `GET /pull/{image}` (v1): starts the fetch if none runs; reports its state.
async fn pull_v1(
    AxState(st): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Response, ServeError> {
    let r = names::image(Some(&name), "the image in the path")?;
    let status = |s: &str| Json(json!({"id": name, "status": s})).into_response();
    let error = |e: String| Json(json!({"id": name, "status": "Error", "error": e}));
    let img = match st.resolve(&r, None).await {
        Ok(i) => i,
        Err(e) => return Ok(error(e.to_string()).into_response()),
    };
    if all_cached(&st, &img) {
        return Ok(status("Downloaded"));
    }
    if let Some(e) = st
        .pull_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&name)
    {
        return Ok(error(e).into_response());
    }
    // The fetch goes on without a client waiting: v1 clients poll.
    checked_plan(&st, &img)?;
    let job = st.keep_fetching(&img)?;
    let (st2, n2) = (st.clone(), name.clone());
    tokio::spawn(async move {
        if let Err(e) = job.wait_done().await {
            let mut m = st2.pull_errors.lock().unwrap_or_else(|e| e.into_inner());
            // Kept until asked for; bounded so names nobody asks about again do not pile up.
            if m.len() >= 1024 {
                m.clear();
            }
            m.insert(n2, e);
        }
    });
    Ok(status("Downloading"))
}

/// `GET /save/{image}` (v1): the zip's URL and size once every blob is cached.
async fn save_v1(
    AxState(st): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Response, ServeError> {
    let r = names::image(Some(&name), "the image in the path")?;
    let error = |e: &str| Json(json!({"id": name, "status": "Error", "error": e}));
    let img = match st.resolve(&r, None).await {
        Ok(i) => i,
        Err(e) => return Ok(error(&e.to_string()).into_response()),
    };
    if !all_cached(&st, &img) {
        return Ok(error("Image has to be pulled first").into_response());
    }
    let z = ZipPlan::new(checked_plan(&st, &img)?, &format!("{name}.tar"))
        .map_err(|e| ServeError::BadRequest(e.to_string()))?;
    Ok(Json(json!({
        "id": name,
        "url": format!("download/{name}.tar.zip"),
        "size": z.len(),
        "status": "Ready",
    }))
    .into_response())
}

fn all_cached(st: &State, img: &ArchiveImage) -> bool {
    img.images
        .iter()
        .flat_map(|p| std::iter::once(&p.config).chain(&p.layers))
        .all(|d| st.store().contains(&d.digest))
}

/// The image's plan, refused when too large to write or over `--max-image-size`.
pub(crate) fn checked_plan(st: &State, img: &ArchiveImage) -> Result<Plan, ServeError> {
    let plan = Plan::new(std::slice::from_ref(img));
    let len = plan.checked_len().ok_or_else(|| {
        ServeError::TooLarge("the sizes the manifests declare add up to more than 16 EiB".into())
    })?;
    if let Some(max) = st.config.max_image_size {
        if len > max {
            return Err(ServeError::TooLarge(format!(
                "{} is {len} bytes as an archive, more than this server's limit of {max} bytes (--max-image-size)",
                img.name.familiar()
            )));
        }
    }
    Ok(plan)
}

fn tar_response(
    st: &Arc<State>,
    info: &ReqInfo,
    img: &ArchiveImage,
    file: &str,
) -> Result<Response, ServeError> {
    let plan = checked_plan(st, img)?;
    respond(st, info, img, Layout::Tar(plan), file, "application/x-tar")
}

/// What a `Range` header asks of an entity of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    Whole,
    /// Bytes `[start, end)`.
    Part(u64, u64),
    Unsatisfiable,
}

/// Parse a single `bytes=` range; anything else (several ranges, other units, bad syntax)
/// is answered with the whole entity, as RFC 9110 allows.
pub(crate) fn parse_range(v: Option<&HeaderValue>, len: u64) -> Ask {
    // The range unit compares case-insensitively (RFC 9110, 14.1).
    let Some(spec) = v.and_then(|v| v.to_str().ok()).and_then(|s| {
        let s = s.trim();
        s.get(..6)
            .filter(|u| u.eq_ignore_ascii_case("bytes="))
            .map(|_| &s[6..])
    }) else {
        return Ask::Whole;
    };
    if spec.contains(',') {
        return Ask::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ask::Whole;
    };
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            Some(0) => Ask::Unsatisfiable,
            Some(n) if len > 0 => Ask::Part(len.saturating_sub(n), len),
            Some(_) => Ask::Unsatisfiable,
            None => Ask::Whole,
        },
        (s, "") => match num(s) {
            Some(s) if s < len => Ask::Part(s, len),
            Some(_) => Ask::Unsatisfiable,
            None => Ask::Whole,
        },
        (s, e) => match (num(s), num(e)) {
            (Some(s), Some(e)) if s <= e && s < len => Ask::Part(s, e.saturating_add(1).min(len)),
            (Some(s), Some(e)) if s <= e => Ask::Unsatisfiable,
            _ => Ask::Whole,
        },
    }
}

fn respond(
    st: &Arc<State>,
    info: &ReqInfo,
    img: &ArchiveImage,
    layout: Layout,
    file: &str,
    content_type: &'static str,
) -> Result<Response, ServeError> {
    let (method, headers, peer) = (&info.method, &info.headers, info.peer);
    let (len, etag) = (layout.len(), layout.etag());
    let mut ask = parse_range(headers.get(header::RANGE), len);
    if let Some(ir) = headers.get(header::IF_RANGE) {
        // Strong comparison: only our own current tag keeps the range.
        if ir.as_bytes() != etag.as_bytes() {
            ask = Ask::Whole;
        }
    }
    let mut b = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        );
    let (status, start, n) = match ask {
        Ask::Unsatisfiable => {
            return b
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::CONTENT_LENGTH, 0)
                .body(Body::empty())
                .map_err(|e| ServeError::Internal(e.to_string()));
        }
        Ask::Whole => (StatusCode::OK, 0, len),
        Ask::Part(s, e) => {
            b = b.header(header::CONTENT_RANGE, format!("bytes {s}-{}/{len}", e - 1));
            (StatusCode::PARTIAL_CONTENT, s, e - s)
        }
    };
    b = b.status(status).header(header::CONTENT_LENGTH, n);
    let body = if method == Method::HEAD || n == 0 {
        Body::empty()
    } else {
        let slot = st.download_slot(peer).ok_or_else(|| {
            ServeError::Busy(format!(
                "this address has {} downloads in progress already; let one finish first",
                st.config.max_downloads_per_client
            ))
        })?;
        let stream = st.archive(img, layout)?.stream(start, n);
        // The slot is released when the response ends or the client leaves.
        Body::from_stream(futures_util::StreamExt::map(stream, move |chunk| {
            let _held = &slot;
            chunk
        }))
    };
    b.body(body)
        .map_err(|e| ServeError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(s: &str, len: u64) -> Ask {
        parse_range(Some(&HeaderValue::from_str(s).unwrap()), len)
    }

    #[test]
    fn single_ranges_are_honoured_and_others_ignored() {
        assert_eq!(ask("bytes=0-9", 100), Ask::Part(0, 10));
        assert_eq!(ask("bytes=90-", 100), Ask::Part(90, 100));
        assert_eq!(ask("bytes=-10", 100), Ask::Part(90, 100));
        assert_eq!(ask("bytes=-1000", 100), Ask::Part(0, 100));
        assert_eq!(ask("bytes=50-1000", 100), Ask::Part(50, 100));
        assert_eq!(ask("bytes=100-", 100), Ask::Unsatisfiable);
        assert_eq!(ask("bytes=200-300", 100), Ask::Unsatisfiable);
        assert_eq!(ask("bytes=0-1,5-6", 100), Ask::Whole);
        assert_eq!(ask("items=0-1", 100), Ask::Whole);
        assert_eq!(ask("bytes=5-1", 100), Ask::Whole);
        assert_eq!(ask("Bytes=0-9", 100), Ask::Part(0, 10));
        assert_eq!(ask("bytes=-0", 100), Ask::Unsatisfiable);
    }
}
