//! A `ferry serve` on 127.0.0.1:0 for tests, and a few HTTP helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ferry_server::{Config, HostPort, State};

pub struct Server {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub state: Arc<State>,
    _dir: tempfile::TempDir,
}

/// Start a server with a fresh cache; `allow_private` hosts may be fetched from.
pub async fn start(allow_private: &[&str], tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(dir.path().join("cache"));
    cfg.policy.allow_private = allow_private
        .iter()
        .map(|h| HostPort::parse(h).unwrap())
        .collect();
    cfg.client.max_attempts = 3;
    cfg.client.base_backoff = Duration::from_millis(10);
    cfg.client.credential_files = ferry_registry::CredentialFiles::default();
    tweak(&mut cfg);
    let state = State::new(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = state.clone();
    tokio::spawn(ferry_server::serve(
        listener,
        s,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    Server {
        base: format!("http://{addr}"),
        addr,
        state,
        _dir: dir,
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// GET `url` with extra headers: status, headers, body.
pub async fn get(
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = http().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp.bytes().await.unwrap().to_vec();
    (status, h, body)
}

pub fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A raw HTTP/1.1 request line sent as is (no client-side path normalisation); the status.
pub async fn raw_status(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The files of a tar: (name, bytes).
pub fn tar_files(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut a = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().to_string();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        out.push((name, b));
    }
    out
}
