//! [`RealRegistry`]: CNCF distribution (`docker-registry serve`) on 127.0.0.1 with filesystem
//! storage in a tempdir, in anonymous, htpasswd (bcrypt) or token (JWT) auth mode.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::token::{TokenServer, ISSUER, SERVICE};
use super::{free_port, http_get, tool, wait_until, ChildGuard};

/// How the registry authenticates clients.
#[derive(Clone, Debug)]
pub enum RegistryAuth {
    /// No auth at all.
    Anonymous,
    /// HTTP Basic against a bcrypt htpasswd file.
    Htpasswd { user: String, pass: String },
    /// Bearer tokens from an in-process token server that checks these Basic credentials
    /// (anonymous token requests get 401).
    Token { user: String, pass: String },
}

/// A running `docker-registry`; dropping it kills the process and removes its storage.
pub struct RealRegistry {
    /// "127.0.0.1:PORT".
    pub host: String,
    /// Token mode: the realm URL ("http://127.0.0.1:PORT/token").
    pub realm: Option<String>,
    /// Token mode: the `service` the registry expects in tokens' `aud`.
    pub service: String,
    /// Where the registry's stderr/stdout go (for diagnostics).
    pub log_path: PathBuf,
    /// Storage root (filesystem driver).
    pub storage: PathBuf,
    // Field order matters for drop: kill the process, then stop the token server, then rm dir.
    _child: ChildGuard,
    token: Option<TokenServer>,
    _dir: tempfile::TempDir,
}

impl RealRegistry {
    /// Starts a registry; `None` when `docker-registry` (or `openssl` for token mode) is
    /// missing outside CI. Panics when it fails to come up within 10 s (with its log).
    pub fn start(auth: RegistryAuth) -> Option<RealRegistry> {
        RealRegistry::start_with(auth, true)
    }

    /// [`RealRegistry::start`] with manifest deletes allowed or not (docker-registry's
    /// `REGISTRY_STORAGE_DELETE_ENABLED`; `start` allows them).
    pub fn start_with(auth: RegistryAuth, deletes: bool) -> Option<RealRegistry> {
        let bin = tool("docker-registry")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("mkdir storage");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut auth_yaml = String::new();
        let mut token = None;
        match &auth {
            RegistryAuth::Anonymous => {}
            RegistryAuth::Htpasswd { user, pass } => {
                let hash = bcrypt::hash(pass, 5).expect("bcrypt");
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n")).expect("write htpasswd");
                auth_yaml = format!(
                    "auth:\n  htpasswd:\n    realm: ferry-test\n    path: {}\n",
                    path.display()
                );
            }
            RegistryAuth::Token { user, pass } => {
                let openssl = tool("openssl")?;
                let ts = TokenServer::start(dir.path(), &openssl, user, pass)
                    .unwrap_or_else(|e| panic!("token server: {e}"));
                auth_yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    ts.realm,
                    ts.cert_path.display()
                );
                token = Some(ts);
            }
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             cache:\n    blobdescriptor: inmemory\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {host}\n  secret: ferry-testkit-secret\n\
             health:\n  storagedriver:\n    enabled: false\n{auth_yaml}",
            storage.display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).expect("write config.yml");
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).expect("create log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg_path)
            .env_remove("REGISTRY_HTTP_ADDR")
            .env("REGISTRY_STORAGE_DELETE_ENABLED", deletes.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut child = ChildGuard(child);
        let up = wait_until(Duration::from_secs(10), || {
            if let Ok(Some(_)) = child.0.try_wait() {
                return true;
            }
            // 200 (anonymous) or 401 (auth) both mean "serving".
            matches!(http_get(&host, "/v2/", &[]), Ok((200 | 401, _, _)))
        });
        let exited = child.0.try_wait().ok().flatten();
        if !up || exited.is_some() {
            panic!(
                "docker-registry did not come up on {host} (exited: {exited:?}); log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        Some(RealRegistry {
            host,
            realm: token.as_ref().map(|t| t.realm.clone()),
            service: SERVICE.to_string(),
            log_path,
            storage,
            _child: child,
            token,
            _dir: dir,
        })
    }

    /// Token mode: how many tokens the token server has issued (0 in other modes).
    pub fn token_requests(&self) -> usize {
        self.token.as_ref().map_or(0, |t| t.issued())
    }

    /// The registry's log so far (stderr + stdout).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }
}
