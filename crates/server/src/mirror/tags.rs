//! `GET /v2/<name>/tags/list[?n=&last=]`: upstream's tags in lexical order, paginated
//! here with a `Link` back at the mirror (the spec's pull section).

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use ferry_core::Reference;

use super::error::{Code, V2Error};
use crate::State;

/// The most tags one page holds, whatever `n` asks.
const MAX_PAGE: usize = 10_000;

pub async fn serve(
    st: &Arc<State>,
    r: &Reference,
    name: &str,
    q: &std::collections::HashMap<String, String>,
) -> Result<Response, V2Error> {
    let n = match q.get("n").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<usize>()
                .map_err(|_| V2Error::new(400, Code::Unsupported, "n is not a number of tags"))?,
        ),
    };
    let last = q.get("last").filter(|s| !s.is_empty());
    let mut tags = st
        .client_for(r)
        .tags(r.api_host(), r.repository())
        .await
        .map_err(|e| V2Error::upstream(&e, Code::NameUnknown))?;
    tags.sort();
    tags.dedup();
    if let Some(l) = last {
        tags.retain(|t| t.as_str() > l.as_str());
    }
    let page = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let more = tags.len() > page;
    tags.truncate(page);
    let mut resp = axum::Json(json!({ "name": name, "tags": tags })).into_response();
    if more {
        if let Some(next_last) = tags.last() {
            let mut link = format!("/v2/{name}/tags/list?n={page}&last={next_last}");
            if let Some(ns) = q.get("ns") {
                link.push_str(&format!("&ns={ns}"));
            }
            if let Ok(v) = HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")) {
                resp.headers_mut().insert(header::LINK, v);
            }
        }
    }
    Ok(resp)
}
