//! [`Podman`]: runs `podman` against private storage (vfs driver) in a tempdir, with the flags
//! and config files that let it work as root without systemd or a user session.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{run_ok, tool};

/// A private podman: own `--root`, `--runroot`, `--tmpdir`, containers.conf, storage.conf and
/// an empty registries.conf. Nothing outlives the value (no daemon is involved).
pub struct Podman {
    bin: PathBuf,
    /// The tempdir holding everything.
    pub dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Podman {
    /// `None` when podman is missing outside CI.
    pub fn new() -> Option<Podman> {
        let bin = tool("podman")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["root", "runroot", "tmp"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 events_logfile_path = \"{}\"\n[containers]\n",
                d.join("events.log").display()
            ),
        )
        .expect("write containers.conf");
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                d.join("runroot").display(),
                d.join("root").display()
            ),
        )
        .expect("write storage.conf");
        std::fs::write(d.join("registries.conf"), "").expect("write registries.conf");
        Some(Podman {
            bin,
            dir: d.to_path_buf(),
            _dir: dir,
        })
    }

    /// A `podman` command with all the private-storage flags and env set; add args and run.
    pub fn command(&self) -> Command {
        let d = &self.dir;
        let mut c = Command::new(&self.bin);
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .env("TMPDIR", d.join("tmp"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        c
    }

    /// Runs `podman ARGS`; Ok(stdout) or Err with stderr.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        run_ok(self.command().args(args), Duration::from_secs(180))
    }

    /// `podman load -i ARCHIVE` (docker-archive or oci-archive); Ok(stdout).
    pub fn load(&self, archive: &Path) -> Result<String, String> {
        let a = archive.to_str().ok_or("non-UTF-8 archive path")?;
        self.run(&["load", "-i", a])
    }

    /// Names from `podman load` output lines `Loaded image: A` / `Loaded image(s): A,B`.
    pub fn loaded_names(load_stdout: &str) -> Vec<String> {
        load_stdout
            .lines()
            .filter_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.starts_with("Loaded image"))
            })
            .flat_map(|(_, v)| {
                v.split(',')
                    .map(|n| n.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// `podman images --format json`.
    pub fn images(&self) -> Result<serde_json::Value, String> {
        let out = self.run(&["images", "--format", "json"])?;
        serde_json::from_str(&out).map_err(|e| format!("podman images: bad JSON ({e}): {out}"))
    }

    /// `podman image inspect NAME` — the first (only) element; `RootFS.Layers` are diff ids.
    pub fn inspect(&self, name: &str) -> Result<serde_json::Value, String> {
        let out = self.run(&["image", "inspect", name])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| format!("podman inspect: bad JSON ({e}): {out}"))?;
        match v {
            serde_json::Value::Array(mut a) if !a.is_empty() => Ok(a.swap_remove(0)),
            other => Err(format!("podman inspect {name}: unexpected output {other}")),
        }
    }
}
