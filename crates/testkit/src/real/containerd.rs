//! [`Containerd`]: a private `containerd` daemon (own root, state, unix socket in a tempdir,
//! CRI and unavailable snapshotters disabled), driven through `ctr`; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{run_ok, tool, wait_until, ChildGuard};

/// Namespace used for all `ctr` calls.
pub const NAMESPACE: &str = "ferrytest";

/// A running private containerd. Images go to namespace [`NAMESPACE`], snapshotter `native`.
pub struct Containerd {
    /// The gRPC unix socket (`ctr -a SOCKET`).
    pub socket: PathBuf,
    /// containerd's stdout+stderr.
    pub log_path: PathBuf,
    ctr: PathBuf,
    // Drop order: kill the daemon first, then remove its directory.
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd; `None` when `containerd` or `ctr` is missing outside CI. Panics (with
    /// the daemon's log) if `ctr version` does not answer within 15 s.
    pub fn start() -> Option<Containerd> {
        let bin = tool("containerd")?;
        let ctr = tool("ctr")?;
        // Keep the socket path short (unix socket paths are limited to ~108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let socket = d.join("c.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.overlayfs",
]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            opt = d.join("opt").display(),
        );
        let cfg = d.join("config.toml");
        std::fs::write(&cfg, config).expect("write config.toml");
        let log_path = d.join("containerd.log");
        let log = std::fs::File::create(&log_path).expect("create log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let mut child = ChildGuard(child);
        let up = wait_until(Duration::from_secs(15), || {
            if let Ok(Some(_)) = child.0.try_wait() {
                return true;
            }
            socket.exists()
                && run_ok(
                    Command::new(&ctr).arg("-a").arg(&socket).arg("version"),
                    Duration::from_secs(5),
                )
                .is_ok()
        });
        let exited = child.0.try_wait().ok().flatten();
        if !up || exited.is_some() {
            panic!(
                "containerd did not come up (exited: {exited:?}); log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        Some(Containerd {
            socket,
            log_path,
            ctr,
            _child: child,
            _dir: dir,
        })
    }

    /// A `ctr -a SOCKET -n ferrytest` command; add args and run.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("-a").arg(&self.socket).arg("-n").arg(NAMESPACE);
        c
    }

    /// `ctr images import --snapshotter native [EXTRA] ARCHIVE`; Ok(stdout), Err with stderr.
    pub fn import(&self, archive: &Path, extra: &[&str]) -> Result<String, String> {
        run_ok(
            self.ctr()
                .args(["images", "import", "--snapshotter", "native"])
                .args(extra)
                .arg(archive),
            Duration::from_secs(180),
        )
    }

    /// `ctr images ls` parsed into (name, target digest) pairs.
    pub fn images(&self) -> Result<Vec<(String, String)>, String> {
        let out = run_ok(self.ctr().args(["images", "ls"]), Duration::from_secs(60))?;
        Ok(out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut cols = l.split_whitespace();
                let name = cols.next()?;
                let _media_type = cols.next()?;
                let digest = cols.next()?;
                Some((name.to_string(), digest.to_string()))
            })
            .collect())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
