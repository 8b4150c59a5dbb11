//! Exit codes and error rendering: one sentence, the cause chain, a hint where one helps.

use std::io::Write as _;

use ferry_copy::CopyError;
use ferry_registry::RegistryError;

use crate::sanitize::clean;

pub const OK: i32 = 0;
/// Anything not listed below.
pub const GENERAL: i32 = 1;
/// Bad command line or bad input (clap also uses 2).
pub const USAGE: i32 = 2;
/// The image, tag or platform does not exist.
pub const NOT_FOUND: i32 = 3;
/// Authentication or authorisation failed.
pub const AUTH: i32 = 4;
/// The network failed and retries ran out (run again to resume).
pub const NETWORK: i32 = 5;
/// Content did not match its digest.
pub const VERIFY: i32 = 6;
/// Interrupted (Ctrl-C).
pub const INTERRUPTED: i32 = 130;

/// A user error with a fixed exit code and an optional hint.
#[derive(Debug)]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
    pub code: i32,
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

pub fn usage(message: impl Into<String>, hint: Option<&str>) -> anyhow::Error {
    UserError {
        message: message.into(),
        hint: hint.map(str::to_string),
        code: USAGE,
    }
    .into()
}

/// Print `e` and return the exit code.
pub fn report(e: &anyhow::Error) -> i32 {
    if is_broken_pipe(e) {
        return OK;
    }
    // Bars stop drawing first, or a redraw would land inside the message.
    crate::progress::abandon();
    // Registry text reaches these lines (error bodies, platform names): sanitised. Written
    // without eprintln!, which panics when stderr is closed.
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {}", clean(&e.to_string()));
    for cause in e.chain().skip(1) {
        let _ = writeln!(err, "  caused by: {}", clean(&cause.to_string()));
    }
    let (code, hint) = classify(e);
    if let Some(h) = hint {
        let _ = writeln!(err, "hint: {}", clean(&h));
    }
    code
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn classify(e: &anyhow::Error) -> (i32, Option<String>) {
    for cause in e.chain() {
        if let Some(u) = cause.downcast_ref::<UserError>() {
            return (u.code, u.hint.clone());
        }
        if let Some(c) = cause.downcast_ref::<CopyError>() {
            match c {
                CopyError::NoPlatform { .. } | CopyError::WrongPlatform { .. } => {
                    return (NOT_FOUND, Some("choose one with --platform os/arch[/variant], or keep them all with --all-platforms --format oci".into()))
                }
                CopyError::Store { .. } => return (GENERAL, Some("check that the cache directory (--cache-dir) is writable and has space".into())),
                _ => {}
            }
        }
        if let Some(r) = cause.downcast_ref::<RegistryError>() {
            return registry_hint(r);
        }
        if cause.downcast_ref::<ferry_core::ReferenceError>().is_some() {
            return (USAGE, Some("references look like [registry[:port]/]repository[:tag][@sha256:digest], e.g. alpine:3.20 or ghcr.io/org/app:1".into()));
        }
        if cause.downcast_ref::<ferry_core::VerifyError>().is_some() {
            return (
                VERIFY,
                Some("the partial download was discarded; run again to fetch it afresh".into()),
            );
        }
    }
    (GENERAL, None)
}

fn registry_hint(r: &RegistryError) -> (i32, Option<String>) {
    if r.is_unauthorized() {
        return (AUTH, Some("give credentials with --username and --password-stdin, or store them in ~/.docker/config.json (docker login / podman login)".into()));
    }
    if r.is_not_found() {
        return (NOT_FOUND, Some("check the repository name and tag; private images answer 'not found' without credentials".into()));
    }
    match r {
        RegistryError::Verify(_) => (VERIFY, Some("the registry (or a proxy) served bytes that do not match the digest; the bad data was discarded, run again".into())),
        RegistryError::Insecure(_) => (NETWORK, None),
        RegistryError::Manifest { .. } => (GENERAL, None),
        RegistryError::Config(_) => (USAGE, None),
        RegistryError::Transport { source, .. } if source.is_connect() => (NETWORK, Some("could not connect to the registry: check its address, your connection, and HTTPS_PROXY / HTTP_PROXY / NO_PROXY; then run the same command again (it resumes)".into())),
        _ if r.is_retryable() => (NETWORK, Some("the network kept failing; run the same command again and it resumes where it stopped".into())),
        RegistryError::Transport { .. } => (NETWORK, Some("check the registry address, your connection, and HTTPS_PROXY / NO_PROXY".into())),
        _ => (GENERAL, None),
    }
}
