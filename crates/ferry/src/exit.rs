//! Exit codes and error rendering: one sentence, the cause chain, a hint where one helps.

use ferry_copy::CopyError;
use ferry_registry::RegistryError;
use ferry_store::StoreError;

use crate::stdio::say;

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
/// Interrupted (Ctrl-C, SIGINT): 128 + the signal's number, as a shell reports it.
pub const INTERRUPTED: i32 = 130;
/// The terminal went away (SIGHUP).
pub const HANGUP: i32 = 129;
/// Standard output was closed before the archive was complete (`-o - | head`): what a
/// process killed by SIGPIPE reports, so `set -o pipefail` scripts see the pull did not end.
pub const BROKEN_PIPE: i32 = 141;
/// Stopped by SIGTERM.
pub const TERMINATED: i32 = 143;

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

/// The reader of `-o -` went away. Not an error to explain: whoever closed the pipe knows
/// (ripgrep and a SIGPIPE-killed process are just as quiet), but the exit code says the
/// archive is incomplete.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed before the archive was complete")
    }
}

impl std::error::Error for StdoutClosed {}

/// Print `e` and return the exit code.
pub fn report(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<StdoutClosed>()) {
        return BROKEN_PIPE;
    }
    // Bars stop drawing first, or a redraw would land inside the message.
    crate::progress::abandon();
    // Registry text reaches these lines (error bodies, platform names): sanitised.
    say!("error: {}", clean(&e.to_string()));
    for cause in e.chain().skip(1) {
        say!("  caused by: {}", clean(&cause.to_string()));
    }
    let (code, hint) = classify(e);
    if let Some(h) = hint {
        say!("hint: {}", clean(&h));
    }
    code
}

fn classify(e: &anyhow::Error) -> (i32, Option<String>) {
    // A `UserError` given as context of a lower error (which stays in the chain as its
    // cause) is found only this way: a chain entry is the context wrapper, not the error.
    if let Some(u) = e.downcast_ref::<UserError>() {
        return (u.code, u.hint.clone());
    }
    for cause in e.chain() {
        if let Some(u) = cause.downcast_ref::<UserError>() {
            return (u.code, u.hint.clone());
        }
        if let Some(c) = cause.downcast_ref::<CopyError>() {
            match c {
                CopyError::NoPlatform { .. } | CopyError::WrongPlatform { .. } => {
                    return (NOT_FOUND, Some("choose one with --platform os/arch[/variant], or keep them all with --all-platforms --format oci".into()))
                }
                CopyError::Store { source, .. } => return store_hint(source),
                CopyError::Content { .. } => return (VERIFY, Some("no manifest was stored, so no tag names the damaged image (blobs already uploaded are harmless); check where the source came from".into())),
                CopyError::BadSource { .. } => return (USAGE, None),
                _ => {}
            }
        }
        if let Some(r) = cause.downcast_ref::<RegistryError>() {
            return registry_hint(r);
        }
        if let Some(r) = cause.downcast_ref::<ferry_archive::ReadError>() {
            return read_hint(r);
        }
        // A blob that failed its check while a writer copied it (an archive copied from a
        // damaged one): the check's error rides inside the writer's I/O error.
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|e| e.is::<ferry_copy::ContentError>())
            {
                return (
                    VERIFY,
                    Some("the source is damaged; nothing was written".into()),
                );
            }
        }
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return store_hint(s);
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

fn read_hint(r: &ferry_archive::ReadError) -> (i32, Option<String>) {
    use ferry_archive::ReadError as R;
    match r {
        R::DigestMismatch { .. } | R::SizeMismatch { .. } | R::DiffIdMismatch { .. } => (
            VERIFY,
            Some("the archive is damaged; nothing was pushed".into()),
        ),
        R::NoSuchImage { .. } => (NOT_FOUND, None),
        R::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => (USAGE, None),
        R::Io { .. } => (GENERAL, None),
        _ => (USAGE, None),
    }
}

fn store_hint(s: &StoreError) -> (i32, Option<String>) {
    match s {
        StoreError::Corrupt { .. } => (
            VERIFY,
            Some("run the same command again to fetch the blob afresh".into()),
        ),
        StoreError::Unsafe { .. } => (GENERAL, Some("ferry follows no links and uses no other user's files in its cache; remove that entry or give another --cache-dir".into())),
        StoreError::Io { .. } => (
            GENERAL,
            Some("check that the cache directory (--cache-dir) is writable and has space".into()),
        ),
        StoreError::Verify(_) => (
            VERIFY,
            Some("the partial download was discarded; run again to fetch it afresh".into()),
        ),
        _ => (GENERAL, None),
    }
}

fn registry_hint(r: &RegistryError) -> (i32, Option<String>) {
    const PROXY: &str = "HTTPS_PROXY / HTTP_PROXY / NO_PROXY";
    let hint = |s: String| Some(s);
    // "It resumes" only when bytes of a blob were kept for the next run.
    let again = if r.bytes_kept() > 0 {
        "run the same command again and it resumes where it stopped"
    } else {
        "run the same command again"
    };
    if r.is_credentials_refused() {
        return (AUTH, hint("the registry refused the username and password (or stored credential) given: check them, and that the account may pull this repository".into()));
    }
    if r.is_not_authorized() {
        return (AUTH, hint("the credentials were accepted, but not for this repository: check its name (Docker Hub answers 'unauthorized' for one that does not exist), and that the account may pull it".into()));
    }
    if let RegistryError::PushDenied { .. } = r {
        return (AUTH, hint("the credentials were accepted, but the account may not write there: check the repository name and the account's permissions".into()));
    }
    if r.is_unauthorized() {
        return (AUTH, hint("give credentials with --username and --password-stdin, or store them in ~/.docker/config.json (docker login / podman login)".into()));
    }
    if r.is_not_found() {
        return (NOT_FOUND, hint("check the repository name and tag; private images answer 'not found' without credentials".into()));
    }
    match r {
        RegistryError::Verify(_) => (VERIFY, hint("the registry (or a proxy) served bytes that do not match the digest; the bad data was discarded, run again".into())),
        RegistryError::Insecure(_) => (NETWORK, None),
        RegistryError::Manifest { .. } => (GENERAL, None),
        RegistryError::Config(_) => (USAGE, None),
        RegistryError::Unreachable { .. } => (NETWORK, hint(format!("check the registry address and your connection (and {PROXY})"))),
        RegistryError::NotARegistry { .. } => (GENERAL, hint("check the registry address (host[:port]): something answers there, but not the registry API".into())),
        RegistryError::RedirectLoop { .. } => (GENERAL, hint("the registry (or a proxy in front of it) redirects in a loop; check the registry address".into())),
        RegistryError::WaitTooLong { .. } => (NETWORK, hint("the registry is rate limiting; try again later, or wait longer with --max-wait SECS".into())),
        RegistryError::Timeout { .. } | RegistryError::Stalled { .. } => (NETWORK, hint(format!("the registry is too slow to answer; {again}, or allow more time with --timeout SECS"))),
        RegistryError::TokenService { .. } if !r.is_retryable() => (GENERAL, hint("the token service the registry names in its challenge does not work; the registry (or a proxy rewriting its answers) is misconfigured".into())),
        _ if r.is_connect() => (NETWORK, hint(format!("could not connect to the registry: check its address, your connection, and {PROXY}; then {again}"))),
        _ if r.is_retryable() => (NETWORK, hint(format!("the network kept failing; {again}"))),
        RegistryError::Transport { .. } => (NETWORK, hint(format!("check the registry address, your connection, and {PROXY}"))),
        _ => (GENERAL, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incomplete(received: u64) -> RegistryError {
        RegistryError::Incomplete {
            url: "http://r/v2/a/blobs/sha256:0".into(),
            reason: "the body ended early".into(),
            received,
        }
    }

    #[test]
    fn it_resumes_is_said_only_when_bytes_were_kept() {
        assert_eq!(
            registry_hint(&incomplete(100)),
            (
                NETWORK,
                Some("the network kept failing; run the same command again and it resumes where it stopped".into())
            )
        );
        assert_eq!(
            registry_hint(&incomplete(0)),
            (
                NETWORK,
                Some("the network kept failing; run the same command again".into())
            )
        );
    }
}
