//! `ferry login REGISTRY`: check a username and password against the registry, then store
//! them as `docker login` does (a credential helper, or docker's config.json / podman's
//! auth.json), where docker, podman, skopeo and ferry itself find them.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;

use ferry_core::Reference;
use ferry_registry::{
    Client, Credential, CredentialFiles, CredentialStore, LoginCheck, RegistryError, StoredIn,
};

use crate::cli::LoginArgs;
use crate::exit::{self, UserError};
use crate::stdio::say;

pub async fn run(args: LoginArgs) -> anyhow::Result<()> {
    let (name, api_host) = registry_name(&args.registry)?;
    let store = store_for(args.authfile.as_deref());
    // A file that cannot be updated is reported before a password is asked for.
    store
        .destination(&name)
        .with_context(|| format!("cannot store credentials for {name}"))?;
    let username = match &args.net.username {
        // As docker: spaces around a username are typing, not part of it.
        Some(u) => u.trim().to_string(),
        None => ask_username()?,
    };
    if username.is_empty() || username.contains(':') {
        return Err(exit::usage(
            "the username is empty or holds ':', which the stored form user:password cannot carry",
            None,
        ));
    }
    let password = super::password(&args.net, &username, false)?;
    let mut opts = super::options(&args.net, false)?;
    // Only the credentials being checked are sent; stored ones are neither read nor run.
    opts.credential_files = CredentialFiles::default();
    let client = Client::new(opts)?;
    let credential = Credential::Basic {
        username: username.clone(),
        password: password.clone(),
    };
    let check = client
        .check_login(&api_host, &credential)
        .await
        .map_err(|e| login_failed(e, &name))?;
    if check == LoginCheck::NotRequired {
        say!("note: {name} asks for no credentials, so they could not be checked; storing them as docker login does");
    }
    let target = store.path().to_path_buf();
    let key = name.clone();
    let stored = tokio::task::spawn_blocking(move || store.store(&key, &username, &password))
        .await
        .context("storing the credentials")?
        .with_context(|| format!("{name} accepted the credentials, but storing them failed"))?;
    let line = match stored {
        StoredIn::File(path) => {
            say!(
                "warning: the password is stored unencrypted (base64) in {}; a credential helper (credsStore in docker's config.json) keeps it out of the file",
                path.display()
            );
            format!("Login succeeded for {name} (stored in {})", path.display())
        }
        StoredIn::Helper(helper) => {
            format!("Login succeeded for {name} (stored in credential helper {helper})")
        }
    };
    super::print_lines(&[line], false)?;
    // A file ferry reads before the one written would shadow the new login.
    let files = CredentialFiles::from_env().files;
    if let Some(at) = files.iter().position(|f| *f == target) {
        for f in &files[..at] {
            if CredentialStore::at(f).has_entry(&name).unwrap_or(false) {
                say!(
                    "note: {} also holds credentials for {name}, and ferry reads that file first",
                    f.display()
                );
            }
        }
    }
    Ok(())
}

/// `--authfile`, else the file ferry's lookup reads first among those a login writes.
pub(super) fn store_for(authfile: Option<&std::path::Path>) -> CredentialStore {
    match authfile {
        Some(p) => CredentialStore::at(p),
        None => CredentialStore::from_env(),
    }
}

/// The registry as credentials name it (`docker.io`, `host[:port]`) and its API host. A
/// URL as docker accepts it (`https://index.docker.io/v1/`, `http://host:5000`) is taken
/// too.
pub(super) fn registry_name(arg: &str) -> anyhow::Result<(String, String)> {
    let bad = || {
        exit::usage(
            format!("{arg:?} is not a registry address"),
            Some("give host[:port], e.g. 127.0.0.1:5000, registry.example.com or docker.io"),
        )
    };
    let rest = arg
        .strip_prefix("https://")
        .or_else(|| arg.strip_prefix("http://"))
        .unwrap_or(arg);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !matches!(path, "" | "/" | "/v1" | "/v1/" | "/v2" | "/v2/") || host.is_empty() {
        return Err(bad());
    }
    // A registry name is what precedes the repository in a reference; checked the same way.
    let probe: Reference = format!("{host}/x").parse().map_err(|_| bad())?;
    let hub_alias = probe.registry() == ferry_core::reference::DOCKER_HUB && host.contains('.');
    if probe.registry() != host && !hub_alias {
        return Err(bad());
    }
    Ok((probe.registry().to_string(), probe.api_host().to_string()))
}

/// Ask for the username on the terminal, as docker login does.
fn ask_username() -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(exit::usage(
            "ferry login needs a username, and standard input is not a terminal to ask for one",
            Some("give it with --username (and the password with --password-stdin)"),
        ));
    }
    // A prompt stays on its line; a closed stderr is no reason to fail.
    let _ = std::io::stderr().write_all(b"Username: ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the username")?;
    Ok(line.trim().to_string())
}

/// A refusal exits with the authentication code and says nothing was stored.
fn login_failed(e: RegistryError, name: &str) -> anyhow::Error {
    let message = format!("login to {name} failed; nothing was stored");
    if e.is_credentials_refused() {
        return anyhow::Error::new(e).context(UserError {
            message,
            hint: Some("check the username and password (--password-stdin reads the first line of standard input)".into()),
            code: exit::AUTH,
        });
    }
    anyhow::Error::new(e).context(message)
}
