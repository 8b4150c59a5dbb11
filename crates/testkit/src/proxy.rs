//! A minimal forward HTTP proxy for tests: `CONNECT host:port` tunnels and absolute-form
//! requests (`GET http://host:port/path`), with a map that routes chosen `host:port` targets to
//! local addresses — so `registry.test:443` can reach a [`crate::tls::TlsFront`] without DNS.
//! Targets not in the map are connected to normally (which needs DNS).
//!
//! Every tunnel and request is logged ([`Proxy::seen`]). Forwarded requests get
//! `Connection: close`, so each one arrives on its own connection and is seen.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// One tunnel or request the proxy was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    /// `CONNECT`, `GET`, `HEAD`, …
    pub method: String,
    /// `host:port` (lower-cased; the port is filled in for absolute-form requests).
    pub target: String,
    /// The request target as sent: the authority for CONNECT, the absolute URL otherwise.
    pub uri: String,
    /// Whether the proxy reached the target.
    pub connected: bool,
}

type Log = Arc<Mutex<Vec<ProxyRequest>>>;

/// A running proxy. It stops, with all its connections, when dropped.
pub struct Proxy {
    addr: SocketAddr,
    log: Log,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Start a proxy on `127.0.0.1:0` that sends each `host:port` in `routes` to its address.
    pub async fn start(routes: &[(&str, SocketAddr)]) -> Proxy {
        let routes: HashMap<String, SocketAddr> = routes
            .iter()
            .map(|(t, a)| (t.to_ascii_lowercase(), *a))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("local addr");
        let log: Log = Arc::default();
        let task = tokio::spawn(serve(listener, Arc::new(routes), log.clone()));
        Proxy { addr, log, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for `HTTPS_PROXY` / `HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One `"METHOD host:port"` line per tunnel or request, in arrival order, e.g.
    /// `"CONNECT registry.test:443"` or `"GET registry.test:5000"`.
    pub fn seen(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }

    /// How many tunnels or requests went to `target` (`host:port`).
    pub fn count(&self, target: &str) -> usize {
        let t = target.to_ascii_lowercase();
        self.requests().iter().filter(|r| r.target == t).count()
    }

    /// Everything logged, with details.
    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, routes: Arc<HashMap<String, SocketAddr>>, log: Log) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let routes = routes.clone();
        let log = log.clone();
        conns.spawn(async move {
            let _ = handle(tcp, &routes, &log).await;
        });
    }
}

const MAX_HEAD: usize = 64 * 1024;

async fn handle(
    mut client: TcpStream,
    routes: &HashMap<String, SocketAddr>,
    log: &Log,
) -> std::io::Result<()> {
    // Read the request head.
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return respond(&mut client, "431 Request Header Fields Too Large").await;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), client.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let rest = buf[head_end..].to_vec();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut client, "400 Bad Request").await;
    };
    let method = method.to_string();

    if method.eq_ignore_ascii_case("CONNECT") {
        let target = uri.to_ascii_lowercase();
        let idx = record(log, &method, &target, uri);
        let Some(mut up) = connect(routes, &target).await else {
            return respond(&mut client, "502 Bad Gateway").await;
        };
        mark_connected(log, idx);
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        if !rest.is_empty() {
            up.write_all(&rest).await?;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        return Ok(());
    }

    // Absolute-form: METHOD http://authority/path HTTP/1.x
    let Some(after) = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("HTTP://"))
    else {
        return respond(&mut client, "400 Bad Request").await;
    };
    let (authority, path) = match after.find(['/', '?']) {
        Some(i) if after.as_bytes()[i] == b'/' => (&after[..i], after[i..].to_string()),
        Some(i) => (&after[..i], format!("/{}", &after[i..])),
        None => (after, "/".to_string()),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let target = if has_port(authority) {
        authority.to_ascii_lowercase()
    } else {
        format!("{}:80", authority.to_ascii_lowercase())
    };
    let idx = record(log, &method, &target, uri);
    let Some(mut up) = connect(routes, &target).await else {
        return respond(&mut client, "502 Bad Gateway").await;
    };
    mark_connected(log, idx);
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let name = line.split(':').next().unwrap_or_default().trim();
        if [
            "connection",
            "proxy-connection",
            "keep-alive",
            "proxy-authorization",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes()).await?;
    if !rest.is_empty() {
        up.write_all(&rest).await?;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
    Ok(())
}

fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    }
}

async fn connect(routes: &HashMap<String, SocketAddr>, target: &str) -> Option<TcpStream> {
    let attempt = match routes.get(target) {
        Some(addr) => {
            tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(*addr)).await
        }
        None => tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target)).await,
    };
    attempt.ok()?.ok()
}

fn record(log: &Log, method: &str, target: &str, uri: &str) -> usize {
    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
    l.push(ProxyRequest {
        method: method.to_ascii_uppercase(),
        target: target.to_string(),
        uri: uri.to_string(),
        connected: false,
    });
    l.len() - 1
}

fn mark_connected(log: &Log, idx: usize) {
    if let Some(r) = log.lock().unwrap_or_else(|e| e.into_inner()).get_mut(idx) {
        r.connected = true;
    }
}

async fn respond(client: &mut TcpStream, status: &str) -> std::io::Result<()> {
    client
        .write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
