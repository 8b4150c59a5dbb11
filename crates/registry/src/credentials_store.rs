//! Writing credentials the way `docker login` does, for `ferry login` and `ferry logout`:
//! into the credential helper that docker's `config.json` names for the registry
//! (`credHelpers`, else `credsStore`), or into the file's `auths` as
//! `{"auth": base64(user:password)}` — the format docker, podman and skopeo all read.
//!
//! The file is edited, not re-encoded: every other key keeps its place and its exact text
//! (values are carried as raw JSON), so settings ferry does not know (`proxies`,
//! `HttpHeaders`, plugins' keys) survive. It is written atomically with mode 0600: a new
//! temporary file in the same directory (created exclusively, so a symlink planted there is
//! never followed), fsynced, then renamed over the old one. A `config.json` that is itself a
//! symlink stays one: its target is rewritten, as docker does.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::credentials::{helper_call, helper_server_url, normalise_key, CredentialError};

/// Docker Hub's key in `auths` and its server URL for helpers.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Where a credential was put, or taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredIn {
    /// Docker's `config.json` (or podman's `auth.json`) at this path.
    File(PathBuf),
    /// `docker-credential-NAME`.
    Helper(String),
}

/// The credentials file `ferry login` writes and `ferry logout` edits.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    path: PathBuf,
}

impl CredentialStore {
    /// The file at `path` (`--authfile`).
    pub fn at(path: impl Into<PathBuf>) -> CredentialStore {
        CredentialStore { path: path.into() }
    }

    /// The file ferry's credential lookup reads first among those a login can write:
    /// `$REGISTRY_AUTH_FILE` when set (as podman and skopeo log in), else docker's
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (as docker logs in).
    pub fn from_env() -> CredentialStore {
        match std::env::var_os("REGISTRY_AUTH_FILE") {
            Some(p) if !p.is_empty() => CredentialStore::at(p),
            _ => CredentialStore::at(crate::credentials::docker_config_path()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where [`CredentialStore::store`] would put credentials for `registry`, reading the
    /// file as it would: a file that cannot be updated fails here, before any password is
    /// asked for or sent.
    pub fn destination(&self, registry: &str) -> Result<StoredIn, CredentialError> {
        let mut doc = Doc::read(&self.path)?;
        doc.auths()?;
        Ok(match doc.helper_for(registry)? {
            Some(helper) => StoredIn::Helper(helper),
            None => StoredIn::File(self.path.clone()),
        })
    }

    /// Whether the file has an `auths` entry for `registry` (helpers are not asked).
    pub fn has_entry(&self, registry: &str) -> Result<bool, CredentialError> {
        let mut doc = Doc::read(&self.path)?;
        Ok(doc
            .auths()?
            .iter()
            .any(|(k, _)| names_registry(k, registry)))
    }

    /// Store `username` and `password` for `registry` (`docker.io`, `host[:port]`): in the
    /// helper the file names for it, else in the file. Call only after the registry accepted
    /// them. Other spellings of the same registry's key (`http://host`, `index.docker.io`)
    /// are replaced too, so no stale entry shadows the new one. On failure nothing changed.
    pub fn store(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<StoredIn, CredentialError> {
        let mut doc = Doc::read(&self.path)?;
        let key = auths_key(registry, &self.path);
        match doc.helper_for(registry)? {
            Some(helper) => {
                #[derive(serde::Serialize)]
                struct HelperInput<'a> {
                    #[serde(rename = "ServerURL")]
                    server_url: &'a str,
                    #[serde(rename = "Username")]
                    username: &'a str,
                    #[serde(rename = "Secret")]
                    secret: &'a str,
                }
                let input = serde_json::to_vec(&HelperInput {
                    server_url: &helper_server_url(registry),
                    username,
                    secret: password,
                })
                .map_err(|e| helper_err(&helper, registry, format!("encoding its input: {e}")))?;
                let out = helper_call(&helper, "store", &input)
                    .map_err(|r| helper_err(&helper, registry, r))?;
                if !out.status.success() {
                    return Err(helper_err(
                        &helper,
                        registry,
                        helper_failure("store", &out, password),
                    ));
                }
                // As docker does: an empty entry in the file records the login. Any old
                // secret for the registry in the file goes too: no reader uses it while the
                // helper is configured, but it would outlive the helper's removal.
                if doc.set_auth(registry, &key, "{}".to_string())? {
                    doc.write(&self.path)?;
                }
                Ok(StoredIn::Helper(helper))
            }
            None => {
                let auth = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                let entry = format!(
                    "{{\n\t\t\t\"auth\": {}\n\t\t}}",
                    serde_json::to_string(&auth).unwrap_or_default()
                );
                doc.set_auth(registry, &key, entry)?;
                doc.write(&self.path)?;
                Ok(StoredIn::File(self.path.clone()))
            }
        }
    }

    /// Remove what is stored for `registry`: the helper's credential (its `erase`) and every
    /// entry of the registry in the file's `auths`; nothing else changes. `None` when there
    /// was nothing to remove.
    pub fn erase(&self, registry: &str) -> Result<Option<StoredIn>, CredentialError> {
        let mut doc = Doc::read(&self.path)?;
        let mut erased = None;
        if let Some(helper) = doc.helper_for(registry)? {
            let out = helper_call(&helper, "erase", helper_server_url(registry).as_bytes())
                .map_err(|r| helper_err(&helper, registry, r))?;
            if out.status.success() {
                erased = Some(StoredIn::Helper(helper));
            } else if !String::from_utf8_lossy(&out.stdout)
                .to_ascii_lowercase()
                .contains("not found")
            {
                return Err(helper_err(
                    &helper,
                    registry,
                    helper_failure("erase", &out, ""),
                ));
            }
        }
        if doc.remove_auth(registry)? {
            doc.write(&self.path)?;
            erased.get_or_insert(StoredIn::File(self.path.clone()));
        }
        Ok(erased)
    }
}

/// The `auths` key for `registry` in the file at `path`: `host[:port]` as given, except for
/// Docker Hub. docker reads Docker Hub's entry only under `https://index.docker.io/v1/`,
/// and only from a file named `config.json`; podman and skopeo read that key too, but their
/// logout removes only `docker.io`, the key they write. So docker's key in a `config.json`,
/// and `docker.io` in any other file (podman's `auth.json`), which docker never reads.
pub fn auths_key(registry: &str, path: &Path) -> String {
    if normalise_key(registry) != "docker.io" {
        registry.to_string()
    } else if path.file_name().is_some_and(|n| n == "config.json") {
        DOCKER_HUB_KEY.to_string()
    } else {
        "docker.io".to_string()
    }
}

/// Whether an `auths` key names `registry` itself: `host`, `http(s)://host`, with no path or
/// docker's `/v1/`, `/v2/`. A podman key for one namespace (`quay.io/team`) is another entry.
fn names_registry(key: &str, registry: &str) -> bool {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    matches!(path, "" | "/" | "/v1" | "/v1/" | "/v2" | "/v2/")
        && normalise_key(host) == normalise_key(registry)
}

fn helper_err(helper: &str, registry: &str, reason: String) -> CredentialError {
    CredentialError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        reason,
    }
}

/// What a failed helper said: its exit status and the first line of its output (helpers
/// report errors on stdout), with the secret cut out should it echo it.
fn helper_failure(op: &str, out: &std::process::Output, secret: &str) -> String {
    let mut said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if said.is_empty() {
        said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    }
    let mut line: String = said
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    if !secret.is_empty() && (line.contains(secret) || said.contains(secret)) {
        line = "(its message is left out: it holds the secret)".into();
    }
    if line.is_empty() {
        format!("{op} failed ({})", out.status)
    } else {
        format!("{op} failed ({}): {line}", out.status)
    }
}

/// A JSON object's members in file order, each value as its raw text.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = map.next_entry::<String, Box<RawValue>>()? {
                    v.push((k, val));
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A credentials file being edited.
struct Doc {
    path: PathBuf,
    top: Vec<(String, Box<RawValue>)>,
    /// The members of `auths`, parsed once touched.
    auths: Option<Vec<(String, Box<RawValue>)>>,
}

impl Doc {
    /// The file at `path`; a missing or empty file is an empty document.
    fn read(path: &Path) -> Result<Doc, CredentialError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(CredentialError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let top = if text.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            parse_object(&text, path, "its top level is not a JSON object")?
        };
        Ok(Doc {
            path: path.to_path_buf(),
            top,
            auths: None,
        })
    }

    /// A top-level string member (`credsStore`), or a member of a top-level object
    /// (`credHelpers`), as the lookup reads them.
    fn helper_for(&self, registry: &str) -> Result<Option<String>, CredentialError> {
        #[derive(Deserialize, Default)]
        struct Helpers {
            #[serde(default, rename = "credHelpers")]
            cred_helpers: std::collections::HashMap<String, String>,
            #[serde(default, rename = "credsStore")]
            creds_store: Option<String>,
        }
        let mut h = Helpers::default();
        for (k, v) in &self.top {
            let shape = |what| CredentialError::Shape {
                path: self.path.clone(),
                what,
            };
            match k.as_str() {
                "credHelpers" => {
                    h.cred_helpers = serde_json::from_str::<Option<_>>(v.get())
                        .map_err(|_| shape("its 'credHelpers' is not an object of names"))?
                        .unwrap_or_default()
                }
                "credsStore" => {
                    h.creds_store = serde_json::from_str(v.get())
                        .map_err(|_| shape("its 'credsStore' is not a name"))?
                }
                _ => {}
            }
        }
        let want = normalise_key(registry);
        if let Some((_, helper)) = h
            .cred_helpers
            .iter()
            .find(|(k, _)| normalise_key(k) == want)
        {
            return Ok(Some(helper.clone()));
        }
        Ok(h.creds_store.filter(|s| !s.is_empty()))
    }

    fn auths(&mut self) -> Result<&mut Vec<(String, Box<RawValue>)>, CredentialError> {
        if self.auths.is_none() {
            let parsed = match self.top.iter().find(|(k, _)| k == "auths") {
                Some((_, v)) if v.get() != "null" => parse_object(
                    v.get().as_bytes(),
                    &self.path,
                    "its 'auths' is not a JSON object",
                )?,
                _ => Vec::new(),
            };
            self.auths = Some(parsed);
        }
        Ok(self.auths.get_or_insert_with(Vec::new))
    }

    /// Put `entry` (raw JSON) under `key`, in place of the registry's first entry, and drop
    /// its other spellings. Whether anything changed.
    fn set_auth(
        &mut self,
        registry: &str,
        key: &str,
        entry: String,
    ) -> Result<bool, CredentialError> {
        let raw = RawValue::from_string(entry).map_err(|_| CredentialError::Shape {
            path: self.path.clone(),
            what: "the new entry is not JSON",
        })?;
        let auths = self.auths()?;
        let before: Vec<(String, String)> = auths
            .iter()
            .map(|(k, v)| (k.clone(), v.get().to_string()))
            .collect();
        let at = auths.iter().position(|(k, _)| names_registry(k, registry));
        let mut kept = Vec::with_capacity(auths.len() + 1);
        for (i, (k, v)) in std::mem::take(auths).into_iter().enumerate() {
            if Some(i) == at {
                kept.push((key.to_string(), raw.clone()));
            } else if !names_registry(&k, registry) {
                kept.push((k, v));
            }
        }
        if at.is_none() {
            kept.push((key.to_string(), raw));
        }
        *auths = kept;
        let after: Vec<(String, String)> = auths
            .iter()
            .map(|(k, v)| (k.clone(), v.get().to_string()))
            .collect();
        Ok(before != after)
    }

    /// Drop every `auths` entry of `registry`. Whether there was one.
    fn remove_auth(&mut self, registry: &str) -> Result<bool, CredentialError> {
        let auths = self.auths()?;
        let n = auths.len();
        auths.retain(|(k, _)| !names_registry(k, registry));
        Ok(auths.len() != n)
    }

    /// The document as docker writes it (tab-indented), untouched members as they were.
    fn render(&self) -> String {
        let mut top: Vec<(String, String)> = self
            .top
            .iter()
            .map(|(k, v)| (k.clone(), v.get().to_string()))
            .collect();
        if let Some(auths) = &self.auths {
            let body = if auths.is_empty() {
                "{}".to_string()
            } else {
                let inner: Vec<String> = auths
                    .iter()
                    .map(|(k, v)| format!("\t\t{}: {}", json_string(k), v.get()))
                    .collect();
                format!("{{\n{}\n\t}}", inner.join(",\n"))
            };
            match top.iter_mut().find(|(k, _)| k == "auths") {
                Some((_, v)) => *v = body,
                // docker writes `auths` first.
                None => top.insert(0, ("auths".to_string(), body)),
            }
        }
        if top.is_empty() {
            return "{}".to_string();
        }
        let members: Vec<String> = top
            .iter()
            .map(|(k, v)| format!("\t{}: {}", json_string(k), v))
            .collect();
        format!("{{\n{}\n}}", members.join(",\n"))
    }

    fn write(&self, path: &Path) -> Result<(), CredentialError> {
        write_atomic(path, self.render().as_bytes(), &mut random_name)
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn parse_object(
    text: &[u8],
    path: &Path,
    not_object: &'static str,
) -> Result<Vec<(String, Box<RawValue>)>, CredentialError> {
    match serde_json::from_slice::<Members>(text) {
        Ok(m) => Ok(m.0),
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            Err(CredentialError::Shape {
                path: path.to_path_buf(),
                what: not_object,
            })
        }
        // Only the position: serde's message would quote the file, secrets among it.
        Err(e) => Err(CredentialError::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
        }),
    }
}

/// `.NAME.XXXXXXXXXXXX.ferry-tmp`: a fresh name each try.
fn random_name(file: &str, _try: u32) -> String {
    format!(".{file}.{:012x}.ferry-tmp", rand::random::<u64>() >> 16)
}

/// What `path` stands for: a symlink (chain) is followed to the file it names, which need
/// not exist yet, as docker does; anything else is `path` itself.
fn resolve_target(path: &Path) -> Result<PathBuf, CredentialError> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p).map_err(|source| CredentialError::Read {
                    path: p.clone(),
                    source,
                })?;
                p = match p.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(CredentialError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other("too many levels of symbolic links"),
    })
}

/// Write `bytes` to `path` atomically with mode 0600: a temporary file named by `name` in
/// the target's directory, created exclusively (`O_EXCL` never follows a symlink someone
/// planted at that name: another name is tried), fsynced, renamed over the target, and the
/// directory fsynced. On failure the temporary file is removed and the target unchanged.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    name: &mut dyn FnMut(&str, u32) -> String,
) -> Result<(), CredentialError> {
    let target = resolve_target(path)?;
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CredentialError::Write { path: p, source }
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CredentialError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other("the path names no file"),
        })?;
    // As docker does for ~/.docker: private to the user.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(werr(&dir))?;
    let mut attempt = 0;
    let (tmp, mut file) = loop {
        let tmp = dir.join(name(&file_name, attempt));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                attempt += 1;
            }
            Err(e) => return Err(werr(&tmp)(e)),
        }
    };
    let result = (|| {
        // The umask may have taken bits away, never added any; set exactly 0600.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(&target)(e));
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Credential, CredentialFiles};

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn hub_names_get_the_key_the_files_own_tool_reads_and_removes() {
        let docker = Path::new("/home/u/.docker/config.json");
        let podman = Path::new("/run/user/1000/containers/auth.json");
        for n in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
        ] {
            assert_eq!(auths_key(n, docker), "https://index.docker.io/v1/", "{n}");
            assert_eq!(auths_key(n, podman), "docker.io", "{n}");
        }
        assert_eq!(auths_key("localhost:5000", docker), "localhost:5000");
        assert_eq!(auths_key("localhost:5000", podman), "localhost:5000");
        assert!(names_registry("http://localhost:5000", "localhost:5000"));
        assert!(names_registry(
            "https://localhost:5000/v2/",
            "localhost:5000"
        ));
        assert!(!names_registry("localhost:5000/team", "localhost:5000"));
        assert!(!names_registry("localhost:5001", "localhost:5000"));
        assert!(names_registry("docker.io", "index.docker.io"));
    }

    #[test]
    fn a_new_file_is_0600_and_read_back_by_the_lookup() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/config.json");
        let s = CredentialStore::at(&p);
        assert_eq!(
            s.store("docker.io", "bob", "pa:ss").unwrap(),
            StoredIn::File(p.clone())
        );
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\n\t\"auths\": {{\n\t\t\"https://index.docker.io/v1/\": {{\n\t\t\t\"auth\": \"{}\"\n\t\t}}\n\t}}\n}}",
                b64("bob:pa:ss")
            )
        );
        let files = CredentialFiles {
            files: vec![p.clone()],
        };
        assert_eq!(
            files.lookup("docker.io").unwrap(),
            Some(Credential::Basic {
                username: "bob".into(),
                password: "pa:ss".into()
            })
        );
        // Only the temporary file's name was ever in the directory besides the target.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
    }

    /// A reader racing logins sees the old file or the new one, never a part of either: the
    /// file is replaced by a rename, not rewritten in place.
    #[test]
    fn a_reader_never_sees_a_half_written_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        // Big enough (~200 KiB) that an in-place write would be seen half done.
        let padding: Vec<String> = (0..2000)
            .map(|i| {
                format!(
                    "\"pad-{i}.example\": {{\"auth\": \"{}\"}}",
                    b64("x:y").repeat(8)
                )
            })
            .collect();
        std::fs::write(&p, format!("{{\"auths\": {{{}}}}}", padding.join(","))).unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                    let text = std::fs::read(&p).unwrap();
                    serde_json::from_slice::<serde_json::Value>(&text)
                        .unwrap_or_else(|e| panic!("read {} bytes, not JSON: {e}", text.len()));
                    reads += 1;
                }
                reads
            })
        };
        let s = CredentialStore::at(&p);
        for i in 0..40 {
            s.store("r.example", "u", &format!("pw-{i}")).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn other_keys_and_entries_keep_their_text_and_place() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        let original = "{\n\t\"proxies\": {\"default\": {\"httpProxy\": \"http://p:3128\"}},\n\t\"auths\": {\n\t\t\"ghcr.io\": {\"auth\": \"Z2g6eA==\", \"email\": \"a@b\"},\n\t\t\"http://reg.example:5000\": {\"auth\": \"b2xkOm9sZA==\"},\n\t\t\"quay.io\": {\"auth\": \"cTp4\"}\n\t},\n\t\"HttpHeaders\": {\"X-Meta\": \"1\"},\n\t\"x-unknown\": [1, 2, {\"deep\": null}]\n}";
        std::fs::write(&p, original).unwrap();
        let s = CredentialStore::at(&p);
        s.store("reg.example:5000", "new", "pw").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let expected = format!(
            "{{\n\t\"proxies\": {{\"default\": {{\"httpProxy\": \"http://p:3128\"}}}},\n\t\"auths\": {{\n\t\t\"ghcr.io\": {{\"auth\": \"Z2g6eA==\", \"email\": \"a@b\"}},\n\t\t\"reg.example:5000\": {{\n\t\t\t\"auth\": \"{}\"\n\t\t}},\n\t\t\"quay.io\": {{\"auth\": \"cTp4\"}}\n\t}},\n\t\"HttpHeaders\": {{\"X-Meta\": \"1\"}},\n\t\"x-unknown\": [1, 2, {{\"deep\": null}}]\n}}",
            b64("new:pw")
        );
        assert_eq!(text, expected);
        // Logging out takes that entry away and leaves the rest as it was.
        assert_eq!(
            s.erase("reg.example:5000").unwrap(),
            Some(StoredIn::File(p.clone()))
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "{\n\t\"proxies\": {\"default\": {\"httpProxy\": \"http://p:3128\"}},\n\t\"auths\": {\n\t\t\"ghcr.io\": {\"auth\": \"Z2g6eA==\", \"email\": \"a@b\"},\n\t\t\"quay.io\": {\"auth\": \"cTp4\"}\n\t},\n\t\"HttpHeaders\": {\"X-Meta\": \"1\"},\n\t\"x-unknown\": [1, 2, {\"deep\": null}]\n}"
        );
        assert_eq!(s.erase("reg.example:5000").unwrap(), None);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            text,
            "nothing to erase rewrote the file"
        );
    }

    #[test]
    fn a_file_that_is_not_a_credentials_file_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        for (body, want) in [
            ("[1, 2]", "its top level is not a JSON object"),
            ("{\"auths\": 3}", "its 'auths' is not a JSON object"),
            (
                "{\"auths\": {\"x\": {\"auth\": \"secret-value\"",
                "not a valid credentials file",
            ),
        ] {
            let p = d.path().join("config.json");
            std::fs::write(&p, body).unwrap();
            let err = CredentialStore::at(&p)
                .store("r.example", "u", "p")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{body}: {err}");
            assert!(!err.contains("secret-value"), "{err}");
            assert_eq!(std::fs::read_to_string(&p).unwrap(), body);
        }
    }

    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        let victim = d.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join(".config.json.planted")).unwrap();
        let mut names = vec![
            ".config.json.second".to_string(),
            ".config.json.planted".to_string(),
        ];
        write_atomic(&p, b"{}", &mut |_, _| names.pop().unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{}");
        assert!(!std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(
            std::fs::symlink_metadata(d.path().join(".config.json.planted"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "the planted link was left as it was"
        );
    }

    #[test]
    fn a_symlinked_config_keeps_its_link_and_its_target_is_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let real_dir = d.path().join("dotfiles");
        std::fs::create_dir(&real_dir).unwrap();
        std::fs::write(real_dir.join("docker.json"), "{\"credsStore\": \"\"}").unwrap();
        let p = d.path().join("config.json");
        std::os::unix::fs::symlink("dotfiles/docker.json", &p).unwrap();
        CredentialStore::at(&p)
            .store("r.example", "u", "p")
            .unwrap();
        assert!(std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_symlink());
        let text = std::fs::read_to_string(real_dir.join("docker.json")).unwrap();
        assert!(
            text.contains(&b64("u:p")) && text.contains("\"credsStore\": \"\""),
            "{text}"
        );
    }
}
