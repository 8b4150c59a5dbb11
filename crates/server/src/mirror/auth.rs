//! `--token` on the mirror: registry clients log in with Basic (any user name, the token
//! as the password), which docker, podman, skopeo and containerd all send from their usual
//! credentials; `Authorization: Bearer TOKEN` works too. Tokens never reach a log.

use axum::extract::{Request, State as AxState};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::error::V2Error;
use super::RouteLabel;
use crate::State;

/// Whether `headers` carry one of the tokens; true when the server wants none.
pub fn allowed(st: &State, headers: &HeaderMap) -> bool {
    if st.config.tokens.is_empty() {
        return true;
    }
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
    let given = if scheme.eq_ignore_ascii_case("basic") {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
            return false;
        };
        match raw.iter().position(|&b| b == b':') {
            Some(i) => raw[i + 1..].to_vec(),
            None => return false,
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().as_bytes().to_vec()
    } else {
        return false;
    };
    st.config
        .tokens
        .iter()
        .any(|t| constant_time_eq(t.as_bytes(), &given))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `/v2/` part of the token middleware: a registry's 401 (`WWW-Authenticate: Basic`,
/// an `UNAUTHORIZED` error) for a request without a token.
pub async fn guard(
    AxState(st): AxState<std::sync::Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    if allowed(&st, req.headers()) {
        return next.run(req).await;
    }
    let label = super::route_label(req.uri().path());
    let mut resp = super::with_version(V2Error::unauthorized().into_response());
    resp.extensions_mut().insert(RouteLabel(label));
    resp
}
