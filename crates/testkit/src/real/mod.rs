//! Harnesses that start REAL components on loopback / private sockets, each in its own
//! tempdir and killed on drop: `docker-registry` ([`RealRegistry`]), `skopeo`
//! ([`skopeo_copy`], [`skopeo_inspect`]), `podman` ([`Podman`]) and `containerd` ([`Containerd`]).
//!
//! A missing tool makes [`tool`] return `None` (tests skip) unless `CI=true`, where it panics.

mod containerd;
mod podman;
mod registry;
mod token;

pub use containerd::Containerd;
pub use podman::Podman;
pub use registry::{RealRegistry, RegistryAuth};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// True when `CI=true` (or `CI=1`): missing tools are then a failure, not a skip.
pub fn is_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("TRUE")
    )
}

/// Finds `name` on `PATH` (also `/usr/sbin`, `/sbin`). `None` when missing and not CI;
/// panics with a clear message when missing and `CI=true`.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if let Ok(md) = std::fs::metadata(&p) {
            use std::os::unix::fs::PermissionsExt;
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Some(p);
            }
        }
    }
    if is_ci() {
        panic!(
            "required tool `{name}` is not installed (CI=true, so this is a failure, not a skip)"
        );
    }
    eprintln!("skipping: tool `{name}` is not installed");
    None
}

/// A free TCP port on 127.0.0.1 (bind :0, read the port, drop the listener).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A spawned child process that is killed and reaped on drop.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        // After SIGKILL the wait returns promptly; poll with a bound anyway.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.0.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Runs `cmd` to completion with a bounded wait (kills it after `timeout`).
pub(crate) fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let desc = format!("{cmd:?}");
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (out_p, err_p) = (tmp.path().join("out"), tmp.path().join("err"));
    let out_f = std::fs::File::create(&out_p).map_err(|e| e.to_string())?;
    let err_f = std::fs::File::create(&err_p).map_err(|e| e.to_string())?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out_f)
        .stderr(err_f)
        .spawn()
        .map_err(|e| format!("spawn {desc}: {e}"))?;
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match guard.0.try_wait().map_err(|e| e.to_string())? {
            Some(s) => break s,
            None if Instant::now() > deadline => {
                return Err(format!(
                    "{desc} timed out after {timeout:?}; stderr: {}",
                    std::fs::read_to_string(&err_p).unwrap_or_default()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    Ok(Output {
        status,
        stdout: std::fs::read(&out_p).unwrap_or_default(),
        stderr: std::fs::read(&err_p).unwrap_or_default(),
    })
}

/// Runs `cmd` (bounded by `timeout`); Ok(stdout) on success, Err with status+stderr otherwise.
pub(crate) fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let desc = format!("{cmd:?}");
    let out = run_bounded(cmd, timeout)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{desc} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

fn skopeo_cmd() -> Result<Command, String> {
    let bin = tool("skopeo").ok_or("skopeo is not installed")?;
    let mut c = Command::new(bin);
    // Never pick up a developer's stored logins: credentials come only from `extra`.
    c.env("REGISTRY_AUTH_FILE", "/nonexistent/ferry-testkit/auth.json");
    c.arg("--insecure-policy");
    Ok(c)
}

/// `skopeo --insecure-policy copy [extra] SRC DST`; the error contains skopeo's stderr.
/// Extras are e.g. `--dest-tls-verify=false`, `--dest-creds=u:p`, `--src-creds=u:p`.
pub fn skopeo_copy(src: &str, dst: &str, extra: &[&str]) -> Result<(), String> {
    let mut c = skopeo_cmd()?;
    c.arg("copy").args(extra).arg(src).arg(dst);
    run_ok(&mut c, Duration::from_secs(120)).map(|_| ())
}

/// `skopeo --insecure-policy inspect [extra] TARGET` parsed as JSON. Pass `--raw` in `extra`
/// for the raw manifest, `--config` for the config, `--tls-verify=false`, `--creds=u:p`.
pub fn skopeo_inspect(target: &str, extra: &[&str]) -> Result<serde_json::Value, String> {
    let mut c = skopeo_cmd()?;
    c.arg("inspect").args(extra).arg(target);
    let out = run_ok(&mut c, Duration::from_secs(60))?;
    serde_json::from_str(&out)
        .map_err(|e| format!("skopeo inspect output is not JSON ({e}): {out}"))
}

/// Pushes the OCI layout at `layout_dir` to `docker://REGISTRY_HOST/REPO_TAG` over plain HTTP.
pub fn push_oci_layout(
    registry_host: &str,
    repo_tag: &str,
    layout_dir: &Path,
    creds: Option<(&str, &str)>,
) -> Result<(), String> {
    let creds_arg = creds.map(|(u, p)| format!("--dest-creds={u}:{p}"));
    let mut extra = vec!["--dest-tls-verify=false"];
    if let Some(c) = &creds_arg {
        extra.push(c);
    }
    skopeo_copy(
        &format!("oci:{}", layout_dir.display()),
        &format!("docker://{registry_host}/{repo_tag}"),
        &extra,
    )
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Writes an OCI image layout at `dir`: `oci-layout`, `blobs/<alg>/<hex>` for the manifest and
/// each `(digest, bytes)` blob (written as given, not verified), and `index.json` pointing at
/// the manifest. `skopeo copy oci:DIR ...` then picks that single manifest.
pub fn write_oci_layout<D: std::fmt::Display>(
    dir: &Path,
    manifest_media_type: &str,
    manifest: &[u8],
    blobs: &[(D, &[u8])],
) -> std::io::Result<()> {
    let write_blob = |digest: &str, data: &[u8]| -> std::io::Result<()> {
        let (alg, hex) = digest.split_once(':').ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad digest {digest}"),
            )
        })?;
        let d = dir.join("blobs").join(alg);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(hex), data)
    };
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for (digest, data) in blobs {
        write_blob(&digest.to_string(), data)?;
    }
    let mdigest = sha256_digest(manifest);
    write_blob(&mdigest, manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": manifest_media_type,
            "digest": mdigest,
            "size": manifest.len(),
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)
}

/// An HTTP response: (status, lower-cased header (name, value) pairs, body).
pub type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// Minimal blocking HTTP/1.1 GET against `host` ("127.0.0.1:PORT") with extra header lines
/// (e.g. `("Authorization", "Bearer ...")`). Returns (status, headers, body). Bounded by 10 s.
pub fn http_get(host: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
    let addr = host.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}"))
    })?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of HTTP headers"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head}")))?;
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if hdrs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Ok((status, hdrs, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let size_s = String::from_utf8_lossy(&b[..p]);
        let size =
            usize::from_str_radix(size_s.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < p + 2 + size {
            break;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + size]);
        b = &b[(p + 4 + size).min(b.len())..];
    }
    out
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
