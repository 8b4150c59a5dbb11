//! Authentication for the fake registry: Basic, and Docker token (Bearer) auth with the
//! fake's own `/token` endpoint, scoped opaque tokens and injected token expiry.

use axum::extract::{Query, Request};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use serde_json::json;

use super::handlers::{error, json_response, set_header};
use super::{lock, FakeAuth, Fault, Shared, State, Token, TokenField};

/// The service name the Bearer challenge announces.
pub(crate) const SERVICE: &str = "fake-registry";

/// What a request needs access to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    Root,
    Catalog,
    Repo(&'a str),
    /// Writing to a repository: uploads and manifest PUTs (`push`).
    Push(&'a str),
    /// Deleting from a repository (`delete`).
    Delete(&'a str),
}

/// The `user:pass` of a `Basic` Authorization header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(challenge: &str) -> Response {
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
    );
    set_header(&mut resp, "www-authenticate", challenge);
    resp
}

/// Whether one granted scope (`repository:<name>:<actions>`) allows pulling `name`.
fn scope_allows_pull(granted: &str, name: &str) -> bool {
    let Some(rest) = granted.strip_prefix("repository:") else {
        return false;
    };
    let Some((repo, actions)) = rest.rsplit_once(':') else {
        return false;
    };
    repo == name && actions.split(',').any(|a| a == "pull" || a == "*")
}

/// Whether one granted scope allows `action` on `name`.
fn scope_allows(granted: &str, name: &str, action: &str) -> bool {
    let Some((repo, actions)) = granted
        .strip_prefix("repository:")
        .and_then(|rest| rest.rsplit_once(':'))
    else {
        return false;
    };
    repo == name && actions.split(',').any(|a| a == action || a == "*")
}

/// Check the request's credentials; `Err` is the 401 to answer with.
#[allow(clippy::result_large_err)]
pub(crate) fn check(st: &mut State, headers: &HeaderMap, scope: Scope<'_>) -> Result<(), Response> {
    match &st.auth {
        FakeAuth::None => Ok(()),
        FakeAuth::Basic { user, pass } => match basic_credentials(headers) {
            Some((u, p)) if u == *user && p == *pass => Ok(()),
            _ => Err(unauthorized("Basic realm=\"fake\"")),
        },
        FakeAuth::Bearer { .. } => {
            let limit = st.faults.iter().find_map(|f| match f {
                Fault::ExpireTokensAfter { requests } => Some(*requests),
                _ => None,
            });
            let ok = bearer_token(headers)
                .and_then(|t| st.tokens.get_mut(t))
                .is_some_and(|token| {
                    let fresh = limit.is_none_or(|limit| token.uses < limit);
                    let allowed = match scope {
                        Scope::Root | Scope::Catalog => true,
                        Scope::Repo(name) => {
                            token.scopes.iter().any(|s| scope_allows_pull(s, name))
                        }
                        Scope::Push(name) => {
                            token.scopes.iter().any(|s| scope_allows(s, name, "push"))
                        }
                        Scope::Delete(name) => {
                            token.scopes.iter().any(|s| scope_allows(s, name, "delete"))
                        }
                    };
                    if fresh && allowed {
                        token.uses += 1;
                    }
                    fresh && allowed
                });
            if ok {
                return Ok(());
            }
            let mut challenge = format!(
                "Bearer realm=\"http://{}/token\",service=\"{SERVICE}\"",
                st.addr
            );
            match scope {
                Scope::Root => {}
                Scope::Catalog => challenge.push_str(",scope=\"registry:catalog:*\""),
                Scope::Repo(name) => {
                    challenge.push_str(&format!(",scope=\"repository:{name}:pull\""))
                }
                Scope::Push(name) => {
                    challenge.push_str(&format!(",scope=\"repository:{name}:pull,push\""))
                }
                Scope::Delete(name) => {
                    challenge.push_str(&format!(",scope=\"repository:{name}:delete\""))
                }
            }
            Err(unauthorized(&challenge))
        }
    }
}

/// Whether the request may read `name`: always unless in Bearer mode, where its token must
/// grant `pull` there (a mount needs it on the repository mounted from).
pub(crate) fn may_pull(st: &State, headers: &HeaderMap, name: &str) -> bool {
    if !matches!(st.auth, FakeAuth::Bearer { .. }) {
        return true;
    }
    bearer_token(headers)
        .and_then(|t| st.tokens.get(t))
        .is_some_and(|token| token.scopes.iter().any(|s| scope_allows_pull(s, name)))
}

/// `GET /token?service=&scope=`: hand out an opaque token for the requested scopes.
pub(crate) fn token_endpoint(state: &Shared, req: &Request) -> Response {
    let mut st = lock(state);
    let FakeAuth::Bearer {
        credentials,
        token_field,
        expires_in,
    } = st.auth.clone()
    else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "the fake registry has no token endpoint in this auth mode",
        );
    };
    let injected = st.faults.iter().find_map(|f| match f {
        Fault::TokenStatus { status } => StatusCode::from_u16(*status).ok(),
        _ => None,
    });
    if let Some(status) = injected {
        return error(status, "UNAVAILABLE", "injected token service status");
    }
    if req.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the fake token endpoint only answers GET",
        );
    }
    if let Some((user, pass)) = &credentials {
        match basic_credentials(req.headers()) {
            Some((u, p)) if u == *user && p == *pass => {}
            _ => return unauthorized("Basic realm=\"fake-token\""),
        }
    }
    let query = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let hub_style = st
        .faults
        .iter()
        .any(|f| matches!(f, Fault::UnknownReposUnauthorized));
    let pull_only = st.faults.iter().any(|f| matches!(f, Fault::PullOnlyTokens));
    let known = |scope: &str| {
        scope
            .strip_prefix("repository:")
            .and_then(|rest| rest.rsplit_once(':'))
            .is_none_or(|(name, _)| st.repos.contains_key(name))
    };
    let scopes: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| {
            v.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|s| !hub_style || known(s))
        .map(|s| {
            // Fault::PullOnlyTokens: whatever is asked, only pulling is granted.
            match s
                .strip_prefix("repository:")
                .and_then(|r| r.rsplit_once(':'))
            {
                Some((name, _)) if pull_only => format!("repository:{name}:pull"),
                _ => s,
            }
        })
        .collect();
    let token = format!("fake-{:032x}", rand::random::<u128>());
    st.tokens.insert(token.clone(), Token { scopes, uses: 0 });
    st.tokens_issued += 1;
    let mut body = json!({});
    if matches!(token_field, TokenField::Token | TokenField::Both) {
        body["token"] = json!(token);
    }
    if matches!(token_field, TokenField::AccessToken | TokenField::Both) {
        body["access_token"] = json!(token);
    }
    if let Some(secs) = expires_in {
        body["expires_in"] = json!(secs);
    }
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::scope_allows_pull;

    #[test]
    fn scopes() {
        assert!(scope_allows_pull("repository:a/b:pull", "a/b"));
        assert!(scope_allows_pull("repository:a/b:push,pull", "a/b"));
        assert!(scope_allows_pull("repository:a:*", "a"));
        assert!(!scope_allows_pull("repository:a/b:push", "a/b"));
        assert!(!scope_allows_pull("repository:a:pull", "a/b"));
    }
}
