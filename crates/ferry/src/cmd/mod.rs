//! The commands, one file each, and what they share: building the client from the network
//! options, and temporary outputs that an interruption must not leave behind.

mod catalog;
mod copy;
mod delete;
mod digest;
mod inspect;
mod inspect_archive;
mod login;
mod logout;
mod output;
mod pull;
mod pull_server;
mod push;
mod serve;
mod server_download;
mod tags;
mod user_config;

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use ferry_registry::{Client, ClientOptions, Credential, CredentialFiles, RetryHook, RetryNotice};

use crate::cli::{Cli, Command, NetArgs};
use crate::exit;
use crate::stdio::say;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pull(args) => pull::run(args).await,
        Command::Tags(args) => tags::run(args).await,
        Command::Catalog(args) => catalog::run(args).await,
        Command::Digest(args) => digest::run(args).await,
        Command::Inspect(args) => inspect::run(args).await,
        Command::Login(args) => login::run(args).await,
        Command::Logout(args) => logout::run(args).await,
        Command::Push(args) => push::run(args).await,
        Command::Copy(args) => copy::run(args).await,
        Command::Delete(args) => delete::run(args).await,
        Command::Serve(args) => serve::run(args).await,
    }
}

static TEMP_OUTPUTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Outputs `--force` moved aside, with where they belong: (aside, original).
static ASIDE: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

/// Remember a temporary output so an interruption removes it.
pub(crate) fn track_temp(p: PathBuf) {
    if let Ok(mut v) = TEMP_OUTPUTS.lock() {
        v.push(p);
    }
}

pub(crate) fn untrack_temp(p: &std::path::Path) {
    if let Ok(mut v) = TEMP_OUTPUTS.lock() {
        v.retain(|x| x != p);
    }
}

/// Remember an old output moved aside so an interruption puts it back.
pub(crate) fn track_aside(aside: PathBuf, original: PathBuf) {
    if let Ok(mut v) = ASIDE.lock() {
        v.push((aside, original));
    }
}

pub(crate) fn untrack_aside(aside: &std::path::Path) {
    if let Ok(mut v) = ASIDE.lock() {
        v.retain(|(a, _)| a != aside);
    }
}

/// On an interruption: remove every temporary output, then put back what was moved aside.
/// Safe to call again (it is, once the writers had time to stop).
pub fn cleanup_temp_outputs() {
    if let Ok(v) = TEMP_OUTPUTS.lock() {
        for p in v.iter() {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_dir_all(p);
        }
    }
    if let Ok(v) = ASIDE.lock() {
        for (old, original) in v.iter() {
            // A replacement already in place is complete: then the old one goes.
            if original.exists() {
                let _ = std::fs::remove_dir_all(old);
            } else {
                let _ = std::fs::rename(old, original);
            }
        }
    }
}

/// Build the registry client for `registries` (the user-facing names the credentials
/// given on the command line apply to).
pub(crate) fn client(net: &NetArgs, registries: &[String], quiet: bool) -> anyhow::Result<Client> {
    client_with(net, registries, quiet, |_| {})
}

/// [`client`] with `extra` applied to the options last (mirrors, a server's token).
pub(crate) fn client_with(
    net: &NetArgs,
    registries: &[String],
    quiet: bool,
    extra: impl FnOnce(&mut ClientOptions),
) -> anyhow::Result<Client> {
    let mut opts = options(net, quiet)?;
    if let Some(user) = &net.username {
        let password = password(net, user, quiet)?;
        let cred = Credential::Basic {
            username: user.clone(),
            password,
        };
        let mut map = HashMap::new();
        for r in registries {
            map.insert(r.clone(), cred.clone());
        }
        opts.credentials = map;
    }
    extra(&mut opts);
    Ok(Client::new(opts)?)
}

/// The client options from the network flags, without credentials given on the command
/// line (the stored ones are looked up as usual).
pub(crate) fn options(net: &NetArgs, quiet: bool) -> anyhow::Result<ClientOptions> {
    let timeout = Duration::from_secs(net.timeout);
    let mut opts = ClientOptions {
        insecure: net.insecure,
        credential_files: CredentialFiles::from_env(),
        connect_timeout: timeout,
        request_timeout: timeout,
        stall_timeout: timeout,
        max_retry_after: Duration::from_secs(net.max_wait),
        on_retry: retry_printer(quiet),
        ..Default::default()
    };
    for path in &net.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA certificate {}", path.display()))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(exit::usage(
                format!("--ca-cert {} holds no PEM certificate", path.display()),
                Some("give the CA's certificate in PEM form (-----BEGIN CERTIFICATE-----)"),
            ));
        }
        opts.ca_certs.push(pem);
    }
    Ok(opts)
}

/// One line on stderr per retry, as it happens, so a slow pull is not a silent one.
fn retry_printer(quiet: bool) -> Option<RetryHook> {
    if quiet {
        return None;
    }
    // Through the reporter, so the line lands above the bars and is sanitised (the notice
    // quotes the registry's error text).
    Some(Arc::new(|notice: &RetryNotice| {
        crate::progress::notice(&notice.to_string())
    }))
}

pub(crate) fn password(net: &NetArgs, user: &str, quiet: bool) -> anyhow::Result<String> {
    if let Some(p) = &net.password {
        if p.is_empty() {
            return Err(exit::usage("--password is empty", None));
        }
        if !quiet {
            say!("warning: a password on the command line can be seen by other users; prefer --password-stdin");
        }
        return Ok(p.clone());
    }
    if net.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        // As docker: one line ending goes ("\n", then a "\r" before it), nothing else, so a
        // password that itself ends in a space or a '\r' is kept whole.
        let p = line.strip_suffix('\n').unwrap_or(&line);
        let p = p.strip_suffix('\r').unwrap_or(p).to_string();
        if p.is_empty() {
            return Err(exit::usage("--password-stdin got an empty password", None));
        }
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password(format!("Password for {user}: "))
            .context("reading the password")?;
        if p.is_empty() {
            return Err(exit::usage("the password is empty", None));
        }
        return Ok(p);
    }
    Err(exit::usage(
        "--username needs a password, and standard input is not a terminal to ask for one",
        Some("pipe it in with --password-stdin"),
    ))
}

/// Print `lines` on standard output, one per line, or as a JSON array. Registry text: on a
/// terminal it is sanitised. A closed stdout (`ferry tags x | head -1`) ends the command
/// quietly with [`exit::StdoutClosed`].
pub(crate) fn print_lines(lines: &[String], json: bool) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let mut text = String::new();
    if json {
        text.push_str(&serde_json::to_string(lines)?);
        text.push('\n');
    } else {
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
    }
    if terminal {
        // One escape per control character; the line breaks between entries stay.
        text = text
            .split_inclusive('\n')
            .map(|l| {
                let body = l.strip_suffix('\n').unwrap_or(l);
                format!("{}\n", crate::sanitize::clean(body))
            })
            .collect();
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(exit::StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}
