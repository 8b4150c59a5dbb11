//! A TLS-terminating TCP forwarder, to put HTTPS in front of the plain-HTTP fake registry
//! (or anything else that listens on TCP).
//!
//! [`TlsFront::start`] makes a throw-away certificate authority and a server certificate it
//! signed, valid for `localhost`, `registry.test` and `127.0.0.1`, with the `openssl` command
//! line tool; listens on `127.0.0.1:0`; and forwards the decrypted bytes of every connection
//! to the backend. [`TlsFront::start_self_signed`] serves a self-signed server certificate
//! instead. The CA's PEM file is what a client needs to trust the front
//! ([`TlsFront::ca_pem_path`]). The listener and all its connections stop when the front is
//! dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// The names the server certificate is valid for.
pub const CERT_DNS_NAMES: &[&str] = &["localhost", "registry.test"];

#[derive(Debug, Default)]
struct Stats {
    handshakes: AtomicUsize,
    failed_handshakes: AtomicUsize,
}

/// A running TLS front. See the module documentation.
pub struct TlsFront {
    addr: SocketAddr,
    backend: SocketAddr,
    ca_pem: PathBuf,
    cert_pem: PathBuf,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Which certificate the front serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CertKind {
    /// A leaf signed by a generated CA.
    CaSigned,
    /// A self-signed leaf (its own issuer).
    SelfSigned,
}

impl TlsFront {
    /// Serve a certificate signed by a freshly generated test CA and forward to `backend`.
    pub async fn start(backend: SocketAddr) -> TlsFront {
        Self::start_with(backend, CertKind::CaSigned).await
    }

    /// Serve a self-signed certificate (no CA at all) and forward to `backend`.
    /// [`TlsFront::ca_pem_path`] is then the server certificate itself.
    pub async fn start_self_signed(backend: SocketAddr) -> TlsFront {
        Self::start_with(backend, CertKind::SelfSigned).await
    }

    async fn start_with(backend: SocketAddr, kind: CertKind) -> TlsFront {
        let dir = tempfile::tempdir().expect("tempdir for test certificates");
        let (ca_pem, cert_pem, key_pem) = generate(dir.path(), kind);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_pem)
            .expect("reading the server certificate")
            .collect::<Result<_, _>>()
            .expect("parsing the server certificate");
        let key = PrivateKeyDer::from_pem_file(&key_pem).expect("reading the server key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate and key");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS front");
        let addr = listener.local_addr().expect("local addr");
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(serve(listener, acceptor, backend, stats.clone()));
        TlsFront {
            addr,
            backend,
            ca_pem,
            cert_pem,
            stats,
            task,
            _dir: dir,
        }
    }

    /// Where the front listens (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where decrypted bytes go.
    pub fn backend(&self) -> SocketAddr {
        self.backend
    }

    /// The PEM file a client must trust to verify the front: the CA, or for a self-signed
    /// front the server certificate itself.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem
    }

    /// The server certificate (PEM).
    pub fn cert_pem_path(&self) -> &Path {
        &self.cert_pem
    }

    /// TLS handshakes that completed.
    pub fn handshakes(&self) -> usize {
        self.stats.handshakes.load(Ordering::SeqCst)
    }

    /// Connections whose TLS handshake failed (a client that refused the certificate, or one
    /// that spoke plain HTTP).
    pub fn failed_handshakes(&self) -> usize {
        self.stats.failed_handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    backend: SocketAddr,
    stats: Arc<Stats>,
) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let stats = stats.clone();
        conns.spawn(async move {
            let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
            let mut tls = match tls {
                Ok(Ok(s)) => {
                    stats.handshakes.fetch_add(1, Ordering::SeqCst);
                    s
                }
                _ => {
                    stats.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            };
            let Ok(mut up) = TcpStream::connect(backend).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
        });
    }
}

/// Make the certificates in `dir`; returns (trust anchor PEM, server cert PEM, server key PEM).
fn generate(dir: &Path, kind: CertKind) -> (PathBuf, PathBuf, PathBuf) {
    let san = {
        let mut parts: Vec<String> = CERT_DNS_NAMES.iter().map(|n| format!("DNS:{n}")).collect();
        parts.push("IP:127.0.0.1".into());
        parts.join(",")
    };
    let cnf = dir.join("openssl.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[req]\n\
             distinguished_name = dn\n\
             prompt = no\n\
             [dn]\n\
             CN = ferry test\n\
             [v3_ca]\n\
             basicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n\
             [v3_leaf]\n\
             basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = {san}\n\
             subjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n\
             [v3_self]\n\
             basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = {san}\n\
             subjectKeyIdentifier = hash\n"
        ),
    )
    .expect("writing openssl.cnf");
    let p = |n: &str| dir.join(n);
    let cert = p("server.pem");
    let key = p("server.key");
    let cnf_s = cnf.to_str().expect("utf-8 temp path").to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    match kind {
        CertKind::CaSigned => {
            let ca = p("ca.pem");
            let ca_key = p("ca.key");
            openssl(&[
                &["req", "-x509"],
                &ec[..],
                &["-config", &cnf_s, "-extensions", "v3_ca"],
                &["-subj", "/CN=ferry test CA", "-days", "3"],
                &["-keyout", s(&ca_key), "-out", s(&ca)],
            ]);
            let csr = p("server.csr");
            openssl(&[
                &["req"],
                &ec[..],
                &["-config", &cnf_s, "-subj", "/CN=registry.test"],
                &["-keyout", s(&key), "-out", s(&csr)],
            ]);
            openssl(&[
                &[
                    "x509",
                    "-req",
                    "-in",
                    s(&csr),
                    "-CA",
                    s(&ca),
                    "-CAkey",
                    s(&ca_key),
                ],
                &["-set_serial", "2", "-days", "3", "-sha256"],
                &[
                    "-extfile",
                    &cnf_s,
                    "-extensions",
                    "v3_leaf",
                    "-out",
                    s(&cert),
                ],
            ]);
            (ca, cert, key)
        }
        CertKind::SelfSigned => {
            openssl(&[
                &["req", "-x509"],
                &ec[..],
                &["-config", &cnf_s, "-extensions", "v3_self"],
                &["-subj", "/CN=registry.test", "-days", "3"],
                &["-keyout", s(&key), "-out", s(&cert)],
            ]);
            (cert.clone(), cert, key)
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn openssl(args: &[&[&str]]) {
    let args: Vec<&str> = args.iter().flat_map(|a| a.iter().copied()).collect();
    let out = Command::new("openssl")
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
