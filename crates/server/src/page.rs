//! `GET /`: the page people use in a browser. It works as a plain form without JavaScript
//! (the server answers `/?name=…&platform=…` with the platforms, the download link and the
//! command lines), and with the script it picks the platform from `/platforms`, starts the
//! fetch through the jobs API and shows its progress from the server-sent events. Everything
//! is in the binary; a strict Content-Security-Policy allows only the page's own script and
//! style files, and everything shown is escaped (an image name is user input).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use ferry_core::Platform;

use crate::http::{authorized, query};
use crate::{names, ServeError, State};

const SCRIPT: &str = include_str!("page/page.js");
const STYLE: &str = include_str!("page/page.css");

/// No inline script or style, nothing from elsewhere; requests only to this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// `GET /static/{file}`: the page's script and style.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (body, ty) = match file.as_str() {
        "page.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "page.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return ServeError::NotFound("no such file".into()).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// HTML-escaped text, safe in element content and in quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// What the page shows.
struct View {
    name: String,
    /// The platforms to choose from; empty before an image was named.
    platforms: Vec<Platform>,
    chosen: Option<Platform>,
    /// The token the visitor sent, echoed only into this visitor's own form and links.
    token: Option<String>,
    /// The download link (relative), once an image and platform are known.
    download: Option<String>,
    error: Option<String>,
}

/// `os/arch[/variant]` as the form sends it.
fn parse_platform(p: &str) -> Result<Option<Platform>, ServeError> {
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        [""] => Ok(None),
        [os, arch] => names::platform(Some(os), Some(arch), None),
        [os, arch, variant] => names::platform(Some(os), Some(arch), Some(variant)),
        _ => Err(ServeError::BadRequest(
            "the platform is os/arch or os/arch/variant".into(),
        )),
    }
}

/// `GET /` and `GET /?name=…&platform=…[&token=…]`.
pub(crate) async fn page(
    AxState(st): AxState<Arc<State>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let q = query(q.as_deref());
    let name = q.get("name").map(|s| s.trim()).unwrap_or("").to_string();
    let mut view = View {
        name: name.clone(),
        platforms: Vec::new(),
        chosen: None,
        token: None,
        download: None,
        error: None,
    };
    let mut status = StatusCode::OK;
    if !name.is_empty() {
        if !authorized(&st, &headers, &q) {
            // Without the token the page is the same for every request: nothing the
            // visitor sent comes back, nothing is asked upstream.
            view.name.clear();
            status = StatusCode::UNAUTHORIZED;
            view.error = Some("This server wants a token: type it in the Token field.".into());
        } else {
            if !st.config.tokens.is_empty() {
                view.token = q.get("token").cloned();
            }
            if let Err(e) = fill(&st, &mut view, q.get("platform").map(String::as_str)).await {
                status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
                view.error = Some(e.to_string());
            }
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:8080");
    // Behind a TLS-terminating proxy the request arrives over plain HTTP.
    let proxied_tls = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let scheme = if st.config.tls.is_some() || proxied_tls {
        "https"
    } else {
        "http"
    };
    let html = render(&st, &view, &format!("{scheme}://{host}"));
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            // The page may hold the visitor's token: kept by nobody, sent nowhere.
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        html,
    )
        .into_response()
}

/// The platforms of the named image, the one chosen and the download link.
async fn fill(st: &State, view: &mut View, platform: Option<&str>) -> Result<(), ServeError> {
    let r = names::image(Some(&view.name), "name")?;
    let chosen = parse_platform(platform.unwrap_or(""))?;
    let (_, list) = st.platforms(&r).await?;
    view.platforms = list;
    if let Some(p) = &chosen {
        if !view.platforms.contains(p) {
            return Err(ServeError::NotFound(format!(
                "{} has no image for {p}; pick one of the platforms listed",
                r.familiar()
            )));
        }
    }
    let mut url = format!("/image?name={}", enc(&view.name));
    if let Some(p) = &chosen {
        url.push_str(&format!("&os={}&arch={}", p.os, p.architecture));
        if let Some(v) = &p.variant {
            url.push_str(&format!("&variant={v}"));
        }
    }
    view.chosen = chosen;
    view.download = Some(url);
    Ok(())
}

fn render(st: &State, v: &View, base: &str) -> String {
    let default = st.config.default_platform.to_string();
    let mut options = String::new();
    if v.platforms.is_empty() {
        options.push_str(&format!(
            "<option value=\"\">the server's default ({})</option>",
            esc(&default)
        ));
    } else {
        let selected = v.chosen.as_ref().map(ToString::to_string);
        let selected = selected.or_else(|| {
            let d = &st.config.default_platform;
            v.platforms.contains(d).then(|| default.clone())
        });
        for p in &v.platforms {
            let p = p.to_string();
            let sel = if selected.as_deref() == Some(p.as_str()) {
                " selected"
            } else {
                ""
            };
            options.push_str(&format!("<option value=\"{0}\"{sel}>{0}</option>", esc(&p)));
        }
    }
    let token_field = if st.config.tokens.is_empty() {
        String::new()
    } else {
        format!(
            "<label for=\"token\">Token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" value=\"{}\">",
            esc(v.token.as_deref().unwrap_or(""))
        )
    };
    let error = v.error.as_deref().unwrap_or("");
    let mut result = String::new();
    if let Some(url) = &v.download {
        let mut link = url.clone();
        if let Some(t) = &v.token {
            link.push_str(&format!("&token={}", enc(t)));
        }
        let file = format!("{}.tar", names::file_stem(&v.name));
        let platform = v.chosen.as_ref().map(ToString::to_string);
        result = format!(
            "<section id=\"result\" aria-labelledby=\"result-h\">\
             <h2 id=\"result-h\">{name}</h2>\
             <p id=\"status\" role=\"status\" aria-live=\"polite\">Ready to download (the server fetches it as you download).</p>\
             <progress id=\"bar\" max=\"1\" value=\"0\" aria-label=\"Fetched so far\" hidden></progress>\
             <p><a id=\"download\" class=\"button\" href=\"{link}\" download=\"{file}\">Download {file}</a></p>\
             {cmds}</section>",
            name = esc(&v.name),
            link = esc(&link),
            file = esc(&file),
            cmds = commands(base, url, &v.name, platform.as_deref(), v.token.is_some()),
        );
    } else {
        // The script fills this in; without it the server renders it (above).
        result.push_str(
            "<section id=\"result\" aria-labelledby=\"result-h\" hidden>\
             <h2 id=\"result-h\"></h2>\
             <p id=\"status\" role=\"status\" aria-live=\"polite\"></p>\
             <progress id=\"bar\" max=\"1\" value=\"0\" aria-label=\"Fetched so far\"></progress>\
             <p><a id=\"download\" class=\"button\" hidden>Download</a></p>\
             <h3>Command lines</h3>\
             <label for=\"wget\">With wget (resumes when cut)</label><input id=\"wget\" readonly>\
             <label for=\"pull\">With ferry, where the registry can be reached</label><input id=\"pull\" readonly>\
             </section>",
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>ferry serve</title><link rel=\"stylesheet\" href=\"/static/page.css\">\
         <script src=\"/static/page.js\" defer></script></head>\
         <body><header><h1>ferry</h1><p>Container images as archives for <code>docker load</code>, <code>podman load</code>, <code>ctr import</code>.</p></header>\
         <main><form id=\"pick\" method=\"get\" action=\"/\">\
         <label for=\"name\">Image</label>\
         <input id=\"name\" name=\"name\" value=\"{name}\" required placeholder=\"alpine:3.20\" autocomplete=\"off\" autocapitalize=\"none\" spellcheck=\"false\">\
         <label for=\"platform\">Platform</label>\
         <select id=\"platform\" name=\"platform\" data-default=\"{default}\">{options}</select>\
         {token_field}\
         <button id=\"go\" type=\"submit\">Get it</button></form>\
         <p id=\"error\" role=\"alert\">{error}</p>{result}</main></body></html>\n",
        name = esc(&v.name),
        default = esc(&default),
        error = esc(error),
    )
}

/// The `wget -c` and `ferry pull` lines for the download at `url` (relative to `base`).
fn commands(base: &str, url: &str, name: &str, platform: Option<&str>, token: bool) -> String {
    let auth = if token {
        // The token stays out of the line (and of shell history): set FERRY_TOKEN first.
        " --header \"Authorization: Bearer $FERRY_TOKEN\""
    } else {
        ""
    };
    let wget = format!("wget -c --content-disposition{auth} '{base}{url}'");
    let pull = match platform {
        Some(p) => format!("ferry pull --platform {p} {name}"),
        None => format!("ferry pull {name}"),
    };
    format!(
        "<h3>Command lines</h3>\
         <label for=\"wget\">With wget (resumes when cut)</label><input id=\"wget\" readonly value=\"{}\">\
         <label for=\"pull\">With ferry, where the registry can be reached</label><input id=\"pull\" readonly value=\"{}\">",
        esc(&wget),
        esc(&pull)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            esc("<img src=x onerror='a()'>&\""),
            "&lt;img src=x onerror=&#39;a()&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn platforms_from_the_form_are_checked() {
        assert_eq!(parse_platform("").unwrap(), None);
        assert_eq!(
            parse_platform("linux/arm64/v8").unwrap(),
            Some(Platform::new("linux", "arm64", Some("v8")))
        );
        assert!(parse_platform("linux").is_err());
        assert!(parse_platform("linux/<b>").is_err());
    }
}
