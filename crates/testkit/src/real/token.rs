//! A tiny blocking token server (Docker registry token auth) for [`super::RealRegistry`]:
//! checks HTTP Basic credentials and issues RS256 JWTs (signed with the `openssl` CLI) whose
//! header carries `x5c` with the self-signed certificate that the registry trusts.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use super::run_ok;

pub(crate) const SERVICE: &str = "ferry-test-registry";
pub(crate) const ISSUER: &str = "ferry-test-issuer";

struct Shared {
    user: String,
    pass: String,
    key: PathBuf,
    cert_der_b64: String,
    issued: AtomicUsize,
    stop: AtomicBool,
}

pub(crate) struct TokenServer {
    pub(crate) realm: String,
    pub(crate) cert_path: PathBuf,
    addr: String,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Generates a key + self-signed cert in `dir` and starts serving `GET /token`.
    pub(crate) fn start(
        dir: &Path,
        openssl: &Path,
        user: &str,
        pass: &str,
    ) -> Result<Self, String> {
        let key = dir.join("token-key.pem");
        let cert_path = dir.join("token-cert.pem");
        let der = dir.join("token-cert.der");
        run_ok(
            Command::new(openssl)
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
                .args(["-subj", "/CN=ferry-test-token", "-days", "2", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert_path),
            Duration::from_secs(60),
        )?;
        run_ok(
            Command::new(openssl)
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert_path)
                .arg("-out")
                .arg(&der),
            Duration::from_secs(30),
        )?;
        let der_bytes = std::fs::read(&der).map_err(|e| e.to_string())?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        let shared = Arc::new(Shared {
            user: user.to_string(),
            pass: pass.to_string(),
            key,
            cert_der_b64: STANDARD.encode(der_bytes),
            issued: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let sh = sh.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, &sh, openssl_path());
                    });
                }
            }
        });
        Ok(TokenServer {
            realm: format!("http://{addr}/token"),
            cert_path,
            addr,
            shared,
            thread: Some(thread),
        })
    }

    pub(crate) fn issued(&self) -> usize {
        self.shared.issued.load(Ordering::SeqCst)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr.parse().unwrap(), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn openssl_path() -> PathBuf {
    which_openssl().unwrap_or_else(|| PathBuf::from("openssl"))
}

fn which_openssl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("openssl"))
        .find(|p| p.is_file())
}

fn respond(mut s: &TcpStream, status: &str, extra: &str, body: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

fn handle(s: TcpStream, sh: &Shared, openssl: PathBuf) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(&s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut auth = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path != "/token" {
        return respond(&s, "404 Not Found", "", r#"{"error":"not found"}"#);
    }
    let creds = auth
        .as_deref()
        .and_then(|a| {
            a.strip_prefix("Basic ")
                .or_else(|| a.strip_prefix("basic "))
        })
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let ok = creds
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(u, p)| u == sh.user && p == sh.pass);
    if !ok {
        return respond(
            &s,
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"ferry-test-token\"\r\n",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad or missing credentials"}]}"#,
        );
    }
    let mut scopes = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if k == "scope" {
            scopes.push(percent_decode(v));
        }
    }
    match sign_token(sh, &openssl, &scopes) {
        Ok(jwt) => {
            sh.issued.fetch_add(1, Ordering::SeqCst);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let issued_at = format_rfc3339(now.as_secs());
            let body = serde_json::json!({
                "token": jwt, "access_token": jwt, "expires_in": 300, "issued_at": issued_at,
            });
            respond(&s, "200 OK", "", &body.to_string())
        }
        Err(e) => respond(
            &s,
            "500 Internal Server Error",
            "",
            &serde_json::json!({ "error": e }).to_string(),
        ),
    }
}

/// Scope `repository:NAME:ACTIONS` (NAME may contain ':' only in a registry host with port,
/// so split type at the first ':' and actions at the last one).
fn access_for(scopes: &[String]) -> Vec<serde_json::Value> {
    scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|s| {
            let (typ, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
            Some(serde_json::json!({ "type": typ, "name": name, "actions": actions }))
        })
        .collect()
}

fn sign_token(sh: &Shared, openssl: &Path, scopes: &[String]) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [sh.cert_der_b64] });
    let jti = format!("{now}-{}", rand::random::<u64>());
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": sh.user, "aud": SERVICE,
        "exp": now + 300, "nbf": now.saturating_sub(10), "iat": now, "jti": jti,
        "access": access_for(scopes),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let input = dir.path().join("in");
    std::fs::write(&input, &signing_input).map_err(|e| e.to_string())?;
    let sig_path = dir.path().join("sig");
    run_ok(
        Command::new(openssl)
            .args(["dgst", "-sha256", "-sign"])
            .arg(&sh.key)
            .arg("-out")
            .arg(&sig_path)
            .arg(&input),
        Duration::from_secs(30),
    )?;
    let sig = std::fs::read(&sig_path).map_err(|e| e.to_string())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn format_rfc3339(secs: u64) -> String {
    // Civil-from-days (Howard Hinnant), UTC.
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn scopes() {
        let a = super::access_for(&[
            "repository:a/b:pull,push".into(),
            "registry:catalog:*".into(),
        ]);
        assert_eq!(a[0]["name"], "a/b");
        assert_eq!(a[0]["actions"][1], "push");
        assert_eq!(a[1]["type"], "registry");
    }
}
